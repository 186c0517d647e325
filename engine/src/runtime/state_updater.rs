//! The state updater: one thread that restores every restoring task of the instance, in
//! bounded steps, beside processing (Kafka Streams' `DefaultStateUpdater`), with one of two
//! restore consumers: small fetches while tasks process beside it, large ones while the
//! restore has the instance to itself.
//! A task hands it its store; it gives the store back once caught up. A task that stops while
//! restoring leaves it within one step, with its progress written. A restore that makes no
//! progress for a while is reported and its changelogs read again from where it stood.
//! Standby replicas are restores it keeps: never handed back, they follow their changelogs
//! until taken out (promoted, or placed elsewhere).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use ractor::ActorRef;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use tracing::{debug, error, info, warn};

use crate::clients::{client_config, setting_error, ClientRole, RestoreFetch};
use crate::config::StreamsConfig;
use crate::error::{EngineError, Result};
use crate::failpoints;
use crate::metrics::EngineMetrics;
use crate::runtime::consumer_port::RestoreConsumer;
use crate::runtime::restore::{RestoreKind, TaskRestore};
use crate::runtime::wiring::{RestoreEvent, RestoredStore, RestoringTask, TaskMsg};
use crate::status::{InstanceStatus, StandbyProgress};
use crate::store::TaskStore;
use crate::task_id::TaskId;

/// Most records one step takes from the restore consumer before looking at its commands.
const STEP_RECORDS: usize = 5_000;
/// Longest a step reads before looking at its commands.
const STEP_TIME: Duration = Duration::from_millis(200);
const POLL_WAIT: Duration = Duration::from_millis(50);
/// While records wait in the consumer, a step reads the clock (for its time bound and each
/// restore's progress) once per this many records: well under a millisecond of reading.
const CLOCK_EVERY: usize = 64;
/// How long the updater waits for a command when it has nothing to restore.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// How long the updater waits for a command while a task's restore is being prepared.
const PREPARING_WAIT: Duration = Duration::from_millis(20);
/// A restore that reads nothing this long is reported and its changelogs fetched afresh.
pub(crate) const RESTORE_STALL: Duration = Duration::from_secs(30);
/// How often standbys learn the group's commit and their changelogs' ends (their safe
/// position and lag move with them).
const FOLLOW_REFRESH: Duration = Duration::from_secs(2);
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(2);

pub enum UpdaterCommand {
    /// Restore this task's stores; it is handed back (restored or failed) through the channel
    /// the consumer loop drains.
    Add(Box<RestoringTask>),
    /// Keep this store as a standby replica, its lag written to the handle.
    AddStandby(TaskId, Box<TaskStore>, Arc<StandbyProgress>),
    /// Stop restoring this task (it is stopping): what was read is written, the store closed,
    /// then `closed` is answered.
    Remove(TaskId, Sender<()>),
}

/// The handle tasks use to reach the state updater thread (it ends once every handle is gone).
#[derive(Clone)]
pub struct StateUpdaterHandle {
    commands: Sender<UpdaterCommand>,
}

impl StateUpdaterHandle {
    pub fn add(&self, task: RestoringTask) -> Result<()> {
        self.commands
            .send(UpdaterCommand::Add(Box::new(task)))
            .map_err(|_| EngineError::actor("state updater", "stopped"))
    }

    pub fn add_standby(
        &self,
        task: TaskId,
        store: TaskStore,
        progress: Arc<StandbyProgress>,
    ) -> Result<()> {
        self.commands
            .send(UpdaterCommand::AddStandby(task, Box::new(store), progress))
            .map_err(|_| EngineError::actor("state updater", "stopped"))
    }

    /// Takes the task (or standby) out of the updater and waits (up to `wait`) until its store is closed.
    pub fn remove(&self, task: TaskId, wait: Duration) -> Result<()> {
        let (closed, answer) = crossbeam_channel::bounded(1);
        self.commands
            .send(UpdaterCommand::Remove(task, closed))
            .map_err(|_| EngineError::actor("state updater", "stopped"))?;
        answer
            .recv_timeout(wait)
            .map_err(|_| EngineError::actor("state updater", "did not release the task in time"))
    }
}

/// Starts the state updater thread with its restore consumers.
pub fn start(
    config: Arc<StreamsConfig>,
    source_topic: String,
    metrics: EngineMetrics,
    status: Arc<InstanceStatus>,
    handed_back: Sender<RestoreEvent>,
) -> Result<(StateUpdaterHandle, JoinHandle<()>)> {
    let readers = RestoreReaders {
        beside: Arc::new(restore_consumer(&config, RestoreFetch::Beside)?),
        alone: Arc::new(restore_consumer(&config, RestoreFetch::Alone)?),
        reading: RestoreFetch::Beside,
    };
    let (updater, handle) = StateUpdater::new(
        readers,
        UpdaterContext {
            config,
            source_topic,
            metrics,
            status,
        },
        handed_back,
    );
    let thread = std::thread::Builder::new()
        .name("kstreams-restore".into())
        .spawn(move || updater.run())
        .map_err(|e| EngineError::actor("state updater", e))?;
    Ok((handle, thread))
}

fn restore_consumer(config: &StreamsConfig, fetch: RestoreFetch) -> Result<BaseConsumer> {
    client_config(config, ClientRole::Restore(fetch))
        .create()
        .map_err(|e| setting_error(&config.client_settings, e))
}

/// The two restore consumers and which of them reads the changelogs now (the other has
/// nothing assigned). Fetch sizes are fixed when a librdkafka consumer is created, hence two.
struct RestoreReaders<R> {
    /// Small fetches: leaves the broker room for the input and produce requests of the tasks
    /// processing beside the restore. Also asks the broker for ends and committed offsets.
    beside: Arc<R>,
    /// Large fetches: while every task of the instance restores, nobody waits behind them.
    alone: Arc<R>,
    reading: RestoreFetch,
}

impl<R> RestoreReaders<R> {
    fn current(&self) -> &Arc<R> {
        match self.reading {
            RestoreFetch::Beside => &self.beside,
            RestoreFetch::Alone => &self.alone,
        }
    }
}

/// What the updater is given besides its consumers.
struct UpdaterContext {
    config: Arc<StreamsConfig>,
    source_topic: String,
    metrics: EngineMetrics,
    /// The instance's tasks and their phases: whether any task processes beside the restore.
    status: Arc<InstanceStatus>,
}

struct Restoring {
    restore: TaskRestore,
    /// The task to hand the store back to; none for a standby.
    owner: Option<ActorRef<TaskMsg>>,
}

