//! Where a task's records go and what the broker answered: the [`RecordSink`] port (the real
//! librdkafka producer behind it, and an in-process [`InstantSink`] for unit tests and the
//! engine benchmark) and the [`DeliveryTracker`] that counts the answers per write-out
//! generation and how far each changelog got.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use prometheus::{Histogram, IntCounter};
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig, ThreadedProducer,
};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// A record as the collector sends it; its delivery opaque carries its generation and send
/// time.
pub(crate) type SinkRecord<'a> = BaseRecord<'a, [u8], [u8], usize>;

/// The instance's group membership as its consumer last saw it (generation and member id),
/// which a transaction's input offsets are committed under: set by the rebalance listener at
/// every assignment, read by the tasks' transactional commits.
#[derive(Clone, Default)]
pub struct GroupMetadataCell(Arc<Mutex<Option<Arc<ConsumerGroupMetadata>>>>);

impl GroupMetadataCell {
    pub(crate) fn set(&self, metadata: Option<ConsumerGroupMetadata>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = metadata.map(Arc::new);
    }

    pub(crate) fn get(&self) -> Option<Arc<ConsumerGroupMetadata>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What a transaction commits besides its records: the task's next input offset, for the
/// group, under the consumer's membership.
pub(crate) struct TransactionOffsets<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub next_offset: i64,
    pub group: Option<Arc<ConsumerGroupMetadata>>,
}

/// Why a transaction step failed, and whether the producer was fenced (another producer now
/// holds the task's transactional id: the partition is another owner's) or the transaction
/// can only be aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TransactionFailure {
    pub reason: String,
    pub fenced: bool,
}

impl TransactionFailure {
    fn from_kafka(error: KafkaError) -> Self {
        let fenced = match &error {
            KafkaError::Transaction(rd) => rd.is_fatal() || fenced_code(rd.code()),
            other => other.rdkafka_error_code().is_some_and(fenced_code),
        };
        Self {
            reason: error.to_string(),
            fenced,
        }
    }
}

/// What the record collector asks of its producer. Answers come back through the
/// [`DeliveryTracker`] the sink was made with. The transaction steps are used only under
/// exactly-once (the producer then has a `transactional.id`).
pub(crate) trait RecordSink: Send + Sync {
    /// Queues the record, or hands it back with the reason (a full queue is retried).
    #[allow(clippy::result_large_err)] // rdkafka's own send: the record comes back to retry
    fn send<'a>(&self, record: SinkRecord<'a>) -> Result<(), (KafkaError, SinkRecord<'a>)>;
    /// Waits until every queued record is answered.
    fn flush(&self, timeout: Duration) -> KafkaResult<()>;
    /// Drops every record queued or in flight (each answered as refused), from any thread.
    fn purge(&self);
    /// Registers the producer's transactional id with the broker: the id's earlier producer
    /// is fenced and its open transaction aborted.
    fn init_transactions(&self, timeout: Duration) -> Result<(), TransactionFailure>;
    fn begin_transaction(&self) -> Result<(), TransactionFailure>;
    /// Adds the input offset to the open transaction and commits it: every record sent in it
    /// is acknowledged when this returns.
    fn commit_transaction(
        &self,
        offsets: Option<&TransactionOffsets<'_>>,
        timeout: Duration,
    ) -> Result<(), TransactionFailure>;
    fn abort_transaction(&self, timeout: Duration) -> Result<(), TransactionFailure>;
    /// The producer's fatal error, once it has one (under exactly-once: fenced by a newer
    /// producer of its transactional id); it sends nothing more.
    fn fatal_error(&self) -> Option<TransactionFailure>;
    /// Where the partition ends now (its high watermark), as the broker says.
    fn end_offset(&self, topic: &str, partition: i32, timeout: Duration) -> KafkaResult<i64>;
}

