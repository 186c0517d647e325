//! Interactive queries on the local broker: three instances, any of them asked for any key
//! answers the key's last count on `counts-topic` (forwarding to the owner), pages of keys
//! span the group, a key written by a Java-compatible producer and by ours is counted once,
//! and while the group rebalances a query answers the right count or 503, never a wrong one.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use kstreams_suite::query::Queried;
use kstreams_suite::{
    broker_and_app, group_complete, key_value_lines, poll_until, python, run_cli, word_count_input,
    App, AppOptions, Broker,
};

const PARTITIONS: usize = 4;
const STORE: &str = "count-store";
/// Distinct keys: many produce batches per partition.
const KEYS: usize = 100_000;
const TIMEOUT: Duration = Duration::from_secs(180);

/// Three instances of `options`, each on its own state directory, sharing the partitions.
fn three_instances(broker: &str, options: &AppOptions, root: &std::path::Path) -> Vec<App> {
    let apps: Vec<App> = options
        .instances(root, &["a", "b", "c"])
        .iter()
        .map(|o| App::spawn(broker, o))
        .collect();
    let formed = poll_until(TIMEOUT, || group_complete(&apps, PARTITIONS));
    assert!(
        formed.is_some(),
        "the three did not share the partitions within {TIMEOUT:?}; logs:\n{}",
        logs(&apps)
    );
    apps
}

