//! Exactly-once (`--processing-guarantee exactly_once_v2`, at its default commit interval) on
//! the local broker, which now runs Kafka transactions (`tests/broker_transactions.rs`): through
//! SIGKILLs at 100,000 keys, a crash on either side of a transaction's commit, and an old owner
//! frozen in the middle of a transaction while a new owner takes over. Each ends with exact
//! counts in the store, and with a read_committed reader of the output seeing every key's counts
//! strictly increasing to the exact count: no count twice (which at-least-once writes again after
//! a crash), none going back (which an old owner's late write-out leaves under at-least-once).

use std::collections::HashMap;
use std::time::Duration;

use kstreams_engine::testing::failpoints;
use kstreams_engine::EXACTLY_ONCE_COMMIT_INTERVAL;
use kstreams_suite::{
    broker_and_app, poll_until, produce_paced, produce_round, read_store_counts,
    run_until_processed, take_turn, wait_until, word_count_input, wrong_counts, App, AppOptions,
    Broker, TwoOwners,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TIMEOUT: Duration = Duration::from_secs(180);
const EXIT_TIMEOUT: Duration = Duration::from_secs(90);

/// The options under exactly-once, at its default commit interval.
fn exactly_once(mut options: AppOptions) -> AppOptions {
    options.commit_interval_ms = EXACTLY_ONCE_COMMIT_INTERVAL.as_millis() as u64;
    options
        .extra_args
        .extend(["--processing-guarantee", "exactly_once_v2"].map(String::from));
    options
}

/// Every count a read_committed reader of `topic` sees, per key, in the order written (a key
/// lives in one partition).
fn count_sequences(broker: &Broker, topic: &str) -> HashMap<String, Vec<u64>> {
    let mut sequences: HashMap<String, Vec<u64>> = HashMap::new();
    for (_, key, value) in broker.read_all_located(topic) {
        let text = |b: Option<Vec<u8>>| String::from_utf8(b.unwrap_or_default()).unwrap();
        let count = text(value).parse().expect("a count");
        sequences.entry(text(key)).or_default().push(count);
    }
    sequences
}

/// Each key's counts on `topic` strictly increase and end at its expected count.
fn assert_each_count_once(broker: &Broker, topic: &str, expected: &HashMap<String, u64>) {
    let sequences = count_sequences(broker, topic);
    let mut not_increasing = Vec::new();
    let mut wrong_last = Vec::new();
    for (key, count) in expected {
        let sequence = sequences.get(key).map(Vec::as_slice).unwrap_or_default();
        if sequence.windows(2).any(|pair| pair[1] <= pair[0]) {
            not_increasing.push(format!("{key}: {sequence:?}"));
        }
        if sequence.last() != Some(count) {
            wrong_last.push(format!("{key}: expected {count}, saw {sequence:?}"));
        }
    }
    let unexpected = sequences.len() - expected.len().min(sequences.len());
    assert!(
        not_increasing.is_empty() && wrong_last.is_empty() && unexpected == 0,
        "{} of {} keys' counts not strictly increasing (first: {:?}), {} ending wrong (first: \
         {:?}), {unexpected} unexpected keys",
        not_increasing.len(),
        expected.len(),
        not_increasing.first(),
        wrong_last.len(),
        wrong_last.first(),
    );
}

fn assert_store_exact(options: &AppOptions, expected: &HashMap<String, u64>, log: &str) {
    let stored = read_store_counts(&options.state_dir, &options.application_id, "count-store");
    let wrong = wrong_counts(expected, &stored);
    assert_eq!(
        wrong,
        0,
        "{wrong} of {} stored counts wrong; log of the last instance:\n{log}",
        expected.len()
    );
}

/// Waits for the exact counts on the output, checks each was seen once, stops the instance
/// cleanly and checks the store.
fn finish(broker: &Broker, options: &AppOptions, mut app: App, expected: &HashMap<String, u64>) {
    broker
        .wait_for_counts(&options.output_topic, expected, TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}; log of the last instance:\n{}", app.log()));
    assert_each_count_once(broker, &options.output_topic, expected);
    let log = app.log();
    let stopped = app.terminate(EXIT_TIMEOUT);
    assert!(stopped.success(), "exit {stopped}; log:\n{log}");
    assert_store_exact(options, expected, &log);
}

/// 150,000 records over 100,000 keys, produced over ~20 s while the only instance is SIGKILLed
/// 4 to 6 times at random moments (`CHAOS_SEED` varies them).
#[test]
fn sigkills_at_100k_keys_leave_every_count_once_on_the_output_and_exact_in_the_store() {
    let _turn = take_turn();
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261205);
    eprintln!("chaos seed {seed} (set CHAOS_SEED to replay or vary)");
    let mut rng = StdRng::seed_from_u64(seed);
    let root = tempfile::tempdir().unwrap();
    let (broker, options) = broker_and_app(root.path());
    let options = exactly_once(options);
    let (records, expected) = word_count_input(150_000, 100_000);
    std::thread::scope(|scope| {
        let producer = scope.spawn(|| produce_paced(&broker, &options.input_topic, &records));
        let mut app = App::spawn(&broker.address(), &options);
        let mut kills = 0;
        while kills < 4 || (!producer.is_finished() && kills < 6) {
            // Joining, restoring, processing, or in the middle of a transaction.
            std::thread::sleep(Duration::from_millis(rng.random_range(1_000..6_000)));
            app.kill();
            kills += 1;
            app = App::spawn(&broker.address(), &options);
        }
        producer.join().unwrap();
        eprintln!("exactly-once chaos: {kills} SIGKILL/restart cycles");
        finish(&broker, &options, app, &expected);
    });
}

