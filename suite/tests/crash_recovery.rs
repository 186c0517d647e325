//! Exact counts through crashes, on a real broker with real RocksDB: repeated SIGKILLs with and
//! without the state dir, a two-instance takeover, corrupted state, and the restore bound after
//! a kill. Chaos runs use a fixed seed, or `CHAOS_SEED` from the environment.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use kstreams_suite::{
    broker_and_app, poll_until, produce_paced, read_store_counts, skip_without_private_broker,
    wait_until, word_count_input, App, AppOptions, Broker,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TIMEOUT: Duration = Duration::from_secs(180);
const MIN_KILLS: usize = 5;
const MAX_KILLS: usize = 8;

fn setup(state_root: &tempfile::TempDir) -> (Broker, AppOptions) {
    broker_and_app(state_root.path())
}

fn seed(default: u64) -> u64 {
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    eprintln!("chaos seed {seed} (set CHAOS_SEED to replay or vary)");
    seed
}

fn assert_counts(
    broker: &Broker,
    options: &AppOptions,
    app: &App,
    expected: &HashMap<String, u64>,
) {
    broker
        .wait_for_counts(&options.output_topic, expected, TIMEOUT)
        .unwrap_or_else(|e| {
            panic!(
                "counts-topic: {e}; log of the last instance:\n{}",
                app.log()
            )
        });
}

/// The keyspace and client settings of a chaos run.
struct Chaos {
    records: usize,
    keys: usize,
    commit_interval_ms: u64,
    extra_args: Vec<String>,
}

/// 50,000 records over 1,000 keys, committing every 500 ms.
fn small_keyspace() -> Chaos {
    Chaos {
        records: 50_000,
        keys: 1_000,
        commit_interval_ms: 500,
        extra_args: vec![],
    }
}

fn chaos_with_kills(default_seed: u64, delete_state_before: &[usize], chaos: Chaos) {
    let mut rng = StdRng::seed_from_u64(seed(default_seed));
    let root = tempfile::tempdir().unwrap();
    let (broker, mut options) = setup(&root);
    options.commit_interval_ms = chaos.commit_interval_ms;
    options.extra_args = chaos.extra_args;
    let (records, expected) = word_count_input(chaos.records, chaos.keys);
    let mut kills = 0;
    std::thread::scope(|scope| {
        let producer = scope.spawn(|| produce_paced(&broker, &options.input_topic, &records));
        let mut app = App::spawn(&broker.address(), &options);
        while kills < MIN_KILLS || (!producer.is_finished() && kills < MAX_KILLS) {
            // The crash lands at a random moment: joining, restoring, processing or committing.
            std::thread::sleep(Duration::from_millis(rng.random_range(500..6_000)));
            app.kill();
            kills += 1;
            if delete_state_before.contains(&kills) {
                std::fs::remove_dir_all(&options.state_dir).unwrap();
            }
            app = App::spawn(&broker.address(), &options);
        }
        producer.join().unwrap();
        assert_counts(&broker, &options, &app, &expected);
        assert!(
            app.terminate(Duration::from_secs(30)).success(),
            "{}",
            app.log()
        );
    });
    let stored = read_store_counts(&options.state_dir, &options.application_id, "count-store");
    assert_eq!(stored, expected, "store counts after {kills} kills");
    eprintln!(
        "chaos: {kills} SIGKILL/restart cycles, counts exact on counts-topic and in the store"
    );
}

#[test]
fn counts_stay_exact_through_repeated_sigkills_on_the_same_state_dir() {
    chaos_with_kills(20261125, &[], small_keyspace());
}

/// 50,000 keys: each task's write-out holds thousands of keys and, with produce requests of
/// at most 500 records, spans many of them, so kills land between a write-out's requests.
#[test]
fn counts_stay_exact_through_sigkills_with_50k_keys_and_write_outs_over_many_requests() {
    let chaos = Chaos {
        records: 100_000,
        keys: 50_000,
        commit_interval_ms: 3_000,
        extra_args: ["-X", "batch.num.messages=500"].map(String::from).to_vec(),
    };
    chaos_with_kills(7, &[], chaos);
}

#[test]
fn counts_stay_exact_through_sigkills_with_the_state_dir_lost_before_some_restarts() {
    chaos_with_kills(42, &[2, 4], small_keyspace());
}

