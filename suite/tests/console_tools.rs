//! The console tools against the local broker, as a shell user runs them.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use kstreams_suite::{app_bin, unique, Broker};

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
