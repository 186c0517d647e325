//! The consumer's polling loop, on its own thread: fetches input, hands each poll's records to
//! the supervisor, commits on the interval, and resumes partitions whose tasks have restored.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use ractor::ActorRef;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::Offset;
use tokio::runtime::Handle;
use tracing::{debug, info, warn};

use crate::error::{EngineError, Result};
use crate::processor::InputRecord;
use crate::rebalance::RebalanceListener;
use crate::status::InstanceStatus;
use crate::supervisor::{ask, PollerCommand, SupervisorMsg};

/// Most records handed to tasks per poll round.
const MAX_RECORDS_PER_ROUND: usize = 2_000;
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
const SEEK_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Poller {
    pub(crate) consumer: BaseConsumer<RebalanceListener>,
    pub(crate) supervisor: ActorRef<SupervisorMsg>,
    pub(crate) runtime: Handle,
    pub(crate) commands: Receiver<PollerCommand>,
    pub(crate) shutdown: Arc<AtomicBool>,
    pub(crate) commit_interval: Duration,
    pub(crate) status: Arc<InstanceStatus>,
    /// A member that lost its assignment and has none this long after re-subscribes.
    pub(crate) rejoin_after: Duration,
    pub(crate) source_topic: String,
    /// Resumes whose seek failed: the partition stays paused and they are tried again.
    pub(crate) failed_resumes: Vec<(i32, Option<i64>)>,
}

impl Poller {
    /// Runs until `shutdown` is set, then commits, stops the tasks and leaves the group.
    pub fn run(mut self) -> Result<()> {
        let mut last_commit = Instant::now();
        while !self.shutdown.load(Ordering::Relaxed) {
            self.status.heartbeat();
            self.apply_commands();
            let batches = self.poll_round()?;
            if !batches.is_empty() {
                self.runtime
                    .block_on(ask(&self.supervisor, "supervisor", |reply| {
                        SupervisorMsg::Process(batches, reply)
                    }))??;
            }
            if last_commit.elapsed() >= self.commit_interval {
                self.commit()?;
                last_commit = Instant::now();
            }
            self.rejoin_if_stranded();
        }
        info!("shutting down: final commit");
        self.commit()?;
        self.runtime
            .block_on(ask(&self.supervisor, "supervisor", SupervisorMsg::StopAll))?;
        self.consumer.unsubscribe();
        info!("left the group; all tasks closed");
        Ok(())
    }

    /// After a lost assignment librdkafka rejoins by itself; a group that never hands this
    /// member anything again (seen with the local broker after another member died) is left
    /// by unsubscribing and joined afresh.
    fn rejoin_if_stranded(&self) {
        let Some(lost_for) = self.status.assignment_lost_for() else {
            return;
        };
        if lost_for < self.rejoin_after {
            return;
        }
        warn!(
            "no assignment {:.0} s after this member lost its partitions: leaving and rejoining the group",
            lost_for.as_secs_f64()
        );
        self.status.set_assignment_lost(); // the next try waits another full period
        self.consumer.unsubscribe();
        if let Err(e) = self.consumer.subscribe(&[self.source_topic.as_str()]) {
            warn!("re-subscribing to {} failed: {e}", self.source_topic);
        }
    }

    fn apply_commands(&mut self) {
        let retries = std::mem::take(&mut self.failed_resumes)
            .into_iter()
            .map(|(partition, next)| PollerCommand::Resume(partition, next));
        let commands: Vec<PollerCommand> = retries.chain(self.commands.try_iter()).collect();
        for command in commands {
            match command {
                PollerCommand::Resume(partition, next_offset) => {
                    self.resume(partition, next_offset)
                }
                PollerCommand::Pause(partition) => {
                    // A pending retry of a resume is void once the task pauses again.
                    self.failed_resumes.retain(|(p, _)| *p != partition);
                    self.pause(partition);
                }
            }
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

    fn commit(&self) -> Result<()> {
        let offsets = self.runtime.block_on(ask(
            &self.supervisor,
            "supervisor",
            SupervisorMsg::CommitAll,
        ))??;
        if offsets.is_empty() {
            return Ok(());
        }
        let tpl = self
            .consumer
            .context()
            .partition_list(offsets.into_iter().map(|(p, o)| (p, Some(o))));
        // State and offsets are already durable in each task's store, and a task skips input it
        // has applied, so a failed group commit only means re-reading some input later.
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Sync) {
            warn!("committing offsets to the group failed (will retry next interval): {e}");
        }
        Ok(())
    }
}
