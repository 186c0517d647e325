//! The operator's view on real parts: a real Prometheus server scraping a running instance,
//! readiness during restore, every Grafana dashboard panel's query answered, `/status` across a
//! rebalance, and a clean `/metrics` exposition.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use kstreams_suite::{
    broker_and_app, free_port, metric_sum, wait_until, word_count_input, App, AppOptions, Broker,
    Prometheus, PROMETHEUS_NAMESPACE, PROMETHEUS_POD_PREFIX,
};

const TIMEOUT: Duration = Duration::from_secs(120);
const ALL_TASKS: [&str; 4] = ["0_0", "0_1", "0_2", "0_3"];

fn setup(state_root: &tempfile::TempDir) -> (Broker, AppOptions) {
    broker_and_app(state_root.path())
}

/// Writes `records` counts straight into the changelog, as an earlier owner would have, so
/// that an instance on an empty state dir has a large restore ahead of it.
fn seed_changelog(broker: &Broker, options: &AppOptions, records: usize) {
    let changelog = options.changelog_topic();
    broker.create_topic_with(&changelog, 4, &[("cleanup.policy", "compact")]);
    broker.produce(
        &changelog,
        (0..records).map(|i| {
            let key = format!("seeded-{i}").into_bytes();
            (
                Some(key),
                Some(1i64.to_be_bytes().to_vec()),
                Some((i % 4) as i32),
            )
        }),
    );
}

#[test]
fn prometheus_sees_restore_lag_rise_and_return_to_zero_and_records_processed_rise() {
    let root = tempfile::tempdir().unwrap();
    let (broker, options) = setup(&root);
    let metrics_port = free_port();
    let prometheus = Prometheus::start(&[metrics_port]);
    seed_changelog(&broker, &options, 200_000);
    // Prometheus has scraped the (not yet running) target once: it will see the restore.
    wait_until("Prometheus to scrape its target", TIMEOUT, || {
        prometheus.query("up").is_some()
    });
    let mut app = App::spawn_with_metrics_port(&broker.address(), &options, metrics_port);

    // While restoring: the gauge is above 0 in Prometheus, and the pod is not ready.
    let mut seen_not_ready_while_restoring = false;
    wait_until("Prometheus to see restore remaining > 0", TIMEOUT, || {
        let remaining = app
            .metric("kstreams_restore_remaining_records", &[])
            .unwrap_or(0.0);
        if remaining > 0.0 && !app.is_ready() {
            seen_not_ready_while_restoring = true;
        }
        prometheus
            .query("sum(kstreams_restore_remaining_records)")
            .is_some_and(|v| v > 0.0)
    });
    assert!(
        seen_not_ready_while_restoring || {
            // The scrape may have come first; ask once more while the restore still runs.
            app.metric("kstreams_restore_remaining_records", &[])
                .unwrap_or(0.0)
                > 0.0
                && !app.is_ready()
        },
        "/health/ready answered ready while restoring"
    );
    app.wait_ready(TIMEOUT);
    assert_eq!(
        app.metric("kstreams_restore_remaining_records", &[]),
        Some(0.0)
    );
    assert!(app.metric("kstreams_restore_records_total", &[]).unwrap() >= 200_000.0);
    wait_until(
        "Prometheus to see restore remaining back at 0",
        TIMEOUT,
        || prometheus.query("sum(kstreams_restore_remaining_records)") == Some(0.0),
    );

    let (records, _) = word_count_input(2_000, 50);
    broker.produce_strings(
        &options.input_topic,
        records.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    wait_until("Prometheus to see 2,000 records processed", TIMEOUT, || {
        prometheus.query("sum(kstreams_records_processed_total)") == Some(2_000.0)
    });
    assert!(
        prometheus
            .query("max(kstreams_restore_duration_seconds_count)")
            .is_some_and(|n| n >= 1.0),
        "restore durations are recorded"
    );
    assert!(app.terminate(Duration::from_secs(30)).success());
}

/// The shipped Grafana dashboard.
fn dashboard() -> serde_json::Value {
    // Where the sources are now (cargo sets it when it runs the test), not where this binary
    // was built; the suite's crate sits one level below the repository's root.
    let suite =
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    let path = format!("{suite}/../k8s/components/grafana-dashboard/kstreams-count.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every PromQL expression of the dashboard, with its panel's title, its variables set as a
/// user picks them (`variables`: name and value).
fn dashboard_queries(
    dashboard: &serde_json::Value,
    variables: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push((
                panel["title"].as_str().unwrap_or_default().to_string(),
                with_variables(target["expr"].as_str().unwrap(), variables),
            ));
        }
    }
    queries
}

fn with_variables(expression: &str, variables: &[(&str, &str)]) -> String {
    variables
        .iter()
        .fold(expression.to_string(), |e, (name, value)| {
            e.replace(&format!("${name}"), value)
        })
}

/// The dashboard's query variables (`label_values(metric, label)`), as PromQL that lists the
/// label's values: variable name, label and expression.
fn variable_queries(
    dashboard: &serde_json::Value,
    variables: &[(&str, &str)],
) -> Vec<(String, String, String)> {
    let mut queries = Vec::new();
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        let Some(query) = variable["query"]["query"].as_str() else {
            continue;
        };
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| {
                panic!("variable query `{query}` is not label_values(metric, label)")
            });
        let (metric, label) = inner.rsplit_once(',').unwrap();
        let (metric, label) = (with_variables(metric.trim(), variables), label.trim());
        queries.push((
            variable["name"].as_str().unwrap().to_string(),
            label.to_string(),
            format!("count by ({label}) ({metric})"),
        ));
    }
    queries
}

