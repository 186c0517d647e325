//! The commit sequence of a task, in one place for every trigger (the task's commit interval,
//! its record cache over budget, a revocation, shutdown, a bad record under the `fail`
//! policy). A write-out sends the cached updates (changelog and output records) and seals
//! them; processing goes on into a fresh cache while they are in flight. Once the broker
//! acknowledges every record of a write-out, its state and offsets reach RocksDB in one batch,
//! and the input offset it commits goes to the group (by the consumer loop). A task has at
//! most one write-out in flight: the next waits for it. A revocation or shutdown commits at
//! once: it starts a write-out and waits until everything is in RocksDB.
//!
//! Exactness: state reaches RocksDB only after its changelog records are acknowledged, and
//! input resumes only from an offset committed with that state, whatever the trigger.
//!
//! Failure policy, the same for every trigger: a task whose commit fails is closed without
//! writing anything more and restarted from its last commit (its uncommitted input is read
//! again), and the instance stops once a task fails `--task-failure-limit` times within the
//! window; a revoked task stops whatever its commit did. A failed group commit is only logged:
//! state and offsets are durable in the task's store, so it means re-reading some input.

use std::time::{Duration, Instant};

use crate::error::{EngineError, Result};
use crate::failpoints;
use crate::offsets::decode_changelog_value;
use crate::processor::{Processor, ProcessorContext};
use crate::record_collector::RecordCollector;
use crate::task_id::TaskId;
use crate::task_store::TaskStore;

/// How long a commit waits for the broker to acknowledge the task's records.
pub(crate) const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// How long, after a flush, the delivery reports of its records may take to be counted
/// (the producer's thread serves them).
const ANSWERS_COUNTED_WAIT: Duration = Duration::from_secs(5);

/// What made a task write its cached updates out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOut {
    /// A commit (interval, revocation, shutdown, or before stopping on a bad record).
    Commit,
    /// The task's record cache went over its share of the budget.
    CacheOverBudget,
}

/// A write-out acknowledged by the broker and written to RocksDB.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct WrittenOut {
    /// The input offset it committed (for the group).
    pub input_next: Option<i64>,
    pub trigger: WriteOut,
    /// From its start to its write to RocksDB.
    pub took: Duration,
}

/// What one task's commit works on.
pub(crate) struct TaskCheckpoint<'a> {
    pub task: TaskId,
    pub store: &'a mut TaskStore,
    pub collector: &'a mut RecordCollector,
    pub processor: &'a mut dyn Processor,
    /// Per store, the next changelog offset known written (raised to what each write-out's
    /// acknowledgements reached).
    pub changelog_next: &'a mut [Option<i64>],
}

impl TaskCheckpoint<'_> {
    /// Starts a write-out of everything processed below `input_next`: waits for the one in
    /// flight (if any), sends the cached writes and seals them. Answers the write-outs that
    /// reached RocksDB meanwhile.
    pub(crate) fn start_write_out(
        &mut self,
        input_next: Option<i64>,
        trigger: WriteOut,
    ) -> Result<Vec<WrittenOut>> {
        let mut written = if self.store.oldest_sealed().is_some() {
            self.wait_for_write_outs()?
        } else {
            Vec::new()
        };
        emit_cached_writes(
            self.task,
            self.store,
            self.collector,
            self.processor,
            trigger,
        )?;
        let generation = self.collector.seal();
        self.store.seal(generation, input_next, trigger);
        written.extend(self.write_acknowledged()?);
        Ok(written)
    }

    /// Commits everything processed below `input_next` now: a write-out, waited for until it
    /// and any before it are in RocksDB.
    pub(crate) fn commit(
        &mut self,
        input_next: Option<i64>,
        trigger: WriteOut,
    ) -> Result<Vec<WrittenOut>> {
        let mut written = self.start_write_out(input_next, trigger)?;
        if self.store.oldest_sealed().is_some() {
            written.extend(self.wait_for_write_outs()?);
        }
        Ok(written)
    }

    /// Writes every write-out whose records the broker acknowledged to RocksDB, oldest first
    /// (fails once any record was refused).
    pub(crate) fn write_acknowledged(&mut self) -> Result<Vec<WrittenOut>> {
        self.collector.refused()?;
        let mut written = Vec::new();
        while let Some(sealed) = self.store.oldest_sealed() {
            let Some(acknowledged) = self.collector.take_acknowledged(sealed.generation)? else {
                break;
            };
            for (next, acknowledged) in self.changelog_next.iter_mut().zip(acknowledged) {
                *next = (*next).max(acknowledged);
            }
            self.store.write_oldest_sealed(self.changelog_next)?;
            written.push(WrittenOut {
                input_next: sealed.input_next,
                trigger: sealed.trigger,
                took: sealed.sealed_at.elapsed(),
            });
        }
        Ok(written)
    }

    /// Waits (up to [`FLUSH_TIMEOUT`]) until every write-out in flight is acknowledged, and
    /// writes them to RocksDB.
    fn wait_for_write_outs(&mut self) -> Result<Vec<WrittenOut>> {
        self.collector.flush(FLUSH_TIMEOUT)?;
        let deadline = Instant::now() + ANSWERS_COUNTED_WAIT;
        let mut written = Vec::new();
        loop {
            written.extend(self.write_acknowledged()?);
            let Some(sealed) = self.store.oldest_sealed() else {
                return Ok(written);
            };
            if Instant::now() >= deadline {
                return Err(EngineError::Produce {
                    task: self.task,
                    topic: "(write-out)".into(),
                    reason: format!(
                        "the producer flushed, but write-out {} was not answered within {ANSWERS_COUNTED_WAIT:?}",
                        sealed.generation
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
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
