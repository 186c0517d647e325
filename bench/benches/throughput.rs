//! `cargo bench --bench throughput` (or `scripts/bench.sh`): every end-to-end table of
//! docs/benchmarks.md in one run, on local tansu brokers, printed as Markdown as it goes.
//!
//! Sizes and sections (defaults in brackets; lists are comma-separated):
//! - BENCH_SECTIONS [throughput,memory,recovery,beside,latency,scaling,failover,queries]
//! - throughput: BENCH_RECORDS [1000000], BENCH_KEYS [1000,10000,100000,1000000],
//!   BENCH_DISTRIBUTIONS [uniform,zipf], BENCH_PARTITIONS [4,16], memory:// storage
//! - memory (peak RSS, each key once): BENCH_MEMORY_KEYS [1000000,10000000], 4 partitions
//! - recovery: BENCH_RECOVERY_KEYS [1000000], 4 partitions, BENCH_RECOVERY_STORAGE [sqlite]
//!   broker storages (`sqlite,memory` for both)
//! - beside (sqlite storage): a restore of BENCH_BESIDE_CHANGELOG [1000000] changelog records on
//!   partition 0 while the other tasks process BENCH_BESIDE_RECORDS [1000000] input records
//!   (10k keys), against the same input with nothing to restore; 4 partitions
//! - latency (sqlite storage): BENCH_LATENCY_RATE [2000] records/s for BENCH_LATENCY_SECONDS [20]
//! - scaling (memory://, BENCH_SCALING_RECORDS [1000000] over 10k keys):
//!   BENCH_SCALING_PARTITIONS [1,2,4,8,16];
//!   with BENCH_PIN=1 the word count runs on as many CPUs as partitions (taskset) and the
//!   broker on the CPUs above them.
//! - failover (three instances, the defaults): BENCH_FAILOVER_REPLICAS [0,1,2] standby
//!   replicas, BENCH_FAILOVER_KEYS [400000] keys (a changelog record each), the instance
//!   running the most tasks SIGKILLed once every standby caught up; BENCH_FAILOVER_STORAGE
//!   [sqlite] the broker storage (memory:// runs a million changelog records per partition in
//!   minutes).
//! - queries (sqlite storage, two instances, the defaults): BENCH_QUERY_KEYS [100000] keys
//!   counted, then BENCH_QUERIES [20000] key queries asked of one instance while a load of
//!   BENCH_QUERY_LOAD [2000] records/s is counted; p50 and p99 of local and forwarded answers
//! - BENCH_APP_ARGS: extra kstreams-count flags for every run (default: none, the defaults),
//!   e.g. `--processing-guarantee exactly_once_v2`; BENCH_COMMIT_INTERVAL_MS [30000] the commit
//!   interval (200 is exactly-once's default); BENCH_THROUGHPUT_STORAGE [memory] the throughput
//!   section's broker storage (`sqlite`: what the tests run, with transactions);
//!   BENCH_PIPE_PRODUCERS [1] producers of the pipes, an input partition's records through one
//!   (the partition count models the word count's producer per task).
//! - BENCH_CHART [$CARGO_TARGET_DIR/bench-keys.svg]: where the chart of throughput and peak RSS
//!   against distinct keys goes (drawn when some input was measured at two key counts or more).

use kstreams_suite::bench::{
    failover_with_standbys, latency, parse_list, recovery, restore_beside, throughput, Input,
    KeyDistribution, Report,
};
use kstreams_suite::chart::draw_keys_chart;
use kstreams_suite::query_bench::query_latency;
use kstreams_suite::Storage;

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn list(name: &str, default: &str) -> Vec<u64> {
    parse_list(&setting(name, default))
}

fn distribution(name: &str) -> KeyDistribution {
    match name.trim() {
        "uniform" => KeyDistribution::Uniform,
        "zipf" => KeyDistribution::Zipf,
        other => panic!("BENCH_DISTRIBUTIONS: `{other}` is neither uniform nor zipf"),
    }
}

/// The broker storages a section runs on, from `name` (`sqlite`, `memory`, or both).
fn storages(name: &str, default: &str) -> Vec<Storage> {
    let value = setting(name, default);
    let parse = |storage: &str| {
        Storage::named(storage.trim())
            .unwrap_or_else(|| panic!("{name}: `{storage}` is neither memory nor sqlite"))
    };
    value.split(',').map(parse).collect()
}

