//! `kstreams-count`: the Kafka Streams word count on the kstreams engine, plus console tools.
//!
//! Delivery guarantee: at-least-once output with exact state. Every key's count in the store
//! counts each input record once, also across restarts, because each task persists its input
//! offset in the same RocksDB batch as its counts and every changelog record names the input
//! offset it came from. Records on `counts-topic` may repeat after a crash, but the last value
//! written per key is always its exact count.

mod client_args;
mod console;
mod http_client;
mod local;
mod malloc_tuning;
mod query;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use client_args::ClientArgs;
use kstreams_engine::{
    word_count, ClientMemorySettings, ClientSettings, DeserializationErrorPolicy, GroupProtocol,
    KafkaStreams, ProcessingGuarantee, StoreMemorySettings, StreamsConfig,
};
use tracing::{error, info, warn};

#[derive(Parser, Debug)]
#[command(
    name = "kstreams-count",
    version,
    about = "Counts records per key, like the Kafka Streams word count",
    args_conflicts_with_subcommands = true,
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
    /// Log lines as `text` (the default), or `json`: one object per line with the event's
    /// fields (task, partition, offset where they apply), for Loki, ELK or Cloud Logging.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr at `RUST_LOG` (default `info`), as text (coloured on a terminal) or JSON.
fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the word count (the default when no subcommand is given).
    Run(RunArgs),
    /// Read `key:value` lines from stdin and produce them to a topic (the console producer).
    Produce(console::ProduceArgs),
    /// Print a topic's records as `key value` lines (the console consumer).
    Consume(console::ConsumeArgs),
    /// Create a topic if it does not exist.
    CreateTopic(console::CreateTopicArgs),
    /// Ask a running instance for a key's count (any instance answers for any key), or page
    /// through every key with --all.
    Query(query::QueryArgs),
    /// Run N instances locally (like the StatefulSet's pods) under a load generator, with a
    /// live view; add, stop, kill and restart instances while it runs.
    Local(local::LocalArgs),
    /// Start the application over on purpose, with every instance stopped: deletes its
    /// consumer group (committed offsets), its changelog topics and this machine's state
    /// directory; other instances wipe their local state when they next start. Takes the
    /// instances' own settings.
    Reset(RunArgs),
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Application id: consumer group, prefix of internal topics, state sub-directory.
    #[arg(long, env = "APPLICATION_ID", default_value = "counts-app")]
    application_id: String,
    /// Root of the state stores.
    #[arg(long, env = "STATE_DIR", default_value = "/data/count-store")]
    state_dir: PathBuf,
    /// Topic to read `key:value` records from.
    #[arg(long, env = "INPUT_TOPIC", default_value = "input-topic")]
    input_topic: String,
    /// Topic to write `key -> count` to.
    #[arg(long, env = "OUTPUT_TOPIC", default_value = "counts-topic")]
    output_topic: String,
    /// Name of the state store (and of its changelog topic).
    #[arg(long, env = "STORE_NAME", default_value = "count-store")]
    store_name: String,
    /// How often to flush, persist state and offsets, and commit (Kafka Streams'
    /// commit.interval.ms). Default: 30000 under at_least_once, 200 under exactly_once_v2.
    #[arg(long, env = "COMMIT_INTERVAL_MS")]
    commit_interval_ms: Option<u64>,
    /// at_least_once, or exactly_once_v2: each task's changelog records, output and input
    /// offsets of a commit in one Kafka transaction (Kafka Streams' processing.guarantee).
    #[arg(long, env = "PROCESSING_GUARANTEE", default_value = "at_least_once")]
    processing_guarantee: String,
    /// Static membership id (group.instance.id), e.g. the pod name; unset = dynamic membership.
    #[arg(long, env = "GROUP_INSTANCE_ID")]
    group_instance_id: Option<String>,
    /// The consumer group protocol: `classic` (every broker; the members assign partitions,
    /// cooperative-sticky, and --session-timeout-ms applies) or `consumer` (KIP-848, Kafka 4.0
    /// and later: the broker assigns and its group.consumer.session.timeout.ms applies).
    #[arg(long, env = "GROUP_PROTOCOL", default_value = "classic")]
    group_protocol: String,
    /// Standby replicas per task (num.standby.replicas): other instances keep each task's
    /// store warm from its changelog, so a failover or a moved partition restores only the
    /// tail. Placed by rendezvous hashing over the group's members (see the README).
    #[arg(long, env = "NUM_STANDBY_REPLICAS", default_value_t = 0)]
    num_standby_replicas: usize,
    /// What to do with a record whose key or value is not valid UTF-8: log-and-continue or fail.
    #[arg(
        long,
        env = "DESERIALIZATION_ERROR_POLICY",
        default_value = "log-and-continue"
    )]
    deserialization_error_policy: String,
    /// Replication factor of the changelog topics the engine creates (-1: the broker's
    /// default.replication.factor, as in Kafka Streams).
    #[arg(
        long,
        env = "REPLICATION_FACTOR",
        default_value_t = -1,
        allow_negative_numbers = true
    )]
    replication_factor: i32,
    /// Address of the HTTP server: /metrics, /health/live, /health/ready, /status and the
    /// query API (/v1/...); "off" disables it.
    #[arg(long, env = "METRICS_ADDRESS", default_value = "0.0.0.0:9102")]
    metrics_address: String,
    /// host:port where the other instances reach this one's query API (Kafka Streams'
    /// application.server), published to the group in the consumer's client.id. Default: the
    /// metrics address when it names one host (not 0.0.0.0); in the StatefulSet, the pod's
    /// name under the headless service.
    #[arg(long, env = "APPLICATION_SERVER")]
    application_server: Option<String>,
    /// Bound on a clean shutdown (flush, commit, close stores).
    #[arg(long, env = "SHUTDOWN_TIMEOUT_MS", default_value_t = 30_000)]
    shutdown_timeout_ms: u64,
    /// A task failing this many times within --task-failure-window-ms stops the instance
    /// (each failure before that restarts the task from its last commit).
    #[arg(long, env = "TASK_FAILURE_LIMIT", default_value_t = 3)]
    task_failure_limit: usize,
    #[arg(long, env = "TASK_FAILURE_WINDOW_MS", default_value_t = 300_000)]
    task_failure_window_ms: u64,
    /// Delete task directories this instance has not owned for this long (state.cleanup.delay.ms).
    #[arg(long, env = "STATE_CLEANUP_DELAY_MS", default_value_t = 600_000)]
    state_cleanup_delay_ms: u64,
    /// /health/live fails when the consumer loop has not turned for this long.
    #[arg(long, env = "LIVENESS_TIMEOUT_MS", default_value_t = 60_000)]
    liveness_timeout_ms: u64,
    /// Group session timeout (default 10000, or 45000 with --group-instance-id, as Kafka
    /// Streams: longer than a pod restart, so a static member's restart does not rebalance; or
    /// the client settings' session.timeout.ms).
    #[arg(long, env = "SESSION_TIMEOUT_MS")]
    session_timeout_ms: Option<u64>,
    /// Record cache, all tasks together (statestore.cache.max.bytes): a key's updates between
    /// commits collapse into one changelog and one output record, sent at the commit (early
    /// when a task is over its share). 0: every update is sent at once.
    #[arg(long, env = "CACHE_MAX_BYTES", default_value_t = 10 << 20)]
    cache_max_bytes: usize,
    /// RocksDB block cache shared by all tasks (data, index and filter blocks).
    #[arg(long, env = "ROCKSDB_BLOCK_CACHE_BYTES", default_value_t = 64 << 20)]
    rocksdb_block_cache_bytes: usize,
    /// RocksDB memtables, all tasks and stores together (at least 1 MiB).
    #[arg(long, env = "ROCKSDB_WRITE_BUFFER_BYTES", default_value_t = 64 << 20)]
    rocksdb_write_buffer_bytes: usize,
    /// One task's producer queue: its write-out's changelog and output records until the broker
    /// acknowledges them (half for record bytes, half for librdkafka's 256 bytes per record);
    /// sending waits when it is full. At least 1 MiB.
    #[arg(long, env = "PRODUCER_BUFFER_BYTES_PER_TASK", default_value_t = 8 << 20)]
    producer_buffer_bytes_per_task: usize,
    /// Input records fetched ahead of processing, all partitions together. At least 1 MiB.
    #[arg(long, env = "INPUT_PREFETCH_BYTES", default_value_t = 16 << 20)]
    input_prefetch_bytes: usize,
    /// Changelog records fetched ahead while restoring, all restoring tasks together. At least
    /// 1 MiB.
    #[arg(long, env = "RESTORE_PREFETCH_BYTES", default_value_t = 8 << 20)]
    restore_prefetch_bytes: usize,
    /// glibc malloc: blocks this large and larger get their own mapping, returned to the
    /// system when freed (RocksDB's memtable blocks); at most 32 MiB. 0: glibc's adaptive
    /// threshold, which lets freed memtables stay in the process (more RSS with many keys).
    #[arg(
        long,
        env = "MALLOC_MMAP_THRESHOLD_BYTES",
        default_value_t = malloc_tuning::DEFAULT_MMAP_THRESHOLD_BYTES
    )]
    malloc_mmap_threshold_bytes: usize,
}

