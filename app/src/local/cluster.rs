//! The local cluster: the instances, what their `/status` said last, records/s per instance,
//! partition pauses, and the event log (runner actions, assignment changes, pauses).

use kstreams_engine::TaskPhase;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::future::join_all;
use kstreams_engine::status::{unix_millis, InstanceView};

use super::instance::{Instance, Phase};
use super::status_client::fetch_status;
use kstreams_count::pauses::PauseTracker;

const EVENTS_KEPT: usize = 200;

/// What the cluster was told to run.
pub struct ClusterSettings {
    pub program: PathBuf,
    /// Arguments every instance gets (before its own state dir and metrics address).
    pub common_args: Vec<String>,
    pub state_root: PathBuf,
    pub metrics_port_base: u16,
    /// Pass each instance its name as `--group-instance-id`.
    pub static_membership: bool,
}

/// One line of the event log.
#[derive(Debug, Clone)]
pub struct Event {
    pub at_unix_ms: u64,
    pub text: String,
}

/// What the last poll learned about one instance.
#[derive(Default)]
pub struct Observed {
    pub status: Option<InstanceView>,
    pub records_per_second: f64,
    last_offsets: Option<(Instant, HashMap<String, i64>)>,
    last_assignment_ms: u64,
}

pub struct Cluster {
    settings: ClusterSettings,
    pub instances: Vec<Instance>,
    pub observed: Vec<Observed>,
    pub pauses: PauseTracker,
    pub events: VecDeque<Event>,
    /// Events not yet printed (plain mode prints each once).
    unprinted: usize,
    /// Queries asked so far (`get` asks the running instances in turn).
    queries_asked: usize,
}

impl Cluster {
    pub fn new(settings: ClusterSettings) -> Self {
        Self {
            settings,
            instances: Vec::new(),
            observed: Vec::new(),
            pauses: PauseTracker::default(),
            events: VecDeque::new(),
            unprinted: 0,
            queries_asked: 0,
        }
    }

    pub fn event(&mut self, text: impl Into<String>) {
        self.push_event(Event {
            at_unix_ms: unix_millis(),
            text: text.into(),
        });
    }

    fn push_event(&mut self, event: Event) {
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(event);
        self.unprinted += 1;
    }

    /// Events logged since the last call (for plain output).
    pub fn take_new_events(&mut self) -> Vec<Event> {
        let new = self.unprinted.min(self.events.len());
        self.unprinted = 0;
        self.events
            .iter()
            .skip(self.events.len() - new)
            .cloned()
            .collect()
    }

    /// Asks the next running instance (in turn, so that forwarding shows) for `key`'s count,
    /// and says which instance answered and which asked.
    pub async fn query(&mut self, key: &str) -> anyhow::Result<String> {
        let up: Vec<usize> = (0..self.instances.len())
            .filter(|i| self.instances[*i].is_up())
            .collect();
        anyhow::ensure!(!up.is_empty(), "no instance is running");
        self.queries_asked += 1;
        let asked = &self.instances[up[self.queries_asked % up.len()]];
        let path = kstreams_engine::key_path("count-store", key);
        let authority = format!("127.0.0.1:{}", asked.port);
        let (status, _, body) =
            crate::http_client::get(&authority, &path, Duration::from_secs(5)).await?;
        let name_of = |endpoint: &str| {
            self.instances
                .iter()
                .find(|i| endpoint.ends_with(&format!(":{}", i.port)))
                .map_or_else(|| endpoint.to_string(), |i| i.name.clone())
        };
        match serde_json::from_slice::<kstreams_engine::KeyAnswer>(&body) {
            Ok(answer) if status.is_success() => Ok(format!(
                "{key} = {} (partition {}; asked {}, answered by {}{})",
                answer.value,
                answer.partition,
                asked.name,
                name_of(&answer.answered_by),
                if answer.from_owner {
                    ", its owner"
                } else {
                    ", a standby"
                }
            )),
            _ => {
                let why = serde_json::from_slice::<kstreams_engine::ErrorAnswer>(&body)
                    .map_or_else(|_| String::from_utf8_lossy(&body).into_owned(), |e| e.error);
                anyhow::bail!("{key}: {status} from {}: {why}", asked.name)
            }
        }
    }

    /// Starts the next instance, `kstreams-count-<len>`.
    pub fn add(&mut self) -> anyhow::Result<()> {
        let index = self.instances.len();
        let port = self
            .settings
            .metrics_port_base
            .checked_add(index as u16)
            .ok_or_else(|| anyhow::anyhow!("no metrics port left for instance {index}"))?;
        self.instances
            .push(Instance::new(index, &self.settings.state_root, port));
        self.observed.push(Observed::default());
        self.start(index)
    }

    /// Starts (again) an instance that is not running, on its own state dir.
    pub fn start(&mut self, index: usize) -> anyhow::Result<()> {
        let mut args = self.settings.common_args.clone();
        let program = self.settings.program.clone();
        let static_membership = self.settings.static_membership;
        let instance = self.instance_mut(index)?;
        if static_membership {
            args.extend(["--group-instance-id".to_string(), instance.name.clone()]);
        }
        instance.start(&program, &args)?;
        let text = format!(
            "{} started (pid {}, state {}, status http://127.0.0.1:{}/status)",
            instance.name,
            instance.pid().unwrap_or(0),
            instance.state_dir.display(),
            instance.port
        );
        self.event(text);
        Ok(())
    }

    pub fn stop(&mut self, index: usize) -> anyhow::Result<()> {
        let instance = self.instance_mut(index)?;
        instance.stop()?;
        let text = format!("{}: SIGTERM sent (clean shutdown)", instance.name);
        self.event(text);
        Ok(())
    }

