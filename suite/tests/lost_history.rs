//! A topic that lost the history an application's state was built from (G4 of the 2026-12-04
//! correctness review): a changelog deleted while the instances were down is recreated empty at
//! start-up, and the instance used to wipe its state as "ahead of the changelog" and count
//! every key from 0 again, silently. It must stop naming the changelog, keep its state, and
//! leave starting over to an explicit `kstreams-count reset`, after which it counts from the
//! input's beginning into fresh state.

use std::collections::HashMap;
use std::time::Duration;

use kstreams_suite::{
    broker_and_app, poll_until, read_store_counts, run_cli, word_count_input, wrong_counts, App,
    AppOptions, Broker,
};

const COUNTS_TIMEOUT: Duration = Duration::from_secs(120);
const EXIT_TIMEOUT: Duration = Duration::from_secs(90);

/// Runs an instance until the output shows `expected`, then stops it cleanly; answers its
/// log.
fn count_until(broker: &Broker, options: &AppOptions, expected: &HashMap<String, u64>) -> String {
    let mut app = App::spawn(&broker.address(), options);
    broker
        .wait_for_counts(&options.output_topic, expected, COUNTS_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", app.log()));
    let status = app.terminate(EXIT_TIMEOUT);
    assert!(status.success(), "exit {status}; log:\n{}", app.log());
    app.log()
}

/// Runs `kstreams-count reset` with the application's settings.
fn reset(broker: &Broker, options: &AppOptions) -> std::process::Output {
    let state_dir = options.state_dir.to_string_lossy().to_string();
    let args = [
        "reset",
        "--broker",
        &broker.address(),
        "--application-id",
        &options.application_id,
        "--input-topic",
        &options.input_topic,
        "--output-topic",
        &options.output_topic,
        "--state-dir",
        &state_dir,
    ];
    run_cli(&args, &[], "")
}

/// The counts the stopped instance's store holds equal `expected`.
fn assert_stored(options: &AppOptions, expected: &HashMap<String, u64>, log: &str) {
    let stored = read_store_counts(&options.state_dir, &options.application_id, "count-store");
    let wrong = wrong_counts(expected, &stored);
    assert_eq!(
        wrong,
        0,
        "{wrong} of {} stored counts wrong ({} keys stored); log:\n{log}",
        expected.len(),
        stored.len()
    );
}

#[test]
fn a_deleted_changelog_stops_the_instance_and_only_reset_starts_over() {
    deleted_changelog_stops_the_instance_and_only_reset_starts_over(&[]);
}

/// The same under exactly-once: its changelogs hold transaction markers, and its restore reads
/// committed records only.
#[test]
fn under_exactly_once_a_deleted_changelog_stops_the_instance_and_only_reset_starts_over() {
    deleted_changelog_stops_the_instance_and_only_reset_starts_over(&[
        "--processing-guarantee",
        "exactly_once_v2",
    ]);
}

fn deleted_changelog_stops_the_instance_and_only_reset_starts_over(app_args: &[&str]) {
    let root = tempfile::tempdir().unwrap();
    let (broker, mut options) = broker_and_app(root.path());
    options
        .extra_args
        .extend(app_args.iter().map(|a| a.to_string()));
    let changelog = options.changelog_topic();
    let (input, expected) = word_count_input(3_000, 200);
    broker.produce_strings(
        &options.input_topic,
        input.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let log = count_until(&broker, &options, &expected);
    assert_stored(&options, &expected, &log);

    broker.delete_topic(&changelog);
    let mut app = App::spawn(&broker.address(), &options);
    let Some(status) = app.wait_exit(EXIT_TIMEOUT) else {
        panic!(
            "the instance went on over a deleted changelog; log:\n{}",
            app.log()
        );
    };
    let log = app.log();
    assert!(!status.success(), "exit {status}; log:\n{log}");
    assert!(
        log.contains(&format!("topic `{changelog}` partition"))
            && log.contains("deleted and recreated, or truncated")
            && log.contains("kstreams-count reset"),
        "the error does not name the changelog and the way out; log:\n{log}"
    );
    assert_stored(&options, &expected, &log); // the local state is kept

    let reset = reset(&broker, &options);
    let said = String::from_utf8_lossy(&reset.stdout).to_string()
        + &String::from_utf8_lossy(&reset.stderr);
    assert!(reset.status.success(), "reset failed: {said}");
    assert!(
        said.contains(&format!("deleted changelog topic `{changelog}`")),
        "{said}"
    );
    assert!(said.contains("deleted consumer group"), "{said}");
    assert!(said.contains("removed state directory"), "{said}");
    assert!(
        !options.state_dir.join(&options.application_id).exists(),
        "the state directory is still there"
    );

    // Started over on purpose: the input counted again from its beginning, into fresh state
    // (the output topic shows the same counts already: wait for the instance's own work).
    let mut app = App::spawn(&broker.address(), &options);
    let processed = || {
        app.metric("kstreams_records_processed_total", &[])
            .unwrap_or(0.0)
    };
    let recounted = poll_until(COUNTS_TIMEOUT, || processed() >= input.len() as f64);
    assert!(
        recounted.is_some(),
        "the input was not counted again; log:\n{}",
        app.log()
    );
    let status = app.terminate(EXIT_TIMEOUT);
    assert!(status.success(), "exit {status}; log:\n{}", app.log());
    assert_stored(&options, &expected, &app.log());
}

#[test]
fn reset_is_refused_while_an_instance_runs() {
    let root = tempfile::tempdir().unwrap();
    let (broker, options) = broker_and_app(root.path());
    let mut app = App::spawn(&broker.address(), &options);
    app.wait_ready(COUNTS_TIMEOUT);
    let reset = reset(&broker, &options);
    let said = String::from_utf8_lossy(&reset.stderr).to_string();
    assert!(
        !reset.status.success(),
        "reset ran beside a running instance"
    );
    assert!(said.contains("still members of its group"), "{said}");
    assert!(app.is_running(), "the running instance stopped");
    assert!(
        broker.partitions(&options.changelog_topic()).is_some(),
        "its changelog was deleted"
    );
}

/// The broker (patched: `third_party/tansu/tansu-storage/0007`) deletes the one topic named,
/// seen with the harness's own admin client and consumer, not the application.
#[test]
fn deleting_one_topic_leaves_the_others_and_their_records() {
    let broker = Broker::start();
    let doomed = kstreams_suite::unique("doomed");
    let kept = kstreams_suite::unique("kept");
    broker.create_topic(&doomed, 1);
    broker.create_topic(&kept, 2);
    broker.produce_strings(&kept, (0..10).map(|_| ("k", "v")));
    broker.delete_topic(&doomed);
    assert_eq!(
        broker.partitions(&kept),
        Some(2),
        "the other topic went too"
    );
    assert_eq!(broker.record_count(&kept), 10, "the other topic's records");
    broker.create_topic(&doomed, 1);
    assert_eq!(
        broker.record_count(&doomed),
        0,
        "a recreated topic starts empty"
    );
}