fn owned(app: &App) -> BTreeSet<String> {
    app.tasks()
        .unwrap_or_default()
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

/// Longer than the session timeout (6 s), two heartbeats (3 s each) and a rebalance round.
const TAKEOVER_BOUND: Duration = Duration::from_secs(30);

/// Waits until `survivor` runs every task after `killed_at`; `None` if it did not within `bound`.
fn wait_for_takeover(survivor: &App, killed_at: Instant, bound: Duration) -> Option<()> {
    let all: BTreeSet<String> = (0..4).map(|p| format!("0_{p}")).collect();
    let left = bound.saturating_sub(killed_at.elapsed());
    poll_until(left, || owned(survivor) == all && survivor.is_ready()).map(|_| ())
}

/// The leader of the group is the first instance (A): it forms the group alone before B joins,
/// and a joining member leaves the leader in place. Killing the leader itself is the next test.
#[test]
fn a_survivor_takes_over_and_gives_back_partitions_of_a_repeatedly_killed_instance() {
    let root = tempfile::tempdir().unwrap();
    let (broker, options) = setup(&root);
    let mut options_b = options.clone();
    options_b.state_dir = root.path().join("state-b");
    let (records, expected) = word_count_input(30_000, 1_000);
    std::thread::scope(|scope| {
        let producer = scope.spawn(|| produce_paced(&broker, &options.input_topic, &records));
        let mut a = App::spawn(&broker.address(), &options);
        assert!(
            wait_for_takeover(&a, Instant::now(), TIMEOUT).is_some(),
            "A alone did not run all tasks within {TIMEOUT:?}; A's log:\n{}",
            a.log()
        );
        let mut b = App::spawn(&broker.address(), &options_b);
        for cycle in 1..=3 {
            wait_until(&format!("cycle {cycle}: B to run tasks"), TIMEOUT, || {
                !owned(&b).is_empty() && b.is_ready()
            });
            b.kill();
            let killed_at = Instant::now();
            assert!(
                wait_for_takeover(&a, killed_at, TIMEOUT).is_some(),
                "cycle {cycle}: A did not take over all tasks within {TIMEOUT:?} (owns {:?}); \
                 A's log:\n{}\nthe broker's log:\n{}",
                owned(&a),
                a.log(),
                broker.log_tail(200)
            );
            eprintln!(
                "cycle {cycle}: A ran all tasks {:.1} s after B was killed",
                killed_at.elapsed().as_secs_f64()
            );
            b = App::spawn(&broker.address(), &options_b);
        }
        wait_until("B to get tasks back", TIMEOUT, || !owned(&b).is_empty());
        producer.join().unwrap();
        assert_counts(&broker, &options, &a, &expected);
        assert!(
            b.terminate(Duration::from_secs(30)).success(),
            "{}",
            b.log()
        );
        assert!(
            a.terminate(Duration::from_secs(30)).success(),
            "{}",
            a.log()
        );
    });
}

/// The group's leader is killed: the survivor is named leader and takes over every task
/// (tansu 0.6.0 named no new leader before third_party/tansu/tansu-broker/0001).
#[test]
fn a_survivor_takes_over_from_a_killed_group_leader() {
    if skip_without_private_broker("reads the group leader from the broker's log") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (broker, options) = setup(&root);
    let mut options_b = options.clone();
    options_b.state_dir = root.path().join("state-b");
    let (records, expected) = word_count_input(4_000, 200);
    broker.produce_strings(
        &options.input_topic,
        records.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let mut leader = App::spawn(&broker.address(), &options_b);
    assert!(
        wait_for_takeover(&leader, Instant::now(), TIMEOUT).is_some(),
        "the first instance alone did not run all tasks within {TIMEOUT:?}; its log:\n{}",
        leader.log()
    );
    let survivor = App::spawn(&broker.address(), &options);
    wait_until("the second instance to run tasks", TIMEOUT, || {
        !owned(&survivor).is_empty() && survivor.is_ready()
    });
    let leader_id = broker.group_events(&options.application_id).leader;
    assert_eq!(
        leader.member_id(),
        leader_id,
        "the first instance leads the group"
    );
    leader.kill();
    let killed_at = Instant::now();
    assert!(
        wait_for_takeover(&survivor, killed_at, TAKEOVER_BOUND).is_some(),
        "the survivor did not take over within {TAKEOVER_BOUND:?} (owns {:?}); its log:\n{}\nthe \
         broker's log:\n{}",
        owned(&survivor),
        survivor.log(),
        broker.log_tail(200)
    );
    eprintln!(
        "the survivor ran every task {:.1} s after the leader was killed",
        killed_at.elapsed().as_secs_f64()
    );
    assert_eq!(
        broker.group_events(&options.application_id).leader,
        survivor.member_id(),
        "the survivor leads the group"
    );
    broker
        .wait_for_counts(&options.output_topic, &expected, TIMEOUT)
        .unwrap_or_else(|e| panic!("counts-topic: {e}; survivor's log:\n{}", survivor.log()));
}

fn corrupt(task_dir: &Path) {
    std::fs::write(task_dir.join("CURRENT"), b"not a manifest name\n").unwrap();
    for entry in std::fs::read_dir(task_dir).unwrap().map(Result::unwrap) {
        let name = entry.file_name().into_string().unwrap();
        if name.starts_with("MANIFEST") || name.ends_with(".sst") {
            std::fs::write(entry.path(), b"garbage").unwrap();
        }
    }
}

#[test]
fn corrupted_task_state_is_wiped_and_restored_alone() {
    let root = tempfile::tempdir().unwrap();
    let (broker, options) = setup(&root);
    let (first, mut expected) = word_count_input(8_000, 400);
    broker.produce_strings(
        &options.input_topic,
        first.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let mut app = App::spawn(&broker.address(), &options);
    assert_counts(&broker, &options, &app, &expected);
    assert!(app.terminate(Duration::from_secs(30)).success());

    corrupt(&options.state_dir.join(&options.application_id).join("0_1"));
    let mut app = App::spawn(&broker.address(), &options);
    app.wait_ready(TIMEOUT);
    assert_eq!(
        app.metric("kstreams_state_wipes_total", &[r#"reason="open_failed""#]),
        Some(1.0),
        "{}",
        app.log()
    );
    let restored = |task: &str| {
        app.metric(
            "kstreams_restore_records_total",
            &[&format!("task_id=\"{task}\"")],
        )
        .unwrap()
    };
    assert!(
        restored("0_1") > 0.0,
        "the corrupted task restores from its changelog"
    );
    for task in ["0_0", "0_2", "0_3"] {
        assert_eq!(restored(task), 0.0, "{task} kept its state");
    }
    let (second, more) = word_count_input(2_000, 400);
    for (k, n) in more {
        *expected.entry(k).or_default() += n;
    }
    broker.produce_strings(
        &options.input_topic,
        second.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    assert_counts(&broker, &options, &app, &expected);
    assert!(app.terminate(Duration::from_secs(30)).success());
    assert_eq!(
        read_store_counts(&options.state_dir, &options.application_id, "count-store"),
        expected
    );
}

#[test]
fn after_sigkill_only_changelog_written_since_the_last_commit_is_restored() {
    let root = tempfile::tempdir().unwrap();
    let (broker, mut options) = setup(&root);
    options.extra_args = vec!["--commit-interval-ms".into(), "2000".into()];
    let (first, mut expected) = word_count_input(5_000, 300);
    broker.produce_strings(
        &options.input_topic,
        first.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let mut app = App::spawn(&broker.address(), &options);
    assert_counts(&broker, &options, &app, &expected);
    // Two more commits after everything was processed: all of it is committed.
    let commits = app.metric("kstreams_commits_total", &[]).unwrap();
    wait_until("two commits after processing", TIMEOUT, || {
        app.metric("kstreams_commits_total", &[]).unwrap() >= commits + 2.0
    });
    let tail = 1_000usize;
    let (second, more) = word_count_input(tail, 300);
    for (k, n) in more {
        *expected.entry(k).or_default() += n;
    }
    broker.produce_strings(
        &options.input_topic,
        second.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    wait_until("the tail to be processed", TIMEOUT, || {
        app.metric("kstreams_records_processed_total", &[]) == Some(6_000.0)
    });
    app.kill();

    let mut app = App::spawn(&broker.address(), &options);
    app.wait_ready(TIMEOUT);
    let restored = app.metric("kstreams_restore_records_total", &[]).unwrap();
    assert!(
        restored <= tail as f64,
        "restored {restored} changelog records; at most the {tail} written since the last commit"
    );
    assert_counts(&broker, &options, &app, &expected);
    assert!(app.terminate(Duration::from_secs(30)).success());
    assert_eq!(
        read_store_counts(&options.state_dir, &options.application_id, "count-store"),
        expected
    );
}
