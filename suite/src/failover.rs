//! One failover with standby replicas, measured: three instances count a keyspace, every
//! standby catches up, the instance running the most tasks is SIGKILLed, and the survivors
//! take its partitions over. Shared by `tests/standby_replicas.rs` (which asserts on it) and
//! the benchmarks (which print it for several replica counts).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use kstreams_engine::status::StandbyView;

use crate::{
    all_tasks, group_complete, poll_until, produce_round, App, AppOptions, Broker, Storage,
};

const PARTITIONS: usize = 4;
/// From the SIGKILL to every task running on the survivors: the 10 s session running out, a
/// rebalance round, and the moved tasks' restores.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(600);

/// A moved task, as its new owner took it over.
#[derive(Debug, Clone)]
pub struct MovedTask {
    pub task: String,
    /// Changelog records its new owner restored.
    pub restored: u64,
    /// Whether its new owner held a standby of it when the old owner was killed.
    pub had_standby: bool,
    /// Whether its new owner's log says it promoted that standby.
    pub promoted: bool,
    /// From the SIGKILL until it ran on its new owner.
    pub running_after: Duration,
}

/// What one failover showed.
#[derive(Debug, Clone)]
pub struct FailoverRun {
    pub storage: Storage,
    pub replicas: usize,
    pub keys: usize,
    /// Changelog records when the instance was killed.
    pub changelog_records: i64,
    /// From the start of the three until every standby had caught up.
    pub warm_after: Duration,
    /// Standbys held on the three before the kill.
    pub standbys: usize,
    /// Changelog records standbys applied on the three before the kill.
    pub standby_records: u64,
    /// State directories of the three before the kill, bytes.
    pub state_bytes: u64,
    pub moved: Vec<MovedTask>,
    /// From the SIGKILL until every task ran on the survivors.
    pub all_running_after: Duration,
    /// CPU time of the two survivors from their start to their clean stop, seconds.
    pub survivors_cpu_seconds: f64,
}

impl FailoverRun {
    /// Moved tasks whose new owner restored nothing.
    pub fn warm(&self) -> usize {
        self.moved.iter().filter(|m| m.restored == 0).count()
    }

