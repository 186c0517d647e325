//! The supervisor actor: owns the partition assignment, starts a task actor per assigned
//! partition (retrying one that cannot start), stops revoked ones after their commit (always,
//! even when it fails), tells the consumer loop where each running task's input goes, and
//! restarts failed tasks or reports the instance failed. With standby replicas it also looks
//! at the group's members and keeps the standbys placed here (see `standby`) in the state
//! updater, closing a standby before its partition's active task opens the store.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use futures::future::join_all;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{error, info, warn};

use crate::assignment::{AssignmentChange, AssignmentEvent};
use crate::config::StreamsConfig;
use crate::delivery::GroupMetadataCell;
use crate::dsl::Topology;
use crate::error::{EngineError, Result};
use crate::failpoints;
use crate::fence::Fence;
use crate::group_members::{GroupMember, GroupMembers};
use crate::metrics::EngineMetrics;
use crate::runtime::checkpoint::policy::{on_failure, CommitTrigger, FailureVerdict};
use crate::runtime::state_updater::StateUpdaterHandle;
use crate::runtime::task::{StreamTask, TaskArgs};
use crate::runtime::wiring::{
    ask, CommitOffsets, LoopCommand, SupervisorMsg, TaskCommitted, TaskInbox, TaskMsg,
    STORE_RELEASE_WAIT, TASK_COMMIT_TIMEOUT, TASK_STOP_TIMEOUT,
};
use crate::standby::{placement_names, standby_partitions, MEMBERSHIP_REFRESH};
use crate::state_directory::StateDirectory;
use crate::status::{unix_millis, AssignmentRecord, InstanceStatus, TaskPhase, TaskProgress};
use crate::store::TaskStore;
use crate::store_memory::StoreMemory;
use crate::task_id::TaskId;

/// How long an assigned partition whose task could not start waits before the next try
/// (e.g. for a stopping task of the same partition to release the RocksDB lock).
const START_RETRY_DELAY: Duration = Duration::from_secs(2);

pub struct SupervisorArgs {
    pub topology: Arc<Topology>,
    pub config: Arc<StreamsConfig>,
    pub metrics: EngineMetrics,
    pub state_directory: Arc<StateDirectory>,
    pub store_memory: Arc<StoreMemory>,
    pub poller: Sender<LoopCommand>,
    /// Where tasks report their interval commits (read by the consumer loop).
    pub committed: Sender<TaskCommitted>,
    pub updater: StateUpdaterHandle,
    pub fatal: UnboundedSender<EngineError>,
    pub status: Arc<InstanceStatus>,
    /// Task directories found on disk at start-up (candidates for cleanup until assigned).
    pub leftover_tasks: Vec<TaskId>,
    /// The consumer's group membership, for the tasks' exactly-once commits.
    pub group_metadata: GroupMetadataCell,
}

/// Whether stopping tasks waits until they have stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopWait {
    UntilStopped,
    No,
}

struct TaskEntry {
    task: TaskId,
    actor: ActorRef<TaskMsg>,
    /// The task's lifecycle, as the task moves it.
    progress: Arc<TaskProgress>,
    /// Input queued for the task (shared with the consumer loop and the task).
    queued: Arc<AtomicUsize>,
    /// Closed once the partition may be another member's (lost, or the task did not stop in
    /// time): the task then sends and writes nothing more.
    fence: Fence,
    assigned_at: Instant,
}

pub struct SupervisorState {
    args: SupervisorArgs,
    tasks: BTreeMap<i32, TaskEntry>,
    /// Assigned partitions whose task could not start yet (retried; paused meanwhile, and
    /// shown in `/status` as restoring, so readiness says so).
    awaiting_start: BTreeSet<i32>,
    /// Recent failures per task, to tell a one-off from a task that keeps failing.
    failures: HashMap<TaskId, VecDeque<Instant>>,
    /// Task directories on disk that this instance does not own, and since when.
    unowned_since: HashMap<TaskId, Instant>,
    /// Reads the group's members for standby placement (none without standbys).
    group_members: Option<Arc<GroupMembers>>,
    /// Whether a look at the group's members is under way.
    looking: bool,
    /// Set once every task was stopped for shutdown: no standby opens after that.
    stopped: bool,
}

