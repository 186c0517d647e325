//! The task actor: owns one partition's store, changelog writer and processor through its
//! lifecycle (created, restoring with the state updater, running, closed): processes the
//! batches the consumer loop queues for it, and commits on its own interval (write-outs that
//! go on in flight while it processes, see `checkpoint`).

mod lifecycle;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{debug, info, warn};

use crate::clients::transactional_id;
use crate::config::{DeserializationErrorPolicy, StreamsConfig};
use crate::delivery::GroupMetadataCell;
use crate::dsl::Topology;
use crate::error::{EngineError, Result};
use crate::failpoints;
use crate::fence::Fence;
use crate::metrics::EngineMetrics;
use crate::processor::{EmitContext, InputRecord, Processor, ProcessorContext, RecordError};
use crate::record_collector::{RecordCollector, TransactionScope};
use crate::runtime::checkpoint::policy::{on_failure, CommitTrigger};
use crate::runtime::checkpoint::{count_commits, TaskCheckpoint, WriteOut, WrittenOut};
use crate::runtime::state_updater::StateUpdaterHandle;
use crate::runtime::wiring::{
    RestoredStore, RestoringTask, SupervisorMsg, TaskCommitted, TaskMsg, STORE_RELEASE_WAIT,
};
use crate::status::{TaskPhase, TaskProgress};
use crate::store::offsets::InputPosition;
use crate::store::{StoreId, TaskStore};
use crate::store_memory::StoreMemory;
use crate::task_id::TaskId;
use lifecycle::TaskLifecycle;

/// Keys read per step while re-emitting the output of restored keys.
const REPLAY_STEP: usize = 1_000;
/// How often a running task checks whether its record cache should be written out even
/// though it processed nothing (the instance's caches share one budget: another task's
/// write-out can leave this one holding more than its share).
const CACHE_CHECK_EVERY: Duration = Duration::from_millis(250);
/// How long an idle task's interval commit waits for the broker to say where its changelogs
/// end (another writer's records there are found this way; see
/// `TaskCheckpoint::check_for_other_writers`).
const OTHER_WRITERS_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// The most often an idle task asks (short commit intervals do not multiply the requests).
const OTHER_WRITERS_CHECK_EVERY: Duration = Duration::from_secs(1);
pub struct TaskArgs {
    pub task: TaskId,
    pub topology: Arc<Topology>,
    pub config: Arc<StreamsConfig>,
    pub metrics: EngineMetrics,
    pub task_dir: PathBuf,
    pub store_memory: Arc<StoreMemory>,
    pub supervisor: ActorRef<SupervisorMsg>,
    pub progress: Arc<TaskProgress>,
    pub updater: StateUpdaterHandle,
    /// Where interval commits report the offsets for the group.
    pub committed: Sender<TaskCommitted>,
    /// Input records queued for this task and not yet processed (shared with the consumer
    /// loop, which pauses the partition while it is over its bound).
    pub queued: Arc<AtomicUsize>,
    /// Closed by the supervisor once the partition may be another member's: the task then
    /// sends and writes nothing more.
    pub fence: Fence,
    /// The consumer's group membership, which exactly-once transactions commit input offsets
    /// under.
    pub group_metadata: GroupMetadataCell,
}

pub struct TaskState {
    args: TaskArgs,
    /// Opening, restoring, running (with what it runs with), closed.
    lifecycle: TaskLifecycle<RunningTask>,
    last_commit: Instant,
    /// The task's changelog writer, made (and under exactly-once registered with the broker,
    /// fencing earlier owners) before the restore; the running task takes it.
    collector: Option<RecordCollector>,
}

