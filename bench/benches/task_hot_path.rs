//! The engine alone, one core, no broker: records/s through one word-count task (processor,
//! RocksDB-backed store, changelog and output records queued in librdkafka), committing every
//! 100,000 records; with the record cache (the default, 10 MiB: one changelog and one output
//! record per key per commit) and without it (`--cache-max-bytes 0`: both per input record).
//! `cargo bench --bench task_hot_path`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kstreams_engine::testing::TaskHotPath;
use kstreams_engine::{InputRecord, StoreMemorySettings};
use kstreams_suite::bench::word_count_topology;

const BATCH: usize = 10_000;
const BATCHES_PER_COMMIT: u64 = 10;

/// Batches of [`BATCH`] records that together name every one of `keys` keys (one batch when
/// `keys` <= `BATCH`), to be processed in turn: with 1M keys, a key comes back every 100 batches.
fn batches(keys: usize) -> Vec<Vec<InputRecord>> {
    let records = keys.max(BATCH);
    let all: Vec<InputRecord> = (0..records)
        .map(|i| InputRecord {
            partition: 0,
            offset: i as i64,
            timestamp: None,
            key: Some(format!("word-{}", (i * 7919) % keys).into_bytes()),
            value: Some(b"1".to_vec()),
        })
        .collect();
    all.chunks(BATCH).map(<[InputRecord]>::to_vec).collect()
}

fn hot_path(c: &mut Criterion) {
    let topology = word_count_topology("input-topic", "counts-topic");
    let mut group = c.benchmark_group("task_hot_path");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.measurement_time(Duration::from_secs(10));
    for (cache, cache_max_bytes) in [("cache_10MiB", 10 << 20), ("no_cache", 0)] {
        for keys in [1_000, 10_000, 100_000, 1_000_000] {
            let dir = tempfile::tempdir().unwrap();
            let memory = StoreMemorySettings {
                cache_max_bytes,
                ..StoreMemorySettings::default()
            };
            let mut task = TaskHotPath::new(&topology, dir.path(), memory).unwrap();
            let mut batches = batches(keys);
            let rounds = batches.len() as u64;
            let mut next = 0;
            group.bench_function(format!("word_count_{keys}_keys_{cache}"), |b| {
                b.iter_custom(|iterations| {
                    let started = Instant::now();
                    for i in 0..iterations {
                        let records = &mut batches[(next % rounds) as usize];
                        next += 1;
                        task.process(records).unwrap();
                        // Input moves on: every record is new (none "already applied").
                        for record in records.iter_mut() {
                            record.offset += (rounds as usize * BATCH) as i64;
                        }
                        if (i + 1) % BATCHES_PER_COMMIT == 0 {
                            task.commit().unwrap();
                        }
                    }
                    task.commit().unwrap();
                    started.elapsed()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
