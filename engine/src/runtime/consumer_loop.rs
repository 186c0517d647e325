//! The consumer's polling loop, on its own thread (Kafka Streams' `StreamThread`): fetches
//! input and queues each partition's records for its task without waiting for them to be
//! processed (a partition whose task has too many queued is paused until it drains), commits
//! to the group the offsets tasks report from their own commits, and resumes partitions whose
//! tasks have restored. It never waits on a task's processing or restore, so it stays live.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use ractor::ActorRef;
use rdkafka::consumer::CommitMode;
use tokio::runtime::Handle;
use tracing::{debug, info, warn};

use crate::error::{EngineError, Result};
use crate::metrics::EngineMetrics;
use crate::processor::InputRecord;
use crate::runtime::checkpoint::group;
use crate::runtime::consumer_port::InputConsumer;
use crate::runtime::wiring::{
    ask, LoopCommand, RestoreEvent, SupervisorMsg, TaskCommitted, TaskInbox, TaskMsg,
    SUPERVISOR_ASK_TIMEOUT,
};
use crate::status::InstanceStatus;

/// Most records taken from the consumer per poll round.
const MAX_RECORDS_PER_ROUND: usize = 2_000;
/// Input records queued for one task before its partition is paused (resumed at half).
pub(crate) const MAX_QUEUED_PER_TASK: usize = 5_000;
/// The longest a turn waits for input: what the supervisor asked and what the state updater
/// handed back wait for the next turn, so a restored task's start waited up to this long (it
/// was 100 ms, a sixth of an instance's start-up). An idle instance turns 50 times a second.
const POLL_TIMEOUT: Duration = Duration::from_millis(20);
const SEEK_TIMEOUT: Duration = Duration::from_secs(5);
/// A partition whose seek keeps failing is warned about at most this often (it is retried
/// every round).
const SEEK_FAILURE_WARN_EVERY: Duration = Duration::from_secs(30);

/// A partition's seeks that failed since its last good one.
struct SeekFailures {
    tries: u64,
    since: Instant,
    last_warned: Instant,
}

/// A running task's input as the loop tracks it.
struct Route {
    inbox: TaskInbox,
    /// Next input offset to hand the task (where a paused partition resumes).
    next_offset: Option<i64>,
    /// Paused because the task's queue is over its bound.
    full: bool,
}

/// What the loop is connected to, beside its consumer.
pub(crate) struct LoopWiring {
    pub supervisor: ActorRef<SupervisorMsg>,
    pub runtime: Handle,
    pub commands: Receiver<LoopCommand>,
    pub committed: Receiver<TaskCommitted>,
    /// Tasks the state updater is done with, to pass to them.
    pub restored: Receiver<RestoreEvent>,
    pub shutdown: Arc<AtomicBool>,
    pub commit_interval: Duration,
    pub status: Arc<InstanceStatus>,
    pub metrics: EngineMetrics,
}

pub(crate) struct ConsumerLoop<C: InputConsumer> {
    consumer: C,
    wiring: LoopWiring,
    /// Resumes whose seek failed: the partition stays paused and they are tried again.
    failed_resumes: Vec<(i32, Option<i64>)>,
    /// Per partition, the seeks that failed in a row (logged once, then every
    /// [`SEEK_FAILURE_WARN_EVERY`]).
    seek_failures: HashMap<i32, SeekFailures>,
    routes: HashMap<i32, Route>,
    /// Offsets tasks committed, not yet committed to the group.
    to_commit: BTreeMap<i32, i64>,
}

impl<C: InputConsumer> ConsumerLoop<C> {
    pub(crate) fn new(consumer: C, wiring: LoopWiring) -> Self {
        Self {
            consumer,
            wiring,
            failed_resumes: Vec::new(),
            seek_failures: HashMap::new(),
            routes: HashMap::new(),
            to_commit: BTreeMap::new(),
        }
    }

