//! The seams between the runtime and its two Kafka consumers: what the consumer loop and the
//! group commit ask of the source topic's group consumer ([`InputConsumer`]), and what the
//! state updater asks of the restore consumer ([`RestoreConsumer`]); each a trait with the real
//! librdkafka consumer behind it here and a fake in the unit tests (no broker, no sleeps).

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::processor::InputRecord;

/// One partitioned topic's group consumer, as the runtime uses it.
pub(crate) trait InputConsumer {
    /// The next record, waiting at most `timeout` (`None`: none came). Rebalance callbacks
    /// run inside it.
    fn poll_record(&self, timeout: Duration) -> Option<Result<InputRecord, KafkaError>>;
    /// Why the consumer can do nothing more (e.g. a fenced static member), if it cannot.
    fn fatal_error(&self) -> Option<String>;
    fn pause(&self, partition: i32) -> Result<(), KafkaError>;
    fn resume(&self, partition: i32) -> Result<(), KafkaError>;
    /// Fetches `partition` from `offset` next (`None`: from its beginning).
    fn seek(
        &self,
        partition: i32,
        offset: Option<i64>,
        timeout: Duration,
    ) -> Result<(), KafkaError>;
    /// The partitions this member holds now.
    fn assigned(&self) -> Result<Vec<i32>, KafkaError>;
    /// Commits (partition, next offset to read) to the group.
    fn commit(&self, offsets: &[(i32, i64)], mode: CommitMode) -> Result<(), KafkaError>;
    fn unsubscribe(&self);
}

/// The real consumer, borrowed, with the topic it reads.
pub(crate) struct TopicConsumer<'a, C: ConsumerContext> {
    pub consumer: &'a BaseConsumer<C>,
    pub topic: &'a str,
}

impl<C: ConsumerContext> TopicConsumer<'_, C> {
    /// Stops fetching these partitions, in one call (a whole new assignment at once).
    pub(crate) fn pause_all(&self, partitions: &[i32]) -> Result<(), KafkaError> {
        self.consumer
            .pause(&self.list(partitions.iter().map(|p| (*p, None))))
    }

    fn list(&self, partitions: impl IntoIterator<Item = (i32, Option<i64>)>) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for (partition, offset) in partitions {
            match offset {
                Some(offset) => {
                    let _ =
                        list.add_partition_offset(self.topic, partition, Offset::Offset(offset));
                }
                None => {
                    list.add_partition(self.topic, partition);
                }
            }
        }
        list
    }
}

impl<C: ConsumerContext> InputConsumer for TopicConsumer<'_, C> {
    fn poll_record(&self, timeout: Duration) -> Option<Result<InputRecord, KafkaError>> {
        let polled = self.consumer.poll(timeout)?;
        Some(polled.map(|message| InputRecord {
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp().to_millis(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
        }))
    }

    fn fatal_error(&self) -> Option<String> {
        let (code, reason) = self.consumer.client().fatal_error()?;
        Some(format!("{code:?}: {reason}"))
    }

    fn pause(&self, partition: i32) -> Result<(), KafkaError> {
        self.pause_all(&[partition])
    }

    fn resume(&self, partition: i32) -> Result<(), KafkaError> {
        self.consumer.resume(&self.list([(partition, None)]))
    }

    fn seek(
        &self,
        partition: i32,
        offset: Option<i64>,
        timeout: Duration,
    ) -> Result<(), KafkaError> {
        let offset = offset.map_or(Offset::Beginning, Offset::Offset);
        self.consumer.seek(self.topic, partition, offset, timeout)
    }

    fn assigned(&self) -> Result<Vec<i32>, KafkaError> {
        Ok(self
            .consumer
            .assignment()?
            .elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition())
            .collect())
    }

    fn commit(&self, offsets: &[(i32, i64)], mode: CommitMode) -> Result<(), KafkaError> {
        let list = self.list(offsets.iter().map(|(p, o)| (*p, Some(*o))));
        self.consumer.commit(&list, mode)
    }

    fn unsubscribe(&self) {
        self.consumer.unsubscribe();
    }
}

/// The changelog reader of the state updater: assigned changelog partitions by hand (no
/// group), read from given offsets, told apart by topic and partition.
pub(crate) trait RestoreConsumer: Send + Sync + 'static {
    /// One record read, borrowed from the consumer until dropped.
    type Record<'a>: Message
    where
        Self: 'a;
    /// The partition's (low, high) watermarks, asked of the broker.
    fn watermarks(
        &self,
        topic: &str,
        partition: i32,
        timeout: Duration,
    ) -> Result<(i64, i64), KafkaError>;
    /// The application's group's committed offset for the partition, if it has one.
    fn group_committed(
        &self,
        topic: &str,
        partition: i32,
        timeout: Duration,
    ) -> Result<Option<i64>, KafkaError>;
    /// Starts reading these (topic, partition) at these offsets, beside what it reads already.
    fn assign(&self, partitions: &[(&str, i32, i64)]) -> Result<(), KafkaError>;
    /// Stops reading these (topic, partition).
    fn unassign(&self, partitions: &[(&str, i32)]) -> Result<(), KafkaError>;
    /// The next record, or `PartitionEOF(partition)` when a partition has nothing more now,
    /// waiting at most `timeout` (`None`: nothing came).
    fn poll(&self, timeout: Duration) -> Option<Result<Self::Record<'_>, KafkaError>>;
    /// The next offset the consumer will fetch for the partition, if it knows it.
    fn position(&self, topic: &str, partition: i32) -> Result<Option<i64>, KafkaError>;
}

impl RestoreConsumer for BaseConsumer {
    type Record<'a> = BorrowedMessage<'a>;

    fn watermarks(
        &self,
        topic: &str,
        partition: i32,
        timeout: Duration,
    ) -> Result<(i64, i64), KafkaError> {
        self.fetch_watermarks(topic, partition, timeout)
    }

    fn group_committed(
        &self,
        topic: &str,
        partition: i32,
        timeout: Duration,
    ) -> Result<Option<i64>, KafkaError> {
        let mut list = TopicPartitionList::new();
        list.add_partition(topic, partition);
        let committed = self.committed_offsets(list, timeout)?;
        Ok(committed
            .find_partition(topic, partition)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) if o >= 0 => Some(o),
                _ => None,
            }))
    }

    fn assign(&self, partitions: &[(&str, i32, i64)]) -> Result<(), KafkaError> {
        let mut list = TopicPartitionList::new();
        for (topic, partition, offset) in partitions {
            list.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
        }
        self.incremental_assign(&list)
    }

    fn unassign(&self, partitions: &[(&str, i32)]) -> Result<(), KafkaError> {
        let mut list = TopicPartitionList::new();
        for (topic, partition) in partitions {
            list.add_partition(topic, *partition);
        }
        self.incremental_unassign(&list)
    }

    fn poll(&self, timeout: Duration) -> Option<Result<BorrowedMessage<'_>, KafkaError>> {
        BaseConsumer::poll(self, timeout)
    }

    fn position(&self, topic: &str, partition: i32) -> Result<Option<i64>, KafkaError> {
        let positions = Consumer::position(self)?;
        Ok(positions
            .find_partition(topic, partition)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            }))
    }
}
