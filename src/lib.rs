//! Test and benchmark support: a local tansu broker per test on a free port, the
//! `kstreams-count` binary as a child process, and topic / record / metrics helpers.

pub mod bench;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use tempfile::TempDir;

pub use kstreams_engine::status::InstanceView;

/// A record as read back: key and value bytes.
pub type ReadRecord = (Option<Vec<u8>>, Option<Vec<u8>>);

/// A raw record to produce: key, value, and an explicit partition if wanted.
pub type RawRecord = (Option<Vec<u8>>, Option<Vec<u8>>, Option<i32>);

/// A name no other test uses: `<prefix>-<random>`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `condition` every 100 ms until it holds: how long that took, or `None` once
/// `timeout` has passed without it.
pub fn poll_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if condition() {
            return Some(started.elapsed());
        }
        if started.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `condition` every 100 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, condition: impl FnMut() -> bool) {
    assert!(
        poll_until(timeout, condition).is_some(),
        "timed out after {timeout:?} waiting for {what}"
    );
}

/// The tansu binary: `$TANSU_BIN`, else the one `scripts/install-deps.sh` built last (with
/// the patches in `third_party/tansu/`).
pub fn tansu_bin() -> PathBuf {
    let path = std::env::var_os("TANSU_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/kstreams/tansu-current/bin/tansu")
        });
    assert!(
        path.is_file(),
        "tansu broker not found at {} (run scripts/install-deps.sh or set TANSU_BIN)",
        path.display()
    );
    path
}

/// The `kstreams-count` binary: `$KSTREAMS_COUNT_BIN`, else beside this test's target dir.
pub fn app_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("KSTREAMS_COUNT_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let path = profile_dir.join("kstreams-count");
    assert!(
        path.is_file(),
        "{} not found: build it first (cargo build -p kstreams-count) or set KSTREAMS_COUNT_BIN",
        path.display()
    );
    path
}

/// A command for `program`, run under `taskset -c <cpus>` when `cpus` is given.
fn pinned_command(program: PathBuf, cpus: Option<&str>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut taskset = Command::new("taskset");
            taskset.args(["-c", cpus]).arg(program);
            taskset
        }
        None => Command::new(program),
    }
}

/// Where a tansu broker keeps its records (see ../shared/broker.md for what each can do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// sqlite:// in the broker's temp dir: everything the tests need (resume, watermarks).
    Sqlite,
    /// memory://: much faster, but only for reading sequentially from offset 0 without
    /// resuming; its high watermarks are wrong (no lag, restore or record counts on it).
    Memory,
}

impl Storage {
    pub fn url(self) -> &'static str {
        match self {
            Storage::Sqlite => "sqlite://tansu.db",
            Storage::Memory => "memory://tansu/",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Storage::Sqlite => "sqlite",
            Storage::Memory => "memory",
        }
    }

    /// Client settings a consumer needs to be fast against this storage: memory:// answers
    /// a fetch only after `fetch.wait.max.ms`, even when records are ready.
    pub fn client_overrides(self) -> Vec<(String, String)> {
        match self {
            Storage::Sqlite => vec![],
            Storage::Memory => [
                ("fetch.wait.max.ms", "10"),
                ("fetch.queue.backoff.ms", "10"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        }
    }
}

/// Reports that (part of) the running test is skipped for a limit of the local broker. The line
/// goes to the test's output and, where `KSTREAMS_SKIPPED_LOG` names a file, is appended to it:
/// `scripts/test.sh` lists every skip at the end of the suite, since libtest shows a passing
/// test's output to no one.
pub fn skip_for_broker_limit(what: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_owned();
    let line = format!("SKIPPED {what} [{test}]");
    eprintln!("{line}");
    if let Ok(path) = std::env::var("KSTREAMS_SKIPPED_LOG") {
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(file, "{line}");
        }
    }
}