/// Three instances sharing the partitions, then `records` records over `keys` keys counted
/// by them: the instances, the broker's address and the expected count per key.
fn three_instances_counted(
    broker: &Broker,
    options: &AppOptions,
    root: &std::path::Path,
    records: usize,
    keys: usize,
) -> (Vec<App>, HashMap<String, u64>) {
    let apps = three_instances(&broker.address(), options, root);
    let (records, expected) = word_count_input(records, keys);
    broker.produce_strings(
        &options.input_topic,
        records.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    broker
        .wait_for_counts(&options.output_topic, &expected, TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}; logs:\n{}", logs(&apps)));
    (apps, expected)
}

fn logs(apps: &[App]) -> String {
    apps.iter()
        .map(App::log)
        .collect::<Vec<_>>()
        .join("\n----\n")
}

/// Whether `app` knows a running owner with a query endpoint for every partition.
fn knows_every_owner(app: &App) -> bool {
    app.group_metadata().is_some_and(|group| {
        group.partitions.len() == PARTITIONS
            && group.partitions.iter().all(|p| {
                p.owner
                    .as_ref()
                    .is_some_and(|o| o.state == "running" && o.endpoint.is_some())
            })
    })
}

/// A cheap, reproducible pick among `n` (no randomness crate needed for a spread of asks).
fn pick(i: usize, n: usize) -> usize {
    (i.wrapping_mul(2_654_435_761) >> 7) % n
}

#[test]
fn any_instance_answers_every_key_with_its_last_count_on_the_output_topic() {
    let root = tempfile::tempdir().unwrap();
    let (broker, options) = broker_and_app(root.path());
    // Two records per key on average, every key at least once.
    let (apps, _) = three_instances_counted(&broker, &options, root.path(), 2 * KEYS, KEYS);
    let last = broker.latest_values(&options.output_topic);
    assert!(
        poll_until(TIMEOUT, || apps.iter().all(knows_every_owner)).is_some(),
        "not every instance learned every partition's owner: {:?}",
        apps.iter().map(App::group_metadata).collect::<Vec<_>>()
    );

    // Every key, asked of an instance picked per key: two in three are forwarded.
    let started = Instant::now();
    let (mut forwarded, mut wrong) = (0usize, Vec::new());
    let mut keys: Vec<&String> = last.keys().collect();
    keys.sort();
    for (i, key) in keys.iter().enumerate() {
        let asked = &apps[pick(i, apps.len())];
        match asked.query(STORE, key) {
            Queried::Value(answer)
                if answer.from_owner && answer.value.as_u64() == last[*key].parse().ok() =>
            {
                forwarded += usize::from(answer.forwarded);
            }
            other => wrong.push(format!("{key}: expected {}, got {other:?}", last[*key])),
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{} keys asked in {elapsed:?} ({:.0} per second), {forwarded} forwarded",
        keys.len(),
        keys.len() as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(keys.len(), KEYS);
    assert!(
        wrong.is_empty(),
        "{} of {KEYS} keys answered wrong, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert!(
        forwarded > KEYS / 2,
        "only {forwarded} of {KEYS} answers were forwarded to another instance"
    );

    // A key nobody wrote is not found, on any instance; a store nobody has is a 404 too.
    for app in &apps {
        let missing = app.query(STORE, "never-written");
        assert!(
            matches!(&missing, Queried::NotFound(why) if why.contains("has no value")),
            "{missing:?}"
        );
        let no_store = app.query("no-such-store", "key-1");
        assert!(
            matches!(&no_store, Queried::NotFound(why) if why.contains("no store named")),
            "{no_store:?}"
        );
    }

    // The group's keys, page by page from one instance: every key once, in order.
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut from: Option<String> = None;
    let mut previous = String::new();
    loop {
        let page = apps[1]
            .keys_page(STORE, from.as_deref(), 7_000, false)
            .unwrap_or_else(|e| panic!("a page of keys from {from:?}: {e}"));
        for entry in page.entries {
            assert!(entry.key > previous, "{} after {previous}", entry.key);
            previous = entry.key.clone();
            assert!(seen.insert(entry.key, entry.value.to_string()).is_none());
        }
        match page.next {
            Some(next) => from = Some(next),
            None => break,
        }
    }
    assert_eq!(
        seen, last,
        "the pages of keys hold every key's last count once"
    );
    // One instance's own keys are its partitions' only.
    let local = apps[0].keys_page(STORE, None, 100, true).unwrap();
    let owned = apps[0].running_tasks().unwrap();
    assert!(local
        .entries
        .iter()
        .all(|e| owned.contains(&format!("0_{}", e.partition))));

    // The query tool, as a user would run it against any instance.
    let server = format!("127.0.0.1:{}", apps[2].metrics_port);
    let output = run_cli(&["query", "key-7", "--server", &server], &[], "");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("key-7 {}", last["key-7"])
    );
    let output = run_cli(&["query", "missing-key", "--server", &server], &[], "");
    assert!(!output.status.success(), "a missing key is an error");
    assert!(String::from_utf8_lossy(&output.stderr).contains("404"));
    let output = run_cli(
        &["query", "--all", "--page-size", "9000", "--server", &server],
        &[],
        "",
    );
    assert!(output.status.success(), "{output:?}");
    let listed = String::from_utf8_lossy(&output.stdout).lines().count();
    assert_eq!(listed, KEYS, "query --all lists every key once");
}

/// The HTTP server refuses what it should: wrong methods, unknown paths, and a client that
/// never finishes its request headers is cut off rather than held.
#[test]
fn the_http_server_refuses_wrong_methods_and_cuts_off_slow_headers() {
    use std::io::{Read, Write};
    let root = tempfile::tempdir().unwrap();
    let (broker, options) = broker_and_app(root.path());
    let app = App::spawn(&broker.address(), &options);
    let port = app.metrics_port;
    let ask = |request: &str| -> String {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    };
    assert!(
        poll_until(TIMEOUT, || app.http_get("/health/live").is_some()).is_some(),
        "the server never answered"
    );
    let post = ask("POST /metrics HTTP/1.0\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert!(post.starts_with("HTTP/1.0 405"), "{post}");
    let missing = ask("GET /nowhere HTTP/1.0\r\nHost: x\r\n\r\n");
    assert!(missing.starts_with("HTTP/1.0 404"), "{missing}");

    // Half a request, then nothing: the server closes the connection after its header timeout.
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = slow.read_to_end(&mut answer);
    let held = started.elapsed();
    assert!(
        held < Duration::from_secs(15),
        "a client that never finished its headers held a connection for {held:?}"
    );
    // The server still answers everyone else.
    assert_eq!(app.http_get("/health/live").map(|(s, _)| s), Some(200));
}

/// A key written by an independent Java-compatible producer (confluent-kafka with
/// `partitioner=murmur2_random`) and by `kstreams-count produce` lands on one partition and is
/// counted once, together; the query says so.
#[test]
fn a_key_from_a_java_compatible_producer_and_from_ours_is_counted_together() {
    let root = tempfile::tempdir().unwrap();
    let (broker, options) = broker_and_app(root.path());
    let keys: Vec<String> = (0..50).map(|k| format!("mixed-{k}")).collect();
    let script = format!(
        "import confluent_kafka, sys\n\
         p = confluent_kafka.Producer({{'bootstrap.servers': '{}', 'partitioner': 'murmur2_random'}})\n\
         for k in sys.argv[1:]:\n    p.produce('{}', key=k, value='from-python')\n\
         assert p.flush(30) == 0\n",
        broker.address(),
        options.input_topic
    );
    let output = Command::new(python())
        .args(["-c", &script])
        .args(&keys)
        .output()
        .expect("run python");
    assert!(output.status.success(), "{output:?}");
    let ours: Vec<(String, String)> = keys
        .iter()
        .flat_map(|k| [(k.clone(), "a".to_string()), (k.clone(), "b".to_string())])
        .collect();
    let address = broker.address();
    let produced = run_cli(
        &[
            "produce",
            "--topic",
            &options.input_topic,
            "--broker",
            &address,
        ],
        &[],
        &key_value_lines(&ours),
    );
    assert!(produced.status.success(), "{produced:?}");
    let expected: HashMap<String, u64> = keys.iter().map(|k| (k.clone(), 3)).collect();
    let app = App::spawn(&broker.address(), &options);
    broker
        .wait_for_counts(&options.output_topic, &expected, TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", app.log()));
    for key in &keys {
        let counted = poll_until(
            TIMEOUT,
            || matches!(app.query(STORE, key), Queried::Value(a) if a.value == 3),
        );
        assert!(counted.is_some(), "{key}: {:?}", app.query(STORE, key));
    }
}

/// While an instance is killed and another started, queries spread over the live instances
/// answer each key's count or 503, never another value; the input is all counted beforehand,
/// so every value but the right one would be wrong.
#[test]
fn during_a_rebalance_queries_answer_the_right_count_or_unavailable() {
    let root = tempfile::tempdir().unwrap();
    let (broker, options) = broker_and_app(root.path());
    const SOME_KEYS: usize = 5_000;
    let (mut apps, expected) =
        three_instances_counted(&broker, &options, root.path(), 3 * SOME_KEYS, SOME_KEYS);
    let mut keys: Vec<&String> = expected.keys().collect();
    keys.sort();

    let mut killed = apps.pop().unwrap();
    killed.kill();
    let mut replacement = options.clone();
    replacement.state_dir = root.path().join("state-d");
    apps.push(App::spawn(&broker.address(), &replacement));

    let (mut right, mut unavailable, mut wrong) = (0usize, 0usize, Vec::new());
    let mut asked = 0usize;
    let mut settled_at = None;
    let deadline = Instant::now() + TIMEOUT;
    // Ask through the hand-over and a little past it (at least a few thousand queries).
    while Instant::now() < deadline
        && (asked < 3_000 || settled_at.is_none_or(|at| asked < at + 1_000))
    {
        let key = keys[pick(asked, keys.len())];
        match apps[asked % apps.len()].query(STORE, key) {
            Queried::Value(answer) if answer.value == expected[key] => right += 1,
            Queried::Unavailable(_) => unavailable += 1,
            // The new instance's server may not be up yet.
            Queried::Other(None, _) => unavailable += 1,
            other => wrong.push(format!("{key}: expected {}, got {other:?}", expected[key])),
        }
        asked += 1;
        if settled_at.is_none() && asked.is_multiple_of(200) && group_complete(&apps, PARTITIONS) {
            settled_at = Some(asked);
        }
    }
    eprintln!(
        "{asked} queries: {right} right, {unavailable} unavailable, {} wrong; the group settled \
         after {settled_at:?}",
        wrong.len()
    );
    assert!(
        settled_at.is_some(),
        "the group never settled; logs:\n{}",
        logs(&apps)
    );
    assert!(
        wrong.is_empty(),
        "{} answers were wrong, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert!(
        asked >= 3_000 && right > 0,
        "{asked} asked, {right} answered"
    );
}