impl RunArgs {
    fn streams_config(&self) -> anyhow::Result<StreamsConfig> {
        let mut connection = self.client.resolve()?;
        let session_timeout_ms = self.session_timeout_ms(&mut connection.settings)?;
        let mut config = StreamsConfig::new(&self.application_id, connection.broker);
        config.state_dir = self.state_dir.clone();
        config.processing_guarantee = self.processing_guarantee.parse::<ProcessingGuarantee>()?;
        config.commit_interval = match self.commit_interval_ms {
            Some(ms) => Duration::from_millis(ms),
            None => config.processing_guarantee.default_commit_interval(),
        };
        config.group_instance_id = self.group_instance_id.clone();
        config.deserialization_error_policy = self
            .deserialization_error_policy
            .parse::<DeserializationErrorPolicy>()?;
        config.group_protocol = self.group_protocol.parse::<GroupProtocol>()?;
        config.num_standby_replicas = self.num_standby_replicas;
        config.replication_factor = self.replication_factor;
        config.metrics_address = match self.metrics_address.as_str() {
            "off" => None,
            address => Some(address.parse::<SocketAddr>().map_err(|e| {
                anyhow::anyhow!("invalid setting `metrics-address`: `{address}` is not host:port or \"off\" ({e})")
            })?),
        };
        config.application_server = self.application_server.clone();
        config.shutdown_timeout = Duration::from_millis(self.shutdown_timeout_ms);
        config.session_timeout = Duration::from_millis(session_timeout_ms);
        config.liveness_timeout = Duration::from_millis(self.liveness_timeout_ms);
        config.task_failure_limit = self.task_failure_limit;
        config.task_failure_window = Duration::from_millis(self.task_failure_window_ms);
        config.state_cleanup_delay = Duration::from_millis(self.state_cleanup_delay_ms);
        config.client_settings = connection.settings;
        config.store_memory = StoreMemorySettings {
            cache_max_bytes: self.cache_max_bytes,
            block_cache_bytes: self.rocksdb_block_cache_bytes,
            write_buffer_bytes: self.rocksdb_write_buffer_bytes,
        };
        config.client_memory = ClientMemorySettings {
            producer_buffer_bytes_per_task: self.producer_buffer_bytes_per_task,
            input_prefetch_bytes: self.input_prefetch_bytes,
            restore_prefetch_bytes: self.restore_prefetch_bytes,
        };
        config.validate()?;
        Ok(config)
    }

