//! A task's writer to Kafka: its changelog records (tagged with the input offset) and output
//! records, through the task's own idempotent producer, tracking how far each changelog got.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use prometheus::{Histogram, IntCounter};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig, ThreadedProducer,
};
use rdkafka::ClientContext;

use crate::clients::{client_config, setting_error, ClientRole};
use crate::config::StreamsConfig;
use crate::error::{EngineError, Result};
use crate::metrics::EngineMetrics;
use crate::offsets::encode_changelog_value;
use crate::processor::StoreId;
use crate::task_id::TaskId;

#[derive(Default)]
struct Deliveries {
    /// Per changelog topic: one past the highest offset the broker acknowledged.
    changelog_next: HashMap<String, i64>,
    first_error: Option<String>,
}

/// Receives delivery reports on the producer's polling thread.
#[derive(Clone, Default)]
struct DeliveryTracker {
    deliveries: Arc<Mutex<Deliveries>>,
    changelog_topics: Arc<Vec<String>>,
    /// Acknowledgement latency and refusals (`None`: not measured, as in the benchmarks).
    metrics: Option<DeliveryMetrics>,
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

    fn delivery(&self, result: &DeliveryResult<'_>, sent_at_micros: usize) {
        if let Some(metrics) = &self.metrics {
            let micros = send_clock_micros().saturating_sub(sent_at_micros);
            metrics.ack_latency.observe(micros as f64 / 1e6);
            if result.is_err() {
                metrics.errors.inc();
            }
        }
        let mut deliveries = self.deliveries.lock().expect("delivery lock poisoned");
        match result {
            Ok(message) => {
                if self.changelog_topics.iter().any(|t| t == message.topic()) {
                    let next = deliveries
                        .changelog_next
                        .entry(message.topic().to_string())
                        .or_insert(0);
                    *next = (*next).max(message.offset() + 1);
                }
            }
            Err((error, message)) => {
                deliveries
                    .first_error
                    .get_or_insert_with(|| format!("{error} (topic {})", message.topic()));
            }
        }
    }
}

/// Sends a task's records and reports, after a flush, where its changelogs stand.
pub struct RecordCollector {
    task: TaskId,
    producer: ThreadedProducer<DeliveryTracker>,
    tracker: DeliveryTracker,
    changelog_records_sent: u64,
    output_records_sent: u64,
}

impl RecordCollector {
    /// A task's producer; `metrics` (when given) receives the acknowledgement latencies and
    /// refusals.
    pub fn new(
        task: TaskId,
        config: &StreamsConfig,
        store_names: &[String],
        metrics: Option<&EngineMetrics>,
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
        };
        let producer = client_config(config, ClientRole::Producer(task))
            .create_with_context(tracker.clone())
            .map_err(|e| setting_error(&config.client_settings, e))?;
        Ok(Self {
            task,
            producer,
            tracker,
            changelog_records_sent: 0,
            output_records_sent: 0,
        })
    }

    /// Drops every queued, undelivered record (benchmarks only: nothing is sent).
    pub(crate) fn purge_queued(&self) {
        self.producer.purge(PurgeConfig::default().queue());
    }

    fn send(&self, topic: &str, record: BaseRecord<'_, [u8], [u8], usize>) -> Result<()> {
        let mut record = record;
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
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
        let mut record = BaseRecord::with_opaque_to(&topic, send_clock_micros())
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
        let mut record = BaseRecord::with_opaque_to(topic, send_clock_micros())
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
        let deliveries = self
            .tracker
            .deliveries
            .lock()
            .expect("delivery lock poisoned");
        if let Some(reason) = &deliveries.first_error {
            return Err(EngineError::Produce {
                task: self.task,
                topic: "(see reason)".into(),
                reason: reason.clone(),
            });
        }
        flushed.map_err(EngineError::kafka("flush producer"))
    }

    /// One past the highest acknowledged offset of a store's changelog, if anything was sent.
    pub fn changelog_next(&self, store: StoreId) -> Option<i64> {
        let deliveries = self
            .tracker
            .deliveries
            .lock()
            .expect("delivery lock poisoned");
        deliveries
            .changelog_next
            .get(&self.tracker.changelog_topics[store.0])
            .copied()
    }

    /// Records sent so far: (changelog, output).
    pub fn sent(&self) -> (u64, u64) {
        (self.changelog_records_sent, self.output_records_sent)
    }
}