/// What tansu's group coordinator logged for one group (see [`Broker::group_events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEvents {
    /// Lines naming a new leader (`member_id=".." group_id=".." __self.generation_id=..`).
    pub leader_elections: usize,
    /// The member id the last of them named.
    pub leader: Option<String>,
    /// Members whose session ran out, in order (`missed heartbeat for [leader] <member> for
    /// <group> in generation ..`).
    pub expired: Vec<String>,
}

impl GroupEvents {
    /// Reads them from tansu 0.6.0's log text (written without colours: `NO_COLOR`).
    pub fn from_log(log: &str, group: &str) -> Self {
        let group_field = format!("group_id=\"{group}\"");
        let expiry_end = format!(" for {group} in generation");
        let elections: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&group_field) && l.contains("generation_id="))
            .collect();
        GroupEvents {
            leader_elections: elections.len(),
            leader: elections
                .last()
                .and_then(|l| l.split("member_id=\"").nth(1)?.split('"').next())
                .map(str::to_owned),
            expired: log
                .lines()
                .filter_map(|l| {
                    let rest = l.split("missed heartbeat for ").nth(1)?;
                    let member = rest.split(expiry_end.as_str()).next()?;
                    (member.len() < rest.len())
                        .then(|| member.trim_start_matches("leader ").to_owned())
                })
                .collect(),
        }
    }
}

/// A tansu broker with its storage in its own temp dir; killed on drop.
pub struct Broker {
    pub port: u16,
    pub storage: Storage,
    child: Child,
    dir: TempDir,
}

