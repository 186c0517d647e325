//! The seam between the runtime and the group consumer of the source topic: what the consumer
//! loop and the group commit ask of it, as a trait with the real librdkafka consumer behind it
//! here and a fake in the unit tests (no broker, no sleeps).

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
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
