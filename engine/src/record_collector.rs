//! A task's writer to Kafka: its changelog records (tagged with the input offset) and output
//! records, through the task's own idempotent producer. Records are sent in write-out
//! generations; it tracks when each generation is acknowledged and how far each changelog got.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use prometheus::{Histogram, IntCounter};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use crate::clients::{client_config, setting_error, ClientRole};
use crate::config::StreamsConfig;
use crate::error::{EngineError, Result};
use crate::memory_budget::ProducerBudget;
use crate::metrics::EngineMetrics;
use crate::store::changelog_format::encode_changelog_value;
use crate::store::StoreId;
use crate::task_id::TaskId;

/// What the broker answered for the records of one write-out generation.
struct GenerationDeliveries {
    /// Records acknowledged or refused.
    answered: u64,
    /// Records sent, known once the generation is sealed.
    sent: Option<u64>,
    /// Per store: one past the highest changelog offset acknowledged.
    changelog_next: Vec<Option<i64>>,
}

impl GenerationDeliveries {
    fn all_answered(&self) -> bool {
        self.sent == Some(self.answered)
    }
}

#[derive(Default)]
struct Deliveries {
    /// Per write-out generation (by the low 16 bits of its number: at most two are open).
    generations: HashMap<u16, GenerationDeliveries>,
    first_error: Option<String>,
}

impl Deliveries {
    fn generation(&mut self, generation: u16, stores: usize) -> &mut GenerationDeliveries {
        self.generations
            .entry(generation)
            .or_insert_with(|| GenerationDeliveries {
                answered: 0,
                sent: None,
                changelog_next: vec![None; stores],
            })
    }
}

/// Called on the producer's thread when a sealed generation is fully answered or a record is
/// refused (the task then takes the acknowledged write-outs, or fails).
pub type WriteOutListener = Box<dyn Fn() + Send + Sync>;

/// Receives delivery reports on the producer's polling thread.
#[derive(Clone, Default)]
struct DeliveryTracker {
    deliveries: Arc<Mutex<Deliveries>>,
    changelog_topics: Arc<Vec<String>>,
    /// Acknowledgement latency and refusals (`None`: not measured, as in the benchmarks).
    metrics: Option<DeliveryMetrics>,
    listener: Option<Arc<WriteOutListener>>,
}

/// Bits of a record's delivery opaque that carry its write-out generation; the rest carry its
/// send time.
const GENERATION_BITS: u32 = 16;

fn delivery_opaque(generation: u64) -> usize {
    (send_clock_micros() << GENERATION_BITS) | (generation as usize & 0xffff)
}

#[derive(Clone)]
struct DeliveryMetrics {
    ack_latency: Histogram,
    errors: IntCounter,
}

/// Microseconds since the first record was sent: each record carries its send time as its
/// delivery opaque (a number, so nothing is allocated per record).
fn send_clock_micros() -> usize {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as usize
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        if let Some(metrics) = &self.metrics {
            let sent_at_micros = opaque >> GENERATION_BITS;
            let micros = send_clock_micros().saturating_sub(sent_at_micros);
            metrics.ack_latency.observe(micros as f64 / 1e6);
            if result.is_err() {
                metrics.errors.inc();
            }
        }
        let mut deliveries = self.deliveries.lock().expect("delivery lock poisoned");
        let first_refusal = result.is_err() && deliveries.first_error.is_none();
        if let (Err((error, message)), true) = (result, first_refusal) {
            deliveries.first_error = Some(format!("{error} (topic {})", message.topic()));
        }
        let generation = deliveries.generation(opaque as u16, self.changelog_topics.len());
        generation.answered += 1;
        if let Ok(message) = result {
            if let Some(store) = self
                .changelog_topics
                .iter()
                .position(|t| t == message.topic())
            {
                let next = &mut generation.changelog_next[store];
                *next = Some(next.unwrap_or(0).max(message.offset() + 1));
            }
        }
        let sealed_and_answered = generation.all_answered();
        drop(deliveries);
        if sealed_and_answered || first_refusal {
            if let Some(listener) = &self.listener {
                listener();
            }
        }
    }
}

