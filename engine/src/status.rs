//! What an instance reports about itself: liveness and readiness, and each task's phase,
//! restore progress, processed offset and lag (read by `/status`, `/health/*` and the poller).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::store::reader::ReaderSlot;
use crate::task_id::TaskId;

/// Where a task is in its life: created (opening its store), restoring (its store is with
/// the state updater), running (processing input), closed. The task owns it; `/status`,
/// readiness, the `tasks_*` gauges and the local runner read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskPhase {
    Created,
    Restoring,
    Running,
    Closed,
}

impl TaskPhase {
    /// The phases a task may move to from this one (`Closed` from anywhere).
    pub fn may_become(self, next: TaskPhase) -> bool {
        use TaskPhase::*;
        matches!(
            (self, next),
            (Created, Restoring) | (Restoring, Running) | (_, Closed)
        ) && self != Closed
    }

    fn from_u8(value: u8) -> Self {
        match value {
            0 => TaskPhase::Created,
            1 => TaskPhase::Restoring,
            2 => TaskPhase::Running,
            _ => TaskPhase::Closed,
        }
    }

    fn as_u8(self) -> u8 {
        self as u8
    }
}

impl std::fmt::Display for TaskPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            TaskPhase::Created => "created",
            TaskPhase::Restoring => "restoring",
            TaskPhase::Running => "running",
            TaskPhase::Closed => "closed",
        };
        f.pad(name)
    }
}

/// Assignment changes kept for `/status` (the newest last).
const ASSIGNMENT_HISTORY: usize = 32;

/// One applied assignment change, as `/status` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AssignmentRecord {
    /// Wall-clock time the change was applied, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// The consumer group generation the change belongs to (-1 when unknown).
    pub generation: i32,
    pub added: Vec<String>,
    pub revoked: Vec<String>,
    pub lost: Vec<String>,
    /// Tasks owned after the change.
    pub owning: Vec<String>,
    /// How long this instance took to apply it (start tasks, or commit and stop them).
    pub took_ms: u64,
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One task's progress, written by the task and read by anyone.
#[derive(Debug)]
pub struct TaskProgress {
    phase: AtomicU8,
    /// Next input offset to process; -1 until known.
    next_offset: AtomicI64,
    /// Newest high watermark seen for the input partition; -1 until known.
    high_watermark: AtomicI64,
    /// Newest log start offset seen for the input partition; -1 until known.
    log_start: AtomicI64,
    restore_total: AtomicU64,
    restore_done: AtomicU64,
    /// A view of the task's store for queries, once it is open.
    pub(crate) store: ReaderSlot,
}

impl Default for TaskProgress {
    fn default() -> Self {
        Self {
            phase: AtomicU8::new(TaskPhase::Created.as_u8()),
            next_offset: AtomicI64::new(-1),
            high_watermark: AtomicI64::new(-1),
            log_start: AtomicI64::new(-1),
            restore_total: AtomicU64::new(0),
            restore_done: AtomicU64::new(0),
            store: ReaderSlot::default(),
        }
    }
}

impl TaskProgress {
    /// Moves the task to `next`, answering the phase it left; a move the lifecycle does not
    /// allow is refused (answers `Err` with the current phase) and changes nothing.
    pub fn set_phase(&self, next: TaskPhase) -> std::result::Result<TaskPhase, TaskPhase> {
        let mut current = self.phase();
        loop {
            if !current.may_become(next) {
                return Err(current);
            }
            match self.phase.compare_exchange(
                current.as_u8(),
                next.as_u8(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(current),
                Err(seen) => current = TaskPhase::from_u8(seen),
            }
        }
    }

    pub fn phase(&self) -> TaskPhase {
        TaskPhase::from_u8(self.phase.load(Ordering::Acquire))
    }

    pub fn set_next_offset(&self, offset: Option<i64>) {
        self.next_offset
            .store(offset.unwrap_or(-1), Ordering::Relaxed);
    }

    pub fn next_offset(&self) -> Option<i64> {
        Some(self.next_offset.load(Ordering::Relaxed)).filter(|o| *o >= 0)
    }

    /// The input partition's log start offset and high watermark, as the consumer's
    /// statistics last saw them (-1: not known).
    pub fn set_watermarks(&self, log_start: i64, high: i64) {
        self.log_start.store(log_start, Ordering::Relaxed);
        self.high_watermark.store(high, Ordering::Relaxed);
    }

    /// Input records not yet processed, when both ends are known. A task that has processed
    /// nothing yet starts from the log's start (input is read from the earliest record), so
    /// its lag is all of the log: 0 for an empty partition.
    pub fn lag(&self) -> Option<i64> {
        let known = |offset: &AtomicI64| Some(offset.load(Ordering::Relaxed)).filter(|o| *o >= 0);
        let high = known(&self.high_watermark)?;
        let next = self.next_offset().or_else(|| known(&self.log_start))?;
        Some((high - next).max(0))
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
    /// The consumer group generation this member last joined (-1 before the first join).
    generation: AtomicI64,
    /// Member id the group coordinator gave this consumer (empty before the first join).
    member_id: Mutex<String>,
    assignments: Mutex<VecDeque<AssignmentRecord>>,
    joined: AtomicBool,
    alive: AtomicBool,
    /// Milliseconds since `started` at the consumer loop's last turn.
    last_poll_ms: AtomicU64,
    /// Milliseconds since `started` when this member lost its assignment without a new one
    /// since (0: not in that state).
    lost_at_ms: AtomicU64,
    tasks: Mutex<BTreeMap<TaskId, Arc<TaskProgress>>>,
    /// Standby replicas held here, and how far each one stands.
    standbys: Mutex<BTreeMap<TaskId, Arc<StandbyProgress>>>,
}

/// One task in the `/status` document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaskView {
    pub task_id: String,
    pub partition: i32,
    /// `created` (opening its store), `restoring` or `running`.
    pub state: TaskPhase,
    pub restore_total: u64,
    pub restore_done: u64,
    /// Last input offset processed; absent before the first.
    pub processed_offset: Option<i64>,
    pub lag: Option<i64>,
}

/// The instance's state as `kstreams_instance_state{state}` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceLifecycle {
    Joining,
    Restoring,
    Running,
    Stopping,
}

