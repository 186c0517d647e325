//! Restoring a task's stores from their changelog partitions: from the offset the task's own
//! RocksDB says it applied, up to the changelog's end, with progress in logs and metrics.
//! It also works out how far input processing had got, and which restored keys may still
//! owe their output (written to the changelog after the last commit).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::config::StreamsConfig;
use crate::error::{EngineError, Result};
use crate::metrics::EngineMetrics;
use crate::offsets::decode_changelog_value;
use crate::processor::StoreId;
use crate::status::TaskProgress;
use crate::task_id::TaskId;
use crate::task_store::{ChangelogUpdate, StoredOffsets, TaskStore};

const BATCH: usize = 10_000;
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes per partition per fetch. Smaller than librdkafka's 1 MiB default: on brokers that
/// answer in time proportional to the records returned (tansu), large fetches stall; on
/// Kafka 256 KiB per round trip still restores at hundreds of MB/s.
pub(crate) const FETCH_BYTES: &str = "262144";

/// What a restore did and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreOutcome {
    /// Changelog records applied (all stores).
    pub records: u64,
    /// Where input processing resumes: past everything the local store, the changelog
    /// changelog records and the group's committed offset say was applied.
    pub input_next: Option<i64>,
    /// Keys restored from changelog records whose input offset is at or past the last
    /// commit: their output may not have reached the broker, so they are re-emitted.
    pub replay: BTreeSet<(StoreId, Vec<u8>)>,
    /// Why the local state was wiped before restoring, if it was.
    pub wiped: Option<&'static str>,
}

/// What a task needs to know to restore.
pub struct RestoreRequest<'a> {
    pub task: TaskId,
    pub config: &'a StreamsConfig,
    pub source_topic: &'a str,
    pub metrics: &'a EngineMetrics,
    pub progress: &'a TaskProgress,
}

fn restore_consumer(request: &RestoreRequest<'_>) -> Result<BaseConsumer> {
    let config = request.config;
    // Same group id, but never subscribed: it only reads the group's committed offset.
    ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("group.id", config.group_id())
        .set(
            "client.id",
            format!("{}-{}-restore", config.application_id, request.task),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .set("max.partition.fetch.bytes", FETCH_BYTES)
        .create()
        .map_err(EngineError::kafka("create restore consumer"))
}

/// The group's committed input offset for the task's partition, if any.
fn group_committed(
    consumer: &BaseConsumer,
    source_topic: &str,
    partition: i32,
) -> Result<Option<i64>> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(source_topic, partition);
    let committed = consumer
        .committed_offsets(tpl, METADATA_TIMEOUT)
        .map_err(EngineError::kafka("read committed offset"))?;
    Ok(committed
        .find_partition(source_topic, partition)
        .and_then(|e| match e.offset() {
            Offset::Offset(o) if o >= 0 => Some(o),
            _ => None,
        }))
}

/// One task's restore in progress. It runs in steps of bounded time ([`Restore::step`]) so
/// that the task actor can handle other messages (a revocation, a stop) between them; all
/// progress is persisted in the store with each batch, so a stopped restore resumes later.
pub struct Restore {
    consumer: BaseConsumer,
    /// Input offsets at or past this one were not yet committed when the restore began.
    safe_from: i64,
    outcome: RestoreOutcome,
    started: Instant,
    last_report: Instant,
    /// The store whose changelog the consumer is assigned to; it keeps fetching between
    /// steps (re-assigning each step would throw away fetches in flight).
    assigned: Option<usize>,
}

impl Restore {
    /// Checks the local state against the changelogs (wiping it if it is ahead of them),
    /// reads the group's committed offset, and sizes the work.
    pub fn begin(request: &RestoreRequest<'_>, store: &mut TaskStore) -> Result<Self> {
        let task = request.task;
        let consumer = restore_consumer(request)?;
        let mut outcome = RestoreOutcome::default();
        let ends = changelog_ends(request, &consumer, store)?;
        let stored = store.read_offsets()?;
        let ahead = stored
            .changelog_next
            .iter()
            .zip(&ends)
            .any(|(local, (_, _, high))| local.is_some_and(|next| next > *high));
        if ahead {
            warn!(%task, "local state is ahead of its changelog (recreated?): wiping it and restoring fully");
            store.wipe()?;
            outcome.wiped = Some("ahead_of_changelog");
        }
        let offsets = store.read_offsets()?;
        let committed = group_committed(&consumer, request.source_topic, task.partition)?;
        outcome.input_next = offsets.input_next.max(committed);
        let mut total = 0u64;
        for (name, (topic, low, high)) in store.store_names().iter().zip(&ends) {
            let start = offsets.changelog_next[store_index(store, name)]
                .unwrap_or(0)
                .clamp(*low, *high);
            if start >= *high {
                info!(%task, store = %name, "store is up to date with its changelog (offset {high}), nothing to restore");
            } else {
                info!(%task, store = %name, "restoring {} changelog records from {topic} offsets {start}..{high}", high - start);
                total += (high - start) as u64;
            }
        }
        request.progress.add_restore_total(total);
        let [id, partition] = EngineMetrics::task_labels(task);
        request
            .metrics
            .restore_remaining
            .with_label_values(&[id.as_str(), partition.as_str()])
            .set(total as i64);
        Ok(Self {
            consumer,
            // Input below this offset was flushed (changelog and output) before a commit.
            safe_from: outcome.input_next.unwrap_or(0),
            outcome,
            started: Instant::now(),
            last_report: Instant::now(),
            assigned: None,
        })
    }

