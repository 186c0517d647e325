//! What an instance reports about itself: liveness and readiness, and each task's phase,
//! restore progress, processed offset and lag (read by `/status`, `/health/*` and the poller).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::task_id::TaskId;

const RESTORING: u8 = 0;
const RUNNING: u8 = 1;
const SUSPENDED: u8 = 2;

/// One task's progress, written by the task and read by anyone.
#[derive(Debug)]
pub struct TaskProgress {
    phase: AtomicU8,
    /// Next input offset to process; -1 until known.
    next_offset: AtomicI64,
    /// Newest high watermark seen for the input partition; -1 until known.
    high_watermark: AtomicI64,
    restore_total: AtomicU64,
    restore_done: AtomicU64,
}

impl Default for TaskProgress {
    fn default() -> Self {
        Self {
            phase: AtomicU8::new(RESTORING),
            next_offset: AtomicI64::new(-1),
            high_watermark: AtomicI64::new(-1),
            restore_total: AtomicU64::new(0),
            restore_done: AtomicU64::new(0),
        }
    }
}

impl TaskProgress {
    pub fn set_running(&self) {
        self.phase.store(RUNNING, Ordering::Relaxed);
    }

    pub fn set_suspended(&self) {
        self.phase.store(SUSPENDED, Ordering::Relaxed);
    }

    pub fn phase_name(&self) -> &'static str {
        match self.phase.load(Ordering::Relaxed) {
            RESTORING => "restoring",
            RUNNING => "running",
            _ => "suspended",
        }
    }

    pub fn set_next_offset(&self, offset: Option<i64>) {
        self.next_offset
            .store(offset.unwrap_or(-1), Ordering::Relaxed);
    }

    pub fn next_offset(&self) -> Option<i64> {
        Some(self.next_offset.load(Ordering::Relaxed)).filter(|o| *o >= 0)
    }

    pub fn set_high_watermark(&self, high: i64) {
        self.high_watermark.store(high, Ordering::Relaxed);
    }

    /// Input records not yet processed, when both ends are known.
    pub fn lag(&self) -> Option<i64> {
        let high = Some(self.high_watermark.load(Ordering::Relaxed)).filter(|h| *h >= 0)?;
        Some((high - self.next_offset()?).max(0))
    }

    pub fn add_restore_total(&self, records: u64) {
        self.restore_total.fetch_add(records, Ordering::Relaxed);
    }

    pub fn add_restored(&self, records: u64) {
        self.restore_done.fetch_add(records, Ordering::Relaxed);
    }
}

/// The instance as a whole.
#[derive(Debug)]
pub struct InstanceStatus {
    instance_id: String,
    liveness_timeout: Duration,
    started: Instant,
    /// Assignment changes this instance has applied (librdkafka does not expose the group
    /// generation id, so this is the local count of generations seen).
    generation: AtomicU64,
    joined: AtomicBool,
    alive: AtomicBool,
    /// Milliseconds since `started` at the consumer loop's last turn.
    last_poll_ms: AtomicU64,
    tasks: Mutex<BTreeMap<TaskId, Arc<TaskProgress>>>,
}

#[derive(Serialize)]
struct TaskView {
    task_id: String,
    partition: i32,
    state: &'static str,
    restore_total: u64,
    restore_done: u64,
    processed_offset: Option<i64>,
    lag: Option<i64>,
}

#[derive(Serialize)]
struct InstanceView {
    instance_id: String,
    generation: u64,
    ready: bool,
    tasks: Vec<TaskView>,
}

