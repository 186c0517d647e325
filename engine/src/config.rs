//! Engine settings: defaults like Kafka Streams', and validation that names the bad setting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::client_settings::ClientSettings;
use crate::error::{EngineError, Result};
use crate::memory_budget::{ClientMemorySettings, MemoryBudget};
use crate::store_memory::StoreMemorySettings;

/// RocksDB needs room for at least one memtable.
const MIN_WRITE_BUFFER_BYTES: usize = 1 << 20;
/// A producer queue or a prefetch budget smaller than this holds too few records to keep up.
const MIN_CLIENT_BUDGET_BYTES: usize = 1 << 20;

/// `FromStr` and `Display` for a setting's enum of named choices: parsing names the setting
/// and the choices when a value is none of them.
macro_rules! setting_choices {
    ($kind:ty, $setting:literal, { $($name:literal => $value:expr),+ $(,)? }) => {
        impl FromStr for $kind {
            type Err = EngineError;

            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($name => Ok($value),)+
                    other => Err(EngineError::InvalidConfig {
                        setting: $setting,
                        reason: format!(
                            "`{other}` is not one of {}",
                            [$(concat!("`", $name, "`")),+].join(", ")
                        ),
                    }),
                }
            }
        }

        impl std::fmt::Display for $kind {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                $(if *self == $value {
                    return f.write_str($name);
                })+
                unreachable!("every choice has a name")
            }
        }
    };
}

/// What to do with a record whose key or value cannot be deserialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeserializationErrorPolicy {
    /// Skip the record: count it in `kstreams_records_skipped_total{reason="deserialization_error"}`
    /// and log it with its partition and offset. Kafka Streams' `LogAndContinueExceptionHandler`.
    #[default]
    LogAndContinue,
    /// Stop the instance with an error naming the partition and offset; nothing after the bad
    /// record is committed. Kafka Streams' `LogAndFailExceptionHandler`.
    Fail,
}

setting_choices!(DeserializationErrorPolicy, "deserialization-error-policy", {
    "log-and-continue" => Self::LogAndContinue,
    "fail" => Self::Fail,
});

/// The consumer group protocol (librdkafka's `group.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupProtocol {
    /// The classic protocol: the members assign partitions (cooperative-sticky here) and the
    /// session timeout is the member's (`--session-timeout-ms`). Every Kafka broker has it.
    #[default]
    Classic,
    /// KIP-848's protocol (Kafka 4.0 and later): the broker assigns partitions and owns the
    /// session timeout (`group.consumer.session.timeout.ms`), so the member sets neither.
    Consumer,
}

setting_choices!(GroupProtocol, "group-protocol", {
    "classic" => Self::Classic,
    "consumer" => Self::Consumer,
});

/// What a commit promises (Kafka Streams' `processing.guarantee`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProcessingGuarantee {
    /// Every input record's effect reaches the store, the changelog and the output at least
    /// once; after a crash, output since the last commit may be written again.
    #[default]
    AtLeastOnce,
    /// Each task's changelog records, output records and input offset of one commit go in one
    /// Kafka transaction (a transactional producer per task, `transactional.id` =
    /// `<application id>-<task id>`): a `read_committed` reader sees every output once, and a
    /// task's earlier owner is fenced by the broker. RocksDB is written only once the
    /// transaction has committed.
    ExactlyOnceV2,
}

setting_choices!(ProcessingGuarantee, "processing-guarantee", {
    "at_least_once" => Self::AtLeastOnce,
    "exactly_once_v2" => Self::ExactlyOnceV2,
});

impl ProcessingGuarantee {
    /// The commit interval when none is chosen: Kafka Streams' 30 s under at-least-once; under
    /// exactly-once the output is seen only once committed, so commits are frequent (see
    /// `docs/benchmarks.md` for how the interval was chosen).
    pub fn default_commit_interval(self) -> Duration {
        match self {
            ProcessingGuarantee::AtLeastOnce => Duration::from_secs(30),
            ProcessingGuarantee::ExactlyOnceV2 => EXACTLY_ONCE_COMMIT_INTERVAL,
        }
    }

    pub fn exactly_once(self) -> bool {
        self == ProcessingGuarantee::ExactlyOnceV2
    }
}

/// The commit interval under exactly-once unless one is chosen.
pub const EXACTLY_ONCE_COMMIT_INTERVAL: Duration = Duration::from_millis(200);

/// What separates a member's name from its query endpoint in its consumer's `client.id`
/// (`<application id>-<instance>-consumer@<host:port>`); a host name or port never holds it.
pub(crate) const ENDPOINT_SEPARATOR: char = '@';

