//! The query benchmark: key queries asked of one of two instances while they count a steady
//! load, timed per answer and split by whether the instance asked owned the key (read locally)
//! or forwarded it to the other.

use std::time::{Duration, Instant};

use crate::bench::AppSetup;
use crate::query::Queried;
use crate::{free_port, group_complete, poll_until, App, Broker, Load};

/// How long setting up (two instances sharing the partitions, the keys counted) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(600);

/// Latency of key queries by where they were answered.
#[derive(Debug, Clone)]
pub struct QueryLatency {
    pub keys: u64,
    /// The input rate counted beside the queries, records/s.
    pub load_rate: u64,
    pub queries: usize,
    pub local: Percentiles,
    pub forwarded: Percentiles,
    /// Answers per second, one client asking one at a time (a new connection each).
    pub queries_per_second: f64,
    /// Answers that were not the key's value (a 503 while the group rebalanced, say).
    pub not_answered: usize,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Percentiles {
    fn of(mut millis: Vec<f64>) -> Self {
        if millis.is_empty() {
            return Self::default();
        }
        millis.sort_by(f64::total_cmp);
        let at = |q: f64| millis[((millis.len() - 1) as f64 * q).round() as usize];
        Self {
            count: millis.len(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
        }
    }
}

/// Two instances at the product's defaults on a sqlite broker, `keys` keys counted once, then
/// `queries` key queries asked of the first while a load of `load_rate` records/s goes on.
pub fn query_latency(keys: u64, load_rate: u64, queries: usize) -> QueryLatency {
    let root = tempfile::tempdir().unwrap();
    let broker = Broker::start();
    let setup = AppSetup::fresh(&broker, root.path(), 4);
    let apps: Vec<App> = setup
        .options
        .instances(root.path(), &["first", "second"])
        .iter()
        .map(|options| App::spawn_with_metrics_port(&broker.address(), options, free_port()))
        .collect();
    assert!(
        poll_until(SETUP_TIMEOUT, || group_complete(&apps, 4)).is_some(),
        "the two instances did not share the partitions"
    );
    let records: Vec<(String, String)> = (0..keys)
        .map(|k| (format!("key-{k}"), "1".to_string()))
        .collect();
    broker.produce_strings(
        &setup.options.input_topic,
        records.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    // Every key written out (its count on the output topic: the store holds it too).
    let expected = records.iter().map(|(k, _)| (k.clone(), 1)).collect();
    broker
        .wait_for_counts(&setup.options.output_topic, &expected, SETUP_TIMEOUT)
        .expect("every key counted");

    let load = Load::start(&broker, &setup.options.input_topic, load_rate, keys);
    let (mut local, mut forwarded, mut not_answered) = (Vec::new(), Vec::new(), 0);
    let started = Instant::now();
    for i in 0..queries {
        let key = format!("key-{}", (i as u64).wrapping_mul(2_654_435_761) % keys);
        let asked = Instant::now();
        let answer = apps[0].query("count-store", &key);
        let millis = asked.elapsed().as_secs_f64() * 1000.0;
        match answer {
            Queried::Value(answer) if answer.forwarded => forwarded.push(millis),
            Queried::Value(_) => local.push(millis),
            other => {
                not_answered += 1;
                if not_answered <= 3 {
                    eprintln!("queries: {key} not answered: {other:?}");
                }
            }
        }
    }
    let elapsed = started.elapsed();
    drop(load.finish());
    QueryLatency {
        keys,
        load_rate,
        queries,
        local: Percentiles::of(local),
        forwarded: Percentiles::of(forwarded),
        queries_per_second: queries as f64 / elapsed.as_secs_f64(),
        not_answered,
    }
}

/// The table of query latencies, as Markdown.
pub fn markdown(runs: &[QueryLatency]) -> String {
    let mut out = String::from(
        "### Key queries while counting (two instances, product defaults, sqlite broker; one \
         client asking one instance, a new connection per query)\n\n\
         | keys | load records/s | queries | local: count, p50 ms, p99 ms | forwarded: count, \
         p50 ms, p99 ms | queries/s | not answered |\n|---:|---:|---:|---|---|---:|---:|\n",
    );
    for run in runs {
        let cell = |p: Percentiles| format!("{}, {:.2}, {:.2}", p.count, p.p50_ms, p.p99_ms);
        out += &format!(
            "| {} | {} | {} | {} | {} | {:.0} | {} |\n",
            run.keys,
            run.load_rate,
            run.queries,
            cell(run.local),
            cell(run.forwarded),
            run.queries_per_second,
            run.not_answered
        );
    }
    out + "\n"
}
