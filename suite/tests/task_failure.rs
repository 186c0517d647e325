//! Task supervision, with the engine in-process on a real broker: a processor that panics on
//! one chosen record restarts only its own task; one that always panics stops the instance
//! with the task and offset named.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kstreams_engine::{
    EngineError, InputRecord, KafkaStreams, Processor, ProcessorContext, RecordError, StoreId,
    StreamsConfig, Topology,
};
use kstreams_suite::{unique, Broker};

const TIMEOUT: Duration = Duration::from_secs(120);

/// Counts per key like the word count, but panics on key `boom` while `panics_left` > 0.
struct FlakyCount {
    output: String,
    panics_left: Arc<AtomicUsize>,
}

impl Processor for FlakyCount {
    fn process(
        &mut self,
        record: &InputRecord,
        ctx: &mut ProcessorContext<'_>,
    ) -> Result<(), RecordError> {
        let key = record.key.as_deref().ok_or(RecordError::NullKey)?;
        if key == b"boom"
            && self
                .panics_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            panic!("boom at offset {}", record.offset);
        }
        if ctx.already_applied(StoreId(0), key)? {
            return Ok(());
        }
        let count = ctx
            .get(StoreId(0), key)?
            .map_or(0, |b| i64::from_be_bytes(b.try_into().unwrap()))
            + 1;
        ctx.put(StoreId(0), key, &count.to_be_bytes())?;
        ctx.forward(&self.output, key, count.to_string().as_bytes())
    }
}

struct Setup {
    broker: Broker,
    input: String,
    output: String,
    config: StreamsConfig,
    _state: tempfile::TempDir,
}

fn setup() -> Setup {
    let broker = Broker::start();
    let (input, output) = (unique("input-topic"), unique("counts-topic"));
    broker.create_topic(&input, 4);
    broker.create_topic(&output, 4);
    let state = tempfile::tempdir().unwrap();
    let mut config = StreamsConfig::new(unique("flaky-app"), broker.address());
    config.state_dir = state.path().to_path_buf();
    config.commit_interval = Duration::from_millis(300);
    config.session_timeout = Duration::from_secs(6);
    config.task_failure_limit = 3;
    config.task_failure_window = Duration::from_secs(60);
    Setup {
        broker,
        input,
        output,
        config,
        _state: state,
    }
}

fn topology(setup: &Setup, panics: usize) -> Topology {
    let output = setup.output.clone();
    let panics_left = Arc::new(AtomicUsize::new(panics));
    Topology::from_processor(
        setup.input.clone(),
        vec!["count-store".into()],
        vec![setup.output.clone()],
        Arc::new(move || {
            Box::new(FlakyCount {
                output: output.clone(),
                panics_left: panics_left.clone(),
            }) as Box<dyn Processor>
        }),
    )
    .unwrap()
}

fn record(key: &str, partition: i32) -> kstreams_suite::RawRecord {
    (
        Some(key.as_bytes().to_vec()),
        Some(b"v".to_vec()),
        Some(partition),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panicking_task_restarts_alone_and_counts_stay_exact() {
    let setup = tokio::task::block_in_place(setup);
    let streams = KafkaStreams::start(topology(&setup, 1), setup.config.clone())
        .await
        .unwrap();
    // Partition 1 panics once on `boom`; the other partitions carry on meanwhile.
    let mut records = vec![record("before", 1), record("boom", 1), record("after", 1)];
    for partition in [0, 2, 3] {
        records.extend((0..50).map(|i| record(&format!("k{partition}-{}", i % 5), partition)));
    }
    let broker = &setup.broker;
    tokio::task::block_in_place(|| broker.produce(&setup.input, records));
    let mut expected: HashMap<String, u64> = [("before", 1), ("boom", 1), ("after", 1)]
        .into_iter()
        .map(|(k, n)| (k.to_string(), n))
        .collect();
    for partition in [0, 2, 3] {
        for i in 0..5 {
            expected.insert(format!("k{partition}-{i}"), 10);
        }
    }
    tokio::task::block_in_place(|| {
        broker
            .wait_for_counts(&setup.output, &expected, TIMEOUT)
            .unwrap()
    });
    let text = streams.metrics().render();
    assert_eq!(
        kstreams_suite::metric_sum(&text, "kstreams_task_restarts_total", &[]),
        1.0
    );
    for task in ["0_0", "0_2", "0_3"] {
        let processed = kstreams_suite::metric_sum(
            &text,
            "kstreams_records_processed_total",
            &[&format!("task_id=\"{task}\"")],
        );
        assert_eq!(
            processed, 50.0,
            "{task} processed its records while 0_1 restarted"
        );
    }
    streams.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_that_keeps_failing_stops_the_instance_naming_task_and_offset() {
    let setup = tokio::task::block_in_place(setup);
    let mut streams = KafkaStreams::start(topology(&setup, usize::MAX), setup.config.clone())
        .await
        .unwrap();
    let broker = &setup.broker;
    tokio::task::block_in_place(|| {
        broker.produce(&setup.input, [record("fine", 2), record("boom", 2)])
    });
    let error = tokio::time::timeout(TIMEOUT, streams.failed())
        .await
        .expect("the instance gave up");
    let message = error.to_string();
    assert!(matches!(error, EngineError::TaskFailed { .. }), "{message}");
    assert!(message.contains("task 0_2"), "{message}");
    assert!(message.contains("offset 1"), "{message}");
    assert!(message.contains("failed 3 times"), "{message}");
    let _ = streams.close().await;
    // Nothing is lost: the failing task committed nothing past its last good commit, so once
    // the processor is mended, a new instance of the app counts both records exactly once.
    // (What the failing task forwarded before the panic may or may not have reached the topic:
    // its producer is dropped with the task, which purges what it had not yet sent.)
    let mended = KafkaStreams::start(topology(&setup, 0), setup.config.clone())
        .await
        .unwrap();
    let expected: HashMap<String, u64> = [("fine".to_string(), 1), ("boom".to_string(), 1)]
        .into_iter()
        .collect();
    tokio::task::block_in_place(|| {
        broker
            .wait_for_counts(&setup.output, &expected, TIMEOUT)
            .unwrap()
    });
    mended.close().await.unwrap();
}
