//! Bad input on a real broker: null keys, invalid UTF-8 under both policies, wrong settings,
//! an unreachable broker at start-up, and a state directory held by another instance.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use kstreams_suite::{
    app_bin, broker_and_app, free_port, skip_without_private_broker, wait_until, App, AppOptions,
    Broker,
};

const TIMEOUT: Duration = Duration::from_secs(120);

/// A fresh broker with the input and output topics of a fresh application.
fn broker_with_topics() -> (Broker, tempfile::TempDir, AppOptions) {
    let root = tempfile::tempdir().unwrap();
    let (broker, options) = broker_and_app(root.path());
    (broker, root, options)
}

fn record(key: Option<&[u8]>, value: &[u8], partition: i32) -> kstreams_suite::RawRecord {
    (
        key.map(<[u8]>::to_vec),
        Some(value.to_vec()),
        Some(partition),
    )
}

fn expected(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
    pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

#[test]
fn null_keys_are_skipped_counted_and_logged_once_per_partition() {
    let (broker, _root, options) = broker_with_topics();
    let mut records = vec![record(None, b"no key", 2); 5];
    records.extend([
        record(Some(b"foo"), b"bar", 2),
        record(Some(b"foo"), b"baz", 2),
        record(Some(b"john"), b"doe", 1),
    ]);
    broker.produce(&options.input_topic, records);

    let mut app = App::spawn(&broker.address(), &options);
    broker
        .wait_for_counts(
            &options.output_topic,
            &expected(&[("foo", 2), ("john", 1)]),
            TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", app.log()));
    wait_until("5 null-key skips in the metric", TIMEOUT, || {
        app.metric("kstreams_records_skipped_total", &[r#"reason="null_key""#]) == Some(5.0)
    });
    let log = app.log();
    let null_key_lines: Vec<&str> = log.lines().filter(|l| l.contains("null key")).collect();
    assert_eq!(
        null_key_lines.len(),
        1,
        "one log line per partition; log:\n{log}"
    );
    assert!(
        null_key_lines[0].contains("partition=2") && null_key_lines[0].contains("offset=0"),
        "{}",
        null_key_lines[0]
    );
    assert!(app.terminate(Duration::from_secs(30)).success());
}

#[test]
fn invalid_utf8_is_skipped_with_partition_and_offset_by_default() {
    let (broker, _root, options) = broker_with_topics();
    broker.produce(
        &options.input_topic,
        [
            record(Some(b"hello"), b"world", 3),
            record(Some(&[0xff, 0xfe, 0x00]), b"bad key", 3),
            record(Some(b"hello"), &[0xc3, 0x28], 3),
            record(Some(b"hello"), b"universe", 3),
        ],
    );
    let mut app = App::spawn(&broker.address(), &options);
    broker
        .wait_for_counts(&options.output_topic, &expected(&[("hello", 2)]), TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", app.log()));
    wait_until("2 deserialization skips in the metric", TIMEOUT, || {
        app.metric(
            "kstreams_records_skipped_total",
            &[r#"reason="deserialization_error""#],
        ) == Some(2.0)
    });
    let log = app.log();
    for offset in [1, 2] {
        assert!(
            log.lines().any(|l| l.contains("cannot deserialize")
                && l.contains("partition=3")
                && l.contains(&format!("offset={offset}"))),
            "no log line for offset {offset}:\n{log}"
        );
    }
    assert!(app.terminate(Duration::from_secs(30)).success());
}

#[test]
fn json_logs_are_one_object_per_line_with_task_partition_and_offset_as_fields() {
    let (broker, _root, mut options) = broker_with_topics();
    options.extra_args = vec!["--log-format".into(), "json".into()];
    broker.produce(
        &options.input_topic,
        [
            record(Some(b"hello"), b"world", 2),
            record(Some(&[0xff, 0xfe, 0x00]), b"bad key", 2),
        ],
    );
    let mut app = App::spawn(&broker.address(), &options);
    broker
        .wait_for_counts(&options.output_topic, &expected(&[("hello", 1)]), TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", app.log()));
    wait_until("the skipped record's log line", TIMEOUT, || {
        app.log().contains("skipping record")
    });
    assert!(app.terminate(Duration::from_secs(30)).success());
    let log = app.log();
    let events: Vec<serde_json::Value> = log
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(events.len() > 3, "{log}");
    assert!(events
        .iter()
        .all(|e| e["level"].is_string() && e["timestamp"].is_string()));
    let skip = events
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("skipping record"))
        })
        .unwrap_or_else(|| panic!("no skip event:\n{log}"));
    assert_eq!(skip["task"], "0_2", "{skip}");
    assert_eq!(skip["partition"], 2, "{skip}");
    assert_eq!(skip["offset"], 1, "{skip}");
}

#[test]
fn invalid_utf8_stops_the_instance_under_the_fail_policy() {
    let (broker, _root, mut options) = broker_with_topics();
    options.extra_args = vec!["--deserialization-error-policy".into(), "fail".into()];
    broker.produce(
        &options.input_topic,
        [
            record(Some(b"foo"), b"bar", 1),
            record(Some(b"foo"), &[0xff], 1),
            record(Some(b"foo"), b"after", 1),
        ],
    );
    let mut app = App::spawn(&broker.address(), &options);
    let status = app
        .wait_exit(TIMEOUT)
        .unwrap_or_else(|| panic!("still running under the fail policy; log:\n{}", app.log()));
    assert!(!status.success());
    let log = app.log();
    assert!(
        log.contains("partition 1 offset 1"),
        "the error names partition and offset:\n{log}"
    );
    assert!(
        log.contains("deserialization-error-policy is `fail`"),
        "{log}"
    );
    // The record after the bad one was never counted.
    assert_eq!(
        broker
            .latest_values(&options.output_topic)
            .get("foo")
            .map(String::as_str),
        Some("1")
    );
}

#[test]
fn wrong_settings_fail_at_start_up_naming_the_setting() {
    let cases: [(&[&str], &str); 4] = [
        (&["--commit-interval-ms", "0"], "commit-interval-ms"),
        (
            &["--deserialization-error-policy", "skip"],
            "deserialization-error-policy",
        ),
        (&["--application-id", "has space"], "application-id"),
        (&["--metrics-address", "nowhere"], "metrics-address"),
    ];
    let root = tempfile::tempdir().unwrap();
    for (args, setting) in cases {
        let output = Command::new(app_bin())
            .args(["--broker", "127.0.0.1:1", "--state-dir"])
            .arg(root.path())
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} accepted");
        let naming = format!("invalid setting `{setting}`");
        assert_eq!(
            stderr.matches(&naming).count(),
            1,
            "{args:?}: said once: {stderr}"
        );
    }
    // With JSON logs the error is one JSON line among JSON lines, not a plain line besides.
    let output = Command::new(app_bin())
        .args([
            "--log-format",
            "json",
            "--broker",
            "127.0.0.1:1",
            "--state-dir",
        ])
        .arg(root.path())
        .args(["--commit-interval-ms", "0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n{stderr}"))
        })
        .collect();
    let errors: Vec<_> = lines
        .iter()
        .filter(|line| line["level"] == "ERROR")
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("invalid setting `commit-interval-ms`")),
        "{stderr}"
    );
    let output = Command::new(app_bin())
        .args(["--broker", "host:99999"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--broker"),
        "clap names the flag"
    );
}