    /// Runs until `shutdown` is set, then commits, stops the tasks and leaves the group.
    pub fn run(mut self) -> Result<()> {
        let mut last_group_commit = Instant::now();
        let group_commit_every = (self.wiring.commit_interval / 2).max(Duration::from_millis(100));
        while !self.wiring.shutdown.load(Ordering::Relaxed) {
            self.wiring.status.heartbeat();
            self.turn()?;
            if last_group_commit.elapsed() >= group_commit_every {
                self.commit_to_group(CommitMode::Async);
                last_group_commit = Instant::now();
            }
        }
        info!("shutting down: final commit");
        self.final_commit()?;
        self.wiring.runtime.block_on(ask(
            &self.wiring.supervisor,
            "supervisor",
            SUPERVISOR_ASK_TIMEOUT,
            SupervisorMsg::StopAll,
        ))?;
        self.consumer.unsubscribe();
        info!("left the group; all tasks closed");
        Ok(())
    }

    /// One turn of routing: the supervisor's commands, restored tasks passed on, a poll round
    /// routed to the tasks, drained partitions resumed, committed offsets collected.
    fn turn(&mut self) -> Result<()> {
        self.apply_commands();
        self.pass_on_restored();
        let batches = self.poll_round()?;
        self.dispatch_polled(batches);
        self.resume_drained();
        self.collect_committed();
        Ok(())
    }

    /// Routes a poll round's records. A rebalance inside the poll, or a task that failed
    /// meanwhile, may have stopped or restarted tasks: their commands are applied first, and
    /// what was polled for the partitions they touched is dropped.
    fn dispatch_polled(&mut self, mut batches: BTreeMap<i32, Vec<InputRecord>>) {
        let moved = self.apply_commands();
        batches.retain(|partition, _| !moved.contains(partition));
        self.dispatch(batches);
    }

    /// Applies the supervisor's pauses and resumes (and retries failed resumes). Returns the
    /// partitions they touched: records polled for those before now belong to an incarnation
    /// that stopped, or lie ahead of where a new one resumes (G6 of the 2026-12-04
    /// correctness review: handed to it, they would jump its position past the gap, whose
    /// re-fetch it would then drop as already applied). The resume's seek fetches them again.
    fn apply_commands(&mut self) -> BTreeSet<i32> {
        let mut touched = BTreeSet::new();
        for (partition, next_offset) in std::mem::take(&mut self.failed_resumes) {
            if self.routes.contains_key(&partition) {
                touched.insert(partition);
                self.resume(partition, next_offset);
            }
        }
        let commands: Vec<LoopCommand> = self.wiring.commands.try_iter().collect();
        for command in commands {
            touched.insert(match &command {
                LoopCommand::Resume(partition, ..) | LoopCommand::Pause(partition) => *partition,
            });
            match command {
                LoopCommand::Resume(partition, next_offset, inbox) => {
                    self.failed_resumes.retain(|(p, _)| *p != partition);
                    let route = Route {
                        inbox,
                        next_offset,
                        full: false,
                    };
                    self.routes.insert(partition, route);
                    self.resume(partition, next_offset);
                }
                LoopCommand::Pause(partition) => {
                    // A pending retry of a resume is void once the task pauses again.
                    self.failed_resumes.retain(|(p, _)| *p != partition);
                    self.seek_failures.remove(&partition);
                    self.routes.remove(&partition);
                    self.to_commit.remove(&partition);
                    self.pause(partition);
                }
            }
        }
        touched
    }

