//! The engine's Prometheus metrics: one registry per instance, labelled by application id,
//! and the handles tasks use to update them.

use std::sync::Arc;

use prometheus::core::Collector;
use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::status::{InstanceLifecycle, InstanceStatus};
use crate::task_id::TaskId;

/// All metrics of one engine instance.
#[derive(Clone)]
pub struct EngineMetrics {
    registry: Registry,
    /// The topology's input topic: the lag gauge's `topic` label.
    input_topic: Arc<str>,
    pub(crate) records_processed: IntCounterVec,
    pub(crate) records_skipped: IntCounterVec,
    pub(crate) output_records: IntCounterVec,
    pub(crate) changelog_records: IntCounterVec,
    pub(crate) end_to_end_latency: HistogramVec,
    pub(crate) consumer_lag: IntGaugeVec,
    pub(crate) restore_records: IntCounterVec,
    pub(crate) restore_remaining: IntGaugeVec,
    pub(crate) standby_records: IntCounterVec,
    pub(crate) standby_lag: IntGaugeVec,
    pub(crate) standby_tasks: IntGauge,
    pub(crate) standby_lag_max: IntGauge,
    pub(crate) restore_duration: Histogram,
    pub(crate) tasks_restoring: IntGauge,
    pub(crate) tasks_running: IntGauge,
    pub(crate) restore_stalls: IntCounter,
    pub(crate) changelog_foreign_records: IntCounterVec,
    pub(crate) store_size: IntGaugeVec,
    pub(crate) commits: IntCounter,
    pub(crate) commit_failures: IntCounter,
    pub(crate) transactions: IntCounterVec,
    pub(crate) commit_duration: Histogram,
    pub(crate) rebalances: IntCounter,
    pub(crate) tasks_assigned: IntCounter,
    pub(crate) tasks_revoked: IntCounter,
    pub(crate) tasks_lost: IntCounter,
    pub(crate) rebalance_paused: prometheus::Counter,
    pub(crate) state_wipes: IntCounterVec,
    pub(crate) task_restarts: IntCounter,
    pub(crate) state_dirs_removed: IntCounter,
    pub(crate) state_cache_bytes: IntGauge,
    pub(crate) state_write_out_bytes: IntGauge,
    pub(crate) state_cache_flushes: IntCounterVec,
    pub(crate) rocksdb_memory_bytes: IntGauge,
    pub(crate) memory_budget: IntGaugeVec,
    pub(crate) build_info: IntGaugeVec,
    pub(crate) instance_ready: IntGauge,
    pub(crate) instance_state: IntGaugeVec,
    pub(crate) rebalance_duration: Histogram,
    pub(crate) process_batch_duration: Histogram,
    pub(crate) produce_ack_latency: Histogram,
    pub(crate) produce_errors: IntCounter,
    pub(crate) broker_rtt: prometheus::GaugeVec,
    pub(crate) broker_errors: IntCounterVec,
}

