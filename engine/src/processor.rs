//! The processor API: what a processor receives (a record, its task's stores and output) and
//! how it reports a record it cannot handle.

use std::sync::Arc;

use crate::record_collector::RecordCollector;
use crate::task_store::TaskStore;

/// A record read from the source topic, as raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRecord {
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch, when the broker gave one.
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// Why a processor did not process a record. The first four are skipped (counted and logged);
/// `Deserialization` follows the configured policy; `Failed` stops the task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record has a null key")]
    NullKey,
    #[error("record has a null value")]
    NullValue,
    #[error("cannot deserialize {part}: {reason}")]
    Deserialization { part: &'static str, reason: String },
    #[error("{0}")]
    Failed(String),
}

impl RecordError {
    /// The `reason` label of `kstreams_records_skipped_total`.
    pub fn skip_reason(&self) -> &'static str {
        match self {
            RecordError::NullKey => "null_key",
            RecordError::NullValue => "null_value",
            RecordError::Deserialization { .. } => "deserialization_error",
            RecordError::Failed(_) => "processing_error",
        }
    }
}

/// Index of a state store within its topology (the order stores were added).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoreId(pub usize);

/// A key's value as the record being processed sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// The value already reflects this record (input processed again): leave it.
    AlreadyApplied,
    /// The value to update (`None`: the key has none yet).
    Current(Option<Vec<u8>>),
}

/// Handles one record at a time for one task. One instance exists per task.
pub trait Processor: Send + 'static {
    fn process(
        &mut self,
        record: &InputRecord,
        ctx: &mut ProcessorContext<'_>,
    ) -> Result<(), RecordError>;

    /// Re-emits what depends on one store entry. After a crash, a task restores changelog
    /// records whose input it will not process again, but whose output may never have
    /// reached the broker; the engine calls this for each such key with its restored value.
    /// The default does nothing (for processors without output derived from stores).
    fn replay(
        &mut self,
        _store: StoreId,
        _key: &[u8],
        _value: &[u8],
        _ctx: &mut ProcessorContext<'_>,
    ) -> Result<(), RecordError> {
        Ok(())
    }
}

/// Makes a fresh processor for each task.
pub type ProcessorFactory = Arc<dyn Fn() -> Box<dyn Processor> + Send + Sync>;

/// A processor's view of its task while it handles one record: the task's stores (reads see
/// the task's own uncommitted writes) and its output. Every store write is also sent to the
/// store's changelog, tagged with the input offset it came from.
pub struct ProcessorContext<'a> {
    pub(crate) store: &'a mut TaskStore,
    pub(crate) collector: &'a mut RecordCollector,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    /// The record's timestamp (ms since the epoch), given to the records it produces.
    pub(crate) timestamp: Option<i64>,
}

impl ProcessorContext<'_> {
    /// The partition of the record being processed (also the task's partition).
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The offset of the record being processed.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Whether store writes are cached (`--cache-max-bytes` > 0), like Kafka Streams' record
    /// cache: the updates of a key between two commits collapse into one, whose changelog
    /// record is sent at the commit, when the engine also calls [`Processor::replay`] for
    /// every written key. A processor whose output derives from a store then forwards it from
    /// `replay` only (one record per key per commit), as the built-in count does; without
    /// caching it forwards every update as it happens.
    pub fn caching(&self) -> bool {
        self.store.caching()
    }

    /// Reads a key from a store.
    pub fn get(&self, store: StoreId, key: &[u8]) -> Result<Option<Vec<u8>>, RecordError> {
        self.store
            .get(store, key)
            .map_err(|e| RecordError::Failed(e.to_string()))
    }

    /// Whether the record being processed is already reflected in a key's value: the value
    /// was produced by this record or a later one. Input can be processed again (a task
    /// resumes from its own last commit after a crash, a restart or a period with two owners);
    /// an aggregation that checks this before updating counts each record once.
    pub fn already_applied(&self, store: StoreId, key: &[u8]) -> Result<bool, RecordError> {
        Ok(matches!(
            self.read_for_update(store, key)?,
            KeyState::AlreadyApplied
        ))
    }

    /// [`Self::already_applied`] and [`Self::get`] in one store read, for aggregations.
    pub fn read_for_update(&self, store: StoreId, key: &[u8]) -> Result<KeyState, RecordError> {
        let current = self
            .store
            .get_with_version(store, key)
            .map_err(|e| RecordError::Failed(e.to_string()))?;
        Ok(match current {
            Some((Some(version), _)) if version >= self.offset => KeyState::AlreadyApplied,
            current => KeyState::Current(current.map(|(_, value)| value)),
        })
    }

    /// Writes a key to a store and its changelog (now, or at the commit when caching), tagged
    /// with the record's input offset.
    pub fn put(&mut self, store: StoreId, key: &[u8], value: &[u8]) -> Result<(), RecordError> {
        self.store
            .put(store, key, value, self.offset, self.timestamp);
        if self.store.caching() {
            return Ok(());
        }
        self.collector
            .send_changelog(store, self.partition, key, value, self.offset)
            .map_err(|e| RecordError::Failed(e.to_string()))
    }

    /// Sends a record to an output topic (partitioned by key), with the input record's
    /// timestamp, as Kafka Streams does.
    pub fn forward(&mut self, topic: &str, key: &[u8], value: &[u8]) -> Result<(), RecordError> {
        self.collector
            .send_output(topic, key, value, self.timestamp)
            .map_err(|e| RecordError::Failed(e.to_string()))
    }
}