impl RecordSink for ThreadedProducer<DeliveryTracker> {
    #[allow(clippy::result_large_err)]
    fn send<'a>(&self, record: SinkRecord<'a>) -> Result<(), (KafkaError, SinkRecord<'a>)> {
        ThreadedProducer::send(self, record)
    }

    fn flush(&self, timeout: Duration) -> KafkaResult<()> {
        Producer::flush(self, timeout)
    }

    fn purge(&self) {
        Producer::purge(self, PurgeConfig::default().queue().inflight());
    }

    fn init_transactions(&self, timeout: Duration) -> Result<(), TransactionFailure> {
        Producer::init_transactions(self, timeout).map_err(TransactionFailure::from_kafka)
    }

    fn begin_transaction(&self) -> Result<(), TransactionFailure> {
        Producer::begin_transaction(self).map_err(TransactionFailure::from_kafka)
    }

    fn commit_transaction(
        &self,
        offsets: Option<&TransactionOffsets<'_>>,
        timeout: Duration,
    ) -> Result<(), TransactionFailure> {
        let deadline = Instant::now() + timeout;
        if let Some(offsets) = offsets {
            let Some(group) = &offsets.group else {
                return Err(TransactionFailure {
                    reason: "the consumer's group membership is not known yet".into(),
                    fenced: false,
                });
            };
            let mut list = TopicPartitionList::new();
            list.add_partition_offset(
                offsets.topic,
                offsets.partition,
                Offset::Offset(offsets.next_offset),
            )
            .map_err(TransactionFailure::from_kafka)?;
            Producer::send_offsets_to_transaction(self, &list, group, timeout)
                .map_err(TransactionFailure::from_kafka)?;
        }
        Producer::commit_transaction(self, deadline.saturating_duration_since(Instant::now()))
            .map_err(TransactionFailure::from_kafka)
    }

    fn abort_transaction(&self, timeout: Duration) -> Result<(), TransactionFailure> {
        Producer::abort_transaction(self, timeout).map_err(TransactionFailure::from_kafka)
    }

    fn fatal_error(&self) -> Option<TransactionFailure> {
        let (code, reason) = self.client().fatal_error()?;
        Some(TransactionFailure {
            fenced: fenced_code(code),
            reason,
        })
    }

    fn end_offset(&self, topic: &str, partition: i32, timeout: Duration) -> KafkaResult<i64> {
        let (_, high) = self.client().fetch_watermarks(topic, partition, timeout)?;
        Ok(high)
    }
}

/// The codes a producer gets once a newer producer of its transactional id took over.
fn fenced_code(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::Fenced
    )
}

/// What the broker answered for the records of one write-out generation.
struct GenerationDeliveries {
    /// Records acknowledged or refused.
    answered: u64,
    /// Records sent, known once the generation is sealed.
    sent: Option<u64>,
    /// Per store: the changelog offsets acknowledged.
    changelog: Vec<Option<AcknowledgedRun>>,
}

/// The changelog offsets the broker acknowledged for one store's records of one write-out
/// generation: where they lie, and how many there were (a run with as many offsets as
/// records is unbroken: no other writer appended between them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AcknowledgedRun {
    pub first: i64,
    pub last: i64,
    pub records: u64,
}

impl AcknowledgedRun {
    fn add(run: &mut Option<Self>, offset: i64) {
        *run = Some(match *run {
            None => Self {
                first: offset,
                last: offset,
                records: 1,
            },
            Some(r) => Self {
                first: r.first.min(offset),
                last: r.last.max(offset),
                records: r.records + 1,
            },
        });
    }

    /// No other record lies between the first and the last.
    pub(crate) fn unbroken(&self) -> bool {
        (self.last - self.first + 1) as u64 == self.records
    }
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
                changelog: vec![None; stores],
            })
    }
}

/// Called on the producer's thread when a sealed generation is fully answered or a record is
/// refused (the task then takes the acknowledged write-outs, or fails).
pub type WriteOutListener = Box<dyn Fn() + Send + Sync>;

/// Acknowledgement latency and refusals.
#[derive(Clone)]
pub(crate) struct DeliveryMetrics {
    pub ack_latency: Histogram,
    pub errors: IntCounter,
}

/// Counts the broker's answers per write-out generation (on the producer's polling thread).
#[derive(Clone)]
pub(crate) struct DeliveryTracker {
    deliveries: Arc<Mutex<Deliveries>>,
    changelog_topics: Arc<Vec<String>>,
    /// `None`: not measured, as in the benchmarks.
    metrics: Option<DeliveryMetrics>,
    listener: Option<Arc<WriteOutListener>>,
}

/// Bits of a record's delivery opaque that carry its write-out generation; the rest carry its
/// send time.
const GENERATION_BITS: u32 = 16;

pub(crate) fn delivery_opaque(generation: u64) -> usize {
    (send_clock_micros() << GENERATION_BITS) | (generation as usize & 0xffff)
}

/// Microseconds since the first record was sent: each record carries its send time as its
/// delivery opaque (a number, so nothing is allocated per record).
fn send_clock_micros() -> usize {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as usize
}

impl DeliveryTracker {
    pub(crate) fn new(
        changelog_topics: Vec<String>,
        metrics: Option<DeliveryMetrics>,
        listener: Option<WriteOutListener>,
    ) -> Self {
        Self {
            deliveries: Arc::default(),
            changelog_topics: Arc::new(changelog_topics),
            metrics,
            listener: listener.map(Arc::new),
        }
    }