/// Sends a task's records and reports, after a flush, where its changelogs stand.
pub struct RecordCollector {
    task: TaskId,
    producer: ThreadedProducer<DeliveryTracker>,
    tracker: DeliveryTracker,
    /// This producer's part of the memory budget, shown while it lives.
    _budget: Option<ProducerBudget>,
    changelog_records_sent: u64,
    output_records_sent: u64,
    /// The write-out generation records are sent in now.
    generation: u64,
    /// Records sent in the current generation.
    sent_in_generation: u64,
}

impl RecordCollector {
    /// A task's producer; `metrics` (when given) receives the acknowledgement latencies and
    /// refusals, `listener` (when given) hears when a sealed generation is answered.
    pub fn new(
        task: TaskId,
        config: &StreamsConfig,
        store_names: &[String],
        metrics: Option<&EngineMetrics>,
        listener: Option<WriteOutListener>,
    ) -> Result<Self> {
        let tracker = DeliveryTracker {
            metrics: metrics.map(|m| DeliveryMetrics {
                ack_latency: m.produce_ack_latency.clone(),
                errors: m.produce_errors.clone(),
            }),
            deliveries: Arc::default(),
            changelog_topics: Arc::new(
                store_names
                    .iter()
                    .map(|s| config.changelog_topic(s))
                    .collect(),
            ),
            listener: listener.map(Arc::new),
        };
        let producer = client_config(config, ClientRole::Producer(task))
            .create_with_context(tracker.clone())
            .map_err(|e| setting_error(&config.client_settings, e))?;
        Ok(Self {
            task,
            producer,
            _budget: metrics.map(|m| ProducerBudget::open(m, &config.client_memory)),
            tracker,
            changelog_records_sent: 0,
            output_records_sent: 0,
            generation: 0,
            sent_in_generation: 0,
        })
    }