#[test]
fn every_dashboard_panel_returns_data_from_a_real_prometheus_after_a_restore_and_load() {
    let root = tempfile::tempdir().unwrap();
    let (broker, options) = setup(&root);
    let metrics_port = free_port();
    let prometheus = Prometheus::start(&[metrics_port]);
    seed_changelog(&broker, &options, 100_000);
    let mut app = App::spawn_with_metrics_port(&broker.address(), &options, metrics_port);
    app.wait_ready(TIMEOUT);
    let (records, _) = word_count_input(5_000, 100);
    broker.produce_strings(
        &options.input_topic,
        records.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    wait_until(
        "Prometheus to see the 5,000 records processed",
        TIMEOUT,
        || prometheus.query("sum(kstreams_records_processed_total)") == Some(5_000.0),
    );
    // Each variable set to this instance, as a user picks it from the lists the variables'
    // own queries give.
    let pod = format!("{PROMETHEUS_POD_PREFIX}0");
    let picked = [
        ("namespace", PROMETHEUS_NAMESPACE),
        ("application_id", options.application_id.as_str()),
        ("pod", pod.as_str()),
    ];
    let dashboard = dashboard();
    let variables = variable_queries(&dashboard, &picked);
    assert_eq!(
        variables
            .iter()
            .map(|(name, ..)| name.as_str())
            .collect::<Vec<_>>(),
        ["namespace", "application_id", "pod"]
    );
    for ((name, label, expression), (_, value)) in variables.iter().zip(&picked) {
        let listed = prometheus.query_series(expression).unwrap_or_default();
        assert!(
            listed.iter().any(|s| s["metric"][label.as_str()] == *value),
            "variable `{name}` (`{expression}`) does not list {value}: {listed:?}"
        );
    }
    let queries = dashboard_queries(&dashboard, &picked);
    assert!(
        queries.len() >= 19,
        "{} queries in the dashboard",
        queries.len()
    );
    for (panel, expression) in &queries {
        let mut last = Ok(vec![]);
        let answered = kstreams_suite::poll_until(Duration::from_secs(30), || {
            last = prometheus.query_series(expression);
            last.as_ref().is_ok_and(|series| !series.is_empty())
        });
        assert!(
            answered.is_some(),
            "panel `{panel}`: `{expression}` returned no data ({last:?}); a metric it names may \
             not exist. /metrics:\n{}",
            app.http_get("/metrics")
                .map(|(_, body)| body)
                .unwrap_or_default()
        );
    }
}

fn task_ids(app: &App) -> BTreeSet<String> {
    app.tasks()
        .unwrap_or_default()
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

/// The metric names a PromQL expression reads (a histogram's `_bucket` series by its name).
fn metric_names(expression: &str) -> BTreeSet<String> {
    expression
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("kstreams_") || word.starts_with("process_"))
        .map(|word| word.strip_suffix("_bucket").unwrap_or(word).to_string())
        .collect()
}

#[test]
fn every_metric_the_dashboard_reads_is_on_a_fresh_instances_metrics_within_60_s() {
    let root = tempfile::tempdir().unwrap();
    let (broker, options) = setup(&root);
    let app = App::spawn(&broker.address(), &options);
    let dashboard = dashboard();
    let mut wanted: BTreeSet<String> = dashboard_queries(&dashboard, &[])
        .iter()
        .flat_map(|(_, expression)| metric_names(expression))
        .collect();
    for (_, _, expression) in variable_queries(&dashboard, &[]) {
        wanted.extend(metric_names(&expression));
    }
    assert!(wanted.len() >= 15, "{wanted:?}");
    let mut missing = wanted.clone();
    // Nothing restored and no input: every series must exist anyway, at 0 where it counts.
    let found = kstreams_suite::poll_until(Duration::from_secs(60), || {
        let Some((_, body)) = app.http_get("/metrics") else {
            return false;
        };
        let exposed: BTreeSet<&str> = body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(|name| {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(name)
            })
            .collect();
        missing.retain(|name| !exposed.contains(name.as_str()));
        missing.is_empty()
    });
    assert!(
        found.is_some(),
        "missing from a fresh instance's /metrics after 60 s: {missing:?}; log:\n{}",
        app.log()
    );
}

fn all_running(app: &App) -> bool {
    app.tasks()
        .is_some_and(|t| t.iter().all(|(_, state)| state == "running"))
}

#[test]
fn status_lists_the_right_tasks_before_and_after_a_rebalance() {
    let root = tempfile::tempdir().unwrap();
    let (broker, options) = setup(&root);
    let mut first = App::spawn(&broker.address(), &options);
    first.wait_ready(TIMEOUT);
    let all: BTreeSet<String> = ALL_TASKS.iter().map(|s| s.to_string()).collect();
    wait_until("the first instance to own all four tasks", TIMEOUT, || {
        task_ids(&first) == all
    });
    let generation_before = first.status().unwrap()["generation"].as_i64().unwrap();

    let mut second_options = options.clone();
    second_options.state_dir = root.path().join("state-b");
    let mut second = App::spawn(&broker.address(), &second_options);
    wait_until("the two instances to split the four tasks", TIMEOUT, || {
        let (a, b) = (task_ids(&first), task_ids(&second));
        !a.is_empty()
            && !b.is_empty()
            && a.is_disjoint(&b)
            && a.union(&b).cloned().collect::<BTreeSet<_>>() == all
    });
    wait_until("both instances running all their tasks", TIMEOUT, || {
        all_running(&first) && all_running(&second) && first.is_ready() && second.is_ready()
    });
    assert!(first.status().unwrap()["generation"].as_i64().unwrap() > generation_before);

    assert!(
        second.terminate(Duration::from_secs(30)).success(),
        "{}",
        second.log()
    );
    wait_until("the first instance to take all tasks back", TIMEOUT, || {
        task_ids(&first) == all && all_running(&first)
    });
    assert!(first.terminate(Duration::from_secs(30)).success());
}

#[test]
fn metrics_exposition_parses_and_has_no_negative_gauges() {
    let root = tempfile::tempdir().unwrap();
    let (broker, options) = setup(&root);
    let mut app = App::spawn(&broker.address(), &options);
    app.wait_ready(TIMEOUT);
    broker.produce_strings(
        &options.input_topic,
        [("foo", "bar"), ("hello", "world"), ("foo", "baz")],
    );
    wait_until("3 records processed", TIMEOUT, || {
        app.metric("kstreams_records_processed_total", &[]) == Some(3.0)
    });
    // Lag comes from librdkafka's statistics, every 5 s.
    wait_until("consumer lag to be known", TIMEOUT, || {
        app.http_get("/metrics")
            .is_some_and(|(_, body)| body.contains("kstreams_consumer_lag_records{"))
    });
    let (status, body) = app.http_get("/metrics").unwrap();
    assert_eq!(status, 200);

    // Prometheus' own parser and linter.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // Every sample parses, and no gauge is negative.
    let mut gauges = BTreeSet::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            if kind == "gauge" {
                gauges.insert(name.to_string());
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            !(gauges.contains(name) && value < 0.0),
            "negative gauge: {line}"
        );
    }
    for expected in [
        "kstreams_restore_remaining_records",
        "kstreams_tasks_running",
        "kstreams_consumer_lag_records",
        "kstreams_instance_ready",
        "kstreams_instance_state",
        "kstreams_build_info",
        "kstreams_broker_rtt_seconds",
    ] {
        assert!(
            gauges.contains(expected),
            "{expected} missing from:\n{body}"
        );
    }
    // Labels as Prometheus conventions and the dashboard expect them.
    let topic = format!(r#"topic="{}""#, options.input_topic);
    assert!(
        body.lines()
            .any(|l| l.starts_with("kstreams_consumer_lag_records{") && l.contains(&topic)),
        "the lag names its input topic:\n{body}"
    );
    assert!(
        body.lines()
            .any(|l| l.starts_with("kstreams_broker_rtt_seconds{")
                && l.contains(r#"percentile="p50""#)),
        "the round trip's percentile label:\n{body}"
    );
    // Nothing was restored, yet every task's restore counter is there, at 0.
    for task in ALL_TASKS {
        let task_label = format!(r#"task_id="{task}""#);
        assert!(
            body.lines()
                .any(|l| l.starts_with("kstreams_restore_records_total{")
                    && l.contains(&task_label)
                    && l.ends_with(" 0")),
            "task {task}'s restore counter missing:\n{body}"
        );
    }
    // The instance is running and ready: its state says so, once.
    assert!(body.contains("kstreams_instance_ready{application_id=") && body.contains("} 1"));
    assert!(
        body.lines()
            .any(|l| l.starts_with("kstreams_instance_state{")
                && l.contains(r#"state="running""#)
                && l.ends_with(" 1")),
        "{body}"
    );
    for histogram in [
        "kstreams_rebalance_duration_seconds",
        "kstreams_process_batch_duration_seconds",
        "kstreams_produce_ack_latency_seconds",
    ] {
        assert!(
            body.lines()
                .any(|l| l.starts_with(&format!("{histogram}_count{{")) && !l.ends_with(" 0")),
            "{histogram} has no observations:\n{body}"
        );
    }
    assert!(body.contains("kstreams_build_info{"), "{body}");

    // The memory budget: every part, the producers' as 8 MiB per open task, adding up to the
    // footprint the instance logged at start.
    const MIB: f64 = (1 << 20) as f64;
    let part = |part: &str| {
        metric_sum(
            &body,
            "kstreams_memory_budget_bytes",
            &[&format!("part=\"{part}\"")],
        ) / MIB
    };
    let fixed = [
        ("record_cache", 10.0),
        ("write_outs", 10.0),
        ("input_prefetch", 16.0),
        ("restore_prefetch", 8.0),
        ("rocksdb_block_cache", 64.0),
        ("rocksdb_memtables", 64.0),
    ];
    for (name, mib) in fixed {
        assert_eq!(part(name), mib, "{name}:\n{body}");
    }
    let tasks = metric_sum(&body, "kstreams_tasks_running", &[]);
    assert!(tasks >= 1.0, "{body}");
    assert_eq!(part("producer_queues"), 8.0 * tasks, "{body}");
    assert_eq!(
        metric_sum(&body, "kstreams_memory_budget_bytes", &[]) / MIB,
        172.0 + 8.0 * tasks
    );
    let log = app.log();
    assert!(
        log.contains("memory budget: record_cache 10 MiB + ")
            && log.contains("= 172 MiB + 8 MiB per task"),
        "{log}"
    );
    assert!(app.terminate(Duration::from_secs(30)).success());
}

fn task_dirs(options: &AppOptions) -> BTreeSet<String> {
    std::fs::read_dir(options.state_dir.join(&options.application_id))
        .map(|entries| {
            entries
                .map(|e| e.unwrap())
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn state_of_tasks_handed_over_is_deleted_after_the_cleanup_delay_only() {
    let root = tempfile::tempdir().unwrap();
    let (broker, mut options) = setup(&root);
    options.extra_args = vec!["--state-cleanup-delay-ms".into(), "1000".into()];
    let mut first = App::spawn(&broker.address(), &options);
    first.wait_ready(TIMEOUT);
    let all: BTreeSet<String> = ALL_TASKS.iter().map(|s| s.to_string()).collect();
    wait_until("four task dirs", TIMEOUT, || task_dirs(&options) == all);

    let mut second_options = options.clone();
    second_options.state_dir = root.path().join("state-b");
    let mut second = App::spawn(&broker.address(), &second_options);
    wait_until("the second instance to take tasks", TIMEOUT, || {
        !task_ids(&second).is_empty() && task_ids(&first).is_disjoint(&task_ids(&second))
    });
    // Once the delay has passed, the first instance keeps exactly the dirs of its own tasks.
    wait_until("handed-over task dirs to be deleted", TIMEOUT, || {
        task_dirs(&options) == task_ids(&first)
    });
    assert!(
        first
            .metric("kstreams_state_dirs_removed_total", &[])
            .unwrap()
            >= 1.0
    );
    assert!(second.terminate(Duration::from_secs(30)).success());
    assert!(first.terminate(Duration::from_secs(30)).success());
}
