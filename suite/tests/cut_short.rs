//! No update lost when a commit is cut short, at a scale where a write-out spans many produce
//! requests: a commit's or an early write-out's changelog cut after N acknowledged records
//! (failpoints), a crash while a write-out is in flight and the task processed on past it, a
//! crash right after a restore before the re-emission, a revocation whose
//! commit fails, and a black-box SIGTERM-then-SIGKILL in the middle of a 100,000-key final
//! write-out. Each ends with exact counts in the store AND as the last value per key on the
//! output topic. Failpoints need the suite's build (the engine's `failpoints` feature).

use std::collections::HashMap;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use kstreams_engine::testing::failpoints;
use kstreams_suite::{
    ownership_from_log, ownership_overlaps, poll_until, read_store_counts, restart_after_crash,
    take_turn, wait_until, word_count_input, wrong_counts, App, AppOptions, Broker,
};

// Each test here runs a broker and an instance at full speed through a large single
// partition; two at once on two cores starve the local broker's group heartbeats. They take
// turns (`take_turn`).

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const PROCESS_TIMEOUT: Duration = Duration::from_secs(180);
const COUNTS_TIMEOUT: Duration = Duration::from_secs(180);
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
const CRASH_TIMEOUT: Duration = Duration::from_secs(240);
/// The product's default commit interval.
const DEFAULT_COMMIT_INTERVAL_MS: u64 = 30_000;
/// After a crash, in tests whose first instance commits only at its end: the restarted
/// instance's output (sent at each commit with the record cache) shows within the bounds.
const RESTART_COMMIT_INTERVAL_MS: u64 = 1_000;

/// A broker and an application whose input and output topics have `partitions` partitions.
fn setup(state_root: &tempfile::TempDir, partitions: i32) -> (Broker, AppOptions) {
    let broker = Broker::start();
    let options = AppOptions::fresh(state_root.path());
    broker.create_topic(&options.input_topic, partitions);
    broker.create_topic(&options.output_topic, partitions);
    (broker, options)
}

/// `keys` distinct keys, each in `per_key` records (interleaved: key i's records are `keys`
/// offsets apart), with the expected count per key.
fn many_keys(keys: usize, per_key: usize) -> (Vec<(String, String)>, HashMap<String, u64>) {
    let records: Vec<(String, String)> = (0..keys * per_key)
        .map(|i| (format!("key-{}", i % keys), format!("value-{i}")))
        .collect();
    let expected = (0..keys)
        .map(|k| (format!("key-{k}"), per_key as u64))
        .collect();
    (records, expected)
}

/// One input partition holding `keys` keys `per_key` times, produced before the instance
/// starts; a 10-minute commit interval (only SIGTERM or the cache budget commits) and a record
/// cache of `cache_bytes`.
struct OnePartition {
    broker: Broker,
    options: AppOptions,
    records: usize,
    expected: HashMap<String, u64>,
    restart_commit_interval_ms: u64,
    _root: tempfile::TempDir,
    _turn: MutexGuard<'static, ()>,
}

impl OnePartition {
    fn new(keys: usize, per_key: usize, cache_bytes: u64) -> Self {
        let turn = take_turn();
        let root = tempfile::tempdir().unwrap();
        let (broker, mut options) = setup(&root, 1);
        options.commit_interval_ms = 600_000;
        options.extra_args = vec!["--cache-max-bytes".into(), cache_bytes.to_string()];
        let (records, expected) = many_keys(keys, per_key);
        produce(&broker, &options.input_topic, &records);
        OnePartition {
            broker,
            options,
            records: records.len(),
            expected,
            restart_commit_interval_ms: RESTART_COMMIT_INTERVAL_MS,
            _root: root,
            _turn: turn,
        }
    }

    fn crash_with(&self, failpoint: &str, trigger: impl FnOnce(&mut App)) {
        crash_with(&self.broker, &self.options, failpoint, trigger)
    }

    /// Restarts after a crash and checks every count ([`assert_exact`]); answers how many
    /// input records the restarted instance processed. The restarted instance commits every
    /// `restart_commit_interval_ms`.
    fn restart_and_check(&self, check_log: impl FnOnce(&str)) -> f64 {
        let broker = &self.broker;
        let mut options = self.options.clone();
        options.commit_interval_ms = self.restart_commit_interval_ms;
        let app = restart_after_crash(broker, &options, 1, READY_TIMEOUT);
        check_log(&app.log());
        assert_exact(broker, &options, app, &self.expected)
    }
}