    fn deliveries(&self) -> MutexGuard<'_, Deliveries> {
        self.deliveries.lock().expect("delivery lock poisoned")
    }

    /// The changelog topic of each store, by store index.
    pub(crate) fn changelog_topics(&self) -> &[String] {
        &self.changelog_topics
    }

    /// One record answered: acknowledged at `Ok((topic, offset))`, or refused with a reason.
    pub(crate) fn answered(&self, opaque: usize, outcome: Result<(&str, i64), String>) {
        if let Some(metrics) = &self.metrics {
            let sent_at_micros = opaque >> GENERATION_BITS;
            let micros = send_clock_micros().saturating_sub(sent_at_micros);
            metrics.ack_latency.observe(micros as f64 / 1e6);
            if outcome.is_err() {
                metrics.errors.inc();
            }
        }
        let mut deliveries = self.deliveries();
        let first_refusal = outcome.is_err() && deliveries.first_error.is_none();
        if let (Err(reason), true) = (&outcome, first_refusal) {
            deliveries.first_error = Some(reason.clone());
        }
        let generation = deliveries.generation(opaque as u16, self.changelog_topics.len());
        generation.answered += 1;
        if let Ok((topic, offset)) = outcome {
            if let Some(store) = self.changelog_topics.iter().position(|t| t == topic) {
                AcknowledgedRun::add(&mut generation.changelog[store], offset);
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

    /// Generation `generation` ended with `sent` records.
    pub(crate) fn seal(&self, generation: u64, sent: u64) {
        let stores = self.changelog_topics.len();
        self.deliveries().generation(generation as u16, stores).sent = Some(sent);
    }

    /// Why the broker refused the first refused record, if it refused any.
    pub(crate) fn first_refusal(&self) -> Option<String> {
        self.deliveries().first_error.clone()
    }

    /// For a sealed generation whose every record was answered: per store, the changelog
    /// offsets acknowledged in it, taken (asked once). `Err` with the first refusal once any
    /// record was refused.
    pub(crate) fn take_answered(
        &self,
        generation: u64,
    ) -> Result<Option<Vec<Option<AcknowledgedRun>>>, String> {
        let mut deliveries = self.deliveries();
        if let Some(reason) = &deliveries.first_error {
            return Err(reason.clone());
        }
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
            .map(|answered| answered.changelog))
    }
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let outcome = match result {
            Ok(message) => Ok((message.topic(), message.offset())),
            Err((error, message)) => Err(format!("{error} (topic {})", message.topic())),
        };
        self.answered(opaque, outcome);
    }
}

/// A sink that acknowledges every record as it is sent, at the next offset of its
/// partition, in process (no broker): the engine benchmark's and the unit tests' producer.
/// Tests may hold the answers back, refuse records, or have another writer append to a
/// partition between ours.
#[cfg(any(test, feature = "testing"))]
pub(crate) struct InstantSink {
    tracker: DeliveryTracker,
    state: Arc<Mutex<InstantSinkState>>,
}

/// An answer held back: the record's delivery opaque, and where it landed or why not.
#[cfg(any(test, feature = "testing"))]
type HeldAnswer = (usize, Result<(String, i64), String>);

/// How a test steers an [`InstantSink`].
#[cfg(any(test, feature = "testing"))]
pub(crate) type InstantSinkHandle = Arc<Mutex<InstantSinkState>>;

#[cfg(any(test, feature = "testing"))]
#[derive(Default)]
pub(crate) struct InstantSinkState {
    /// Next offset per topic and partition (-1 when the record names none).
    pub next_offset: HashMap<String, HashMap<i32, i64>>,
    /// Answers are queued here instead of given at once (delivered by `flush`).
    pub hold: bool,
    held: Vec<HeldAnswer>,
    /// Refuse every record sent from now on, with this reason.
    pub refuse: Option<String>,
    /// Records sent, by topic.
    pub sent: HashMap<String, u64>,
    /// The sink was purged (its task fenced).
    pub purged: bool,
    /// Transactions: whether one is open, the partitions it wrote (each gets a marker's
    /// offset when it ends), and what ended: (committed, the input offset it committed).
    pub in_transaction: bool,
    written_in_transaction: Vec<(String, i32)>,
    pub transactions: Vec<(bool, Option<i64>)>,
    /// The next commit fails with this failure (then it is cleared).
    pub fail_commit: Option<TransactionFailure>,
}

#[cfg(test)]
impl InstantSinkState {
    /// Another writer appends `records` records to the partition (a zombie, or a new owner).
    pub fn foreign_append(&mut self, topic: &str, partition: i32, records: i64) {
        let partitions = self.next_offset.entry(topic.to_string()).or_default();
        *partitions.entry(partition).or_default() += records;
    }
}

#[cfg(any(test, feature = "testing"))]
impl InstantSink {
    pub(crate) fn new(tracker: DeliveryTracker) -> (Self, InstantSinkHandle) {
        let state = Arc::<Mutex<InstantSinkState>>::default();
        let sink = Self {
            tracker,
            state: state.clone(),
        };
        (sink, state)
    }
}