/// What a running task works with.
struct RunningTask {
    task: TaskId,
    config: Arc<StreamsConfig>,
    metrics: EngineMetrics,
    labels: [String; 2],
    progress: Arc<TaskProgress>,
    store: TaskStore,
    collector: RecordCollector,
    processor: Box<dyn Processor>,
    /// The store each record's key is read from, read ahead a batch at a time.
    read_ahead: Option<StoreId>,
    position: InputPosition,
    changelog_next: Vec<Option<i64>>,
    /// Skip reasons already logged for this task (each is logged once per partition).
    logged_skips: HashSet<&'static str>,
    /// Records sent so far, to update the write counters by difference.
    reported_sent: (u64, u64),
    /// Where write-outs that reached RocksDB report their input offset for the group.
    committed: Sender<TaskCommitted>,
    /// This incarnation (its reports are void once it stopped).
    actor: ractor::ActorId,
    /// When its interval commit last looked for another writer's changelog records.
    other_writers_checked: Instant,
    /// Per store, where the previous owner's last uncommitted write-out began (its restore
    /// found it; see `RestoreOutcome::owed_from`).
    owed_from: Vec<Option<i64>>,
}

pub struct StreamTask;

impl Actor for StreamTask {
    type Msg = TaskMsg;
    type State = TaskState;
    type Arguments = TaskArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<TaskMsg>,
        args: TaskArgs,
    ) -> Result<TaskState, ActorProcessingErr> {
        Ok(TaskState {
            lifecycle: TaskLifecycle::new(args.task, args.progress.clone()),
            args,
            last_commit: Instant::now(),
            collector: None,
        })
    }

    /// Opens the store (outside the supervisor's start, so a store still locked by a stopping
    /// incarnation delays only this task) and hands it to the state updater.
    async fn post_start(
        &self,
        myself: ActorRef<TaskMsg>,
        state: &mut TaskState,
    ) -> Result<(), ActorProcessingErr> {
        let args = &state.args;
        let (store, wiped) = tokio::task::block_in_place(|| {
            TaskStore::open_or_wipe(
                args.task,
                &args.task_dir,
                args.topology.stores(),
                &args.store_memory,
                crate::store::LOCK_WAIT,
            )
        })?;
        if let Some(reason) = wiped {
            args.metrics.state_wipes.with_label_values(&[reason]).inc();
        }
        args.progress.store.set(store.reader());
        let collector = tokio::task::block_in_place(|| state.new_collector(&myself))?;
        state.collector = Some(collector);
        state.lifecycle.start_restoring()?;
        let args = &state.args;
        args.updater.add(RestoringTask {
            task: args.task,
            store,
            progress: args.progress.clone(),
            owner: myself,
        })?;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<TaskMsg>,
        msg: TaskMsg,
        state: &mut TaskState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TaskMsg::Restored(restored) => {
                tokio::task::block_in_place(|| state.run(*restored, &myself))?;
                state.last_commit = Instant::now();
                let interval = state.args.config.commit_interval;
                myself.send_interval(interval, || TaskMsg::CommitTick);
                myself.send_interval(CACHE_CHECK_EVERY, || TaskMsg::CacheCheck);
                let next = state.lifecycle.running().and_then(|r| r.position.next());
                state.args.supervisor.cast(SupervisorMsg::TaskRunning(
                    state.args.task,
                    myself.get_id(),
                    next,
                ))?;
            }
            TaskMsg::RestoreFailed(error) => return Err(error.into()),
            TaskMsg::Process(records) => {
                let count = records.len();
                let result = match state.lifecycle.running_mut() {
                    Some(running) => tokio::task::block_in_place(|| running.process(&records)),
                    None => {
                        debug!(task = %state.args.task, "dropping {count} records queued before the task runs");
                        Ok(())
                    }
                };
                state.args.queued.fetch_sub(count, Ordering::AcqRel);
                result?;
            }
            TaskMsg::Commit(reply) => {
                // Asked on revocation and at shutdown: the task stops next whatever the
                // commit did, so a failure is only answered.
                let _ = reply.send(state.commit());
            }
            TaskMsg::CacheCheck => {
                if let Some(running) = state.lifecycle.running_mut() {
                    tokio::task::block_in_place(|| running.write_out_if_over_budget())?;
                }
            }
            TaskMsg::CommitTick => {
                // Ticks that queued up behind slow work come in bursts: one commit is enough.
                if state.last_commit.elapsed() >= state.args.config.commit_interval / 2 {
                    state.commit_on_interval()?;
                }
            }
            TaskMsg::WriteOutAnswered => {
                if let Some(running) = state.lifecycle.running_mut() {
                    let written = tokio::task::block_in_place(|| running.write_acknowledged());
                    state.after_commit(written)?;
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<TaskMsg>,
        state: &mut TaskState,
    ) -> Result<(), ActorProcessingErr> {
        let task = state.args.task;
        let left = state.lifecycle.close()?;
        if left.phase() == TaskPhase::Restoring {
            // The state updater holds the store: take it out (its progress is written) and
            // wait until it is closed, so the next owner on this instance can open it.
            let updater = state.args.updater.clone();
            if let Err(e) = tokio::task::block_in_place(|| updater.remove(task, STORE_RELEASE_WAIT))
            {
                warn!(%task, "{e}");
            }
        }
        if let Some(running) = left.running() {
            if running.store.dirty_keys() > 0 {
                info!(%task, "closing with {} uncommitted keys dropped", running.store.dirty_keys());
            }
        }
        Ok(())
    }
}

impl TaskState {
    /// Starts running with the restored store: re-emits what restored keys may owe, then
    /// takes input from where the last commit left it.
    fn run(&mut self, restored: RestoredStore, myself: &ActorRef<TaskMsg>) -> Result<()> {
        let RestoredStore { store, outcome } = restored;
        // Made in `post_start`, before the restore (under exactly-once, so that no earlier
        // owner can commit after it).
        let collector = self.collector.take().ok_or_else(|| {
            EngineError::actor("task", "restored before its changelog writer was made")
        })?;
        let args = &self.args;
        let stored = store.read_offsets()?;
        let mut running = RunningTask {
            task: args.task,
            config: args.config.clone(),
            metrics: args.metrics.clone(),
            labels: EngineMetrics::task_labels(args.task),
            progress: args.progress.clone(),
            collector,
            store,
            processor: args.topology.new_processor(),
            read_ahead: args.topology.read_ahead(),
            position: InputPosition::resume(stored.input_next, outcome.input_next),
            changelog_next: outcome.changelog_next.clone(),
            logged_skips: HashSet::new(),
            reported_sent: (0, 0),
            committed: args.committed.clone(),
            actor: myself.get_id(),
            other_writers_checked: Instant::now(),
            owed_from: outcome.owed_from.clone(),
        };
        if failpoints::fires(failpoints::ABORT_BEFORE_REPLAY) {
            failpoints::crash(failpoints::ABORT_BEFORE_REPLAY);
        }
        let replayed = running.reemit_restored()?;
        running.progress.set_next_offset(running.position.next());
        info!(
            task = %args.task,
            "running: restored {} records, re-emitted {replayed} keys ({} newly marked), resuming input at offset {}",
            outcome.records,
            outcome.replay_marked,
            running.position.next().map_or("(beginning)".to_string(), |o| o.to_string())
        );
        self.lifecycle.run(running)
    }

    /// The task's changelog writer behind its fence; under exactly-once its transactional id
    /// is registered with the broker first, which fences the producer of any earlier owner of
    /// the task and aborts that owner's open transaction.
    fn new_collector(&self, myself: &ActorRef<TaskMsg>) -> Result<RecordCollector> {
        let args = &self.args;
        let listener = myself.clone();
        let mut collector = RecordCollector::new(
            args.task,
            &args.config,
            args.topology.stores(),
            Some(&args.metrics),
            Some(Box::new(move || {
                let _ = listener.cast(TaskMsg::WriteOutAnswered);
            })),
        )?;
        collector.fence_with(args.fence.clone());
        if args.config.processing_guarantee.exactly_once() {
            collector.start_transactions(TransactionScope {
                input_topic: args.topology.source_topic().to_string(),
                group: args.group_metadata.clone(),
                transactional_id: transactional_id(&args.config, args.task),
            })?;
        }
        Ok(collector)
    }

    /// Commits a running task now (nothing to do for one still restoring): everything it
    /// processed is in RocksDB; answers the input offset to commit to the group.
    fn commit(&mut self) -> Result<Option<i64>> {
        self.last_commit = Instant::now();
        match self.lifecycle.running_mut() {
            Some(running) => tokio::task::block_in_place(|| running.commit(WriteOut::Commit)),
            None => Ok(None),
        }
    }

    /// The interval commit: starts a write-out, whose offset goes to the consumer loop for the
    /// group once it is in RocksDB. An idle task first looks for another writer's records in
    /// its changelogs (a write-out would find them among its acknowledgements).
    fn commit_on_interval(&mut self) -> Result<()> {
        self.last_commit = Instant::now();
        if let Some(running) = self.lifecycle.running_mut() {
            let started = tokio::task::block_in_place(|| {
                if running.other_writers_checked.elapsed() >= OTHER_WRITERS_CHECK_EVERY {
                    running.other_writers_checked = Instant::now();
                    running
                        .checkpoint()
                        .check_for_other_writers(OTHER_WRITERS_CHECK_TIMEOUT)?;
                }
                running.start_write_out(WriteOut::Commit)
            });
            self.after_commit(started)?;
        }
        Ok(())
    }

    /// A failed write-out or commit fails the task (restarted from its last commit, see
    /// `checkpoint`).
    fn after_commit(&self, result: Result<()>) -> Result<()> {
        result.inspect_err(|error| {
            let metrics = &self.args.metrics;
            on_failure(metrics, CommitTrigger::Task, Some(self.args.task), error);
        })
    }
}

impl RunningTask {
    /// Re-emits the output (and the changelog record) of every key marked as owing it
    /// (restored from changelog records past the last commit, or found after an older record
    /// of another writer, now or by an earlier start that did not get to commit). The marks
    /// go with the next commit, which flushes this output. Answers the number of keys.
    fn reemit_restored(&mut self) -> Result<u64> {
        let offset = self.position.next().unwrap_or(0);
        let mut replayed = 0;
        let mut after = None;
        loop {
            let keys = self
                .store
                .pending_output_after(after.as_ref(), REPLAY_STEP)?;
            for (store, key) in &keys {
                let Some((version, value)) = self.store.get_with_version(*store, key)? else {
                    continue;
                };
                if let Some(version) = version {
                    // The changelog gets the value again too: a key marked because another
                    // writer's older record lies after this task's (an overlapping owner)
                    // would otherwise keep that record as its newest, and compaction would
                    // leave only it for a later full restore.
                    self.collector.send_changelog(
                        *store,
                        self.task.partition,
                        key,
                        &value,
                        version,
                    )?;
                }
                let mut ctx = EmitContext::new(
                    &self.store,
                    &mut self.collector,
                    self.task.partition,
                    offset,
                    None,
                );
                self.processor
                    .reemit(*store, key, &value, &mut ctx)
                    .map_err(|e| EngineError::Processing {
                        task: self.task,
                        partition: self.task.partition,
                        offset,
                        reason: format!("re-emitting a restored key: {e}"),
                    })?;
                replayed += 1;
            }
            match keys.into_iter().last() {
                Some(last) => after = Some(last),
                None => return Ok(replayed),
            }
        }
    }

    /// Reads the batch's keys ahead, then runs the processor over each record not processed
    /// before; answers how many it processed.
    fn process_each(
        &mut self,
        records: &[InputRecord],
        latency: &prometheus::local::LocalHistogram,
    ) -> Result<u64> {
        let mut processed = 0u64;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        if let Some(store) = self.read_ahead {
            let position = &self.position;
            let keys = records
                .iter()
                .filter(|r| position.needs(r.offset))
                .filter_map(|r| r.key.as_deref());
            self.store.read_ahead(store, keys)?;
        }
        for record in records {
            if !self.position.needs(record.offset) {
                continue;
            }
            let mut ctx = ProcessorContext::new(
                &mut self.store,
                &mut self.collector,
                record.partition,
                record.offset,
                record.timestamp,
            );
            let processor = &mut self.processor;
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                processor.process(record, &mut ctx)
            }))
            .unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(RecordError::Failed(format!(
                    "processor panicked: {message}"
                )))
            });
            // What the record wrote is flushed (changelog, output) whatever it answered.
            ctx.flush_uncached(processor.as_mut())?;
            match result {
                Ok(()) => {
                    processed += 1;
                    if let Some(timestamp) = record.timestamp {
                        latency.observe((now_ms - timestamp).max(0) as f64 / 1000.0);
                    }
                }
                Err(error) => self.handle_record_error(record, error)?,
            }
            self.position.advance(record.offset);
        }
        Ok(processed)
    }

    fn process(&mut self, records: &[InputRecord]) -> Result<()> {
        let batch_started = std::time::Instant::now();
        let latency = self
            .metrics
            .end_to_end_latency
            .with_label_values(&[self.labels[0].as_str(), self.labels[1].as_str()])
            .local();
        let processed = self.process_each(records, &latency);
        // What was read ahead is for this batch only, whatever became of it.
        self.store.end_read_ahead();
        let processed = processed?;
        let labels = [self.labels[0].as_str(), self.labels[1].as_str()];
        self.metrics
            .records_processed
            .with_label_values(&labels)
            .inc_by(processed);
        latency.flush();
        self.metrics
            .process_batch_duration
            .observe(batch_started.elapsed().as_secs_f64());
        // The lag gauge is set from it at each scrape (`EngineMetrics::observe_instance`).
        self.progress.set_next_offset(self.position.next());
        self.report_sent();
        if self.store.oldest_sealed().is_some()
            && failpoints::fires(failpoints::ABORT_WITH_WRITE_OUT_IN_FLIGHT)
        {
            failpoints::crash(failpoints::ABORT_WITH_WRITE_OUT_IN_FLIGHT);
        }
        self.write_out_if_over_budget()
    }

    /// Over --cache-max-bytes with at least an even share of it: writes this task's updates
    /// out now rather than at the next commit (the group offset still waits for the commit;
    /// a restart resumes from the store's own offset, which is never behind it).
    fn write_out_if_over_budget(&mut self) -> Result<()> {
        if self.store.cache_over_budget() {
            self.start_write_out(WriteOut::CacheOverBudget)?;
            self.metrics
                .state_cache_flushes
                .with_label_values(&[self.labels[0].as_str(), self.labels[1].as_str()])
                .inc();
        }
        self.report_cache_memory();
        Ok(())
    }

    /// Sets the gauges of the memory the instance's caches and write-outs hold.
    fn report_cache_memory(&self) {
        let memory = self.store.memory();
        self.metrics
            .state_cache_bytes
            .set(memory.cache_bytes() as i64);
        self.metrics
            .state_write_out_bytes
            .set(memory.write_out_bytes() as i64);
    }

    /// Adds the records sent since the last report to the write counters.
    fn report_sent(&mut self) {
        let labels = [self.labels[0].as_str(), self.labels[1].as_str()];
        let sent = self.collector.sent();
        self.metrics
            .changelog_records
            .with_label_values(&labels)
            .inc_by(sent.0 - self.reported_sent.0);
        self.metrics
            .output_records
            .with_label_values(&labels)
            .inc_by(sent.1 - self.reported_sent.1);
        self.reported_sent = sent;
    }

    fn handle_record_error(&mut self, record: &InputRecord, error: RecordError) -> Result<()> {
        let (task, partition, offset) = (self.task, record.partition, record.offset);
        match &error {
            RecordError::Deserialization { .. }
                if self.config.deserialization_error_policy == DeserializationErrorPolicy::Fail =>
            {
                // Everything before the bad record is kept: sent, flushed and written.
                self.commit(WriteOut::Commit).inspect_err(|error| {
                    on_failure(&self.metrics, CommitTrigger::BadRecord, Some(task), error);
                })?;
                return Err(EngineError::Deserialization {
                    task,
                    partition,
                    offset,
                    reason: error.to_string(),
                });
            }
            RecordError::Failed(reason) => {
                return Err(EngineError::Processing {
                    task,
                    partition,
                    offset,
                    reason: reason.clone(),
                });
            }
            RecordError::Deserialization { .. } => {
                warn!(%task, partition, offset, "skipping record: {error} (deserialization-error-policy is log-and-continue)");
            }
            RecordError::NullKey | RecordError::NullValue => {
                if self.logged_skips.insert(error.skip_reason()) {
                    warn!(%task, partition, offset, "skipping record: {error}; further ones on this partition are only counted in kstreams_records_skipped_total");
                }
            }
        }
        self.metrics
            .records_skipped
            .with_label_values(&[
                self.labels[0].as_str(),
                self.labels[1].as_str(),
                error.skip_reason(),
            ])
            .inc();
        Ok(())
    }

    fn checkpoint(&mut self) -> TaskCheckpoint<'_> {
        TaskCheckpoint {
            task: self.task,
            store: &mut self.store,
            collector: &mut self.collector,
            processor: self.processor.as_mut(),
            changelog_next: &mut self.changelog_next,
            owed_from: &self.owed_from,
        }
    }

    /// Commits now: everything processed is in RocksDB when it returns; answers the input
    /// offset to commit to the group (none under exactly-once: the transaction committed it).
    fn commit(&mut self, trigger: WriteOut) -> Result<Option<i64>> {
        let input_next = self.position.next();
        let written = self.checkpoint().commit(input_next, trigger)?;
        self.report_written(written);
        Ok(input_next.filter(|_| !self.collector.transactional()))
    }

    /// Starts a write-out of everything processed; the task processes on while it is in
    /// flight (it waits only for an earlier one still in flight).
    fn start_write_out(&mut self, trigger: WriteOut) -> Result<()> {
        let input_next = self.position.next();
        let written = self.checkpoint().start_write_out(input_next, trigger)?;
        self.report_written(written);
        Ok(())
    }

    /// Writes the write-outs the broker acknowledged to RocksDB.
    fn write_acknowledged(&mut self) -> Result<()> {
        let written = self.checkpoint().write_acknowledged()?;
        self.report_written(written);
        Ok(())
    }

    /// Reports write-outs that reached RocksDB: their input offsets to the consumer loop (for
    /// the group), their counts and durations to the metrics.
    fn report_written(&mut self, written: Vec<WrittenOut>) {
        self.report_sent();
        if written.is_empty() {
            return;
        }
        count_commits(&self.metrics, &written);
        // Under exactly-once each write-out's transaction already committed its input offset
        // to the group; the consumer commits none of its own (as Kafka Streams').
        let for_the_group = !self.collector.transactional();
        for out in written.into_iter().filter(|_| for_the_group) {
            if let Some(next_offset) = out.input_next {
                let _ = self.committed.send(TaskCommitted {
                    partition: self.task.partition,
                    actor: self.actor,
                    next_offset,
                });
            }
        }
        let labels = [self.labels[0].as_str(), self.labels[1].as_str()];
        self.metrics
            .store_size
            .with_label_values(&labels)
            .set(self.store.approximate_size_bytes() as i64);
        self.metrics
            .rocksdb_memory_bytes
            .set(self.store.memory().rocksdb_bytes() as i64);
        self.report_cache_memory();
    }
}
