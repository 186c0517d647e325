//! The consumer's polling loop, on its own thread (Kafka Streams' `StreamThread`): fetches
//! input and queues each partition's records for its task without waiting for them to be
//! processed (a partition whose task has too many queued is paused until it drains), commits
//! to the group the offsets tasks report from their own commits, and resumes partitions whose
//! tasks have restored. It never waits on a task's processing or restore, so it stays live.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use ractor::{ActorId, ActorRef};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::Offset;
use tokio::runtime::Handle;
use tracing::{debug, info, warn};

use crate::error::{EngineError, Result};
use crate::processor::InputRecord;
use crate::rebalance::RebalanceListener;
use crate::status::InstanceStatus;
use crate::supervisor::{ask, SupervisorMsg, SUPERVISOR_ASK_TIMEOUT};
use crate::task::TaskMsg;

/// Most records taken from the consumer per poll round.
const MAX_RECORDS_PER_ROUND: usize = 2_000;
/// Input records queued for one task before its partition is paused (resumed at half).
pub(crate) const MAX_QUEUED_PER_TASK: usize = 5_000;
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
const SEEK_TIMEOUT: Duration = Duration::from_secs(5);

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
pub enum PollerCommand {
    /// The task for this partition is running: fetch its input from this offset (or from
    /// the beginning when the task has never processed any) and queue it in this inbox.
    Resume(i32, Option<i64>, TaskInbox),
    /// The task for this partition stopped (failed, revoked): stop fetching its input.
    Pause(i32),
}

/// A running task's input as the loop tracks it.
struct Route {
    inbox: TaskInbox,
    /// Next input offset to hand the task (where a paused partition resumes).
    next_offset: Option<i64>,
    /// Paused because the task's queue is over its bound.
    full: bool,
}

pub struct Poller {
    pub(crate) consumer: BaseConsumer<RebalanceListener>,
    pub(crate) supervisor: ActorRef<SupervisorMsg>,
    pub(crate) runtime: Handle,
    pub(crate) commands: Receiver<PollerCommand>,
    pub(crate) committed: Receiver<TaskCommitted>,
    pub(crate) shutdown: Arc<AtomicBool>,
    pub(crate) commit_interval: Duration,
    pub(crate) status: Arc<InstanceStatus>,
    pub(crate) source_topic: String,
    /// Resumes whose seek failed: the partition stays paused and they are tried again.
    pub(crate) failed_resumes: Vec<(i32, Option<i64>)>,
    routes: HashMap<i32, Route>,
    /// Offsets tasks committed, not yet committed to the group.
    to_commit: BTreeMap<i32, i64>,
}

