//! Restoring a task's stores from their changelog partitions: from the offset the task's own
//! RocksDB says it applied, up to the changelog's end, with progress in logs and metrics.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::config::StreamsConfig;
use crate::error::{EngineError, Result};
use crate::metrics::EngineMetrics;
use crate::offsets::{decode_offset, INPUT_OFFSET_HEADER};
use crate::processor::StoreId;
use crate::status::TaskProgress;
use crate::task_id::TaskId;
use crate::task_store::{ChangelogUpdate, TaskStore};

const BATCH: usize = 10_000;
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// What a restore did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RestoreOutcome {
    /// Changelog records applied (all stores).
    pub records: u64,
    /// One past the highest input offset named by a restored changelog record.
    pub input_next: Option<i64>,
}

/// Brings every store of `store` up to its changelog's end.
pub fn restore_task(
    task: TaskId,
    config: &StreamsConfig,
    store: &mut TaskStore,
    metrics: &EngineMetrics,
    progress: &TaskProgress,
) -> Result<RestoreOutcome> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("group.id", format!("{}-restore", config.application_id))
        .set(
            "client.id",
            format!("{}-{task}-restore", config.application_id),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(EngineError::kafka("create restore consumer"))?;
    let labels = EngineMetrics::task_labels(task);
    let labels = [labels[0].as_str(), labels[1].as_str()];
    let mut outcome = RestoreOutcome::default();
    let mut offsets = store.read_offsets()?;
    let store_names = store.store_names().to_vec();
    for (index, name) in store_names.iter().enumerate() {
        let topic = config.changelog_topic(name);
        let (low, high) = consumer
            .fetch_watermarks(&topic, task.partition, Duration::from_secs(10))
            .map_err(EngineError::kafka("read changelog watermarks"))?;
        let local = offsets.changelog_next[index];
        if local.is_some_and(|next| next > high) {
            warn!(
                %task, changelog = %topic, local_offset = local.unwrap_or_default(), changelog_end = high,
                "local state is ahead of its changelog (the changelog was recreated?); restoring on top of it"
            );
        }
        let start = local.unwrap_or(0).clamp(low, high);
        if start >= high {
            info!(%task, store = %name, "store is up to date with its changelog (offset {high}), nothing to restore");
            offsets.changelog_next[index] = Some(high);
            continue;
        }
        let total = (high - start) as u64;
        progress.add_restore_total(total);
        info!(%task, store = %name, "restoring {total} changelog records from {topic} offsets {start}..{high}");
        metrics
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
        while position < high {
            match consumer.poll(Duration::from_millis(500)) {
                Some(Ok(message)) => {
                    position = position.max(message.offset() + 1);
                    if let Some(input) = message
                        .headers()
                        .and_then(|h| h.iter().find(|h| h.key == INPUT_OFFSET_HEADER))
                        .and_then(|h| h.value.and_then(decode_offset))
                    {
                        outcome.input_next = outcome.input_next.max(Some(input + 1));
                    }
                    if let Some(key) = message.key() {
                        batch.push((key.to_vec(), message.payload().map(<[u8]>::to_vec)));
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    // The end as the broker sees it now: compaction may have removed the tail's
                    // last offsets from view, so the high watermark may never be reached.
                    position = high;
                }
                Some(Err(error)) => {
                    warn!(%task, changelog = %topic, "restore consumer: {error}; retrying")
                }
                None => {}
            }
            if batch.len() >= BATCH || (position >= high && !batch.is_empty()) {
                offsets.changelog_next[index] = Some(position);
                offsets.input_next = offsets.input_next.max(outcome.input_next);
                store.apply_restored(StoreId(index), &batch, &offsets)?;
                let n = batch.len() as u64;
                applied += n;
                metrics.restore_records.with_label_values(&labels).inc_by(n);
                progress.add_restored(n);
                batch.clear();
            }
            let remaining = (high - position).max(0);
            metrics
                .restore_remaining
                .with_label_values(&labels)
                .set(remaining);
            if last_report.elapsed() >= PROGRESS_EVERY {
                last_report = Instant::now();
                info!(%task, store = %name, "restore progress {} / {total}", total - remaining as u64);
            }
        }
        offsets.changelog_next[index] = Some(high);
        store.apply_restored(StoreId(index), &[], &offsets)?;
        outcome.records += applied;
        let elapsed = started.elapsed();
        info!(
            %task, store = %name,
            "restored {applied} records in {:.3}s ({:.0} records/s)",
            elapsed.as_secs_f64(),
            applied as f64 / elapsed.as_secs_f64().max(1e-9)
        );
    }
    metrics.restore_remaining.with_label_values(&labels).set(0);
    Ok(outcome)
}