    pub fn kill(&mut self, index: usize) -> anyhow::Result<()> {
        let instance = self.instance_mut(index)?;
        instance.kill()?;
        let text = format!("{}: killed (SIGKILL)", instance.name);
        self.event(text);
        Ok(())
    }

    fn instance_mut(&mut self, index: usize) -> anyhow::Result<&mut Instance> {
        let count = self.instances.len();
        self.instances.get_mut(index).ok_or_else(|| {
            anyhow::anyhow!("no instance {index}: instances are 0..{count} (`add` starts another)")
        })
    }

    /// Polls every running instance's `/status` and updates rates, pauses and the event log.
    pub async fn refresh(&mut self) {
        for i in 0..self.instances.len() {
            if let Some(how) = self.instances[i].reap() {
                let instance = &self.instances[i];
                let mut text = format!("{} exited ({how})", instance.name);
                if how != "exit 0" && how != "killed by SIGKILL" {
                    text.push_str(&format!(
                        "; log {}:\n{}",
                        instance.log_path.display(),
                        instance.log_tail(3)
                    ));
                }
                self.event(text);
            }
        }
        let polls = self.instances.iter().map(|instance| {
            let (up, port) = (instance.is_up(), instance.port);
            async move {
                match up {
                    true => fetch_status(port).await.ok(),
                    false => None,
                }
            }
        });
        let statuses = join_all(polls).await;
        let now = Instant::now();
        let mut running = BTreeMap::new();
        let mut new_events = Vec::new();
        for ((instance, observed), status) in self
            .instances
            .iter()
            .zip(self.observed.iter_mut())
            .zip(statuses)
        {
            if let Some(status) = &status {
                for task in status
                    .tasks
                    .iter()
                    .filter(|t| t.state == TaskPhase::Running)
                {
                    running.insert(task.task_id.clone(), instance.name.clone());
                }
                let seen_until = observed.last_assignment_ms;
                for change in status
                    .assignments
                    .iter()
                    .filter(|a| a.at_unix_ms > seen_until)
                {
                    observed.last_assignment_ms = change.at_unix_ms;
                    new_events.push(Event {
                        at_unix_ms: change.at_unix_ms,
                        text: format!(
                            "{} generation {}: added [{}] revoked [{}] lost [{}] -> owns [{}] ({} ms)",
                            instance.name,
                            change.generation,
                            change.added.join(" "),
                            change.revoked.join(" "),
                            change.lost.join(" "),
                            change.owning.join(" "),
                            change.took_ms
                        ),
                    });
                }
                observed.update_rate(now, status);
            } else {
                observed.records_per_second = 0.0;
                observed.last_offsets = None;
            }
            observed.status = status;
        }
        new_events.sort_by_key(|e| e.at_unix_ms);
        for event in new_events {
            self.push_event(event);
        }
        for pause in self.pauses.observe(now, &running) {
            let from = pause.from.unwrap_or_default();
            let text = match from == pause.to {
                true => format!(
                    "{} running again on {} after {:.2} s",
                    pause.task,
                    pause.to,
                    pause.paused.as_secs_f64()
                ),
                false => format!(
                    "{} moved {from} -> {}: paused {:.2} s",
                    pause.task,
                    pause.to,
                    pause.paused.as_secs_f64()
                ),
            };
            self.event(text);
        }
    }

    /// Stops every instance cleanly, killing those that do not exit within `timeout`.
    pub async fn shutdown(&mut self, timeout: Duration) {
        for instance in self.instances.iter_mut().filter(|i| i.is_up()) {
            let _ = instance.stop();
        }
        let deadline = Instant::now() + timeout;
        while self.instances.iter_mut().any(|i| {
            i.reap();
            i.is_up()
        }) && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for instance in self.instances.iter_mut().filter(|i| i.is_up()) {
            eprintln!(
                "{} did not stop within {timeout:?}; killing it",
                instance.name
            );
            let _ = instance.kill();
        }
    }

    /// Instances still up, for the header.
    pub fn up_count(&self) -> usize {
        self.instances.iter().filter(|i| i.is_up()).count()
    }

    pub fn phase_label(instance: &Instance, observed: &Observed) -> String {
        match (&instance.phase, &observed.status) {
            (Phase::Running, Some(s)) if s.ready => "ready".into(),
            (Phase::Running, Some(s)) if s.generation < 0 => "joining".into(),
            (Phase::Running, Some(_)) => "restoring".into(),
            (Phase::Running, None) => "starting".into(),
            (Phase::Stopping(_), _) => "stopping".into(),
            (Phase::Exited(how), _) => how.clone(),
        }
    }
}

impl Observed {
    /// Records/s from the advance of each task's processed offset since the previous poll.
    fn update_rate(&mut self, now: Instant, status: &InstanceView) {
        let offsets: HashMap<String, i64> = status
            .tasks
            .iter()
            .filter_map(|t| Some((t.task_id.clone(), t.processed_offset?)))
            .collect();
        if let Some((then, previous)) = &self.last_offsets {
            let advanced: i64 = offsets
                .iter()
                .filter_map(|(task, offset)| Some((offset - previous.get(task)?).max(0)))
                .sum();
            let seconds = now.duration_since(*then).as_secs_f64();
            if seconds > 0.0 {
                // Smooth over a few polls so the figure does not flicker.
                let current = advanced as f64 / seconds;
                self.records_per_second = 0.5 * self.records_per_second + 0.5 * current;
            }
        }
        self.last_offsets = Some((now, offsets));
    }
}
