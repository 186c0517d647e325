//! A task's writer to Kafka: its changelog records (tagged with the input offset) and output
//! records, through the task's own idempotent producer. Records are sent in write-out
//! generations; it tracks when each generation is acknowledged and how far each changelog got.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::warn;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::BaseRecord;

use crate::clients::{client_config, setting_error, ClientRole};
use crate::config::StreamsConfig;
pub use crate::delivery::WriteOutListener;
use crate::delivery::{
    delivery_opaque, AcknowledgedRun, DeliveryMetrics, DeliveryTracker, GroupMetadataCell,
    RecordSink, SinkRecord, TransactionFailure, TransactionOffsets,
};
use crate::error::{EngineError, Result};
use crate::failpoints;
use crate::fence::Fence;
use crate::memory_budget::ProducerBudget;
use crate::metrics::EngineMetrics;
use crate::store::changelog_format::encode_changelog_value;
use crate::store::StoreId;
use crate::task_id::TaskId;

/// Longest a record waits for room in the producer's queue before the task fails.
const QUEUE_FULL_WAIT: Duration = Duration::from_secs(60);

/// Longest the broker may take to register a task's transactional id (fencing its earlier
/// owner) or to abort a transaction.
const TRANSACTION_STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a failed step waits to learn whether the producer was fenced.
const FENCE_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Under exactly-once: what a task's transactions commit with, and where they stand.
pub(crate) struct TransactionScope {
    /// The task's input topic (its partition is the task's).
    pub input_topic: String,
    /// The consumer's group membership, which the input offsets are committed under.
    pub group: GroupMetadataCell,
    pub transactional_id: String,
}

struct Transactions {
    scope: TransactionScope,
    /// A transaction is open (begun at the first record sent after a commit).
    open: bool,
    /// The input offset the last committed transaction committed.
    committed_input: Option<i64>,
    /// The newest write-out generation whose transaction committed: only those may reach
    /// RocksDB.
    committed_generation: Option<u64>,
    /// A transaction failed: nothing more is sent or written (the task restarts).
    failed: Option<String>,
    /// Once a step failed: whether the producer turned out fenced (asked once).
    fenced: std::sync::OnceLock<bool>,
}