impl InstanceLifecycle {
    pub const ALL: [InstanceLifecycle; 4] = [
        InstanceLifecycle::Joining,
        InstanceLifecycle::Restoring,
        InstanceLifecycle::Running,
        InstanceLifecycle::Stopping,
    ];

    pub fn name(self) -> &'static str {
        match self {
            InstanceLifecycle::Joining => "joining",
            InstanceLifecycle::Restoring => "restoring",
            InstanceLifecycle::Running => "running",
            InstanceLifecycle::Stopping => "stopping",
        }
    }
}

/// The `/status` document (served by the engine, read by the local runner and the tests).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceView {
    pub instance_id: String,
    pub member_id: String,
    pub generation: i64,
    pub ready: bool,
    pub tasks: Vec<TaskView>,
    /// Standby replicas kept warm here (`--num-standby-replicas`).
    #[serde(default)]
    pub standbys: Vec<StandbyView>,
    pub assignments: Vec<AssignmentRecord>,
}

/// How far a standby replica stands, written by the state updater.
#[derive(Debug, Default)]
pub struct StandbyProgress {
    /// Changelog records behind, all stores together (-1 until known).
    lag: AtomicI64,
    /// Per store, the changelog offset its promotion would restore from.
    positions: Mutex<Vec<i64>>,
    /// A view of the standby's store, for queries that accept a stale value.
    pub(crate) store: ReaderSlot,
}

impl StandbyProgress {
    fn new() -> Self {
        Self {
            lag: AtomicI64::new(-1),
            positions: Mutex::default(),
            store: ReaderSlot::default(),
        }
    }

    pub(crate) fn set_lag(&self, lag: i64) {
        self.lag.store(lag, Ordering::Relaxed);
    }

    pub(crate) fn set(&self, lag: i64, positions: Vec<i64>) {
        *self.positions.lock().expect("status lock poisoned") = positions;
        self.set_lag(lag);
    }

    pub fn lag(&self) -> Option<i64> {
        Some(self.lag.load(Ordering::Relaxed)).filter(|l| *l >= 0)
    }
}

/// One standby replica in the `/status` document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StandbyView {
    pub task_id: String,
    pub partition: i32,
    /// Changelog records behind: what promoting it would restore (absent until measured).
    pub lag: Option<i64>,
    /// Per store, the changelog offset promoting it would restore from.
    #[serde(default)]
    pub positions: Vec<i64>,
}

