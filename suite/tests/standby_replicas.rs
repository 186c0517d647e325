//! Standby replicas at the product's defaults (10 s session timeout, 30 s commit interval) on
//! the local broker: with `--num-standby-replicas 2`, each of three instances keeps every task
//! it does not run warm, so when one is SIGKILLed the survivors take its partitions over
//! without restoring their changelogs, and the counts go on from where the standbys stood.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use kstreams_suite::{
    all_tasks, broker_and_app, group_complete, poll_until, produce_round, take_turn, App,
};

const PARTITIONS: usize = 4;
/// Distinct keys: 10,000 changelog records per partition, many produce batches each.
const KEYS: usize = 40_000;
/// The product's default session timeout: a killed member's partitions move once it ran out.
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// From the SIGKILL to every task running on the survivors: the session running out, a
/// rebalance round, and a restore (of nothing, when the standbys are warm).
const FAILOVER_BOUND: Duration = Duration::from_secs(3 * SESSION_TIMEOUT.as_secs());
/// Group formation, the first counts, a commit interval (30 s) for the standbys to catch up
/// with the group's commit, and the final counts.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Whether the instance keeps a standby of every task it does not run, each kept through the
/// changelog's end (`ends`, per partition): promoting it would restore nothing.
fn warm_standbys(app: &App, ends: &[i64]) -> bool {
    let (Some(running), Some(view)) = (app.running_tasks(), app.view()) else {
        return false;
    };
    let held: BTreeSet<String> = view.standbys.iter().map(|s| s.task_id.clone()).collect();
    let expected: BTreeSet<String> = all_tasks(PARTITIONS)
        .difference(&running)
        .cloned()
        .collect();
    held == expected
        && view
            .standbys
            .iter()
            .all(|s| s.positions == [ends[s.partition as usize]] && s.lag == Some(0))
}

fn restored(app: &App, task: &str) -> f64 {
    let label = format!("task_id=\"{task}\"");
    app.metric("kstreams_restore_records_total", &[&label])
        .unwrap_or(0.0)
}

#[test]
fn with_two_standbys_a_killed_instances_partitions_move_to_survivors_that_restore_nothing() {
    let _turn = take_turn();
    let root = tempfile::tempdir().unwrap();
    let (broker, options) = broker_and_app(root.path());
    let mut options = options.with_product_defaults();
    options.extra_args = vec!["--num-standby-replicas".into(), "2".into()];
    let instance_options = options.instances(root.path(), &["a", "b", "c"]);
    produce_round(&broker, &options.input_topic, 1, KEYS);
    let mut apps: Vec<App> = instance_options
        .iter()
        .map(|o| App::spawn(&broker.address(), o))
        .collect();
    let processed = |apps: &[App]| -> f64 {
        apps.iter()
            .map(|a| {
                a.metric("kstreams_records_processed_total", &[])
                    .unwrap_or(0.0)
            })
            .sum()
    };
    let changelog_ends = || broker.end_offsets(&options.changelog_topic());
    let changelog_records = || -> i64 { changelog_ends().iter().sum() };
    // Every key's first count written out (the changelog holds a record per key) and every
    // standby caught up with it and with the group's commit.
    let warm = poll_until(TIMEOUT, || {
        group_complete(&apps, PARTITIONS)
            && processed(&apps) >= KEYS as f64
            && changelog_records() >= KEYS as i64
            && apps.iter().all(|a| warm_standbys(a, &changelog_ends()))
    });
    assert!(
        warm.is_some(),
        "the three did not share the tasks with every other task warm within {TIMEOUT:?}: \
         running {:?}, standbys {:?}, processed {}, changelog records {}; logs:\n{}",
        apps.iter().map(App::running_tasks).collect::<Vec<_>>(),
        apps.iter()
            .map(|a| a.view().map(|v| v.standbys))
            .collect::<Vec<_>>(),
        processed(&apps),
        changelog_records(),
        apps.iter()
            .map(App::log)
            .collect::<Vec<_>>()
            .join("\n----\n")
    );
    let changelog_records = changelog_records();

    let victim = (0..apps.len())
        .max_by_key(|i| apps[*i].running_tasks().map_or(0, |t| t.len()))
        .unwrap();
    let moved = apps[victim].running_tasks().unwrap();
    apps[victim].kill();
    let survivors: Vec<usize> = (0..apps.len()).filter(|i| *i != victim).collect();
    let started = Instant::now();
    let took = poll_until(FAILOVER_BOUND, || {
        let mut seen = BTreeSet::new();
        survivors.iter().all(|i| {
            apps[*i]
                .running_tasks()
                .is_some_and(|tasks| tasks.into_iter().all(|t| seen.insert(t)))
        }) && seen == all_tasks(PARTITIONS)
    });
    let Some(took) = took else {
        panic!(
            "the survivors did not run every task within {FAILOVER_BOUND:?} of the SIGKILL \
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
        )
    };
    let mut figures = Vec::new();
    for task in &moved {
        let owner = survivors
            .iter()
            .copied()
            .find(|i| apps[*i].running_tasks().is_some_and(|t| t.contains(task)))
            .unwrap_or_else(|| panic!("{task} runs on no survivor"));
        let records = restored(&apps[owner], task);
        figures.push(format!("{task}: {records} records restored"));
        assert_eq!(
            records,
            0.0,
            "{task} was promoted from a standby with no lag, yet its new owner restored \
             {records} changelog records; its log:\n{}",
            apps[owner].log()
        );
        assert!(
            apps[owner]
                .log()
                .lines()
                .any(|l| l.contains("promoting the standby replica") && l.contains(task.as_str())),
            "{task}'s new owner did not promote a standby; its log:\n{}",
            apps[owner].log()
        );
    }
    eprintln!(
        "SIGKILL of the instance running [{}] to every task running on the two survivors: \
         {:.1} s ({:.1} s to the first poll that saw it); {}; the changelog holds \
         {changelog_records} records",
        moved.iter().cloned().collect::<Vec<_>>().join(", "),
        started.elapsed().as_secs_f64(),
        took.as_secs_f64(),
        figures.join(", ")
    );

    // The counts go on from the promoted standbys' state: a second round makes every key 2.
    produce_round(&broker, &options.input_topic, 2, KEYS);
    let expected: HashMap<String, u64> = (0..KEYS).map(|k| (format!("key-{k}"), 2)).collect();
    broker
        .wait_for_counts(&options.output_topic, &expected, TIMEOUT)
        .unwrap_or_else(|e| panic!("{}: {e}", options.output_topic));
    for i in survivors {
        let status = apps[i].terminate(Duration::from_secs(60));
        assert!(status.success(), "exit {status}; log:\n{}", apps[i].log());
    }
}