/// Everything an engine instance needs to run. Build with [`StreamsConfig::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct StreamsConfig {
    /// Consumer group id, prefix of internal topics, and directory under `state_dir`.
    pub application_id: String,
    /// Kafka bootstrap servers, `host:port[,host:port...]`.
    pub bootstrap_servers: String,
    /// Root of all state: tasks live in `<state_dir>/<application_id>/<task_id>/`.
    pub state_dir: PathBuf,
    /// How often tasks flush, write their state and offsets, and commit to the group.
    pub commit_interval: Duration,
    /// At-least-once (the default) or exactly-once with Kafka transactions.
    pub processing_guarantee: ProcessingGuarantee,
    /// Static membership id (`group.instance.id`), e.g. the StatefulSet pod name.
    pub group_instance_id: Option<String>,
    /// What a record that cannot be deserialized does.
    pub deserialization_error_policy: DeserializationErrorPolicy,
    /// Replication factor for the changelog topics the engine creates (-1: broker default).
    pub replication_factor: i32,
    /// Where `/metrics`, the health endpoints and the query API listen; `None` disables the
    /// server.
    pub metrics_address: Option<SocketAddr>,
    /// `host:port` where other instances reach this one's query API (Kafka Streams'
    /// `application.server`), published to the group in the consumer's `client.id`. `None`:
    /// the server's own address when it is bound to one (not `0.0.0.0`), else none, and then
    /// keys owned here cannot be asked of other instances.
    pub application_server: Option<String>,
    /// Bound on a clean shutdown (flush, commit, close stores).
    pub shutdown_timeout: Duration,
    /// A task failing this many times within `task_failure_window` stops the instance.
    pub task_failure_limit: usize,
    pub task_failure_window: Duration,
    /// Task directories not owned for this long are deleted (Kafka Streams' state.cleanup.delay.ms).
    pub state_cleanup_delay: Duration,
    /// `/health/live` fails when the consumer loop has not turned for this long.
    pub liveness_timeout: Duration,
    /// Session timeout of the group membership (the classic protocol's; with
    /// [`GroupProtocol::Consumer`] the broker's setting decides).
    pub session_timeout: Duration,
    /// The consumer group protocol.
    pub group_protocol: GroupProtocol,
    /// Standby replicas per task (Kafka Streams' `num.standby.replicas`): other instances keep
    /// a copy of each task's store up to date from its changelog, so a failover restores only
    /// the tail. Placed without the assignor (see `standby`); needs the classic protocol.
    pub num_standby_replicas: usize,
    /// The user's librdkafka settings (TLS, SASL, tuning), applied to every client the engine
    /// creates; keys the engine's guarantees rest on are refused (see `clients`).
    pub client_settings: ClientSettings,
    /// Memory the task stores share: write-back cache, RocksDB block cache and memtables.
    pub store_memory: StoreMemorySettings,
    /// Memory the Kafka clients may hold: producer queues, input and restore prefetch.
    pub client_memory: ClientMemorySettings,
    /// Partitions of the source topic, which size the prefetch per partition: set by the
    /// engine once it has looked the topic up at start (1 until then).
    pub source_partitions: usize,
}

impl StreamsConfig {
    /// Settings with Kafka Streams' defaults for everything but the application id and brokers.
    pub fn new(application_id: impl Into<String>, bootstrap_servers: impl Into<String>) -> Self {
        Self {
            application_id: application_id.into(),
            bootstrap_servers: bootstrap_servers.into(),
            state_dir: PathBuf::from("/tmp/kafka-streams"),
            commit_interval: ProcessingGuarantee::default().default_commit_interval(),
            processing_guarantee: ProcessingGuarantee::default(),
            group_instance_id: None,
            deserialization_error_policy: DeserializationErrorPolicy::default(),
            replication_factor: -1,
            metrics_address: None,
            application_server: None,
            shutdown_timeout: Duration::from_secs(30),
            session_timeout: Duration::from_secs(10),
            group_protocol: GroupProtocol::default(),
            num_standby_replicas: 0,
            liveness_timeout: Duration::from_secs(60),
            task_failure_limit: 3,
            task_failure_window: Duration::from_secs(300),
            state_cleanup_delay: Duration::from_secs(600),
            client_settings: ClientSettings::new(),
            store_memory: StoreMemorySettings::default(),
            client_memory: ClientMemorySettings::default(),
            source_partitions: 1,
        }
    }

