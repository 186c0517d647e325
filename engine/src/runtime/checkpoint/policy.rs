//! What a failed commit means, decided in one place for every trigger: a task whose own commit
//! fails is closed without writing more and restarted from its last commit (its uncommitted
//! input is read again; the supervisor's restart budget stops the instance once a task keeps
//! failing); a revoked task stops whatever its commit did (the next owner re-reads its
//! uncommitted input); at shutdown a failed commit is the instance's exit error; a failed group
//! commit is only logged (offsets and state are durable in each task's store, so it means
//! re-reading some input later). Every failure is counted here, once.

use tracing::{error, warn};

use crate::error::EngineError;
use crate::metrics::EngineMetrics;
use crate::task_id::TaskId;

/// What asked for a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommitTrigger {
    /// The task's own commit interval, its record cache over budget, or its write-out answered.
    Task,
    /// A record the task may not skip (deserialization-error-policy `fail`): it commits what
    /// came before and stops.
    BadRecord,
    /// The task's partition is revoked.
    Revocation,
    /// The instance is shutting down.
    Shutdown,
    /// Offsets sent to the consumer group (the loop's interval, a revocation, shutdown).
    Group,
}

/// What becomes of the task, or the instance, after a failed commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureVerdict {
    /// Close the task without writing more; the supervisor restarts it from its last commit.
    RestartTask,
    /// The task stops anyway (its partition is no longer ours).
    StopTask,
    /// The instance stops with this error.
    StopInstance,
    /// Only logged; nothing stops.
    Log,
}

/// The verdict for a failed commit of `trigger`.
pub(crate) fn verdict(trigger: CommitTrigger) -> FailureVerdict {
    match trigger {
        CommitTrigger::Task | CommitTrigger::BadRecord => FailureVerdict::RestartTask,
        CommitTrigger::Revocation => FailureVerdict::StopTask,
        CommitTrigger::Shutdown => FailureVerdict::StopInstance,
        CommitTrigger::Group => FailureVerdict::Log,
    }
}

/// Counts and logs a failed commit of `task` (none for a group commit) and answers what it
/// means; the caller carries the verdict out.
pub(crate) fn on_failure(
    metrics: &EngineMetrics,
    trigger: CommitTrigger,
    task: Option<TaskId>,
    error: &EngineError,
) -> FailureVerdict {
    let verdict = verdict(trigger);
    if let EngineError::ForeignChangelogRecords { task, foreign, .. } = error {
        let labels = EngineMetrics::task_labels(*task);
        metrics
            .changelog_foreign_records
            .with_label_values(&[labels[0].as_str(), labels[1].as_str()])
            .inc_by(*foreign);
    }
    let task = task.map(|t| t.to_string()).unwrap_or_else(|| "-".into());
    match verdict {
        FailureVerdict::RestartTask => {
            metrics.commit_failures.inc();
            error!(%task, "commit failed; the task restarts from its last commit: {error}");
        }
        FailureVerdict::StopTask => {
            metrics.commit_failures.inc();
            error!(%task, "commit of a revoked task failed; stopping it anyway, its uncommitted input will be processed again by the next owner: {error}");
        }
        FailureVerdict::StopInstance => {
            metrics.commit_failures.inc();
            error!(%task, "commit at shutdown failed; the instance stops with this error and resumes from the last commit: {error}");
        }
        FailureVerdict::Log => {
            warn!("committing offsets to the group failed (they are durable in the tasks' stores; some input may be read again): {error}");
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_trigger_has_one_verdict() {
        assert_eq!(verdict(CommitTrigger::Task), FailureVerdict::RestartTask);
        assert_eq!(
            verdict(CommitTrigger::BadRecord),
            FailureVerdict::RestartTask
        );
        assert_eq!(verdict(CommitTrigger::Revocation), FailureVerdict::StopTask);
        assert_eq!(
            verdict(CommitTrigger::Shutdown),
            FailureVerdict::StopInstance
        );
        assert_eq!(verdict(CommitTrigger::Group), FailureVerdict::Log);
    }

    #[test]
    fn task_failures_are_counted_once_and_group_failures_not_at_all() {
        let metrics = EngineMetrics::new("policy-test", "input-topic");
        let task = Some(TaskId::new(0, 3));
        let error = EngineError::actor("task", "timed out");
        on_failure(&metrics, CommitTrigger::Task, task, &error);
        on_failure(&metrics, CommitTrigger::Revocation, task, &error);
        assert_eq!(metrics.commit_failures.get(), 2);
        on_failure(&metrics, CommitTrigger::Group, None, &error);
        assert_eq!(metrics.commit_failures.get(), 2);
    }
}