    /// Drops every queued, undelivered record (benchmarks only: nothing is sent).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn purge_queued(&self) {
        self.producer
            .purge(rdkafka::producer::PurgeConfig::default().queue());
    }

    fn send(&mut self, topic: &str, record: BaseRecord<'_, [u8], [u8], usize>) -> Result<()> {
        let mut record = record;
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.sent_in_generation += 1;
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    // Backpressure: the local queue drains as the broker acknowledges.
                    std::thread::sleep(Duration::from_millis(5));
                    record = returned;
                }
                Err((error, _)) => {
                    return Err(EngineError::Produce {
                        task: self.task,
                        topic: topic.to_string(),
                        reason: error.to_string(),
                    })
                }
            }
        }
    }

    /// Sends a store update to the store's changelog partition, tagged with its input offset.
    pub fn send_changelog(
        &mut self,
        store: StoreId,
        partition: i32,
        key: &[u8],
        value: &[u8],
        input_offset: i64,
    ) -> Result<()> {
        let value = encode_changelog_value(input_offset, value);
        self.send_changelog_encoded(store, partition, key, Some(&value))
    }

    /// Sends a store entry as stored (input offset and value, `None`: a delete) to the
    /// store's changelog partition.
    pub fn send_changelog_encoded(
        &mut self,
        store: StoreId,
        partition: i32,
        key: &[u8],
        stored: Option<&[u8]>,
    ) -> Result<()> {
        let topic = self.tracker.changelog_topics[store.0].clone();
        let mut record = BaseRecord::with_opaque_to(&topic, delivery_opaque(self.generation))
            .partition(partition)
            .key(key);
        if let Some(stored) = stored {
            record = record.payload(stored);
        }
        self.send(&topic, record)?;
        self.changelog_records_sent += 1;
        Ok(())
    }

    /// Sends an output record, partitioned by its key; without a timestamp it gets the
    /// producer's current time.
    pub fn send_output(
        &mut self,
        topic: &str,
        key: &[u8],
        value: &[u8],
        timestamp: Option<i64>,
    ) -> Result<()> {
        let mut record = BaseRecord::with_opaque_to(topic, delivery_opaque(self.generation))
            .key(key)
            .payload(value);
        if let Some(timestamp) = timestamp {
            record = record.timestamp(timestamp);
        }
        self.send(topic, record)?;
        self.output_records_sent += 1;
        Ok(())
    }

    /// Waits until every record sent so far is acknowledged, or reports the first failure.
    pub fn flush(&mut self, timeout: Duration) -> Result<()> {
        let flushed = self.producer.flush(timeout);
        self.refused()?;
        flushed.map_err(EngineError::kafka("flush producer"))
    }

    /// Ends the current write-out generation (every record sent since the last seal) and
    /// answers its number; later records go to the next one.
    pub fn seal(&mut self) -> u64 {
        let generation = self.generation;
        self.generation += 1;
        let sent = std::mem::take(&mut self.sent_in_generation);
        let mut deliveries = self
            .tracker
            .deliveries
            .lock()
            .expect("delivery lock poisoned");
        deliveries
            .generation(generation as u16, self.tracker.changelog_topics.len())
            .sent = Some(sent);
        generation
    }

    /// An error once the broker refused any record sent so far.
    pub fn refused(&self) -> Result<()> {
        let deliveries = self
            .tracker
            .deliveries
            .lock()
            .expect("delivery lock poisoned");
        self.refusal(&deliveries)
    }

    fn refusal(&self, deliveries: &Deliveries) -> Result<()> {
        match &deliveries.first_error {
            Some(reason) => Err(EngineError::Produce {
                task: self.task,
                topic: "(see reason)".into(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// For a sealed generation whose every record the broker acknowledged: per store, one
    /// past the highest changelog offset acknowledged in it (`None`: none sent), taken (asked
    /// once). `Ok(None)` while records are in flight; an error once any record was refused.
    pub fn take_acknowledged(&mut self, generation: u64) -> Result<Option<Vec<Option<i64>>>> {
        let mut deliveries = self
            .tracker
            .deliveries
            .lock()
            .expect("delivery lock poisoned");
        self.refusal(&deliveries)?;
        let key = generation as u16;
        if !deliveries
            .generations
            .get(&key)
            .is_some_and(GenerationDeliveries::all_answered)
        {
            return Ok(None);
        }
        Ok(deliveries
            .generations
            .remove(&key)
            .map(|answered| answered.changelog_next))
    }

    /// Records sent so far: (changelog, output).
    pub fn sent(&self) -> (u64, u64) {
        (self.changelog_records_sent, self.output_records_sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_settings::{ClientSettings, SettingSource};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A collector whose producer points at a port nobody listens on, refusing records after
    /// `message.timeout.ms`; `answered` counts the listener's calls.
    fn unreachable_collector(answered: Arc<AtomicUsize>) -> RecordCollector {
        let mut config = StreamsConfig::new("collector-test", "127.0.0.1:9");
        config.client_settings =
            ClientSettings::from_pairs(SettingSource::Program, [("message.timeout.ms", "200")]);
        let listener: WriteOutListener = Box::new(move || {
            answered.fetch_add(1, Ordering::SeqCst);
        });
        RecordCollector::new(
            TaskId::new(0, 0),
            &config,
            &["s".to_string()],
            None,
            Some(listener),
        )
        .unwrap()
    }

    #[test]
    fn a_write_out_that_sent_nothing_is_acknowledged_at_once() {
        let mut collector = unreachable_collector(Arc::default());
        let first = collector.seal();
        let second = collector.seal();
        assert_eq!(second, first + 1);
        assert_eq!(
            collector.take_acknowledged(first).unwrap(),
            Some(vec![None])
        );
        assert_eq!(
            collector.take_acknowledged(first).unwrap(),
            None,
            "taken once"
        );
    }

    #[test]
    fn a_refused_record_wakes_the_task_and_fails_its_write_out() {
        let answered = Arc::new(AtomicUsize::new(0));
        let mut collector = unreachable_collector(answered.clone());
        collector.send_output("out", b"k", b"1", None).unwrap();
        collector
            .send_changelog(StoreId(0), 0, b"k", b"1", 5)
            .unwrap();
        let generation = collector.seal();
        assert_eq!(
            collector.take_acknowledged(generation).unwrap(),
            None,
            "in flight"
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while answered.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the listener was never called");
            std::thread::sleep(Duration::from_millis(10));
        }
        let error = collector.take_acknowledged(generation).unwrap_err();
        assert!(
            error.to_string().contains("timed out"),
            "the refusal names its cause: {error}"
        );
    }
}
