//! The engine's error type: one variant per failed operation, so callers can match on what went wrong.

use std::path::PathBuf;

use crate::task_id::TaskId;

/// Everything the engine can fail with.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A setting is missing or has a value the engine cannot use.
    #[error("invalid setting `{setting}`: {reason}")]
    InvalidConfig {
        setting: &'static str,
        reason: String,
    },

    /// A client setting (from a file, the environment or `-X`) is refused by the engine or by
    /// librdkafka. Names the key and where it was set, never the value (it may be a secret).
    #[error("client setting `{key}` (from {source_of_setting}): {reason}")]
    ClientSetting {
        key: String,
        source_of_setting: String,
        reason: String,
    },

    /// The client properties file cannot be read.
    #[error("client config file {path}: {reason}")]
    ClientConfigFile { path: PathBuf, reason: String },

    /// The broker refuses this client access to a topic it needs (ACLs).
    #[error(
        "not authorized to {operation} topic `{topic}`: grant this client's principal access \
         (ACLs), or check the credentials in the client settings"
    )]
    TopicNotAuthorized {
        topic: String,
        operation: &'static str,
    },

    /// An existing changelog topic is not compacted, so the broker would delete state.
    #[error(
        "changelog topic `{topic}` has cleanup.policy `{policy}`; it must be `compact` alone: \
         with `delete` the broker removes records after retention and a full restore would \
         silently miss the keys they held (alter the topic: cleanup.policy=compact)"
    )]
    ChangelogNotCompacted { topic: String, policy: String },

    /// Another process holds the lock on this application's state directory.
    #[error(
        "state directory {path} is locked by another running instance \
         (each instance needs its own state dir; stop the other one or pass a different --state-dir)"
    )]
    StateDirLocked { path: PathBuf },

    /// A file-system operation on the state directory failed.
    #[error("state directory {path}: {source}")]
    StateDirIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// RocksDB failed to open, read or write a task's store.
    #[error("task {task}: RocksDB at {path}: {source}")]
    Store {
        task: TaskId,
        path: PathBuf,
        #[source]
        source: rocksdb::Error,
    },

    /// The topology was assembled in a way the engine cannot run.
    #[error("invalid topology: {0}")]
    Topology(String),

    /// An existing internal topic does not have the layout the engine needs.
    #[error(
        "internal topic `{topic}` has {actual} partitions but source topic `{source_topic}` has \
         {expected}; delete the internal topic or fix the source topic's partition count"
    )]
    InternalTopicPartitions {
        topic: String,
        source_topic: String,
        expected: usize,
        actual: usize,
    },

    /// A Kafka client operation (admin, consume, produce, commit) failed.
    #[error("kafka {operation}: {source}")]
    Kafka {
        operation: &'static str,
        #[source]
        source: rdkafka::error::KafkaError,
    },

    /// Another writer appended to the task's changelog between its own records (an
    /// overlapping owner: a frozen or cut-off instance, or the one that took over from it).
    /// The task restarts and restores those records before it goes on.
    #[error(
        "task {task}: {foreign} records of another writer lie in changelog `{topic}` between \
         offsets {from} and {to}, among this task's own (two instances wrote the partition for \
         a while); the task restarts to restore them"
    )]
    ForeignChangelogRecords {
        task: TaskId,
        topic: String,
        foreign: u64,
        from: i64,
        to: i64,
    },

    /// A topic lost records the task's state was built from or still needs (deleted and
    /// recreated, or truncated): starting over would silently reset counts, so the instance
    /// stops; `kstreams-count reset` starts over on purpose.
    #[error(
        "task {task}: topic `{topic}` partition {} {detail}. Stopping rather than silently \
         starting over from an incomplete history; to start over on purpose, stop every \
         instance and run `kstreams-count reset` (docs/operations.md, \"Starting over\")",
        task.partition
    )]
    HistoryLost {
        task: TaskId,
        topic: String,
        detail: String,
    },

    /// `reset` could not start the application over.
    #[error("cannot reset application `{application_id}`: {reason}")]
    ResetRefused {
        application_id: String,
        reason: String,
    },

    /// The task's partition may be another member's now (lost, or the task outlived its stop
    /// deadline): it sends and writes nothing more.
    #[error(
        "task {task} is fenced: its partition may belong to another instance now (lost, or the \
         task did not stop in time), so it sends and writes nothing more"
    )]
    Fenced { task: TaskId },

    /// Under exactly-once: another producer took the task's transactional id (a new owner of
    /// the partition started it), so this one's transaction was aborted by the broker and it
    /// may send nothing more.
    #[error(
        "task {task}: its producer was fenced by a newer owner of the task (transactional id \
         `{transactional_id}`): {reason}; its open transaction is aborted"
    )]
    ProducerFenced {
        task: TaskId,
        transactional_id: String,
        reason: String,
    },

    /// Under exactly-once: the task's transaction could not commit and was aborted; nothing of
    /// it is visible to read_committed readers or in RocksDB, and the task restarts from its
    /// last commit.
    #[error("task {task}: transaction {step} failed and was aborted: {reason}")]
    TransactionAborted {
        task: TaskId,
        step: &'static str,
        reason: String,
    },

    /// Records could not be delivered to the broker.
    #[error("task {task}: producing to `{topic}` failed: {reason}")]
    Produce {
        task: TaskId,
        topic: String,
        reason: String,
    },

    /// A record's key or value could not be deserialized and the policy is `fail`.
    #[error(
        "task {task}: cannot deserialize record at partition {partition} offset {offset}: {reason} \
         (deserialization-error-policy is `fail`)"
    )]
    Deserialization {
        task: TaskId,
        partition: i32,
        offset: i64,
        reason: String,
    },

    /// A processor returned an error it did not want skipped.
    #[error(
        "task {task}: processing record at partition {partition} offset {offset} failed: {reason}"
    )]
    Processing {
        task: TaskId,
        partition: i32,
        offset: i64,
        reason: String,
    },

    /// A task actor stopped unexpectedly.
    #[error("task {task} failed: {reason}")]
    TaskFailed { task: TaskId, reason: String },

    /// A task was asked to move where its lifecycle does not allow (a bug, never ignored).
    #[error("task {task}: its lifecycle cannot go from {from} to {to}")]
    TaskLifecycle {
        task: TaskId,
        from: crate::status::TaskPhase,
        to: crate::status::TaskPhase,
    },

    /// Talking to an actor failed (it stopped, or did not answer).
    #[error("actor {actor}: {reason}")]
    Actor { actor: &'static str, reason: String },

    /// The metrics/health HTTP server could not start.
    #[error("metrics server on {address}: {source}")]
    MetricsServer {
        address: String,
        #[source]
        source: std::io::Error,
    },

    /// Shutdown did not finish within its bound.
    #[error("the Kafka consumer failed for good: {reason}")]
    ConsumerFatal { reason: String },

    #[error("shutdown did not finish within {0:?}")]
    ShutdownTimeout(std::time::Duration),
}

/// The engine's result type.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    /// Whether a task failing with this error must stop the instance rather than restart: a
    /// restart would meet the same condition (a topic's lost history).
    pub(crate) fn stops_the_instance(&self) -> bool {
        matches!(self, EngineError::HistoryLost { .. })
    }

    pub(crate) fn kafka(
        operation: &'static str,
    ) -> impl FnOnce(rdkafka::error::KafkaError) -> Self {
        move |source| EngineError::Kafka { operation, source }
    }

    pub(crate) fn actor(actor: &'static str, reason: impl std::fmt::Display) -> Self {
        EngineError::Actor {
            actor,
            reason: reason.to_string(),
        }
    }
}
