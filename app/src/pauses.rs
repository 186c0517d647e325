//! Across instances: which instance runs each task, and how long each task went without a
//! running owner, measured from successive `/status` polls (the pause a rebalance or a crash
//! costs, as users see it). The local runner's view of ownership; the suite's scaling test
//! measures with it too.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A partition that runs again after a pause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    pub task: String,
    /// The instance that ran it before the pause (none at first start).
    pub from: Option<String>,
    pub to: String,
    pub paused: Duration,
}

#[derive(Debug, Default)]
struct Watch {
    running_on: Option<String>,
    paused: Option<(Instant, Option<String>)>,
}

/// Follows which instance runs each task, poll after poll.
#[derive(Debug, Default)]
pub struct PauseTracker {
    tasks: BTreeMap<String, Watch>,
    /// Pauses of tasks that moved or restarted (not first starts).
    completed: Vec<Duration>,
}

impl PauseTracker {
    /// Feeds one poll: `running` maps each task seen running to its instance. Returns the
    /// pauses that ended with this poll.
    pub fn observe(&mut self, now: Instant, running: &BTreeMap<String, String>) -> Vec<Pause> {
        let mut ended = Vec::new();
        for task in running.keys() {
            self.tasks.entry(task.clone()).or_insert_with(|| Watch {
                running_on: None,
                paused: Some((now, None)),
            });
        }
        for (task, watch) in &mut self.tasks {
            match (running.get(task), watch.running_on.take()) {
                (Some(instance), _) => {
                    if let Some((since, from)) = watch.paused.take() {
                        let paused = now.duration_since(since);
                        if from.is_some() {
                            self.completed.push(paused);
                            ended.push(Pause {
                                task: task.clone(),
                                from,
                                to: instance.clone(),
                                paused,
                            });
                        }
                    }
                    watch.running_on = Some(instance.clone());
                }
                (None, Some(previous)) => watch.paused = Some((now, Some(previous))),
                (None, None) => {}
            }
        }
        ended
    }

    /// Tasks currently without a running instance, with how long so far.
    pub fn paused_now(&self, now: Instant) -> Vec<(String, Duration)> {
        self.tasks
            .iter()
            .filter_map(|(task, w)| {
                let (since, from) = w.paused.as_ref()?;
                from.as_ref()?;
                Some((task.clone(), now.duration_since(*since)))
            })
            .collect()
    }

    /// Median and maximum of the completed pauses.
    pub fn summary(&self) -> Option<(Duration, Duration)> {
        let mut sorted = self.completed.clone();
        sorted.sort();
        Some((*sorted.get(sorted.len() / 2)?, *sorted.last()?))
    }

    pub fn count(&self) -> usize {
        self.completed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(t, i)| (t.to_string(), i.to_string()))
            .collect()
    }

    #[test]
    fn a_moved_task_reports_its_pause() {
        let mut tracker = PauseTracker::default();
        let t0 = Instant::now();
        assert!(tracker
            .observe(t0, &running(&[("0_0", "a"), ("0_1", "a")]))
            .is_empty());
        let t1 = t0 + Duration::from_millis(100);
        tracker.observe(t1, &running(&[("0_0", "a")]));
        assert_eq!(tracker.paused_now(t1 + Duration::from_millis(50)).len(), 1);
        let t2 = t0 + Duration::from_millis(400);
        let ended = tracker.observe(t2, &running(&[("0_0", "a"), ("0_1", "b")]));
        assert_eq!(
            ended,
            vec![Pause {
                task: "0_1".into(),
                from: Some("a".into()),
                to: "b".into(),
                paused: Duration::from_millis(300),
            }]
        );
        assert_eq!(
            tracker.summary(),
            Some((Duration::from_millis(300), Duration::from_millis(300)))
        );
        assert!(tracker.paused_now(t2).is_empty());
    }

    #[test]
    fn first_starts_are_not_counted_as_pauses() {
        let mut tracker = PauseTracker::default();
        let t0 = Instant::now();
        tracker.observe(t0, &running(&[]));
        let ended = tracker.observe(t0 + Duration::from_secs(1), &running(&[("0_0", "a")]));
        assert!(ended.is_empty());
        assert_eq!(tracker.summary(), None);
        assert_eq!(tracker.count(), 0);
    }
}