fn main() {
    let sections = setting(
        "BENCH_SECTIONS",
        "throughput,memory,recovery,beside,latency,scaling,failover,queries",
    );
    let wants = |section: &str| sections.split(',').any(|s| s.trim() == section);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut report = Report::default();
    let show = |report: &Report| println!("{}", report.markdown());

    let throughput_storage = storages("BENCH_THROUGHPUT_STORAGE", "memory")[0];
    if wants("throughput") {
        for records in list("BENCH_RECORDS", "1000000") {
            for keys in list("BENCH_KEYS", "1000,10000,100000,1000000") {
                for name in setting("BENCH_DISTRIBUTIONS", "uniform,zipf").split(',') {
                    for partitions in list("BENCH_PARTITIONS", "4,16") {
                        let input = Input {
                            records,
                            keys,
                            distribution: distribution(name),
                        };
                        eprintln!(
                            "throughput: {} on {partitions} partitions",
                            input.describe()
                        );
                        report.throughput.push(throughput(
                            input,
                            partitions as i32,
                            throughput_storage,
                            None,
                            None,
                        ));
                        show(&report);
                    }
                }
            }
        }
    }
    if wants("memory") {
        for keys in list("BENCH_MEMORY_KEYS", "1000000,10000000") {
            let input = Input {
                records: keys,
                keys,
                distribution: KeyDistribution::Sequential,
            };
            eprintln!("memory: {}", input.describe());
            report
                .throughput
                .push(throughput(input, 4, Storage::Memory, None, None));
            show(&report);
        }
    }
    if wants("recovery") {
        for storage in storages("BENCH_RECOVERY_STORAGE", "sqlite") {
            for keys in list("BENCH_RECOVERY_KEYS", "1000000") {
                eprintln!("recovery: {keys} keys, {} storage", storage.name());
                report.recovery.push(recovery(keys, 4, storage));
                show(&report);
            }
        }
    }
    if wants("beside") {
        let changelog = list("BENCH_BESIDE_CHANGELOG", "1000000")[0];
        let input = Input {
            records: list("BENCH_BESIDE_RECORDS", "1000000")[0],
            keys: 10_000,
            distribution: KeyDistribution::Uniform,
        };
        eprintln!(
            "beside: restore of {changelog} changelog records beside {}",
            input.describe()
        );
        report
            .restore_beside
            .push(restore_beside(changelog, input, 4));
        show(&report);
    }
    if wants("latency") {
        let rate = list("BENCH_LATENCY_RATE", "2000")[0];
        let seconds = list("BENCH_LATENCY_SECONDS", "20")[0];
        eprintln!("latency: {rate} records/s for {seconds} s");
        report
            .latency
            .push(latency(rate, seconds, 4, Storage::Sqlite));
        show(&report);
    }
    if wants("scaling") {
        let pin = setting("BENCH_PIN", "0") == "1";
        for partitions in list("BENCH_SCALING_PARTITIONS", "1,2,4,8,16") {
            let p = partitions as usize;
            if pin && p >= cpus {
                eprintln!("scaling: skipping {p} partitions: pinning needs more than {cpus} CPUs");
                continue;
            }
            let app_cpus = pin.then(|| format!("0-{}", p - 1));
            let broker_cpus = pin.then(|| format!("{p}-{}", cpus - 1));
            let input = Input {
                records: list("BENCH_SCALING_RECORDS", "1000000")[0],
                keys: 10_000,
                distribution: KeyDistribution::Uniform,
            };
            eprintln!("scaling: {partitions} partitions, word count on cpus {app_cpus:?}");
            report.throughput.push(throughput(
                input,
                partitions as i32,
                Storage::Memory,
                broker_cpus.as_deref(),
                app_cpus.as_deref(),
            ));
            show(&report);
        }
    }
    if wants("failover") {
        let keys = list("BENCH_FAILOVER_KEYS", "400000")[0] as usize;
        let storage = storages("BENCH_FAILOVER_STORAGE", "sqlite")[0];
        for replicas in list("BENCH_FAILOVER_REPLICAS", "0,1,2") {
            eprintln!(
                "failover: {replicas} standby replicas, {keys} keys, {} storage",
                storage.name()
            );
            let run = failover_with_standbys(replicas as usize, keys, storage);
            eprintln!("{}", run.summary());
            report.failover.push(run);
            show(&report);
        }
    }
    if wants("queries") {
        let keys = list("BENCH_QUERY_KEYS", "100000")[0];
        let load = list("BENCH_QUERY_LOAD", "2000")[0];
        let queries = list("BENCH_QUERIES", "20000")[0] as usize;
        eprintln!("queries: {queries} over {keys} keys, {load} records/s counted beside");
        report.queries.push(query_latency(keys, load, queries));
        show(&report);
    }
    println!("## All results\n\n{}", report.markdown());
    let target_dir = setting("CARGO_TARGET_DIR", "target");
    let chart = std::path::PathBuf::from(setting(
        "BENCH_CHART",
        &format!("{target_dir}/bench-keys.svg"),
    ));
    match draw_keys_chart(&report.throughput, &chart) {
        Ok(true) => eprintln!("chart: {}", chart.display()),
        Ok(false) => eprintln!("chart: not drawn (no input measured at two key counts)"),
        Err(error) => eprintln!("chart: {error}"),
    }
    assert!(
        report.all_counts_exact(),
        "a word count's output was not exact"
    );
}