impl Broker {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, Storage::Sqlite, None)
    }

    /// A broker with the given storage; `cpus` (a `taskset` list such as `8-15`) pins it.
    pub fn start_with(port: u16, storage: Storage, cpus: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("broker.log")).unwrap();
        let child = pinned_command(tansu_bin(), cpus)
            .current_dir(dir.path())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", storage.url()])
            // tansu logs only errors by default; its group coordinator's info lines (members
            // joining, missed heartbeats) are what explain a stuck rebalance in a failed test.
            .env(
                "RUST_LOG",
                std::env::var("TANSU_LOG")
                    .unwrap_or_else(|_| "warn,tansu_broker::coordinator=info".into()),
            )
            // Plain text, so the tests can read the group's events from it.
            .env("NO_COLOR", "1")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        let broker = Broker {
            port,
            storage,
            child,
            dir,
        };
        wait_until(
            "the broker to accept connections",
            Duration::from_secs(20),
            || TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        broker
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.address());
        config
    }

    fn admin(&self) -> AdminClient<DefaultClientContext> {
        self.client().create().unwrap()
    }

    pub fn create_topic(&self, name: &str, partitions: i32) {
        self.create_topic_with(name, partitions, &[]);
    }

    /// Creates a topic with topic-level configs, e.g. `("cleanup.policy", "compact")`.
    pub fn create_topic_with(&self, name: &str, partitions: i32, configs: &[(&str, &str)]) {
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        for (key, value) in configs {
            topic = topic.set(key, value);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let results = runtime
            .block_on(self.admin().create_topics([&topic], &AdminOptions::new()))
            .unwrap();
        for result in results {
            result.unwrap_or_else(|(name, code)| panic!("create topic {name}: {code}"));
        }
    }

    /// Partition count, or `None` if the topic does not exist.
    pub fn partitions(&self, topic: &str) -> Option<usize> {
        let consumer: BaseConsumer = self.client().create().unwrap();
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().len())
    }

    /// One config value of a topic, as the broker describes it.
    pub fn topic_config(&self, topic: &str, key: &str) -> Option<String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let results = runtime
            .block_on(
                self.admin()
                    .describe_configs([&ResourceSpecifier::Topic(topic)], &AdminOptions::new()),
            )
            .unwrap();
        results
            .into_iter()
            .flatten()
            .find_map(|resource| resource.get(key).and_then(|e| e.value.clone()))
    }

    /// Produces records (idempotent, lz4) and waits until all are acknowledged.
    pub fn produce(&self, topic: &str, records: impl IntoIterator<Item = RawRecord>) {
        let producer: ThreadedProducer<DefaultProducerContext> = self
            .client()
            .set("enable.idempotence", "true")
            .set("compression.type", "lz4")
            .set("linger.ms", "10")
            .create()
            .unwrap();
        for (key, value, partition) in records {
            let mut record = BaseRecord::<[u8], [u8]>::to(topic);
            record.key = key.as_deref();
            record.payload = value.as_deref();
            record.partition = partition;
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((
                        KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                        r,
                    )) => {
                        producer.poll(Duration::from_millis(10));
                        record = r;
                    }
                    Err((e, _)) => panic!("produce: {e}"),
                }
            }
        }
        producer.flush(Duration::from_secs(60)).unwrap();
    }

    /// Produces `key:value` style string records, partitioned by key.
    pub fn produce_strings<'a>(
        &self,
        topic: &str,
        records: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        self.produce(
            topic,
            records.into_iter().map(|(k, v)| {
                (
                    Some(k.as_bytes().to_vec()),
                    Some(v.as_bytes().to_vec()),
                    None,
                )
            }),
        )
    }

    /// The last `lines` lines the broker logged (its coordinator at info level by default,
    /// `TANSU_LOG` overrides the filter), for a failure message.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The broker's log (plain text: the broker runs with `NO_COLOR`).
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    /// What tansu's group coordinator has logged for `group` so far. tansu 0.6.0 answers
    /// DescribeGroups with an error on sqlite storage, so its log is the only view of the
    /// group it offers.
    pub fn group_events(&self, group: &str) -> GroupEvents {
        GroupEvents::from_log(&self.log(), group)
    }

    /// High watermark of every partition of a topic, by partition.
    pub fn end_offsets(&self, topic: &str) -> Vec<i64> {
        let consumer: BaseConsumer = self.client().create().unwrap();
        (0..self.partitions(topic).unwrap_or(0) as i32)
            .map(|p| {
                consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .unwrap()
                    .1
            })
            .collect()
    }

    /// Total records in a topic (high minus low watermark, summed over partitions).
    pub fn record_count(&self, topic: &str) -> i64 {
        let consumer: BaseConsumer = self.client().create().unwrap();
        (0..self.partitions(topic).unwrap_or(0) as i32)
            .map(|p| {
                let (low, high) = consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .unwrap();
                high - low
            })
            .sum()
    }

    /// Every record of a topic as it is now: (key, value) pairs in partition order.
    pub fn read_all(&self, topic: &str) -> Vec<ReadRecord> {
        let consumer: BaseConsumer = self
            .client()
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            // tansu (sqlite) answers a fetch in time proportional to the records it returns
            // and the records after them; small fetches keep each answer quick.
            .set("max.partition.fetch.bytes", "65536")
            .create()
            .unwrap();
        let partitions = self.partitions(topic).unwrap_or(0) as i32;
        let mut remaining = HashMap::new();
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap();
            if high > low {
                remaining.insert(p, high);
                assignment
                    .add_partition_offset(topic, p, Offset::Offset(low))
                    .unwrap();
            }
        }
        let mut records = Vec::new();
        if remaining.is_empty() {
            return records;
        }
        consumer.assign(&assignment).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = HashMap::new();
        while !remaining.is_empty() {
            assert!(
                Instant::now() < deadline,
                "reading {topic} did not reach its end: {remaining:?} left (last offsets read: {last:?})"
            );
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    last.insert(m.partition(), m.offset());
                    records.push((m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec)));
                    if remaining
                        .get(&m.partition())
                        .is_some_and(|high| m.offset() + 1 >= *high)
                    {
                        remaining.remove(&m.partition());
                    }
                }
                // The broker says this is the end (offsets below the high watermark may be
                // unreadable, e.g. batches of a producer killed mid-write).
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    remaining.remove(&p);
                }
                _ => {}
            }
        }
        records
    }

    /// The last value per key of a string topic.
    pub fn latest_values(&self, topic: &str) -> HashMap<String, String> {
        let text = |b: Option<Vec<u8>>| String::from_utf8(b.unwrap_or_default()).unwrap();
        self.read_all(topic)
            .into_iter()
            .map(|(k, v)| (text(k), text(v)))
            .collect()
    }

    /// Waits until the last count per key on `topic` equals `expected`; returns the mismatches
    /// of the last read if it never does.
    pub fn wait_for_counts(
        &self,
        topic: &str,
        expected: &HashMap<String, u64>,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let actual = self.latest_values(topic);
            let wrong: Vec<String> = expected
                .iter()
                .filter(|(k, n)| actual.get(*k) != Some(&n.to_string()))
                .map(|(k, n)| format!("{k}: expected {n}, got {:?}", actual.get(k)))
                .chain(
                    actual
                        .keys()
                        .filter(|k| !expected.contains_key(*k))
                        .map(|k| format!("{k}: unexpected key")),
                )
                .collect();
            if wrong.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} keys wrong, e.g. {:?}",
                    wrong.len(),
                    &wrong[..wrong.len().min(5)]
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // `TANSU_LOG_KEEP=<dir>` keeps every broker's whole log for a post-mortem.
        if let Ok(keep) = std::env::var("TANSU_LOG_KEEP") {
            let _ = std::fs::copy(
                self.dir.path().join("broker.log"),
                Path::new(&keep).join(format!("broker-{}.log", self.port)),
            );
        }
    }
}

