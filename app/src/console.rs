//! Console tools of the original walkthrough: produce `key:value` lines, print `key value`
//! lines, and create topics (Debian's kcat cannot talk to the local broker).

use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::client_args::ClientArgs;
use kstreams_engine::default_key_partitioner;

#[derive(Args, Debug)]
pub struct ProduceArgs {
    #[arg(long)]
    topic: String,
    #[command(flatten)]
    client: ClientArgs,
    /// Separator between key and value on each line.
    #[arg(long, default_value = ":")]
    separator: String,
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    #[arg(long)]
    topic: String,
    #[command(flatten)]
    client: ClientArgs,
    /// Start from the earliest record instead of new records only.
    #[arg(long)]
    from_beginning: bool,
    /// Exit after printing this many records.
    #[arg(long)]
    max_records: Option<u64>,
    /// Exit once no record has arrived for this long (default: run until interrupted).
    #[arg(long)]
    idle_timeout_ms: Option<u64>,
}

#[derive(Args, Debug)]
pub struct CreateTopicArgs {
    /// Topic name.
    pub(crate) name: String,
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    #[arg(long, default_value_t = 4)]
    pub(crate) partitions: i32,
    /// Replication factor (-1: the broker's default).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub(crate) replication_factor: i32,
    /// Make it a compacted topic (cleanup.policy=compact).
    #[arg(long)]
    pub(crate) compact: bool,
}

/// What the broker acknowledged, and the first refusal.
#[derive(Default)]
struct Deliveries {
    delivered: u64,
    failed: u64,
    first_error: Option<String>,
}

struct DeliveryCounter(Arc<Mutex<Deliveries>>);

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let mut deliveries = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(_) => deliveries.delivered += 1,
            Err((error, _)) => {
                deliveries.failed += 1;
                deliveries
                    .first_error
                    .get_or_insert_with(|| error.to_string());
            }
        }
    }
}

/// Produces stdin's `key<separator>value` lines; fails (non-zero exit) unless the broker
/// acknowledged every record, saying how many failed and why.
pub async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let (_, mut config) = args.client.tool_config()?;
    default_key_partitioner(&mut config)
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "20");
    let deliveries = Arc::new(Mutex::new(Deliveries::default()));
    let producer: ThreadedProducer<DeliveryCounter> = config
        .create_with_context(DeliveryCounter(deliveries.clone()))
        .context("create producer")?;
    let mut sent = 0u64;
    let mut skipped = 0u64;
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
            skipped += 1;
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
        sent += 1;
    }
    // Waits for every delivery report (each record's message.timeout.ms bounds it).
    let flushed = tokio::task::block_in_place(|| producer.flush(Duration::from_secs(600)));
    let deliveries = deliveries.lock().unwrap_or_else(|e| e.into_inner());
    let unreported = sent - deliveries.delivered - deliveries.failed;
    if deliveries.failed > 0 || unreported > 0 || flushed.is_err() {
        bail!(
            "{} of {sent} records to `{}` were not delivered{}{}",
            deliveries.failed + unreported,
            args.topic,
            deliveries
                .first_error
                .as_ref()
                .map(|e| format!("; first error: {e}"))
                .unwrap_or_default(),
            flushed
                .err()
                .map(|e| format!("; flush: {e}"))
                .unwrap_or_default(),
        );
    }
    eprintln!(
        "produced {} records to {}{}",
        deliveries.delivered,
        args.topic,
        if skipped > 0 {
            format!(" ({skipped} lines without a separator skipped)")
        } else {
            String::new()
        }
    );
    Ok(())
}

pub async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    let (_, mut client) = args.client.tool_config()?;
    client
        .set("group.id", "kstreams-count-console")
        .set("enable.auto.commit", "false");
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
                let line = writeln!(out, "{} {}", text(message.key()), text(message.payload()));
                if reader_gone(line)? {
                    return Ok(());
                }
                printed += 1;
                last_record = Instant::now();
            }
            Some(Err(e)) => eprintln!("consume: {e}"),
            None => {
                if reader_gone(out.flush())? {
                    return Ok(());
                }
            }
        }
    }
    reader_gone(out.flush())?;
    Ok(())
}

/// Whether a write to stdout failed because its reader went away (`consume | head`): the
/// consumer then stops quietly, as Unix tools do, instead of ending with "Broken pipe".
fn reader_gone(written: std::io::Result<()>) -> anyhow::Result<bool> {
    match written {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(true),
        Err(e) => Err(anyhow::Error::new(e).context("writing to stdout")),
    }
}

pub async fn create_topic(args: CreateTopicArgs) -> anyhow::Result<()> {
    let (_, config) = args.client.tool_config()?;
    let admin: AdminClient<DefaultClientContext> =
        config.create().context("create admin client")?;
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
