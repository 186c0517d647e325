//! A task's per-record work without an actor or a broker, for benchmarks: the topology's
//! processor, the task's RocksDB store and its record collector, whose producer only queues
//! records (its broker address is never reached; queued records are purged on commit).

use std::path::Path;

use crate::client_settings::{ClientSettings, SettingSource};
use crate::config::StreamsConfig;
use crate::dsl::Topology;
use crate::error::{EngineError, Result};
use crate::processor::{InputRecord, Processor, ProcessorContext};
use crate::record_collector::RecordCollector;
use crate::runtime::checkpoint::{emit_cached_writes, WriteOut};
use crate::store::{StoredOffsets, TaskStore};
use crate::store_memory::{StoreMemory, StoreMemorySettings};
use crate::task_id::TaskId;

/// Nothing listens here: the producer queues and never delivers.
const NOWHERE: &str = "127.0.0.1:9";

pub struct TaskHotPath {
    task: TaskId,
    processor: Box<dyn Processor>,
    store: TaskStore,
    collector: RecordCollector,
    next_offset: i64,
}

impl TaskHotPath {
    /// Task 0_0 of `topology`, with its store under `dir` and the given memory settings
    /// (`cache_max_bytes` 0: no caching, every update sent at once).
    pub fn new(topology: &Topology, dir: &Path, memory: StoreMemorySettings) -> Result<Self> {
        let task = TaskId::new(0, 0);
        let mut config = StreamsConfig::new("hot-path", NOWHERE);
        // Nothing is sent: the producer queue must hold every record of the measured run.
        config.client_memory.producer_buffer_bytes_per_task = 4 << 30;
        config.client_settings =
            ClientSettings::from_pairs(SettingSource::Program, [("message.timeout.ms", "3600000")]);
        let stores = topology.stores().to_vec();
        Ok(Self {
            task,
            processor: topology.new_processor(),
            store: TaskStore::open(task, dir, &stores, &StoreMemory::new(memory))?,
            collector: RecordCollector::new(task, &config, &stores, None, None)?,
            next_offset: 0,
        })
    }

    /// Runs the processor over `records` as the task would: store update, then a changelog
    /// and an output record per input record, or with caching per key at the commit (early
    /// when the cache is over its budget).
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
            self.commit()?;
        }
        Ok(())
    }

    /// Queues the cached writes' records (with caching), writes the dirty keys and offsets to
    /// RocksDB in one batch (the commit's store half) and drops the queued records.
    pub fn commit(&mut self) -> Result<()> {
        emit_cached_writes(
            self.task,
            &mut self.store,
            &mut self.collector,
            self.processor.as_mut(),
            WriteOut::Commit,
        )?;
        self.store.commit(&StoredOffsets {
            input_next: Some(self.next_offset),
            changelog_next: vec![None; self.store.store_names().len()],
        })?;
        self.collector.purge_queued();
        Ok(())
    }
}
