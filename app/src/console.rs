//! Console tools of the original walkthrough: produce `key:value` lines, print `key value`
//! lines (or JSON, with nulls and headers), and create topics (Debian's kcat cannot talk to
//! the local broker).

use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
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
    /// Send an empty key as no key and an empty value as a null value (a tombstone), like
    /// kcat's -Z.
    #[arg(short = 'Z', long)]
    null_empty: bool,
    /// A header on every record, `NAME=VALUE` (repeatable), like kcat's -H.
    #[arg(short = 'H', long = "header", value_name = "NAME=VALUE", value_parser = parse_key_value)]
    headers: Vec<(String, String)>,
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    #[arg(long)]
    topic: String,
    #[command(flatten)]
    client: ClientArgs,
    /// Start from the earliest record instead of new records only (`--offset beginning`).
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Read only this partition (default: every partition).
    #[arg(long)]
    partition: Option<i32>,
    /// Where to start: `beginning`, `end` (the default: new records only) or an offset (with
    /// --partition).
    #[arg(long, value_parser = parse_start)]
    offset: Option<Start>,
    /// Exit once every partition read is at the end it had when consume started (kcat's -e).
    #[arg(short = 'e', long)]
    exit_at_end: bool,
    /// Exit after printing this many records.
    #[arg(long)]
    max_records: Option<u64>,
    /// Exit once no record has arrived for this long (default: run until interrupted).
    #[arg(long)]
    idle_timeout_ms: Option<u64>,
    /// Print one JSON object per record (topic, partition, offset, key, value, headers; a
    /// missing key or value as null) instead of `key value` lines, like kcat's -J.
    #[arg(long)]
    json: bool,
}

/// Where consume starts reading a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    Beginning,
    End,
    At(i64),
}

fn parse_start(value: &str) -> Result<Start, String> {
    match value {
        "beginning" => Ok(Start::Beginning),
        "end" => Ok(Start::End),
        offset => match offset.parse::<i64>() {
            Ok(offset) if offset >= 0 => Ok(Start::At(offset)),
            _ => Err(format!(
                "`{offset}` is neither `beginning`, `end` nor an offset (a number from 0)"
            )),
        },
    }
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
    /// A topic setting, `key=value` (repeatable), as kafka-topics' --config: e.g.
    /// `--config retention.ms=-1`.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub(crate) configs: Vec<(String, String)>,
    /// Accept an existing topic whatever its partitions (the local runner reuses one).
    #[arg(skip)]
    pub(crate) any_existing_partitions: bool,
}

fn parse_key_value(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("`{value}` is not key=value")),
    }
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
    let headers = args
        .headers
        .iter()
        .fold(OwnedHeaders::new(), |headers, (name, value)| {
            headers.insert(Header {
                key: name,
                value: Some(value),
            })
        });
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
        let mut record = BaseRecord::<str, str>::to(&args.topic);
        if !(args.null_empty && key.is_empty()) {
            record = record.key(key);
        }
        if !(args.null_empty && value.is_empty()) {
            record = record.payload(value);
        }
        if !args.headers.is_empty() {
            record = record.headers(headers.clone());
        }
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
        .set("enable.auto.commit", "false")
        // The end of a partition, for --exit-at-end: its last offset may hold no record to
        // read (a transaction marker, or aborted records a read_committed reader skips).
        .set("enable.partition.eof", args.exit_at_end.to_string());
    let consumer: BaseConsumer = client.create().context("create consumer")?;
    let partitions = partition_count(consumer.client(), &args.topic)?;
    if partitions == 0 {
        bail!("topic `{}` does not exist", args.topic);
    }
    let read: Vec<i32> = match args.partition {
        Some(p) if (0..partitions as i32).contains(&p) => vec![p],
        Some(p) => bail!(
            "topic `{}` has no partition {p} ({partitions} partitions)",
            args.topic
        ),
        None => (0..partitions as i32).collect(),
    };
    let start = match (args.offset, args.from_beginning) {
        (Some(Start::At(_)), _) if args.partition.is_none() => {
            bail!("--offset with a number needs --partition")
        }
        (Some(start), _) => start,
        (None, true) => Start::Beginning,
        (None, false) => Start::End,
    };
    let mut assignment = TopicPartitionList::new();
    // Where each partition ends now, for --exit-at-end: partitions with nothing left to read.
    let mut unfinished = std::collections::HashMap::new();
    for &partition in &read {
        let (low, high) = consumer
            .fetch_watermarks(&args.topic, partition, Duration::from_secs(10))
            .with_context(|| format!("read the offsets of partition {partition}"))?;
        let (offset, first) = match start {
            Start::Beginning => (Offset::Beginning, low),
            Start::End => (Offset::End, high),
            Start::At(offset) => (Offset::Offset(offset), offset.max(low)),
        };
        assignment.add_partition_offset(&args.topic, partition, offset)?;
        if first < high {
            unfinished.insert(partition, high);
        }
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
        if args.exit_at_end && unfinished.is_empty() {
            break;
        }
        if idle_timeout.is_some_and(|t| last_record.elapsed() >= t) {
            break;
        }
        match tokio::task::block_in_place(|| consumer.poll(Duration::from_millis(100))) {
            Some(Ok(message)) => {
                let line = if args.json {
                    writeln!(out, "{}", record_json(&message))
                } else {
                    let text = |bytes: Option<&[u8]>| {
                        bytes.map_or("null".to_string(), |b| {
                            String::from_utf8_lossy(b).into_owned()
                        })
                    };
                    writeln!(out, "{} {}", text(message.key()), text(message.payload()))
                };
                if reader_gone(line)? {
                    return Ok(());
                }
                let partition = message.partition();
                if unfinished
                    .get(&partition)
                    .is_some_and(|end| message.offset() + 1 >= *end)
                {
                    unfinished.remove(&partition);
                }
                printed += 1;
                last_record = Instant::now();
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                unfinished.remove(&partition);
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

/// One record as consume --json prints it: bytes as (lossy) UTF-8 text, a missing key, value
/// or header value as null.
fn record_json<M: Message>(message: &M) -> serde_json::Value {
    let text = |bytes: Option<&[u8]>| bytes.map(|b| String::from_utf8_lossy(b).into_owned());
    let headers: Vec<serde_json::Value> = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| serde_json::json!({"name": h.key, "value": text(h.value)}))
                .collect()
        })
        .unwrap_or_default();
    serde_json::json!({
        "topic": message.topic(),
        "partition": message.partition(),
        "offset": message.offset(),
        "key": text(message.key()),
        "value": text(message.payload()),
        "headers": headers,
    })
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
    for (key, value) in &args.configs {
        topic = topic.set(key, value);
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
                // As asked, or not: a topic with other partitions counts keys elsewhere.
                let existing = partition_count(admin.inner(), &name)? as i32;
                if existing != args.partitions && !args.any_existing_partitions {
                    bail!(
                        "topic `{name}` already exists with {existing} partitions, not {}",
                        args.partitions
                    );
                }
                eprintln!("topic {name} already exists ({existing} partitions)")
            }
            Err((name, code)) => bail!("create topic `{name}`: {code}"),
        }
    }
    Ok(())
}

/// How many partitions `topic` has, as the broker's metadata says (0: no such topic).
pub(crate) fn partition_count<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
) -> anyhow::Result<usize> {
    let metadata = client
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("read the metadata of topic `{topic}`"))?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map_or(0, |t| t.partitions().len()))
}