    /// The session timeout: the flag, else a `session.timeout.ms` client setting (a Kafka
    /// `client.properties` often has one), else 10 s; given both ways differently, an error.
    fn session_timeout_ms(&self, settings: &mut ClientSettings) -> anyhow::Result<u64> {
        let from_settings = settings.remove("session.timeout.ms");
        let parsed = match &from_settings {
            Some(setting) => Some(setting.value.trim().parse::<u64>().map_err(|_| {
                anyhow::anyhow!(
                    "invalid client setting `session.timeout.ms` (from {}): `{}` is not a \
                     number of milliseconds",
                    setting.source,
                    setting.value
                )
            })?),
            None => None,
        };
        match (self.session_timeout_ms, parsed, from_settings) {
            (Some(flag), Some(other), Some(setting)) if flag != other => anyhow::bail!(
                "invalid setting `session-timeout-ms`: --session-timeout-ms/SESSION_TIMEOUT_MS \
                 is {flag} but session.timeout.ms (from {}) is {other}; give it once",
                setting.source
            ),
            (Some(flag), _, _) => Ok(flag),
            (None, Some(other), _) => Ok(other),
            (None, None, _) if self.group_instance_id.is_some() => {
                Ok(STATIC_MEMBER_SESSION_TIMEOUT_MS)
            }
            (None, None, _) => Ok(DEFAULT_SESSION_TIMEOUT_MS),
        }
    }
}

/// The group session timeout when none is given.
const DEFAULT_SESSION_TIMEOUT_MS: u64 = 10_000;
/// ... and with static membership (Kafka Streams' default since 3.0, KIP-735).
const STATIC_MEMBER_SESSION_TIMEOUT_MS: u64 = 45_000;

