//! Standby replicas at the product's defaults (10 s session timeout, 30 s commit interval) on
//! the local broker: with `--num-standby-replicas 2`, each of three instances keeps every task
//! it does not run warm, so when one is SIGKILLed the survivors take its partitions over
//! without restoring their changelogs, and the counts go on from where the standbys stood.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use kstreams_suite::failover::{failover, restored_records, standbys_caught_up};
use kstreams_suite::query::Queried;
use kstreams_suite::{
    all_tasks, broker_and_app, group_complete, java_partition, poll_until, produce_round,
    take_turn, App, AppOptions,
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

#[test]
fn with_two_standbys_a_killed_instances_partitions_move_to_survivors_that_restore_nothing() {
    let _turn = take_turn();
    let root = tempfile::tempdir().unwrap();
    let (broker, options) = broker_and_app(root.path());
    let options = options.with_product_defaults();
    let run = failover(&broker, &options, root.path(), 2, KEYS, TIMEOUT);
    eprintln!("{}", run.summary());
    assert!(
        run.changelog_records >= KEYS as i64,
        "the changelog holds {} records, fewer than the {KEYS} keys",
        run.changelog_records
    );
    assert_eq!(
        run.standbys, 8,
        "each of 4 tasks kept warm on the 2 instances not running it"
    );
    assert!(
        run.all_running_after <= FAILOVER_BOUND,
        "every task ran on the survivors only {:?} after the SIGKILL (bound {FAILOVER_BOUND:?})",
        run.all_running_after
    );
    for moved in &run.moved {
        assert!(
            moved.had_standby && moved.promoted,
            "{}'s new owner did not promote a standby of it: {moved:?}",
            moved.task
        );
        assert_eq!(
            moved.restored, 0,
            "{} was promoted from a standby kept through the changelog's end, yet its new owner \
             restored {} changelog records",
            moved.task, moved.restored
        );
    }
}

/// Whether `app` holds standbys of exactly `tasks`, each kept through its changelog's end.
fn standbys_kept_through_end(app: &App, tasks: &BTreeSet<String>, ends: &[i64]) -> bool {
    let held = app.view().map(|view| {
        let held = view.standbys.into_iter().map(|s| s.task_id);
        held.collect::<BTreeSet<String>>()
    });
    held.as_ref() == Some(tasks) && standbys_caught_up(app, ends)
}

/// Scale-out and back with one standby replica: the tasks that moved to a second instance stay
/// warm on the first as standbys (the revoked task is demoted, not closed), follow the second
/// instance's writes, and come back with nothing to restore when it leaves.
#[test]
fn a_partition_moved_by_scale_out_comes_back_warm_after_scale_in() {
    let _turn = take_turn();
    let root = tempfile::tempdir().unwrap();
    let (broker, options) = broker_and_app(root.path());
    let mut options = options.with_product_defaults();
    options.extra_args = vec!["--num-standby-replicas".into(), "1".into()];
    let [first_options, second_options]: [AppOptions; 2] = options
        .instances(root.path(), &["first", "second"])
        .try_into()
        .unwrap();
    let ends = || broker.end_offsets(&options.changelog_topic());
    let counts = |round: u64| -> HashMap<String, u64> {
        (0..KEYS).map(|k| (format!("key-{k}"), round)).collect()
    };
    produce_round(&broker, &options.input_topic, 1, KEYS);
    let first = App::spawn(&broker.address(), &first_options);
    broker
        .wait_for_counts(&options.output_topic, &counts(1), TIMEOUT)
        .unwrap_or_else(|e| panic!("{}: {e}; log:\n{}", options.output_topic, first.log()));

    // Scale out: the second instance takes some tasks; the first keeps them as standbys and
    // follows the second's writes of a second round.
    let second = App::spawn(&broker.address(), &second_options);
    let mut apps = vec![first, second];
    assert!(
        poll_until(TIMEOUT, || group_complete(&apps, PARTITIONS)).is_some(),
        "the two did not share the tasks within {TIMEOUT:?}; logs:\n{}\n----\n{}",
        apps[0].log(),
        apps[1].log()
    );
    let moved = apps[1].running_tasks().unwrap_or_default();
    produce_round(&broker, &options.input_topic, 2, KEYS);
    let followed = poll_until(TIMEOUT, || {
        ends().iter().sum::<i64>() >= 2 * KEYS as i64
            && standbys_kept_through_end(&apps[0], &moved, &ends())
    });
    assert!(
        followed.is_some(),
        "the first instance did not keep the moved tasks {moved:?} as standbys through the \
         second round ({:?}, changelog ends {:?}); its log:\n{}",
        apps[0].view().map(|v| v.standbys),
        ends(),
        apps[0].log()
    );
    // KIP-535: a query that accepts staleness is answered by the standby where it is asked,
    // stating its lag; without it, the owner answers.
    let key = (0..KEYS)
        .map(|k| format!("key-{k}"))
        .find(|k| moved.contains(&format!("0_{}", java_partition(k.as_bytes(), 4))))
        .expect("a key of a moved partition");
    match apps[0].query_stale("count-store", &key) {
        Queried::Value(a) => assert!(
            !a.from_owner && !a.forwarded && a.value == 2 && a.lag.is_some(),
            "{a:?}"
        ),
        other => panic!("{key} asked of its standby's instance: {other:?}"),
    }
    match apps[0].query("count-store", &key) {
        Queried::Value(a) => assert!(a.from_owner && a.forwarded && a.value == 2, "{a:?}"),
        other => panic!("{key} asked of another instance than its owner: {other:?}"),
    }
    let before: Vec<u64> = moved
        .iter()
        .map(|t| restored_records(&apps[0], t))
        .collect();

    // Scale in: the second leaves cleanly; its tasks come back to the first's standbys.
    let status = apps[1].terminate(Duration::from_secs(60));
    assert!(status.success(), "exit {status}; log:\n{}", apps[1].log());
    let back = poll_until(TIMEOUT, || {
        apps[0].running_tasks() == Some(all_tasks(PARTITIONS))
    });
    assert!(
        back.is_some(),
        "the first instance did not run every task again within {TIMEOUT:?}; its log:\n{}",
        apps[0].log()
    );
    for (task, before) in moved.iter().zip(before) {
        let records = restored_records(&apps[0], task) - before;
        assert_eq!(
            records,
            0,
            "{task} came back to its standby, yet {records} changelog records were restored; \
             log:\n{}",
            apps[0].log()
        );
    }
    eprintln!(
        "scale-out moved [{}] and scale-in brought them back after {:.1} s, restoring nothing",
        moved.iter().cloned().collect::<Vec<_>>().join(", "),
        back.unwrap().as_secs_f64()
    );
    // The counts go on from the promoted state.
    produce_round(&broker, &options.input_topic, 3, KEYS);
    broker
        .wait_for_counts(&options.output_topic, &counts(3), TIMEOUT)
        .unwrap_or_else(|e| panic!("{}: {e}; log:\n{}", options.output_topic, apps[0].log()));
    let status = apps[0].terminate(Duration::from_secs(60));
    assert!(status.success(), "exit {status}; log:\n{}", apps[0].log());
}