/// How to run one `kstreams-count` instance.
#[derive(Debug, Clone)]
pub struct AppOptions {
    pub application_id: String,
    pub input_topic: String,
    pub output_topic: String,
    pub state_dir: PathBuf,
    pub extra_args: Vec<String>,
    /// Tests commit often (500 ms); benchmarks use the product's default.
    pub commit_interval_ms: u64,
    /// Most tests use 6 s to see a dead member go sooner; `None`: the product's default (10 s),
    /// which the group tests (`tests/group_membership.rs`) run with.
    pub session_timeout_ms: Option<u64>,
    /// `taskset` CPU list to pin the process to (benchmarks), e.g. `0-3`.
    pub cpus: Option<String>,
    /// Extra environment, e.g. `FAILPOINTS` for fault injection.
    pub env: Vec<(String, String)>,
}

impl AppOptions {
    /// A fresh application: random application id and topic names, state in `state_root/state`.
    pub fn fresh(state_root: &Path) -> Self {
        AppOptions {
            application_id: unique("counts-app"),
            input_topic: unique("input-topic"),
            output_topic: unique("counts-topic"),
            state_dir: state_root.join("state"),
            extra_args: vec![],
            commit_interval_ms: 500,
            session_timeout_ms: Some(6000),
            cpus: None,
            env: vec![],
        }
    }
}

/// A fresh broker and application, with the application's input and output topics created
/// (4 partitions each).
pub fn broker_and_app(state_root: &Path) -> (Broker, AppOptions) {
    let broker = Broker::start();
    let options = AppOptions::fresh(state_root);
    broker.create_topic(&options.input_topic, 4);
    broker.create_topic(&options.output_topic, 4);
    (broker, options)
}

/// Starts an instance after another one of the same application crashed (SIGKILL or abort,
/// no leaving the group) and waits until it runs `tasks` tasks: the crashed member's session
/// must run out first. Fails after `timeout` with the instance's log and the broker's.
pub fn restart_after_crash(
    broker: &Broker,
    options: &AppOptions,
    tasks: usize,
    timeout: Duration,
) -> App {
    let restarted = App::spawn(&broker.address(), options);
    let running = || {
        restarted
            .metric("kstreams_tasks_running", &[])
            .unwrap_or(0.0)
            >= tasks as f64
    };
    if poll_until(timeout, running).is_none() {
        panic!(
            "the restarted instance got no tasks within {timeout:?}; log:\n{}\nthe broker's \
             log:\n{}",
            restarted.log(),
            broker.log_tail(200)
        );
    }
    restarted
}