fn produce(broker: &Broker, topic: &str, records: &[(String, String)]) {
    broker.produce_strings(topic, records.iter().map(|(k, v)| (k.as_str(), v.as_str())));
}

fn changelog(options: &AppOptions) -> String {
    options.changelog_topic()
}

fn processed(app: &App) -> f64 {
    app.metric("kstreams_records_processed_total", &[])
        .unwrap_or(0.0)
}

/// Waits until the instance processed `records`.
fn wait_processed(app: &App, records: usize) {
    assert!(
        poll_until(PROCESS_TIMEOUT, || processed(app) >= records as f64).is_some(),
        "{records} records not processed within {PROCESS_TIMEOUT:?}; log:\n{}",
        app.log()
    );
}

/// The last value per key on the output topic equals `expected`; then the instance stops
/// cleanly and every stored count equals `expected` too. Answers how many input records the
/// instance processed (input read again after a crash included).
fn assert_exact(
    broker: &Broker,
    options: &AppOptions,
    mut app: App,
    expected: &HashMap<String, u64>,
) -> f64 {
    if let Err(e) = broker.wait_for_counts(&options.output_topic, expected, COUNTS_TIMEOUT) {
        panic!("output topic: {e}; log:\n{}", app.log());
    }
    let processed = processed(&app);
    let status = app.terminate(EXIT_TIMEOUT);
    assert!(status.success(), "exit {status}; log:\n{}", app.log());
    let stored = read_store_counts(&options.state_dir, &options.application_id, "count-store");
    let wrong = wrong_counts(expected, &stored);
    assert_eq!(
        wrong,
        0,
        "{wrong} of {} stored counts wrong",
        expected.len()
    );
    assert_eq!(stored.len(), expected.len(), "stored keys");
    processed
}

/// Runs an instance with `failpoint` set until it crashes on it (after `trigger`).
fn crash_with(
    broker: &Broker,
    options: &AppOptions,
    failpoint: &str,
    trigger: impl FnOnce(&mut App),
) {
    let mut crashing = options.clone();
    crashing.env = vec![("FAILPOINTS".into(), failpoint.into())];
    let mut app = App::spawn(&broker.address(), &crashing);
    trigger(&mut app);
    let Some(status) = app.wait_exit(CRASH_TIMEOUT) else {
        panic!(
            "{failpoint} did not crash the instance within {CRASH_TIMEOUT:?}; log:\n{}\nthe broker's log:\n{}",
            app.log(),
            broker.log_tail(200)
        );
    };
    assert!(
        !status.success() && app.log().contains("failpoint"),
        "{failpoint}: exit {status} without the failpoint; log:\n{}",
        app.log()
    );
}

/// SIGTERM without waiting: the final commit's write-out starts.
fn sigterm(app: &App) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &app.pid().to_string()])
        .status();
}

/// Sends SIGTERM once every record is processed.
fn terminate_once_processed(records: usize) -> impl FnOnce(&mut App) {
    move |app: &mut App| {
        wait_processed(app, records);
        sigterm(app);
    }
}

/// A commit's write-out (the final one, started by SIGTERM) cut after 1,500 of its 50,000
/// changelog records: the other 48,500 keys' input is read again and counted exactly once.
#[test]
fn a_commit_write_out_cut_short_loses_no_update() {
    let run = OnePartition::new(50_000, 2, 256 << 20);
    let failpoint = format!("{}=return(1500)", failpoints::WRITE_OUT_ABORT_AFTER);
    run.crash_with(&failpoint, terminate_once_processed(run.records));
    let logged = run.broker.record_count(&changelog(&run.options));
    assert_eq!(logged, 1_500, "the write-out was cut after 1,500 records");
    let reread = run.restart_and_check(|_| {});
    eprintln!(
        "write-out cut at 1,500 of 50,000 changelog records; the restart re-read {reread} of {} input records",
        run.records
    );
}