    /// Passes what the state updater handed back to each task: its restored store (it runs,
    /// and the supervisor resumes its input) or its restore's failure. A task that stopped
    /// meanwhile drops it, and the store with it.
    fn pass_on_restored(&mut self) {
        for event in self.wiring.restored.try_iter() {
            let (task, sent) = match event {
                RestoreEvent::Restored(task, restored) => {
                    let sent = task.cast(TaskMsg::Restored(restored));
                    (task, sent)
                }
                RestoreEvent::Failed(task, error) => {
                    let sent = task.cast(TaskMsg::RestoreFailed(error));
                    (task, sent)
                }
            };
            if sent.is_err() {
                debug!(actor = %task.get_id(), "a restored task had stopped");
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
        for committed in self.wiring.committed.try_iter() {
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
        let metrics = &self.wiring.metrics;
        let Some(offsets) = group::still_assigned(&self.consumer, metrics, &self.to_commit) else {
            return;
        };
        self.to_commit.clear();
        group::commit_offsets(&self.consumer, metrics, &offsets, mode);
    }

    fn pause(&self, partition: i32) {
        if let Err(e) = self.consumer.pause(partition) {
            debug!(partition, "pause skipped: {e}");
        }
    }

    /// Fetches the partition's input from the task's own position: it may be ahead of the
    /// group's committed offset (after a crash) or behind the fetch position (after a task
    /// restart dropped a batch). If the seek fails, the partition is paused again and the
    /// resume retried next round: fetching from anywhere else could skip records for good.
    fn resume(&mut self, partition: i32, next_offset: Option<i64>) {
        if let Err(e) = self.consumer.resume(partition) {
            debug!(partition, "resume skipped: {e}");
            return;
        }
        match self.consumer.seek(partition, next_offset, SEEK_TIMEOUT) {
            Ok(()) => {
                if let Some(failed) = self.seek_failures.remove(&partition) {
                    info!(
                        partition,
                        "input resumed at {next_offset:?} after {} failed seeks over {:?}",
                        failed.tries,
                        failed.since.elapsed()
                    );
                }
                debug!(
                    partition,
                    "input resumed at {next_offset:?} (none: the beginning)"
                );
            }
            Err(e) => {
                let now = Instant::now();
                let failed = self.seek_failures.entry(partition).or_insert(SeekFailures {
                    tries: 0,
                    since: now,
                    last_warned: now,
                });
                failed.tries += 1;
                if failed.tries == 1 || failed.last_warned.elapsed() >= SEEK_FAILURE_WARN_EVERY {
                    failed.last_warned = now;
                    warn!(
                        partition,
                        tries = failed.tries,
                        "seeking input to {next_offset:?} failed, pausing and retrying every round (failing for {:?}): {e}",
                        failed.since.elapsed()
                    );
                } else {
                    debug!(
                        partition,
                        "seeking input to {next_offset:?} failed again: {e}"
                    );
                }
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
            match self.consumer.poll_record(timeout) {
                Some(Ok(record)) => {
                    batches.entry(record.partition).or_default().push(record);
                    timeout = Duration::ZERO;
                }
                Some(Err(e)) => {
                    if let Some(reason) = self.consumer.fatal_error() {
                        return Err(EngineError::ConsumerFatal { reason });
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
        let offsets = self.wiring.runtime.block_on(ask(
            &self.wiring.supervisor,
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

#[cfg(test)]
mod tests {
    //! The loop on a fake consumer: real task and supervisor actors (that only record what
    //! reaches them), no broker, no sleeps.

    use std::collections::{BTreeSet, VecDeque};
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    use crossbeam_channel::Sender;
    use ractor::{Actor, ActorProcessingErr};
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};

    use super::*;

    #[derive(Default)]
    struct FakeState {
        records: VecDeque<InputRecord>,
        poll_error: bool,
        fatal: Option<String>,
        paused: BTreeSet<i32>,
        seeks: Vec<(i32, Option<i64>)>,
        failing_seeks: usize,
        assigned: Vec<i32>,
        assignment_unreadable: bool,
        commits: Vec<(Vec<(i32, i64)>, bool)>,
    }

    #[derive(Default)]
    struct FakeConsumer(Mutex<FakeState>);

    impl FakeConsumer {
        fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
            self.0.lock().unwrap()
        }
    }

    impl InputConsumer for Arc<FakeConsumer> {
        fn poll_record(&self, _timeout: Duration) -> Option<Result<InputRecord, KafkaError>> {
            let mut state = self.state();
            if state.poll_error {
                return Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::Fatal)));
            }
            let partition = state.records.front()?.partition;
            if state.paused.contains(&partition) {
                return None;
            }
            state.records.pop_front().map(Ok)
        }
        fn fatal_error(&self) -> Option<String> {
            self.state().fatal.clone()
        }
        fn pause(&self, partition: i32) -> Result<(), KafkaError> {
            self.state().paused.insert(partition);
            Ok(())
        }
        fn resume(&self, partition: i32) -> Result<(), KafkaError> {
            self.state().paused.remove(&partition);
            Ok(())
        }
        fn seek(&self, partition: i32, offset: Option<i64>, _: Duration) -> Result<(), KafkaError> {
            let mut state = self.state();
            state.seeks.push((partition, offset));
            if state.failing_seeks > 0 {
                state.failing_seeks -= 1;
                return Err(KafkaError::Seek("fake: partition not fetched yet".into()));
            }
            // Fetching starts over from the offset sought.
            let from = offset.unwrap_or(0);
            state
                .records
                .retain(|r| r.partition != partition || r.offset >= from);
            Ok(())
        }
        fn assigned(&self) -> Result<Vec<i32>, KafkaError> {
            let state = self.state();
            match state.assignment_unreadable {
                true => Err(KafkaError::MetadataFetch(
                    RDKafkaErrorCode::BrokerTransportFailure,
                )),
                false => Ok(state.assigned.clone()),
            }
        }
        fn commit(&self, offsets: &[(i32, i64)], mode: CommitMode) -> Result<(), KafkaError> {
            let sync = matches!(mode, CommitMode::Sync);
            self.state().commits.push((offsets.to_vec(), sync));
            Ok(())
        }
        fn unsubscribe(&self) {}
    }

    /// A task actor that reports each batch it is handed (partition, first and last offset).
    struct RecordingTask;

    impl Actor for RecordingTask {
        type Msg = TaskMsg;
        type State = Sender<(i32, i64, i64)>;
        type Arguments = Sender<(i32, i64, i64)>;

        async fn pre_start(
            &self,
            _: ActorRef<TaskMsg>,
            batches: Self::Arguments,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(batches)
        }

        async fn handle(
            &self,
            _: ActorRef<TaskMsg>,
            msg: TaskMsg,
            batches: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            match msg {
                TaskMsg::Process(records) => {
                    let (first, last) = (records[0].offset, records[records.len() - 1].offset);
                    let _ = batches.send((records[0].partition, first, last));
                }
                TaskMsg::RestoreFailed(_) => {
                    let _ = batches.send((-1, -1, -1));
                }
                _ => {}
            }
            Ok(())
        }
    }

    /// A supervisor that answers nothing (the loop's tests here never ask it).
    struct SilentSupervisor;

    impl Actor for SilentSupervisor {
        type Msg = SupervisorMsg;
        type State = ();
        type Arguments = ();

        async fn pre_start(
            &self,
            _: ActorRef<SupervisorMsg>,
            _: (),
        ) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
    }

    struct Harness {
        fake: Arc<FakeConsumer>,
        commands: Sender<LoopCommand>,
        committed: Sender<TaskCommitted>,
        restored: Sender<RestoreEvent>,
        wiring: Option<LoopWiring>,
    }

    async fn harness() -> Harness {
        let (supervisor, _) = Actor::spawn(None, SilentSupervisor, ()).await.unwrap();
        let (commands, commands_rx) = crossbeam_channel::unbounded();
        let (committed, committed_rx) = crossbeam_channel::unbounded();
        let (restored, restored_rx) = crossbeam_channel::unbounded();
        let wiring = LoopWiring {
            supervisor,
            runtime: Handle::current(),
            commands: commands_rx,
            committed: committed_rx,
            restored: restored_rx,
            shutdown: Arc::new(AtomicBool::new(false)),
            commit_interval: Duration::from_secs(30),
            status: Arc::new(InstanceStatus::new("test".into(), Duration::from_secs(60))),
            metrics: EngineMetrics::new("consumer-loop-test", "input-topic"),
        };
        Harness {
            fake: Arc::new(FakeConsumer::default()),
            commands,
            committed,
            restored,
            wiring: Some(wiring),
        }
    }

    impl Harness {
        fn consumer_loop(&mut self) -> ConsumerLoop<Arc<FakeConsumer>> {
            let wiring = self.wiring.take().expect("one loop per harness");
            ConsumerLoop::new(self.fake.clone(), wiring)
        }
    }

    async fn task() -> (TaskInbox, Receiver<(i32, i64, i64)>) {
        let (batches, received) = crossbeam_channel::unbounded();
        let (actor, _) = Actor::spawn(None, RecordingTask, batches).await.unwrap();
        let inbox = TaskInbox {
            actor,
            queued: Arc::new(AtomicUsize::new(0)),
        };
        (inbox, received)
    }

    fn records(partition: i32, offsets: std::ops::Range<i64>) -> Vec<InputRecord> {
        offsets
            .map(|offset| InputRecord {
                partition,
                offset,
                timestamp: None,
                key: Some(b"k".to_vec()),
                value: Some(b"v".to_vec()),
            })
            .collect()
    }

    const WAIT: Duration = Duration::from_secs(10);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_task_queue_pauses_its_partition_and_a_drained_one_resumes_where_input_stopped()
    {
        let mut h = harness().await;
        h.fake.state().records.extend(records(0, 0..6_000));
        let (inbox, batches) = task().await;
        let queued = inbox.queued.clone();
        h.commands
            .send(LoopCommand::Resume(0, Some(0), inbox))
            .unwrap();
        let mut consumer_loop = h.consumer_loop();
        for _ in 0..3 {
            consumer_loop.turn().unwrap();
        }
        assert_eq!(queued.load(Ordering::Acquire), 6_000, "every record queued");
        assert!(h.fake.state().paused.contains(&0), "paused at 5,000 queued");
        let mut handed = Vec::new();
        while handed.last().map(|(_, _, last)| *last) != Some(5_999) {
            handed.push(
                batches
                    .recv_timeout(WAIT)
                    .expect("the task gets every batch"),
            );
        }
        assert_eq!(
            handed,
            vec![(0, 0, 1_999), (0, 2_000, 3_999), (0, 4_000, 5_999)]
        );
        // More input arrives while paused: nothing of it is handed over.
        h.fake.state().records.extend(records(0, 6_000..6_500));
        consumer_loop.turn().unwrap();
        assert_eq!(queued.load(Ordering::Acquire), 6_000);
        // The task works its queue down to half: the partition resumes from offset 6,000.
        queued.store(2_500, Ordering::Release);
        consumer_loop.turn().unwrap();
        let state = h.fake.state();
        assert!(!state.paused.contains(&0));
        assert_eq!(state.seeks, vec![(0, Some(0)), (0, Some(6_000))]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_group_gets_offsets_only_from_the_running_incarnation_of_an_assigned_partition() {
        let mut h = harness().await;
        let (current, _) = task().await;
        let (stale, _) = task().await;
        let (other, _) = task().await;
        let current_id = current.actor.get_id();
        h.commands
            .send(LoopCommand::Resume(0, Some(0), current))
            .unwrap();
        h.commands
            .send(LoopCommand::Resume(1, Some(0), other.clone()))
            .unwrap();
        h.fake.state().assigned = vec![0];
        let report = |partition, actor, next_offset| TaskCommitted {
            partition,
            actor,
            next_offset,
        };
        h.committed.send(report(0, current_id, 10)).unwrap();
        h.committed
            .send(report(0, stale.actor.get_id(), 99))
            .unwrap();
        h.committed
            .send(report(1, other.actor.get_id(), 5))
            .unwrap();
        let mut consumer_loop = h.consumer_loop();
        consumer_loop.turn().unwrap();
        // The assignment cannot be read: nothing is committed and nothing forgotten.
        h.fake.state().assignment_unreadable = true;
        consumer_loop.commit_to_group(CommitMode::Async);
        assert!(h.fake.state().commits.is_empty());
        h.fake.state().assignment_unreadable = false;
        consumer_loop.commit_to_group(CommitMode::Async);
        assert_eq!(
            h.fake.state().commits,
            vec![(vec![(0, 10)], false)],
            "not the stale incarnation's 99, not unassigned partition 1"
        );
        // Committed offsets are sent once.
        consumer_loop.commit_to_group(CommitMode::Async);
        assert_eq!(h.fake.state().commits.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_task_loses_its_route_its_input_and_its_uncommitted_offsets() {
        let mut h = harness().await;
        let (inbox, _) = task().await;
        let (queued, actor) = (inbox.queued.clone(), inbox.actor.get_id());
        h.commands
            .send(LoopCommand::Resume(3, Some(7), inbox))
            .unwrap();
        h.fake.state().assigned = vec![3];
        let mut consumer_loop = h.consumer_loop();
        consumer_loop.turn().unwrap();
        h.committed
            .send(TaskCommitted {
                partition: 3,
                actor,
                next_offset: 8,
            })
            .unwrap();
        consumer_loop.turn().unwrap();
        h.commands.send(LoopCommand::Pause(3)).unwrap();
        consumer_loop.turn().unwrap();
        assert!(h.fake.state().paused.contains(&3));
        // Records fetched before the pause still arrive: they are dropped, not queued.
        h.fake.state().paused.clear();
        h.fake.state().records.extend(records(3, 8..20));
        consumer_loop.turn().unwrap();
        assert!(h.fake.state().records.is_empty(), "the records were polled");
        assert_eq!(
            queued.load(Ordering::Acquire),
            0,
            "no input for a stopped task"
        );
        consumer_loop.commit_to_group(CommitMode::Async);
        assert!(
            h.fake.state().commits.is_empty(),
            "its offsets died with it"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_seek_keeps_the_partition_paused_and_is_retried_at_the_same_offset() {
        let mut h = harness().await;
        h.fake.state().failing_seeks = 1;
        h.fake.state().records.extend(records(2, 0..50));
        let (inbox, batches) = task().await;
        h.commands
            .send(LoopCommand::Resume(2, Some(42), inbox))
            .unwrap();
        let mut consumer_loop = h.consumer_loop();
        consumer_loop.apply_commands();
        assert!(
            h.fake.state().paused.contains(&2),
            "never fetched from elsewhere"
        );
        consumer_loop.turn().unwrap();
        assert_eq!(h.fake.state().seeks, vec![(2, Some(42)), (2, Some(42))]);
        assert!(!h.fake.state().paused.contains(&2));
        consumer_loop.turn().unwrap();
        let first = batches.recv_timeout(WAIT).expect("input after the seek");
        assert_eq!(first, (2, 42, 49), "input starts at the sought offset");
    }

    /// G6: records polled for the old incarnation while a new one takes the partition over
    /// from an earlier offset are not handed to the new one; its resume fetches from its own
    /// position, so the records between it and the polled ones are processed, not skipped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_polled_before_a_task_restart_are_dropped_and_fetched_again_from_its_position()
    {
        let mut h = harness().await;
        let (old, _) = task().await;
        h.commands
            .send(LoopCommand::Resume(0, Some(0), old))
            .unwrap();
        let mut consumer_loop = h.consumer_loop();
        consumer_loop.apply_commands();
        // The old incarnation was handed [0, 100) and is stopped (failed) with only [0, 40)
        // in its store; the loop polls [100, 150) meanwhile.
        h.fake.state().records.extend(records(0, 100..150));
        let batches = consumer_loop.poll_round().unwrap();
        assert_eq!(batches[&0].len(), 50);
        let (new, handed) = task().await;
        let queued = new.queued.clone();
        h.commands.send(LoopCommand::Pause(0)).unwrap();
        h.commands
            .send(LoopCommand::Resume(0, Some(40), new))
            .unwrap();
        consumer_loop.dispatch_polled(batches);
        assert_eq!(
            queued.load(Ordering::Acquire),
            0,
            "the batch polled for the old incarnation is not handed to the new one"
        );
        // The resume's seek fetches from the new incarnation's position.
        h.fake.state().records.extend(records(0, 40..150));
        consumer_loop.turn().unwrap();
        assert_eq!(
            handed.recv_timeout(WAIT),
            Ok((0, 40, 149)),
            "the new incarnation's first batch starts at its own position"
        );
        assert_eq!(h.fake.state().seeks.last(), Some(&(0, Some(40))));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fatal_consumer_error_stops_the_loop_and_a_passing_one_does_not() {
        let mut h = harness().await;
        h.fake.state().poll_error = true;
        let consumer_loop = h.consumer_loop();
        assert!(
            consumer_loop.poll_round().is_ok(),
            "a passing error is logged"
        );
        h.fake.state().fatal = Some("fenced static member".into());
        match consumer_loop.poll_round() {
            Err(EngineError::ConsumerFatal { reason }) => assert!(reason.contains("fenced")),
            other => panic!("expected a fatal consumer error, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_the_state_updater_hands_back_reaches_its_task_through_the_loop() {
        let mut h = harness().await;
        let (inbox, told) = task().await;
        let (gone, _) = task().await;
        gone.actor.stop(None);
        let error = || EngineError::actor("state updater", "changelog deleted");
        h.restored
            .send(RestoreEvent::Failed(gone.actor.clone(), error()))
            .unwrap();
        h.restored
            .send(RestoreEvent::Failed(inbox.actor.clone(), error()))
            .unwrap();
        let mut consumer_loop = h.consumer_loop();
        consumer_loop.pass_on_restored();
        assert_eq!(
            told.recv_timeout(WAIT),
            Ok((-1, -1, -1)),
            "the task is told"
        );
        assert!(
            h.restored.is_empty(),
            "a stopped task's event is dropped, not kept"
        );
    }
}
