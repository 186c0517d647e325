//! A task's write-outs: cached updates sent (changelog and output records) and sealed as a
//! generation, written to RocksDB with their offsets once the broker acknowledged them; at
//! most one in flight, pipelined with processing. The commit is a write-out waited for.

use std::time::{Duration, Instant};

use crate::clients::TRANSACTION_TIMEOUT;
use crate::delivery::AcknowledgedRun;
use crate::error::{EngineError, Result};
use crate::failpoints;
use crate::metrics::EngineMetrics;
use crate::processor::{EmitContext, Processor};
use crate::record_collector::RecordCollector;
use crate::runtime::wiring::TASK_COMMIT_TIMEOUT;
use crate::store::changelog_format::decode_changelog_value;
pub(crate) use crate::store::WriteOut;
use crate::store::{StoreId, TaskStore};
use crate::task_id::TaskId;

/// How long a write-out waits for the broker to acknowledge the one before it.
pub(crate) const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// The bound of a whole commit (its write-out sent, every write-out acknowledged and written):
/// shorter than the wait of whoever asks a task to commit, so that a commit that cannot finish
/// fails in the task rather than outliving the ask.
pub(crate) const COMMIT_DEADLINE: Duration = Duration::from_secs(60);
const _: () = assert!(COMMIT_DEADLINE.as_millis() < TASK_COMMIT_TIMEOUT.as_millis());
// A transaction (open from the first record after a commit to the next commit's end) is not
// aborted by the broker while its commit may still succeed.
const _: () = assert!(COMMIT_DEADLINE.as_millis() < TRANSACTION_TIMEOUT.as_millis());

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
    /// Per store, where the previous owner's last uncommitted write-out began in the changelog
    /// (found by this task's restore; see `RestoreOutcome::owed_from`).
    pub owed_from: &'a [Option<i64>],
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
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        self.start_write_out_by(input_next, trigger, deadline)
    }

    fn start_write_out_by(
        &mut self,
        input_next: Option<i64>,
        trigger: WriteOut,
        deadline: Instant,
    ) -> Result<Vec<WrittenOut>> {
        let mut written = if self.store.oldest_sealed().is_some() {
            self.wait_for_write_outs(deadline)?
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
        if self.collector.transactional() {
            // Exactly-once: the write-out is a transaction, committed with the input offset
            // (its records all acknowledged) before anything of it reaches RocksDB; no
            // write-out stays in flight while the task processes on.
            if failpoints::fires(failpoints::TRANSACTION_ABORT_BEFORE_COMMIT) {
                failpoints::crash(failpoints::TRANSACTION_ABORT_BEFORE_COMMIT);
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            self.collector.commit_transaction(input_next, remaining)?;
            if failpoints::fires(failpoints::TRANSACTION_ABORT_AFTER_COMMIT) {
                failpoints::crash(failpoints::TRANSACTION_ABORT_AFTER_COMMIT);
            }
            written.extend(self.wait_for_write_outs(deadline)?);
        } else {
            written.extend(self.write_acknowledged()?);
        }
        Ok(written)
    }

    /// Commits everything processed below `input_next` now: a write-out, waited for until it
    /// and any before it are in RocksDB.
    pub(crate) fn commit(
        &mut self,
        input_next: Option<i64>,
        trigger: WriteOut,
    ) -> Result<Vec<WrittenOut>> {
        let deadline = Instant::now() + COMMIT_DEADLINE;
        let mut written = self.start_write_out_by(input_next, trigger, deadline)?;
        if self.store.oldest_sealed().is_some() {
            written.extend(self.wait_for_write_outs(deadline)?);
        }
        Ok(written)
    }

    /// Under at-least-once, for a task with nothing to write and nothing in flight: asks the
    /// broker where each changelog ends, and fails with
    /// [`EngineError::ForeignChangelogRecords`] when it ends past the task's own position
    /// (another writer appended there: a frozen or cut-off old owner's late write-out). A task
    /// that writes finds them in its own acknowledgements; an idle one would not, and the
    /// other writer's output would stay the last value of its keys. The restart restores those
    /// records, and keys whose record there is older than the task's own value owe their
    /// output again (see `restore`). A broker that does not answer in `timeout` is only
    /// logged: the next interval asks again.
    pub(crate) fn check_for_other_writers(&mut self, timeout: Duration) -> Result<()> {
        let idle = self.store.oldest_sealed().is_none()
            && self.store.dirty_keys() == 0
            && self.collector.nothing_sent_since_seal();
        if self.collector.transactional() || !idle {
            // Exactly-once fences other writers; a write-out's acknowledgements show them.
            return Ok(());
        }
        for (index, next) in self.changelog_next.iter().enumerate() {
            let Some(next) = *next else { continue };
            let store = StoreId(index);
            let end = match self
                .collector
                .changelog_end(store, self.task.partition, timeout)
            {
                Ok(end) => end,
                Err(error) => {
                    tracing::debug!(task = %self.task, "checking the changelog for other writers: {error}");
                    return Ok(());
                }
            };
            if end > next {
                let restart_from = self.restart_positions();
                self.store.write_changelog_positions(&restart_from)?;
                return Err(EngineError::ForeignChangelogRecords {
                    task: self.task,
                    topic: self.collector.changelog_topic(store).to_string(),
                    foreign: (end - next) as u64,
                    from: next,
                    to: end,
                });
            }
        }
        Ok(())
    }

    /// Where the restart after another writer's records were found restores from, per store:
    /// the changelog position, or further back where the previous owner's last uncommitted
    /// write-out began. If that owner is the other writer, its output for keys whose
    /// changelog records landed before this task took over may have landed late too; reading
    /// them again (older than this task's values now) marks those keys as owing their output.
    fn restart_positions(&self) -> Vec<Option<i64>> {
        self.changelog_next
            .iter()
            .enumerate()
            .map(|(store, next)| {
                let owed = self.owed_from.get(store).copied().flatten();
                match (*next, owed) {
                    (Some(next), Some(owed)) => Some(next.min(owed)),
                    (next, _) => next,
                }
            })
            .collect()
    }

    /// Writes every write-out whose records the broker acknowledged to RocksDB, oldest first
    /// (fails once any record was refused).
    pub(crate) fn write_acknowledged(&mut self) -> Result<Vec<WrittenOut>> {
        self.collector.ensure_unfenced()?;
        self.collector.refused()?;
        let mut written = Vec::new();
        while let Some(sealed) = self.store.oldest_sealed() {
            // A fenced task's partition may be another member's: its store stays as it was.
            self.collector.ensure_unfenced()?;
            if !self.collector.may_write(sealed.generation) {
                // Exactly-once: its transaction has not committed (yet).
                break;
            }
            let Some(acknowledged) = self.collector.take_acknowledged(sealed.generation)? else {
                break;
            };
            let transactional = self.collector.transactional();
            let mut foreign = None;
            for (store, run) in acknowledged.into_iter().enumerate() {
                let next = &mut self.changelog_next[store];
                match advance_changelog_next(*next, run, transactional) {
                    Ok(advanced) => *next = advanced,
                    Err((records, from, to)) => foreign = Some((store, records, from, to)),
                }
            }
            if foreign.is_some() {
                let restart_from = self.restart_positions();
                self.changelog_next.copy_from_slice(&restart_from);
            }
            self.store.write_oldest_sealed(self.changelog_next)?;
            written.push(WrittenOut {
                input_next: sealed.input_next,
                trigger: sealed.trigger,
                took: sealed.sealed_at.elapsed(),
            });
            if let Some((store, foreign, from, to)) = foreign {
                // Written with the changelog position kept below the other writer's records:
                // the restart restores them (the newest input offset per key wins).
                return Err(EngineError::ForeignChangelogRecords {
                    task: self.task,
                    topic: self.collector.changelog_topic(StoreId(store)).to_string(),
                    foreign,
                    from,
                    to,
                });
            }
        }
        Ok(written)
    }

    /// Waits (until `deadline`) until every write-out in flight is acknowledged, and writes
    /// them to RocksDB.
    fn wait_for_write_outs(&mut self, deadline: Instant) -> Result<Vec<WrittenOut>> {
        self.collector
            .flush(deadline.saturating_duration_since(Instant::now()))?;
        let deadline = deadline.min(Instant::now() + ANSWERS_COUNTED_WAIT);
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

/// Where a store's changelog is known written through after a write-out whose records were
/// acknowledged at `run`: past the run when it is unbroken and starts exactly where the task's
/// changelog stood, so that every record below the new position is the task's own or already
/// in its state; unchanged when the write-out sent none. Otherwise another writer's records
/// lie among the task's (`Err`: how many, between which offsets) and the position stays where
/// it was, so that the next restore reads them (a position past them would make a restore on
/// this volume skip them for good).
///
/// Under exactly-once (`transactional`) the run may start past the position: what lies
/// between is the broker's transaction markers (one per partition a transaction wrote) and
/// aborted records, which no read_committed restore returns; another producer of the task's
/// transactional id cannot commit there, the broker fences it.
pub(crate) fn advance_changelog_next(
    next: Option<i64>,
    run: Option<AcknowledgedRun>,
    transactional: bool,
) -> std::result::Result<Option<i64>, (u64, i64, i64)> {
    let Some(run) = run else {
        return Ok(next);
    };
    match next {
        Some(next)
            if run.unbroken() && (run.first == next || (transactional && run.first > next)) =>
        {
            Ok(Some(run.last + 1))
        }
        Some(next) if run.first >= next => {
            let span = (run.last + 1 - next) as u64;
            Err((span - run.records, next, run.last + 1))
        }
        // Below where the changelog was known to stand (records the task did not restore),
        // or no known position: unknown ground; the next restore reads it all again.
        _ => Err((0, run.first, run.last + 1)),
    }
}

/// With the record cache on, flushes the writes since the last write-out: one changelog
/// record per written key and, through [`Processor::on_flush`], the output derived from it
/// (with the timestamp of the key's last input record). Without it each record's writes were
/// flushed after it: nothing to do. The records leave in no input order, in several produce
/// requests: a crash can land any subset of them (see `restore` for why that is safe).
fn emit_cached_writes(
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
    let pause_after = match trigger {
        WriteOut::Commit => failpoints::number(failpoints::WRITE_OUT_PAUSE_AFTER),
        WriteOut::CacheOverBudget => None,
    };
    for (sent, (store_id, key, stored, timestamp)) in store.pending_writes().into_iter().enumerate()
    {
        collector.send_changelog_encoded(store_id, task.partition, &key, stored.as_deref())?;
        if abort_after == Some(sent + 1) {
            // Cut short: these changelog records acknowledged (the last key's output not sent).
            collector.flush(FLUSH_TIMEOUT)?;
            failpoints::crash(failpoint);
        }
        if pause_after == Some(sent + 1) {
            // Held with these changelog records acknowledged and the rest not yet sent.
            collector.flush(FLUSH_TIMEOUT)?;
            std::thread::sleep(failpoints::WRITE_OUT_PAUSE);
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
    use crate::fence::Fence;
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
        let (mut collector, _) = RecordCollector::instant(task, &config, topology.stores(), None);
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

    /// A task of the word count over an in-process sink, with the record cache on.
    struct CheckpointHarness {
        _dir: tempfile::TempDir,
        store: TaskStore,
        collector: RecordCollector,
        sink: crate::delivery::InstantSinkHandle,
        processor: Box<dyn Processor>,
        changelog_next: Vec<Option<i64>>,
        owed_from: Vec<Option<i64>>,
        next_input: i64,
    }

    const TASK: TaskId = TaskId {
        subtopology: 0,
        partition: 0,
    };

    impl CheckpointHarness {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let memory = StoreMemory::new(StoreMemorySettings::default());
            let topology = word_count("in", "counts", "out").unwrap();
            let store = TaskStore::open(TASK, dir.path(), topology.stores(), &memory).unwrap();
            let config = StreamsConfig::new("app", "in-process");
            let (collector, sink) =
                RecordCollector::instant(TASK, &config, topology.stores(), None);
            Self {
                _dir: dir,
                store,
                collector,
                sink,
                processor: topology.new_processor(),
                // As a restore leaves it: the changelog's end (empty here).
                changelog_next: vec![Some(0)],
                owed_from: vec![None],
                next_input: 0,
            }
        }

        /// The same under exactly-once: the collector's records go in transactions.
        fn exactly_once() -> Self {
            let mut h = Self::new();
            h.collector
                .start_transactions(crate::record_collector::TransactionScope {
                    input_topic: "in".into(),
                    group: crate::delivery::GroupMetadataCell::default(),
                    transactional_id: "app-0_0".into(),
                })
                .unwrap();
            h
        }

        fn count(&mut self, keys: &[&str]) {
            for key in keys {
                let record = InputRecord {
                    partition: 0,
                    offset: self.next_input,
                    timestamp: None,
                    key: Some(key.as_bytes().to_vec()),
                    value: Some(b"x".to_vec()),
                };
                let (store, collector) = (&mut self.store, &mut self.collector);
                let mut ctx = ProcessorContext::new(store, collector, 0, record.offset, None);
                self.processor.process(&record, &mut ctx).unwrap();
                ctx.flush_uncached(self.processor.as_mut()).unwrap();
                self.next_input += 1;
            }
        }

        fn checkpoint(&mut self) -> TaskCheckpoint<'_> {
            TaskCheckpoint {
                task: TASK,
                store: &mut self.store,
                collector: &mut self.collector,
                processor: self.processor.as_mut(),
                changelog_next: &mut self.changelog_next,
                owed_from: &self.owed_from,
            }
        }

        fn start_write_out(&mut self) -> Result<Vec<WrittenOut>> {
            let input_next = Some(self.next_input);
            self.checkpoint()
                .start_write_out(input_next, WriteOut::Commit)
        }

        /// What RocksDB holds: the offsets, and `key`'s count.
        fn on_disk(&self, key: &str) -> (crate::store::StoredOffsets, Option<i64>) {
            let offsets = self.store.read_offsets().unwrap();
            let stored = self
                .store
                .get_on_disk(crate::store::StoreId(0), key.as_bytes());
            let count = |v: Vec<u8>| i64::from_be_bytes(v.try_into().unwrap());
            (offsets, stored.unwrap().map(count))
        }
    }

    #[test]
    fn a_write_out_reaches_rocksdb_only_once_all_its_records_are_acknowledged() {
        let mut h = CheckpointHarness::new();
        h.sink.lock().unwrap().hold = true;
        h.count(&["a", "a", "b"]);
        let written = h.start_write_out().unwrap();
        assert!(written.is_empty(), "written before acknowledged");
        assert!(
            h.store.oldest_sealed().is_some(),
            "the write-out is in flight"
        );
        let (offsets, a) = h.on_disk("a");
        assert_eq!(
            (offsets.input_next, a),
            (None, None),
            "on disk before acknowledged"
        );

        h.count(&["a"]); // processing goes on while it is in flight
        h.collector.flush(FLUSH_TIMEOUT).unwrap(); // the broker answers
        let written = h.checkpoint().write_acknowledged().unwrap();
        assert_eq!(written.len(), 1);
        assert_eq!(written[0].input_next, Some(3));
        assert_eq!(written[0].trigger, WriteOut::Commit);
        let (offsets, a) = h.on_disk("a");
        assert_eq!(offsets.input_next, Some(3));
        assert_eq!(
            offsets.changelog_next,
            vec![Some(2)],
            "a and b, at offsets 0 and 1"
        );
        assert_eq!(a, Some(2), "the fourth record is not in this write-out");
        assert_eq!(
            h.sink.lock().unwrap().sent["out"],
            2,
            "one output record per key"
        );
    }

    #[test]
    fn the_next_write_out_waits_for_the_one_in_flight_and_both_land_in_order() {
        let mut h = CheckpointHarness::new();
        h.sink.lock().unwrap().hold = true;
        h.count(&["a", "b"]);
        assert!(h.start_write_out().unwrap().is_empty());
        h.count(&["a"]);
        let written = h.start_write_out().unwrap();
        let committed: Vec<Option<i64>> = written.iter().map(|w| w.input_next).collect();
        assert_eq!(
            committed,
            vec![Some(2)],
            "the first, waited for; the second in flight"
        );
        let input_next = Some(h.next_input);
        let written = h.checkpoint().commit(input_next, WriteOut::Commit).unwrap();
        let committed: Vec<Option<i64>> = written.iter().map(|w| w.input_next).collect();
        assert_eq!(
            committed,
            vec![Some(3), Some(3)],
            "a commit waits for every write-out: the second, then its own (empty)"
        );
        let (offsets, a) = h.on_disk("a");
        assert_eq!((offsets.input_next, a), (Some(3), Some(2)));
        assert_eq!(offsets.changelog_next, vec![Some(3)]);
        assert!(h.store.oldest_sealed().is_none());
    }

    #[test]
    fn a_refused_record_fails_the_write_out_and_nothing_of_it_reaches_rocksdb() {
        let mut h = CheckpointHarness::new();
        h.count(&["a"]);
        let input_next = Some(h.next_input);
        h.checkpoint().commit(input_next, WriteOut::Commit).unwrap();
        h.sink.lock().unwrap().refuse = Some("Broker: Not leader for partition".into());
        h.count(&["a", "b"]);
        let error = h.start_write_out().unwrap_err();
        assert!(error.to_string().contains("Not leader"), "{error}");
        let (offsets, a) = h.on_disk("a");
        assert_eq!((offsets.input_next, a), (Some(1), Some(1)));
        assert_eq!(h.on_disk("b").1, None);
    }

    #[test]
    fn under_exactly_once_a_write_out_is_a_transaction_committed_with_its_input_offset_before_rocksdb(
    ) {
        let mut h = CheckpointHarness::exactly_once();
        h.count(&["a", "a", "b"]);
        let written = h.start_write_out().unwrap();
        assert_eq!(
            written.iter().map(|w| w.input_next).collect::<Vec<_>>(),
            vec![Some(3)],
            "no write-out stays in flight: it is written once committed"
        );
        assert_eq!(h.sink.lock().unwrap().transactions, vec![(true, Some(3))]);
        let (offsets, a) = h.on_disk("a");
        assert_eq!((offsets.input_next, a), (Some(3), Some(2)));
        assert_eq!(offsets.changelog_next, vec![Some(2)]);

        // The next transaction's records lie past the first one's marker (offset 2).
        h.count(&["c"]);
        let written = h.start_write_out().unwrap();
        assert_eq!(written.len(), 1);
        let (offsets, c) = h.on_disk("c");
        assert_eq!((offsets.input_next, c), (Some(4), Some(1)));
        assert_eq!(
            offsets.changelog_next,
            vec![Some(4)],
            "stepped over the marker, not failed as another writer's record"
        );
        assert_eq!(
            h.sink.lock().unwrap().transactions,
            vec![(true, Some(3)), (true, Some(4))]
        );
        // Nothing sent and no input since: no transaction.
        h.start_write_out().unwrap();
        assert_eq!(h.sink.lock().unwrap().transactions.len(), 2);
    }

    #[test]
    fn under_exactly_once_a_failed_commit_aborts_and_nothing_of_it_reaches_rocksdb() {
        let mut h = CheckpointHarness::exactly_once();
        h.count(&["a"]);
        h.start_write_out().unwrap();
        h.sink.lock().unwrap().fail_commit = Some(crate::delivery::TransactionFailure {
            reason: "Broker: Request timed out".into(),
            fenced: false,
        });
        h.count(&["a", "b"]);
        let error = h.start_write_out().unwrap_err();
        assert!(
            matches!(error, EngineError::TransactionAborted { .. }),
            "{error}"
        );
        assert_eq!(
            h.sink.lock().unwrap().transactions,
            vec![(true, Some(1)), (false, None)],
            "the failed transaction was aborted"
        );
        let (offsets, a) = h.on_disk("a");
        assert_eq!((offsets.input_next, a), (Some(1), Some(1)));
        assert_eq!(h.on_disk("b").1, None);
        // Its records were all acknowledged, yet a later write-out answer writes nothing.
        assert!(h.checkpoint().write_acknowledged().is_err());
        assert_eq!(h.on_disk("b").1, None);
        assert!(h.collector.send_output("out", b"k", b"1", None).is_err());
    }

    #[test]
    fn under_exactly_once_a_fenced_producer_fails_the_commit_as_fenced() {
        let mut h = CheckpointHarness::exactly_once();
        h.sink.lock().unwrap().fail_commit = Some(crate::delivery::TransactionFailure {
            reason: "Local: This instance has been fenced by a newer instance".into(),
            fenced: true,
        });
        h.count(&["a"]);
        let error = h.start_write_out().unwrap_err();
        assert!(
            matches!(error, EngineError::ProducerFenced { ref transactional_id, .. } if transactional_id == "app-0_0"),
            "{error}"
        );
        assert_eq!(h.on_disk("a").1, None);
    }

    #[test]
    fn only_commits_are_counted_as_commits() {
        let metrics = EngineMetrics::new("write-out-test", "input-topic");
        let out = |trigger| WrittenOut {
            input_next: Some(1),
            trigger,
            took: Duration::from_millis(3),
        };
        count_commits(
            &metrics,
            &[
                out(WriteOut::CacheOverBudget),
                out(WriteOut::Commit),
                out(WriteOut::Commit),
            ],
        );
        assert_eq!(metrics.commits.get(), 2);
        assert_eq!(metrics.commit_duration.get_sample_count(), 2);
    }

    fn run(first: i64, last: i64, records: u64) -> Option<AcknowledgedRun> {
        Some(AcknowledgedRun {
            first,
            last,
            records,
        })
    }

    #[test]
    fn the_changelog_position_advances_only_over_an_unbroken_run_of_the_tasks_own_records() {
        assert_eq!(
            advance_changelog_next(Some(10), None, false),
            Ok(Some(10)),
            "none sent"
        );
        assert_eq!(
            advance_changelog_next(Some(10), run(10, 15, 6), false),
            Ok(Some(16))
        );
        assert_eq!(
            advance_changelog_next(Some(16), run(20, 25, 6), false),
            Err((4, 16, 26)),
            "another writer's 4 records before ours: the position stays below them"
        );
        assert_eq!(
            advance_changelog_next(Some(10), run(10, 15, 4), false),
            Err((2, 10, 16)),
            "2 of another writer's among ours"
        );
        assert_eq!(
            advance_changelog_next(Some(10), run(8, 9, 2), false),
            Err((0, 8, 10))
        );
        assert_eq!(
            advance_changelog_next(None, run(0, 1, 2), false),
            Err((0, 0, 2))
        );
    }

    #[test]
    fn under_exactly_once_the_position_steps_over_transaction_markers_not_into_a_broken_run() {
        assert_eq!(
            advance_changelog_next(Some(16), run(17, 20, 4), true),
            Ok(Some(21)),
            "the last transaction's marker at 16, then ours"
        );
        assert_eq!(
            advance_changelog_next(Some(16), run(17, 20, 3), true),
            Err((2, 16, 21)),
            "another writer among our records in one transaction"
        );
        assert_eq!(
            advance_changelog_next(Some(16), run(17, 20, 4), false),
            Err((1, 16, 21)),
            "under at-least-once a gap is another writer's"
        );
    }

    /// G1 of the 2026-12-04 correctness review: an old owner's late write-out lands after the
    /// new owner's records; its position must not jump over them, or a later restore on this
    /// volume skips them for good.
    #[test]
    fn a_write_out_landing_after_another_writers_records_keeps_the_position_below_them() {
        let mut h = CheckpointHarness::new();
        let changelog = h.collector.changelog_topic(StoreId(0)).to_string();
        h.count(&["a", "b"]);
        let input_next = Some(h.next_input);
        h.checkpoint().commit(input_next, WriteOut::Commit).unwrap();
        assert_eq!(h.on_disk("a").0.changelog_next, vec![Some(2)]);

        h.sink.lock().unwrap().foreign_append(&changelog, 0, 3);
        h.count(&["a", "c"]);
        let input_next = Some(h.next_input);
        let error = h
            .checkpoint()
            .commit(input_next, WriteOut::Commit)
            .unwrap_err();
        match &error {
            EngineError::ForeignChangelogRecords {
                foreign, from, to, ..
            } => assert_eq!((*foreign, *from, *to), (3, 2, 7)),
            other => panic!("not a foreign-records error: {other}"),
        }
        let (offsets, a) = h.on_disk("a");
        assert_eq!(
            offsets.changelog_next,
            vec![Some(2)],
            "jumped the other writer's records"
        );
        assert_eq!(
            (offsets.input_next, a),
            (Some(4), Some(2)),
            "its own write-out is kept"
        );

        let metrics = EngineMetrics::new("foreign-records-test", "input-topic");
        let verdict = super::super::policy::on_failure(
            &metrics,
            super::super::policy::CommitTrigger::Task,
            Some(TASK),
            &error,
        );
        assert_eq!(verdict, super::super::policy::FailureVerdict::RestartTask);
        let counted = metrics
            .changelog_foreign_records
            .with_label_values(&["0_0", "0"]);
        assert_eq!(counted.get(), 3);
    }

    /// G2 of the 2026-12-04 correctness review: an idle task (nothing cached, sent or in
    /// flight) has no acknowledgements to find another writer's records in, so its interval
    /// commit asks the broker where its changelog ends.
    #[test]
    fn an_idle_task_finds_another_writers_records_after_its_own() {
        let wait = Duration::from_secs(1);
        let mut h = CheckpointHarness::new();
        let changelog = h.collector.changelog_topic(StoreId(0)).to_string();
        h.count(&["a", "b"]);
        let input_next = Some(h.next_input);
        h.checkpoint().commit(input_next, WriteOut::Commit).unwrap();
        h.checkpoint().check_for_other_writers(wait).unwrap();

        h.sink.lock().unwrap().foreign_append(&changelog, 0, 3);
        // Its restore found the previous owner's uncommitted write-out from offset 1.
        h.owed_from = vec![Some(1)];
        match h.checkpoint().check_for_other_writers(wait) {
            Err(EngineError::ForeignChangelogRecords {
                foreign, from, to, ..
            }) => assert_eq!((foreign, from, to), (3, 2, 5)),
            other => panic!("not a foreign-records error: {other:?}"),
        }
        assert_eq!(
            h.on_disk("a").0.changelog_next,
            vec![Some(1)],
            "the restart restores from where the previous owner's write-out began"
        );
        h.count(&["c"]);
        assert!(
            h.checkpoint().check_for_other_writers(wait).is_ok(),
            "a task with updates to write finds them in its write-out's acknowledgements"
        );
    }

    #[test]
    fn under_exactly_once_the_broker_is_not_asked_for_other_writers() {
        let mut h = CheckpointHarness::exactly_once();
        let changelog = h.collector.changelog_topic(StoreId(0)).to_string();
        h.count(&["a"]);
        h.start_write_out().unwrap();
        h.sink.lock().unwrap().foreign_append(&changelog, 0, 3);
        assert!(h
            .checkpoint()
            .check_for_other_writers(Duration::from_secs(1))
            .is_ok());
    }

    /// G3: a task whose partition may be another member's (lost, or it did not stop in time)
    /// is fenced: its write-out in flight is purged and never written, and it sends nothing
    /// more.
    #[test]
    fn a_fenced_task_writes_nothing_of_its_write_out_and_sends_nothing_more() {
        let mut h = CheckpointHarness::new();
        let fence = Fence::default();
        h.collector.fence_with(fence.clone());
        h.sink.lock().unwrap().hold = true;
        h.count(&["a", "b"]);
        assert!(h.start_write_out().unwrap().is_empty(), "in flight");
        fence.close();
        assert!(h.sink.lock().unwrap().purged, "the producer was not purged");
        let error = h.checkpoint().write_acknowledged().unwrap_err();
        assert!(matches!(error, EngineError::Fenced { .. }), "{error}");
        let (offsets, a) = h.on_disk("a");
        assert_eq!(
            (offsets.input_next, a),
            (None, None),
            "written after the fence"
        );
        let sent = h
            .collector
            .send_output("out", b"c", b"1", None)
            .unwrap_err();
        assert!(matches!(sent, EngineError::Fenced { .. }), "{sent}");
        let input_next = Some(h.next_input);
        let commit = h.checkpoint().commit(input_next, WriteOut::Commit);
        assert!(commit.is_err(), "a fenced task committed");
        assert_eq!(h.on_disk("a").0.input_next, None);
    }
}