/// A running `kstreams-count` process with its log in a file; killed on drop.
pub struct App {
    child: Child,
    pub metrics_port: u16,
    log_path: PathBuf,
    _log_dir: TempDir,
}

impl App {
    pub fn spawn(broker: &str, options: &AppOptions) -> Self {
        Self::spawn_with_metrics_port(broker, options, free_port())
    }

    /// Like [`App::spawn`], serving metrics on a port chosen beforehand (e.g. a scrape target).
    pub fn spawn_with_metrics_port(broker: &str, options: &AppOptions, metrics_port: u16) -> Self {
        let log_dir = tempfile::tempdir().unwrap();
        let log_path = log_dir.path().join("app.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = pinned_command(app_bin(), options.cpus.as_deref())
            .env_remove("KAFKA_BROKER")
            .env("RUST_LOG", "info")
            .args([
                "--broker",
                broker,
                "--application-id",
                &options.application_id,
            ])
            .args([
                "--input-topic",
                &options.input_topic,
                "--output-topic",
                &options.output_topic,
            ])
            .arg("--state-dir")
            .arg(&options.state_dir)
            .args([
                "--commit-interval-ms",
                &options.commit_interval_ms.to_string(),
            ])
            .args(
                options
                    .session_timeout_ms
                    .iter()
                    .flat_map(|ms| ["--session-timeout-ms".to_string(), ms.to_string()]),
            )
            .args(["--metrics-address", &format!("127.0.0.1:{metrics_port}")])
            .args(&options.extra_args)
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start kstreams-count");
        App {
            child,
            metrics_port,
            log_path,
            _log_dir: log_dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `GET path` on the metrics port: (status code, body).
    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.metrics_port, path)
    }

    /// `/status` as JSON.
    pub fn status(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.http_get("/status")?.1).ok()
    }

    /// `/status`, typed.
    pub fn view(&self) -> Option<InstanceView> {
        serde_json::from_str(&self.http_get("/status")?.1).ok()
    }

    /// `(task id, state)` of every task in `/status`.
    pub fn tasks(&self) -> Option<Vec<(String, String)>> {
        let status = self.status()?;
        let field =
            |t: &serde_json::Value, name: &str| t[name].as_str().unwrap_or_default().to_string();
        Some(
            status["tasks"]
                .as_array()?
                .iter()
                .map(|t| (field(t, "task_id"), field(t, "state")))
                .collect(),
        )
    }

    /// Sum of every series of a metric whose labels contain all of `label_filters`.
    pub fn metric(&self, name: &str, label_filters: &[&str]) -> Option<f64> {
        let (_, body) = self.http_get("/metrics")?;
        Some(metric_sum(&body, name, label_filters))
    }

    pub fn is_ready(&self) -> bool {
        matches!(self.http_get("/health/ready"), Some((200, _)))
    }

    /// Waits for readiness, failing early (with the log) if the process exits.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.is_ready() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "kstreams-count exited ({status}) before ready; log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "not ready after {timeout:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.wait_exit(timeout).unwrap_or_else(|| {
            panic!(
                "no exit within {timeout:?} of SIGTERM; log:\n{}",
                self.log()
            )
        })
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, as a crash or an OOM kill would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on a loopback port over HTTP/1.0: (status code, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// A real Prometheus server (Debian's `prometheus`) scraping loopback targets every second.
pub struct Prometheus {
    pub port: u16,
    child: Child,
    _dir: TempDir,
}

impl Prometheus {
    pub fn start(target_ports: &[u16]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let targets: Vec<String> = target_ports
            .iter()
            .map(|p| format!("'127.0.0.1:{p}'"))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: kstreams\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let binary = std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".into());
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(&binary)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start {binary} (apt-get install prometheus, or set PROMETHEUS_BIN): {e}")
            });
        let prometheus = Prometheus {
            port,
            child,
            _dir: dir,
        };
        wait_until("Prometheus to be ready", Duration::from_secs(30), || {
            matches!(http_get(port, "/-/ready"), Some((200, _)))
        });
        prometheus
    }

    /// The value of an instant query returning one sample, if it returns one.
    pub fn query(&self, expression: &str) -> Option<f64> {
        let encoded: String = expression
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (status, body) = http_get(self.port, &format!("/api/v1/query?query={encoded}"))?;
        if status != 200 {
            return None;
        }
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        json["data"]["result"].as_array()?.first()?["value"][1]
            .as_str()?
            .parse()
            .ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sums a metric's series in Prometheus text format, keeping series whose label text contains
/// every filter (e.g. `reason="null_key"`).
pub fn metric_sum(text: &str, name: &str, label_filters: &[&str]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, labels) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && label_filters.iter().all(|f| labels.contains(f)))
                .then(|| value.parse::<f64>().ok())?
        })
        .fold(0.0, |total, value| total + value)
}

