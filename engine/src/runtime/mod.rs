//! The runtime core, private to the engine, wired one way from the bottom up: `wiring` (the
//! messages, `ask` and every wait's bound), `restore` and the `state_updater`, `checkpoint`
//! (the commit sequence), the `task` actor, the `supervisor` actor, `rebalance` (librdkafka's
//! callbacks translated) and the `consumer_loop` thread. `KafkaStreams` (in `streams`) starts
//! them.

pub(crate) mod checkpoint;
pub(crate) mod consumer_loop;
pub(crate) mod consumer_port;
pub(crate) mod rebalance;
pub(crate) mod restore;
pub(crate) mod state_updater;
pub(crate) mod supervisor;
pub(crate) mod task;
pub(crate) mod wiring;