#[cfg(any(test, feature = "testing"))]
impl InstantSinkState {
    /// Counts a record sent to `topic` and answers where the broker would put it (nothing is
    /// allocated once the topic and partition were seen: the benchmark sends millions).
    fn place(&mut self, topic: &str, partition: i32) -> Result<i64, String> {
        match self.sent.get_mut(topic) {
            Some(sent) => *sent += 1,
            None => {
                self.sent.insert(topic.to_string(), 1);
            }
        }
        if let Some(reason) = &self.refuse {
            return Err(reason.clone());
        }
        let partitions = match self.next_offset.get_mut(topic) {
            Some(partitions) => partitions,
            None => self.next_offset.entry(topic.to_string()).or_default(),
        };
        let next = partitions.entry(partition).or_default();
        *next += 1;
        let placed = *next - 1;
        if self.in_transaction
            && !self
                .written_in_transaction
                .iter()
                .any(|(t, p)| t == topic && *p == partition)
        {
            self.written_in_transaction
                .push((topic.to_string(), partition));
        }
        Ok(placed)
    }

    /// Ends the open transaction: a marker in each partition it wrote, as the broker does.
    fn end_transaction(&mut self, committed: bool, input_next: Option<i64>) {
        for (topic, partition) in std::mem::take(&mut self.written_in_transaction) {
            *self
                .next_offset
                .entry(topic)
                .or_default()
                .entry(partition)
                .or_default() += 1;
        }
        self.in_transaction = false;
        self.transactions.push((committed, input_next));
    }
}

#[cfg(any(test, feature = "testing"))]
impl RecordSink for InstantSink {
    #[allow(clippy::result_large_err)]
    fn send<'a>(&self, record: SinkRecord<'a>) -> Result<(), (KafkaError, SinkRecord<'a>)> {
        let mut state = self.state.lock().expect("sink lock poisoned");
        let placed = state.place(record.topic, record.partition.unwrap_or(-1));
        if state.hold {
            let answer = placed.map(|offset| (record.topic.to_string(), offset));
            state.held.push((record.delivery_opaque, answer));
            return Ok(());
        }
        drop(state);
        let outcome = placed.map(|offset| (record.topic, offset));
        self.tracker.answered(record.delivery_opaque, outcome);
        Ok(())
    }

    fn flush(&self, _: Duration) -> KafkaResult<()> {
        let held = std::mem::take(&mut self.state.lock().expect("sink lock poisoned").held);
        for (opaque, answer) in held {
            let outcome = answer
                .as_ref()
                .map(|(topic, offset)| (topic.as_str(), *offset));
            self.tracker.answered(opaque, outcome.map_err(Clone::clone));
        }
        Ok(())
    }

    fn purge(&self) {
        let mut state = self.state.lock().expect("sink lock poisoned");
        state.purged = true;
        let held = std::mem::take(&mut state.held);
        drop(state);
        for (opaque, _) in held {
            let purged = Err("Local: Purged in queue".to_string());
            self.tracker.answered(opaque, purged);
        }
    }

    fn init_transactions(&self, _: Duration) -> Result<(), TransactionFailure> {
        Ok(())
    }

    fn begin_transaction(&self) -> Result<(), TransactionFailure> {
        let mut state = self.state.lock().expect("sink lock poisoned");
        assert!(!state.in_transaction, "a transaction begun twice");
        state.in_transaction = true;
        Ok(())
    }

    fn commit_transaction(
        &self,
        offsets: Option<&TransactionOffsets<'_>>,
        timeout: Duration,
    ) -> Result<(), TransactionFailure> {
        // Committing flushes: every record of the transaction is answered first.
        self.flush(timeout)
            .expect("an in-process flush cannot fail");
        let mut state = self.state.lock().expect("sink lock poisoned");
        assert!(state.in_transaction, "a commit without a transaction");
        if let Some(failure) = state.fail_commit.take() {
            return Err(failure);
        }
        state.end_transaction(true, offsets.map(|o| o.next_offset));
        Ok(())
    }

    fn abort_transaction(&self, _: Duration) -> Result<(), TransactionFailure> {
        let mut state = self.state.lock().expect("sink lock poisoned");
        if state.in_transaction {
            state.end_transaction(false, None);
        }
        Ok(())
    }

    fn fatal_error(&self) -> Option<TransactionFailure> {
        None
    }

    fn end_offset(&self, topic: &str, partition: i32, _: Duration) -> KafkaResult<i64> {
        let state = self.state.lock().expect("sink lock poisoned");
        Ok(state
            .next_offset
            .get(topic)
            .and_then(|partitions| partitions.get(&partition))
            .copied()
            .unwrap_or(0))
    }
}
