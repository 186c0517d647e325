//! A task's per-record work without an actor or a broker, for benchmarks: the topology's
//! processor, the task's RocksDB store and its record collector, committed through the
//! production write-out ([`TaskCheckpoint`]); the collector's sink acknowledges each record
//! in process as it is sent (see [`crate::delivery::InstantSink`]), so what is measured is the
//! engine's work, not a broker's.

use std::path::Path;

use crate::config::StreamsConfig;
use crate::dsl::Topology;
use crate::error::{EngineError, Result};
use crate::processor::{InputRecord, Processor, ProcessorContext};
use crate::record_collector::RecordCollector;
use crate::runtime::checkpoint::{TaskCheckpoint, WriteOut};
use crate::store::{StoreId, TaskStore};
use crate::store_memory::{StoreMemory, StoreMemorySettings};
use crate::task_id::TaskId;

pub struct TaskHotPath {
    task: TaskId,
    processor: Box<dyn Processor>,
    read_ahead: Option<StoreId>,
    store: TaskStore,
    collector: RecordCollector,
    /// Per store, the next changelog offset known written.
    changelog_next: Vec<Option<i64>>,
    next_offset: i64,
}

impl TaskHotPath {
    /// Task 0_0 of `topology`, with its store under `dir` and the given memory settings
    /// (`cache_max_bytes` 0: no caching, every update sent at once).
    pub fn new(topology: &Topology, dir: &Path, memory: StoreMemorySettings) -> Result<Self> {
        let task = TaskId::new(0, 0);
        let config = StreamsConfig::new("hot-path", "in-process");
        let stores = topology.stores().to_vec();
        let (collector, _) = RecordCollector::instant(task, &config, &stores, None);
        Ok(Self {
            task,
            processor: topology.new_processor(),
            read_ahead: topology.read_ahead(),
            store: TaskStore::open(task, dir, &stores, &StoreMemory::new(memory))?,
            collector,
            // A fresh task over empty changelogs, as its restore would leave it.
            changelog_next: vec![Some(0); stores.len()],
            next_offset: 0,
        })
    }

    /// Runs the processor over `records` as the task would: store update, then a changelog
    /// and an output record per input record, or with caching per key at the commit (a
    /// write-out started early when the cache is over its budget, as the task does).
    pub fn process(&mut self, records: &[InputRecord]) -> Result<()> {
        if let Some(store) = self.read_ahead {
            let keys = records.iter().filter_map(|r| r.key.as_deref());
            self.store.read_ahead(store, keys)?;
        }
        for record in records {
            let mut ctx = ProcessorContext::new(
                &mut self.store,
                &mut self.collector,
                self.task.partition,
                record.offset,
                record.timestamp,
            );
            self.processor
                .process(record, &mut ctx)
                .map_err(|e| EngineError::Processing {
                    task: self.task,
                    partition: record.partition,
                    offset: record.offset,
                    reason: e.to_string(),
                })?;
            ctx.flush_uncached(self.processor.as_mut())?;
            self.next_offset = record.offset + 1;
        }
        self.store.end_read_ahead();
        if self.store.cache_over_budget() {
            let input_next = Some(self.next_offset);
            self.checkpoint()
                .start_write_out(input_next, WriteOut::CacheOverBudget)?;
        }
        Ok(())
    }

    /// The production commit: the cached writes sent (changelog and output records), sealed,
    /// acknowledged and written to RocksDB with the offsets in one batch.
    pub fn commit(&mut self) -> Result<()> {
        let input_next = Some(self.next_offset);
        self.checkpoint().commit(input_next, WriteOut::Commit)?;
        Ok(())
    }

    fn checkpoint(&mut self) -> TaskCheckpoint<'_> {
        let Self {
            task,
            processor,
            store,
            collector,
            changelog_next,
            ..
        } = self;
        let processor = processor.as_mut();
        TaskCheckpoint {
            task: *task,
            store,
            collector,
            processor,
            changelog_next,
            owed_from: &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::word_count::word_count;

    /// The benchmark's task runs the production write-out, commit after commit, with and
    /// without the record cache.
    #[test]
    fn the_engine_benchmark_commits_through_the_production_write_out() {
        for cache_max_bytes in [10 << 20, 0] {
            let dir = tempfile::tempdir().unwrap();
            let topology = word_count("in", "counts", "out").unwrap();
            let memory = StoreMemorySettings {
                cache_max_bytes,
                ..StoreMemorySettings::default()
            };
            let mut task = TaskHotPath::new(&topology, dir.path(), memory).unwrap();
            for round in 0..3i64 {
                let records: Vec<InputRecord> = (0..100)
                    .map(|i| InputRecord {
                        partition: 0,
                        offset: round * 100 + i,
                        timestamp: None,
                        key: Some(format!("k{}", i % 10).into_bytes()),
                        value: Some(b"v".to_vec()),
                    })
                    .collect();
                task.process(&records).unwrap();
                task.commit().unwrap();
            }
            let offsets = task.store.read_offsets().unwrap();
            assert_eq!(offsets.input_next, Some(300), "cache {cache_max_bytes}");
            let expected = match cache_max_bytes {
                0 => 300, // a changelog record per input record
                _ => 30,  // one per key per commit
            };
            assert_eq!(
                offsets.changelog_next,
                vec![Some(expected)],
                "cache {cache_max_bytes}"
            );
        }
    }
}
