//! The processor API: what a processor receives (a record, its task's stores and output) and
//! how it reports a record it cannot handle.

use std::sync::Arc;

use crate::record_collector::RecordCollector;
pub use crate::store::StoreId;
use crate::store::TaskStore;

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

    /// Forwards what derives from one store entry as the engine flushes it: its changelog
    /// record is sent, and so is the output derived from it. The store decides when (as Kafka
    /// Streams' caching store forwards what it flushes): with the record cache
    /// (`--cache-max-bytes` > 0), once per key written since the last write-out, with the
    /// timestamp of the key's last record; without it, after each record, for each key it
    /// wrote. So a processor is the same code with the cache on or off. The store is read-only
    /// here. The default forwards nothing (for processors without output derived from stores).
    fn on_flush(
        &mut self,
        _store: StoreId,
        _key: &[u8],
        _value: &[u8],
        _ctx: &mut EmitContext<'_>,
    ) -> Result<(), RecordError> {
        Ok(())
    }

    /// Re-emits what derives from one store entry after a restore: a task restores changelog
    /// records whose input it will not process again, but whose output may never have
    /// reached the broker, and the engine calls this for each such key with its restored
    /// value. The store is read-only here. The default forwards what [`Self::on_flush`] does.
    fn reemit(
        &mut self,
        store: StoreId,
        key: &[u8],
        value: &[u8],
        ctx: &mut EmitContext<'_>,
    ) -> Result<(), RecordError> {
        self.on_flush(store, key, value, ctx)
    }
}

/// Makes a fresh processor for each task.
pub type ProcessorFactory = Arc<dyn Fn() -> Box<dyn Processor> + Send + Sync>;

/// A processor's view of its task while it handles one record: the task's stores (reads see
/// the task's own uncommitted writes) and its output. Every store write is also sent to the
/// store's changelog, tagged with the input offset it came from, and flushed to
/// [`Processor::on_flush`]: at the write-out with the record cache, else once the record is
/// processed (one changelog record per key per input record, so a record's updates to a key
/// reach the changelog together or not at all).
pub struct ProcessorContext<'a> {
    store: &'a mut TaskStore,
    collector: &'a mut RecordCollector,
    partition: i32,
    offset: i64,
    /// The record's timestamp (ms since the epoch), given to the records it produces.
    timestamp: Option<i64>,
    /// Without the record cache: keys written while handling this record, whose changelog
    /// records [`Self::send_changelog`] sends once the processor is done with it.
    written: Vec<(StoreId, Vec<u8>)>,
}

impl<'a> ProcessorContext<'a> {
    pub(crate) fn new(
        store: &'a mut TaskStore,
        collector: &'a mut RecordCollector,
        partition: i32,
        offset: i64,
        timestamp: Option<i64>,
    ) -> Self {
        Self {
            store,
            collector,
            partition,
            offset,
            timestamp,
            written: Vec::new(),
        }
    }

    /// Without the record cache, flushes each key the record wrote (its value after the
    /// record): its changelog record, then [`Processor::on_flush`]. The engine calls this once
    /// the processor returns.
    pub(crate) fn flush_uncached(&mut self, processor: &mut dyn Processor) -> crate::Result<()> {
        for (store, key) in std::mem::take(&mut self.written) {
            let Some(value) = self.store.get(store, &key)? else {
                continue;
            };
            self.collector
                .send_changelog(store, self.partition, &key, &value, self.offset)?;
            let mut emit = EmitContext::new(
                self.store,
                self.collector,
                self.partition,
                self.offset,
                self.timestamp,
            );
            processor
                .on_flush(store, &key, &value, &mut emit)
                .map_err(|e| crate::EngineError::Processing {
                    task: crate::TaskId::new(0, self.partition),
                    partition: self.partition,
                    offset: self.offset,
                    reason: format!("forwarding a store update: {e}"),
                })?;
        }
        Ok(())
    }

