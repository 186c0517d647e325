//! The commit sequence of a task, in one place for every trigger (the task's commit interval,
//! its record cache over budget, a revocation, shutdown, a bad record under the `fail`
//! policy). A write-out sends the cached updates (changelog and output records) and seals
//! them; processing goes on into a fresh cache while they are in flight. Once the broker
//! acknowledges every record of a write-out, its state and offsets reach RocksDB in one batch,
//! and the input offset it commits goes to the group (by the consumer loop). A task has at
//! most one write-out in flight: the next waits for it. A revocation or shutdown commits at
//! once: it starts a write-out and waits until everything is in RocksDB.
//!
//! Exactness: state reaches RocksDB only after its changelog records are acknowledged, and
//! input resumes only from an offset committed with that state, whatever the trigger.
//!
//! Failure policy, the same for every trigger: a task whose commit fails is closed without
//! writing anything more and restarted from its last commit (its uncommitted input is read
//! again), and the instance stops once a task fails `--task-failure-limit` times within the
//! window; a revoked task stops whatever its commit did. A failed group commit is only logged:
//! state and offsets are durable in the task's store, so it means re-reading some input.
//!
//! `write_out` holds the task's sequence, `group` the one place offsets reach the consumer
//! group, `policy` the one place a failed commit's fate is decided and counted.

pub(crate) mod group;
pub(crate) mod policy;
mod write_out;

pub(crate) use write_out::{count_commits, TaskCheckpoint, WriteOut, WrittenOut};
