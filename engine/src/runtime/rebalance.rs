//! The consumer's rebalance listener: turns librdkafka's callbacks into Assigned / Revoked /
//! Lost events for the supervisor, and blocks each callback until the supervisor is done.

use ractor::ActorRef;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, TopicPartitionList};
use tokio::runtime::Handle;
use tracing::{error, warn};

use std::sync::Arc;

use crate::delivery::GroupMetadataCell;
use crate::metrics::EngineMetrics;
use crate::status::InstanceStatus;
use crate::task_id::TaskId;

use crate::assignment::AssignmentEvent;
use crate::runtime::checkpoint::group;
use crate::runtime::consumer_port::TopicConsumer;
use crate::runtime::wiring::{ask, CommitOffsets, SupervisorMsg, SUPERVISOR_ASK_TIMEOUT};

/// Context of the instance's group consumer.
pub struct RebalanceListener {
    pub(crate) supervisor: ActorRef<SupervisorMsg>,
    pub(crate) runtime: Handle,
    pub(crate) source_topic: String,
    pub(crate) status: Arc<InstanceStatus>,
    pub(crate) metrics: EngineMetrics,
    /// Each broker's request-error total at the last statistics.
    pub(crate) broker_errors_seen: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// Where the consumer's group membership is kept for the tasks' transactions.
    pub(crate) group_metadata: GroupMetadataCell,
}

impl ClientContext for RebalanceListener {
    /// librdkafka's statistics carry each fetched partition's log start and high watermark:
    /// the lag's sources.
    fn stats(&self, statistics: Statistics) {
        self.broker_stats(&statistics);
        let Some(topic) = statistics.topics.get(&self.source_topic) else {
            return;
        };
        for partition in topic.partitions.values().filter(|p| p.hi_offset >= 0) {
            let task = TaskId::new(0, partition.partition);
            // The lag gauge is set from it at each scrape (`EngineMetrics::observe_instance`).
            if let Some(progress) = self.status.task(task) {
                progress.set_watermarks(partition.lo_offset, partition.hi_offset);
            }
        }
    }
}

impl RebalanceListener {
    /// Each broker's round-trip time (p50, p99 of librdkafka's last window) and the request
    /// errors since the last statistics (librdkafka reports totals).
    fn broker_stats(&self, statistics: &Statistics) {
        let mut seen = self
            .broker_errors_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for broker in statistics.brokers.values().filter(|b| b.nodeid >= 0) {
            let name = broker.nodename.as_str();
            if let Some(rtt) = &broker.rtt {
                // `percentile`, not Prometheus' `quantile`: that label belongs to a summary
                // (promtool refuses it on a gauge), and librdkafka's window is no summary (its
                // count and sum restart every window, where a summary's only grow).
                for (percentile, micros) in [("p50", rtt.p50), ("p99", rtt.p99)] {
                    self.metrics
                        .broker_rtt
                        .with_label_values(&[name, percentile])
                        .set(micros as f64 / 1e6);
                }
            }
            let total = broker.txerrs + broker.rxerrs + broker.req_timeouts;
            let before = seen.insert(name.to_string(), total).unwrap_or(0);
            self.metrics
                .broker_errors
                .with_label_values(&[name])
                .inc_by(total.saturating_sub(before));
        }
    }
}

/// The group generation and member id librdkafka holds for this consumer, read through the C
/// API (the Rust wrapper keeps its group-metadata handle private).
fn group_membership(consumer: &BaseConsumer<RebalanceListener>) -> Option<(i32, String)> {
    use rdkafka::bindings as rd;
    let client = consumer.client().native_ptr();
    // SAFETY: `client` is a live consumer handle for the duration of the call; the metadata
    // object is owned here and destroyed once read; the member id string is copied before that.
    unsafe {
        let metadata = rd::rd_kafka_consumer_group_metadata(client);
        if metadata.is_null() {
            return None;
        }
        let generation = rd::rd_kafka_consumer_group_metadata_generation_id(metadata);
        let member = rd::rd_kafka_consumer_group_metadata_member_id(metadata);
        let member_id = if member.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(member)
                .to_string_lossy()
                .into_owned()
        };
        rd::rd_kafka_consumer_group_metadata_destroy(metadata);
        Some((generation, member_id))
    }
}

impl RebalanceListener {
    fn record_membership(&self, consumer: &BaseConsumer<Self>) {
        if let Some((generation, member_id)) = group_membership(consumer) {
            self.status.set_membership(generation, member_id);
        }
        self.group_metadata.set(consumer.group_metadata());
    }

    fn source_partitions(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements()
            .iter()
            .filter(|e| e.topic() == self.source_topic)
            .map(|e| e.partition())
            .collect()
    }

    fn tell_supervisor(&self, event: AssignmentEvent) -> Option<CommitOffsets> {
        let result = self.runtime.block_on(ask(
            &self.supervisor,
            "supervisor",
            SUPERVISOR_ASK_TIMEOUT,
            |reply| SupervisorMsg::Rebalance(event, reply),
        ));
        match result {
            Ok(Ok(offsets)) => Some(offsets),
            Ok(Err(e)) | Err(e) => {
                error!("handling the assignment change failed: {e}");
                None
            }
        }
    }
}

impl ConsumerContext for RebalanceListener {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.record_membership(consumer);
            let partitions = self.source_partitions(tpl);
            if consumer.assignment_lost() {
                self.status.set_assignment_lost();
                self.tell_supervisor(AssignmentEvent::Lost(partitions));
                return;
            }
            let offsets = self
                .tell_supervisor(AssignmentEvent::Revoked(partitions))
                .unwrap_or_default();
            let consumer = TopicConsumer {
                consumer,
                topic: &self.source_topic,
            };
            group::commit_offsets(&consumer, &self.metrics, &offsets, CommitMode::Sync);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.record_membership(consumer);
                let partitions = self.source_partitions(tpl);
                if partitions.is_empty() {
                    self.status.set_joined();
                    return;
                }
                // Input waits until each task has restored; the supervisor resumes it.
                let input = TopicConsumer {
                    consumer,
                    topic: &self.source_topic,
                };
                if let Err(e) = input.pause_all(&partitions) {
                    warn!("pausing newly assigned partitions failed: {e}");
                }
                self.tell_supervisor(AssignmentEvent::Assigned(partitions));
                // Only now are the new tasks counted as restoring, so readiness cannot flicker.
                self.status.set_joined();
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => warn!("rebalance error: {e}"),
        }
    }
}
