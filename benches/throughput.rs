//! `cargo bench --bench throughput`: the word count against the plain-pipe ceiling, and
//! restore against a plain read, on one local tansu broker; prints a Markdown table.
//! Sizes: BENCH_RECORDS (default 200000), BENCH_KEYS (10000), BENCH_PARTITIONS (4).

use kstreams_suite::bench::{run, BenchConfig};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes --bench; nothing else is accepted.
    let config = BenchConfig {
        records: env("BENCH_RECORDS", 200_000),
        keys: env("BENCH_KEYS", 10_000),
        partitions: env("BENCH_PARTITIONS", 4) as i32,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = runtime.block_on(run(config));
    println!("{}", report.table());
    assert!(report.counts_exact, "the word count's output was not exact");
}
