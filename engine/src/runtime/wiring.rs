//! The runtime's wiring, at its bottom: every message its workers send one another (the
//! consumer loop, the supervisor, the tasks, the state updater), the hand-over types, `ask`
//! and the bound of every wait between them. Everything else in `runtime` imports from here;
//! nothing here imports from the rest of `runtime` but the restore's outcome.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorId, ActorRef, RpcReplyPort};

use crate::assignment::AssignmentEvent;
use crate::error::{EngineError, Result};
use crate::group_members::GroupMember;
use crate::processor::InputRecord;
use crate::runtime::restore::RestoreOutcome;
use crate::status::TaskProgress;
use crate::store::TaskStore;
use crate::task_id::TaskId;

/// How long a task may take to stop once asked.
pub(crate) const TASK_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a task's commit may take when asked (its flush waits up to a minute).
pub(crate) const TASK_COMMIT_TIMEOUT: Duration = Duration::from_secs(75);
/// How long the consumer loop and the rebalance callback wait for the supervisor (a
/// revocation commits and then stops tasks).
pub(crate) const SUPERVISOR_ASK_TIMEOUT: Duration = Duration::from_secs(150);
/// How long the state updater may take to close a store taken out of it (a stopping or failed
/// task's).
pub(crate) const STORE_RELEASE_WAIT: Duration = Duration::from_secs(30);

/// Asks an actor and waits, at most `timeout`, for its answer, turning messaging failures
/// into engine errors.
pub(crate) async fn ask<M, T>(
    actor: &ActorRef<M>,
    name: &'static str,
    timeout: Duration,
    build: impl FnOnce(RpcReplyPort<T>) -> M,
) -> Result<T>
where
    M: ractor::Message,
    T: Send + 'static,
{
    match actor.call(build, Some(timeout)).await {
        Ok(ractor::rpc::CallResult::Success(value)) => Ok(value),
        Ok(ractor::rpc::CallResult::Timeout) => Err(EngineError::actor(name, "timed out")),
        Ok(ractor::rpc::CallResult::SenderError) => {
            Err(EngineError::actor(name, "stopped without answering"))
        }
        Err(error) => Err(EngineError::actor(name, error)),
    }
}

/// Input offsets to commit to the group, per partition.
pub type CommitOffsets = Vec<(i32, i64)>;

pub enum SupervisorMsg {
    /// An assignment change from the rebalance callback; answered once tasks are started/stopped.
    Rebalance(AssignmentEvent, RpcReplyPort<Result<CommitOffsets>>),
    /// Commit every running task now (at shutdown); answered with the offsets to commit to
    /// the group.
    CommitAll(RpcReplyPort<Result<CommitOffsets>>),
    /// A task (this actor) finished restoring; its input resumes at this offset.
    TaskRunning(TaskId, ActorId, Option<i64>),
    /// Try again to start the task of an assigned partition whose start failed.
    RetryStart(i32),
    /// Time to delete task directories not owned for longer than the cleanup delay.
    CleanStateDirs,
    /// Stop every task without committing (after a final CommitAll on shutdown).
    StopAll(RpcReplyPort<()>),
    /// Time to look at the group's members again (standby placement).
    LookAtGroup,
    /// The group's members, as the broker lists them once the group is stable.
    GroupMembers(Vec<GroupMember>),
}

pub enum TaskMsg {
    /// The stores are restored (handed back by the state updater, passed on by the consumer
    /// loop): run.
    Restored(Box<RestoredStore>),
    /// The restore failed (handed back the same way): the task fails and is restarted.
    RestoreFailed(EngineError),
    /// Process these records (in offset order); queued by the consumer loop, not answered.
    Process(Vec<InputRecord>),
    /// Commit now and answer the input offset to commit to the group (revocation, shutdown).
    Commit(RpcReplyPort<Result<Option<i64>>>),
    /// The task's commit interval passed: start a write-out (its offset goes to the consumer
    /// loop once it is in RocksDB).
    CommitTick,
    /// From the producer's thread: a write-out's records are all answered (or one was
    /// refused): write what is acknowledged to RocksDB.
    WriteOutAnswered,
    /// Time to check the record cache against its share of the budget.
    CacheCheck,
}

/// Where the consumer loop queues a running task's input.
#[derive(Debug, Clone)]
pub struct TaskInbox {
    pub actor: ActorRef<TaskMsg>,
    /// Records queued and not yet processed (the task counts them down).
    pub queued: Arc<AtomicUsize>,
}

/// A task's interval commit, reported for the group.
#[derive(Debug, Clone)]
pub struct TaskCommitted {
    pub partition: i32,
    /// The task incarnation that committed (a stopped one's report is void).
    pub actor: ActorId,
    pub next_offset: i64,
}

/// Requests from the supervisor to the consumer's polling loop.
#[derive(Debug, Clone)]
pub enum LoopCommand {
    /// The task for this partition is running: fetch its input from this offset (or from
    /// the beginning when the task has never processed any) and queue it in this inbox.
    Resume(i32, Option<i64>, TaskInbox),
    /// The task for this partition stopped (failed, revoked): stop fetching its input.
    Pause(i32),
}

/// A task's store to restore, and where to send it back.
pub struct RestoringTask {
    pub task: TaskId,
    pub store: TaskStore,
    pub progress: Arc<TaskProgress>,
    pub owner: ActorRef<TaskMsg>,
}

/// A restored store, handed back to its task.
pub struct RestoredStore {
    pub store: TaskStore,
    pub outcome: RestoreOutcome,
}

/// What the state updater hands back, through a channel the consumer loop drains (as Kafka
/// Streams' `StreamThread` drains `DefaultStateUpdater`): the loop passes it to the task, so
/// the updater never calls a task.
pub enum RestoreEvent {
    /// The task's stores caught up with their changelogs: it may run.
    Restored(ActorRef<TaskMsg>, Box<RestoredStore>),
    /// The task's restore failed (the task fails, and is restarted).
    Failed(ActorRef<TaskMsg>, EngineError),
}
