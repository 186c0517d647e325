//! The word count end to end on a real tansu broker (sqlite storage) with real RocksDB state:
//! exact counts, state layout, restore on clean restart and on an empty state dir.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use kstreams_suite::{
    broker_and_app, restart_after_crash, word_count_input, App, AppOptions, Broker,
};

const PARTITIONS: i32 = 4;
const COUNTS_TIMEOUT: Duration = Duration::from_secs(120);
const READY_TIMEOUT: Duration = Duration::from_secs(60);

struct Setup {
    broker: Broker,
    options: AppOptions,
    _state_root: tempfile::TempDir,
}

fn setup() -> Setup {
    let state_root = tempfile::tempdir().unwrap();
    let (broker, options) = broker_and_app(state_root.path());
    Setup {
        broker,
        options,
        _state_root: state_root,
    }
}

fn changelog(options: &AppOptions) -> String {
    options.changelog_topic()
}

fn produce(broker: &Broker, topic: &str, records: &[(String, String)]) {
    broker.produce_strings(topic, records.iter().map(|(k, v)| (k.as_str(), v.as_str())));
}

fn merge(into: &mut HashMap<String, u64>, more: &HashMap<String, u64>) {
    for (k, n) in more {
        *into.entry(k.clone()).or_default() += n;
    }
}

