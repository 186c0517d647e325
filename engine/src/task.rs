//! The task actor: owns one partition's store, changelog writer and processor; restores, then
//! processes the batches it is given, and commits (flush, one write batch, report the offset).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::{info, warn};

use crate::config::{DeserializationErrorPolicy, StreamsConfig};
use crate::dsl::Topology;
use crate::error::{EngineError, Result};
use crate::failpoints;
use crate::metrics::EngineMetrics;
use crate::offsets::{decode_changelog_value, InputPosition};
use crate::processor::{InputRecord, Processor, ProcessorContext, RecordError, StoreId};
use crate::record_collector::RecordCollector;
use crate::restore::{restore_task, RestoreRequest};
use crate::status::TaskProgress;
use crate::store_memory::StoreMemory;
use crate::supervisor::SupervisorMsg;
use crate::task_id::TaskId;
use crate::task_store::{StoredOffsets, TaskStore};

/// How long a commit waits for the broker to acknowledge the task's records.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);
/// Keys read per step while re-emitting the output of restored keys.
const REPLAY_STEP: usize = 1_000;

/// What made a task write its cached updates out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOut {
    /// A commit (interval, revocation, shutdown, or before stopping on a bad record).
    Commit,
    /// The task's record cache went over its share of the budget.
    CacheOverBudget,
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskPhase {
    Restoring,
    Running,
}

pub enum TaskMsg {
    /// Sent to itself once started: restore, then tell the supervisor it is running.
    Restore,
    /// Process these records (in offset order), then answer.
    Process(Vec<InputRecord>, RpcReplyPort<Result<()>>),
    /// Flush, persist state and offsets, and answer with the input offset to commit.
    Commit(RpcReplyPort<Result<Option<i64>>>),
}

pub struct TaskArgs {
    pub task: TaskId,
    pub topology: Arc<Topology>,
    pub config: Arc<StreamsConfig>,
    pub metrics: EngineMetrics,
    pub task_dir: PathBuf,
    pub store_memory: Arc<StoreMemory>,
    pub supervisor: ActorRef<SupervisorMsg>,
    pub progress: Arc<TaskProgress>,
}

pub struct TaskState {
    task: TaskId,
    config: Arc<StreamsConfig>,
    metrics: EngineMetrics,
    labels: [String; 2],
    supervisor: ActorRef<SupervisorMsg>,
    progress: Arc<TaskProgress>,
    source_topic: String,
    store: TaskStore,
    collector: RecordCollector,
    processor: Box<dyn Processor>,
    phase: TaskPhase,
    position: InputPosition,
    changelog_next: Vec<Option<i64>>,
    /// Skip reasons already logged for this task (each is logged once per partition).
    logged_skips: HashSet<&'static str>,
    /// Records sent so far, to update the write counters by difference.
    reported_sent: (u64, u64),
}

pub struct StreamTask;

