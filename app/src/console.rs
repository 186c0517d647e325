//! Console tools of the original walkthrough: produce `key:value` lines, print `key value`
//! lines, and create topics (Debian's kcat cannot talk to the local broker).

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use crate::broker_arg;

#[derive(Args, Debug)]
pub struct ProduceArgs {
    #[arg(long)]
    topic: String,
    #[arg(long = "broker", env = "KAFKA_BROKER", default_value = "localhost:9092", value_parser = broker_arg)]
    broker: String,
    /// Separator between key and value on each line.
    #[arg(long, default_value = ":")]
    separator: String,
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    #[arg(long)]
    topic: String,
    #[arg(long = "broker", env = "KAFKA_BROKER", default_value = "localhost:9092", value_parser = broker_arg)]
    broker: String,
    /// Start from the earliest record instead of new records only.
    #[arg(long)]
    from_beginning: bool,
    /// Exit after printing this many records.
    #[arg(long)]
    max_records: Option<u64>,
    /// Exit once no record has arrived for this long (default: run until interrupted).
    #[arg(long)]
    idle_timeout_ms: Option<u64>,
    /// Extra librdkafka consumer setting, `key=value` (repeatable), as kcat's -X.
    #[arg(short = 'X', long = "client-config", value_parser = key_value)]
    client_config: Vec<(String, String)>,
}

pub fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not key=value"))
}

#[derive(Args, Debug)]
pub struct CreateTopicArgs {
    /// Topic name.
    pub(crate) name: String,
    #[arg(long = "broker", env = "KAFKA_BROKER", default_value = "localhost:9092", value_parser = broker_arg)]
    pub(crate) broker: String,
    #[arg(long, default_value_t = 4)]
    pub(crate) partitions: i32,
    #[arg(long, default_value_t = 1)]
    pub(crate) replication_factor: i32,
    /// Make it a compacted topic (cleanup.policy=compact).
    #[arg(long)]
    pub(crate) compact: bool,
}

pub async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.broker)
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "20")
        .create()
        .context("create producer")?;
    let mut produced = 0u64;
    let stdin = std::io::stdin();
    for (index, line) in stdin.lock().lines().enumerate() {
        let line = line.context("read stdin")?;
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once(&args.separator) else {
            eprintln!(
                "line {}: no `{}` separator, skipped: {line:?}",
                index + 1,
                args.separator
            );
            continue;
        };
        let mut record = BaseRecord::<str, str>::to(&args.topic)
            .key(key)
            .payload(value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                    returned,
                )) => {
                    std::thread::sleep(Duration::from_millis(10));
                    record = returned;
                }
                Err((e, _)) => bail!("produce to `{}`: {e}", args.topic),
            }
        }
        produced += 1;
    }
    producer
        .flush(Duration::from_secs(60))
        .context("flush producer")?;
    eprintln!("produced {produced} records to {}", args.topic);
    Ok(())
}

pub async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &args.broker)
        .set("group.id", "kstreams-count-console")
        .set("enable.auto.commit", "false");
    for (key, value) in &args.client_config {
        client.set(key, value);
    }
    let consumer: BaseConsumer = client.create().context("create consumer")?;
    let metadata = consumer
        .fetch_metadata(Some(&args.topic), Duration::from_secs(10))
        .context("read topic metadata")?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == args.topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .filter(|n| *n > 0)
        .with_context(|| format!("topic `{}` does not exist", args.topic))?;
    let mut assignment = TopicPartitionList::new();
    let start = if args.from_beginning {
        Offset::Beginning
    } else {
        Offset::End
    };
    for partition in 0..partitions as i32 {
        assignment.add_partition_offset(&args.topic, partition, start)?;
    }
    consumer.assign(&assignment)?;
    let idle_timeout = args.idle_timeout_ms.map(Duration::from_millis);
    let mut last_record = Instant::now();
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    loop {
        if args.max_records.is_some_and(|max| printed >= max) {
            break;
        }
        if idle_timeout.is_some_and(|t| last_record.elapsed() >= t) {
            break;
        }
        match tokio::task::block_in_place(|| consumer.poll(Duration::from_millis(100))) {
            Some(Ok(message)) => {
                let text = |bytes: Option<&[u8]>| {
                    bytes.map_or("null".to_string(), |b| {
                        String::from_utf8_lossy(b).into_owned()
                    })
                };
                writeln!(out, "{} {}", text(message.key()), text(message.payload()))?;
                printed += 1;
                last_record = Instant::now();
            }
            Some(Err(e)) => eprintln!("consume: {e}"),
            None => out.flush()?,
        }
    }
    out.flush()?;
    Ok(())
}

pub async fn create_topic(args: CreateTopicArgs) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.broker)
        .create()
        .context("create admin client")?;
    let mut topic = NewTopic::new(
        &args.name,
        args.partitions,
        TopicReplication::Fixed(args.replication_factor),
    );
    if args.compact {
        topic = topic.set("cleanup.policy", "compact");
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin
        .create_topics([&topic], &options)
        .await
        .context("create topic")?
    {
        match result {
            Ok(name) => eprintln!("created topic {name} ({} partitions)", args.partitions),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                eprintln!("topic {name} already exists")
            }
            Err((name, code)) => bail!("create topic `{name}`: {code}"),
        }
    }
    Ok(())
}
