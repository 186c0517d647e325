//! The state updater: one thread with one restore consumer that restores every restoring task
//! of the instance, in bounded steps, beside processing (Kafka Streams' `DefaultStateUpdater`).
//! A task hands it its store; it gives the store back once caught up. A task that stops while
//! restoring leaves it within one step, with its progress written. A restore that makes no
//! progress for a while is reported and its changelogs read again from where it stood.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use ractor::ActorRef;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, error, info, warn};

use crate::clients::{client_config, setting_error, ClientRole};
use crate::config::StreamsConfig;
use crate::error::{EngineError, Result};
use crate::failpoints;
use crate::metrics::EngineMetrics;
use crate::runtime::restore::TaskRestore;
use crate::runtime::wiring::{RestoreEvent, RestoredStore, RestoringTask, TaskMsg};
use crate::task_id::TaskId;

/// Most records one step takes from the restore consumer before looking at its commands.
const STEP_RECORDS: usize = 5_000;
/// Longest a step reads before looking at its commands.
const STEP_TIME: Duration = Duration::from_millis(200);
const POLL_WAIT: Duration = Duration::from_millis(50);
/// How long the updater waits for a command when it has nothing to restore.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// How long the updater waits for a command while a task's restore is being prepared.
const PREPARING_WAIT: Duration = Duration::from_millis(20);
/// A restore that reads nothing this long is reported and its changelogs fetched afresh.
pub(crate) const RESTORE_STALL: Duration = Duration::from_secs(30);

pub enum UpdaterCommand {
    /// Restore this task's stores; it is handed back (restored or failed) through the channel
    /// the consumer loop drains.
    Add(Box<RestoringTask>),
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

    /// Takes the task out of the updater and waits (up to `wait`) until its store is closed.
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

/// Starts the state updater thread with its restore consumer.
pub fn start(
    config: Arc<StreamsConfig>,
    source_topic: String,
    metrics: EngineMetrics,
    handed_back: Sender<RestoreEvent>,
) -> Result<(StateUpdaterHandle, JoinHandle<()>)> {
    let consumer = Arc::new(restore_consumer(&config)?);
    let (commands, inbox) = crossbeam_channel::unbounded();
    let (prepared_tx, prepared) = crossbeam_channel::unbounded();
    let updater = StateUpdater {
        consumer,
        config,
        source_topic,
        metrics,
        handed_back,
        inbox,
        prepared_tx,
        prepared,
        preparing: HashMap::new(),
        next_preparation: 0,
        tasks: BTreeMap::new(),
    };
    let thread = std::thread::Builder::new()
        .name("kstreams-restore".into())
        .spawn(move || updater.run())
        .map_err(|e| EngineError::actor("state updater", e))?;
    Ok((StateUpdaterHandle { commands }, thread))
}

fn restore_consumer(config: &StreamsConfig) -> Result<BaseConsumer> {
    client_config(config, ClientRole::Restore)
        .create()
        .map_err(|e| setting_error(&config.client_settings, e))
}

struct Restoring {
    restore: TaskRestore,
    owner: ActorRef<TaskMsg>,
}

/// A task's restore worked out off the updater's thread (it asks the broker for the
/// changelogs' ends and the group's offset, which can take seconds on a busy broker).
struct Prepared {
    id: u64,
    owner: ActorRef<TaskMsg>,
    task: TaskId,
    restore: Result<TaskRestore>,
}

struct StateUpdater {
    consumer: Arc<BaseConsumer>,
    config: Arc<StreamsConfig>,
    source_topic: String,
    metrics: EngineMetrics,
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
}

impl StateUpdater {
    fn run(mut self) {
        loop {
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
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while let Ok(command) = self.inbox.try_recv() {
                self.apply(command);
            }
            while let Ok(prepared) = self.prepared.try_recv() {
                self.start(prepared);
            }
            if !self.tasks.is_empty() {
                self.step();
                self.hand_back_restored();
                self.refetch_stalled();
            }
        }
        debug!("state updater stopped");
    }

