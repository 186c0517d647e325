//! The instance's memory budget: the clients' parts (producer queues, input and restore
//! prefetch) as settings turned into librdkafka limits, and the sum of every part with the
//! stores' ([`StoreMemorySettings`]) as the documented footprint, shown live as
//! `kstreams_memory_budget_bytes{part}`.

use std::fmt;

use prometheus::IntGauge;

use crate::metrics::EngineMetrics;
use crate::store_memory::StoreMemorySettings;

const MIB: usize = 1 << 20;

/// What librdkafka holds per queued record beyond its key and value (its message and queue
/// bookkeeping): a budget gives half of its bytes to record bytes and half to this per record,
/// since for small records (a word and a count) the bookkeeping outweighs the bytes.
pub const BYTES_PER_QUEUED_RECORD: usize = 256;

/// Fewest records per partition a consumer keeps fetched ahead, however small its budget.
const MIN_PREFETCH_RECORDS_PER_PARTITION: usize = 1_000;

/// librdkafka's largest `*.kbytes` and `queued.min.messages` values.
const MAX_KBYTES: usize = 2_097_151;
const MAX_QUEUED_MIN_MESSAGES: usize = 10_000_000;

fn kbytes(bytes: usize) -> String {
    (bytes / 1024).clamp(1, MAX_KBYTES).to_string()
}

/// How much memory the Kafka clients of one instance may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientMemorySettings {
    /// One task's producer queue: its write-out's changelog and output records until the broker
    /// acknowledges them. Sending waits when it is full.
    pub producer_buffer_bytes_per_task: usize,
    /// Input records the consumer fetches ahead of processing, all partitions together.
    pub input_prefetch_bytes: usize,
    /// Changelog records the restore consumer fetches ahead, all restoring tasks together.
    pub restore_prefetch_bytes: usize,
}

impl Default for ClientMemorySettings {
    fn default() -> Self {
        Self {
            producer_buffer_bytes_per_task: 8 * MIB,
            input_prefetch_bytes: 16 * MIB,
            restore_prefetch_bytes: 8 * MIB,
        }
    }
}

