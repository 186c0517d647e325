//! A small run of every benchmark section, so they cannot rot: each must complete with exact
//! counts and a full restore (speed is not asserted; figures live in docs/benchmarks.md).

use kstreams_suite::bench::{latency, recovery, throughput, Input, KeyDistribution, Report};
use kstreams_suite::chart::draw_keys_chart;
use kstreams_suite::{skip_without_private_broker, Storage};

#[test]
fn benchmark_smoke_run_completes_with_exact_counts() {
    if skip_without_private_broker("runs its brokers with chosen storage and CPUs") {
        return;
    }
    let mut report = Report::default();
    // sqlite, the tests' storage (memory:// has its own conformance test, broker_offsets.rs).
    for (keys, distribution) in [
        (500, KeyDistribution::Zipf),
        (500, KeyDistribution::Uniform),
        (50, KeyDistribution::Uniform),
    ] {
        let input = Input {
            records: 5_000,
            keys,
            distribution,
        };
        report
            .throughput
            .push(throughput(input, 4, Storage::Sqlite, None, None));
    }
    report.recovery.push(recovery(2_000, 4, Storage::Sqlite));
    report.latency.push(latency(500, 2, 4, Storage::Sqlite));
    println!("{}", report.markdown());

    assert!(report.all_counts_exact(), "{}", report.markdown());
    for run in &report.throughput {
        assert_eq!(run.word_count.processed.records, 5_000);
        // The record cache sends one count per key per commit (a few commits here).
        let keys = run
            .input
            .expected_counts()
            .iter()
            .filter(|&&n| n > 0)
            .count() as u64;
        let output = run.word_count.output_records;
        assert!(
            (keys..=5_000).contains(&output),
            "{output} counts out for {keys} keys"
        );
        assert!(run.word_count.peak_rss_bytes > 0, "peak RSS read");
        assert!(run.word_count.cpu_seconds > 0.0, "CPU time read");
    }
    let restart = &report.recovery[0];
    assert_eq!(
        restart.changelog_records, 2_000,
        "one changelog record per key"
    );
    assert_eq!(
        restart.empty_dir.restored_records, restart.changelog_records,
        "an empty state dir restores the whole changelog"
    );
    assert_eq!(
        restart.same_dir.restored_records, 0,
        "a clean restart on its own state dir restores nothing"
    );
    assert_eq!(report.latency[0].records, 1_000);
    assert!(report.latency[0].p50_ms <= report.latency[0].p99_ms);
    // The chart of the uniform rows (50 and 500 keys).
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("keys.svg");
    assert!(draw_keys_chart(&report.throughput, &chart).unwrap());
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.contains("word count, uniform, 4 partitions"), "{svg}");
}
