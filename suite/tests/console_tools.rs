//! The console tools against the local broker, as a shell user runs them.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use kstreams_suite::{app_bin, run_cli, unique, Broker};

/// `kstreams-count consume | head -1`: the reader leaves after one line while far more than a
/// pipe's buffer is still to be written; the consumer ends at once, successfully and without a
/// "Broken pipe" error.
#[test]
fn consume_stops_quietly_when_its_reader_goes_away() {
    let broker = Broker::start();
    let topic = unique("console-consume");
    broker.create_topic(&topic, 1);
    // About 300 KiB of output, several times a pipe's buffer.
    let records: Vec<(String, String)> = (0..10_000)
        .map(|n| (format!("key-{n:05}"), format!("value-{n:020}")))
        .collect();
    broker.produce_strings(
        &topic,
        records.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let mut consume = Command::new(app_bin())
        .args(["consume", "--broker", &broker.address(), "--topic", &topic])
        .args(["--from-beginning", "--idle-timeout-ms", "60000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kstreams-count consume");
    let mut first = String::new();
    BufReader::new(consume.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first, "key-00000 value-00000000000000000000\n");
    // The reader is gone (its end of the pipe dropped above); the consumer must notice long
    // before its 60 s idle timeout, since it still has thousands of records to print.
    let output = kstreams_suite::poll_until(Duration::from_secs(30), || {
        consume.try_wait().unwrap().is_some()
    });
    if output.is_none() {
        consume.kill().unwrap();
    }
    let finished = consume.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&finished.stderr);
    assert!(
        output.is_some(),
        "consume kept running without a reader; stderr:\n{stderr}"
    );
    assert!(
        finished.status.success(),
        "exit {}; stderr:\n{stderr}",
        finished.status
    );
    assert!(
        !stderr.to_lowercase().contains("broken pipe"),
        "stderr:\n{stderr}"
    );
}

fn cli(broker: &Broker, args: &[&str]) -> (bool, String, String) {
    let mut all = args.to_vec();
    let address = broker.address();
    all.extend(["--broker", address.as_str()]);
    let output = run_cli(&all, &[], "");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `consume -e` reads to the end the partitions had at its start and exits; `--partition` and
/// `--offset` choose where (kcat's -e, -p and -o).
#[test]
fn consume_reads_a_chosen_partition_from_a_chosen_offset_and_exits_at_its_end() {
    let broker = Broker::start();
    let topic = unique("console-offsets");
    broker.create_topic(&topic, 2);
    broker.produce(
        &topic,
        (0..10).map(|n| {
            let partition = n % 2;
            let key = format!("k{n}").into_bytes();
            (
                Some(key),
                Some(format!("v{n}").into_bytes()),
                Some(partition),
            )
        }),
    );
    // Partition 1 holds k1, k3, k5, k7, k9 at offsets 0..5.
    let (ok, stdout, stderr) = cli(
        &broker,
        &[
            "consume",
            "--topic",
            &topic,
            "--partition",
            "1",
            "--offset",
            "2",
            "-e",
        ],
    );
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "k5 v5\nk7 v7\nk9 v9\n");
    // Every partition from the beginning, to its end.
    let (ok, stdout, stderr) = cli(
        &broker,
        &["consume", "--topic", &topic, "--from-beginning", "-e"],
    );
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().count(), 10, "{stdout}");
    // From the end: nothing to read, and -e exits at once.
    let (ok, stdout, stderr) = cli(
        &broker,
        &["consume", "--topic", &topic, "--offset", "end", "-e"],
    );
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "");
    // A wrong choice is named.
    let (ok, _, stderr) = cli(
        &broker,
        &["consume", "--topic", &topic, "--partition", "7", "-e"],
    );
    assert!(!ok && stderr.contains("no partition 7"), "{stderr}");
    let (ok, _, stderr) = cli(
        &broker,
        &["consume", "--topic", &topic, "--offset", "3", "-e"],
    );
    assert!(!ok && stderr.contains("needs --partition"), "{stderr}");
}

/// `create-topic --config` sets topic settings; an existing topic with other partitions is an
/// error, not a silent success.
#[test]
fn create_topic_sets_configs_and_refuses_an_existing_topic_with_other_partitions() {
    let broker = Broker::start();
    let topic = unique("console-create");
    let (ok, _, stderr) = cli(
        &broker,
        &[
            "create-topic",
            &topic,
            "--partitions",
            "3",
            "--config",
            "cleanup.policy=compact",
        ],
    );
    assert!(ok, "{stderr}");
    assert_eq!(
        broker.topic_config(&topic, "cleanup.policy").as_deref(),
        Some("compact")
    );
    let (ok, _, stderr) = cli(&broker, &["create-topic", &topic, "--partitions", "3"]);
    assert!(
        ok && stderr.contains("already exists (3 partitions)"),
        "{stderr}"
    );
    let (ok, _, stderr) = cli(&broker, &["create-topic", &topic, "--partitions", "4"]);
    assert!(
        !ok && stderr.contains("already exists with 3 partitions, not 4"),
        "{stderr}"
    );
    let (ok, _, stderr) = cli(&broker, &["create-topic", &topic, "--config", "nokey"]);
    assert!(!ok && stderr.contains("is not key=value"), "{stderr}");
}

/// `produce -Z -H` sends an empty key or value as null and the headers on every record;
/// `consume --json` tells a null from the text "null" and shows the headers (kcat's -Z, -H
/// and -J). Without -Z an empty value stays an empty value.
#[test]
fn produce_sends_nulls_and_headers_and_consume_json_shows_them() {
    let broker = Broker::start();
    let topic = unique("console-json");
    broker.create_topic(&topic, 1);
    let address = broker.address();
    let produce = |extra: &[&str], lines: &str| {
        let mut args = vec!["produce", "--topic", &topic, "--broker", &address];
        args.extend(extra);
        let output = run_cli(&args, &[], lines);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stderr}");
    };
    let headers = ["-H", "trace=abc", "-H", "origin=console"];
    produce(
        &[&["-Z"], &headers[..]].concat(),
        "k1:v1\n:keyless\nk2:\nk3:null\n",
    );
    produce(&[], "k4:\n");

    let (ok, stdout, stderr) = cli(
        &broker,
        &[
            "consume",
            "--topic",
            &topic,
            "--from-beginning",
            "-e",
            "--json",
        ],
    );
    assert!(ok, "{stderr}");
    let records: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let null = serde_json::Value::Null;
    let expected = [
        ("k1".into(), "v1".into()),
        (null.clone(), "keyless".into()),
        ("k2".into(), null.clone()),
        ("k3".into(), "null".into()),
        ("k4".into(), "".into()),
    ];
    assert_eq!(records.len(), expected.len(), "{stdout}");
    let sent_headers = serde_json::json!([
        {"name": "trace", "value": "abc"},
        {"name": "origin", "value": "console"},
    ]);
    for (offset, (record, (key, value))) in records.iter().zip(expected).enumerate() {
        assert_eq!(record["topic"], topic.as_str());
        assert_eq!(record["partition"], 0);
        assert_eq!(record["offset"], offset as i64, "{record}");
        assert_eq!(record["key"], key, "{record}");
        assert_eq!(record["value"], value, "{record}");
        let headers = if offset < 4 {
            sent_headers.clone()
        } else {
            serde_json::json!([])
        };
        assert_eq!(record["headers"], headers, "{record}");
    }
}
