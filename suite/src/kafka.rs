//! Kafka-protocol operations on a test broker over rdkafka: topics, producing, reading back,
//! offsets, the group as DescribeGroups answers it, and waiting for exact counts.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use crate::{poll_every, unique, Broker, LocatedRecord, RawRecord, ReadRecord};
use kstreams_engine::default_key_partitioner;

impl Broker {
    pub(crate) fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.address());
        for (key, value) in &self.client_settings {
            config.set(key, value);
        }
        config
    }

    fn admin(&self) -> AdminClient<DefaultClientContext> {
        self.client().create().unwrap()
    }

    pub fn create_topic(&self, name: &str, partitions: i32) {
        self.create_topic_with(name, partitions, &[]);
    }

    /// Creates a topic with topic-level configs, e.g. `("cleanup.policy", "compact")`.
    /// Deletes a topic (as an operator's mistake would), and waits until the broker no longer
    /// lists it.
    pub fn delete_topic(&self, name: &str) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let results = runtime
            .block_on(self.admin().delete_topics(&[name], &AdminOptions::new()))
            .unwrap();
        for result in results {
            result.unwrap_or_else(|(name, code)| panic!("delete topic {name}: {code}"));
        }
        let gone = crate::poll_until(Duration::from_secs(30), || self.partitions(name).is_none());
        assert!(
            gone.is_some(),
            "topic {name} still listed 30 s after its deletion"
        );
    }

    pub fn create_topic_with(&self, name: &str, partitions: i32, configs: &[(&str, &str)]) {
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        for (key, value) in configs {
            topic = topic.set(key, value);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let results = runtime
            .block_on(self.admin().create_topics([&topic], &AdminOptions::new()))
            .unwrap();
        for result in results {
            result.unwrap_or_else(|(name, code)| panic!("create topic {name}: {code}"));
        }
    }

    /// Partition count, or `None` if the topic does not exist.
    pub fn partitions(&self, topic: &str) -> Option<usize> {
        let consumer: BaseConsumer = self.client().create().unwrap();
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().len())
    }

    /// One config value of a topic, as the broker describes it.
    pub fn topic_config(&self, topic: &str, key: &str) -> Option<String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let results = runtime
            .block_on(
                self.admin()
                    .describe_configs([&ResourceSpecifier::Topic(topic)], &AdminOptions::new()),
            )
            .unwrap();
        results
            .into_iter()
            .flatten()
            .find_map(|resource| resource.get(key).and_then(|e| e.value.clone()))
    }

    /// Produces records (idempotent, lz4) and waits until all are acknowledged.
    pub fn produce(&self, topic: &str, records: impl IntoIterator<Item = RawRecord>) {
        let producer: ThreadedProducer<DefaultProducerContext> =
            default_key_partitioner(&mut self.client())
                .set("enable.idempotence", "true")
                .set("compression.type", "lz4")
                .set("linger.ms", "10")
                .create()
                .unwrap();
        for (key, value, partition) in records {
            let mut record = BaseRecord::<[u8], [u8]>::to(topic);
            record.key = key.as_deref();
            record.payload = value.as_deref();
            record.partition = partition;
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((
                        KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                        r,
                    )) => {
                        producer.poll(Duration::from_millis(10));
                        record = r;
                    }
                    Err((e, _)) => panic!("produce: {e}"),
                }
            }
        }
        producer.flush(Duration::from_secs(60)).unwrap();
    }

    /// Produces `key:value` style string records, partitioned by key.
    pub fn produce_strings<'a>(
        &self,
        topic: &str,
        records: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        self.produce(
            topic,
            records.into_iter().map(|(k, v)| {
                (
                    Some(k.as_bytes().to_vec()),
                    Some(v.as_bytes().to_vec()),
                    None,
                )
            }),
        )
    }

    /// The group as the broker's DescribeGroups answers it: its state and its members' ids.
    pub fn describe_group(&self, group: &str) -> Result<(String, Vec<String>), String> {
        let consumer: BaseConsumer = self.client().create().map_err(|e| e.to_string())?;
        let list = consumer
            .fetch_group_list(Some(group), Duration::from_secs(10))
            .map_err(|e| format!("DescribeGroups: {e}"))?;
        let found = list
            .groups()
            .iter()
            .find(|g| g.name() == group)
            .ok_or_else(|| format!("group {group} not in the answer"))?;
        Ok((
            found.state().to_owned(),
            found.members().iter().map(|m| m.id().to_owned()).collect(),
        ))
    }

    /// Where every partition of a topic ends for a read_committed reader (the last stable
    /// offset: the high watermark unless a transaction is open), by partition.
    pub fn end_offsets(&self, topic: &str) -> Vec<i64> {
        self.ends(topic, "read_committed")
    }

    /// High watermark of every partition of a topic as a read_uncommitted reader sees it: past
    /// the records of open transactions, which [`Broker::end_offsets`] stops before.
    pub fn end_offsets_uncommitted(&self, topic: &str) -> Vec<i64> {
        self.ends(topic, "read_uncommitted")
    }

    fn ends(&self, topic: &str, isolation: &str) -> Vec<i64> {
        let consumer: BaseConsumer = self
            .client()
            .set("isolation.level", isolation)
            .create()
            .unwrap();
        (0..self.partitions(topic).unwrap_or(0) as i32)
            .map(|p| {
                consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .unwrap()
                    .1
            })
            .collect()
    }

    /// Total records in a topic (high minus low watermark, summed over partitions).
    pub fn record_count(&self, topic: &str) -> i64 {
        let consumer: BaseConsumer = self.client().create().unwrap();
        (0..self.partitions(topic).unwrap_or(0) as i32)
            .map(|p| {
                let (low, high) = consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .unwrap();
                high - low
            })
            .sum()
    }

    /// Every record of a topic as it is now: (key, value) pairs in partition order.
    pub fn read_all(&self, topic: &str) -> Vec<ReadRecord> {
        self.read_all_located(topic)
            .into_iter()
            .map(|(_, key, value)| (key, value))
            .collect()
    }

    /// Every record of a topic as it is now, with its partition, in partition order.
    pub fn read_all_located(&self, topic: &str) -> Vec<LocatedRecord> {
        let consumer: BaseConsumer = self
            .client()
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            // tansu (sqlite) answers a fetch in time proportional to the records it returns
            // and the records after them; small fetches keep each answer quick.
            .set("max.partition.fetch.bytes", "65536")
            .create()
            .unwrap();
        let partitions = self.partitions(topic).unwrap_or(0) as i32;
        let mut remaining = HashMap::new();
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap();
            if high > low {
                remaining.insert(p, high);
                assignment
                    .add_partition_offset(topic, p, Offset::Offset(low))
                    .unwrap();
            }
        }
        let mut records = Vec::new();
        if remaining.is_empty() {
            return records;
        }
        consumer.assign(&assignment).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = HashMap::new();
        while !remaining.is_empty() {
            assert!(
                Instant::now() < deadline,
                "reading {topic} did not reach its end: {remaining:?} left (last offsets read: {last:?})"
            );
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    last.insert(m.partition(), m.offset());
                    records.push((
                        m.partition(),
                        m.key().map(<[u8]>::to_vec),
                        m.payload().map(<[u8]>::to_vec),
                    ));
                    if remaining
                        .get(&m.partition())
                        .is_some_and(|high| m.offset() + 1 >= *high)
                    {
                        remaining.remove(&m.partition());
                    }
                }
                // The broker says this is the end (offsets below the high watermark may be
                // unreadable, e.g. batches of a producer killed mid-write).
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    remaining.remove(&p);
                }
                _ => {}
            }
        }
        records
    }

    /// The last value per key of a string topic.
    pub fn latest_values(&self, topic: &str) -> HashMap<String, String> {
        let text = |b: Option<Vec<u8>>| String::from_utf8(b.unwrap_or_default()).unwrap();
        self.read_all(topic)
            .into_iter()
            .map(|(k, v)| (text(k), text(v)))
            .collect()
    }

    /// Waits until the last count per key on `topic` equals `expected`; returns the mismatches
    /// of the last read if it never does.
    pub fn wait_for_counts(
        &self,
        topic: &str,
        expected: &HashMap<String, u64>,
        timeout: Duration,
    ) -> Result<(), String> {
        let mut wrong = Vec::new();
        let counted = poll_every(Duration::from_millis(500), timeout, || {
            let actual = self.latest_values(topic);
            wrong = expected
                .iter()
                .filter(|(k, n)| actual.get(*k) != Some(&n.to_string()))
                .map(|(k, n)| format!("{k}: expected {n}, got {:?}", actual.get(k)))
                .chain(
                    actual
                        .keys()
                        .filter(|k| !expected.contains_key(*k))
                        .map(|k| format!("{k}: unexpected key")),
                )
                .collect();
            wrong.is_empty()
        });
        match counted {
            Some(_) => Ok(()),
            None => Err(format!(
                "{} keys wrong, e.g. {:?}",
                wrong.len(),
                &wrong[..wrong.len().min(5)]
            )),
        }
    }
}