/// A fresh application under exactly-once with 60,000 records over 10,000 keys waiting on its
/// input, and their expected counts. Every one of the 4 partitions has input, so each of the 4
/// tasks commits at least one transaction: a failpoint set to fire at the third commit always
/// fires (a fast run processes the whole input in as few as 6 transactions, so one set to fire
/// at the seventh once waited in vain).
fn with_input(root: &std::path::Path) -> (Broker, AppOptions, HashMap<String, u64>) {
    let (broker, options) = broker_and_app(root);
    let options = exactly_once(options);
    let (records, expected) = word_count_input(60_000, 10_000);
    broker.produce_strings(
        &options.input_topic,
        records.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    (broker, options, expected)
}

/// The process aborts at each step of a transaction: right before its commit (its records
/// sent, its input offset not), right after it (committed, not yet in RocksDB), and in the
/// middle of aborting one whose commit failed. A restart on the same volume counts on.
#[test]
fn a_crash_at_any_step_of_a_transaction_leaves_every_count_once() {
    let _turn = take_turn();
    // Two transactions commit first, so the crash lands with state and output behind it.
    let crashes = [
        format!(
            "{}=2*off->return",
            failpoints::TRANSACTION_ABORT_BEFORE_COMMIT
        ),
        format!(
            "{}=2*off->return",
            failpoints::TRANSACTION_ABORT_AFTER_COMMIT
        ),
        format!(
            "{}=2*off->return;{}=return",
            failpoints::TRANSACTION_COMMIT_FAILS,
            failpoints::TRANSACTION_ABORT_DURING_ABORT
        ),
    ];
    for failpoints in crashes {
        let root = tempfile::tempdir().unwrap();
        let (broker, options, expected) = with_input(root.path());
        let mut crashing = options.clone();
        crashing.env = vec![("FAILPOINTS".into(), failpoints.clone())];
        let mut app = App::spawn(&broker.address(), &crashing);
        let Some(status) = app.wait_exit(TIMEOUT) else {
            panic!(
                "{failpoints} did not crash the instance; log:\n{}",
                app.log()
            );
        };
        assert!(
            !status.success() && app.log().contains("aborting the process"),
            "{failpoints}: exit {status} without the failpoint; log:\n{}",
            app.log()
        );
        let restarted = App::spawn(&broker.address(), &options);
        finish(&broker, &options, restarted, &expected);
    }
}

/// A transaction whose commit fails is aborted; its task restarts from its last commit in the
/// same process and counts on, with nothing of the aborted transaction seen.
#[test]
fn an_aborted_transaction_restarts_its_task_and_is_never_seen() {
    let _turn = take_turn();
    let root = tempfile::tempdir().unwrap();
    let (broker, mut options, expected) = with_input(root.path());
    options.env = vec![(
        "FAILPOINTS".into(),
        format!("{}=2*off->1*return", failpoints::TRANSACTION_COMMIT_FAILS),
    )];
    let app = App::spawn(&broker.address(), &options);
    let aborted = poll_until(TIMEOUT, || {
        app.metric("kstreams_transactions_total", &[r#"outcome="aborted""#]) == Some(1.0)
    });
    assert!(
        aborted.is_some(),
        "no transaction aborted within {TIMEOUT:?} (committed: {:?}); log:\n{}",
        app.metric("kstreams_transactions_total", &[r#"outcome="committed""#]),
        app.log()
    );
    finish(&broker, &options, app, &expected);
}

/// G1 and G2 of the 2026-12-04 correctness review under exactly-once, black-box: the old owner
/// X counts every key once and commits only at its end (SIGTERM); a failpoint holds that
/// transaction once half its changelog records are acknowledged, and SIGSTOP freezes X there.
/// The new owner Y (defaults) takes over once X's session ran out: registering the task's
/// transactional id aborts X's transaction and fences X. Y counts every key a second time. X
/// resumed: its late records are refused, it stops, and nothing of it ever reaches a
/// read_committed reader (no key's count goes back to 1). Y counts half the keys a third time,
/// and X restarted on its own volume ends with every count exact.
#[test]
fn an_old_owner_frozen_mid_transaction_is_fenced_and_never_seen() {
    const KEYS: usize = 20_000;
    let _turn = take_turn();
    let root = tempfile::tempdir().unwrap();
    let broker = Broker::start();
    let mut x_options = exactly_once(AppOptions::fresh(&root.path().join("x")));
    // One transaction for the whole first round, committed at SIGTERM.
    x_options.commit_interval_ms = 600_000;
    let held_at = KEYS / 2;
    let mut owners = TwoOwners::new(&broker, root.path(), x_options, held_at);
    owners.y = exactly_once(owners.y.clone()); // the defaults under exactly-once
    let (x_options, y_options) = (&owners.x, &owners.y);
    let changelog = x_options.changelog_topic();
    let mut x =
        owners.freeze_x_mid_write_out(&broker, KEYS, held_at, TIMEOUT, |broker, changelog| {
            broker.end_offsets_uncommitted(changelog)[0]
        });
    assert_eq!(
        broker.end_offsets(&changelog)[0],
        0,
        "read_committed readers see X's open transaction"
    );

    produce_round(&broker, &x_options.input_topic, 2, KEYS);
    run_until_processed(&broker, y_options, "Y", 2 * KEYS as i64, TIMEOUT);

    x.signal("-CONT");
    let Some(x_stopped) = x.wait_exit(EXIT_TIMEOUT) else {
        panic!("X did not stop after SIGCONT; log:\n{}", x.log());
    };
    let x_log = x.log();
    assert!(
        !x_stopped.success() && x_log.contains("was fenced by a newer owner"),
        "X was not fenced (exit {x_stopped}); log:\n{x_log}"
    );

    produce_round(&broker, &x_options.input_topic, 3, KEYS / 2);
    let end = (2 * KEYS + KEYS / 2) as i64;
    run_until_processed(&broker, y_options, "Y again", end, TIMEOUT);

    let restarted = App::spawn(&broker.address(), x_options);
    wait_until("X runs its task again", TIMEOUT, || {
        restarted.next_input() >= end
    });
    let expected: HashMap<String, u64> = (0..KEYS)
        .map(|k| (format!("key-{k}"), if k < KEYS / 2 { 3 } else { 2 }))
        .collect();
    finish(&broker, x_options, restarted, &expected);
}