/// `count` records over `keys` keys (`key-<n>`), with the expected count per key.
pub fn word_count_input(
    count: usize,
    keys: usize,
) -> (Vec<(String, String)>, HashMap<String, u64>) {
    let mut expected: HashMap<String, u64> = HashMap::new();
    let records = (0..count)
        .map(|i| {
            let key = format!("key-{}", (i * 7919) % keys);
            *expected.entry(key.clone()).or_default() += 1;
            (key, format!("value-{i}"))
        })
        .collect();
    (records, expected)
}

/// The counts in every task's `store` under `<state_dir>/<application_id>/` (read-only; the
/// instance must be stopped), summed over tasks.
pub fn read_store_counts(
    state_dir: &Path,
    application_id: &str,
    store: &str,
) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    let app_dir = state_dir.join(application_id);
    for entry in std::fs::read_dir(&app_dir).unwrap().map(Result::unwrap) {
        if !entry.path().is_dir() {
            continue;
        }
        let families = rocksdb::DB::list_cf(&rocksdb::Options::default(), entry.path()).unwrap();
        let db = rocksdb::DB::open_cf_for_read_only(
            &rocksdb::Options::default(),
            entry.path(),
            &families,
            false,
        )
        .unwrap();
        let cf = db.cf_handle(store).unwrap();
        for item in db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
            let (key, value) = item.unwrap();
            let (_, value) = kstreams_engine::offsets::decode_changelog_value(&value);
            let count = i64::from_be_bytes(value.try_into().unwrap()) as u64;
            *counts
                .entry(String::from_utf8(key.to_vec()).unwrap())
                .or_default() += count;
        }
    }
    counts
}

/// A producer thread writing `key-<n>` records at a steady rate until stopped; it knows the
/// exact count per key it got acknowledged.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<HashMap<String, u64>>>,
}