    /// The partition of the record being processed (also the task's partition).
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The offset of the record being processed.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Reads a key from a store.
    pub fn get(&self, store: StoreId, key: &[u8]) -> Result<Option<Vec<u8>>, RecordError> {
        read(self.store, store, key)
    }

    /// Whether the record being processed is already reflected in a key's value: the value
    /// was produced by a later record, or by this record before (when input is processed
    /// again: a task resumes from its last commit after a crash, a restart or a period with
    /// two owners). A value this record wrote just now is not "applied before": a record may
    /// update the same key several times. An aggregation that checks this before each update
    /// counts each record once; [`Self::update`] does both.
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
            Some((Some(version), _))
                if version > self.offset
                    || (version == self.offset && !self.store.written_since_commit(store, key)) =>
            {
                KeyState::AlreadyApplied
            }
            current => KeyState::Current(current.map(|(_, value)| value)),
        })
    }

    /// Updates a key unless this record is already applied to it (see
    /// [`Self::already_applied`]): `f` gets the current value (`None`: none yet) and returns the
    /// new one. Answers the new value, or `None` when the record was applied before.
    pub fn update(
        &mut self,
        store: StoreId,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> Result<Vec<u8>, RecordError>,
    ) -> Result<Option<Vec<u8>>, RecordError> {
        let current = match self.read_for_update(store, key)? {
            KeyState::AlreadyApplied => return Ok(None),
            KeyState::Current(current) => current,
        };
        let value = f(current.as_deref())?;
        self.put(store, key, &value)?;
        Ok(Some(value))
    }

    /// Writes a key to a store and its changelog (now, or at the commit when caching), tagged
    /// with the record's input offset.
    pub fn put(&mut self, store: StoreId, key: &[u8], value: &[u8]) -> Result<(), RecordError> {
        self.store
            .put(store, key, value, self.offset, self.timestamp);
        if !self.store.caching() && !self.written.iter().any(|(s, k)| *s == store && k == key) {
            self.written.push((store, key.to_vec()));
        }
        Ok(())
    }

    /// Sends a record to an output topic (partitioned by key), with the input record's
    /// timestamp, as Kafka Streams does.
    pub fn forward(&mut self, topic: &str, key: &[u8], value: &[u8]) -> Result<(), RecordError> {
        forward(self.collector, topic, key, value, self.timestamp)
    }
}

/// A store read as a processor sees it (the task's own uncommitted writes included).
fn read(from: &TaskStore, store: StoreId, key: &[u8]) -> Result<Option<Vec<u8>>, RecordError> {
    from.get(store, key)
        .map_err(|e| RecordError::Failed(e.to_string()))
}

/// An output record, as a processor sends it.
fn forward(
    collector: &mut RecordCollector,
    topic: &str,
    key: &[u8],
    value: &[u8],
    timestamp: Option<i64>,
) -> Result<(), RecordError> {
    collector
        .send_output(topic, key, value, timestamp)
        .map_err(|e| RecordError::Failed(e.to_string()))
}

/// A processor's view of its task while a store entry is flushed or re-emitted
/// ([`Processor::on_flush`], [`Processor::reemit`]): the stores, read-only, and its output.
pub struct EmitContext<'a> {
    store: &'a TaskStore,
    collector: &'a mut RecordCollector,
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
}

impl<'a> EmitContext<'a> {
    pub(crate) fn new(
        store: &'a TaskStore,
        collector: &'a mut RecordCollector,
        partition: i32,
        offset: i64,
        timestamp: Option<i64>,
    ) -> Self {
        Self {
            store,
            collector,
            partition,
            offset,
            timestamp,
        }
    }

    /// The task's partition.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The input offset of the update being flushed.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Reads a key from a store.
    pub fn get(&self, store: StoreId, key: &[u8]) -> Result<Option<Vec<u8>>, RecordError> {
        read(self.store, store, key)
    }

