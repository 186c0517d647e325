//! The on-disk layout of an application's state: `<state_dir>/<application_id>/`, its `.lock`
//! (one running instance per directory, as in Kafka Streams) and one directory per task.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result};
use crate::task_id::TaskId;

/// Holds the application's state directory and its lock for as long as it lives.
#[derive(Debug)]
pub struct StateDirectory {
    app_dir: PathBuf,
    _lock: File,
}

impl StateDirectory {
    /// Creates `<state_dir>/<application_id>/` if needed and takes its lock, or fails with
    /// [`EngineError::StateDirLocked`] if another process holds it.
    pub fn lock(state_dir: &Path, application_id: &str) -> Result<Self> {
        let app_dir = state_dir.join(application_id);
        let io_error = |source| EngineError::StateDirIo {
            path: app_dir.clone(),
            source,
        };
        fs::create_dir_all(&app_dir).map_err(io_error)?;
        let lock_path = app_dir.join(".lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error)?;
        match lock.try_lock() {
            Ok(()) => Ok(Self {
                app_dir,
                _lock: lock,
            }),
            Err(std::fs::TryLockError::WouldBlock) => {
                Err(EngineError::StateDirLocked { path: app_dir })
            }
            Err(std::fs::TryLockError::Error(source)) => Err(io_error(source)),
        }
    }

    pub fn app_dir(&self) -> &Path {
        &self.app_dir
    }

    /// `<state_dir>/<application_id>/<task_id>/`.
    pub fn task_dir(&self, task: TaskId) -> PathBuf {
        self.app_dir.join(task.to_string())
    }

    /// Task directories present on disk (what an earlier run left here).
    pub fn existing_tasks(&self) -> Result<Vec<TaskId>> {
        let entries = fs::read_dir(&self.app_dir).map_err(|source| EngineError::StateDirIo {
            path: self.app_dir.clone(),
            source,
        })?;
        let mut tasks: Vec<TaskId> = entries
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.path().is_dir())
            .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
            .collect();
        tasks.sort();
        Ok(tasks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_the_same_dir_is_refused_until_released() {
        let root = tempfile::tempdir().unwrap();
        let first = StateDirectory::lock(root.path(), "app").unwrap();
        assert_eq!(first.app_dir(), root.path().join("app"));
        assert!(matches!(
            StateDirectory::lock(root.path(), "app"),
            Err(EngineError::StateDirLocked { .. })
        ));
        StateDirectory::lock(root.path(), "other-app").unwrap();
        drop(first);
        StateDirectory::lock(root.path(), "app").unwrap();
    }

    #[test]
    fn lists_only_task_directories() {
        let root = tempfile::tempdir().unwrap();
        let dir = StateDirectory::lock(root.path(), "app").unwrap();
        for name in ["0_1", "0_0", "not-a-task", "1_2"] {
            fs::create_dir(dir.app_dir().join(name)).unwrap();
        }
        fs::write(dir.app_dir().join("0_9"), b"a file, not a task dir").unwrap();
        assert_eq!(
            dir.existing_tasks().unwrap(),
            vec![TaskId::new(0, 0), TaskId::new(0, 1), TaskId::new(1, 2)]
        );
        assert_eq!(
            dir.task_dir(TaskId::new(0, 3)),
            root.path().join("app").join("0_3")
        );
    }
}
