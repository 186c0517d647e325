//! The throughput and recovery benchmark, shared by `benches/throughput.rs` (release, real
//! figures) and the CI smoke test (small, checks counts are exact): the word count against a
//! plain consume -> produce pipe on the same broker and topics, and restore against a plain
//! read of the same changelog.

use std::time::{Duration, Instant};

use kstreams_engine::{KafkaStreams, StreamsBuilder, StreamsConfig, StringSerde, Topology};

/// The word count as `kstreams-count` builds it: `input` -> count per key in `count-store` ->
/// `output` (counts as decimal strings).
pub fn word_count_topology(input: &str, output: &str) -> Topology {
    let builder = StreamsBuilder::new();
    builder
        .stream(input, StringSerde, StringSerde)
        .group_by_key()
        .count("count-store")
        .to_stream()
        .map_values(|n| n.to_string())
        .to(output, StringSerde, StringSerde);
    builder.build().expect("word count topology")
}
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use crate::{metric_sum, unique, word_count_input, Broker};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub records: usize,
    pub keys: usize,
    pub partitions: i32,
}

/// One measured line of the table.
#[derive(Debug, Clone)]
pub struct Figure {
    pub name: &'static str,
    pub records: u64,
    pub seconds: f64,
}

impl Figure {
    pub fn rate(&self) -> f64 {
        self.records as f64 / self.seconds.max(1e-9)
    }
}

/// Everything one run measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub config: BenchConfig,
    pub produce: Figure,
    pub pipe: Figure,
    pub engine: Figure,
    pub plain_read: Figure,
    pub restore: Figure,
    /// The engine's last count per key matched what was produced.
    pub counts_exact: bool,
}

impl BenchReport {
    pub fn table(&self) -> String {
        let c = &self.config;
        let mut out = format!(
            "word count benchmark: {} records, {} keys, {} partitions, tansu 0.6.0 sqlite storage\n\n",
            c.records, c.keys, c.partitions
        );
        out +=
            "| measurement | records | seconds | records/s | ratio |\n|---|---:|---:|---:|---:|\n";
        let row = |f: &Figure, ratio: Option<f64>| {
            format!(
                "| {} | {} | {:.2} | {:.0} | {} |\n",
                f.name,
                f.records,
                f.seconds,
                f.rate(),
                ratio.map_or("".into(), |r| format!("{r:.2}"))
            )
        };
        out += &row(&self.produce, None);
        out += &row(&self.pipe, None);
        out += &row(&self.engine, Some(self.engine.rate() / self.pipe.rate()));
        out += &row(&self.plain_read, None);
        out += &row(
            &self.restore,
            Some(self.restore.rate() / self.plain_read.rate()),
        );
        out += &format!("\ncounts exact: {}\n", self.counts_exact);
        out
    }
}

fn producer(broker: &Broker) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap()
}

fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: &[u8],
    value: &[u8],
) {
    let mut record = BaseRecord::<[u8], [u8]>::to(topic).key(key).payload(value);
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, returned)) => {
                std::thread::sleep(Duration::from_millis(1));
                record = returned;
            }
        }
    }
}

/// Reads `topic` from the beginning until `expected` records arrived; calls `each` per record.
fn read_topic(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    expected: u64,
    mut each: impl FnMut(&[u8], &[u8]),
) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("group.id", unique("bench-reader"))
        .set("enable.auto.commit", "false")
        .set("max.partition.fetch.bytes", "262144")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut seen = 0;
    while seen < expected {
        assert!(
            Instant::now() < deadline,
            "reading {topic}: {seen} of {expected}"
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            each(m.key().unwrap_or_default(), m.payload().unwrap_or_default());
            seen += 1;
        }
    }
}

fn timed(name: &'static str, records: u64, f: impl FnOnce()) -> Figure {
    let started = Instant::now();
    f();
    Figure {
        name,
        records,
        seconds: started.elapsed().as_secs_f64(),
    }
}