impl Load {
    /// Produces about `rate` records/s over `keys` keys to `topic`, in 20 ms batches.
    pub fn start(broker: &Broker, topic: &str, rate: u64, keys: u64) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let producer: ThreadedProducer<DefaultProducerContext> = broker
            .client()
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .unwrap();
        let (topic, flag) = (topic.to_string(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut expected: HashMap<String, u64> = HashMap::new();
            let started = Instant::now();
            let mut sent = 0u64;
            let mut rng = rand::rng();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
                while sent < due {
                    let key = format!("key-{}", rand::Rng::random_range(&mut rng, 0..keys));
                    let record = BaseRecord::to(&topic).key(&key).payload("1");
                    match producer.send(record) {
                        Ok(()) => {
                            *expected.entry(key).or_default() += 1;
                            sent += 1;
                        }
                        Err(_) => break, // queue full: next round
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            producer
                .flush(Duration::from_secs(30))
                .expect("every load record acknowledged");
            expected
        });
        Load {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops producing; returns the exact count per key produced.
    pub fn finish(mut self) -> HashMap<String, u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().expect("load thread")
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A span during which one instance owned a task, from its log (RFC 3339 UTC timestamps,
/// which sort as strings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    pub instance: String,
    pub task: String,
    pub from: String,
    /// `None`: still owned when the log ended.
    pub until: Option<String>,
}

/// The ownership spans in one instance's log: a task is owned from the assignment change
/// that adds it to the one that drops it, or until the instance leaves the group.
pub fn ownership_from_log(instance: &str, log: &str) -> Vec<Ownership> {
    let mut open: HashMap<String, String> = HashMap::new();
    let mut spans = Vec::new();
    for line in log.lines() {
        let Some(stamp) = line.split_whitespace().next() else {
            continue;
        };
        let owning: Option<Vec<String>> = if let Some(rest) = line.split("-> owning [").nth(1) {
            let list = rest.split(']').next().unwrap_or_default();
            Some(
                list.split(", ")
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .collect(),
            )
        } else if line.contains("left the group; all tasks closed") {
            Some(Vec::new())
        } else {
            None
        };
        let Some(owning) = owning else { continue };
        let owned_before: Vec<String> = open.keys().cloned().collect();
        for task in owned_before.iter().filter(|t| !owning.contains(t)) {
            let from = open.remove(task).unwrap();
            spans.push(Ownership {
                instance: instance.to_string(),
                task: task.clone(),
                from,
                until: Some(stamp.to_string()),
            });
        }
        for task in owning {
            open.entry(task).or_insert_with(|| stamp.to_string());
        }
    }
    spans.extend(open.into_iter().map(|(task, from)| Ownership {
        instance: instance.to_string(),
        task,
        from,
        until: None,
    }));
    spans
}

/// Pairs of spans of the same task, on different instances, that overlap in time.
pub fn ownership_overlaps(spans: &[Ownership]) -> Vec<(Ownership, Ownership)> {
    let mut overlaps = Vec::new();
    for (i, a) in spans.iter().enumerate() {
        for b in &spans[i + 1..] {
            let ends_after =
                |span: &Ownership, t: &str| span.until.as_deref().is_none_or(|u| u > t);
            if a.task == b.task
                && a.instance != b.instance
                && ends_after(a, &b.from)
                && ends_after(b, &a.from)
            {
                overlaps.push((a.clone(), b.clone()));
            }
        }
    }
    overlaps
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as tansu 0.6.0 writes them: a leader named, a leader dropped on a survivor's
    /// heartbeat, the survivor's member ids expiring, another group's lines in between.
    const TANSU_LOG: &str = "\
2026-11-26T04:05:33.311629Z  INFO tansu_broker::coordinator::group::administrator: 1865: member_id=\"g-consumer-b\" group_id=\"g\" __self.generation_id=1
2026-11-26T04:05:33.4Z  INFO tansu_broker::coordinator::group::administrator: 1865: member_id=\"other-consumer-x\" group_id=\"other\" __self.generation_id=1
2026-11-26T04:05:39.3Z  INFO tansu_broker::coordinator::group::administrator: 1386: missed heartbeat for g-consumer-b for g in generation: 1, after 6004ms
2026-11-26T04:05:42.3Z  INFO tansu_broker::coordinator::group::administrator: 1344: missed heartbeat for g-consumer-a for g in generation: 2, after 6007ms
2026-11-26T04:05:43.3Z  INFO tansu_broker::coordinator::group::administrator: 1337: missed heartbeat for leader other-consumer-x for other in generation: 1, after 6181ms
";

    #[test]
    fn group_events_are_read_from_tansus_log() {
        let events = GroupEvents::from_log(TANSU_LOG, "g");
        assert_eq!(
            events,
            GroupEvents {
                leader_elections: 1,
                leader: Some("g-consumer-b".into()),
                expired: vec!["g-consumer-b".into(), "g-consumer-a".into()],
            }
        );
        let other = GroupEvents::from_log(TANSU_LOG, "other");
        assert_eq!(other.leader_elections, 1);
        assert_eq!(other.expired, vec!["other-consumer-x".to_string()]);
    }
}