    /// One line for a test's output.
    pub fn summary(&self) -> String {
        let moved: Vec<String> = self
            .moved
            .iter()
            .map(|m| {
                format!(
                    "{} restored {} records, running {:.1} s after the SIGKILL{}",
                    m.task,
                    m.restored,
                    m.running_after.as_secs_f64(),
                    if m.had_standby {
                        " (had a standby)"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        format!(
            "{} standby replicas, {} keys, {} changelog records: every task running on the \
             survivors {:.1} s after the SIGKILL; {}",
            self.replicas,
            self.keys,
            self.changelog_records,
            self.all_running_after.as_secs_f64(),
            moved.join("; ")
        )
    }
}

fn standby_positions(app: &App) -> Option<Vec<StandbyView>> {
    app.view().map(|view| view.standbys)
}

/// Every standby the instance holds is kept through its changelog's end (`ends`, per partition):
/// promoting it would restore nothing.
pub fn standbys_caught_up(app: &App, ends: &[i64]) -> bool {
    standby_positions(app).is_some_and(|standbys| {
        standbys
            .iter()
            .all(|s| s.positions == [ends[s.partition as usize]] && s.lag == Some(0))
    })
}

/// Changelog records `app` restored for `task` so far (`kstreams_restore_records_total`).
pub fn restored_records(app: &App, task: &str) -> u64 {
    let label = format!("task_id=\"{task}\"");
    app.metric("kstreams_restore_records_total", &[&label])
        .unwrap_or(0.0) as u64
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A field (`cpu_ms=123`) of an instance's last "stopped:" log line.
pub fn stopped_field(log: &str, field: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains("stopped: "))?;
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(field)?.strip_prefix('='))
        .and_then(|value| value.parse().ok())
}

/// Runs the failover on `broker` with `options` (4-partition topics created) and `replicas`
/// standby replicas, over `keys` distinct keys counted once before the kill and once after;
/// `timeout` bounds each wait before the kill and the final counts. Panics, with the logs,
/// if a wait runs out or a count is wrong.
pub fn failover(
    broker: &Broker,
    options: &AppOptions,
    root: &Path,
    replicas: usize,
    keys: usize,
    timeout: Duration,
) -> FailoverRun {
    let mut options = options.clone();
    options
        .extra_args
        .extend(["--num-standby-replicas".to_string(), replicas.to_string()]);
    let instance_options = options.instances(root, &["a", "b", "c"]);
    produce_round(broker, &options.input_topic, 1, keys);
    let started = Instant::now();
    let mut apps: Vec<App> = instance_options
        .iter()
        .map(|o| App::spawn(&broker.address(), o))
        .collect();
    let processed = |apps: &[App]| -> f64 {
        let processed = apps
            .iter()
            .map(|a| a.metric("kstreams_records_processed_total", &[]));
        processed.map(|p| p.unwrap_or(0.0)).sum()
    };
    let changelog_ends = || broker.end_offsets(&options.changelog_topic());
    let held = |apps: &[App]| -> usize {
        let views = apps.iter().filter_map(App::view);
        views.map(|v| v.standbys.len()).sum()
    };
    // Every key's first count written out (a changelog record per key), and at least the
    // standbys asked for, all kept through their changelog's end.
    let warm = poll_until(timeout, || {
        let ends = changelog_ends();
        group_complete(&apps, PARTITIONS)
            && processed(&apps) >= keys as f64
            && ends.iter().sum::<i64>() >= keys as i64
            && held(&apps) >= replicas.min(2) * PARTITIONS
            && apps.iter().all(|a| standbys_caught_up(a, &ends))
    });
    let Some(_) = warm else {
        panic!(
            "the three did not count {keys} keys with every standby caught up within \
             {timeout:?}: running {:?}, standbys {:?}, processed {}, changelog ends {:?}; \
             logs:\n{}",
            apps.iter().map(App::running_tasks).collect::<Vec<_>>(),
            apps.iter().map(standby_positions).collect::<Vec<_>>(),
            processed(&apps),
            changelog_ends(),
            apps.iter()
                .map(App::log)
                .collect::<Vec<_>>()
                .join("\n----\n")
        );
    };
    let warm_after = started.elapsed();
    let changelog_records: i64 = changelog_ends().iter().sum();
    let standbys = held(&apps);
    let standby_records: u64 = apps
        .iter()
        .map(|a| {
            a.metric("kstreams_standby_records_total", &[])
                .unwrap_or(0.0) as u64
        })
        .sum();
    let state_bytes = instance_options
        .iter()
        .map(|o| dir_bytes(&o.state_dir))
        .sum();

    let victim = (0..apps.len())
        .max_by_key(|i| apps[*i].running_tasks().map_or(0, |t| t.len()))
        .expect("three instances");
    let moved_tasks = apps[victim].running_tasks().unwrap_or_default();
    let survivors: Vec<usize> = (0..apps.len()).filter(|i| *i != victim).collect();
    // Per survivor, the standbys it held and each moved task's restored total so far.
    let standbys_held: BTreeMap<usize, BTreeSet<String>> = survivors
        .iter()
        .map(|i| {
            let held = standby_positions(&apps[*i]).unwrap_or_default();
            (*i, held.into_iter().map(|s| s.task_id).collect())
        })
        .collect();
    let restored_before: HashMap<(usize, String), u64> = survivors
        .iter()
        .flat_map(|i| moved_tasks.iter().map(move |t| (*i, t.clone())))
        .map(|(i, t)| {
            let before = restored_records(&apps[i], &t);
            ((i, t), before)
        })
        .collect();

    apps[victim].kill();
    let killed = Instant::now();
    let mut running_since: HashMap<String, (usize, Duration)> = HashMap::new();
    let all_running = poll_until(FAILOVER_TIMEOUT, || {
        for i in &survivors {
            for task in apps[*i].running_tasks().unwrap_or_default() {
                running_since
                    .entry(task)
                    .or_insert_with(|| (*i, killed.elapsed()));
            }
        }
        let mut seen = BTreeSet::new();
        survivors.iter().all(|i| {
            apps[*i]
                .running_tasks()
                .is_some_and(|tasks| tasks.into_iter().all(|t| seen.insert(t)))
        }) && seen == all_tasks(PARTITIONS)
    });
    let Some(all_running_after) = all_running else {
        panic!(
            "the survivors did not run every task within {FAILOVER_TIMEOUT:?} of the SIGKILL \
             (running {:?}); their logs:\n{}",
            survivors
                .iter()
                .map(|i| apps[*i].running_tasks())
                .collect::<Vec<_>>(),
            survivors
                .iter()
                .map(|i| apps[*i].log())
                .collect::<Vec<_>>()
                .join("\n----\n")
        );
    };
    let moved: Vec<MovedTask> = moved_tasks
        .iter()
        .map(|task| {
            let owner = survivors
                .iter()
                .copied()
                .find(|i| apps[*i].running_tasks().is_some_and(|t| t.contains(task)))
                .unwrap_or_else(|| panic!("{task} runs on no survivor"));
            let restored =
                restored_records(&apps[owner], task) - restored_before[&(owner, task.clone())];
            let log = apps[owner].log();
            MovedTask {
                task: task.clone(),
                restored,
                had_standby: standbys_held[&owner].contains(task),
                promoted: log
                    .lines()
                    .any(|l| l.contains("promoting the standby replica") && l.contains(task)),
                running_after: running_since
                    .get(task)
                    .map_or(all_running_after, |(_, after)| *after),
            }
        })
        .collect();

    // The counts go on from the moved tasks' state: a second round makes every key 2.
    produce_round(broker, &options.input_topic, 2, keys);
    let expected: HashMap<String, u64> = (0..keys).map(|k| (format!("key-{k}"), 2)).collect();
    broker
        .wait_for_counts(&options.output_topic, &expected, timeout)
        .unwrap_or_else(|e| panic!("{}: {e}", options.output_topic));
    let mut survivors_cpu_seconds = 0.0;
    for i in survivors {
        let status = apps[i].terminate(Duration::from_secs(60));
        let log = apps[i].log();
        assert!(status.success(), "exit {status}; log:\n{log}");
        survivors_cpu_seconds += stopped_field(&log, "cpu_ms").unwrap_or(0) as f64 / 1000.0;
    }
    FailoverRun {
        storage: broker.storage,
        replicas,
        keys,
        changelog_records,
        warm_after,
        standbys,
        standby_records,
        state_bytes,
        moved,
        all_running_after,
        survivors_cpu_seconds,
    }
}
