//! A small run of the throughput benchmark, so it cannot rot: it must complete with exact
//! counts and a full restore (speed is not asserted; figures live in docs/benchmarks.md).

use kstreams_suite::bench::{run, BenchConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn benchmark_smoke_run_completes_with_exact_counts() {
    let report = run(BenchConfig {
        records: 5_000,
        keys: 500,
        partitions: 4,
    })
    .await;
    println!("{}", report.table());
    assert!(report.counts_exact);
    assert_eq!(report.engine.records, 5_000);
    assert!(
        report.restore.records >= report.plain_read.records,
        "{}",
        report.table()
    );
}
