//! A task's write-outs: cached updates sent (changelog and output records) and sealed as a
//! generation, written to RocksDB with their offsets once the broker acknowledged them; at
//! most one in flight, pipelined with processing. The commit is a write-out waited for.

use std::time::{Duration, Instant};

use crate::error::{EngineError, Result};
use crate::failpoints;
use crate::metrics::EngineMetrics;
use crate::processor::{EmitContext, Processor};
use crate::record_collector::RecordCollector;
use crate::store::changelog_format::decode_changelog_value;
use crate::store::TaskStore;
pub(crate) use crate::store::WriteOut;
use crate::task_id::TaskId;

/// How long a commit waits for the broker to acknowledge the task's records.
pub(crate) const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// How long, after a flush, the delivery reports of its records may take to be counted
/// (the producer's thread serves them).
const ANSWERS_COUNTED_WAIT: Duration = Duration::from_secs(5);

/// Counts the commits among write-outs that reached RocksDB (the one place commits are
/// counted: a commit is a write-out of trigger [`WriteOut::Commit`], whoever asked for it).
pub(crate) fn count_commits(metrics: &EngineMetrics, written: &[WrittenOut]) {
    for out in written.iter().filter(|out| out.trigger == WriteOut::Commit) {
        metrics.commits.inc();
        metrics.commit_duration.observe(out.took.as_secs_f64());
    }
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

/// With the record cache on, flushes the writes since the last write-out: one changelog
/// record per written key and, through [`Processor::on_flush`], the output derived from it
/// (with the timestamp of the key's last input record). Without it each record's writes were
/// flushed after it: nothing to do. The records leave in no input order, in several produce
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
        let mut ctx = EmitContext::new(store, collector, task.partition, offset, timestamp);
        processor
            .on_flush(store_id, &key, value, &mut ctx)
            .map_err(|e| EngineError::Processing {
                task,
                partition: task.partition,
                offset,
                reason: format!("emitting a cached update: {e}"),
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StreamsConfig;
    use crate::processor::{InputRecord, ProcessorContext};
    use crate::store_memory::{StoreMemory, StoreMemorySettings};
    use crate::word_count::word_count;

    /// The word count over records of keys a, a, b, then a write-out: (changelog, output)
    /// records sent before the write-out and after it.
    fn count_then_write_out(cache_max_bytes: usize) -> ((u64, u64), (u64, u64)) {
        let dir = tempfile::tempdir().unwrap();
        let memory = StoreMemory::new(StoreMemorySettings {
            cache_max_bytes,
            ..StoreMemorySettings::default()
        });
        let topology = word_count("in", "counts", "out").unwrap();
        let mut processor = topology.new_processor();
        let task = TaskId::new(0, 0);
        let mut store = TaskStore::open(task, dir.path(), topology.stores(), &memory).unwrap();
        let config = StreamsConfig::new("app", "127.0.0.1:9");
        let mut collector =
            RecordCollector::new(task, &config, topology.stores(), None, None).unwrap();
        for (offset, key) in ["a", "a", "b"].into_iter().enumerate() {
            let record = InputRecord {
                partition: 0,
                offset: offset as i64,
                timestamp: None,
                key: Some(key.as_bytes().to_vec()),
                value: Some(b"x".to_vec()),
            };
            let mut ctx = ProcessorContext::new(&mut store, &mut collector, 0, record.offset, None);
            processor.process(&record, &mut ctx).unwrap();
            ctx.flush_uncached(processor.as_mut()).unwrap();
        }
        let before = collector.sent();
        let trigger = WriteOut::Commit;
        emit_cached_writes(
            task,
            &mut store,
            &mut collector,
            processor.as_mut(),
            trigger,
        )
        .unwrap();
        let after = collector.sent();
        collector.purge_queued();
        (before, after)
    }

    #[test]
    fn the_count_forwards_what_the_store_flushes_whether_the_cache_is_on_or_off() {
        assert_eq!(
            count_then_write_out(0),
            ((3, 3), (3, 3)),
            "without the cache: a changelog and an output record per record, nothing left"
        );
        assert_eq!(
            count_then_write_out(10 << 20),
            ((0, 0), (2, 2)),
            "with it: nothing until the write-out, then one of each per key"
        );
    }
}