impl Poller {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        consumer: BaseConsumer<RebalanceListener>,
        supervisor: ActorRef<SupervisorMsg>,
        runtime: Handle,
        commands: Receiver<PollerCommand>,
        committed: Receiver<TaskCommitted>,
        shutdown: Arc<AtomicBool>,
        commit_interval: Duration,
        status: Arc<InstanceStatus>,
        source_topic: String,
    ) -> Self {
        Self {
            consumer,
            supervisor,
            runtime,
            commands,
            committed,
            shutdown,
            commit_interval,
            status,
            source_topic,
            failed_resumes: Vec::new(),
            routes: HashMap::new(),
            to_commit: BTreeMap::new(),
        }
    }

    /// Runs until `shutdown` is set, then commits, stops the tasks and leaves the group.
    pub fn run(mut self) -> Result<()> {
        let mut last_group_commit = Instant::now();
        let group_commit_every = (self.commit_interval / 2).max(Duration::from_millis(100));
        while !self.shutdown.load(Ordering::Relaxed) {
            self.status.heartbeat();
            self.apply_commands();
            let batches = self.poll_round()?;
            // A rebalance inside the poll may have stopped tasks: forget them before routing.
            self.apply_commands();
            self.dispatch(batches);
            self.resume_drained();
            self.collect_committed();
            if last_group_commit.elapsed() >= group_commit_every {
                self.commit_to_group(CommitMode::Async);
                last_group_commit = Instant::now();
            }
        }
        info!("shutting down: final commit");
        self.final_commit()?;
        self.runtime.block_on(ask(
            &self.supervisor,
            "supervisor",
            SUPERVISOR_ASK_TIMEOUT,
            SupervisorMsg::StopAll,
        ))?;
        self.consumer.unsubscribe();
        info!("left the group; all tasks closed");
        Ok(())
    }

    fn apply_commands(&mut self) {
        for (partition, next_offset) in std::mem::take(&mut self.failed_resumes) {
            if self.routes.contains_key(&partition) {
                self.resume(partition, next_offset);
            }
        }
        let commands: Vec<PollerCommand> = self.commands.try_iter().collect();
        for command in commands {
            match command {
                PollerCommand::Resume(partition, next_offset, inbox) => {
                    self.failed_resumes.retain(|(p, _)| *p != partition);
                    let route = Route {
                        inbox,
                        next_offset,
                        full: false,
                    };
                    self.routes.insert(partition, route);
                    self.resume(partition, next_offset);
                }
                PollerCommand::Pause(partition) => {
                    // A pending retry of a resume is void once the task pauses again.
                    self.failed_resumes.retain(|(p, _)| *p != partition);
                    self.routes.remove(&partition);
                    self.to_commit.remove(&partition);
                    self.pause(partition);
                }
            }
        }
    }

    /// Queues each partition's records for its task, without waiting for them to be
    /// processed; pauses a partition whose task has [`MAX_QUEUED_PER_TASK`] records queued.
    fn dispatch(&mut self, batches: BTreeMap<i32, Vec<InputRecord>>) {
        for (partition, records) in batches {
            let Some(route) = self.routes.get_mut(&partition) else {
                debug!(
                    partition,
                    "dropping {} records for a partition without a running task",
                    records.len()
                );
                continue;
            };
            let count = records.len();
            let next = records.last().map(|r| r.offset + 1);
            route.inbox.queued.fetch_add(count, Ordering::AcqRel);
            if route.inbox.actor.cast(TaskMsg::Process(records)).is_err() {
                // The task stopped; supervision restarts it and resumes the partition anew.
                debug!(
                    partition,
                    "task gone; its input waits for the next incarnation"
                );
                self.routes.remove(&partition);
                self.pause(partition);
                continue;
            }
            route.next_offset = next.max(route.next_offset);
            if !route.full && route.inbox.queued.load(Ordering::Acquire) >= MAX_QUEUED_PER_TASK {
                route.full = true;
                debug!(partition, "task queue full: pausing its input");
                self.pause(partition);
            }
        }
    }

    /// Resumes partitions paused for a full queue once their task has worked it down to half,
    /// from the next offset not yet handed to the task.
    fn resume_drained(&mut self) {
        let drained: Vec<(i32, Option<i64>)> = self
            .routes
            .iter_mut()
            .filter(|(_, r)| {
                r.full && r.inbox.queued.load(Ordering::Acquire) <= MAX_QUEUED_PER_TASK / 2
            })
            .map(|(p, r)| {
                r.full = false;
                (*p, r.next_offset)
            })
            .collect();
        for (partition, next_offset) in drained {
            debug!(partition, "task queue drained: resuming its input");
            self.resume(partition, next_offset);
        }
    }

    /// Takes the offsets tasks committed since the last look (only from the incarnation that
    /// runs the partition now).
    fn collect_committed(&mut self) {
        for committed in self.committed.try_iter() {
            let current = self
                .routes
                .get(&committed.partition)
                .is_some_and(|r| r.inbox.actor.get_id() == committed.actor);
            if current {
                let offset = self.to_commit.entry(committed.partition).or_insert(0);
                *offset = (*offset).max(committed.next_offset);
            }
        }
    }

    /// Commits the collected offsets of partitions still assigned to this member: without
    /// waiting for the answer on the interval (`Async`), waiting for it at shutdown (`Sync`).
    fn commit_to_group(&mut self, mode: CommitMode) {
        if self.to_commit.is_empty() {
            return;
        }
        let assigned = match self.consumer.assignment() {
            Ok(assigned) => assigned,
            Err(e) => return warn!("reading the assignment failed, committing later: {e}"),
        };
        let offsets: Vec<(i32, Option<i64>)> = std::mem::take(&mut self.to_commit)
            .into_iter()
            .filter(|(p, _)| assigned.find_partition(&self.source_topic, *p).is_some())
            .map(|(p, o)| (p, Some(o)))
            .collect();
        if offsets.is_empty() {
            return;
        }
        let tpl = self.consumer.context().partition_list(offsets);
        // State and offsets are already durable in each task's store, and a task skips input it
        // has applied, so a failed group commit only means re-reading some input later.
        if let Err(e) = self.consumer.commit(&tpl, mode) {
            warn!("committing offsets to the group failed (will retry next interval): {e}");
        }
    }

    fn pause(&self, partition: i32) {
        let tpl = self.consumer.context().partition_list([(partition, None)]);
        if let Err(e) = self.consumer.pause(&tpl) {
            debug!(partition, "pause skipped: {e}");
        }
    }

    /// Fetches the partition's input from the task's own position: it may be ahead of the
    /// group's committed offset (after a crash) or behind the fetch position (after a task
    /// restart dropped a batch). If the seek fails, the partition is paused again and the
    /// resume retried next round: fetching from anywhere else could skip records for good.
    fn resume(&mut self, partition: i32, next_offset: Option<i64>) {
        let context = self.consumer.context();
        let tpl = context.partition_list([(partition, None)]);
        if let Err(e) = self.consumer.resume(&tpl) {
            debug!(partition, "resume skipped: {e}");
            return;
        }
        let offset = next_offset.map_or(Offset::Beginning, Offset::Offset);
        match self
            .consumer
            .seek(&context.source_topic, partition, offset, SEEK_TIMEOUT)
        {
            Ok(()) => debug!(partition, "input resumed at {offset:?}"),
            Err(e) => {
                warn!(
                    partition,
                    "seeking input to {offset:?} failed, pausing and retrying: {e}"
                );
                self.pause(partition);
                self.failed_resumes.push((partition, next_offset));
            }
        }
    }

    /// Up to [`MAX_RECORDS_PER_ROUND`] records, by partition. A fatal consumer error (the
    /// consumer can do nothing more, e.g. a fenced static member) fails the instance.
    fn poll_round(&self) -> Result<BTreeMap<i32, Vec<InputRecord>>> {
        let mut batches: BTreeMap<i32, Vec<InputRecord>> = BTreeMap::new();
        let mut timeout = POLL_TIMEOUT;
        for _ in 0..MAX_RECORDS_PER_ROUND {
            match self.consumer.poll(timeout) {
                Some(Ok(message)) => {
                    batches
                        .entry(message.partition())
                        .or_default()
                        .push(InputRecord {
                            partition: message.partition(),
                            offset: message.offset(),
                            timestamp: message.timestamp().to_millis(),
                            key: message.key().map(<[u8]>::to_vec),
                            value: message.payload().map(<[u8]>::to_vec),
                        });
                    timeout = Duration::ZERO;
                }
                Some(Err(e)) => {
                    if let Some((code, reason)) = self.consumer.client().fatal_error() {
                        return Err(EngineError::ConsumerFatal {
                            reason: format!("{code:?}: {reason}"),
                        });
                    }
                    warn!("consumer: {e}");
                    break;
                }
                None => break,
            }
        }
        Ok(batches)
    }

    /// At shutdown: every running task commits now, and their offsets go to the group.
    fn final_commit(&mut self) -> Result<()> {
        let offsets = self.runtime.block_on(ask(
            &self.supervisor,
            "supervisor",
            SUPERVISOR_ASK_TIMEOUT,
            SupervisorMsg::CommitAll,
        ))??;
        self.collect_committed();
        for (partition, offset) in offsets {
            let entry = self.to_commit.entry(partition).or_insert(0);
            *entry = (*entry).max(offset);
        }
        self.commit_to_group(CommitMode::Sync);
        Ok(())
    }
}
