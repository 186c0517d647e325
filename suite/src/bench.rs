//! The throughput, latency, recovery and memory benchmarks, shared by `benches/throughput.rs`
//! (release, real figures, one run printing every table) and the CI smoke test (small sizes,
//! exact counts asserted): the `kstreams-count` process against a plain rdkafka consume ->
//! produce pipe on the same broker and topics, restore against a plain read of the same
//! changelog, end-to-end latency at a fixed rate, and the process's peak RSS.

use std::path::Path;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use kstreams_engine::status::TaskView;
use kstreams_engine::{default_key_partitioner, Topology};

use crate::failover::{failover, stopped_field, FailoverRun};
use crate::{free_port, http_get, metric_sum, unique, App, AppOptions, Broker, Storage};

/// Longest any one step may take before the benchmark gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(1800);

/// The word count as `kstreams-count` builds it: `input` -> count per key in `count-store` ->
/// `output` (counts as decimal strings).
pub fn word_count_topology(input: &str, output: &str) -> Topology {
    kstreams_engine::word_count(input, "count-store", output).expect("word count topology")
}

/// How input keys are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDistribution {
    /// Uniform at random over the keys.
    Uniform,
    /// Zipf (exponent 1) over the keys: a few keys get most records.
    Zipf,
    /// Each key in turn: with as many records as keys, every record has a new key.
    Sequential,
}

impl KeyDistribution {
    pub fn name(self) -> &'static str {
        match self {
            KeyDistribution::Uniform => "uniform",
            KeyDistribution::Zipf => "zipf",
            KeyDistribution::Sequential => "each once",
        }
    }
}

/// One input data set: `records` records with keys `key-<n>`, `n < keys`.
#[derive(Debug, Clone, Copy)]
pub struct Input {
    pub records: u64,
    pub keys: u64,
    pub distribution: KeyDistribution,
}

impl Input {
    /// The key index of every record, in order (the same sequence on every call).
    pub fn key_indexes(&self) -> impl Iterator<Item = u64> {
        let mut rng = StdRng::seed_from_u64(20261125);
        let zipf = Zipf::new(self.keys as f64, 1.0).expect("zipf over at least one key");
        let (keys, distribution) = (self.keys, self.distribution);
        (0..self.records).map(move |i| match distribution {
            KeyDistribution::Uniform => rng.random_range(0..keys),
            KeyDistribution::Zipf => zipf.sample(&mut rng) as u64 - 1,
            KeyDistribution::Sequential => i % keys,
        })
    }

    /// The final count of every key index (0 for keys that got no record).
    pub fn expected_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.keys as usize];
        for key in self.key_indexes() {
            counts[key as usize] += 1;
        }
        counts
    }

    pub fn describe(&self) -> String {
        format!(
            "{} records, {} keys ({})",
            self.records,
            self.keys,
            self.distribution.name()
        )
    }
}

/// One timed step.
#[derive(Debug, Clone, Copy, Default)]
pub struct Figure {
    pub records: u64,
    pub seconds: f64,
}

impl Figure {
    pub fn rate(&self) -> f64 {
        self.records as f64 / self.seconds.max(1e-9)
    }

    fn timed(records: u64, f: impl FnOnce()) -> Figure {
        let started = Instant::now();
        f();
        Figure {
            records,
            seconds: started.elapsed().as_secs_f64(),
        }
    }
}

fn producer(broker: &Broker) -> ThreadedProducer<DefaultProducerContext> {
    default_key_partitioner(&mut ClientConfig::new())
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
                // Queue full: it drains as the broker acknowledges.
                std::thread::sleep(Duration::from_millis(1));
                record = returned;
            }
        }
    }
}

/// Produces `input` to `topic` and waits for every acknowledgement.
pub fn produce_input(broker: &Broker, topic: &str, input: &Input) -> Figure {
    Figure::timed(input.records, || {
        let producer = producer(broker);
        for key in input.key_indexes() {
            send(&producer, topic, format!("key-{key}").as_bytes(), b"1");
        }
        producer.flush(STEP_TIMEOUT).unwrap();
    })
}