/// A task's restore worked out off the updater's thread (it asks the broker for the
/// changelogs' ends and the group's offset, which can take seconds on a busy broker).
struct Prepared {
    id: u64,
    owner: Option<ActorRef<TaskMsg>>,
    task: TaskId,
    restore: Result<TaskRestore>,
}

struct StateUpdater<R: RestoreConsumer> {
    readers: RestoreReaders<R>,
    config: Arc<StreamsConfig>,
    source_topic: String,
    metrics: EngineMetrics,
    status: Arc<InstanceStatus>,
    /// Where restored (or failed) tasks go back, for the consumer loop to pass on.
    handed_back: Sender<RestoreEvent>,
    inbox: Receiver<UpdaterCommand>,
    prepared_tx: Sender<Prepared>,
    prepared: Receiver<Prepared>,
    /// Restores being prepared, by preparation id: the task, and whether it is still wanted.
    preparing: HashMap<u64, (TaskId, bool)>,
    next_preparation: u64,
    /// Restoring tasks by partition.
    tasks: BTreeMap<i32, Restoring>,
    /// A restore that reads nothing this long is reported and fetched afresh.
    stall_after: Duration,
    /// When standbys last learnt the group's commit and their changelogs' ends.
    followed_at: Instant,
}

impl<R: RestoreConsumer> StateUpdater<R> {
    fn new(
        readers: RestoreReaders<R>,
        context: UpdaterContext,
        handed_back: Sender<RestoreEvent>,
    ) -> (Self, StateUpdaterHandle) {
        let UpdaterContext {
            config,
            source_topic,
            metrics,
            status,
        } = context;
        let (commands, inbox) = crossbeam_channel::unbounded();
        let (prepared_tx, prepared) = crossbeam_channel::unbounded();
        let updater = StateUpdater {
            readers,
            config,
            source_topic,
            metrics,
            status,
            handed_back,
            inbox,
            prepared_tx,
            prepared,
            preparing: HashMap::new(),
            next_preparation: 0,
            tasks: BTreeMap::new(),
            stall_after: RESTORE_STALL,
            followed_at: Instant::now(),
        };
        (updater, StateUpdaterHandle { commands })
    }

    fn run(mut self) {
        while self.turn() {}
        debug!("state updater stopped");
    }

    /// One turn: waits for a command (not at all while restoring), applies the commands and
    /// the prepared restores, then reads one step. Answers false once every handle is gone.
    fn turn(&mut self) -> bool {
        let wait = if !self.tasks.is_empty() {
            Duration::ZERO
        } else if !self.preparing.is_empty() {
            PREPARING_WAIT
        } else {
            IDLE_WAIT
        };
        match self.inbox.recv_timeout(wait) {
            Ok(command) => self.apply(command),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return false,
        }
        while let Ok(command) = self.inbox.try_recv() {
            self.apply(command);
        }
        while let Ok(prepared) = self.prepared.try_recv() {
            self.start(prepared);
        }
        // A restore with nothing (more) to read goes back before the step waits on a fetch.
        self.hand_back_restored();
        if !self.tasks.is_empty() {
            self.choose_reader();
            self.step();
            self.hand_back_restored();
            self.refetch_stalled();
            self.refresh_standbys();
        }
        true
    }

    fn apply(&mut self, command: UpdaterCommand) {
        match command {
            UpdaterCommand::Add(task) => {
                let RestoringTask {
                    task,
                    store,
                    progress,
                    owner,
                } = *task;
                self.prepare(task, store, RestoreKind::Active(progress), Some(owner));
            }
            UpdaterCommand::AddStandby(task, store, progress) => {
                self.prepare(task, *store, RestoreKind::Standby(progress), None);
            }
            UpdaterCommand::Remove(task, closed) => {
                // A restore still being prepared is dropped (and its store closed) as soon as
                // its preparation returns.
                for (preparing, wanted) in self.preparing.values_mut() {
                    if *preparing == task {
                        *wanted = false;
                    }
                }
                if let Some(restoring) = self.tasks.remove(&task.partition) {
                    self.unassign(&restoring.restore);
                    let remaining: i64 = restoring
                        .restore
                        .unfinished()
                        .map(|(_, c)| c.high - c.position)
                        .sum();
                    let standby = restoring.restore.is_standby();
                    match restoring.restore.abandon() {
                        Ok(store) => drop(store),
                        Err(e) => warn!(%task, "writing the restore's last batch failed: {e}"),
                    }
                    match standby {
                        true => {
                            info!(%task, "standby closed (promoted, or placed elsewhere); its position kept")
                        }
                        false => {
                            info!(%task, "restore stopped with {remaining} changelog records left (the task is stopping); progress kept")
                        }
                    }
                }
                let _ = closed.send(());
            }
        }
    }

