//! Restoring a task's stores from their changelog partitions: from the offset the task's own
//! RocksDB says it applied, up to the changelog's end, with progress in logs and metrics.
//! It also works out where input resumes (the task's own last commit or the group's, never
//! past it) and records, durably, which restored keys may still owe their output.

use std::collections::HashMap;
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
use crate::task_store::{ChangelogUpdate, TaskStore};

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
    /// Where input processing resumes: the task's own last commit or the group's, whichever
    /// is further. Never past them: a write-out can be cut short at any record, so what the
    /// changelog holds beyond a commit says nothing about the keys whose records did not land
    /// (their input is read again; per-key versions skip what is already applied).
    pub input_next: Option<i64>,
    /// Restored keys newly marked as owing their output (changelog records at or past the
    /// resume point: their output may not have reached the broker). The marks are kept in the
    /// task's store until a commit has flushed the re-emitted output.
    pub replay_marked: u64,
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

/// Brings every store of `store` up to its changelog's end.
pub fn restore_task(request: &RestoreRequest<'_>, store: &mut TaskStore) -> Result<RestoreOutcome> {
    let task = request.task;
    let consumer = restore_consumer(request)?;
    let labels = EngineMetrics::task_labels(task);
    let labels = [labels[0].as_str(), labels[1].as_str()];
    let mut outcome = RestoreOutcome::default();

    // Work out the changelog ends first: local state ahead of its changelog comes from
    // another history (the changelog was recreated) and is not trusted.
    let store_names = store.store_names().to_vec();
    let mut watermarks = Vec::new();
    for name in &store_names {
        let topic = request.config.changelog_topic(name);
        let (low, high) = consumer
            .fetch_watermarks(&topic, task.partition, METADATA_TIMEOUT)
            .map_err(EngineError::kafka("read changelog watermarks"))?;
        watermarks.push((topic, low, high));
    }
    let stored = store.read_offsets()?;
    let ahead = stored
        .changelog_next
        .iter()
        .zip(&watermarks)
        .any(|(local, (_, _, high))| local.is_some_and(|next| next > *high));
    if ahead {
        warn!(%task, "local state is ahead of its changelog (recreated?): wiping it and restoring fully");
        store.wipe()?;
        outcome.wiped = Some("ahead_of_changelog");
    }
    let mut offsets = store.read_offsets()?;
    let committed = group_committed(&consumer, request.source_topic, task.partition)?;
    // Input below this offset was flushed (changelog and output) before a commit; input
    // resumes here. The changelog may hold records of later input (a write-out cut short, or
    // a previous owner's last window), but only some of them: a write-out sends one record
    // per key, in no input order, so the keys whose records did not land must see their
    // input again. Re-processing skips what a key's restored version already reflects.
    outcome.input_next = offsets.input_next.max(committed);
    let safe_from = outcome.input_next.unwrap_or(0);

    for (index, (name, (topic, low, high))) in store_names.iter().zip(watermarks).enumerate() {
        let start = offsets.changelog_next[index].unwrap_or(0).clamp(low, high);
        if start >= high {
            info!(%task, store = %name, "store is up to date with its changelog (offset {high}), nothing to restore");
            offsets.changelog_next[index] = Some(high);
            continue;
        }
        let total = (high - start) as u64;
        request.progress.add_restore_total(total);
        info!(%task, store = %name, "restoring {total} changelog records from {topic} offsets {start}..{high}");
        request
            .metrics
            .restore_remaining
            .with_label_values(&labels)
            .set(total as i64);
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&topic, task.partition, Offset::Offset(start))
            .map_err(EngineError::kafka("assign changelog"))?;
        consumer
            .assign(&assignment)
            .map_err(EngineError::kafka("assign changelog"))?;

        let started = Instant::now();
        let mut last_report = Instant::now();
        let mut batch: Vec<ChangelogUpdate> = Vec::with_capacity(BATCH);
        let mut position = start;
        let mut applied = 0u64;
        let mut skipped = 0u64;
        // Newest input offset per key in the batch not yet applied to the store.
        let mut batch_versions: HashMap<Vec<u8>, i64> = HashMap::new();
        // Keys of the batch that owe their output (marked in the same write as the batch).
        let mut replay: Vec<Vec<u8>> = Vec::new();
        while position < high {
            match consumer.poll(Duration::from_millis(500)) {
                Some(Ok(message)) => {
                    position = position.max(message.offset() + 1);
                    let payload = message.payload();
                    let input = payload.and_then(|bytes| decode_changelog_value(bytes).0);
                    if let Some(key) = message.key() {
                        // Each changelog value is the key's state as of its input offset, so
                        // the newest offset wins, not the newest write: two owners of one
                        // partition for a while (a zombie, or a broker handing a partition out
                        // early) interleave their writes.
                        let current = match batch_versions.get(key) {
                            Some(version) => Some(*version),
                            None => store.version(StoreId(index), key)?,
                        };
                        if input.is_some_and(|input| current.is_some_and(|c| c > input)) {
                            skipped += 1;
                        } else {
                            if let Some(input) = input {
                                batch_versions.insert(key.to_vec(), input);
                                if input >= safe_from {
                                    replay.push(key.to_vec());
                                }
                            }
                            batch.push((key.to_vec(), payload.map(<[u8]>::to_vec)));
                        }
                    }
                }
                // The end as the broker sees it now (compaction may hide the last offsets).
                Some(Err(KafkaError::PartitionEOF(_))) => position = high,
                Some(Err(error)) => {
                    warn!(%task, changelog = %topic, "restore consumer: {error}; retrying")
                }
                None => {}
            }
            if batch.len() >= BATCH || (position >= high && !batch.is_empty()) {
                offsets.changelog_next[index] = Some(position);
                offsets.input_next = outcome.input_next;
                store.apply_restored(StoreId(index), &batch, &replay, &offsets)?;
                outcome.replay_marked += replay.len() as u64;
                replay.clear();
                batch_versions.clear();
                let n = batch.len() as u64;
                applied += n;
                request
                    .metrics
                    .restore_records
                    .with_label_values(&labels)
                    .inc_by(n);
                request.progress.add_restored(n);
                batch.clear();
            }
            let remaining = (high - position).max(0);
            request
                .metrics
                .restore_remaining
                .with_label_values(&labels)
                .set(remaining);
            if last_report.elapsed() >= PROGRESS_EVERY {
                last_report = Instant::now();
                info!(%task, store = %name, "restore progress {} / {total}", total - remaining as u64);
            }
        }
        offsets.changelog_next[index] = Some(high);
        store.apply_restored(StoreId(index), &[], &[], &offsets)?;
        outcome.records += applied;
        request.progress.add_restored(skipped);
        let elapsed = started.elapsed();
        if skipped > 0 {
            warn!(%task, store = %name, "skipped {skipped} changelog records older than the state they would overwrite (written by an overlapping previous owner)");
        }
        info!(
            %task, store = %name,
            "restored {applied} records in {:.3}s ({:.0} records/s)",
            elapsed.as_secs_f64(),
            applied as f64 / elapsed.as_secs_f64().max(1e-9)
        );
    }
    request
        .metrics
        .restore_remaining
        .with_label_values(&labels)
        .set(0);
    Ok(outcome)
}