/// A consumer of every partition of `topic` from the beginning, tuned for the broker's
/// storage, then with `extra` settings.
fn reader(broker: &Broker, topic: &str, partitions: i32, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", broker.address())
        .set("group.id", unique("bench-reader"))
        .set("enable.auto.commit", "false")
        .set("max.partition.fetch.bytes", "262144");
    for (key, value) in broker.storage.client_overrides() {
        config.set(key, value);
    }
    for (key, value) in extra {
        config.set(*key, *value);
    }
    let consumer: BaseConsumer = config.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    consumer
}

/// Reads `expected` records of `topic` from the beginning, calling `each` on every one.
fn read_records(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    expected: u64,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) {
    let consumer = reader(broker, topic, partitions, &[]);
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut seen = 0;
    while seen < expected {
        assert!(
            Instant::now() < deadline,
            "reading {topic}: {seen} of {expected}"
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            each(&m);
            seen += 1;
        }
    }
}

/// The ceiling: consume `input_topic` and produce every record to each of `output_topics`,
/// no state. With one output topic, the plain pipe; with two, a pipe that writes what the word
/// count writes when no key repeats within a commit (an output and a changelog record per input
/// record), so it prices the Kafka client work alone. `producers` producers share the work, an
/// input partition's records all through one (`BENCH_PIPE_PRODUCERS`: 1, or the partition
/// count to model a producer per task).
pub fn plain_pipe(
    broker: &Broker,
    input_topic: &str,
    output_topics: &[&str],
    input: &Input,
    producers: usize,
) -> Figure {
    let partitions = broker.partitions(input_topic).unwrap() as i32;
    Figure::timed(input.records, || {
        let producers: Vec<_> = (0..producers.max(1)).map(|_| producer(broker)).collect();
        read_records(broker, input_topic, partitions, input.records, |m| {
            let producer = &producers[m.partition() as usize % producers.len()];
            for topic in output_topics {
                send(
                    producer,
                    topic,
                    m.key().unwrap_or_default(),
                    m.payload().unwrap_or_default(),
                )
            }
        });
        for producer in &producers {
            producer.flush(STEP_TIMEOUT).unwrap();
        }
    })
}

/// Reads `topic` from the beginning until the last count of every key is the expected one
/// (counts as `kstreams-count` writes them: key `key-<n>`, value the decimal count).
pub fn counts_match(broker: &Broker, topic: &str, expected: &[u32], timeout: Duration) -> bool {
    let partitions = broker.partitions(topic).unwrap() as i32;
    let consumer = reader(broker, topic, partitions, &[]);
    let target = expected.iter().filter(|&&n| n > 0).count();
    let mut latest = vec![0u32; expected.len()];
    let mut matching = 0;
    let deadline = Instant::now() + timeout;
    while matching < target {
        if Instant::now() >= deadline {
            return false;
        }
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let key = std::str::from_utf8(m.key().unwrap_or_default()).unwrap_or("");
        let count = std::str::from_utf8(m.payload().unwrap_or_default())
            .ok()
            .and_then(|v| v.parse::<u32>().ok());
        let (Some(index), Some(count)) = (
            key.strip_prefix("key-")
                .and_then(|n| n.parse::<usize>().ok()),
            count,
        ) else {
            return false;
        };
        let Some(want) = expected.get(index).copied() else {
            return false;
        };
        let was = std::mem::replace(&mut latest[index], count);
        if count == want && was != want {
            matching += 1;
        } else if count != want && was == want {
            matching -= 1;
        }
    }
    true
}

/// A finished run of the `kstreams-count` process.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppRun {
    /// From the process's start (group join included) until it processed every record.
    pub processed: Figure,
    /// From the process's start until it stopped cleanly after the last record: the final
    /// commit (cached updates sent, every record acknowledged, state written) included.
    pub committed: Figure,
    /// Output and changelog records it sent in all (the record cache sends one per key per
    /// commit).
    pub output_records: u64,
    pub changelog_records: u64,
    /// Peak resident set size of the process (VmHWM), bytes.
    pub peak_rss_bytes: u64,
    /// CPU time the process used from its start to its clean stop (every thread), seconds.
    pub cpu_seconds: f64,
    /// The most RocksDB held (block cache and memtables, `kstreams_rocksdb_memory_bytes`) at
    /// any scrape of the run, bytes.
    pub peak_rocksdb_bytes: u64,
    /// Changelog records restored before it ran.
    pub restored_records: u64,
    /// From the process's start until every task ran (restore included).
    pub ready_seconds: f64,
}

