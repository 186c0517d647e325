//! A task's lifecycle as one value: opening its store, restoring (the store is with the state
//! updater), running (holding what it runs with), closed. A move the lifecycle does not allow
//! is refused with an error (the task fails, and is restarted), never ignored. Each move is
//! published to the task's `TaskProgress`, which `/status`, readiness and the gauges read.

use std::sync::Arc;

use crate::error::EngineError;
use crate::status::{TaskPhase, TaskProgress};
use crate::task_id::TaskId;

/// Where a task is, holding `R`, what a running task works with.
pub(crate) enum Lifecycle<R> {
    Opening,
    Restoring,
    Running(Box<R>),
    Closed,
}

impl<R> Lifecycle<R> {
    pub(crate) fn phase(&self) -> TaskPhase {
        match self {
            Lifecycle::Opening => TaskPhase::Created,
            Lifecycle::Restoring => TaskPhase::Restoring,
            Lifecycle::Running(_) => TaskPhase::Running,
            Lifecycle::Closed => TaskPhase::Closed,
        }
    }

    pub(crate) fn running(&self) -> Option<&R> {
        match self {
            Lifecycle::Running(running) => Some(running),
            _ => None,
        }
    }

    pub(crate) fn running_mut(&mut self) -> Option<&mut R> {
        match self {
            Lifecycle::Running(running) => Some(running),
            _ => None,
        }
    }
}

/// A task's lifecycle and where it is published.
pub(crate) struct TaskLifecycle<R> {
    task: TaskId,
    state: Lifecycle<R>,
    progress: Arc<TaskProgress>,
}

impl<R> TaskLifecycle<R> {
    pub(crate) fn new(task: TaskId, progress: Arc<TaskProgress>) -> Self {
        Self {
            task,
            state: Lifecycle::Opening,
            progress,
        }
    }

    #[cfg(test)]
    pub(crate) fn phase(&self) -> TaskPhase {
        self.state.phase()
    }

    pub(crate) fn running(&self) -> Option<&R> {
        self.state.running()
    }

    pub(crate) fn running_mut(&mut self) -> Option<&mut R> {
        self.state.running_mut()
    }

    /// Opening -> restoring: the store is handed to the state updater.
    pub(crate) fn start_restoring(&mut self) -> Result<(), EngineError> {
        self.move_to(Lifecycle::Restoring).map(drop)
    }

    /// Restoring -> running, with what the task runs with.
    pub(crate) fn run(&mut self, running: R) -> Result<(), EngineError> {
        self.move_to(Lifecycle::Running(Box::new(running)))
            .map(drop)
    }

    /// Any -> closed (once): answers the state it left, with a running task's state in it.
    pub(crate) fn close(&mut self) -> Result<Lifecycle<R>, EngineError> {
        self.move_to(Lifecycle::Closed)
    }

    fn move_to(&mut self, next: Lifecycle<R>) -> Result<Lifecycle<R>, EngineError> {
        let (from, to) = (self.state.phase(), next.phase());
        if !from.may_become(to) {
            return Err(EngineError::TaskLifecycle {
                task: self.task,
                from,
                to,
            });
        }
        // The published phase follows this one; it refuses only what `may_become` refuses.
        let _ = self.progress.set_phase(to);
        Ok(std::mem::replace(&mut self.state, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lifecycle() -> (TaskLifecycle<&'static str>, Arc<TaskProgress>) {
        let progress = Arc::new(TaskProgress::default());
        (
            TaskLifecycle::new(TaskId::new(0, 1), progress.clone()),
            progress,
        )
    }

    #[test]
    fn a_task_opens_restores_runs_and_closes_and_publishes_each_phase() {
        let (mut task, progress) = lifecycle();
        assert_eq!(task.phase(), TaskPhase::Created);
        task.start_restoring().unwrap();
        assert_eq!(progress.phase(), TaskPhase::Restoring);
        assert!(task.running().is_none());
        task.run("state").unwrap();
        assert_eq!(progress.phase(), TaskPhase::Running);
        assert_eq!(task.running(), Some(&"state"));
        let left = task.close().unwrap();
        assert_eq!(
            left.running(),
            Some(&"state"),
            "closing hands the running state back"
        );
        assert_eq!(progress.phase(), TaskPhase::Closed);
    }

    #[test]
    fn an_illegal_move_is_an_error_naming_both_phases() {
        let (mut task, progress) = lifecycle();
        let error = task.run("state").unwrap_err();
        assert!(
            matches!(
                error,
                EngineError::TaskLifecycle {
                    from: TaskPhase::Created,
                    to: TaskPhase::Running,
                    ..
                }
            ),
            "{error}"
        );
        assert_eq!(
            task.phase(),
            TaskPhase::Created,
            "a refused move changes nothing"
        );
        assert_eq!(progress.phase(), TaskPhase::Created);
        task.close().unwrap();
        assert!(task.close().is_err(), "closed is final");
        assert!(task.start_restoring().is_err());
    }
}