#[test]
fn unreachable_broker_is_retried_with_backoff_live_not_ready_until_it_appears() {
    if skip_without_private_broker("starts its broker late") {
        return;
    }
    let port = free_port();
    let root = tempfile::tempdir().unwrap();
    let mut options = AppOptions::fresh(root.path());
    // Shorter than the wait below: waiting for the broker must not fail liveness (a pod
    // deployed before its broker waits instead of being restarted).
    options.extra_args = vec!["--liveness-timeout-ms=8000".into()];
    let mut app = App::spawn(&format!("127.0.0.1:{port}"), &options);
    app.assert_live_not_ready_for(Duration::from_secs(16));
    wait_until("two logged retries", TIMEOUT, || {
        app.log().matches("unreachable").count() >= 2
    });
    assert!(
        app.is_running(),
        "gave up instead of retrying; log:\n{}",
        app.log()
    );
    assert!(app.log().contains("retrying in"), "{}", app.log());
    assert!(!app.log().contains("panicked"), "{}", app.log());

    let broker = Broker::start_on(port);
    broker.create_topic(&options.input_topic, 4);
    broker.create_topic(&options.output_topic, 4);
    broker.produce_strings(
        &options.input_topic,
        [("foo", "bar"), ("hello", "world"), ("foo", "baz")],
    );
    broker
        .wait_for_counts(
            &options.output_topic,
            &expected(&[("foo", 2), ("hello", 1)]),
            TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", app.log()));
    assert!(app.terminate(Duration::from_secs(30)).success());
}

#[test]
fn a_state_dir_held_by_a_running_instance_is_refused() {
    let (broker, _root, options) = broker_with_topics();
    let mut first = App::spawn(&broker.address(), &options);
    first.wait_ready(TIMEOUT);
    let mut second = App::spawn(&broker.address(), &options);
    let status = second
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("second instance kept running; log:\n{}", second.log()));
    assert!(!status.success());
    assert!(
        second
            .log()
            .contains("is locked by another running instance"),
        "{}",
        second.log()
    );
    assert!(first.is_running());
    assert!(first.terminate(Duration::from_secs(30)).success());
}
