//! Input for the word count: fixed record sets with their expected counts, and a steady
//! producer (`Load`) that knows every count it got acknowledged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use crate::Broker;
use kstreams_engine::default_key_partitioner;

/// `count` records over `keys` keys (`key-<n>`), with the expected count per key.
pub fn word_count_input(
    count: usize,
    keys: usize,
) -> (Vec<(String, String)>, HashMap<String, u64>) {
    let mut expected: HashMap<String, u64> = HashMap::new();
    let records = (0..count)
        .map(|i| {
            let key = format!("key-{}", (i * 7919) % keys);
            *expected.entry(key.clone()).or_default() += 1;
            (key, format!("value-{i}"))
        })
        .collect();
    (records, expected)
}

/// One record for each of the keys `key-0` .. `key-<keys - 1>`, valued `round-<round>`.
pub fn produce_round(broker: &Broker, topic: &str, round: usize, keys: usize) {
    let records: Vec<(String, String)> = (0..keys)
        .map(|k| (format!("key-{k}"), format!("round-{round}")))
        .collect();
    broker.produce_strings(topic, records.iter().map(|(k, v)| (k.as_str(), v.as_str())));
}

/// Produces `records` in 100 chunks spread over ~20 s, so that crashes land mid-stream.
pub fn produce_paced(broker: &Broker, topic: &str, records: &[(String, String)]) {
    for chunk in records.chunks(records.len().div_ceil(100)) {
        broker.produce_strings(topic, chunk.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        // Pacing the load generator (not synchronisation): ~100 chunks over ~20 s.
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A producer thread writing `key-<n>` records at a steady rate until stopped; it knows the
/// exact count per key it got acknowledged.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<HashMap<String, u64>>>,
    stored: StoredInput,
}

/// Per partition, the last offset the broker acknowledged: input stored there and readable.
#[derive(Clone, Default)]
struct StoredInput {
    last_offset: Arc<Mutex<HashMap<i32, i64>>>,
}

impl ClientContext for StoredInput {}

impl ProducerContext for StoredInput {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Ok(message) = result {
            let mut last = self.last_offset.lock().unwrap();
            let offset = last.entry(message.partition()).or_insert(-1);
            *offset = (*offset).max(message.offset());
        }
    }
}

impl Load {
    /// Produces about `rate` records/s over `keys` keys to `topic`, in 20 ms batches.
    pub fn start(broker: &Broker, topic: &str, rate: u64, keys: u64) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stored = StoredInput::default();
        let producer: ThreadedProducer<StoredInput> = default_key_partitioner(&mut broker.client())
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create_with_context(stored.clone())
            .unwrap();
        let (topic, flag) = (topic.to_string(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut expected: HashMap<String, u64> = HashMap::new();
            let started = Instant::now();
            let mut sent = 0u64;
            let mut rng = rand::rng();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
                while sent < due {
                    let key = format!("key-{}", rand::Rng::random_range(&mut rng, 0..keys));
                    let record = BaseRecord::to(&topic).key(&key).payload("1");
                    match producer.send(record) {
                        Ok(()) => {
                            *expected.entry(key).or_default() += 1;
                            sent += 1;
                        }
                        Err(_) => break, // queue full: next round
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            producer
                .flush(Duration::from_secs(30))
                .expect("every load record acknowledged");
            expected
        });
        Load {
            stop,
            thread: Some(thread),
            stored,
        }
    }

    /// The last offset of `partition` the broker acknowledged so far: from then on, a consumer
    /// that has processed less has input waiting for it.
    pub fn stored_up_to(&self, partition: i32) -> Option<i64> {
        self.stored
            .last_offset
            .lock()
            .unwrap()
            .get(&partition)
            .copied()
    }

    /// Stops producing; returns the exact count per key produced.
    pub fn finish(mut self) -> HashMap<String, u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().expect("load thread")
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