    /// Checks the engine's own settings; the error names the first one that is wrong and why.
    /// [`StreamsConfig::validate`] (in `clients`) checks these and the client settings.
    pub(crate) fn validate_engine_settings(&self) -> Result<()> {
        let invalid = |setting, reason: String| Err(EngineError::InvalidConfig { setting, reason });
        if self.application_id.is_empty() {
            return invalid("application-id", "must not be empty".into());
        }
        if let Some(bad) = self
            .application_id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return invalid(
                "application-id",
                format!(
                    "`{}` contains {bad:?}; only ASCII letters, digits, '.', '_' and '-' are allowed \
                     (it names topics and a directory)",
                    self.application_id
                ),
            );
        }
        if self.application_id.len() > 200 {
            return invalid("application-id", "must be at most 200 characters".into());
        }
        if self.bootstrap_servers.trim().is_empty() {
            return invalid(
                "broker",
                "no bootstrap server given (set KAFKA_BROKER or --broker)".into(),
            );
        }
        for server in self.bootstrap_servers.split(',') {
            parse_host_port(server.trim()).map_err(|reason| EngineError::InvalidConfig {
                setting: "broker",
                reason,
            })?;
        }
        if self.state_dir.as_os_str().is_empty() {
            return invalid("state-dir", "must not be empty".into());
        }
        if let Some(server) = &self.application_server {
            match parse_host_port(server) {
                Ok((_, Some(_))) if !server.contains(ENDPOINT_SEPARATOR) => {}
                Ok(_) => {
                    return invalid(
                        "application-server",
                        format!("`{server}`: give host:port, where other instances reach this one"),
                    )
                }
                Err(reason) => return invalid("application-server", reason),
            }
        }
        if self.num_standby_replicas > 0 && self.group_protocol == GroupProtocol::Consumer {
            return invalid(
                "num-standby-replicas",
                "standby replicas are placed from the group's members as DescribeGroups lists \
                 them, which covers only the classic protocol: use --group-protocol classic, or \
                 no standbys"
                    .into(),
            );
        }
        if self.commit_interval.is_zero() {
            return invalid("commit-interval-ms", "must be greater than 0".into());
        }
        if self.replication_factor == 0 || self.replication_factor < -1 {
            return invalid(
                "replication-factor",
                format!(
                    "{} is neither -1 (broker default) nor positive",
                    self.replication_factor
                ),
            );
        }
        if let Some(id) = &self.group_instance_id {
            if id.trim().is_empty() {
                return invalid("group-instance-id", "must not be blank when set".into());
            }
        }
        if self.shutdown_timeout.is_zero() {
            return invalid("shutdown-timeout-ms", "must be greater than 0".into());
        }
        if self.task_failure_limit == 0 {
            return invalid("task-failure-limit", "must be at least 1".into());
        }
        if self.liveness_timeout.is_zero() {
            return invalid("liveness-timeout-ms", "must be greater than 0".into());
        }
        if self.session_timeout < Duration::from_secs(1) {
            return invalid("session-timeout-ms", "must be at least 1000".into());
        }
        if self.store_memory.write_buffer_bytes < MIN_WRITE_BUFFER_BYTES {
            return invalid(
                "rocksdb-write-buffer-bytes",
                format!(
                    "{} is below the minimum of {MIN_WRITE_BUFFER_BYTES} (1 MiB)",
                    self.store_memory.write_buffer_bytes
                ),
            );
        }
        let client_budgets = [
            (
                "producer-buffer-bytes-per-task",
                self.client_memory.producer_buffer_bytes_per_task,
            ),
            (
                "input-prefetch-bytes",
                self.client_memory.input_prefetch_bytes,
            ),
            (
                "restore-prefetch-bytes",
                self.client_memory.restore_prefetch_bytes,
            ),
        ];
        for (setting, bytes) in client_budgets {
            if bytes < MIN_CLIENT_BUDGET_BYTES {
                return invalid(
                    setting,
                    format!("{bytes} is below the minimum of {MIN_CLIENT_BUDGET_BYTES} (1 MiB)"),
                );
            }
        }
        Ok(())
    }

    /// Every part of the memory budget.
    pub fn memory_budget(&self) -> MemoryBudget {
        MemoryBudget {
            store: self.store_memory,
            clients: self.client_memory,
        }
    }

    /// The group id: the application id, as in Kafka Streams.
    pub fn group_id(&self) -> &str {
        &self.application_id
    }

    /// The name this instance gives itself in its consumer's `client.id`: the static member id,
    /// else the host name (a pod's name in a StatefulSet).
    pub(crate) fn instance_name(&self) -> String {
        self.group_instance_id
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| "localhost".into())
    }

    /// `<application_id>-<store>-changelog`.
    pub fn changelog_topic(&self, store: &str) -> String {
        changelog_topic_name(&self.application_id, store)
    }
}

/// The changelog topic of an application's store, `<application_id>-<store>-changelog` as in
/// Kafka Streams: the one place the name is built.
pub fn changelog_topic_name(application_id: &str, store: &str) -> String {
    format!("{application_id}-{store}-changelog")
}

