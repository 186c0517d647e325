//! Two owners of one partition for a while, black-box: the old owner frozen (SIGSTOP) in the
//! middle of a write-out past its session timeout, a new owner taking over and counting more
//! input, then the old owner resumed (its late write-out lands after the new owner's records)
//! and later restarted on its own volume. Every stored count must be exact: the old owner's
//! changelog position may not jump over the new owner's records (G1 of the 2026-12-04
//! correctness review), or its tail restore skips them for good.

use std::collections::HashMap;
use std::time::Duration;

use kstreams_engine::testing::failpoints;
use kstreams_suite::{
    produce_round, read_store_counts, run_until_processed, take_turn, wait_until, wrong_counts,
    App, AppOptions, Broker, TwoOwners,
};

const READY_TIMEOUT: Duration = Duration::from_secs(90);
const PROCESS_TIMEOUT: Duration = Duration::from_secs(180);
const EXIT_TIMEOUT: Duration = Duration::from_secs(90);
/// Distinct keys: the old owner's write-out (a changelog and an output record per key) is held
/// for a while once half its changelog records are acknowledged (a failpoint), and SIGSTOP
/// freezes it there; few enough that the freeze
/// (X's 10 s session, Y's join, restore and counting) stays well inside X's 60 s wait for its
/// write-out's acknowledgements, or X's write-out would fail rather than land late.
const KEYS: usize = 20_000;

/// The most records of another writer an instance's log says it found among its own.
fn foreign_records_seen(log: &str) -> u64 {
    log.split(" records of another writer")
        .filter_map(|before| before.rsplit(' ').next()?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// The old owner X (at the defaults, but for a shutdown bound longer than its freeze) counts
/// every key once; SIGTERM starts its final write-out, which a failpoint holds once half its
/// changelog records are acknowledged, and SIGSTOP freezes it there. The new owner Y (defaults) takes the partition after X's session runs
/// out, counts every key a second time and stops cleanly. X resumed: its late write-out lands
/// after Y's records and X stops (another writer's records found among its own). Y runs again
/// and counts half the keys a third time (the group's offset moves past everything X saw). X
/// restarted on its volume: the keys Y updated only in its first run must keep Y's count,
/// which a tail restore starting past Y's first records would miss.
#[test]
fn an_old_owner_frozen_mid_write_out_loses_no_update_of_the_new_owner() {
    let _turn = take_turn();
    let root = tempfile::tempdir().unwrap();
    let broker = Broker::start();
    let mut x_options = AppOptions::fresh(&root.path().join("x"));
    x_options.commit_interval_ms = 30_000; // the product's default
    let held_at = KEYS / 2;
    let owners = TwoOwners::new(&broker, root.path(), x_options, held_at);
    let (x_options, y_options) = (&owners.x, &owners.y);
    let changelog = x_options.changelog_topic();
    let mut x = owners.freeze_x_mid_write_out(
        &broker,
        KEYS,
        held_at,
        PROCESS_TIMEOUT,
        |broker, changelog| broker.end_offsets(changelog)[0],
    );
    let landed = broker.record_count(&changelog);
    assert_eq!(
        landed, held_at as i64,
        "SIGSTOP missed X's held write-out ({:?}): more changelog records than the held ones landed",
        failpoints::WRITE_OUT_PAUSE
    );

    produce_round(&broker, &x_options.input_topic, 2, KEYS);
    run_until_processed(&broker, y_options, "Y", 2 * KEYS as i64, PROCESS_TIMEOUT);
    let y_logged = broker.end_offsets(&changelog)[0];

    x.signal("-CONT");
    let Some(x_stopped) = x.wait_exit(EXIT_TIMEOUT) else {
        panic!("X did not stop after SIGCONT; log:\n{}", x.log());
    };
    let x_log = x.log();
    assert!(
        broker.end_offsets(&changelog)[0] > y_logged,
        "X's late write-out never landed after Y's records (exit {x_stopped}); log:\n{x_log}"
    );
    assert!(
        foreign_records_seen(&x_log) > 0,
        "X wrote its late write-out without seeing Y's records among its own; log:\n{x_log}"
    );

    produce_round(&broker, &x_options.input_topic, 3, KEYS / 2);
    let end = (2 * KEYS + KEYS / 2) as i64;
    run_until_processed(&broker, y_options, "Y again", end, PROCESS_TIMEOUT);

    let mut restarted = App::spawn(&broker.address(), x_options);
    wait_until("X runs its task again", READY_TIMEOUT, || {
        restarted.next_input() >= end
    });
    let stopped = restarted.terminate(EXIT_TIMEOUT);
    assert!(
        stopped.success(),
        "exit {stopped}; log:\n{}",
        restarted.log()
    );
    let stored = read_store_counts(
        &x_options.state_dir,
        &x_options.application_id,
        "count-store",
    );
    let expected: HashMap<String, u64> = (0..KEYS)
        .map(|k| (format!("key-{k}"), if k < KEYS / 2 { 3 } else { 2 }))
        .collect();
    let wrong = wrong_counts(&expected, &stored);
    assert_eq!(
        wrong,
        0,
        "{wrong} of {KEYS} keys' stored counts wrong after X's restart on its volume; its log:\n{}",
        restarted.log()
    );
}
