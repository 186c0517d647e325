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

pub mod assignment;
mod checkpoint;
pub mod clients;
pub mod config;
pub mod dsl;
pub mod error;
pub mod failpoints;
pub mod hot_path;
pub mod http;
pub mod internal_topics;
pub mod memory_budget;
pub mod metrics;
pub mod offsets;
pub mod ownership;
mod poller;
pub mod processor;
mod rebalance;
pub mod record_collector;
mod restore;
pub mod serde;
pub mod state_directory;
mod state_updater;
pub mod status;
pub mod store_memory;
pub mod streams;
mod supervisor;
mod task;
pub mod task_id;
pub mod task_store;

pub use clients::{ClientSetting, ClientSettings, SettingSource};
pub use config::{normalize_bootstrap_servers, DeserializationErrorPolicy, StreamsConfig};
pub use dsl::{KGroupedStream, KStream, KTable, StreamsBuilder, Topology};
pub use error::{EngineError, Result};
pub use memory_budget::{ClientMemorySettings, MemoryBudget};
pub use processor::{InputRecord, KeyState, Processor, ProcessorContext, RecordError, StoreId};
pub use serde::{I64Serde, Serde, SerdeError, StringSerde};
pub use status::TaskPhase;
pub use store_memory::StoreMemorySettings;
pub use streams::KafkaStreams;
pub use task_id::TaskId;
