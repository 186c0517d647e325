//! A stateful, partition-parallel stream processing engine for Kafka: one task per input
//! partition, RocksDB state per task restored from compacted changelogs, and a typed DSL.
//!
//! ```no_run
//! use kstreams_engine::{KafkaStreams, StreamsBuilder, StreamsConfig, StringSerde};
//! # async fn run() -> kstreams_engine::Result<()> {
//! let builder = StreamsBuilder::new();
//! builder
//!     .stream("input-topic", StringSerde, StringSerde)
//!     .group_by_key()
//!     .count("count-store")
//!     .to_stream()
//!     .map_values(|count| count.to_string())
//!     .to("counts-topic", StringSerde, StringSerde);
//! let streams = KafkaStreams::start(builder.build()?, StreamsConfig::new("counts-app", "localhost:9092")).await?;
//! streams.close().await
//! # }
//! ```

mod assignment;
mod client_settings;
mod clients;
mod config;
mod delivery;
mod dsl;
mod error;
mod failpoints;
mod fence;
mod group_members;
#[cfg(feature = "testing")]
mod hot_path;
mod http;
mod internal_topics;
mod memory_budget;
mod metrics;
mod processor;
mod query;
mod record_collector;
mod reset;
mod runtime;
mod serde;
mod standby;
mod state_directory;
pub mod status;
mod store;
mod store_memory;
mod streams;
mod task_id;
mod word_count;

pub use client_settings::{ClientSetting, ClientSettings, SettingSource};
pub use clients::{default_key_partitioner, setting_error, tool_client_config, KEY_PARTITIONER};
pub use config::{
    changelog_topic_name, normalize_bootstrap_servers, DeserializationErrorPolicy, GroupProtocol,
    ProcessingGuarantee, StreamsConfig, EXACTLY_ONCE_COMMIT_INTERVAL,
};
pub use dsl::{KGroupedStream, KStream, KTable, StoreValues, StreamsBuilder, Topology};
pub use error::{EngineError, Result};
pub use failpoints::{setup_from_env as setup_failpoints_from_env, FailpointsError};
pub use memory_budget::{ClientMemorySettings, MemoryBudget};
pub use metrics::EngineMetrics;
pub use processor::{EmitContext, InputRecord, KeyState, Processor, ProcessorContext, RecordError};
pub use query::{
    key_path, keys_path, ErrorAnswer, GroupMetadata, HeldPartition, Holder, InstanceMetadata,
    KeyAnswer, KeyEntry, KeyPartitioner, KeysPage, PartitionHolders, DEFAULT_PAGE, MAX_PAGE,
};
pub use reset::{reset_application, ResetReport};
pub use serde::{I64Serde, Serde, SerdeError, StringSerde};
pub use status::TaskPhase;
pub use store::StoreId;
pub use store_memory::StoreMemorySettings;
pub use streams::KafkaStreams;
pub use task_id::TaskId;
pub use word_count::word_count;

/// What the test harness and the benchmarks reach into beyond the product's API: the
/// failpoints' names, the engine alone on one task, the changelog value format.
#[cfg(feature = "testing")]
pub mod testing {
    pub use crate::hot_path::TaskHotPath;
    pub use crate::store::changelog_format::decode_changelog_value;

    /// The named failpoints (set through `FAILPOINTS`; see the engine's `failpoints` feature).
    pub mod failpoints {
        pub use crate::failpoints::{
            ABORT_BEFORE_REPLAY, ABORT_WITH_WRITE_OUT_IN_FLIGHT, EARLY_WRITE_OUT_ABORT_AFTER,
            RESTORE_STEP_DELAY, REVOCATION_COMMIT_FAILS, TRANSACTION_ABORT_AFTER_COMMIT,
            TRANSACTION_ABORT_BEFORE_COMMIT, TRANSACTION_ABORT_DURING_ABORT,
            TRANSACTION_COMMIT_FAILS, WRITE_OUT_ABORT_AFTER, WRITE_OUT_PAUSE,
            WRITE_OUT_PAUSE_AFTER,
        };
    }
}