/// Sends a task's records and reports, after a flush, where its changelogs stand.
pub struct RecordCollector {
    task: TaskId,
    producer: Arc<dyn RecordSink>,
    /// Closed once the task's partition may be another member's: nothing more is sent.
    fence: Fence,
    tracker: DeliveryTracker,
    /// This producer's part of the memory budget, shown while it lives.
    _budget: Option<ProducerBudget>,
    changelog_records_sent: u64,
    output_records_sent: u64,
    /// The write-out generation records are sent in now.
    generation: u64,
    /// Records sent in the current generation.
    sent_in_generation: u64,
    /// Under exactly-once, the task's transactions; `None` under at-least-once.
    transactions: Option<Transactions>,
    /// Transactions by outcome (`None`: not measured, as in the benchmarks).
    transaction_outcomes: Option<prometheus::IntCounterVec>,
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
        Self::with_sink(task, config, store_names, metrics, listener, |tracker| {
            let producer: rdkafka::producer::ThreadedProducer<DeliveryTracker> =
                client_config(config, ClientRole::Producer(task))
                    .create_with_context(tracker)
                    .map_err(|e| setting_error(&config.client_settings, e))?;
            Ok(Box::new(producer))
        })
    }

    /// A collector over the sink `sink` makes from the tracker that counts its answers.
    pub(crate) fn with_sink(
        task: TaskId,
        config: &StreamsConfig,
        store_names: &[String],
        metrics: Option<&EngineMetrics>,
        listener: Option<WriteOutListener>,
        sink: impl FnOnce(DeliveryTracker) -> Result<Box<dyn RecordSink>>,
    ) -> Result<Self> {
        let tracker = DeliveryTracker::new(
            store_names
                .iter()
                .map(|s| config.changelog_topic(s))
                .collect(),
            metrics.map(|m| DeliveryMetrics {
                ack_latency: m.produce_ack_latency.clone(),
                errors: m.produce_errors.clone(),
            }),
            listener,
        );
        Ok(Self {
            task,
            producer: Arc::from(sink(tracker.clone())?),
            fence: Fence::default(),
            _budget: metrics.map(|m| ProducerBudget::open(m, &config.client_memory)),
            tracker,
            changelog_records_sent: 0,
            output_records_sent: 0,
            generation: 0,
            sent_in_generation: 0,
            transactions: None,
            transaction_outcomes: metrics.map(|m| m.transactions.clone()),
        })
    }

    /// Exactly-once: registers the task's transactional id with the broker (fencing the
    /// producer of any earlier owner of the task and aborting its open transaction), before
    /// the task restores its changelogs, so that no earlier owner's transaction can commit
    /// after the restore has read to the end. From now on records are sent in transactions.
    pub(crate) fn start_transactions(&mut self, scope: TransactionScope) -> Result<()> {
        self.producer
            .init_transactions(TRANSACTION_STEP_TIMEOUT)
            .map_err(|failure| {
                self.transaction_error("registering", &scope.transactional_id, failure)
            })?;
        self.transactions = Some(Transactions {
            scope,
            open: false,
            committed_input: None,
            committed_generation: None,
            failed: None,
            fenced: std::sync::OnceLock::new(),
        });
        Ok(())
    }

    /// Records go in transactions (exactly-once).
    pub(crate) fn transactional(&self) -> bool {
        self.transactions.is_some()
    }

    /// Whether write-out `generation` may be written to RocksDB: under exactly-once only once
    /// its transaction committed.
    pub(crate) fn may_write(&self, generation: u64) -> bool {
        match &self.transactions {
            None => true,
            Some(t) => t.committed_generation.is_some_and(|c| generation <= c),
        }
    }

    fn count_transaction(&self, outcome: &str) {
        if let Some(outcomes) = &self.transaction_outcomes {
            outcomes.with_label_values(&[outcome]).inc();
        }
    }

    /// Under exactly-once, a failure of a producer that a newer owner of the task fenced is
    /// reported as fenced, whatever the step that met it (a send, a delivery, a flush).
    fn or_fenced(&self, error: EngineError) -> EngineError {
        let Some(transactions) = &self.transactions else {
            return error;
        };
        let fenced = *transactions.fenced.get_or_init(|| {
            let fatal = || self.producer.fatal_error().is_some_and(|f| f.fenced);
            // A produce refused as fenced leaves the transaction abortable, not the producer
            // failed; aborting tells: the broker refuses the abort (or the epoch bump before
            // it) once a newer producer holds the transactional id. The transaction must be
            // aborted anyway.
            fatal()
                || match self.producer.abort_transaction(FENCE_CHECK_TIMEOUT) {
                    Err(failure) => failure.fenced || fatal(),
                    Ok(()) => false,
                }
        });
        match fenced {
            true => EngineError::ProducerFenced {
                task: self.task,
                transactional_id: transactions.scope.transactional_id.clone(),
                reason: format!("after: {error}"),
            },
            false => error,
        }
    }

    fn transaction_error(
        &self,
        step: &'static str,
        transactional_id: &str,
        failure: TransactionFailure,
    ) -> EngineError {
        self.count_transaction(if failure.fenced { "fenced" } else { "aborted" });
        if failure.fenced {
            EngineError::ProducerFenced {
                task: self.task,
                transactional_id: transactional_id.to_string(),
                reason: failure.reason,
            }
        } else {
            EngineError::TransactionAborted {
                task: self.task,
                step,
                reason: failure.reason,
            }
        }
    }

    /// Commits the open transaction with every write-out generation sealed so far and the
    /// task's next input offset (`input_next`, for the group): when it returns, every record
    /// of it is acknowledged and visible to read_committed readers. A failure aborts the
    /// transaction (or finds the producer fenced) and leaves the collector refusing to send
    /// or write anything more. Nothing to do when nothing was sent or consumed since the last
    /// commit.
    pub(crate) fn commit_transaction(
        &mut self,
        input_next: Option<i64>,
        timeout: Duration,
    ) -> Result<()> {
        self.ensure_unfenced()?;
        let sealed_through = self.generation.checked_sub(1);
        let Some(transactions) = self.transactions.as_mut() else {
            return Ok(());
        };
        let input_moved = input_next.is_some() && input_next != transactions.committed_input;
        if !transactions.open && !input_moved {
            transactions.committed_generation = sealed_through;
            return Ok(());
        }
        // Nothing sent since the last commit, but input consumed: a transaction of the input
        // offset alone.
        self.begin_transaction_if_needed()?;
        let transactions = self.transactions.as_mut().expect("checked above");
        transactions.open = false;
        let offsets = input_next.map(|next_offset| TransactionOffsets {
            topic: &transactions.scope.input_topic,
            partition: self.task.partition,
            next_offset,
            group: transactions.scope.group.get(),
        });
        let result = match failpoints::fires(failpoints::TRANSACTION_COMMIT_FAILS) {
            true => Err(TransactionFailure {
                reason: format!("failpoint {}", failpoints::TRANSACTION_COMMIT_FAILS),
                fenced: false,
            }),
            false => self.producer.commit_transaction(offsets.as_ref(), timeout),
        };
        let failure = match result {
            Ok(()) => {
                transactions.committed_input = input_next;
                transactions.committed_generation = sealed_through;
                self.count_transaction("committed");
                return Ok(());
            }
            Err(failure) => failure,
        };
        transactions.failed = Some(failure.reason.clone());
        let transactional_id = transactions.scope.transactional_id.clone();
        if !failure.fenced {
            if failpoints::fires(failpoints::TRANSACTION_ABORT_DURING_ABORT) {
                failpoints::crash(failpoints::TRANSACTION_ABORT_DURING_ABORT);
            }
            // Best effort: the broker aborts it anyway once the next owner (or this task's
            // restart) registers the transactional id, or at its timeout.
            if let Err(abort) = self.producer.abort_transaction(TRANSACTION_STEP_TIMEOUT) {
                warn!(task = %self.task, "aborting the failed transaction failed too: {}", abort.reason);
            }
        }
        Err(self.transaction_error("commit", &transactional_id, failure))
    }

    /// A collector whose records are acknowledged as they are sent, in process (see
    /// [`crate::delivery::InstantSink`]), and the sink's state to steer it.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn instant(
        task: TaskId,
        config: &StreamsConfig,
        store_names: &[String],
        listener: Option<WriteOutListener>,
    ) -> (Self, crate::delivery::InstantSinkHandle) {
        let mut state = None;
        let collector = Self::with_sink(task, config, store_names, None, listener, |tracker| {
            let (sink, sink_state) = crate::delivery::InstantSink::new(tracker);
            state = Some(sink_state);
            Ok(Box::new(sink))
        })
        .expect("an in-process sink cannot fail to start");
        (collector, state.expect("made above"))
    }

    /// Puts the collector behind the task's fence: once it closes, nothing more is sent and
    /// the producer's queued and in-flight records are purged at once.
    pub(crate) fn fence_with(&mut self, fence: Fence) {
        let producer = self.producer.clone();
        fence.on_close(Box::new(move || producer.purge()));
        self.fence = fence;
    }

    /// An error once the task is fenced, or (exactly-once) once a transaction failed.
    pub(crate) fn ensure_unfenced(&self) -> Result<()> {
        if self.fence.is_closed() {
            return Err(EngineError::Fenced { task: self.task });
        }
        if let Some(reason) = self.transactions.as_ref().and_then(|t| t.failed.as_ref()) {
            return Err(EngineError::TransactionAborted {
                task: self.task,
                step: "commit (earlier)",
                reason: reason.clone(),
            });
        }
        Ok(())
    }

    /// Exactly-once: opens a transaction before the first record after a commit.
    fn begin_transaction_if_needed(&mut self) -> Result<()> {
        let Some(transactions) = self.transactions.as_mut() else {
            return Ok(());
        };
        if transactions.open {
            return Ok(());
        }
        match self.producer.begin_transaction() {
            Ok(()) => {
                transactions.open = true;
                Ok(())
            }
            Err(failure) => {
                transactions.failed = Some(failure.reason.clone());
                let transactional_id = transactions.scope.transactional_id.clone();
                Err(self.transaction_error("begin", &transactional_id, failure))
            }
        }
    }

    fn send(&mut self, topic: &str, record: SinkRecord<'_>) -> Result<()> {
        self.ensure_unfenced()?;
        self.begin_transaction_if_needed()?;
        let mut record = record;
        let mut queue_full_since = None;
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.sent_in_generation += 1;
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    // Backpressure: the local queue drains as the broker acknowledges; a queue
                    // that stays full means the broker takes nothing: the task fails.
                    let since = *queue_full_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= QUEUE_FULL_WAIT {
                        return Err(EngineError::Produce {
                            task: self.task,
                            topic: topic.to_string(),
                            reason: format!(
                                "the producer's queue stayed full for {QUEUE_FULL_WAIT:?} (the broker acknowledges nothing)"
                            ),
                        });
                    }
                    self.ensure_unfenced()?;
                    std::thread::sleep(Duration::from_millis(5));
                    record = returned;
                }
                Err((error, _)) => {
                    return Err(self.or_fenced(EngineError::Produce {
                        task: self.task,
                        topic: topic.to_string(),
                        reason: error.to_string(),
                    }))
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
        let topic = self.tracker.changelog_topics()[store.0].clone();
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
        flushed.map_err(|e| self.or_fenced(EngineError::kafka("flush producer")(e)))
    }

    /// Ends the current write-out generation (every record sent since the last seal) and
    /// answers its number; later records go to the next one.
    pub fn seal(&mut self) -> u64 {
        let generation = self.generation;
        self.generation += 1;
        let sent = std::mem::take(&mut self.sent_in_generation);
        self.tracker.seal(generation, sent);
        generation
    }

    /// An error once the broker refused any record sent so far.
    pub fn refused(&self) -> Result<()> {
        match self.tracker.first_refusal() {
            Some(reason) => Err(self.refusal(reason)),
            None => Ok(()),
        }
    }

    fn refusal(&self, reason: String) -> EngineError {
        self.or_fenced(EngineError::Produce {
            task: self.task,
            topic: "(see reason)".into(),
            reason,
        })
    }

    /// For a sealed generation whose every record the broker acknowledged: per store, the
    /// changelog offsets acknowledged in it (`None`: none sent), taken (asked once).
    /// `Ok(None)` while records are in flight; an error once any record was refused.
    pub(crate) fn take_acknowledged(
        &mut self,
        generation: u64,
    ) -> Result<Option<Vec<Option<AcknowledgedRun>>>> {
        self.tracker
            .take_answered(generation)
            .map_err(|reason| self.refusal(reason))
    }

    /// The changelog topic of `store`.
    pub(crate) fn changelog_topic(&self, store: StoreId) -> &str {
        &self.tracker.changelog_topics()[store.0]
    }

    /// Whether nothing was sent since the last seal.
    pub(crate) fn nothing_sent_since_seal(&self) -> bool {
        self.sent_in_generation == 0
    }

    /// Where `store`'s changelog partition `partition` ends now, as the broker says.
    pub(crate) fn changelog_end(
        &self,
        store: StoreId,
        partition: i32,
        timeout: Duration,
    ) -> Result<i64> {
        let topic = self.changelog_topic(store);
        self.producer
            .end_offset(topic, partition, timeout)
            .map_err(EngineError::kafka("read the changelog's end"))
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
