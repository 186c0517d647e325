//! Standby replicas at the product's defaults (10 s session timeout, 30 s commit interval) on
//! the local broker: with `--num-standby-replicas 2`, each of three instances keeps every task
//! it does not run warm, so when one is SIGKILLed the survivors take its partitions over
//! without restoring their changelogs, and the counts go on from where the standbys stood.

use std::time::Duration;

use kstreams_suite::failover::failover;
use kstreams_suite::{broker_and_app, take_turn};

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
