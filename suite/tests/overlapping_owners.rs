//! Two owners of one partition for a while, black-box: the old owner frozen (SIGSTOP) in the
//! middle of a write-out past its session timeout, a new owner taking over and counting more
//! input, then the old owner resumed (its late write-out lands after the new owner's records)
//! and later restarted on its own volume. Every stored count must be exact: the old owner's
//! changelog position may not jump over the new owner's records (G1 of the 2026-12-04
//! correctness review), or its tail restore skips them for good. And every key's last value
//! on the output topic must come back to its exact count: the old owner's late output is
//! older than the new owner's (G2), so the new owner, idle by then, must find the late
//! records in its changelog and output its own counts again.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use kstreams_engine::testing::failpoints;
use kstreams_suite::{
    produce_round, read_store_counts, take_turn, wait_until, wrong_counts, App, AppOptions, Broker,
    ReadRecord, TwoOwners,
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

/// Keys that, on the output topic (one partition, read in order), have a value other than
/// `newest` after `newest`: the old owner's late output after the new owner's.
fn keys_gone_back(records: &[ReadRecord], newest: &str) -> usize {
    let mut newest_seen = HashSet::new();
    let mut gone_back = HashSet::new();
    for (key, value) in records {
        let key = key.as_deref().unwrap_or_default();
        if value.as_deref() == Some(newest.as_bytes()) {
            newest_seen.insert(key);
        } else if newest_seen.contains(key) {
            gone_back.insert(key);
        }
    }
    gone_back.len()
}

/// The old owner X (at the defaults, but for a shutdown bound longer than its freeze) counts
/// every key once; SIGTERM starts its final write-out, which a failpoint holds once half its
/// changelog records are acknowledged, and SIGSTOP freezes it there. The new owner Y
/// (defaults) takes the partition after X's session runs out, counts every key a second time
/// and writes its counts out at its interval commit. X resumed: its late write-out (changelog
/// and output records from its first count) lands after Y's, and X stops (another writer's
/// records found among its own). Y, idle, must find X's records at its next interval commit
/// and output its own counts again: every key's last output value is 2 again. Y counts half
/// the keys a third time and stops. X restarted on its volume: the keys Y updated only in its
/// first run must keep Y's count, which a tail restore starting past Y's first records would
/// miss; and the last output values stay exact.
#[test]
fn an_old_owner_frozen_mid_write_out_loses_no_update_and_leaves_no_stale_count() {
    let _turn = take_turn();
    let root = tempfile::tempdir().unwrap();
    let broker = Broker::start();
    let mut x_options = AppOptions::fresh(&root.path().join("x"));
    x_options.commit_interval_ms = 30_000; // the product's default
    let held_at = KEYS / 2;
    let owners = TwoOwners::new(&broker, root.path(), x_options, held_at);
    let (x_options, y_options) = (&owners.x, &owners.y);
    let changelog = x_options.changelog_topic();
    let output = &x_options.output_topic;
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
    let mut y = App::spawn(&broker.address(), y_options);
    wait_until("Y processed the second round", PROCESS_TIMEOUT, || {
        y.next_input() >= 2 * KEYS as i64
    });
    let twice: HashMap<String, u64> = (0..KEYS).map(|k| (format!("key-{k}"), 2)).collect();
    if let Err(unwritten) = broker.wait_for_counts(output, &twice, PROCESS_TIMEOUT) {
        panic!("Y's interval commit did not write its counts out: {unwritten}");
    }
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
    let gone_back = keys_gone_back(&broker.read_all(output), "2");
    assert!(
        gone_back > 0,
        "X's late output never followed Y's: the scenario did not happen; log:\n{x_log}"
    );

    // Y finds X's records at its next interval commit (within 30 s) and outputs its counts
    // again.
    if let Err(stale) = broker.wait_for_counts(output, &twice, PROCESS_TIMEOUT) {
        panic!(
            "of the {gone_back} keys whose last output X's late write-out set back, some were \
             never output again by Y ({stale}); Y's log:\n{}",
            y.log()
        );
    }
    let found = y
        .metric("kstreams_changelog_foreign_records_total", &[])
        .unwrap_or(0.0);
    assert!(
        found > 0.0,
        "Y never counted X's records; log:\n{}",
        y.log()
    );

    produce_round(&broker, &x_options.input_topic, 3, KEYS / 2);
    let end = (2 * KEYS + KEYS / 2) as i64;
    wait_until("Y processed the third round", PROCESS_TIMEOUT, || {
        y.next_input() >= end
    });
    let stopped = y.terminate(EXIT_TIMEOUT);
    assert!(stopped.success(), "Y: exit {stopped}; log:\n{}", y.log());

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
    if let Err(wrong_output) = broker.wait_for_counts(output, &expected, PROCESS_TIMEOUT) {
        panic!(
            "last output values wrong at the end ({wrong_output}); X's log:\n{}",
            restarted.log()
        );
    }
}