    fn apply(&mut self, command: UpdaterCommand) {
        match command {
            UpdaterCommand::Add(task) => self.add(*task),
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
                    match restoring.restore.abandon() {
                        Ok(store) => drop(store),
                        Err(e) => warn!(%task, "writing the restore's last batch failed: {e}"),
                    }
                    info!(%task, "restore stopped with {remaining} changelog records left (the task is stopping); progress kept");
                }
                let _ = closed.send(());
            }
        }
    }

    /// Works the task's restore out on a short-lived thread, so that a slow broker answer
    /// holds up neither the other restores nor a stopping task.
    fn add(&mut self, task: RestoringTask) {
        let RestoringTask {
            task,
            store,
            progress,
            owner,
        } = task;
        let id = self.next_preparation;
        self.next_preparation += 1;
        self.preparing.insert(id, (task, true));
        let (consumer, config) = (self.consumer.clone(), self.config.clone());
        let (source_topic, metrics) = (self.source_topic.clone(), self.metrics.clone());
        let done = self.prepared_tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("kstreams-restore-{task}"))
            .spawn(move || {
                let restore = TaskRestore::begin(
                    task,
                    store,
                    progress,
                    &consumer,
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

    fn changelog_list(restore: &TaskRestore, with_offsets: bool) -> Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        for (_, changelog) in restore.unfinished() {
            match with_offsets {
                true => tpl
                    .add_partition_offset(
                        &changelog.topic,
                        restore.task.partition,
                        Offset::Offset(changelog.position),
                    )
                    .map_err(EngineError::kafka("assign changelog"))?,
                false => {
                    tpl.add_partition(&changelog.topic, restore.task.partition);
                }
            }
        }
        Ok(tpl)
    }

    fn assign(&self, restore: &TaskRestore) {
        let assigned = Self::changelog_list(restore, true).and_then(|tpl| {
            self.consumer
                .incremental_assign(&tpl)
                .map_err(EngineError::kafka("assign changelog"))
        });
        if let Err(e) = assigned {
            warn!(task = %restore.task, "{e}; retried when the restore is seen stalled");
        }
    }

    fn unassign(&self, restore: &TaskRestore) {
        let unassigned = Self::changelog_list(restore, false).and_then(|tpl| {
            self.consumer
                .incremental_unassign(&tpl)
                .map_err(EngineError::kafka("unassign changelog"))
        });
        if let Err(e) = unassigned {
            debug!(task = %restore.task, "{e}");
        }
    }

    /// Reads for at most [`STEP_RECORDS`] records or [`STEP_TIME`], routing each record to its
    /// task's restore.
    fn step(&mut self) {
        if let Some(delay) = failpoints::number(failpoints::RESTORE_STEP_DELAY) {
            std::thread::sleep(Duration::from_millis(delay as u64));
        }
        let deadline = Instant::now() + STEP_TIME;
        for _ in 0..STEP_RECORDS {
            match self.consumer.poll(POLL_WAIT) {
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
            if Instant::now() >= deadline {
                break;
            }
        }
    }

    /// A changelog partition of this number has nothing more to read now: its stores whose
    /// fetch position reached their restore's end are done.
    fn reached_end(&mut self, partition: i32) {
        let Some(restoring) = self.tasks.get_mut(&partition) else {
            return;
        };
        let positions = match self.consumer.position() {
            Ok(positions) => positions,
            Err(e) => return debug!(partition, "reading restore positions: {e}"),
        };
        let ends: Vec<(usize, i64)> = restoring
            .restore
            .unfinished()
            .filter_map(|(index, changelog)| {
                let element = positions.find_partition(&changelog.topic, partition)?;
                match element.offset() {
                    Offset::Offset(end) if end >= changelog.high => Some((index, end)),
                    _ => None,
                }
            })
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
            let Some(Restoring { restore, owner }) = self.tasks.remove(&partition) else {
                continue;
            };
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

    fn fail(&self, owner: ActorRef<TaskMsg>, task: TaskId, error: EngineError) {
        error!(%task, "restore failed: {error}");
        let _ = self.handed_back.send(RestoreEvent::Failed(owner, error));
    }

    /// Restores that read nothing for [`RESTORE_STALL`] are reported and fetched afresh.
    fn refetch_stalled(&mut self) {
        for restoring in self.tasks.values_mut() {
            let restore = &mut restoring.restore;
            if restore.last_progress.elapsed() < RESTORE_STALL {
                continue;
            }
            let at: Vec<String> = restore
                .unfinished()
                .map(|(_, c)| {
                    format!(
                        "{}[{}] at {} of {}",
                        c.topic, restore.task.partition, c.position, c.high
                    )
                })
                .collect();
            warn!(task = %restore.task, "restore made no progress for {RESTORE_STALL:?} ({}); fetching its changelogs again", at.join(", "));
            self.metrics.restore_stalls.inc();
            restore.last_progress = Instant::now();
            let task_restore: &TaskRestore = restore;
            let refetched = Self::changelog_list(task_restore, true).and_then(|tpl| {
                let plain = Self::changelog_list(task_restore, false)?;
                let _ = self.consumer.incremental_unassign(&plain);
                self.consumer
                    .incremental_assign(&tpl)
                    .map_err(EngineError::kafka("assign changelog"))
            });
            if let Err(e) = refetched {
                warn!(task = %task_restore.task, "{e}");
            }
        }
    }
}
