//! Test and benchmark support: a local tansu broker per test on a free port, the
//! `kstreams-count` binary as a child process, and topic / record / metrics helpers. One
//! module per concern; everything is re-exported here.

pub mod app;
pub mod bench;
pub mod chart;
pub mod failover;
pub mod kafka;
pub mod load;
pub mod owners;
pub mod ownership;
pub mod partitioning;
pub mod prometheus;
pub mod query;
pub mod query_bench;
pub mod secured;
pub mod store;
pub mod tansu;
pub mod wait;

use std::net::TcpListener;

pub use app::{
    all_tasks, app_bin, broker_and_app, group_complete, http_get, key_value_lines,
    restart_after_crash, run_cli, run_until_processed, App, AppOptions,
};
pub use load::{produce_paced, produce_round, word_count_input, Load};
pub use owners::TwoOwners;
pub use ownership::{ownership_from_log, ownership_overlaps, Ownership};
pub use partitioning::java_partition;
pub use prometheus::{metric_sum, Prometheus, PROMETHEUS_NAMESPACE, PROMETHEUS_POD_PREFIX};
pub use secured::{make_certificates, ScramUser, Security, TlsFront};
pub use store::{read_store_counts, wrong_counts};
pub use tansu::{
    conformance, installed_tool, python, shared_broker, skip_for_broker_limit,
    skip_without_private_broker, tansu_bin, Broker, GroupEvents, Storage,
};
pub use wait::{poll_every, poll_until, wait_until};

pub use kstreams_engine::status::InstanceView;

/// A record as read back: key and value bytes.
pub type ReadRecord = (Option<Vec<u8>>, Option<Vec<u8>>);
/// A record read back with its partition: (partition, key, value).
pub type LocatedRecord = (i32, Option<Vec<u8>>, Option<Vec<u8>>);

/// A raw record to produce: key, value, and an explicit partition if wanted.
pub type RawRecord = (Option<Vec<u8>>, Option<Vec<u8>>, Option<i32>);

/// A name no other test uses: `<prefix>-<random>`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// Tests of one file that must not overlap (they measure time, or would starve each other of
/// the CPU on a 2-core machine) take turns: each holds this for its whole run.
pub fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