pub struct Supervisor;

/// Stops a task's actor and waits up to `deadline` for it; a task that outlives it (busy in a
/// commit on a slow broker) is fenced, since its partition is about to be another member's:
/// from then it sends and writes nothing more (G3 of the 2026-12-04 correctness review: an
/// orphan was forgotten but kept sending and writing its store). Returns whether it stopped.
async fn stop_or_fence(
    task: TaskId,
    actor: &ActorRef<TaskMsg>,
    fence: &Fence,
    deadline: Duration,
) -> bool {
    match actor.stop_and_wait(None, Some(deadline)).await {
        Ok(()) => true,
        Err(e) => {
            fence.close();
            error!(%task, "task did not stop within {deadline:?} ({e}): fenced, its producer purged; it sends and writes nothing more");
            false
        }
    }
}

fn task_names(partitions: &[i32]) -> Vec<String> {
    partitions
        .iter()
        .map(|p| TaskId::new(0, *p).to_string())
        .collect()
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let period = (args.config.state_cleanup_delay / 2)
            .clamp(Duration::from_millis(100), Duration::from_secs(30));
        myself.send_interval(period, || SupervisorMsg::CleanStateDirs);
        let now = Instant::now();
        let unowned_since = args.leftover_tasks.iter().map(|t| (*t, now)).collect();
        let group_members = match args.config.num_standby_replicas {
            0 => None,
            _ => {
                myself.send_interval(MEMBERSHIP_REFRESH, || SupervisorMsg::LookAtGroup);
                Some(Arc::new(GroupMembers::new(&args.config)?))
            }
        };
        Ok(SupervisorState {
            args,
            tasks: BTreeMap::new(),
            awaiting_start: BTreeSet::new(),
            failures: HashMap::new(),
            unowned_since,
            group_members,
            looking: false,
            stopped: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Rebalance(event, reply) => {
                let result = state.rebalance(&myself, event).await;
                let _ = reply.send(result);
                state.look_at_group(&myself);
            }
            SupervisorMsg::LookAtGroup => state.look_at_group(&myself),
            SupervisorMsg::GroupMembers(members) => {
                state.looking = false;
                state.place_standbys(&members);
            }
            SupervisorMsg::CommitAll(reply) => {
                let partitions: Vec<i32> = state.tasks.keys().copied().collect();
                let (offsets, failed) = state.commit(&partitions).await;
                // At shutdown a failed commit is the instance's error (see `policy`).
                let mut stop_with = None;
                for (partition, error) in failed {
                    let task = Some(TaskId::new(0, partition));
                    let verdict =
                        on_failure(&state.args.metrics, CommitTrigger::Shutdown, task, &error);
                    if verdict == FailureVerdict::StopInstance && stop_with.is_none() {
                        stop_with = Some(error);
                    }
                }
                let result = match stop_with {
                    None => Ok(offsets),
                    Some(error) => Err(error),
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::CleanStateDirs => state.clean_state_dirs(),
            SupervisorMsg::RetryStart(partition) => {
                if state.awaiting_start.remove(&partition) {
                    state.start_or_retry(&myself, partition).await;
                }
            }
            SupervisorMsg::TaskRunning(task, actor, next_offset) => {
                // Only from the incarnation that owns the partition now (a stopping earlier one
                // may still report).
                if let Some(entry) = state
                    .tasks
                    .get_mut(&task.partition)
                    .filter(|e| e.task == task && e.actor.get_id() == actor)
                {
                    state
                        .args
                        .metrics
                        .rebalance_paused
                        .inc_by(entry.assigned_at.elapsed().as_secs_f64());
                    let inbox = TaskInbox {
                        actor: entry.actor.clone(),
                        queued: entry.queued.clone(),
                    };
                    let _ = state.args.poller.send(LoopCommand::Resume(
                        task.partition,
                        next_offset,
                        inbox,
                    ));
                }
            }
            SupervisorMsg::StopAll(reply) => {
                let partitions: Vec<i32> = state.tasks.keys().copied().collect();
                state.stop(&partitions, StopWait::UntilStopped).await;
                state.stopped = true;
                for task in state.args.status.standby_tasks() {
                    state.close_standby(task);
                }
                info!(
                    "shutdown: stopped tasks [{}]",
                    task_names(&partitions).join(", ")
                );
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, reason) = event {
            let failed = state
                .tasks
                .iter()
                .find(|(_, e)| e.actor.get_id() == cell.get_id())
                .map(|(p, e)| (*p, e.task));
            if let Some((partition, task)) = failed {
                state.tasks.remove(&partition);
                // A task that failed while restoring may have left its store with the updater.
                let updater = state.args.updater.clone();
                if let Err(e) =
                    tokio::task::block_in_place(|| updater.remove(task, STORE_RELEASE_WAIT))
                {
                    warn!(%task, "{e}");
                }
                state.args.status.remove_task(task);
                state.args.metrics.forget_task(task);
                let _ = state.args.poller.send(LoopCommand::Pause(partition));
                state.restart_or_give_up(&myself, task, &reason).await;
            }
        }
        Ok(())
    }
}

impl SupervisorState {
    /// The partitions assigned here: running tasks, and those whose task is yet to start.
    fn owned_partitions(&self) -> BTreeSet<i32> {
        let assigned = self.tasks.keys().chain(&self.awaiting_start);
        assigned.copied().collect()
    }

    async fn rebalance(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        event: AssignmentEvent,
    ) -> Result<CommitOffsets> {
        let owned = self.owned_partitions();
        let change = AssignmentChange::plan(&owned, &event);
        let metrics = self.args.metrics.clone();
        metrics.rebalances.inc();
        let generation = self.args.status.generation();
        let started = Instant::now();
        let mut offsets = Vec::new();
        let (added, revoked, lost) = match &event {
            AssignmentEvent::Assigned(_) => {
                for &partition in &change.start {
                    self.start_or_retry(myself, partition).await;
                }
                metrics.tasks_assigned.inc_by(change.start.len() as u64);
                (change.start.as_slice(), &[][..], &[][..])
            }
            AssignmentEvent::Revoked(_) => {
                // Commit before handing over, so the next owner restores only what we wrote.
                // The tasks stop whatever the commit did: the partitions are no longer ours.
                // A task whose commit failed drops its uncommitted state; the next owner
                // re-reads that input from the last commit.
                let (committed, failed) = if failpoints::fires(failpoints::REVOCATION_COMMIT_FAILS)
                {
                    let injected = |p: &i32| {
                        let task = TaskId::new(0, *p);
                        let reason = "commit failed (failpoint)".to_string();
                        (*p, EngineError::TaskFailed { task, reason })
                    };
                    (Vec::new(), change.stop.iter().map(injected).collect())
                } else {
                    self.commit(&change.stop).await
                };
                // The verdict for a revocation is to stop the task anyway (see `policy`).
                for (partition, error) in &failed {
                    let task = Some(TaskId::new(0, *partition));
                    on_failure(&metrics, CommitTrigger::Revocation, task, error);
                }
                offsets = committed;
                self.stop(&change.stop, StopWait::UntilStopped).await;
                metrics.tasks_revoked.inc_by(change.stop.len() as u64);
                metrics
                    .rebalance_paused
                    .inc_by(started.elapsed().as_secs_f64() * change.stop.len() as f64);
                (&[][..], change.stop.as_slice(), &[][..])
            }
            AssignmentEvent::Lost(_) => {
                // Another member may own these already: drop uncommitted state, commit nothing,
                // and do not hold the rebalance callback (and with it the rejoin) for a task
                // busy with a flush on a slow broker; its store's lock is waited for by
                // whichever task of the partition starts here next.
                self.stop(&change.stop, StopWait::No).await;
                metrics.tasks_lost.inc_by(change.stop.len() as u64);
                (&[][..], &[][..], change.stop.as_slice())
            }
        };
        let record = AssignmentRecord {
            at_unix_ms: unix_millis(),
            generation,
            added: task_names(added),
            revoked: task_names(revoked),
            lost: task_names(lost),
            owning: task_names(&self.tasks.keys().copied().collect::<Vec<_>>()),
            took_ms: started.elapsed().as_millis() as u64,
        };
        metrics
            .rebalance_duration
            .observe(started.elapsed().as_secs_f64());
        info!(
            "assignment change (generation {generation}): added [{}] revoked [{}] lost [{}] -> owning [{}] ({} ms)",
            record.added.join(", "),
            record.revoked.join(", "),
            record.lost.join(", "),
            record.owning.join(", "),
            record.took_ms
        );
        self.args.status.record_assignment(record);
        Ok(offsets)
    }

    /// Starts the partition's task; if it cannot start, counts the failure against the task's
    /// budget and tries again after [`START_RETRY_DELAY`] (the instance stops once the budget is
    /// spent). The partition stays paused, and shown as not ready, until its task runs.
    async fn start_or_retry(&mut self, myself: &ActorRef<SupervisorMsg>, partition: i32) {
        let Err(error) = self.start_task(myself, partition).await else {
            return;
        };
        let task = TaskId::new(0, partition);
        if self.budget_spent(task, &error.to_string()) {
            return;
        }
        warn!(%task, "task could not start, trying again in {START_RETRY_DELAY:?}: {error}");
        self.awaiting_start.insert(partition);
        myself.send_after(START_RETRY_DELAY, move || {
            SupervisorMsg::RetryStart(partition)
        });
    }

    async fn start_task(&mut self, myself: &ActorRef<SupervisorMsg>, partition: i32) -> Result<()> {
        let task = TaskId::new(0, partition);
        if self.args.status.standby_tasks().contains(&task) {
            // Promotion: the standby's store, closed with its safe position, is opened by the
            // task, which restores only the changelog's tail from there.
            info!(%task, "promoting the standby replica held here: the task restores only the changelog's tail");
            self.close_standby(task);
        }
        self.unowned_since.remove(&task);
        self.args.metrics.start_task(task);
        let progress = self.args.status.add_task(task);
        let queued = Arc::new(AtomicUsize::new(0));
        let fence = Fence::default();
        let args = TaskArgs {
            task,
            topology: self.args.topology.clone(),
            config: self.args.config.clone(),
            metrics: self.args.metrics.clone(),
            task_dir: self.args.state_directory.task_dir(task),
            store_memory: self.args.store_memory.clone(),
            supervisor: myself.clone(),
            progress: progress.clone(),
            updater: self.args.updater.clone(),
            committed: self.args.committed.clone(),
            queued: queued.clone(),
            fence: fence.clone(),
            group_metadata: self.args.group_metadata.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, StreamTask, args, myself.get_cell())
            .await
            .map_err(|e| EngineError::TaskFailed {
                task,
                reason: format!("could not start: {e}"),
            })?;
        self.tasks.insert(
            partition,
            TaskEntry {
                task,
                actor,
                progress,
                queued,
                fence,
                assigned_at: Instant::now(),
            },
        );
        Ok(())
    }

    /// Commits each task of `partitions`: the input offsets to commit to the group, and the
    /// tasks whose commit failed.
    async fn commit(&mut self, partitions: &[i32]) -> (CommitOffsets, Vec<(i32, EngineError)>) {
        // Only running tasks have anything to commit (a restoring one's store is with the
        // state updater, which writes its progress as it goes).
        let asks = partitions.iter().filter_map(|p| {
            let entry = self
                .tasks
                .get(p)
                .filter(|e| e.progress.phase() == TaskPhase::Running)?;
            Some(async move {
                let asked = ask(&entry.actor, "task", TASK_COMMIT_TIMEOUT, TaskMsg::Commit);
                (*p, asked.await)
            })
        });
        let mut offsets = Vec::new();
        let mut failed = Vec::new();
        for (partition, result) in join_all(asks).await {
            match result {
                Ok(Ok(Some(offset))) => offsets.push((partition, offset)),
                Ok(Ok(None)) => {}
                Ok(Err(error)) => failed.push((partition, error)),
                // The task stopped between the ask and its answer (it failed and supervision
                // restarts it from its last commit): nothing of it to commit this round.
                Err(error) => warn!(partition, "task did not answer the commit: {error}"),
            }
        }
        // Commits and their failures are counted by the checkpoint, once each.
        (offsets, failed)
    }

    async fn stop(&mut self, partitions: &[i32], wait: StopWait) {
        for &partition in partitions {
            let task = TaskId::new(0, partition);
            self.awaiting_start.remove(&partition);
            self.args.status.remove_task(task);
            self.args.metrics.forget_task(task);
            self.unowned_since.insert(task, Instant::now());
            let _ = self.args.poller.send(LoopCommand::Pause(partition));
        }
        let stopping: Vec<TaskEntry> = partitions
            .iter()
            .filter_map(|p| self.tasks.remove(p))
            .collect();
        if wait == StopWait::No {
            // Lost: another member may own these already. A task busy in a handler stops only
            // after it: fenced first, it sends and writes nothing more meanwhile.
            for entry in stopping {
                entry.fence.close();
                entry.actor.stop(None);
            }
            return;
        }
        let stops = stopping.into_iter().map(|entry| async move {
            stop_or_fence(entry.task, &entry.actor, &entry.fence, TASK_STOP_TIMEOUT).await
        });
        join_all(stops).await;
    }

    /// Restarts a failed task from its last committed state, unless a restart cannot help
    /// ([`EngineError::stops_the_instance`]) or it failed too often within the window: then
    /// the instance stops with the cause. A task fenced by a newer owner starts again later.
    async fn restart_or_give_up(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        task: TaskId,
        failure: &ActorProcessingErr,
    ) {
        let reason = failure.to_string();
        match after_failure(failure.downcast_ref::<EngineError>()) {
            AfterFailure::StopInstance => {
                error!(%task, "not restarting the task: {reason}");
                let _ = self
                    .args
                    .fatal
                    .send(EngineError::TaskFailed { task, reason });
            }
            AfterFailure::StartAfterSessionTimeout => {
                let delay = self.args.config.session_timeout;
                warn!(%task, "task fenced by a newer owner; starting it again in {delay:?} if its partition is still assigned here: {reason}");
                self.awaiting_start.insert(task.partition);
                let partition = task.partition;
                myself.send_after(delay, move || SupervisorMsg::RetryStart(partition));
            }
            AfterFailure::Restart => {
                if self.budget_spent(task, &reason) {
                    return;
                }
                self.args.metrics.task_restarts.inc();
                self.start_or_retry(myself, task.partition).await;
            }
        }
    }

    /// Counts a failure of `task`; once it failed too often within the window, reports the
    /// instance failed (it stops with the cause) and answers true.
    fn budget_spent(&mut self, task: TaskId, reason: &str) -> bool {
        let config = &self.args.config;
        let now = Instant::now();
        let failures = self.failures.entry(task).or_default();
        failures.push_back(now);
        while failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > config.task_failure_window)
        {
            failures.pop_front();
        }
        let count = failures.len();
        if count >= config.task_failure_limit {
            error!(%task, "task failed {count} times within {:?}, giving up: {reason}", config.task_failure_window);
            let _ = self.args.fatal.send(EngineError::TaskFailed {
                task,
                reason: format!(
                    "failed {count} times within {:?}; last: {reason}",
                    config.task_failure_window
                ),
            });
            return true;
        }
        warn!(%task, "task failed ({count} of {} allowed within {:?}), restarting it from its last commit: {reason}",
            config.task_failure_limit, config.task_failure_window);
        false
    }

    /// Asks the broker for the group's members off the actor (the answer comes back as
    /// [`SupervisorMsg::GroupMembers`] once the group is stable); one look at a time.
    fn look_at_group(&mut self, myself: &ActorRef<SupervisorMsg>) {
        let Some(group_members) = self.group_members.clone() else {
            return;
        };
        if self.looking {
            return;
        }
        self.looking = true;
        let myself = myself.clone();
        tokio::task::spawn_blocking(move || {
            let members = match group_members.stable_members() {
                Ok(Some(members)) => members,
                Ok(None) => Vec::new(),
                Err(e) => {
                    warn!("standby placement: {e}; looking again in {MEMBERSHIP_REFRESH:?}");
                    Vec::new()
                }
            };
            let _ = myself.send_message(SupervisorMsg::GroupMembers(members));
        });
    }

    /// Opens the standbys placed here and closes those no longer placed here (or active).
    fn place_standbys(&mut self, members: &[GroupMember]) {
        let me = self.args.status.member_id();
        let names = placement_names(members);
        let mine = members.iter().position(|m| m.id == me);
        let (Some(mine), false) = (mine, self.stopped) else {
            return; // rebalancing, or not yet seen as a member: keep what is held
        };
        let active = self.owned_partitions();
        let config = &self.args.config;
        let wanted: BTreeSet<TaskId> = standby_partitions(
            &names[mine],
            &names,
            config.source_partitions,
            config.num_standby_replicas,
            &active,
        )
        .into_iter()
        .map(|p| TaskId::new(0, p))
        .collect();
        let held = self.args.status.standby_tasks();
        for task in held.difference(&wanted) {
            self.close_standby(*task);
        }
        for task in wanted.difference(&held) {
            if let Err(e) = self.open_standby(*task) {
                warn!(%task, "standby could not start, trying again at the next look: {e}");
            }
        }
    }

    fn open_standby(&mut self, task: TaskId) -> Result<()> {
        let dir = self.args.state_directory.task_dir(task);
        let args = &self.args;
        let (store, wiped) = tokio::task::block_in_place(|| {
            TaskStore::open_or_wipe(
                task,
                &dir,
                args.topology.stores(),
                &args.store_memory,
                Duration::from_millis(100),
            )
        })?;
        if let Some(reason) = wiped {
            args.metrics.state_wipes.with_label_values(&[reason]).inc();
        }
        let lag = args.status.add_standby(task);
        lag.store.set(store.reader());
        args.metrics.start_standby(task);
        self.unowned_since.remove(&task);
        info!(%task, "keeping a standby replica of the task");
        args.updater.add_standby(task, store, lag)
    }

    /// Takes a standby out of the state updater, its store closed with its position written.
    fn close_standby(&mut self, task: TaskId) {
        if !self.args.status.remove_standby(task) {
            return;
        }
        self.args.metrics.forget_standby(task);
        let updater = self.args.updater.clone();
        if let Err(e) = tokio::task::block_in_place(|| updater.remove(task, STORE_RELEASE_WAIT)) {
            warn!(%task, "closing its standby: {e}");
        }
        self.unowned_since.insert(task, Instant::now());
    }

    /// Deletes the directories of tasks this instance has not owned for the cleanup delay
    /// (a standby's is held, not unowned).
    fn clean_state_dirs(&mut self) {
        let delay = self.args.config.state_cleanup_delay;
        let standbys = self.args.status.standby_tasks();
        let due: Vec<TaskId> = self
            .unowned_since
            .iter()
            .filter(|(task, _)| !standbys.contains(task))
            .filter(|(_, since)| since.elapsed() >= delay)
            .map(|(task, _)| *task)
            .collect();
        for task in due {
            self.unowned_since.remove(&task);
            let dir = self.args.state_directory.task_dir(task);
            if !dir.exists() {
                continue;
            }
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {
                    info!(%task, "removed state dir {} (not owned for {delay:?})", dir.display());
                    self.args.metrics.state_dirs_removed.inc();
                }
                Err(e) => warn!(%task, "could not remove state dir {}: {e}", dir.display()),
            }
        }
    }
}

/// What becomes of a task that failed with `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterFailure {
    /// A restart would meet the same condition (a topic's lost history): the instance stops.
    StopInstance,
    /// Exactly-once: a newer owner of the task registered its transactional id, so the
    /// partition is most likely another member's by now, and starting again at once would
    /// fence that owner in turn. Not the task's fault: not counted against its restart budget.
    /// Once the group has had a session timeout to move the partition, the task starts again
    /// if it is still assigned here.
    StartAfterSessionTimeout,
    /// Restarted from its last commit, within its restart budget.
    Restart,
}