fn register<M: Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.expect("valid metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

const TASK: &[&str] = &["task_id", "partition"];

/// CPU time this process has used so far (user and system, every thread), milliseconds;
/// `None` where /proc is not there.
#[cfg(target_os = "linux")]
pub fn process_cpu_ms() -> Option<u64> {
    let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
    let ticks = stat.utime + stat.stime;
    Some(ticks * 1000 / procfs::ticks_per_second().max(1))
}

#[cfg(not(target_os = "linux"))]
pub fn process_cpu_ms() -> Option<u64> {
    None
}

/// This process's peak resident set size (VmHWM), KiB; `None` where /proc is not there.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl EngineMetrics {
    pub(crate) fn new(application_id: &str, input_topic: &str) -> Self {
        let labels = [("application_id".to_string(), application_id.to_string())].into();
        let registry = Registry::new_custom(None, Some(labels)).expect("valid registry labels");
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process collector registered once");
        let r = &registry;
        let opts = Opts::new;
        let seconds = |name: &str, help: &str, buckets: Vec<f64>| {
            HistogramOpts::new(name, help).buckets(buckets)
        };
        let latency_buckets = exponential_buckets(0.001, 2.0, 16).expect("valid buckets");
        let metrics = Self {
            records_processed: register(r, IntCounterVec::new(opts("kstreams_records_processed_total", "Input records processed"), TASK)),
            records_skipped: register(r, IntCounterVec::new(
                opts("kstreams_records_skipped_total", "Input records skipped, by reason (null_key, null_value, deserialization_error)"),
                &["task_id", "partition", "reason"],
            )),
            output_records: register(r, IntCounterVec::new(opts("kstreams_output_records_total", "Records written to output topics"), TASK)),
            changelog_records: register(r, IntCounterVec::new(opts("kstreams_changelog_records_written_total", "Records written to changelog topics"), TASK)),
            end_to_end_latency: register(r, HistogramVec::new(
                seconds("kstreams_end_to_end_latency_seconds", "From an input record's timestamp to its processing", latency_buckets.clone()),
                TASK,
            )),
            consumer_lag: register(r, IntGaugeVec::new(opts("kstreams_consumer_lag_records", "Input records behind the partition's high watermark"), &["topic", "task_id", "partition"])),
            restore_records: register(r, IntCounterVec::new(opts("kstreams_restore_records_total", "Changelog records applied while restoring"), TASK)),
            restore_remaining: register(r, IntGaugeVec::new(
                opts("kstreams_restore_remaining_records", "Changelog records left to restore (0 when not restoring)"),
                TASK,
            )),
            standby_records: register(r, IntCounterVec::new(opts("kstreams_standby_records_total", "Changelog records a standby replica applied"), TASK)),
            standby_lag: register(r, IntGaugeVec::new(
                opts("kstreams_standby_lag_records", "Changelog records a standby replica's store is behind: what its promotion would restore"),
                TASK,
            )),
            standby_tasks: register(r, IntGauge::new("kstreams_standby_tasks", "Standby replicas this instance keeps warm")),
            standby_lag_max: register(r, IntGauge::new("kstreams_standby_lag_max_records", "The largest lag among this instance's standby replicas (0 without standbys)")),
            restore_duration: register(r, Histogram::with_opts(seconds(
                "kstreams_restore_duration_seconds",
                "Time a task spent restoring its stores",
                exponential_buckets(0.01, 2.0, 16).expect("valid buckets"),
            ))),
            tasks_restoring: register(r, IntGauge::new("kstreams_tasks_restoring", "Tasks currently restoring")),
            tasks_running: register(r, IntGauge::new("kstreams_tasks_running", "Tasks currently processing")),
            restore_stalls: register(r, IntCounter::new("kstreams_restore_stalls_total", "Restores that read nothing for 30 s and had their changelogs fetched again")),
            changelog_foreign_records: register(r, IntCounterVec::new(
                opts("kstreams_changelog_foreign_records_total", "Records of another writer found between or after a task's own changelog records: two instances wrote one partition for a while (a zombie); the task restored them"),
                TASK,
            )),
            store_size: register(r, IntGaugeVec::new(opts("kstreams_state_store_size_bytes", "Estimated live data in the task's RocksDB"), TASK)),
            commits: register(r, IntCounter::new("kstreams_commits_total", "Commits of all tasks")),
            commit_failures: register(r, IntCounter::new("kstreams_commit_failures_total", "Commits that failed")),
            transactions: register(r, IntCounterVec::new(
                opts("kstreams_transactions_total", "Exactly-once: task transactions by outcome (committed; aborted: failed, the task restarted from its last commit; fenced: a newer owner of the task registered its transactional id)"),
                &["outcome"],
            )),
            commit_duration: register(r, Histogram::with_opts(seconds(
                "kstreams_commit_duration_seconds",
                "From the start of a task's commit write-out (changelog and output records sent) until its state and offsets are in RocksDB",
                latency_buckets,
            ))),
            rebalances: register(r, IntCounter::new("kstreams_rebalances_total", "Assignment changes seen")),
            tasks_assigned: register(r, IntCounter::new("kstreams_tasks_assigned_total", "Tasks started by an assignment")),
            tasks_revoked: register(r, IntCounter::new("kstreams_tasks_revoked_total", "Tasks stopped by a revocation")),
            tasks_lost: register(r, IntCounter::new("kstreams_tasks_lost_total", "Tasks dropped because the assignment was lost")),
            rebalance_paused: register(r, prometheus::Counter::new(
                "kstreams_rebalance_paused_seconds_total",
                "Time partitions spent paused by rebalances: handing over revoked tasks and restoring assigned ones",
            )),
            state_wipes: register(r, IntCounterVec::new(
                opts("kstreams_state_wipes_total", "Task states wiped as untrusted, by reason (open_failed, missing_offsets, old_format, reset)"),
                &["reason"],
            )),
            task_restarts: register(r, IntCounter::new("kstreams_task_restarts_total", "Failed tasks restarted from their last committed state")),
            state_dirs_removed: register(r, IntCounter::new("kstreams_state_dirs_removed_total", "Task directories deleted after the cleanup delay")),
            state_cache_bytes: register(r, IntGauge::new(
                "kstreams_state_cache_bytes",
                "Bytes of uncommitted state held in the tasks' write-back caches (bounded by --cache-max-bytes)",
            )),
            memory_budget: register(r, IntGaugeVec::new(
                opts("kstreams_memory_budget_bytes", "Memory budget per part (record_cache, write_outs, producer_queues: per open task producer, input_prefetch, restore_prefetch, rocksdb_block_cache, rocksdb_memtables); the parts add up to the instance's footprint beyond the program itself"),
                &["part"],
            )),
            state_write_out_bytes: register(r, IntGauge::new(
                "kstreams_state_write_out_bytes",
                "Bytes of written-out state held (and read) until the broker acknowledges its changelog records; at most one write-out per task, so at most --cache-max-bytes",
            )),
            state_cache_flushes: register(r, IntCounterVec::new(
                opts("kstreams_state_cache_flushes_total", "Early write-outs of a task's cache between commits, because the caches were over --cache-max-bytes"),
                TASK,
            )),
            rocksdb_memory_bytes: register(r, IntGauge::new(
                "kstreams_rocksdb_memory_bytes",
                "RocksDB block cache and memtable bytes, all tasks (bounded by --rocksdb-block-cache-bytes and --rocksdb-write-buffer-bytes)",
            )),
            build_info: register(r, IntGaugeVec::new(
                opts("kstreams_build_info", "Always 1: the engine's version and the librdkafka it runs"),
                &["version", "rdkafka_version"],
            )),
            instance_ready: register(r, IntGauge::new(
                "kstreams_instance_ready",
                "1 when /health/ready answers 200 (in the group, assignment held, every task running)",
            )),
            instance_state: register(r, IntGaugeVec::new(
                opts("kstreams_instance_state", "1 for the instance's current state: joining, restoring, running or stopping"),
                &["state"],
            )),
            rebalance_duration: register(r, Histogram::with_opts(seconds(
                "kstreams_rebalance_duration_seconds",
                "Time to apply an assignment change (revocations committed, tasks started or stopped)",
                exponential_buckets(0.001, 2.0, 20).expect("valid buckets"),
            ))),
            process_batch_duration: register(r, Histogram::with_opts(seconds(
                "kstreams_process_batch_duration_seconds",
                "Time a task spends processing one batch of input records",
                exponential_buckets(0.0001, 2.0, 18).expect("valid buckets"),
            ))),
            produce_ack_latency: register(r, Histogram::with_opts(seconds(
                "kstreams_produce_ack_latency_seconds",
                "From sending a changelog or output record to the broker's acknowledgement",
                exponential_buckets(0.0005, 2.0, 18).expect("valid buckets"),
            ))),
            produce_errors: register(r, IntCounter::new(
                "kstreams_produce_errors_total",
                "Changelog and output records the broker refused or that timed out",
            )),
            broker_rtt: register(r, prometheus::GaugeVec::new(
                opts("kstreams_broker_rtt_seconds", "Request round-trip time to each broker as librdkafka measured it over its last statistics window"),
                &["broker", "percentile"],
            )),
            broker_errors: register(r, IntCounterVec::new(
                opts("kstreams_broker_errors_total", "Request errors and timeouts to each broker (librdkafka: txerrs + rxerrs + req_timeouts)"),
                &["broker"],
            )),
            registry,
            input_topic: input_topic.into(),
        };
        metrics
            .build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                &rdkafka::util::get_rdkafka_version().1,
            ])
            .set(1);
        metrics
    }

    /// Sets the instance-level gauges from its status (at every scrape).
    pub(crate) fn observe_instance(&self, status: &InstanceStatus) {
        let (restoring, running) = status.phase_counts();
        self.tasks_restoring.set(restoring as i64);
        self.tasks_running.set(running as i64);
        let standby_lags = status.standby_lags();
        self.standby_tasks.set(standby_lags.len() as i64);
        let max_lag = standby_lags.iter().filter_map(|(_, lag)| *lag).max();
        self.standby_lag_max.set(max_lag.unwrap_or(0));
        self.instance_ready.set(i64::from(status.is_ready()));
        // The one writer of the lag gauge: the high watermark comes from the consumer's
        // statistics, the next offset from the task, both kept in the task's progress.
        for (task, lag) in status.task_lags() {
            let [id, partition] = Self::task_labels(task);
            self.consumer_lag
                .with_label_values(&[&self.input_topic, id.as_str(), partition.as_str()])
                .set(lag);
        }
        let current = status.lifecycle();
        for state in InstanceLifecycle::ALL {
            self.instance_state
                .with_label_values(&[state.name()])
                .set(i64::from(state == current));
        }
    }

    /// The label values of a task's series.
    pub(crate) fn task_labels(task: TaskId) -> [String; 2] {
        [task.to_string(), task.partition.to_string()]
    }

    /// Starts a task's per-task series at 0 when it is assigned here, so that a dashboard or
    /// an alert finds every task's series from the start ("no data" was a fresh instance's
    /// restore panel until something was restored). The lag gauge starts at its first
    /// measurement, not at a 0 that would claim the task is caught up.
    pub(crate) fn start_task(&self, task: TaskId) {
        let [id, partition] = Self::task_labels(task);
        let labels = [id.as_str(), partition.as_str()];
        for counter in [
            &self.records_processed,
            &self.output_records,
            &self.changelog_records,
            &self.restore_records,
            &self.changelog_foreign_records,
        ] {
            counter.with_label_values(&labels);
        }
        for gauge in [&self.restore_remaining, &self.store_size] {
            gauge.with_label_values(&labels);
        }
        // A histogram without observations: its buckets at 0, no claim about latency.
        self.end_to_end_latency.with_label_values(&labels);
    }

    /// Starts a standby's series (its lag at its first measurement).
    pub(crate) fn start_standby(&self, task: TaskId) {
        let [id, partition] = Self::task_labels(task);
        self.standby_records
            .with_label_values(&[id.as_str(), partition.as_str()]);
    }

    /// Drops a standby's lag (promoted, or no longer placed here).
    pub(crate) fn forget_standby(&self, task: TaskId) {
        let [id, partition] = Self::task_labels(task);
        let _ = self
            .standby_lag
            .remove_label_values(&[id.as_str(), partition.as_str()]);
    }

    /// Drops a task's per-task series (when it leaves this instance).
    pub(crate) fn forget_task(&self, task: TaskId) {
        let [id, partition] = Self::task_labels(task);
        let labels = [id.as_str(), partition.as_str()];
        let lag_labels = [&*self.input_topic, id.as_str(), partition.as_str()];
        let _ = self.consumer_lag.remove_label_values(&lag_labels);
        let _ = self.restore_remaining.remove_label_values(&labels);
        let _ = self.store_size.remove_label_values(&labels);
    }

    /// Totals over all tasks this instance ran: (records processed, output records, changelog
    /// records).
    pub(crate) fn record_totals(&self) -> (u64, u64, u64) {
        let total = |counter: &IntCounterVec| -> u64 {
            counter
                .collect()
                .iter()
                .flat_map(|family| family.get_metric())
                .map(|metric| metric.get_counter().get_value() as u64)
                .sum()
        };
        (
            total(&self.records_processed),
            total(&self.output_records),
            total(&self.changelog_records),
        )
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(buffer).expect("Prometheus text format is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assigned_tasks_series_start_at_zero_and_its_gauges_leave_with_it() {
        let metrics = EngineMetrics::new("app", "input-topic");
        let task = TaskId::new(0, 3);
        let series = |text: &str, name: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(r#"task_id="0_3""#))
                .map(str::to_string)
        };
        let fresh = metrics.render();
        assert_eq!(series(&fresh, "kstreams_restore_records_total"), None);
        metrics.start_task(task);
        let started = metrics.render();
        for name in [
            "kstreams_records_processed_total",
            "kstreams_output_records_total",
            "kstreams_changelog_records_written_total",
            "kstreams_restore_records_total",
            "kstreams_changelog_foreign_records_total",
            "kstreams_restore_remaining_records",
            "kstreams_state_store_size_bytes",
        ] {
            let line = series(&started, name).unwrap_or_else(|| panic!("no {name} in:\n{started}"));
            assert!(line.ends_with("} 0"), "{line}");
        }
        assert_eq!(
            series(&started, "kstreams_consumer_lag_records"),
            None,
            "no lag before it is measured"
        );
        metrics.forget_task(task);
        let forgotten = metrics.render();
        assert_eq!(
            series(&forgotten, "kstreams_restore_remaining_records"),
            None
        );
        assert!(
            series(&forgotten, "kstreams_restore_records_total").is_some(),
            "totals stay"
        );
    }

    #[test]
    fn renders_labelled_series() {
        let metrics = EngineMetrics::new("app", "input-topic");
        let [task, partition] = EngineMetrics::task_labels(TaskId::new(0, 2));
        metrics
            .records_processed
            .with_label_values(&[&task, &partition])
            .inc_by(3);
        let text = metrics.render();
        let line = text
            .lines()
            .find(|l| l.starts_with("kstreams_records_processed_total{"))
            .unwrap_or_else(|| panic!("no series in:\n{text}"));
        for part in [
            r#"application_id="app""#,
            r#"partition="2""#,
            r#"task_id="0_2""#,
            "} 3",
        ] {
            assert!(line.contains(part), "{part} missing from {line}");
        }
        assert!(
            text.contains("process_resident_memory_bytes"),
            "standard process metrics"
        );
    }
}