/// A number from the environment setting `name`, or `default` when it is unset or not one.
fn bench_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// How to run `kstreams-count` for a benchmark.
#[derive(Debug, Clone)]
pub struct AppSetup {
    pub options: AppOptions,
    pub partitions: i32,
}

impl AppSetup {
    /// A fresh application (new id, topics created with `partitions`) with its state under
    /// `state_root`, tuned for `broker`'s storage; other settings are the product's defaults
    /// unless `BENCH_APP_ARGS` adds flags.
    pub fn fresh(broker: &Broker, state_root: &Path, partitions: i32) -> Self {
        let mut options = AppOptions::fresh(state_root);
        // The product's defaults: 30 s commits and a 10 s session (the tests' 6 s session once
        // cost a 1M-key first run on sqlite its assignment when the broker fell behind).
        options.commit_interval_ms = bench_number("BENCH_COMMIT_INTERVAL_MS", 30_000);
        options.session_timeout_ms = None;
        for (key, value) in broker.storage.client_overrides() {
            options.extra_args.push(format!("-X{key}={value}"));
        }
        // Other settings to try, e.g. BENCH_APP_ARGS="--cache-max-bytes 104857600".
        if let Ok(args) = std::env::var("BENCH_APP_ARGS") {
            options
                .extra_args
                .extend(args.split_whitespace().map(str::to_string));
        }
        broker.create_topic(&options.input_topic, partitions);
        broker.create_topic(&options.output_topic, partitions);
        AppSetup {
            options,
            partitions,
        }
    }

    pub fn changelog(&self) -> String {
        self.options.changelog_topic()
    }