/// An early write-out (the cache over its budget) cut short, after three whole ones: input
/// resumes at the last whole one, not past the keys the cut one did not log.
#[test]
fn an_early_write_out_cut_short_loses_no_update() {
    // About 2,000 keys per write-out.
    let run = OnePartition::new(50_000, 2, 200_000);
    let failpoint = format!(
        "{}=3*off->return(700)",
        failpoints::EARLY_WRITE_OUT_ABORT_AFTER
    );
    run.crash_with(&failpoint, |_| {});
    let logged = run.broker.record_count(&changelog(&run.options));
    let reread = run.restart_and_check(|_| {});
    eprintln!(
        "early write-out cut at 700 records after 3 whole ones ({logged} changelog records); the restart re-read {reread} of {} input records",
        run.records
    );
}

/// A crash while an early write-out is in flight and the task has processed on past it: its
/// changelog records sent (some or all acknowledged), its state not yet in RocksDB, newer
/// updates cached on top of it. Input resumes where the last written write-out left it; every
/// count is exact.
#[test]
fn a_crash_with_a_write_out_in_flight_loses_no_update() {
    // About 2,000 keys per write-out.
    let run = OnePartition::new(50_000, 2, 200_000);
    let failpoint = format!(
        "{}=2*off->return",
        failpoints::ABORT_WITH_WRITE_OUT_IN_FLIGHT
    );
    run.crash_with(&failpoint, |_| {});
    let logged = run.broker.record_count(&changelog(&run.options));
    let reread = run.restart_and_check(|_| {});
    eprintln!(
        "crashed on the third batch processed with a write-out in flight ({logged} changelog records); the restart re-read {reread} of {} input records",
        run.records
    );
}

/// A crash right after a restore, before the re-emission of the keys whose changelog records
/// outran their output: the next start still re-emits them (the marks are durable).
#[test]
fn re_emission_survives_a_crash_right_after_the_restore() {
    let run = OnePartition::new(20_000, 2, 256 << 20);
    // First crash: 1,000 changelog records logged, the output of the last of them not sent.
    let cut = format!("{}=return(1000)", failpoints::WRITE_OUT_ABORT_AFTER);
    run.crash_with(&cut, terminate_once_processed(run.records));
    // Second crash: the restore applies (and marks) those records, then the process dies.
    let before_replay = format!("{}=return", failpoints::ABORT_BEFORE_REPLAY);
    run.crash_with(&before_replay, |_| {});
    run.restart_and_check(|log| {
        let line = log
            .lines()
            .find(|l| l.contains("running: restored"))
            .unwrap_or_default();
        eprintln!("third start: {line}");
        assert!(
            line.contains("restored 0 records") && !line.contains("re-emitted 0 keys"),
            "the third start restores nothing new but re-emits the marked keys: {line}"
        );
    });
}

