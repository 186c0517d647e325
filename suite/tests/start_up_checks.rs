//! What the app checks before it counts, on a real broker: it waits (live, not ready) for its
//! output topic (for the broker: `bad_input.rs`), refuses a changelog that is not compacted and
//! client settings that would break its guarantees, and the console producer fails loudly.
//!
//! Lookups never create a topic (`allow.auto.create.topics=false` on every client, asserted
//! by the engine's unit tests); tansu 0.6.0 never auto-creates topics, so no test here could
//! catch the opposite on the local broker.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use kstreams_suite::{app_bin, free_port, poll_until, word_count_input, App, AppOptions, Broker};

const COUNTS_TIMEOUT: Duration = Duration::from_secs(120);
/// Shorter than the waits below, to show that waiting does not fail liveness.
const LIVENESS_TIMEOUT_MS: u64 = 8_000;

fn count(broker: &Broker, options: &AppOptions, app: &App, records: usize) {
    let (input, expected): (Vec<(String, String)>, HashMap<String, u64>) =
        word_count_input(records, 100);
    broker.produce_strings(
        &options.input_topic,
        input.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    broker
        .wait_for_counts(&options.output_topic, &expected, COUNTS_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", app.log()));
}

fn waiting_options(root: &std::path::Path) -> AppOptions {
    let mut options = AppOptions::fresh(root);
    options.extra_args = vec![format!("--liveness-timeout-ms={LIVENESS_TIMEOUT_MS}")];
    options
}

#[test]
fn waits_live_but_not_ready_for_a_missing_output_topic_then_counts() {
    let broker = Broker::start();
    let root = tempfile::tempdir().unwrap();
    let options = waiting_options(root.path());
    broker.create_topic(&options.input_topic, 4);
    let mut app = App::spawn(&broker.address(), &options);
    let named = poll_until(Duration::from_secs(30), || {
        app.log().contains(&format!(
            "output topic `{}` does not exist",
            options.output_topic
        ))
    });
    assert!(
        named.is_some(),
        "no message naming the output topic; log:\n{}",
        app.log()
    );
    app.assert_live_not_ready_for(Duration::from_millis(2 * LIVENESS_TIMEOUT_MS));
    assert_eq!(
        broker.partitions(&options.output_topic),
        None,
        "the output topic was created by a lookup"
    );
    broker.create_topic(&options.output_topic, 4);
    app.wait_ready(Duration::from_secs(60));
    count(&broker, &options, &app, 2_000);
}

/// A changelog whose cleanup policy can remove records (`delete`, or `compact,delete`: retention
/// would drop keys that a full restore then silently misses) stops start-up naming the topic
/// and its policy.
#[test]
fn a_changelog_that_is_not_compacted_alone_stops_start_up_naming_it() {
    let broker = Broker::start();
    for policy in ["delete", "compact,delete"] {
        let root = tempfile::tempdir().unwrap();
        let options = AppOptions::fresh(root.path());
        broker.create_topic(&options.input_topic, 4);
        broker.create_topic(&options.output_topic, 4);
        let changelog = options.changelog_topic();
        broker.create_topic_with(&changelog, 4, &[("cleanup.policy", policy)]);
        let mut app = App::spawn(&broker.address(), &options);
        let status = app
            .wait_exit(Duration::from_secs(60))
            .unwrap_or_else(|| panic!("{policy}: still running; log:\n{}", app.log()));
        assert!(!status.success(), "{policy}: exit {status}");
        let log = app.log();
        assert!(
            log.contains(&format!(
                "changelog topic `{changelog}` has cleanup.policy `{policy}`; it must be `compact` alone"
            )),
            "{policy}: {log}"
        );
    }
}

#[test]
fn a_client_setting_that_breaks_a_guarantee_stops_start_up_naming_it_and_its_source() {
    // No broker needed: settings are checked before anything connects.
    let root = tempfile::tempdir().unwrap();
    // (flags, environment, what the error says)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 3] = [
        (
            &["-X", "enable.auto.commit=true"],
            &[],
            "client setting `enable.auto.commit` (from -X)",
        ),
        (
            &[],
            &[("KSTREAMS_CLIENT_GROUP_ID", "someone-else")],
            "client setting `group.id` (from environment variable KSTREAMS_CLIENT_GROUP_ID)",
        ),
        (
            &["-X", "no.such.setting=1"],
            &[],
            "client setting `no.such.setting` (from -X)",
        ),
    ];
    for (args, env, expected) in cases {
        let output = Command::new(app_bin())
            .env_remove("KAFKA_BROKER")
            .args(["--state-dir"])
            .arg(root.path())
            .args(["--metrics-address", "off"])
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} {env:?} started");
        assert!(stderr.contains(expected), "{args:?} {env:?}: {stderr}");
    }
}

#[test]
fn produce_exits_non_zero_saying_how_many_records_were_not_delivered() {
    // Nothing listens there: every record times out.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(app_bin())
        .env_remove("KAFKA_BROKER")
        .args(["produce", "--topic", "input-topic", "--broker", &nowhere])
        .args(["-X", "message.timeout.ms=2000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a:1\nb:2\nc:3\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("3 of 3 records to `input-topic` were not delivered"),
        "{stderr}"
    );
}
