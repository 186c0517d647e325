//! The group commit: the one place input offsets reach the consumer group, for the consumer
//! loop's interval and shutdown and for a revocation alike.

use std::collections::BTreeMap;

use rdkafka::consumer::CommitMode;

use super::policy::{on_failure, CommitTrigger};
use crate::error::EngineError;
use crate::metrics::EngineMetrics;
use crate::runtime::consumer_port::InputConsumer;

/// The offsets of partitions this member still holds (a report can arrive after its
/// partition left); `None` when the assignment cannot be read (the caller commits later).
pub(crate) fn still_assigned(
    consumer: &impl InputConsumer,
    metrics: &EngineMetrics,
    offsets: &BTreeMap<i32, i64>,
) -> Option<Vec<(i32, i64)>> {
    match consumer.assigned() {
        Ok(assigned) => Some(
            offsets
                .iter()
                .filter(|(p, _)| assigned.contains(p))
                .map(|(p, o)| (*p, *o))
                .collect(),
        ),
        Err(e) => {
            let error = EngineError::kafka("reading the assignment")(e);
            on_failure(metrics, CommitTrigger::Group, None, &error);
            None
        }
    }
}

/// Commits `offsets` (partition, next offset to read) to the group: `Async` on the loop's
/// interval, `Sync` where the caller must know it landed (a revocation, shutdown). A failure
/// is logged (see `policy`).
pub(crate) fn commit_offsets(
    consumer: &impl InputConsumer,
    metrics: &EngineMetrics,
    offsets: &[(i32, i64)],
    mode: CommitMode,
) {
    if offsets.is_empty() {
        return;
    }
    if let Err(e) = consumer.commit(offsets, mode) {
        let error = EngineError::kafka("committing offsets")(e);
        on_failure(metrics, CommitTrigger::Group, None, &error);
    }
}