async fn run_engine(
    broker: &Broker,
    input: &str,
    output: &str,
    state: &std::path::Path,
    app_id: &str,
) -> (KafkaStreams, Instant) {
    let mut config = StreamsConfig::new(app_id, broker.address());
    config.state_dir = state.to_path_buf();
    config.commit_interval = Duration::from_secs(5);
    let started = Instant::now();
    (
        KafkaStreams::start(word_count_topology(input, output), config)
            .await
            .unwrap(),
        started,
    )
}

async fn wait_metric(streams: &KafkaStreams, name: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(1800);
    while metric_sum(&streams.metrics().render(), name, &[]) < at_least {
        assert!(Instant::now() < deadline, "{name} stayed below {at_least}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs every measurement on one fresh broker. Needs a multi-threaded Tokio runtime.
pub async fn run(config: BenchConfig) -> BenchReport {
    let broker = tokio::task::block_in_place(Broker::start);
    let input = unique("bench-input");
    let (pipe_out, engine_out) = (unique("bench-pipe-out"), unique("bench-counts"));
    let n = config.records as u64;
    let (records, expected) = word_count_input(config.records, config.keys);
    let produce = tokio::task::block_in_place(|| {
        for topic in [&input, &pipe_out, &engine_out] {
            broker.create_topic(topic, config.partitions);
        }
        timed("produce input (rdkafka producer -> broker)", n, || {
            let producer = producer(&broker);
            for (k, v) in &records {
                send(&producer, &input, k.as_bytes(), v.as_bytes());
            }
            producer.flush(Duration::from_secs(600)).unwrap();
        })
    });

    // The ceiling: consume -> produce with no state work, same topics, same client settings.
    let pipe = tokio::task::block_in_place(|| {
        timed("ceiling: plain consume -> produce pipe", n, || {
            let producer = producer(&broker);
            read_topic(&broker, &input, config.partitions, n, |k, v| {
                send(&producer, &pipe_out, k, v)
            });
            producer.flush(Duration::from_secs(600)).unwrap();
        })
    });

    let state = tempfile::tempdir().unwrap();
    let app_id = unique("bench-app");
    let (streams, started) = run_engine(&broker, &input, &engine_out, state.path(), &app_id).await;
    wait_metric(&streams, "kstreams_records_processed_total", n as f64).await;
    let engine = Figure {
        name: "kstreams word count (RocksDB state + changelog + output)",
        records: n,
        seconds: started.elapsed().as_secs_f64(),
    };
    streams.close().await.unwrap();
    let counts_exact = tokio::task::block_in_place(|| {
        broker
            .wait_for_counts(&engine_out, &expected, Duration::from_secs(600))
            .is_ok()
    });

    let changelog = format!("{app_id}-count-store-changelog");
    let changelog_records = tokio::task::block_in_place(|| broker.record_count(&changelog)) as u64;
    let plain_read = tokio::task::block_in_place(|| {
        timed(
            "plain consumer reading the changelog",
            changelog_records,
            || {
                read_topic(
                    &broker,
                    &changelog,
                    config.partitions,
                    changelog_records,
                    |_, _| {},
                )
            },
        )
    });
    let empty = tempfile::tempdir().unwrap();
    let (streams, started) = run_engine(&broker, &input, &engine_out, empty.path(), &app_id).await;
    let restored_to_ready = loop {
        if streams.is_ready()
            && metric_sum(
                &streams.metrics().render(),
                "kstreams_restore_records_total",
                &[],
            ) > 0.0
        {
            break started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let restored = metric_sum(
        &streams.metrics().render(),
        "kstreams_restore_records_total",
        &[],
    ) as u64;
    streams.close().await.unwrap();
    let restore = Figure {
        name: "restore into an empty state dir (start to ready)",
        records: restored,
        seconds: restored_to_ready.as_secs_f64(),
    };
    BenchReport {
        config,
        produce,
        pipe,
        engine,
        plain_read,
        restore,
        counts_exact,
    }
}