impl InstanceStatus {
    pub fn new(instance_id: String, liveness_timeout: Duration) -> Self {
        Self {
            instance_id,
            liveness_timeout,
            started: Instant::now(),
            generation: AtomicU64::new(0),
            joined: AtomicBool::new(false),
            alive: AtomicBool::new(true),
            last_poll_ms: AtomicU64::new(0),
            tasks: Mutex::default(),
        }
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, BTreeMap<TaskId, Arc<TaskProgress>>> {
        self.tasks.lock().expect("status lock poisoned")
    }

    /// Registers a new task and returns its progress handle.
    pub fn add_task(&self, task: TaskId) -> Arc<TaskProgress> {
        let progress = Arc::new(TaskProgress::default());
        self.tasks().insert(task, progress.clone());
        progress
    }

    pub fn remove_task(&self, task: TaskId) {
        self.tasks().remove(&task);
    }

    pub fn task(&self, task: TaskId) -> Option<Arc<TaskProgress>> {
        self.tasks().get(&task).cloned()
    }

    pub fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn set_joined(&self) {
        self.joined.store(true, Ordering::Relaxed);
    }

    pub fn set_stopped(&self) {
        self.alive.store(false, Ordering::Relaxed);
    }

    /// Called by the consumer loop on every turn.
    pub fn heartbeat(&self) {
        self.last_poll_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Live: not stopped, and the consumer loop turned within the liveness timeout (a task
    /// stuck on a record, or a wedged client, stops it turning).
    pub fn is_live(&self) -> bool {
        let since_poll = self.started.elapsed().saturating_sub(Duration::from_millis(
            self.last_poll_ms.load(Ordering::Relaxed),
        ));
        self.alive.load(Ordering::Relaxed) && since_poll <= self.liveness_timeout
    }

    /// Ready: live, in the group, and every assigned task running (none restoring).
    pub fn is_ready(&self) -> bool {
        self.is_live()
            && self.joined.load(Ordering::Relaxed)
            && self.tasks().values().all(|t| t.phase_name() == "running")
    }

    /// The `/status` document.
    pub fn to_json(&self) -> String {
        let tasks = self
            .tasks()
            .iter()
            .map(|(id, t)| TaskView {
                task_id: id.to_string(),
                partition: id.partition,
                state: t.phase_name(),
                restore_total: t.restore_total.load(Ordering::Relaxed),
                restore_done: t.restore_done.load(Ordering::Relaxed),
                processed_offset: t.next_offset().map(|o| o - 1).filter(|o| *o >= 0),
                lag: t.lag(),
            })
            .collect();
        let view = InstanceView {
            instance_id: self.instance_id.clone(),
            generation: self.generation.load(Ordering::Relaxed),
            ready: self.is_ready(),
            tasks,
        };
        serde_json::to_string_pretty(&view).expect("status serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_joined_and_every_task_runs() {
        let status = InstanceStatus::new("i".into(), Duration::from_secs(60));
        status.heartbeat();
        assert!(status.is_live());
        assert!(!status.is_ready(), "not joined yet");
        status.set_joined();
        assert!(status.is_ready(), "joined with no tasks");
        let a = status.add_task(TaskId::new(0, 0));
        let b = status.add_task(TaskId::new(0, 1));
        a.set_running();
        assert!(!status.is_ready(), "0_1 still restoring");
        b.set_running();
        assert!(status.is_ready());
        status.set_stopped();
        assert!(!status.is_live() && !status.is_ready());
    }

    #[test]
    fn liveness_expires_without_heartbeats() {
        let status = InstanceStatus::new("i".into(), Duration::ZERO);
        // No heartbeat since start: any time at all that has passed exceeds a zero timeout.
        assert!(!status.is_live());
    }

    #[test]
    fn lag_needs_both_ends_and_is_never_negative() {
        let t = TaskProgress::default();
        assert_eq!(t.lag(), None);
        t.set_next_offset(Some(10));
        assert_eq!(t.lag(), None);
        t.set_high_watermark(25);
        assert_eq!(t.lag(), Some(15));
        t.set_next_offset(Some(30));
        assert_eq!(t.lag(), Some(0));
    }

    #[test]
    fn status_json_lists_tasks() {
        let status = InstanceStatus::new("kstreams-count-0".into(), Duration::from_secs(60));
        status.add_task(TaskId::new(0, 2)).set_next_offset(Some(5));
        let json: serde_json::Value = serde_json::from_str(&status.to_json()).unwrap();
        assert_eq!(json["instance_id"], "kstreams-count-0");
        assert_eq!(json["tasks"][0]["task_id"], "0_2");
        assert_eq!(json["tasks"][0]["state"], "restoring");
        assert_eq!(json["tasks"][0]["processed_offset"], 4);
    }
}
