//! The commit sequence of a task, in one place for every trigger (the task's commit interval,
//! its record cache over budget, a revocation, shutdown, a bad record under the `fail`
//! policy): write cached updates out (changelog and output records), flush the producer,
//! then write state and offsets in one RocksDB batch. The input offset it answers goes to the
//! group afterwards (by the consumer loop, or by the rebalance callback on revocation).
//!
//! Failure policy, the same for every trigger: a task whose commit fails is closed without
//! writing anything more and restarted from its last commit (its uncommitted input is read
//! again), and the instance stops once a task fails `--task-failure-limit` times within the
//! window; a revoked task stops whatever its commit did. A failed group commit is only logged:
//! state and offsets are durable in the task's store, so it means re-reading some input.

use std::time::Duration;

use crate::error::{EngineError, Result};
use crate::failpoints;
use crate::offsets::decode_changelog_value;
use crate::processor::{Processor, ProcessorContext, StoreId};
use crate::record_collector::RecordCollector;
use crate::task_id::TaskId;
use crate::task_store::{StoredOffsets, TaskStore};

/// How long a commit waits for the broker to acknowledge the task's records.
pub(crate) const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// What made a task write its cached updates out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOut {
    /// A commit (interval, revocation, shutdown, or before stopping on a bad record).
    Commit,
    /// The task's record cache went over its share of the budget.
    CacheOverBudget,
}

/// What one task's commit works on.
pub(crate) struct TaskCheckpoint<'a> {
    pub task: TaskId,
    pub store: &'a mut TaskStore,
    pub collector: &'a mut RecordCollector,
    pub processor: &'a mut dyn Processor,
    /// Per store, the next changelog offset known written (raised to what the flush acked).
    pub changelog_next: &'a mut [Option<i64>],
}

impl TaskCheckpoint<'_> {
    /// Writes out, flushes and persists everything processed below `input_next`.
    pub(crate) fn commit(self, input_next: Option<i64>, trigger: WriteOut) -> Result<()> {
        emit_cached_writes(
            self.task,
            self.store,
            self.collector,
            self.processor,
            trigger,
        )?;
        self.collector.flush(FLUSH_TIMEOUT)?;
        for (index, next) in self.changelog_next.iter_mut().enumerate() {
            *next = self.collector.changelog_next(StoreId(index)).max(*next);
        }
        self.store.commit(&StoredOffsets {
            input_next,
            changelog_next: self.changelog_next.to_vec(),
        })
    }
}

/// With the record cache on, sends what the writes since the last commit produce: one
/// changelog record per written key and, through [`Processor::replay`], the output derived
/// from it (with the timestamp of the key's last input record). Without it they went out
/// with each update: nothing to do. The records leave in no input order, in several produce
/// requests: a crash can land any subset of them (see `restore` for why that is safe).
pub(crate) fn emit_cached_writes(
    task: TaskId,
    store: &mut TaskStore,
    collector: &mut RecordCollector,
    processor: &mut dyn Processor,
    trigger: WriteOut,
) -> Result<()> {
    if !store.caching() {
        return Ok(());
    }
    let failpoint = match trigger {
        WriteOut::Commit => failpoints::WRITE_OUT_ABORT_AFTER,
        WriteOut::CacheOverBudget => failpoints::EARLY_WRITE_OUT_ABORT_AFTER,
    };
    let abort_after = failpoints::number(failpoint);
    for (sent, (store_id, key, stored, timestamp)) in store.pending_writes().into_iter().enumerate()
    {
        collector.send_changelog_encoded(store_id, task.partition, &key, stored.as_deref())?;
        if abort_after == Some(sent + 1) {
            // Cut short: these changelog records acknowledged (the last key's output not sent).
            collector.flush(FLUSH_TIMEOUT)?;
            failpoints::crash(failpoint);
        }
        let Some(stored) = stored else {
            continue;
        };
        let (offset, value) = decode_changelog_value(&stored);
        let offset = offset.unwrap_or_default();
        let mut ctx = ProcessorContext::new(store, collector, task.partition, offset, timestamp);
        processor
            .replay(store_id, &key, value, &mut ctx)
            .map_err(|e| EngineError::Processing {
                task,
                partition: task.partition,
                offset,
                reason: format!("emitting a cached update: {e}"),
            })?;
    }
    Ok(())
}