fn after_failure(error: Option<&EngineError>) -> AfterFailure {
    match error {
        Some(e) if e.stops_the_instance() => AfterFailure::StopInstance,
        Some(EngineError::ProducerFenced { .. }) => AfterFailure::StartAfterSessionTimeout,
        _ => AfterFailure::Restart,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::sync::Mutex;

    use super::*;

    /// A task actor busy in a handler until released, as a task blocked in a commit's flush
    /// on a slow broker (a task's commit blocks its thread; it does not yield to a stop).
    struct BusyTask;

    impl Actor for BusyTask {
        type Msg = TaskMsg;
        /// Told when the handler starts; waited on until released.
        type State = (mpsc::Sender<()>, Mutex<mpsc::Receiver<()>>);
        type Arguments = (mpsc::Sender<()>, mpsc::Receiver<()>);

        async fn pre_start(
            &self,
            _: ActorRef<TaskMsg>,
            (started, release): Self::Arguments,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok((started, Mutex::new(release)))
        }

        async fn handle(
            &self,
            _: ActorRef<TaskMsg>,
            _: TaskMsg,
            (started, release): &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            let _ = started.send(());
            let release = release.get_mut().unwrap();
            let _ = tokio::task::block_in_place(|| release.recv());
            Ok(())
        }
    }

    #[test]
    fn a_fenced_task_starts_later_a_lost_history_stops_the_instance_the_rest_restart() {
        let task = TaskId::new(0, 2);
        let fenced = EngineError::ProducerFenced {
            task,
            transactional_id: "app-0_2".into(),
            reason: "fenced".into(),
        };
        assert_eq!(
            after_failure(Some(&fenced)),
            AfterFailure::StartAfterSessionTimeout
        );
        let lost = EngineError::HistoryLost {
            task,
            topic: "app-store-changelog".into(),
            detail: "ends below".into(),
        };
        assert_eq!(after_failure(Some(&lost)), AfterFailure::StopInstance);
        let aborted = EngineError::TransactionAborted {
            task,
            step: "commit",
            reason: "timed out".into(),
        };
        assert_eq!(after_failure(Some(&aborted)), AfterFailure::Restart);
        assert_eq!(after_failure(None), AfterFailure::Restart);
    }

    /// G3: the orphan is fenced once its deadline passes, while it is still busy; a task that
    /// stops in time keeps its fence open.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_task_that_outlives_its_stop_deadline_is_fenced_and_one_that_stops_is_not() {
        let task = TaskId::new(0, 0);
        let (release, released) = mpsc::channel();
        let (tell_started, started) = mpsc::channel();
        let (busy, handle) = Actor::spawn(None, BusyTask, (tell_started, released))
            .await
            .unwrap();
        busy.cast(TaskMsg::Process(Vec::new())).unwrap();
        started
            .recv_timeout(Duration::from_secs(10))
            .expect("the handler starts");
        let fence = Fence::default();
        let stopped = stop_or_fence(task, &busy, &fence, Duration::from_millis(200)).await;
        assert!(!stopped, "still busy in its handler");
        assert!(
            fence.is_closed(),
            "fenced at its deadline, before it is done"
        );
        release.send(()).unwrap();
        handle.await.unwrap();

        let (_never, idle_release) = mpsc::channel();
        let (tell, _) = mpsc::channel();
        let (idle, _) = Actor::spawn(None, BusyTask, (tell, idle_release))
            .await
            .unwrap();
        let open = Fence::default();
        assert!(stop_or_fence(task, &idle, &open, Duration::from_secs(30)).await);
        assert!(!open.is_closed());
    }
}