/// Turns `KAFKA_BROKER`-style input (`host` or `host:port`, comma separated) into bootstrap
/// servers, adding the default port 9092 where none is given.
pub fn normalize_bootstrap_servers(input: &str) -> std::result::Result<String, String> {
    let mut out = Vec::new();
    for server in input.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (host, port) = parse_host_port(server)?;
        out.push(format!("{host}:{}", port.unwrap_or(9092)));
    }
    if out.is_empty() {
        return Err("no broker address given".into());
    }
    Ok(out.join(","))
}

fn parse_host_port(server: &str) -> std::result::Result<(&str, Option<u16>), String> {
    if server.is_empty() {
        return Err("empty broker address".into());
    }
    if server.contains("://") {
        return Err(format!(
            "`{server}`: give host or host:port, without a scheme"
        ));
    }
    match server.rsplit_once(':') {
        None => Ok((server, None)),
        Some((host, port)) if !host.is_empty() => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .map(|p| (host, Some(p)))
            .ok_or_else(|| format!("`{server}`: `{port}` is not a port number (1-65535)")),
        Some(_) => Err(format!("`{server}`: missing host")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> StreamsConfig {
        StreamsConfig::new("counts-app", "localhost:9092")
    }

    fn setting_of(config: &StreamsConfig) -> &'static str {
        match config.validate() {
            Err(EngineError::InvalidConfig { setting, .. }) => setting,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn defaults_match_kafka_streams_and_validate() {
        let c = valid();
        c.validate().unwrap();
        assert_eq!(c.commit_interval, Duration::from_secs(30));
        assert_eq!(
            c.replication_factor, -1,
            "Kafka Streams' default since 3.0: the broker's"
        );
        assert_eq!(
            c.deserialization_error_policy,
            DeserializationErrorPolicy::LogAndContinue
        );
        assert_eq!(c.group_id(), "counts-app");
        assert_eq!(
            c.changelog_topic("count-store"),
            "counts-app-count-store-changelog"
        );
    }

    #[test]
    fn each_bad_setting_is_named() {
        let mut c = valid();
        c.application_id = "".into();
        assert_eq!(setting_of(&c), "application-id");
        c.application_id = "has space".into();
        assert_eq!(setting_of(&c), "application-id");
        let mut c = valid();
        c.bootstrap_servers = "host:notaport".into();
        assert_eq!(setting_of(&c), "broker");
        let mut c = valid();
        c.commit_interval = Duration::ZERO;
        assert_eq!(setting_of(&c), "commit-interval-ms");
        let mut c = valid();
        c.replication_factor = 0;
        assert_eq!(setting_of(&c), "replication-factor");
        let mut c = valid();
        c.group_instance_id = Some(" ".into());
        assert_eq!(setting_of(&c), "group-instance-id");
        let mut c = valid();
        c.state_dir = PathBuf::new();
        assert_eq!(setting_of(&c), "state-dir");
        let mut c = valid();
        c.store_memory.write_buffer_bytes = 1000;
        assert_eq!(setting_of(&c), "rocksdb-write-buffer-bytes");
        let mut c = valid();
        c.client_memory.producer_buffer_bytes_per_task = 1000;
        assert_eq!(setting_of(&c), "producer-buffer-bytes-per-task");
        let mut c = valid();
        c.client_memory.input_prefetch_bytes = 0;
        assert_eq!(setting_of(&c), "input-prefetch-bytes");
        let mut c = valid();
        c.client_memory.restore_prefetch_bytes = 1000;
        assert_eq!(setting_of(&c), "restore-prefetch-bytes");
    }

    #[test]
    fn broker_gets_default_port() {
        assert_eq!(normalize_bootstrap_servers("kafka").unwrap(), "kafka:9092");
        assert_eq!(
            normalize_bootstrap_servers("kafka:19092").unwrap(),
            "kafka:19092"
        );
        assert_eq!(normalize_bootstrap_servers("a, b:1").unwrap(), "a:9092,b:1");
        assert!(normalize_bootstrap_servers("").is_err());
        assert!(normalize_bootstrap_servers("a:0").is_err());
        assert!(normalize_bootstrap_servers("tcp://a:1").is_err());
        assert!(normalize_bootstrap_servers(":9092").is_err());
    }

    #[test]
    fn policy_parses_documented_names_only() {
        assert_eq!(
            "fail".parse::<DeserializationErrorPolicy>().unwrap(),
            DeserializationErrorPolicy::Fail
        );
        assert_eq!(
            "log-and-continue"
                .parse::<DeserializationErrorPolicy>()
                .unwrap(),
            DeserializationErrorPolicy::LogAndContinue
        );
        assert!("skip".parse::<DeserializationErrorPolicy>().is_err());
    }
}