    /// Works the task's restore out on a short-lived thread, so that a slow broker answer
    /// holds up neither the other restores nor a stopping task.
    fn prepare(
        &mut self,
        task: TaskId,
        store: TaskStore,
        kind: RestoreKind,
        owner: Option<ActorRef<TaskMsg>>,
    ) {
        let id = self.next_preparation;
        self.next_preparation += 1;
        self.preparing.insert(id, (task, true));
        let (consumer, config) = (self.readers.beside.clone(), self.config.clone());
        let (source_topic, metrics) = (self.source_topic.clone(), self.metrics.clone());
        let done = self.prepared_tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("kstreams-restore-{task}"))
            .spawn(move || {
                let restore = TaskRestore::begin(
                    task,
                    store,
                    kind,
                    &*consumer,
                    &config,
                    &source_topic,
                    &metrics,
                );
                let _ = done.send(Prepared {
                    id,
                    owner,
                    task,
                    restore,
                });
            });
        if let Err(e) = spawned {
            self.preparing.remove(&id);
            error!(%task, "could not start preparing its restore: {e}");
        }
    }

    /// Starts reading a prepared restore, unless its task stopped meanwhile.
    fn start(&mut self, prepared: Prepared) {
        let Prepared {
            id,
            owner,
            task,
            restore,
        } = prepared;
        let wanted = self.preparing.remove(&id).is_some_and(|(_, wanted)| wanted);
        let restore = match restore {
            Ok(restore) if wanted => restore,
            Ok(_) => return debug!(%task, "dropping the restore of a task that stopped"),
            Err(error) if wanted => return self.fail(owner, task, error),
            Err(_) => return,
        };
        if let Some(reason) = restore.outcome_wiped() {
            self.metrics.state_wipes.with_label_values(&[reason]).inc();
        }
        let restoring = Restoring { restore, owner };
        self.assign(&restoring.restore);
        self.tasks.insert(task.partition, restoring);
    }

    /// The restore's unfinished changelog partitions, with the offsets to read them from.
    fn changelog_positions(restore: &TaskRestore) -> Vec<(&str, i32, i64)> {
        restore
            .unfinished()
            .map(|(_, c)| (c.topic.as_str(), restore.task.partition, c.position))
            .collect()
    }

    fn assign(&self, restore: &TaskRestore) {
        if let Err(e) = self
            .readers
            .current()
            .assign(&Self::changelog_positions(restore))
        {
            warn!(task = %restore.task, "assigning its changelogs: {e}; retried when the restore is seen stalled");
        }
    }

    /// Stops reading every changelog of the restore, the finished ones too (a finished
    /// changelog left assigned would be fetched for as long as the instance runs).
    fn unassign(&self, restore: &TaskRestore) {
        let partition = restore.task.partition;
        let partitions: Vec<(&str, i32)> = restore
            .changelogs
            .iter()
            .map(|c| (c.topic.as_str(), partition))
            .collect();
        if let Err(e) = self.readers.current().unassign(&partitions) {
            debug!(task = %restore.task, "unassigning its changelogs: {e}");
        }
    }

    /// Reads with the large-fetch consumer while the restore has the instance to itself: every
    /// task of the instance is restoring here (none running, opening its store, being
    /// prepared or just handed back). Otherwise reads with the small-fetch one. A change moves
    /// every restoring changelog over, from the offset read to.
    fn choose_reader(&mut self) {
        let (not_running, running) = self.status.phase_counts();
        let active = self.tasks.values().filter(|r| r.owner.is_some()).count();
        let alone = running == 0 && self.preparing.is_empty() && not_running == active;
        let wanted = if alone {
            RestoreFetch::Alone
        } else {
            RestoreFetch::Beside
        };
        if wanted == self.readers.reading {
            return;
        }
        for restoring in self.tasks.values() {
            self.unassign(&restoring.restore);
        }
        self.readers.reading = wanted;
        for restoring in self.tasks.values() {
            self.assign(&restoring.restore);
        }
        match wanted {
            RestoreFetch::Alone => info!(
                tasks = self.tasks.len(),
                "every task of the instance is restoring: the restore reads with large fetches"
            ),
            RestoreFetch::Beside => info!(
                running,
                "tasks process beside the restore: the restore reads with small fetches"
            ),
        }
    }

    /// Reads for at most [`STEP_RECORDS`] records or [`STEP_TIME`], routing each record to its
    /// task's restore.
    fn step(&mut self) {
        if let Some(delay) = failpoints::number(failpoints::RESTORE_STEP_DELAY) {
            std::thread::sleep(Duration::from_millis(delay as u64));
        }
        let mut now = Instant::now();
        let deadline = now + STEP_TIME;
        let consumer = self.readers.current().clone();
        for read in 1..=STEP_RECORDS {
            // What the consumer holds already, without a wait. The clock is read around a wait
            // and otherwise once per `CLOCK_EVERY` records (once per record was 5% of a
            // restore's CPU).
            let polled = match consumer.poll(Duration::ZERO) {
                Some(polled) => Some(polled),
                None if Instant::now() >= deadline => break,
                None => {
                    let polled = consumer.poll(POLL_WAIT);
                    now = Instant::now();
                    polled
                }
            };
            match polled {
                Some(Ok(message)) => {
                    let partition = message.partition();
                    let Some(restoring) = self.tasks.get_mut(&partition) else {
                        continue;
                    };
                    let Some(index) = restoring
                        .restore
                        .changelogs
                        .iter()
                        .position(|c| c.topic == message.topic())
                    else {
                        continue;
                    };
                    let offered = restoring.restore.offer(
                        index,
                        message.offset(),
                        message.key(),
                        message.payload(),
                        now,
                    );
                    if let Err(error) = offered {
                        self.drop_failed(partition, error);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => self.reached_end(partition),
                Some(Err(error)) => {
                    warn!("restore consumer: {error}; retrying");
                    break;
                }
                None => break,
            }
            if read % CLOCK_EVERY == 0 {
                now = Instant::now();
                if now >= deadline {
                    break;
                }
            }
        }
    }

    /// A changelog partition of this number has nothing more to read now: its stores whose
    /// fetch position reached their restore's end are done.
    fn reached_end(&mut self, partition: i32) {
        let Some(restoring) = self.tasks.get_mut(&partition) else {
            return;
        };
        let consumer = self.readers.current();
        let ends: Vec<(usize, i64)> = restoring
            .restore
            .unfinished()
            .filter_map(
                |(index, changelog)| match consumer.position(&changelog.topic, partition) {
                    Ok(Some(end)) if end >= changelog.high => Some((index, end)),
                    Ok(_) => None,
                    Err(e) => {
                        debug!(partition, "reading restore positions: {e}");
                        None
                    }
                },
            )
            .collect();
        for (index, end) in ends {
            if let Err(error) = restoring.restore.reached_end(index, end) {
                return self.drop_failed(partition, error);
            }
        }
    }

    fn drop_failed(&mut self, partition: i32, error: EngineError) {
        if let Some(restoring) = self.tasks.remove(&partition) {
            self.unassign(&restoring.restore);
            self.fail(restoring.owner, restoring.restore.task, error);
        }
    }

    /// Gives each caught-up task its store back.
    fn hand_back_restored(&mut self) {
        let done: Vec<i32> = self
            .tasks
            .iter()
            .filter(|(_, r)| r.restore.is_done())
            .map(|(p, _)| *p)
            .collect();
        for partition in done {
            let Some(Restoring {
                restore,
                owner: Some(owner),
            }) = self.tasks.remove(&partition)
            else {
                continue;
            };
            self.unassign(&restore);
            let task = restore.task;
            let (store, outcome) = restore.finish();
            let restored = Box::new(RestoredStore { store, outcome });
            if self
                .handed_back
                .send(RestoreEvent::Restored(owner, restored))
                .is_err()
            {
                debug!(%task, "restored a task while the instance stops");
            }
        }
    }

    fn fail(&self, owner: Option<ActorRef<TaskMsg>>, task: TaskId, error: EngineError) {
        match owner {
            Some(owner) => {
                error!(%task, "restore failed: {error}");
                let _ = self.handed_back.send(RestoreEvent::Failed(owner, error));
            }
            // Dropped: the supervisor places it again at its next look at the group.
            None => {
                warn!(%task, "standby failed, dropped: {error}");
                self.status.remove_standby(task);
                self.metrics.forget_standby(task);
            }
        }
    }

    /// Every [`FOLLOW_REFRESH`], tells each standby the group's commit for its input partition
    /// and its changelogs' ends.
    fn refresh_standbys(&mut self) {
        if self.followed_at.elapsed() < FOLLOW_REFRESH {
            return;
        }
        self.followed_at = Instant::now();
        let consumer = self.readers.beside.clone();
        let standbys: Vec<i32> = self
            .tasks
            .iter()
            .filter(|(_, r)| r.restore.is_standby())
            .map(|(p, _)| *p)
            .collect();
        for partition in standbys {
            let ceiling =
                match consumer.group_committed(&self.source_topic, partition, FOLLOW_TIMEOUT) {
                    Ok(committed) => committed,
                    Err(e) => {
                        debug!(partition, "standby: reading the group's commit: {e}");
                        continue;
                    }
                };
            let Some(restoring) = self.tasks.get_mut(&partition) else {
                continue;
            };
            let ends: Vec<Option<i64>> = restoring
                .restore
                .changelogs
                .iter()
                .map(|c| {
                    consumer
                        .watermarks(&c.topic, partition, FOLLOW_TIMEOUT)
                        .ok()
                        .map(|(_, high)| high)
                })
                .collect();
            if let Err(error) = restoring.restore.follow(ceiling, &ends) {
                self.drop_failed(partition, error);
            }
        }
    }

    /// Restores that read nothing for [`RESTORE_STALL`] are reported and fetched afresh from
    /// where they stood.
    fn refetch_stalled(&mut self) {
        let stalled: Vec<i32> = self
            .tasks
            .iter()
            .filter(|(_, r)| !r.restore.is_standby())
            .filter(|(_, r)| r.restore.last_progress.elapsed() >= self.stall_after)
            .map(|(partition, _)| *partition)
            .collect();
        for partition in stalled {
            let Some(restoring) = self.tasks.get_mut(&partition) else {
                continue;
            };
            restoring.restore.last_progress = Instant::now();
            let restore = &self.tasks[&partition].restore;
            let at: Vec<String> = restore
                .unfinished()
                .map(|(_, c)| format!("{}[{partition}] at {} of {}", c.topic, c.position, c.high))
                .collect();
            warn!(task = %restore.task, "restore made no progress for {:?} ({}); fetching its changelogs again", self.stall_after, at.join(", "));
            self.metrics.restore_stalls.inc();
            self.unassign(restore);
            self.assign(restore);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The updater on a fake restore consumer and real RocksDB stores in a temporary
    //! directory: its steps, Add and Remove, the hand-back, a stall. No broker, no sleeps.

    use std::collections::BTreeSet;
    use std::sync::{Mutex, MutexGuard};

    use ractor::{Actor, ActorProcessingErr};
    use rdkafka::message::{OwnedMessage, Timestamp};

    use super::*;
    use crate::status::TaskPhase;
    use crate::store::changelog_format::encode_changelog_value;
    use crate::store::{StoreId, StoredOffsets, TaskStore};
    use crate::store_memory::{StoreMemory, StoreMemorySettings};

    const SOURCE: &str = "input";
    const STORE: &str = "count-store";

    /// A changelog partition: its records (offset = index) and where the fake reads it.
    #[derive(Default)]
    struct FakePartition {
        records: Vec<OwnedMessage>,
        /// Next offset to read, while assigned.
        position: Option<i64>,
        /// The end was reported since the last record read.
        end_reported: bool,
    }

    #[derive(Default)]
    struct FakeState {
        partitions: BTreeMap<(String, i32), FakePartition>,
        committed: HashMap<i32, i64>,
        /// Every assignment asked for, in order.
        assigns: Vec<Vec<(String, i32, i64)>>,
        unassigns: usize,
        /// Reads nothing (a stuck fetch).
        frozen: bool,
        /// The watermarks cannot be read (a broker that does not answer).
        watermarks_fail: bool,
        /// The end of the input partitions (`None`: past any committed offset).
        input_end: Option<i64>,
        /// Where the last record came from, to read the assigned partitions in turn.
        last_read: Option<(String, i32)>,
        /// Polls asked of this consumer.
        polls: usize,
    }

    #[derive(Default)]
    struct FakeChangelogs(Mutex<FakeState>);

    impl FakeChangelogs {
        fn state(&self) -> MutexGuard<'_, FakeState> {
            self.0.lock().unwrap()
        }

        /// Appends a changelog record of `key` = `value`, produced by input offset `input`.
        fn append(&self, partition: i32, key: &str, value: &str, input: i64) {
            let topic = changelog_topic();
            let mut state = self.state();
            let records = &mut state
                .partitions
                .entry((topic.clone(), partition))
                .or_default()
                .records;
            let offset = records.len() as i64;
            records.push(OwnedMessage::new(
                Some(encode_changelog_value(input, value.as_bytes())),
                Some(key.as_bytes().to_vec()),
                topic,
                Timestamp::NotAvailable,
                partition,
                offset,
                None,
            ));
        }

        fn assigned(&self) -> BTreeSet<i32> {
            let state = self.state();
            let assigned = state
                .partitions
                .iter()
                .filter(|(_, p)| p.position.is_some());
            assigned.map(|((_, partition), _)| *partition).collect()
        }
    }

    impl RestoreConsumer for FakeChangelogs {
        type Record<'a> = OwnedMessage;

        fn watermarks(&self, topic: &str, partition: i32, _: Duration) -> KafkaResult<(i64, i64)> {
            let state = self.state();
            if state.watermarks_fail {
                return Err(KafkaError::MetadataFetch(
                    RDKafkaErrorCode::BrokerTransportFailure,
                ));
            }
            if topic == SOURCE {
                return Ok((0, state.input_end.unwrap_or(i64::MAX)));
            }
            let key = (topic.to_string(), partition);
            let high = state.partitions.get(&key).map_or(0, |p| p.records.len());
            Ok((0, high as i64))
        }

        fn group_committed(
            &self,
            _: &str,
            partition: i32,
            _: Duration,
        ) -> KafkaResult<Option<i64>> {
            Ok(self.state().committed.get(&partition).copied())
        }

        fn assign(&self, partitions: &[(&str, i32, i64)]) -> KafkaResult<()> {
            let mut state = self.state();
            for (topic, partition, offset) in partitions {
                let fake = state.partitions.entry((topic.to_string(), *partition));
                let fake = fake.or_default();
                fake.position = Some(*offset);
                fake.end_reported = false;
            }
            let asked = partitions.iter().map(|(t, p, o)| (t.to_string(), *p, *o));
            state.assigns.push(asked.collect());
            Ok(())
        }

        fn unassign(&self, partitions: &[(&str, i32)]) -> KafkaResult<()> {
            let mut state = self.state();
            for (topic, partition) in partitions {
                if let Some(fake) = state.partitions.get_mut(&(topic.to_string(), *partition)) {
                    fake.position = None;
                }
            }
            state.unassigns += 1;
            Ok(())
        }

        /// The next record of the assigned partitions, taken in turn; a partition read to
        /// its end reports it once.
        fn poll(&self, _: Duration) -> Option<KafkaResult<OwnedMessage>> {
            let mut state = self.state();
            state.polls += 1;
            if state.frozen {
                return None;
            }
            let after = state.last_read.clone();
            let readable: Vec<(String, i32)> = state
                .partitions
                .iter()
                .filter(|(_, p)| p.position.is_some_and(|at| (at as usize) < p.records.len()))
                .map(|(key, _)| key.clone())
                .collect();
            let next = readable
                .iter()
                .find(|key| after.as_ref().is_none_or(|last| *key > last))
                .or(readable.first())
                .cloned();
            if let Some(key) = next {
                let fake = state.partitions.get_mut(&key).unwrap();
                let at = fake.position.unwrap();
                fake.position = Some(at + 1);
                fake.end_reported = false;
                let record = fake.records[at as usize].clone();
                state.last_read = Some(key);
                return Some(Ok(record));
            }
            let ended = state
                .partitions
                .iter_mut()
                .find(|(_, p)| p.position.is_some() && !p.end_reported)?;
            ended.1.end_reported = true;
            Some(Err(KafkaError::PartitionEOF(ended.0 .1)))
        }

        fn position(&self, topic: &str, partition: i32) -> KafkaResult<Option<i64>> {
            let state = self.state();
            let fake = state.partitions.get(&(topic.to_string(), partition));
            Ok(fake.and_then(|p| p.position))
        }
    }

    use rdkafka::error::{KafkaResult, RDKafkaErrorCode};

    fn changelog_topic() -> String {
        config().changelog_topic(STORE)
    }

    fn config() -> StreamsConfig {
        StreamsConfig::new("updater-test", "unused:9092")
    }

    /// A task actor that does nothing: the updater only hands it back by reference.
    struct IdleTask;

    impl Actor for IdleTask {
        type Msg = TaskMsg;
        type State = ();
        type Arguments = ();

        async fn pre_start(&self, _: ActorRef<TaskMsg>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
    }

    struct Harness {
        /// The small-fetch restore consumer.
        fake: Arc<FakeChangelogs>,
        /// The large-fetch one (the same fake unless the test tells them apart).
        alone: Arc<FakeChangelogs>,
        status: Arc<InstanceStatus>,
        updater: StateUpdater<FakeChangelogs>,
        handle: StateUpdaterHandle,
        handed_back: Receiver<RestoreEvent>,
        metrics: EngineMetrics,
        dir: tempfile::TempDir,
        memory: Arc<StoreMemory>,
    }

    /// An updater whose two restore consumers are one fake (which one reads is not looked at).
    fn harness() -> Harness {
        let fake = Arc::new(FakeChangelogs::default());
        harness_with(fake.clone(), fake)
    }

    /// An updater with a fake per restore consumer.
    fn harness_with(fake: Arc<FakeChangelogs>, alone: Arc<FakeChangelogs>) -> Harness {
        let metrics = EngineMetrics::new("state-updater-test", "input-topic");
        let (handed_back_tx, handed_back) = crossbeam_channel::unbounded();
        let status = Arc::new(InstanceStatus::new("test".into(), Duration::from_secs(60)));
        let readers = RestoreReaders {
            beside: fake.clone(),
            alone: alone.clone(),
            reading: RestoreFetch::Beside,
        };
        let context = UpdaterContext {
            config: Arc::new(config()),
            source_topic: SOURCE.into(),
            metrics: metrics.clone(),
            status: status.clone(),
        };
        let (updater, handle) = StateUpdater::new(readers, context, handed_back_tx);
        Harness {
            fake,
            alone,
            status,
            updater,
            handle,
            handed_back,
            metrics,
            dir: tempfile::tempdir().unwrap(),
            memory: StoreMemory::new(StoreMemorySettings::default()),
        }
    }

    impl Harness {
        fn open_store(&self, partition: i32) -> TaskStore {
            let path = self.dir.path().join(TaskId::new(0, partition).to_string());
            TaskStore::open(
                TaskId::new(0, partition),
                &path,
                &[STORE.to_string()],
                &self.memory,
            )
            .unwrap()
        }

        async fn add(&self, partition: i32) {
            let (owner, _) = Actor::spawn(None, IdleTask, ()).await.unwrap();
            let task = RestoringTask {
                task: TaskId::new(0, partition),
                store: self.open_store(partition),
                progress: Arc::default(),
                owner,
            };
            self.handle.add(task).unwrap();
        }

        /// Turns the updater until `done` holds (the restore's preparation runs on its own
        /// thread: a deadline, not a count, bounds the wait for it).
        fn turn_until(&mut self, what: &str, mut done: impl FnMut(&mut Self) -> bool) {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !done(self) {
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                assert!(self.updater.turn());
            }
        }

        /// Turns until the updater hands something back, and answers it.
        fn next_handed_back(&mut self) -> RestoreEvent {
            let mut event = None;
            self.turn_until("a task handed back", |h| {
                event = h.handed_back.try_recv().ok();
                event.is_some()
            });
            event.unwrap()
        }

        /// Task 0_0's store holding `key` = 99 (from input offset 40), committed with its
        /// changelog written through offset 50.
        fn commit_store_written_through_50(&self, key: &[u8]) {
            let mut store = self.open_store(0);
            store.put(StoreId(0), key, b"99", 40, None);
            let offsets = StoredOffsets {
                input_next: Some(41),
                changelog_next: vec![Some(50)],
            };
            store.commit(&offsets).unwrap();
        }

        fn restoring(&self, partition: i32) -> bool {
            self.updater.tasks.contains_key(&partition)
        }

        fn read_of(&self, partition: i32) -> i64 {
            self.updater.tasks[&partition].restore.changelogs[0].position
        }
    }

    fn restored(event: RestoreEvent) -> Box<RestoredStore> {
        match event {
            RestoreEvent::Restored(_, restored) => restored,
            RestoreEvent::Failed(_, error) => panic!("restore failed: {error}"),
        }
    }

    fn count_of(store: &TaskStore, key: &str) -> Option<String> {
        let value = store.get(StoreId(0), key.as_bytes()).unwrap()?;
        Some(String::from_utf8(value).unwrap())
    }

    #[tokio::test]
    async fn restores_in_bounded_steps_and_hands_back_only_once_caught_up() {
        let mut h = harness();
        let total = 2 * STEP_RECORDS + 1_500; // more than one step, more than one batch
        for i in 0..total {
            h.fake
                .append(0, &format!("k{}", i % 3_000), &i.to_string(), i as i64);
        }
        h.add(0).await;
        h.turn_until("the restore to start", |h| h.restoring(0));
        assert_eq!(
            h.fake.state().assigns,
            vec![vec![(changelog_topic(), 0, 0)]]
        );
        let mut steps = 1;
        let mut read = h.read_of(0);
        while h.restoring(0) {
            assert!(
                read <= STEP_RECORDS as i64 * steps,
                "a step read past its bound"
            );
            assert!(h.handed_back.is_empty(), "handed back before caught up");
            assert!(h.updater.turn());
            steps += 1;
            if h.restoring(0) {
                read = h.read_of(0);
            }
        }
        assert!(steps >= 3, "{total} records were read in {steps} steps");
        let restored = restored(h.handed_back.try_recv().unwrap());
        assert_eq!(restored.outcome.records, total as u64);
        assert_eq!(restored.outcome.input_next, None);
        let store = &restored.store;
        assert_eq!(count_of(store, "k0").as_deref(), Some("9000"));
        assert_eq!(count_of(store, "k2999").as_deref(), Some("8999"));
        assert_eq!(count_of(store, "k1499").as_deref(), Some("10499"));
        let offsets = store.read_offsets().unwrap();
        assert_eq!(offsets.changelog_next, vec![Some(total as i64)]);
        assert_eq!(restored.outcome.changelog_next, vec![Some(total as i64)]);
        assert!(h.fake.assigned().is_empty(), "its changelog is still read");
    }

    /// A fresh task over an empty changelog: nothing to restore, nothing written to RocksDB,
    /// and still its changelog position is known (its own first record lands at 0).
    #[tokio::test]
    async fn a_task_with_nothing_to_restore_knows_where_its_changelog_stands() {
        let mut h = harness();
        h.add(0).await;
        let restored = restored(h.next_handed_back());
        assert_eq!(restored.outcome.records, 0);
        assert_eq!(restored.outcome.changelog_next, vec![Some(0)]);
        // Handed back in the turn its restore started, without waiting on a fetch (a poll
        // waits up to 50 ms, a sixth of a clean restart's start-up).
        assert_eq!(
            h.fake.state().polls,
            0,
            "the empty restore polled its consumer"
        );
    }

    #[tokio::test]
    async fn the_newest_input_offset_wins_and_records_past_the_commit_owe_output() {
        let mut h = harness();
        h.fake.append(1, "a", "5", 10); // the owner's update from input offset 10
        h.fake.append(1, "a", "4", 8); // an overlapping old owner's late write: older input
        h.fake.append(1, "b", "1", 3);
        h.fake.append(1, "c", "7", 20); // input past the group's commit: output may be owed
        h.fake.state().committed.insert(1, 15);
        h.add(1).await;
        let restored = restored(h.next_handed_back());
        assert_eq!(count_of(&restored.store, "a").as_deref(), Some("5"));
        assert_eq!(count_of(&restored.store, "b").as_deref(), Some("1"));
        assert_eq!(restored.outcome.input_next, Some(15));
        assert_eq!(
            restored.outcome.replay_marked, 2,
            "c is past the commit; a's own value owes its output again, the old owner's older one \
             lies after it"
        );
        assert_eq!(
            restored.outcome.owed_from,
            vec![Some(3)],
            "the first record past the commit (c's, the fourth) begins what may owe output"
        );
    }

    /// A standby follows its changelog for as long as it is kept, never handed back. The
    /// position it keeps is one its promotion can restore from: not past a stretch holding
    /// input at or past the group's commit (whose output may not have landed), so that the
    /// promoted task's restore marks those keys as owing their output.
    #[tokio::test]
    async fn a_standby_follows_is_never_handed_back_and_keeps_a_position_safe_to_promote_from() {
        let mut h = harness();
        for (n, key) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            h.fake.append(0, key, "1", n as i64); // committed input
        }
        h.fake.append(0, "a", "2", 12); // past the group's commit: output may be owed
        h.fake.append(0, "f", "1", 13);
        h.fake.state().committed.insert(0, 10);
        let task = TaskId::new(0, 0);
        let lag = h.status.add_standby(task);
        h.handle
            .add_standby(task, h.open_store(0), lag.clone())
            .unwrap();
        let refresh = |h: &mut Harness| h.updater.followed_at = Instant::now() - FOLLOW_REFRESH;
        h.turn_until("the standby read everything", |h| {
            h.restoring(0) && h.read_of(0) == 7
        });
        refresh(&mut h);
        assert!(h.updater.turn());
        assert!(
            h.handed_back.try_recv().is_err(),
            "a standby is never handed back"
        );
        assert_eq!(
            lag.lag(),
            Some(7),
            "its one stretch holds input past the commit: promotion would restore all of it"
        );
        h.fake.state().committed.insert(0, 14);
        refresh(&mut h);
        assert!(h.updater.turn());
        assert_eq!(lag.lag(), Some(0), "the group committed past it");
        h.fake.append(0, "b", "2", 15); // the owner's next write-out, not committed yet
        h.turn_until("the standby read the new record", |h| h.read_of(0) == 8);
        assert_eq!(
            lag.lag(),
            Some(1),
            "a record read shows in the lag before the next look"
        );
        let (closed, answer) = crossbeam_channel::bounded(1);
        h.updater.apply(UpdaterCommand::Remove(task, closed));
        assert!(
            answer.try_recv().is_ok() && !h.restoring(0),
            "closed at once"
        );
        let store = h.open_store(0);
        assert_eq!(count_of(&store, "a").as_deref(), Some("2"));
        assert_eq!(
            count_of(&store, "b").as_deref(),
            Some("2"),
            "applied, though not safe yet"
        );
        let offsets = store.read_offsets().unwrap();
        assert_eq!(
            offsets.changelog_next,
            vec![Some(7)],
            "not past the uncommitted stretch"
        );
        assert_eq!(
            offsets.input_next, None,
            "a standby vouches for no input position"
        );
        drop(store);
        // Kept again after a restart of its instance: it goes on from the position it kept.
        let again = h.status.add_standby(task);
        h.handle.add_standby(task, h.open_store(0), again).unwrap();
        h.turn_until("the standby kept again", |h| h.restoring(0));
        assert_eq!(
            h.fake.state().assigns.last().unwrap(),
            &vec![(changelog_topic(), 0, 7)],
            "a standby kept again reads from its kept position, not from the start"
        );
        let (closed, answer) = crossbeam_channel::bounded(1);
        h.updater.apply(UpdaterCommand::Remove(task, closed));
        assert!(answer.try_recv().is_ok());
        // Promoted with the commit still at 14: only the tail is restored, and b owes output.
        h.add(0).await;
        let restored = restored(h.next_handed_back());
        assert_eq!(restored.outcome.records, 1);
        assert_eq!(restored.outcome.replay_marked, 1);
        assert_eq!(restored.outcome.input_next, Some(14));
    }

    /// The versions a restore compares against come from the store (read ahead a batch at a
    /// time): a record older than the stored version is skipped, a newer one applied.
    #[tokio::test]
    async fn a_restored_record_older_than_the_stored_version_is_skipped() {
        let mut h = harness();
        h.commit_store_written_through_50(b"a"); // a = 99 from input 40
        for offset in 0..50 {
            h.fake.append(0, &format!("before{offset}"), "1", offset);
        }
        h.fake.append(0, "a", "7", 30); // an old owner's late write: older than the store's
        h.fake.append(0, "b", "5", 39);
        h.fake.append(0, "b", "4", 38); // older than b's update in the same batch
        h.fake.append(0, "c", "1", 35);
        h.fake.append(0, "c", "2", 42); // newer than the store's a, and than c's last
        h.fake.state().committed.insert(0, 41);
        h.add(0).await;
        let restored = restored(h.next_handed_back());
        assert_eq!(count_of(&restored.store, "a").as_deref(), Some("99"));
        assert_eq!(count_of(&restored.store, "b").as_deref(), Some("5"));
        assert_eq!(count_of(&restored.store, "c").as_deref(), Some("2"));
        assert_eq!(restored.outcome.records, 3, "two of five records skipped");
        let owing: Vec<Vec<u8>> = restored
            .store
            .pending_output_after(None, 10)
            .unwrap()
            .into_iter()
            .map(|(_, key)| key)
            .collect();
        assert_eq!(
            owing,
            [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()],
            "c is past the commit; a and b each had an older record written after their value"
        );
    }

    #[tokio::test]
    async fn restores_of_two_tasks_interleave_and_are_handed_back_apart() {
        let mut h = harness();
        for i in 0..3 * STEP_RECORDS as i64 {
            h.fake.append(0, "x", &i.to_string(), i);
        }
        h.fake.append(2, "y", "1", 0);
        h.fake.state().frozen = true; // both restores start before either reads
        h.add(0).await;
        h.add(2).await;
        h.turn_until("both restores to start", |h| {
            h.restoring(0) && h.restoring(2)
        });
        h.fake.state().frozen = false;
        let first = restored(h.next_handed_back());
        assert_eq!(count_of(&first.store, "y").as_deref(), Some("1"));
        assert_eq!(
            count_of(&first.store, "x"),
            None,
            "the short restore was held back"
        );
        let second = restored(h.next_handed_back());
        let last = (3 * STEP_RECORDS - 1).to_string();
        assert_eq!(count_of(&second.store, "x"), Some(last));
    }

    #[tokio::test]
    async fn remove_mid_restore_keeps_what_was_read_and_the_next_restore_reads_only_the_rest() {
        let mut h = harness();
        let total = 3 * STEP_RECORDS;
        for i in 0..total {
            h.fake.append(0, &format!("k{i}"), "1", i as i64);
        }
        h.add(0).await;
        h.turn_until("a first step", |h| h.restoring(0) && h.read_of(0) > 0);
        let read = h.read_of(0);
        assert!(read < total as i64);
        let (closed, answer) = crossbeam_channel::bounded(1);
        h.updater
            .apply(UpdaterCommand::Remove(TaskId::new(0, 0), closed));
        assert!(
            answer.try_recv().is_ok(),
            "Remove answered once the store is closed"
        );
        assert!(!h.restoring(0));
        assert!(
            h.fake.assigned().is_empty(),
            "a removed task's changelog is still read"
        );
        assert!(h.handed_back.is_empty(), "a removed task was handed back");
        let kept = h.open_store(0).read_offsets().unwrap().changelog_next;
        assert_eq!(
            kept,
            vec![Some(read)],
            "the progress written is what was read"
        );

        h.add(0).await;
        let restored = restored(h.next_handed_back());
        assert_eq!(
            h.fake.state().assigns.last().unwrap(),
            &vec![(changelog_topic(), 0, read)]
        );
        assert_eq!(restored.outcome.records, total as u64 - read as u64);
        assert_eq!(count_of(&restored.store, "k0").as_deref(), Some("1"));
        let last = format!("k{}", total - 1);
        assert_eq!(count_of(&restored.store, &last).as_deref(), Some("1"));
    }

    #[tokio::test]
    async fn a_task_removed_while_its_restore_is_prepared_is_never_read() {
        let mut h = harness();
        h.fake.append(0, "k", "1", 0);
        h.add(0).await;
        let (closed, answer) = crossbeam_channel::bounded(1);
        let commands = h.handle.commands.clone();
        commands
            .send(UpdaterCommand::Remove(TaskId::new(0, 0), closed))
            .unwrap();
        h.turn_until("the preparation to return", |h| {
            answer.try_recv().is_ok() || !h.updater.preparing.is_empty()
        });
        h.turn_until("the preparation to be dropped", |h| {
            h.updater.preparing.is_empty()
        });
        assert!(!h.restoring(0));
        assert!(
            h.fake.state().assigns.is_empty(),
            "a removed task's changelog was read"
        );
        assert!(h.handed_back.is_empty());
    }

    #[tokio::test]
    async fn a_stalled_restore_is_counted_and_fetched_again_from_where_it_stood() {
        let mut h = harness();
        h.updater.stall_after = Duration::from_millis(1);
        for i in 0..STEP_RECORDS + 10 {
            h.fake.append(0, &format!("k{i}"), "1", i as i64);
        }
        h.add(0).await;
        h.turn_until("a first step", |h| h.restoring(0) && h.read_of(0) > 0);
        let read = h.read_of(0);
        h.fake.state().frozen = true;
        let stalls = h.metrics.restore_stalls.get();
        h.turn_until("the stall to be seen", |h| {
            h.metrics.restore_stalls.get() > stalls
        });
        assert_eq!(h.read_of(0), read, "a frozen fetch read something");
        let assigns = h.fake.state().assigns.clone();
        assert_eq!(assigns.last().unwrap(), &vec![(changelog_topic(), 0, read)]);
        assert!(h.fake.state().unassigns >= 1);
        h.fake.state().frozen = false;
        let restored = restored(h.next_handed_back());
        assert_eq!(restored.outcome.records, STEP_RECORDS as u64 + 10);
    }

    /// While every task of the instance restores here, the large-fetch consumer reads; once a
    /// task runs beside the restore, the small-fetch one takes over at exactly the offset read
    /// to, and the restore ends with every key exact.
    #[tokio::test]
    async fn the_restore_fetches_large_only_while_it_has_the_instance_to_itself() {
        let (small, large) = (Arc::default(), Arc::default());
        let mut h = harness_with(small, large);
        let total = 4 * STEP_RECORDS;
        for i in 0..total {
            for fake in [&h.fake, &h.alone] {
                fake.append(0, &format!("k{}", i % 1_000), &i.to_string(), i as i64);
            }
        }
        let restoring = h.status.add_task(TaskId::new(0, 0));
        restoring.set_phase(TaskPhase::Restoring).unwrap();
        h.status.add_task(TaskId::new(0, 1)); // opening its store: not alone yet
        h.add(0).await;
        h.turn_until("a first step", |h| h.restoring(0) && h.read_of(0) > 0);
        assert!(
            h.alone.state().assigns.is_empty(),
            "fetched large beside task 0_1"
        );

        h.status.remove_task(TaskId::new(0, 1)); // revoked: task 0_0 is all there is
        let read = h.read_of(0);
        assert!(h.updater.turn());
        assert_eq!(
            h.alone.state().assigns,
            vec![vec![(changelog_topic(), 0, read)]]
        );
        assert!(h.fake.assigned().is_empty(), "both consumers read");
        assert!(h.read_of(0) > read, "the large-fetch consumer read nothing");

        let running = h.status.add_task(TaskId::new(0, 2));
        running.set_phase(TaskPhase::Restoring).unwrap();
        running.set_phase(TaskPhase::Running).unwrap();
        let read = h.read_of(0);
        assert!(h.updater.turn());
        assert_eq!(
            h.fake.state().assigns.last().unwrap(),
            &vec![(changelog_topic(), 0, read)]
        );
        assert!(h.alone.assigned().is_empty(), "both consumers read");

        let restored = restored(h.next_handed_back());
        assert_eq!(restored.outcome.records, total as u64);
        for key in [0, 1, 999] {
            let newest = (total - 1_000 + key).to_string();
            let count = count_of(&restored.store, &format!("k{key}"));
            assert_eq!(count, Some(newest));
        }
    }

    #[tokio::test]
    async fn a_restore_that_cannot_start_is_handed_back_as_failed() {
        let mut h = harness();
        h.fake.state().watermarks_fail = true;
        h.add(3).await;
        match h.next_handed_back() {
            RestoreEvent::Failed(_, error) => {
                assert!(error.to_string().contains("watermarks"), "{error}")
            }
            RestoreEvent::Restored(..) => panic!("restored without its changelog's end"),
        }
        assert!(!h.restoring(3));
    }

    /// A store written through offset 50 of a changelog that now ends at 1 (deleted and
    /// recreated while the instance was down): restoring would silently start the counts over.
    #[tokio::test]
    async fn a_changelog_that_lost_what_the_state_was_written_from_fails_the_restore() {
        let mut h = harness();
        h.commit_store_written_through_50(b"kept");
        h.fake.append(0, "fresh", "1", 0);
        h.fake.state().committed.insert(0, 41); // the group still has its offsets
        h.add(0).await;
        match h.next_handed_back() {
            RestoreEvent::Failed(_, error) => {
                assert!(error.stops_the_instance(), "{error}");
                let message = error.to_string();
                assert!(message.contains(&changelog_topic()), "{message}");
                assert!(message.contains("written through offset 50"), "{message}");
                assert!(message.contains("kstreams-count reset"), "{message}");
            }
            RestoreEvent::Restored(..) => panic!("restored over a lost history"),
        }
        assert!(h.fake.state().assigns.is_empty(), "its changelog was read");
        let kept = h.open_store(0);
        assert_eq!(
            count_of(&kept, "kept").as_deref(),
            Some("99"),
            "the state was wiped"
        );
    }

    /// After `kstreams-count reset` (changelogs deleted, the group's offsets too) the local
    /// state of the ended history is wiped, and the task starts over from the new changelog.
    #[tokio::test]
    async fn after_a_reset_the_local_state_is_wiped_and_the_task_starts_over() {
        let mut h = harness();
        h.commit_store_written_through_50(b"old");
        h.fake.append(0, "new", "1", 0);
        h.add(0).await;
        let restored = restored(h.next_handed_back());
        assert_eq!(restored.outcome.wiped, Some("reset"));
        assert_eq!(restored.outcome.input_next, None, "input starts over");
        assert_eq!(count_of(&restored.store, "old"), None);
        assert_eq!(count_of(&restored.store, "new").as_deref(), Some("1"));
        let wipes = h.metrics.state_wipes.with_label_values(&["reset"]);
        assert_eq!(wipes.get(), 1);
    }

    /// The input partition ends below the group's committed offset (recreated).
    #[tokio::test]
    async fn an_input_partition_that_ends_below_the_commit_fails_the_restore() {
        let mut h = harness();
        h.fake.state().committed.insert(0, 500);
        h.fake.state().input_end = Some(20);
        h.fake.append(0, "k", "1", 0);
        h.add(0).await;
        match h.next_handed_back() {
            RestoreEvent::Failed(_, error) => {
                let message = error.to_string();
                assert!(message.contains(&format!("topic `{SOURCE}`")), "{message}");
                assert!(
                    message.contains("offset 500 was already committed"),
                    "{message}"
                );
            }
            RestoreEvent::Restored(..) => panic!("resumed past the input's end"),
        }
    }
}