    /// Starts the process and waits until it has processed `records` input records in all: its
    /// tasks' processed offsets (`/status`) reach that many records, so records read again after
    /// a rejoin, which `kstreams_records_processed_total` counts twice, cannot end it early.
    pub fn run_until_processed(&self, broker: &Broker, records: u64) -> AppRun {
        let started = Instant::now();
        let mut app = App::spawn_with_metrics_port(&broker.address(), &self.options, free_port());
        let deadline = started + STEP_TIMEOUT;
        let mut run = AppRun::default();
        let mut stall = StallReport::default();
        loop {
            let metrics = http_get(app.metrics_port, "/metrics").map(|(_, body)| body);
            let metrics = metrics.as_deref().unwrap_or("");
            let value = |name| metric_sum(metrics, name, &[]);
            run.peak_rocksdb_bytes = run
                .peak_rocksdb_bytes
                .max(value("kstreams_rocksdb_memory_bytes") as u64);
            if run.ready_seconds == 0.0 && value("kstreams_tasks_running") >= self.partitions as f64
            {
                run.ready_seconds = started.elapsed().as_secs_f64();
                run.restored_records = value("kstreams_restore_records_total") as u64;
            }
            if run.ready_seconds > 0.0
                && value("kstreams_records_processed_total") >= records as f64
                && records_through_processed_offsets(&app) >= records
            {
                run.processed = Figure {
                    records,
                    seconds: started.elapsed().as_secs_f64(),
                };
                // A clean stop (final commit), so that a restart on this state dir is clean.
                let status = app.terminate(Duration::from_secs(120));
                run.committed = Figure {
                    records,
                    seconds: started.elapsed().as_secs_f64(),
                };
                let log = app.log();
                assert!(
                    status.success(),
                    "kstreams-count stopped with {status}; its log:\n{log}"
                );
                let stopped = |field| {
                    stopped_field(&log, field)
                        .unwrap_or_else(|| panic!("no `{field}` on a `stopped:` line:\n{log}"))
                };
                run.output_records = stopped("output");
                run.changelog_records = stopped("changelog");
                run.peak_rss_bytes = stopped("peak_rss_kib") * 1024;
                run.cpu_seconds = stopped("cpu_ms") as f64 / 1000.0;
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "kstreams-count did not process {records} records; its log:\n{}",
                app.log()
            );
            if run.ready_seconds > 0.0 {
                stall.check(value("kstreams_records_processed_total"), &app);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// How long a word count may process nothing before the benchmark says so (the step goes on
/// until `STEP_TIMEOUT`).
const STALL_REPORT_AFTER: Duration = Duration::from_secs(60);

/// Reports, once per stall, a ready word count (every task running, so not restoring) that
/// processed nothing for `STALL_REPORT_AFTER`: its tasks and the end of its log on stderr, so
/// that a run stopped from outside says why.
#[derive(Default)]
struct StallReport {
    processed: f64,
    since: Option<Instant>,
    reported: bool,
}

impl StallReport {
    fn check(&mut self, processed: f64, app: &App) {
        let since = *self.since.get_or_insert_with(Instant::now);
        if processed != self.processed {
            *self = StallReport {
                processed,
                since: Some(Instant::now()),
                reported: false,
            };
        } else if !self.reported && since.elapsed() >= STALL_REPORT_AFTER {
            self.reported = true;
            let log = app.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "kstreams-count processed nothing for {:?} ({processed} records so far); its \
                 tasks: {:?}; the end of its log:\n{}",
                since.elapsed(),
                app.tasks(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

/// How many input records the given tasks have processed, by their positions: the sum of their
/// processed offsets plus one (input topics start at offset 0).
fn records_through<'a>(tasks: impl Iterator<Item = &'a TaskView>) -> i64 {
    tasks
        .filter_map(|task| task.processed_offset.map(|offset| offset + 1))
        .sum()
}

/// [`records_through`] over every task of a running instance (0 while `/status` is silent).
fn records_through_processed_offsets(app: &App) -> u64 {
    app.view()
        .map_or(0, |view| records_through(view.tasks.iter()) as u64)
}

/// End-to-end throughput of one data set: produce, the plain pipe, then the word count.
#[derive(Debug, Clone)]
pub struct Throughput {
    pub input: Input,
    pub partitions: i32,
    pub storage: Storage,
    /// `taskset` CPUs of the word count process, if pinned.
    pub cpus: Option<String>,
    pub produce: Figure,
    pub pipe: Figure,
    /// The pipe writing two records (output and changelog) per input record.
    pub two_output_pipe: Figure,
    pub word_count: AppRun,
    pub counts_exact: bool,
}

impl Throughput {
    pub fn ratio(&self) -> f64 {
        self.word_count.committed.rate() / self.pipe.rate()
    }

    /// The word count against the pipe writing two records per input record: what the state
    /// costs beyond the records it sends (at most two per input record).
    pub fn two_output_ratio(&self) -> f64 {
        self.word_count.committed.rate() / self.two_output_pipe.rate()
    }
}

/// Measures one data set on a fresh broker with `storage`; `cpus` pins the word count.
pub fn throughput(
    input: Input,
    partitions: i32,
    storage: Storage,
    broker_cpus: Option<&str>,
    cpus: Option<&str>,
) -> Throughput {
    let broker = Broker::start_with(free_port(), storage, broker_cpus);
    let state = tempfile::tempdir().unwrap();
    let mut setup = AppSetup::fresh(&broker, state.path(), partitions);
    setup.options.cpus = cpus.map(str::to_string);
    let [pipe_out, two_out, two_changelog] =
        ["bench-pipe-out", "bench-pipe2-out", "bench-pipe2-changelog"].map(unique);
    for topic in [&pipe_out, &two_out, &two_changelog] {
        broker.create_topic(topic, partitions);
    }
    let produce = produce_input(&broker, &setup.options.input_topic, &input);
    let input_topic = setup.options.input_topic.as_str();
    let producers = bench_number("BENCH_PIPE_PRODUCERS", 1);
    let pipe = plain_pipe(&broker, input_topic, &[&pipe_out], &input, producers);
    let two_output_pipe = plain_pipe(
        &broker,
        input_topic,
        &[&two_out, &two_changelog],
        &input,
        producers,
    );
    let word_count = setup.run_until_processed(&broker, input.records);
    let counts_exact = counts_match(
        &broker,
        &setup.options.output_topic,
        &input.expected_counts(),
        Duration::from_secs(600),
    );
    Throughput {
        input,
        partitions,
        storage,
        cpus: cpus.map(str::to_string),
        produce,
        pipe,
        two_output_pipe,
        word_count,
        counts_exact,
    }
}

/// Restore and restart of a word count that counted `keys` keys once each (sqlite storage:
/// restore reads the changelog's end offsets, which memory:// gets wrong).
#[derive(Debug, Clone)]
pub struct Recovery {
    pub keys: u64,
    pub partitions: i32,
    pub storage: Storage,
    pub first_run: AppRun,
    pub changelog_records: u64,
    pub plain_read: Figure,
    /// Restart on the same state dir: start to ready.
    pub same_dir: AppRun,
    /// Restart on an empty state dir: start to ready, the whole changelog restored.
    pub empty_dir: AppRun,
    pub counts_exact: bool,
}

impl Recovery {
    pub fn restore_rate(&self) -> f64 {
        self.empty_dir.restored_records as f64 / self.empty_dir.ready_seconds.max(1e-9)
    }
}

/// Counts `keys` keys once each, reads their changelog with a plain consumer, then restarts
/// the word count on the same state dir and on an empty one, on a fresh broker with `storage`.
pub fn recovery(keys: u64, partitions: i32, storage: Storage) -> Recovery {
    let broker = Broker::start_with(free_port(), storage, None);
    let state = tempfile::tempdir().unwrap();
    let mut setup = AppSetup::fresh(&broker, state.path(), partitions);
    let input = Input {
        records: keys,
        keys,
        distribution: KeyDistribution::Sequential,
    };
    produce_input(&broker, &setup.options.input_topic, &input);
    let first_run = setup.run_until_processed(&broker, keys);
    let counts_exact = counts_match(
        &broker,
        &setup.options.output_topic,
        &input.expected_counts(),
        Duration::from_secs(600),
    );
    let changelog = setup.changelog();
    let changelog_records = broker.record_count(&changelog) as u64;
    let plain_read = Figure::timed(changelog_records, || {
        read_records(&broker, &changelog, partitions, changelog_records, |_| {})
    });
    // Restarted, it processes nothing new: "processed 0" is reached once every task runs.
    let same_dir = setup.run_until_processed(&broker, 0);
    setup.options.state_dir = state.path().join("empty");
    let empty_dir = setup.run_until_processed(&broker, 0);
    Recovery {
        keys,
        partitions,
        storage,
        first_run,
        changelog_records,
        plain_read,
        same_dir,
        empty_dir,
        counts_exact,
    }
}

/// A restore of partition 0 while the instance's other tasks process input (sqlite storage):
/// partition 0's changelog holds `changelog_records` records of other keys (the instance lost
/// its volume), and `input` is on every input partition. The other tasks' rate during the
/// restore is set against the same input on an instance with nothing to restore.
#[derive(Debug, Clone)]
pub struct RestoreBeside {
    pub changelog_records: u64,
    pub input: Input,
    pub partitions: i32,
    /// 0_0's restore, from the start of its restore to its running.
    pub restore_seconds: f64,
    /// Input records the other tasks processed during the restore.
    pub others_during_restore: u64,
    /// The other tasks' input rate (records/s) on an instance with nothing to restore, once
    /// ready (every task's input: the same tasks' share is the comparable figure).
    pub alone_rate: f64,
    pub counts_exact: bool,
}

impl RestoreBeside {
    /// The other tasks' rate during the restore (records/s).
    pub fn during_rate(&self) -> f64 {
        self.others_during_restore as f64 / self.restore_seconds.max(1e-9)
    }

    /// The other tasks' share of the alone rate (all tasks but one).
    pub fn others_alone_rate(&self) -> f64 {
        self.alone_rate * (self.partitions - 1) as f64 / self.partitions as f64
    }
}

pub fn restore_beside(changelog_records: u64, input: Input, partitions: i32) -> RestoreBeside {
    let broker = Broker::start();
    let alone_state = tempfile::tempdir().unwrap();
    let alone = AppSetup::fresh(&broker, alone_state.path(), partitions);
    produce_input(&broker, &alone.options.input_topic, &input);
    let alone_run = alone.run_until_processed(&broker, input.records);
    let alone_rate =
        input.records as f64 / (alone_run.processed.seconds - alone_run.ready_seconds).max(1e-9);

    let state = tempfile::tempdir().unwrap();
    let setup = AppSetup::fresh(&broker, state.path(), partitions);
    let changelog = setup.changelog();
    broker.create_topic_with(&changelog, partitions, &[("cleanup.policy", "compact")]);
    broker.produce(
        &changelog,
        (0..changelog_records).map(|n| {
            (
                Some(format!("restored-{n}").into_bytes()),
                Some(1i64.to_be_bytes().to_vec()),
                Some(0),
            )
        }),
    );
    produce_input(&broker, &setup.options.input_topic, &input);
    let mut app = App::spawn_with_metrics_port(&broker.address(), &setup.options, free_port());
    let others_processed = |view: &crate::InstanceView| -> i64 {
        records_through(view.tasks.iter().filter(|t| t.task_id != "0_0"))
    };
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut began: Option<(Instant, i64)> = None;
    let (restore_seconds, others_during_restore) = loop {
        assert!(
            Instant::now() < deadline && app.is_running(),
            "0_0 did not restore; log:\n{}",
            app.log()
        );
        if let Some(view) = app.view() {
            let state = view
                .tasks
                .iter()
                .find(|t| t.task_id == "0_0")
                .map(|t| t.state);
            match (state, began) {
                (Some(kstreams_engine::TaskPhase::Restoring), None) => {
                    began = Some((Instant::now(), others_processed(&view)));
                }
                (Some(kstreams_engine::TaskPhase::Running), Some((at, before))) => {
                    let during = (others_processed(&view) - before).max(0) as u64;
                    break (at.elapsed().as_secs_f64(), during);
                }
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let counts_exact = counts_match(
        &broker,
        &setup.options.output_topic,
        &input.expected_counts(),
        Duration::from_secs(600),
    );
    app.terminate(Duration::from_secs(120));
    RestoreBeside {
        changelog_records,
        input,
        partitions,
        restore_seconds,
        others_during_restore,
        alone_rate,
        counts_exact,
    }
}

/// End-to-end latency at a fixed input rate: from the producer's record timestamp to the
/// count arriving at a consumer of the output topic (the output record keeps the input
/// record's timestamp). The record cache is off (`--cache-max-bytes 0`): with it, counts wait
/// for the commit (`--commit-interval-ms`) by design.
#[derive(Debug, Clone)]
pub struct Latency {
    pub rate: u64,
    pub records: u64,
    pub partitions: i32,
    pub storage: Storage,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The consumers' fetch wait in the latency run (see [`latency`]).
const LATENCY_FETCH_WAIT: (&str, &str) = ("fetch.wait.max.ms", "10");

pub fn latency(rate: u64, seconds: u64, partitions: i32, storage: Storage) -> Latency {
    let broker = Broker::start_with(free_port(), storage, None);
    let state = tempfile::tempdir().unwrap();
    let mut setup = AppSetup::fresh(&broker, state.path(), partitions);
    // Every update sent as it happens: the record cache would hold counts until the commit.
    // tansu answers a fetch only when fetch.wait.max.ms (500 ms by default) is up, where
    // Kafka answers as soon as records are there: 10 ms keeps that wait out of the figure.
    setup.options.extra_args.extend([
        "--cache-max-bytes".to_string(),
        "0".to_string(),
        format!("-X{}={}", LATENCY_FETCH_WAIT.0, LATENCY_FETCH_WAIT.1),
    ]);
    let app = App::spawn_with_metrics_port(&broker.address(), &setup.options, free_port());
    crate::wait_until("the word count to run every task", STEP_TIMEOUT, || {
        app.metric("kstreams_tasks_running", &[]).unwrap_or(0.0) >= partitions as f64
    });
    let records = rate * seconds;
    let consumer = reader(
        &broker,
        &setup.options.output_topic,
        partitions,
        &[LATENCY_FETCH_WAIT],
    );
    let collector = std::thread::spawn(move || {
        let mut latencies = Vec::with_capacity(records as usize);
        let deadline = Instant::now() + Duration::from_secs(seconds + 120);
        while (latencies.len() as u64) < records && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let now = now_ms();
                if let Some(sent) = m.timestamp().to_millis() {
                    latencies.push((now - sent).max(0) as f64);
                }
            }
        }
        latencies
    });
    let producer = producer(&broker);
    let started = Instant::now();
    let input = Input {
        records,
        keys: 10_000,
        distribution: KeyDistribution::Uniform,
    };
    for (i, key) in input.key_indexes().enumerate() {
        // Paced: record i leaves at i / rate seconds.
        let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        send(
            &producer,
            &setup.options.input_topic,
            format!("key-{key}").as_bytes(),
            b"1",
        );
    }
    producer.flush(STEP_TIMEOUT).unwrap();
    let mut latencies = collector.join().unwrap();
    assert_eq!(latencies.len() as u64, records, "every count arrived");
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    Latency {
        rate,
        records,
        partitions,
        storage,
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Every table of one benchmark run, as Markdown.
#[derive(Debug, Default)]
pub struct Report {
    pub throughput: Vec<Throughput>,
    pub recovery: Vec<Recovery>,
    pub latency: Vec<Latency>,
    pub restore_beside: Vec<RestoreBeside>,
    pub failover: Vec<FailoverRun>,
    pub queries: Vec<crate::query_bench::QueryLatency>,
}

fn mib(bytes: u64) -> String {
    format!("{:.0}", bytes as f64 / (1 << 20) as f64)
}

impl Report {
    pub fn all_counts_exact(&self) -> bool {
        self.throughput.iter().all(|t| t.counts_exact)
            && self.recovery.iter().all(|r| r.counts_exact)
            && self.restore_beside.iter().all(|r| r.counts_exact)
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        if !self.failover.is_empty() {
            out += "### Failover with standby replicas (three instances at the defaults, 4 partitions; the instance running the most tasks SIGKILLed once every standby caught up; counts checked exact after a second round)\n\n";
            out += "| broker storage | standby replicas | keys | changelog records | standbys held | records standbys applied | state on disk, 3 instances MiB | SIGKILL to every task running s | moved tasks restoring nothing | records the moved tasks restored | each moved task running after s | survivors' CPU s |\n";
            out += "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---:|\n";
            for f in &self.failover {
                let after: Vec<String> = f
                    .moved
                    .iter()
                    .map(|m| format!("{} {:.1}", m.task, m.running_after.as_secs_f64()))
                    .collect();
                out += &format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {:.1} | {} of {} | {} | {} | {:.1} |\n",
                    f.storage.name(),
                    f.replicas,
                    f.keys,
                    f.changelog_records,
                    f.standbys,
                    f.standby_records,
                    mib(f.state_bytes),
                    f.all_running_after.as_secs_f64(),
                    f.warm(),
                    f.moved.len(),
                    f.moved.iter().map(|m| m.restored).sum::<u64>(),
                    after.join(", "),
                    f.survivors_cpu_seconds,
                );
            }
            out += "\n";
        }
        if !self.throughput.is_empty() {
            out += "### End-to-end throughput (records/s. Word count: the kstreams-count process with default settings, from its start, group join included, to its clean stop after the last record, final commit included. Records sent: output and changelog records in all; the record cache sends one per key per commit)\n\n";
            out += "| input | partitions | broker storage | cpus | produce (broker reached) | ceiling: plain pipe | word count in | word count out | start to ready s | word count in, once ready | records sent (output / changelog) | word count / ceiling | pipe writing 2 per input | word count / that pipe | word count CPU, core-µs per record | peak RSS MiB | of which RocksDB at most (blocks + memtables) MiB | counts exact |\n";
            out += "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|\n";
            for t in &self.throughput {
                let wc = &t.word_count;
                out += &format!(
                    "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.0} | {} / {} | {:.2} | {:.0} | {:.2} | {:.2} | {} | {} | {} |\n",
                    t.input.describe(),
                    t.partitions,
                    t.storage.name(),
                    t.cpus.as_deref().unwrap_or("all"),
                    t.produce.rate(),
                    t.pipe.rate(),
                    wc.committed.rate(),
                    wc.output_records as f64 / wc.committed.seconds.max(1e-9),
                    wc.ready_seconds,
                    wc.committed.records as f64
                        / (wc.committed.seconds - wc.ready_seconds).max(1e-9),
                    wc.output_records,
                    wc.changelog_records,
                    t.ratio(),
                    t.two_output_pipe.rate(),
                    t.two_output_ratio(),
                    wc.cpu_seconds * 1e6 / wc.committed.records.max(1) as f64,
                    mib(wc.peak_rss_bytes),
                    mib(wc.peak_rocksdb_bytes),
                    t.counts_exact,
                );
            }
            out += "\n";
        }
        if !self.recovery.is_empty() {
            out += "### Recovery (every key counted once, so the changelog holds one record per key)\n\n";
            out += "| keys | partitions | broker storage | changelog records | plain read records/s | restore: records | restore: start to ready s | restore records/s | restore / plain read | clean restart, same dir: restored | clean restart: start to ready s | peak RSS MiB (first run / restore) | counts exact |\n";
            out += "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n";
            for r in &self.recovery {
                out += &format!(
                    "| {} | {} | {} | {} | {:.0} | {} | {:.2} | {:.0} | {:.2} | {} | {:.2} | {} / {} | {} |\n",
                    r.keys,
                    r.partitions,
                    r.storage.name(),
                    r.changelog_records,
                    r.plain_read.rate(),
                    r.empty_dir.restored_records,
                    r.empty_dir.ready_seconds,
                    r.restore_rate(),
                    r.restore_rate() / r.plain_read.rate(),
                    r.same_dir.restored_records,
                    r.same_dir.ready_seconds,
                    mib(r.first_run.peak_rss_bytes),
                    mib(r.empty_dir.peak_rss_bytes),
                    r.counts_exact,
                );
            }
            out += "\n";
        }
        if !self.restore_beside.is_empty() {
            out += "### A restore beside processing (sqlite storage; partition 0 restores its whole changelog while the other tasks process their input)\n\n";
            out += "| changelog records (partition 0) | input | partitions | restore s | restore records/s | other tasks during the restore, records/s | other tasks, nothing restoring, records/s | during / nothing restoring | counts exact |\n";
            out += "|---:|---|---:|---:|---:|---:|---:|---:|---|\n";
            for r in &self.restore_beside {
                out += &format!(
                    "| {} | {} | {} | {:.1} | {:.0} | {:.0} | {:.0} | {:.2} | {} |\n",
                    r.changelog_records,
                    r.input.describe(),
                    r.partitions,
                    r.restore_seconds,
                    r.changelog_records as f64 / r.restore_seconds.max(1e-9),
                    r.during_rate(),
                    r.others_alone_rate(),
                    r.during_rate() / r.others_alone_rate().max(1e-9),
                    r.counts_exact,
                );
            }
            out += "\n";
        }
        if !self.latency.is_empty() {
            out += "### End-to-end latency at a fixed input rate (producer timestamp to the count at a consumer; record cache off, --cache-max-bytes 0)\n\n";
            out += "| input rate records/s | records | partitions | broker storage | p50 ms | p99 ms | max ms |\n";
            out += "|---:|---:|---:|---|---:|---:|---:|\n";
            for l in &self.latency {
                out += &format!(
                    "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} |\n",
                    l.rate,
                    l.records,
                    l.partitions,
                    l.storage.name(),
                    l.p50_ms,
                    l.p99_ms,
                    l.max_ms
                );
            }
            out += "\n";
        }
        if !self.queries.is_empty() {
            out += &crate::query_bench::markdown(&self.queries);
        }
        out
    }
}

/// Parses `BENCH_*` list settings such as `4,16`.
pub fn parse_list(value: &str) -> Vec<u64> {
    value
        .split(',')
        .filter_map(|v| v.trim().replace('_', "").parse().ok())
        .collect()
}

/// The failover with `replicas` standby replicas over `keys` keys, on a fresh broker with
/// `storage` at the product's defaults (see [`failover`]).
pub fn failover_with_standbys(replicas: usize, keys: usize, storage: Storage) -> FailoverRun {
    let root = tempfile::tempdir().unwrap();
    let broker = Broker::start_with(free_port(), storage, None);
    let setup = AppSetup::fresh(&broker, root.path(), 4);
    failover(
        &broker,
        &setup.options,
        root.path(),
        replicas,
        keys,
        STEP_TIMEOUT,
    )
}