impl ClientMemorySettings {
    /// librdkafka's limits for one task's producer.
    pub(crate) fn producer_limits(&self) -> [(&'static str, String); 2] {
        let half = self.producer_buffer_bytes_per_task / 2;
        [
            ("queue.buffering.max.kbytes", kbytes(half)),
            (
                "queue.buffering.max.messages",
                (half / BYTES_PER_QUEUED_RECORD)
                    .clamp(1, i32::MAX as usize)
                    .to_string(),
            ),
        ]
    }

    /// librdkafka's prefetch limits for a consumer of `partitions` partitions with `budget`
    /// bytes: half for record bytes (the whole queue), half for the records' bookkeeping
    /// (a number of records per partition).
    pub(crate) fn prefetch_limits(budget: usize, partitions: usize) -> [(&'static str, String); 2] {
        let half = budget / 2;
        let per_partition = (half / BYTES_PER_QUEUED_RECORD / partitions.max(1))
            .clamp(MIN_PREFETCH_RECORDS_PER_PARTITION, MAX_QUEUED_MIN_MESSAGES);
        [
            ("queued.max.messages.kbytes", kbytes(half)),
            ("queued.min.messages", per_partition.to_string()),
        ]
    }
}

/// Every part of the instance's memory budget, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    pub store: StoreMemorySettings,
    pub clients: ClientMemorySettings,
}

impl MemoryBudget {
    /// The parts that do not depend on the number of tasks, by their metric label.
    pub fn fixed_parts(&self) -> [(&'static str, usize); 6] {
        [
            ("record_cache", self.store.cache_max_bytes),
            // One write-out in flight per task, each sealed from a cache within its share.
            ("write_outs", self.store.cache_max_bytes),
            ("input_prefetch", self.clients.input_prefetch_bytes),
            ("restore_prefetch", self.clients.restore_prefetch_bytes),
            ("rocksdb_block_cache", self.store.block_cache_bytes),
            ("rocksdb_memtables", self.store.write_buffer_bytes),
        ]
    }

    /// The whole budget with `tasks` tasks open: the fixed parts plus a producer per task.
    pub fn total(&self, tasks: usize) -> usize {
        self.fixed_parts()
            .iter()
            .map(|(_, bytes)| bytes)
            .sum::<usize>()
            + tasks * self.clients.producer_buffer_bytes_per_task
    }

    /// Sets `kstreams_memory_budget_bytes{part}` for the fixed parts; the producer part is
    /// added and taken away as task producers open and close ([`ProducerBudget`]).
    pub fn report(&self, metrics: &EngineMetrics) {
        for (part, bytes) in self.fixed_parts() {
            metrics
                .memory_budget
                .with_label_values(&[part])
                .set(bytes as i64);
        }
        metrics
            .memory_budget
            .with_label_values(&[PRODUCER_PART])
            .set(0);
    }
}

const PRODUCER_PART: &str = "producer_queues";

/// A task producer's budget, counted in `kstreams_memory_budget_bytes{part="producer_queues"}`
/// while the producer lives.
pub(crate) struct ProducerBudget {
    gauge: IntGauge,
    bytes: i64,
}

impl ProducerBudget {
    pub(crate) fn open(metrics: &EngineMetrics, clients: &ClientMemorySettings) -> Self {
        let gauge = metrics.memory_budget.with_label_values(&[PRODUCER_PART]);
        let bytes = clients.producer_buffer_bytes_per_task as i64;
        gauge.add(bytes);
        Self { gauge, bytes }
    }
}

impl Drop for ProducerBudget {
    fn drop(&mut self) {
        self.gauge.sub(self.bytes);
    }
}

impl fmt::Display for MemoryBudget {
    /// `record_cache 10 MiB + ... + producer_queues 8 MiB per task = 172 MiB + 8 MiB per task`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |bytes: usize| bytes as f64 / MIB as f64;
        for (part, bytes) in self.fixed_parts() {
            write!(f, "{part} {:.0} MiB + ", mib(bytes))?;
        }
        let per_task = mib(self.clients.producer_buffer_bytes_per_task);
        write!(
            f,
            "{PRODUCER_PART} {per_task:.0} MiB per task = {:.0} MiB + {per_task:.0} MiB per task",
            mib(self.total(0))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_add_up_to_the_documented_footprint() {
        let budget = MemoryBudget {
            store: StoreMemorySettings::default(),
            clients: ClientMemorySettings::default(),
        };
        assert_eq!(budget.total(0), 172 * MIB, "10 + 10 + 16 + 8 + 64 + 64 MiB");
        assert_eq!(budget.total(4), 204 * MIB);
        assert_eq!(
            budget.to_string(),
            "record_cache 10 MiB + write_outs 10 MiB + input_prefetch 16 MiB + \
             restore_prefetch 8 MiB + rocksdb_block_cache 64 MiB + rocksdb_memtables 64 MiB + \
             producer_queues 8 MiB per task = 172 MiB + 8 MiB per task"
        );
    }

    #[test]
    fn a_budget_is_split_between_record_bytes_and_per_record_bookkeeping() {
        let clients = ClientMemorySettings::default();
        assert_eq!(
            clients.producer_limits(),
            [
                ("queue.buffering.max.kbytes", "4096".to_string()),
                ("queue.buffering.max.messages", "16384".to_string()),
            ]
        );
        assert_eq!(
            ClientMemorySettings::prefetch_limits(16 * MIB, 4),
            [
                ("queued.max.messages.kbytes", "8192".to_string()),
                ("queued.min.messages", "8192".to_string()),
            ]
        );
        assert_eq!(
            ClientMemorySettings::prefetch_limits(MIB, 64)[1].1,
            MIN_PREFETCH_RECORDS_PER_PARTITION.to_string(),
            "never fewer than 1,000 records per partition"
        );
    }

    #[test]
    fn the_producer_part_follows_the_open_producers() {
        let metrics = EngineMetrics::new("test", "input-topic");
        let budget = MemoryBudget {
            store: StoreMemorySettings::default(),
            clients: ClientMemorySettings::default(),
        };
        budget.report(&metrics);
        let producers = || {
            metrics
                .memory_budget
                .with_label_values(&[PRODUCER_PART])
                .get()
        };
        let first = ProducerBudget::open(&metrics, &budget.clients);
        let _second = ProducerBudget::open(&metrics, &budget.clients);
        assert_eq!(producers(), 16 * MIB as i64);
        drop(first);
        assert_eq!(producers(), 8 * MIB as i64);
        assert_eq!(
            metrics
                .memory_budget
                .with_label_values(&["record_cache"])
                .get(),
            10 * MIB as i64
        );
    }
}
