//! Keys land where Kafka's Java clients put them: the console producer (`kstreams-count
//! produce`) and the word count's output producer use Kafka's murmur2 partitioner, so a key
//! written by a Java producer and by ours is counted by one task, and `counts-topic` is
//! co-partitioned with Java-written topics. The expected partitions are computed by the
//! harness's own murmur2 (checked against Kafka's published values), not by librdkafka.

use std::collections::HashMap;
use std::time::Duration;

use kstreams_suite::{
    broker_and_app, java_partition, key_value_lines, run_cli, word_count_input, App, Broker,
};

const PARTITIONS: i32 = 4;
const COUNTS_TIMEOUT: Duration = Duration::from_secs(120);

/// Produces `records` with `kstreams-count produce` and any extra flags.
fn produce(broker: &Broker, topic: &str, records: &[(String, String)], extra: &[&str]) {
    let address = broker.address();
    let mut args = vec!["produce", "--topic", topic, "--broker", &address];
    args.extend_from_slice(extra);
    let output = run_cli(&args, &[], &key_value_lines(records));
    assert!(
        output.status.success(),
        "produce failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Each key's partitions in `topic`, and how many of its records sit where Java would not put
/// them.
fn placement(broker: &Broker, topic: &str) -> (HashMap<Vec<u8>, i32>, usize) {
    let mut partition_of = HashMap::new();
    let mut misplaced = 0;
    for (partition, key, _) in broker.read_all_located(topic) {
        let key = key.expect("keyed records");
        if partition != java_partition(&key, PARTITIONS) {
            misplaced += 1;
        }
        partition_of.insert(key, partition);
    }
    (partition_of, misplaced)
}

#[test]
fn input_and_counts_land_on_the_partitions_a_java_producer_picks() {
    let state_root = tempfile::tempdir().unwrap();
    let (broker, options) = broker_and_app(state_root.path());
    // More records than one produce batch, 500 keys over 4 partitions.
    let (records, expected) = word_count_input(6_000, 500);
    produce(&broker, &options.input_topic, &records, &[]);
    let (input_keys, misplaced) = placement(&broker, &options.input_topic);
    assert_eq!(input_keys.len(), 500, "every key was produced");
    assert_eq!(misplaced, 0, "the console producer partitions as Java does");

    let app = App::spawn(&broker.address(), &options);
    broker
        .wait_for_counts(&options.output_topic, &expected, COUNTS_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", app.log()));
    let (output_keys, misplaced) = placement(&broker, &options.output_topic);
    assert_eq!(output_keys.len(), 500);
    assert_eq!(misplaced, 0, "the output producer partitions as Java does");
    assert_eq!(
        output_keys, input_keys,
        "counts-topic is co-partitioned with the input"
    );
}

#[test]
fn a_user_may_choose_another_partitioner() {
    let state_root = tempfile::tempdir().unwrap();
    let (broker, options) = broker_and_app(state_root.path());
    let (records, _) = word_count_input(2_000, 200);
    // librdkafka's own CRC32 partitioner, as a deployment whose other producers use it would.
    produce(
        &broker,
        &options.input_topic,
        &records,
        &["-X", "partitioner=consistent"],
    );
    let (keys, misplaced) = placement(&broker, &options.input_topic);
    assert_eq!(keys.len(), 200);
    assert!(
        misplaced > 0,
        "with another partitioner some keys land elsewhere than Java's murmur2 puts them"
    );
}