impl InstanceStatus {
    pub fn new(instance_id: String, liveness_timeout: Duration) -> Self {
        Self {
            instance_id,
            liveness_timeout,
            started: Instant::now(),
            generation: AtomicI64::new(-1),
            member_id: Mutex::default(),
            assignments: Mutex::default(),
            joined: AtomicBool::new(false),
            alive: AtomicBool::new(true),
            last_poll_ms: AtomicU64::new(0),
            lost_at_ms: AtomicU64::new(0),
            tasks: Mutex::default(),
            standbys: Mutex::default(),
        }
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, BTreeMap<TaskId, Arc<TaskProgress>>> {
        self.tasks.lock().expect("status lock poisoned")
    }

    /// Each task's lag (high watermark minus its next offset), where both are known.
    pub fn task_lags(&self) -> Vec<(TaskId, i64)> {
        self.tasks()
            .iter()
            .filter_map(|(task, progress)| Some((*task, progress.lag()?)))
            .collect()
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

    fn standbys(&self) -> std::sync::MutexGuard<'_, BTreeMap<TaskId, Arc<StandbyProgress>>> {
        self.standbys.lock().expect("status lock poisoned")
    }

    /// Registers a standby replica; how far it stands is written through the handle.
    pub fn add_standby(&self, task: TaskId) -> Arc<StandbyProgress> {
        let progress = Arc::new(StandbyProgress::new());
        self.standbys().insert(task, progress.clone());
        progress
    }

    /// Forgets a standby replica; answers whether it was held.
    pub fn remove_standby(&self, task: TaskId) -> bool {
        self.standbys().remove(&task).is_some()
    }

    /// The standby replicas held here and their lags (where known).
    pub fn standby_lags(&self) -> Vec<(TaskId, Option<i64>)> {
        let standbys = self.standbys();
        standbys.iter().map(|(t, p)| (*t, p.lag())).collect()
    }

    /// The standby replicas held here.
    pub fn standby_tasks(&self) -> BTreeSet<TaskId> {
        self.standbys().keys().copied().collect()
    }

    /// Tasks not yet running (opening their store or restoring), and tasks running.
    pub fn phase_counts(&self) -> (usize, usize) {
        let tasks = self.tasks();
        let running = tasks
            .values()
            .filter(|t| t.phase() == TaskPhase::Running)
            .count();
        (tasks.len() - running, running)
    }

    pub fn task(&self, task: TaskId) -> Option<Arc<TaskProgress>> {
        self.tasks().get(&task).cloned()
    }

    /// Every active task's progress, in task order.
    pub(crate) fn task_progress(&self) -> Vec<(TaskId, Arc<TaskProgress>)> {
        self.tasks().iter().map(|(t, p)| (*t, p.clone())).collect()
    }

    /// A standby's progress, if this instance keeps one of `task`.
    pub(crate) fn standby(&self, task: TaskId) -> Option<Arc<StandbyProgress>> {
        self.standbys().get(&task).cloned()
    }

    /// Records the group membership the consumer reports during a rebalance callback.
    pub fn set_membership(&self, generation: i32, member_id: String) {
        self.generation.store(generation.into(), Ordering::Relaxed);
        *self.member_id.lock().expect("status lock poisoned") = member_id;
    }

    /// The member id the coordinator gave this consumer (empty before the first join).
    pub fn member_id(&self) -> String {
        self.member_id.lock().expect("status lock poisoned").clone()
    }

    /// The group generation last joined, -1 before the first join.
    pub fn generation(&self) -> i32 {
        self.generation.load(Ordering::Relaxed) as i32
    }

    /// Appends to the recent assignment history shown by `/status`.
    pub fn record_assignment(&self, record: AssignmentRecord) {
        let mut history = self.assignments.lock().expect("status lock poisoned");
        if history.len() == ASSIGNMENT_HISTORY {
            history.pop_front();
        }
        history.push_back(record);
    }

    pub fn set_joined(&self) {
        self.joined.store(true, Ordering::Relaxed);
        self.lost_at_ms.store(0, Ordering::Relaxed);
    }

    /// The member lost its assignment (session expired, fenced): remembered until the next
    /// assignment arrives.
    pub fn set_assignment_lost(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.lost_at_ms.store(now.max(1), Ordering::Relaxed);
    }

    /// How long ago the assignment was lost, if no assignment came since.
    pub fn assignment_lost_for(&self) -> Option<Duration> {
        let at = self.lost_at_ms.load(Ordering::Relaxed);
        (at > 0).then(|| {
            self.started
                .elapsed()
                .saturating_sub(Duration::from_millis(at))
        })
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

    /// Ready: live, in the group and not cut off from it (a lost assignment not yet replaced
    /// by a new one), and every assigned task running (none opening or restoring).
    pub fn is_ready(&self) -> bool {
        self.is_live()
            && self.joined.load(Ordering::Relaxed)
            && self.assignment_lost_for().is_none()
            && self
                .tasks()
                .values()
                .all(|t| t.phase() == TaskPhase::Running)
    }

    /// Where the instance is in its life, for `kstreams_instance_state`: `stopping` once
    /// stopped, `joining` until in the group (or after losing its assignment), `restoring`
    /// while a task opens or restores, else `running`.
    pub fn lifecycle(&self) -> InstanceLifecycle {
        if !self.alive.load(Ordering::Relaxed) {
            InstanceLifecycle::Stopping
        } else if !self.joined.load(Ordering::Relaxed) || self.assignment_lost_for().is_some() {
            InstanceLifecycle::Joining
        } else if self
            .tasks()
            .values()
            .any(|t| t.phase() != TaskPhase::Running)
        {
            InstanceLifecycle::Restoring
        } else {
            InstanceLifecycle::Running
        }
    }

    /// The `/status` document.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.view()).expect("status serializes")
    }

    /// What `/status` shows, as a value.
    pub fn view(&self) -> InstanceView {
        let tasks = self
            .tasks()
            .iter()
            .map(|(id, t)| TaskView {
                task_id: id.to_string(),
                partition: id.partition,
                state: t.phase(),
                restore_total: t.restore_total.load(Ordering::Relaxed),
                restore_done: t.restore_done.load(Ordering::Relaxed),
                processed_offset: t.next_offset().map(|o| o - 1).filter(|o| *o >= 0),
                lag: t.lag(),
            })
            .collect();
        InstanceView {
            instance_id: self.instance_id.clone(),
            member_id: self.member_id.lock().expect("status lock poisoned").clone(),
            generation: self.generation.load(Ordering::Relaxed),
            ready: self.is_ready(),
            tasks,
            standbys: self
                .standbys()
                .iter()
                .map(|(id, progress)| StandbyView {
                    task_id: id.to_string(),
                    partition: id.partition,
                    lag: progress.lag(),
                    positions: progress
                        .positions
                        .lock()
                        .expect("status lock poisoned")
                        .clone(),
                })
                .collect(),
            assignments: self
                .assignments
                .lock()
                .expect("status lock poisoned")
                .iter()
                .cloned()
                .collect(),
        }
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
        for task in [&a, &b] {
            task.set_phase(TaskPhase::Restoring).unwrap();
        }
        a.set_phase(TaskPhase::Running).unwrap();
        assert!(!status.is_ready(), "0_1 still restoring");
        b.set_phase(TaskPhase::Running).unwrap();
        assert!(status.is_ready());
        status.set_assignment_lost();
        assert!(!status.is_ready(), "assignment lost, not rejoined");
        status.set_joined();
        assert!(status.is_ready());
        status.set_stopped();
        assert!(!status.is_live() && !status.is_ready());
    }

    #[test]
    fn the_lifecycle_refuses_moves_it_does_not_allow() {
        let t = TaskProgress::default();
        assert_eq!(t.set_phase(TaskPhase::Running), Err(TaskPhase::Created));
        assert_eq!(t.set_phase(TaskPhase::Restoring), Ok(TaskPhase::Created));
        assert_eq!(t.set_phase(TaskPhase::Restoring), Err(TaskPhase::Restoring));
        assert_eq!(t.set_phase(TaskPhase::Running), Ok(TaskPhase::Restoring));
        assert_eq!(t.set_phase(TaskPhase::Closed), Ok(TaskPhase::Running));
        assert_eq!(t.set_phase(TaskPhase::Closed), Err(TaskPhase::Closed));
        assert_eq!(t.phase(), TaskPhase::Closed);
    }

    #[test]
    fn a_lost_assignment_is_remembered_until_the_next_join() {
        let status = InstanceStatus::new("i".into(), Duration::from_secs(60));
        assert_eq!(status.assignment_lost_for(), None);
        status.set_assignment_lost();
        assert!(status.assignment_lost_for().is_some());
        status.set_joined();
        assert_eq!(status.assignment_lost_for(), None);
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
        t.set_watermarks(-1, 25);
        assert_eq!(t.lag(), None, "neither a position nor the log's start");
        t.set_watermarks(5, 25);
        assert_eq!(t.lag(), Some(20), "nothing processed: all of the log");
        t.set_next_offset(Some(10));
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
        assert_eq!(json["tasks"][0]["state"], "created");
        assert_eq!(json["tasks"][0]["processed_offset"], 4);
        assert_eq!(json["generation"], -1);
        assert_eq!(json["assignments"], serde_json::json!([]));
    }

    #[test]
    fn assignment_history_keeps_the_newest() {
        let status = InstanceStatus::new("i".into(), Duration::from_secs(60));
        for generation in 0..40 {
            status.record_assignment(AssignmentRecord {
                at_unix_ms: unix_millis(),
                generation,
                added: vec!["0_0".into()],
                revoked: vec![],
                lost: vec![],
                owning: vec!["0_0".into()],
                took_ms: 1,
            });
        }
        status.set_membership(39, "member-1".into());
        let json: serde_json::Value = serde_json::from_str(&status.to_json()).unwrap();
        let history = json["assignments"].as_array().unwrap();
        assert_eq!(history.len(), ASSIGNMENT_HISTORY);
        assert_eq!(history.last().unwrap()["generation"], 39);
        assert_eq!(history[0]["generation"], 40 - ASSIGNMENT_HISTORY as i64);
        assert_eq!(json["generation"], 39);
        assert_eq!(json["member_id"], "member-1");
    }
}
