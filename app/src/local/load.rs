//! The load generator: produces `word-NNNNN` keys drawn uniformly from a vocabulary to the
//! input topic at a rate that can be changed while it runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::Rng;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use tokio::task::JoinHandle;

use kstreams_engine::default_key_partitioner;

const TICK: Duration = Duration::from_millis(10);

/// Counts what the broker acknowledged and what it refused.
#[derive(Default)]
struct DeliveryCounts {
    delivered: AtomicU64,
    failed: AtomicU64,
}

struct CountingContext(Arc<DeliveryCounts>);

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let counter = match result {
            Ok(_) => &self.0.delivered,
            Err(_) => &self.0.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

pub struct LoadGenerator {
    rate: Arc<AtomicU64>,
    counts: Arc<DeliveryCounts>,
    producer: Arc<ThreadedProducer<CountingContext>>,
    task: JoinHandle<()>,
}

impl LoadGenerator {
    /// Produces with `client` (the broker and the user's client settings).
    pub fn start(
        mut client: ClientConfig,
        topic: &str,
        rate: u64,
        keys: u64,
    ) -> anyhow::Result<Self> {
        let counts = Arc::new(DeliveryCounts::default());
        let producer: ThreadedProducer<CountingContext> = default_key_partitioner(&mut client)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create_with_context(CountingContext(counts.clone()))
            .context("create the load generator's producer")?;
        let producer = Arc::new(producer);
        let rate = Arc::new(AtomicU64::new(rate));
        let task = tokio::spawn(produce_loop(
            producer.clone(),
            topic.to_string(),
            rate.clone(),
            keys.max(1),
        ));
        Ok(Self {
            rate,
            counts,
            producer,
            task,
        })
    }

    pub fn set_rate(&self, records_per_second: u64) {
        self.rate.store(records_per_second, Ordering::Relaxed);
    }

    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// Records the broker acknowledged, and records it refused.
    pub fn delivered(&self) -> (u64, u64) {
        (
            self.counts.delivered.load(Ordering::Relaxed),
            self.counts.failed.load(Ordering::Relaxed),
        )
    }

    /// Stops producing, waits (bounded) for what is in flight, and returns the final
    /// delivered and failed counts.
    pub async fn stop(self) -> (u64, u64) {
        self.task.abort();
        let producer = self.producer.clone();
        let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await;
        self.delivered()
    }
}

async fn produce_loop(
    producer: Arc<ThreadedProducer<CountingContext>>,
    topic: String,
    rate: Arc<AtomicU64>,
    keys: u64,
) {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    let mut owed = 0.0f64;
    loop {
        ticker.tick().await;
        let now = Instant::now();
        owed += rate.load(Ordering::Relaxed) as f64 * now.duration_since(last).as_secs_f64();
        // Never owe more than a second's worth (after a stall, do not burst).
        owed = owed.min(rate.load(Ordering::Relaxed) as f64);
        last = now;
        let mut rng = rand::rng();
        while owed >= 1.0 {
            let key = format!("word-{:05}", rng.random_range(0..keys));
            let record = BaseRecord::to(&topic).key(&key).payload("1");
            if producer.send(record).is_err() {
                break; // queue full: try again next tick
            }
            owed -= 1.0;
        }
    }
}