/// A revocation whose commit fails: the revoked tasks stop anyway (no zombie writing to a
/// partition another instance owns), and when the partitions come back they run again.
#[test]
fn a_failed_commit_during_a_revocation_stops_the_revoked_tasks() {
    let _turn = take_turn();
    let root = tempfile::tempdir().unwrap();
    let (broker, options) = setup(&root, 4);
    let (first, mut expected) = word_count_input(20_000, 500);
    produce(&broker, &options.input_topic, &first);
    let mut options_a = options.clone();
    options_a.env = vec![(
        "FAILPOINTS".into(),
        format!("{}=1*return", failpoints::REVOCATION_COMMIT_FAILS),
    )];
    let mut a = App::spawn(&broker.address(), &options_a);
    broker
        .wait_for_counts(&options.output_topic, &expected, COUNTS_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", a.log()));

    let mut options_b = options.clone();
    options_b.state_dir = root.path().join("state-b");
    let mut b = App::spawn(&broker.address(), &options_b);
    wait_until("B runs tasks", READY_TIMEOUT, || {
        b.metric("kstreams_tasks_running", &[]).unwrap_or(0.0) >= 1.0
    });
    wait_until("A's revocation commit fails", READY_TIMEOUT, || {
        a.log()
            .contains("commit of a revoked task failed; stopping it anyway")
    });
    let (second, more) = word_count_input(8_000, 500);
    produce(&broker, &options.input_topic, &second);
    for (k, n) in more {
        *expected.entry(k).or_default() += n;
    }
    let counted = broker.wait_for_counts(&options.output_topic, &expected, COUNTS_TIMEOUT);

    // B leaves: A must run all four tasks again (a zombie's partition stayed paused forever).
    assert!(b.terminate(EXIT_TIMEOUT).success(), "{}", b.log());
    wait_until("A runs all four tasks again", READY_TIMEOUT, || {
        a.metric("kstreams_tasks_running", &[]).unwrap_or(0.0) >= 4.0
    });
    let (third, more) = word_count_input(8_000, 500);
    produce(&broker, &options.input_topic, &third);
    for (k, n) in more {
        *expected.entry(k).or_default() += n;
    }
    let spans: Vec<_> = ownership_from_log("a", &a.log())
        .into_iter()
        .chain(ownership_from_log("b", &b.log()))
        .collect();
    let overlaps = ownership_overlaps(&spans);
    assert!(
        overlaps.is_empty(),
        "a task had two owners at once: {overlaps:#?}"
    );
    if let Err(wrong) = counted
        .and_then(|()| broker.wait_for_counts(&options.output_topic, &expected, COUNTS_TIMEOUT))
    {
        panic!("{wrong}; log of A:\n{}\nlog of B:\n{}", a.log(), b.log());
    }
    assert!(a.terminate(EXIT_TIMEOUT).success(), "{}", a.log());
    let stored = read_store_counts(&options.state_dir, &options.application_id, "count-store");
    assert_eq!(stored, expected, "A's stored counts");
}

/// SIGKILLs the instance as soon as the changelog has grown (a write-out under way); answers
/// how many changelog records are there once it is dead, asserting that is not all `keys`.
fn kill_once_the_changelog_grows(run: &OnePartition, app: &mut App, keys: usize) -> i64 {
    let changelog = changelog(&run.options);
    let started = Instant::now();
    let logged_at_kill = loop {
        let logged = run.broker.end_offsets(&changelog)[0];
        if logged > 0 {
            app.kill();
            break logged;
        }
        assert!(
            started.elapsed() < PROCESS_TIMEOUT,
            "no write-out started; log:\n{}",
            app.log()
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    let logged = run.broker.record_count(&changelog);
    assert!(
        logged < keys as i64,
        "SIGKILL missed the write-out: {logged} of {keys} changelog records (end offset {logged_at_kill} at the kill)"
    );
    logged
}

/// No failpoint: one partition, 100,000 distinct keys, a 256 MiB cache and a 10-minute commit
/// interval; SIGTERM starts the final write-out and SIGKILL lands once the changelog has
/// grown part of the way. The restart on the same state dir counts every key exactly.
#[test]
fn sigkill_in_the_middle_of_a_100k_key_final_write_out_loses_no_update() {
    let keys = 100_000;
    let run = OnePartition::new(keys, 1, 256 << 20);
    let mut app = App::spawn(&run.broker.address(), &run.options);
    wait_processed(&app, run.records);
    // Nothing reached the changelog before this final commit (no interval commit, the cache
    // far from its budget): what it holds at the kill is part of one write-out.
    assert_eq!(run.broker.record_count(&changelog(&run.options)), 0);
    sigterm(&app);
    let logged = kill_once_the_changelog_grows(&run, &mut app, keys);
    let reread = run.restart_and_check(|_| {});
    eprintln!(
        "SIGKILL with {logged} of {keys} changelog records logged; the restart re-read {reread} of {} input records",
        run.records
    );
}

/// The same at the product's defaults (10 MiB record cache, 30 s commit interval), for the
/// first instance and the restarted one: 100,000 keys fill the cache, so the first write-out
/// (early, or the interval's) holds nearly all of them, and SIGKILL lands in it.
#[test]
fn sigkill_in_the_middle_of_a_write_out_at_the_default_settings_loses_no_update() {
    let keys = 100_000;
    let mut run = OnePartition::new(keys, 1, 0);
    run.options.commit_interval_ms = DEFAULT_COMMIT_INTERVAL_MS;
    run.restart_commit_interval_ms = DEFAULT_COMMIT_INTERVAL_MS;
    run.options.extra_args.clear();
    let mut app = App::spawn(&run.broker.address(), &run.options);
    wait_until("the instance runs its task", READY_TIMEOUT, || {
        app.metric("kstreams_tasks_running", &[]).unwrap_or(0.0) >= 1.0
    });
    let logged = kill_once_the_changelog_grows(&run, &mut app, keys);
    let reread = run.restart_and_check(|_| {});
    eprintln!(
        "defaults: SIGKILL with {logged} of {keys} changelog records logged; the restart re-read {reread} of {} input records",
        run.records
    );
}