async fn reset(args: RunArgs) -> anyhow::Result<()> {
    let config = args.streams_config()?;
    let topology = word_count(&args.input_topic, &args.store_name, &args.output_topic)?;
    let report = kstreams_engine::reset_application(&config, topology.stores()).await?;
    let application = &config.application_id;
    match report.group_deleted {
        true => println!("deleted consumer group `{application}` and its committed offsets"),
        false => println!("consumer group `{application}` did not exist"),
    }
    for topic in &report.changelogs_deleted {
        println!("deleted changelog topic `{topic}`");
    }
    match &report.state_dir_removed {
        Some(dir) => println!("removed state directory {}", dir.display()),
        None => println!("no state directory of `{application}` on this machine"),
    }
    println!(
        "application `{application}` reset: instances start over from the input's beginning \
         (their local state of the old history is wiped when they start)"
    );
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    malloc_tuning::fix_mmap_threshold(args.malloc_mmap_threshold_bytes)?;
    let config = args.streams_config()?;
    let topology = word_count(&args.input_topic, &args.store_name, &args.output_topic)?;

    let mut streams = tokio::select! {
        started = KafkaStreams::start(topology, config) => started?,
        _ = shutdown_signal() => {
            info!("signal received before start-up finished; exiting");
            return Ok(());
        }
    };
    tokio::select! {
        error = streams.failed() => {
            // Close what can be closed, then report the cause.
            let cause = anyhow::Error::new(error);
            if let Err(close_error) = streams.close().await {
                error!("closing after failure: {close_error}");
            }
            Err(cause)
        }
        _ = shutdown_signal() => {
            info!("signal received: flushing, committing and closing stores");
            streams.close().await.context("clean shutdown")?;
            info!("shut down cleanly");
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = cli.log_format;
    init_logging(log_format);
    // Fault injection for the crash tests (inert unless FAILPOINTS is set).
    match kstreams_engine::setup_failpoints_from_env() {
        Ok(set) if !set.is_empty() => warn!("failpoints set: {}", set.join(", ")),
        Ok(_) => {}
        Err(e) => {
            eprintln!("kstreams-count: error: {e}");
            return ExitCode::FAILURE;
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("start the Tokio runtime");
    let result = runtime.block_on(async move {
        match cli.command {
            None => run(cli.run).await,
            Some(Command::Run(args)) => run(args).await,
            Some(Command::Produce(args)) => console::produce(args).await,
            Some(Command::Consume(args)) => console::consume(args).await,
            Some(Command::CreateTopic(args)) => console::create_topic(args).await,
            Some(Command::Query(args)) => query::query(args).await,
            Some(Command::Local(args)) => local::run(args).await,
            Some(Command::Reset(args)) => reset(args).await,
        }
    });
    // Do not wait for stray blocking work (e.g. a broker that never answered).
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once: a JSON line where logs are JSON (every line of stderr parses), else the
            // plain `kstreams-count: error: ...` line a console tool's user reads (whatever
            // RUST_LOG says).
            match log_format {
                LogFormat::Json => error!("{e:#}"),
                LogFormat::Text => eprintln!("kstreams-count: error: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_from(args: &[&str]) -> StreamsConfig {
        let cli = Cli::parse_from(std::iter::once("kstreams-count").chain(args.iter().copied()));
        cli.run.streams_config().unwrap()
    }

    #[test]
    fn the_group_protocol_is_classic_unless_chosen_and_a_wrong_one_is_named() {
        assert_eq!(config_from(&[]).group_protocol, GroupProtocol::Classic);
        assert_eq!(
            config_from(&["--group-protocol", "consumer"]).group_protocol,
            GroupProtocol::Consumer
        );
        let cli = Cli::parse_from(["kstreams-count", "--group-protocol", "new"]);
        let error = cli.run.streams_config().unwrap_err().to_string();
        assert!(error.contains("group-protocol"), "{error}");
    }

    #[test]
    fn the_guarantee_is_at_least_once_unless_chosen_and_sets_the_default_commit_interval() {
        let default = config_from(&[]);
        assert_eq!(
            default.processing_guarantee,
            ProcessingGuarantee::AtLeastOnce
        );
        assert_eq!(default.commit_interval, Duration::from_secs(30));
        let exactly_once = config_from(&["--processing-guarantee", "exactly_once_v2"]);
        assert_eq!(
            exactly_once.processing_guarantee,
            ProcessingGuarantee::ExactlyOnceV2
        );
        assert_eq!(
            exactly_once.commit_interval,
            kstreams_engine::EXACTLY_ONCE_COMMIT_INTERVAL
        );
        let chosen = config_from(&[
            "--processing-guarantee",
            "exactly_once_v2",
            "--commit-interval-ms",
            "5000",
        ]);
        assert_eq!(chosen.commit_interval, Duration::from_secs(5));
        let cli = Cli::parse_from(["kstreams-count", "--processing-guarantee", "exactly_once"]);
        let error = cli.run.streams_config().unwrap_err().to_string();
        assert!(error.contains("processing-guarantee"), "{error}");
    }

    #[test]
    fn session_timeout_is_10_s_or_45_s_for_a_static_member_unless_given() {
        assert_eq!(config_from(&[]).session_timeout, Duration::from_secs(10));
        assert_eq!(
            config_from(&["--group-instance-id", "kstreams-count-0"]).session_timeout,
            Duration::from_secs(45)
        );
        assert_eq!(
            config_from(&["--group-instance-id", "p", "--session-timeout-ms", "20000"])
                .session_timeout,
            Duration::from_secs(20)
        );
        assert_eq!(
            config_from(&["-X", "session.timeout.ms=30000"]).session_timeout,
            Duration::from_secs(30)
        );
    }
}