/// Runs one instance until `expected` is on the output topic, then stops it with SIGTERM.
fn run_until_counted(setup: &Setup, expected: &HashMap<String, u64>) {
    let mut app = App::spawn(&setup.broker.address(), &setup.options);
    app.wait_ready(READY_TIMEOUT);
    setup
        .broker
        .wait_for_counts(&setup.options.output_topic, expected, COUNTS_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", app.log()));
    let status = app.terminate(Duration::from_secs(30));
    assert!(status.success(), "exit {status}; log:\n{}", app.log());
}

#[test]
fn counts_20000_records_over_500_keys_exactly() {
    let setup = setup();
    let (records, expected) = word_count_input(20_000, 500);
    produce(&setup.broker, &setup.options.input_topic, &records);
    let mut app = App::spawn(&setup.broker.address(), &setup.options);
    setup
        .broker
        .wait_for_counts(&setup.options.output_topic, &expected, COUNTS_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", app.log()));
    assert_eq!(expected.len(), 500);
    assert_eq!(
        app.metric("kstreams_records_processed_total", &[]),
        Some(20_000.0)
    );
    assert!(
        app.terminate(Duration::from_secs(30)).success(),
        "{}",
        app.log()
    );
}

#[test]
fn state_dir_holds_one_rocksdb_per_task_and_changelog_is_compacted() {
    let setup = setup();
    let (records, expected) = word_count_input(2_000, 100);
    produce(&setup.broker, &setup.options.input_topic, &records);
    run_until_counted(&setup, &expected);

    let app_dir = setup.options.state_dir.join(&setup.options.application_id);
    let mut task_dirs: Vec<String> = std::fs::read_dir(&app_dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    task_dirs.sort();
    assert_eq!(task_dirs, ["0_0", "0_1", "0_2", "0_3"]);
    assert!(app_dir.join(".lock").is_file());
    for task in &task_dirs {
        let families =
            rocksdb::DB::list_cf(&rocksdb::Options::default(), app_dir.join(task)).unwrap();
        assert!(
            families.contains(&"count-store".to_string()),
            "{task}: {families:?}"
        );
        assert!(
            families.contains(&"offsets".to_string()),
            "{task}: {families:?}"
        );
    }
    let changelog = changelog(&setup.options);
    assert_eq!(
        setup.broker.partitions(&changelog),
        Some(PARTITIONS as usize)
    );
    assert_eq!(
        setup
            .broker
            .topic_config(&changelog, "cleanup.policy")
            .as_deref(),
        Some("compact")
    );
}

/// Feeds 3,000 more records (100 of their keys new), checks `app` counts them on top of
/// `expected`, then stops it cleanly.
fn keeps_counting_then_stops(setup: &Setup, mut app: App, mut expected: HashMap<String, u64>) {
    let (second, more) = word_count_input(3_000, 400);
    merge(&mut expected, &more);
    produce(&setup.broker, &setup.options.input_topic, &second);
    setup
        .broker
        .wait_for_counts(&setup.options.output_topic, &expected, COUNTS_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", app.log()));
    assert!(
        app.terminate(Duration::from_secs(30)).success(),
        "{}",
        app.log()
    );
}

fn total_restored(app: &App) -> f64 {
    app.metric("kstreams_restore_records_total", &[])
        .expect("metrics endpoint answers")
}

#[test]
fn clean_restart_restores_only_the_tail_and_keeps_counting() {
    let setup = setup();
    let (first, expected) = word_count_input(10_000, 300);
    produce(&setup.broker, &setup.options.input_topic, &first);
    run_until_counted(&setup, &expected);
    let changelog_records = setup.broker.record_count(&changelog(&setup.options));
    // The record cache sends one changelog record per key per commit: at least one per key.
    assert!(
        changelog_records >= 300,
        "changelog has {changelog_records} records for 300 keys"
    );

    let mut app = App::spawn(&setup.broker.address(), &setup.options);
    app.wait_ready(READY_TIMEOUT);
    let restored = total_restored(&app);
    eprintln!("restored {restored} of {changelog_records} changelog records");
    assert!(
        restored < changelog_records as f64 * 0.01,
        "restored {restored} of {changelog_records} changelog records on a clean restart; log:\n{}",
        app.log()
    );
    keeps_counting_then_stops(&setup, app, expected);
}

#[test]
fn restart_on_empty_state_dir_restores_everything_and_keeps_counting() {
    let mut setup = setup();
    let (first, expected) = word_count_input(10_000, 300);
    produce(&setup.broker, &setup.options.input_topic, &first);
    run_until_counted(&setup, &expected);
    let changelog_records = setup.broker.record_count(&changelog(&setup.options));

    let fresh = tempfile::tempdir().unwrap();
    setup.options.state_dir = fresh.path().join("state");
    assert!(!Path::new(&setup.options.state_dir).exists());
    let mut app = App::spawn(&setup.broker.address(), &setup.options);
    app.wait_ready(READY_TIMEOUT);
    let restored = total_restored(&app);
    eprintln!("restored {restored} of {changelog_records} changelog records");
    assert!(
        restored >= changelog_records as f64,
        "restored {restored} of {changelog_records} changelog records into an empty state dir; log:\n{}",
        app.log()
    );
    keeps_counting_then_stops(&setup, app, expected);
}

#[test]
fn a_cache_over_its_budget_writes_out_early_and_a_killed_instance_resumes_exactly() {
    let mut setup = setup();
    // No commit during the test: only early write-outs put state on disk.
    setup.options.commit_interval_ms = 600_000;
    setup.options.extra_args = vec!["--cache-max-bytes".into(), "2000".into()];
    let (first, expected) = word_count_input(20_000, 500);
    produce(&setup.broker, &setup.options.input_topic, &first);
    let mut app = App::spawn(&setup.broker.address(), &setup.options);
    setup
        .broker
        .wait_for_counts(&setup.options.output_topic, &expected, COUNTS_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", app.log()));
    let flushes = app
        .metric("kstreams_state_cache_flushes_total", &[])
        .unwrap_or(0.0);
    assert!(
        flushes > 0.0,
        "500 keys (~50 KB of cache) never went over a 2,000-byte budget; log:\n{}",
        app.log()
    );
    let cached = app.metric("kstreams_state_cache_bytes", &[]).unwrap();
    eprintln!("{flushes} early write-outs; {cached} bytes cached at the end");
    // SIGKILL: no final commit, so the restart resumes from the early write-outs.
    app.kill();
    let restarted = restart_after_crash(
        &setup.broker,
        &setup.options,
        PARTITIONS as usize,
        READY_TIMEOUT,
    );
    keeps_counting_then_stops(&setup, restarted, expected);
}