    /// Restores for up to about `budget`; `Ok(true)` once every store reached its changelog's end.
    pub fn step(
        &mut self,
        request: &RestoreRequest<'_>,
        store: &mut TaskStore,
        budget: Duration,
    ) -> Result<bool> {
        let task = request.task;
        let deadline = Instant::now() + budget;
        let [id, partition] = EngineMetrics::task_labels(task);
        let labels = [id.as_str(), partition.as_str()];
        let ends = changelog_ends(request, &self.consumer, store)?;
        let mut offsets = store.read_offsets()?;
        let mut remaining_total = 0i64;
        let mut done = true;
        for (index, (topic, low, high)) in ends.into_iter().enumerate() {
            let mut position = offsets.changelog_next[index].unwrap_or(0).clamp(low, high);
            if position >= high {
                if offsets.changelog_next[index] != Some(high) {
                    offsets.changelog_next[index] = Some(high);
                    store.apply_restored(StoreId(index), &[], &offsets)?;
                }
                continue;
            }
            if self.assigned != Some(index) {
                let mut assignment = TopicPartitionList::new();
                assignment
                    .add_partition_offset(&topic, task.partition, Offset::Offset(position))
                    .map_err(EngineError::kafka("assign changelog"))?;
                self.consumer
                    .assign(&assignment)
                    .map_err(EngineError::kafka("assign changelog"))?;
                self.assigned = Some(index);
            }
            let mut batch: Vec<ChangelogUpdate> = Vec::with_capacity(BATCH);
            while position < high && Instant::now() < deadline {
                match self.consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(message)) => {
                        position = position.max(message.offset() + 1);
                        let (input, value) = match message.payload() {
                            Some(bytes) => {
                                let (input, value) = decode_changelog_value(bytes);
                                (input, Some(value.to_vec()))
                            }
                            None => (None, None),
                        };
                        if let Some(input) = input {
                            self.outcome.input_next = self.outcome.input_next.max(Some(input + 1));
                        }
                        if let Some(key) = message.key() {
                            if input.is_some_and(|input| input >= self.safe_from) {
                                self.outcome.replay.insert((StoreId(index), key.to_vec()));
                            }
                            batch.push((key.to_vec(), value));
                        }
                    }
                    // The end as the broker sees it now (compaction may hide the last offsets).
                    Some(Err(KafkaError::PartitionEOF(_))) => position = high,
                    Some(Err(error)) => {
                        warn!(%task, changelog = %topic, "restore consumer: {error}; retrying")
                    }
                    None => {}
                }
                if batch.len() >= BATCH {
                    self.apply(
                        request,
                        store,
                        &mut offsets,
                        index,
                        position,
                        &mut batch,
                        &labels,
                    )?;
                }
            }
            self.apply(
                request,
                store,
                &mut offsets,
                index,
                position,
                &mut batch,
                &labels,
            )?;
            remaining_total += (high - position).max(0);
            if position < high {
                done = false;
                break;
            }
        }
        request
            .metrics
            .restore_remaining
            .with_label_values(&labels)
            .set(remaining_total);
        if !done && self.last_report.elapsed() >= PROGRESS_EVERY {
            self.last_report = Instant::now();
            info!(%task, "restore progress: {} records applied, {remaining_total} to go", self.outcome.records);
        }
        Ok(done)
    }

    /// Writes a batch and the restore's position in one RocksDB batch.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        request: &RestoreRequest<'_>,
        store: &mut TaskStore,
        offsets: &mut StoredOffsets,
        index: usize,
        position: i64,
        batch: &mut Vec<ChangelogUpdate>,
        labels: &[&str; 2],
    ) -> Result<()> {
        offsets.changelog_next[index] = Some(position);
        offsets.input_next = offsets.input_next.max(self.outcome.input_next);
        store.apply_restored(StoreId(index), batch, offsets)?;
        let n = batch.len() as u64;
        self.outcome.records += n;
        request
            .metrics
            .restore_records
            .with_label_values(labels)
            .inc_by(n);
        request.progress.add_restored(n);
        batch.clear();
        Ok(())
    }

    /// What the finished restore found.
    pub fn finish(self, task: TaskId) -> RestoreOutcome {
        let elapsed = self.started.elapsed();
        info!(
            %task,
            "restored {} records in {:.3}s ({:.0} records/s)",
            self.outcome.records,
            elapsed.as_secs_f64(),
            self.outcome.records as f64 / elapsed.as_secs_f64().max(1e-9)
        );
        self.outcome
    }
}

fn store_index(store: &TaskStore, name: &str) -> usize {
    store
        .store_names()
        .iter()
        .position(|n| n == name)
        .expect("store names come from the store")
}

/// Per store: changelog topic, low and high watermark of the task's partition.
fn changelog_ends(
    request: &RestoreRequest<'_>,
    consumer: &BaseConsumer,
    store: &TaskStore,
) -> Result<Vec<(String, i64, i64)>> {
    store
        .store_names()
        .iter()
        .map(|name| {
            let topic = request.config.changelog_topic(name);
            let (low, high) = consumer
                .fetch_watermarks(&topic, request.task.partition, METADATA_TIMEOUT)
                .map_err(EngineError::kafka("read changelog watermarks"))?;
            Ok((topic, low, high))
        })
        .collect()
}