    /// Sends a record to an output topic (partitioned by key), with the timestamp of the
    /// input record that made the update.
    pub fn forward(&mut self, topic: &str, key: &[u8], value: &[u8]) -> Result<(), RecordError> {
        forward(self.collector, topic, key, value, self.timestamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StreamsConfig;
    use crate::store::StoredOffsets;
    use crate::store_memory::{StoreMemory, StoreMemorySettings};
    use crate::task_id::TaskId;

    const STORE: StoreId = StoreId(0);

    /// Records what the engine flushes to it: (key, count).
    #[derive(Default)]
    struct Flushed(Vec<(Vec<u8>, i64)>);

    impl Processor for Flushed {
        fn process(
            &mut self,
            _: &InputRecord,
            _: &mut ProcessorContext<'_>,
        ) -> Result<(), RecordError> {
            Ok(())
        }

        fn on_flush(
            &mut self,
            store: StoreId,
            key: &[u8],
            value: &[u8],
            ctx: &mut EmitContext<'_>,
        ) -> Result<(), RecordError> {
            assert_eq!(store, STORE);
            assert_eq!(
                ctx.get(store, key)?.as_deref(),
                Some(value),
                "reads see the update"
            );
            self.0.push((key.to_vec(), count(Some(value))));
            Ok(())
        }
    }

    fn count(bytes: Option<&[u8]>) -> i64 {
        bytes.map_or(0, |b| i64::from_be_bytes(b.try_into().unwrap()))
    }

    /// A record whose value is "the the": two updates of one key, through `read_for_update`
    /// and `put` (`by_hand`) or through `update`.
    fn count_the_twice(ctx: &mut ProcessorContext<'_>, by_hand: bool) {
        for _ in 0..2 {
            if by_hand {
                if let KeyState::Current(current) = ctx.read_for_update(STORE, b"the").unwrap() {
                    let next = count(current.as_deref()) + 1;
                    ctx.put(STORE, b"the", &next.to_be_bytes()).unwrap();
                }
            } else {
                ctx.update(STORE, b"the", |current| {
                    Ok((count(current) + 1).to_be_bytes().to_vec())
                })
                .unwrap();
            }
        }
    }

    #[test]
    fn a_record_that_updates_a_key_twice_counts_twice_and_once_again_is_skipped() {
        for by_hand in [true, false] {
            for cache_max_bytes in [10 << 20, 0] {
                let dir = tempfile::tempdir().unwrap();
                let memory = StoreMemory::new(StoreMemorySettings {
                    cache_max_bytes,
                    ..StoreMemorySettings::default()
                });
                let task = TaskId::new(0, 0);
                let names = vec!["words".to_string()];
                let mut store = TaskStore::open(task, dir.path(), &names, &memory).unwrap();
                let config = StreamsConfig::new("app", "127.0.0.1:9");
                let (mut collector, _) = RecordCollector::instant(task, &config, &names, None);
                let mut flushed = Flushed::default();
                let mut process = |store: &mut TaskStore, offset: i64| {
                    let mut ctx = ProcessorContext::new(store, &mut collector, 0, offset, None);
                    count_the_twice(&mut ctx, by_hand);
                    ctx.flush_uncached(&mut flushed).unwrap();
                    count(store.get(STORE, b"the").unwrap().as_deref())
                };
                assert_eq!(
                    process(&mut store, 5),
                    2,
                    "by hand {by_hand}, cache {cache_max_bytes}"
                );
                store
                    .commit(&StoredOffsets {
                        input_next: Some(6),
                        changelog_next: vec![None],
                    })
                    .unwrap();
                assert_eq!(
                    process(&mut store, 5),
                    2,
                    "record 5 again (after a crash) is skipped"
                );
                assert_eq!(process(&mut store, 6), 4, "the next record counts twice");
                let the = |n: i64| (b"the".to_vec(), n);
                let expected_flushes = match cache_max_bytes {
                    // Without the cache each record's update is flushed after it, once per key.
                    0 => vec![the(2), the(4)],
                    // With it, nothing until the write-out.
                    _ => vec![],
                };
                assert_eq!(flushed.0, expected_flushes, "cache {cache_max_bytes}");
            }
        }
    }
}