impl Actor for StreamTask {
    type Msg = TaskMsg;
    type State = TaskState;
    type Arguments = TaskArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TaskMsg>,
        args: TaskArgs,
    ) -> Result<TaskState, ActorProcessingErr> {
        let TaskArgs {
            task,
            topology,
            config,
            metrics,
            task_dir,
            store_memory,
            supervisor,
            progress,
        } = args;
        let (store, wiped) = tokio::task::block_in_place(|| {
            TaskStore::open_or_wipe(
                task,
                &task_dir,
                topology.stores(),
                &store_memory,
                crate::task_store::LOCK_WAIT,
            )
        })?;
        if let Some(reason) = wiped {
            metrics.state_wipes.with_label_values(&[reason]).inc();
        }
        let collector = RecordCollector::new(task, &config, topology.stores())?;
        let changelog_next = store.read_offsets()?.changelog_next;
        metrics.tasks_restoring.inc();
        myself.cast(TaskMsg::Restore)?;
        Ok(TaskState {
            task,
            labels: EngineMetrics::task_labels(task),
            config,
            metrics,
            supervisor,
            progress,
            source_topic: topology.source_topic().to_string(),
            store,
            collector,
            processor: topology.new_processor(),
            phase: TaskPhase::Restoring,
            position: InputPosition::default(),
            changelog_next,
            logged_skips: HashSet::new(),
            reported_sent: (0, 0),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<TaskMsg>,
        msg: TaskMsg,
        state: &mut TaskState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TaskMsg::Restore => {
                tokio::task::block_in_place(|| state.restore())?;
                state.supervisor.cast(SupervisorMsg::TaskRunning(
                    state.task,
                    myself.get_id(),
                    state.position.next(),
                ))?;
            }
            TaskMsg::Process(records, reply) => {
                let result = tokio::task::block_in_place(|| state.process(&records));
                if let Err(error) = result {
                    let message = error.to_string();
                    let _ = reply.send(Err(error));
                    return Err(message.into());
                }
                let _ = reply.send(Ok(()));
            }
            TaskMsg::Commit(reply) => {
                let result = tokio::task::block_in_place(|| state.commit(WriteOut::Commit));
                let _ = reply.send(result);
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<TaskMsg>,
        state: &mut TaskState,
    ) -> Result<(), ActorProcessingErr> {
        match state.phase {
            TaskPhase::Restoring => state.metrics.tasks_restoring.dec(),
            TaskPhase::Running => state.metrics.tasks_running.dec(),
        }
        let labels = [state.labels[0].as_str(), state.labels[1].as_str()];
        state
            .metrics
            .restore_remaining
            .with_label_values(&labels)
            .set(0);
        if state.store.dirty_keys() > 0 {
            info!(task = %state.task, "closing with {} uncommitted keys dropped", state.store.dirty_keys());
        }
        Ok(())
    }
}

impl TaskState {
    fn restore(&mut self) -> Result<()> {
        let started = std::time::Instant::now();
        let request = RestoreRequest {
            task: self.task,
            config: &self.config,
            source_topic: &self.source_topic,
            metrics: &self.metrics,
            progress: &self.progress,
        };
        let outcome = restore_task(&request, &mut self.store)?;
        if let Some(reason) = outcome.wiped {
            self.metrics.state_wipes.with_label_values(&[reason]).inc();
        }
        self.metrics
            .restore_duration
            .observe(started.elapsed().as_secs_f64());
        let stored: StoredOffsets = self.store.read_offsets()?;
        self.position = InputPosition::resume(stored.input_next, outcome.input_next);
        self.changelog_next = stored.changelog_next;
        if failpoints::fires(failpoints::ABORT_BEFORE_REPLAY) {
            failpoints::crash(failpoints::ABORT_BEFORE_REPLAY);
        }
        let replayed = self.replay()?;
        self.phase = TaskPhase::Running;
        self.progress.set_next_offset(self.position.next());
        self.progress.set_running();
        self.metrics.tasks_restoring.dec();
        self.metrics.tasks_running.inc();
        info!(
            task = %self.task,
            "running: restored {} records, re-emitted {replayed} keys ({} newly marked), resuming input at offset {}",
            outcome.records,
            outcome.replay_marked,
            self.position.next().map_or("(beginning)".to_string(), |o| o.to_string())
        );
        Ok(())
    }

    /// Re-emits the output of every key marked as owing it (restored from changelog records
    /// past the last commit, now or by an earlier start that did not get to commit). The marks
    /// go with the next commit, which flushes this output. Answers the number of keys.
    fn replay(&mut self) -> Result<u64> {
        let offset = self.position.next().unwrap_or(0);
        let mut replayed = 0;
        let mut after = None;
        loop {
            let keys = self
                .store
                .pending_output_after(after.as_ref(), REPLAY_STEP)?;
            for (store, key) in &keys {
                let Some(value) = self.store.get(*store, key)? else {
                    continue;
                };
                let mut ctx = ProcessorContext::new(
                    &mut self.store,
                    &mut self.collector,
                    self.task.partition,
                    offset,
                    None,
                );
                self.processor
                    .replay(*store, key, &value, &mut ctx)
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

    fn process(&mut self, records: &[InputRecord]) -> Result<()> {
        let mut processed = 0u64;
        let latency = self
            .metrics
            .end_to_end_latency
            .with_label_values(&[self.labels[0].as_str(), self.labels[1].as_str()])
            .local();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
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
            // What the record wrote goes to the changelog whatever it answered.
            ctx.send_changelog()?;
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
        let labels = [self.labels[0].as_str(), self.labels[1].as_str()];
        self.metrics
            .records_processed
            .with_label_values(&labels)
            .inc_by(processed);
        latency.flush();
        self.progress.set_next_offset(self.position.next());
        if let Some(lag) = self.progress.lag() {
            self.metrics
                .consumer_lag
                .with_label_values(&labels)
                .set(lag);
        }
        self.report_sent();
        if self.store.cache_over_budget() {
            // Over --cache-max-bytes: write this task's updates out now rather than at the
            // next commit (the group offset still waits for the commit; a restart resumes
            // from the store's own offset, which is never behind it).
            self.commit(WriteOut::CacheOverBudget)?;
            self.metrics
                .state_cache_flushes
                .with_label_values(&[self.labels[0].as_str(), self.labels[1].as_str()])
                .inc();
        }
        self.metrics
            .state_cache_bytes
            .set(self.store.memory().cache_bytes() as i64);
        Ok(())
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
                self.commit(WriteOut::Commit)?;
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

    fn commit(&mut self, trigger: WriteOut) -> Result<Option<i64>> {
        if self.phase != TaskPhase::Running {
            return Ok(None);
        }
        emit_cached_writes(
            self.task,
            &mut self.store,
            &mut self.collector,
            self.processor.as_mut(),
            trigger,
        )?;
        self.collector.flush(FLUSH_TIMEOUT)?;
        self.report_sent();
        for (index, next) in self.changelog_next.iter_mut().enumerate() {
            *next = self.collector.changelog_next(StoreId(index)).max(*next);
        }
        self.store.commit(&StoredOffsets {
            input_next: self.position.next(),
            changelog_next: self.changelog_next.clone(),
        })?;
        self.metrics
            .store_size
            .with_label_values(&[self.labels[0].as_str(), self.labels[1].as_str()])
            .set(self.store.approximate_size_bytes() as i64);
        self.metrics
            .rocksdb_memory_bytes
            .set(self.store.memory().rocksdb_bytes() as i64);
        Ok(self.position.next())
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
