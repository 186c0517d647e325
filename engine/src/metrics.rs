//! The engine's Prometheus metrics: one registry per instance, labelled by application id,
//! and the handles tasks use to update them.

use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::task_id::TaskId;

/// All metrics of one engine instance.
#[derive(Clone)]
pub struct EngineMetrics {
    registry: Registry,
    pub records_processed: IntCounterVec,
    pub records_skipped: IntCounterVec,
    pub output_records: IntCounterVec,
    pub changelog_records: IntCounterVec,
    pub restore_records: IntCounterVec,
    pub restore_remaining: IntGaugeVec,
    pub tasks_restoring: IntGauge,
    pub tasks_running: IntGauge,
    pub commits: IntCounter,
    pub commit_failures: IntCounter,
    pub rebalances: IntCounter,
    pub tasks_assigned: IntCounter,
    pub tasks_revoked: IntCounter,
    pub tasks_lost: IntCounter,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric =
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let metric = IntCounter::new(name, help).expect("valid metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let metric = IntGauge::new(name, help).expect("valid metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

const TASK: &[&str] = &["task_id", "partition"];

impl EngineMetrics {
    pub fn new(application_id: &str) -> Self {
        let labels = [("application_id".to_string(), application_id.to_string())].into();
        let registry = Registry::new_custom(None, Some(labels)).expect("valid registry labels");
        let r = &registry;
        Self {
            records_processed: counter_vec(
                r,
                "kstreams_records_processed_total",
                "Input records processed",
                TASK,
            ),
            records_skipped: counter_vec(
                r,
                "kstreams_records_skipped_total",
                "Input records skipped, by reason (null_key, null_value, deserialization_error)",
                &["task_id", "partition", "reason"],
            ),
            output_records: counter_vec(
                r,
                "kstreams_output_records_total",
                "Records written to output topics",
                TASK,
            ),
            changelog_records: counter_vec(
                r,
                "kstreams_changelog_records_written_total",
                "Records written to changelog topics",
                TASK,
            ),
            restore_records: counter_vec(
                r,
                "kstreams_restore_records_total",
                "Changelog records applied while restoring",
                TASK,
            ),
            restore_remaining: gauge_vec(
                r,
                "kstreams_restore_remaining_records",
                "Changelog records left to restore (0 when not restoring)",
                TASK,
            ),
            tasks_restoring: gauge(r, "kstreams_tasks_restoring", "Tasks currently restoring"),
            tasks_running: gauge(r, "kstreams_tasks_running", "Tasks currently processing"),
            commits: counter(r, "kstreams_commits_total", "Commits of all tasks"),
            commit_failures: counter(r, "kstreams_commit_failures_total", "Commits that failed"),
            rebalances: counter(r, "kstreams_rebalances_total", "Assignment changes seen"),
            tasks_assigned: counter(
                r,
                "kstreams_tasks_assigned_total",
                "Tasks started by an assignment",
            ),
            tasks_revoked: counter(
                r,
                "kstreams_tasks_revoked_total",
                "Tasks stopped by a revocation",
            ),
            tasks_lost: counter(
                r,
                "kstreams_tasks_lost_total",
                "Tasks dropped because the assignment was lost",
            ),
            registry,
        }
    }

    /// The label values of a task's series.
    pub fn task_labels(task: TaskId) -> [String; 2] {
        [task.to_string(), task.partition.to_string()]
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
    fn renders_labelled_series() {
        let metrics = EngineMetrics::new("app");
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
    }
}
