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
use crate::store::TaskStore;
use crate::store_memory::{StoreMemory, StoreMemorySettings};
use crate::task_id::TaskId;

pub struct TaskHotPath {
    task: TaskId,
    processor: Box<dyn Processor>,
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
            store: TaskStore::open(task, dir, &stores, &StoreMemory::new(memory))?,
            collector,
            changelog_next: vec![None; stores.len()],
            next_offset: 0,
        })
    }

    /// Runs the processor over `records` as the task would: store update, then a changelog
    /// and an output record per input record, or with caching per key at the commit (a
    /// write-out started early when the cache is over its budget, as the task does).
    pub fn process(&mut self, records: &[InputRecord]) -> Result<()> {
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
        }
    }
}
