//! The runtime core under a long restore and a slow task, on a real broker with real RocksDB:
//! a 1M-record restore runs beside processing (the other partitions never stall, the instance
//! stays live), a restore longer than 3x `max.poll.interval.ms` keeps the member in the group,
//! a partition revoked while restoring is handed over at once and its restore later resumes
//! where it stopped, and a slow task does not hold the others back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kstreams_engine::{
    InputRecord, KafkaStreams, Processor, ProcessorContext, RecordError, StoreId, StreamsConfig,
    TaskPhase, Topology,
};
use kstreams_suite::{
    poll_every, take_turn, unique, wait_until, App, AppOptions, Broker, Load, RawRecord,
};

const TIMEOUT: Duration = Duration::from_secs(180);

// These tests measure how long processing stands still, so they take turns (`take_turn`):
// two of them at once (each with its broker and instances) on a 2-core machine measure each
// other.

/// Waits for `condition`, failing with the instance's log.
fn wait_for(app: &App, what: &str, condition: impl FnMut() -> bool) {
    assert!(
        poll_every(Duration::from_millis(50), TIMEOUT, condition).is_some(),
        "timed out after {TIMEOUT:?} waiting for {what}; log:\n{}",
        app.log()
    );
}

/// Synthetic changelog records for `partition`: keys `restored-<p>-<n>`, each with the count 1
/// as the count store writes it (no input offset: they owe no output once restored).
fn changelog_records(partition: i32, count: usize) -> impl Iterator<Item = RawRecord> {
    (0..count).map(move |n| {
        (
            Some(format!("restored-{partition}-{n}").into_bytes()),
            Some(1i64.to_be_bytes().to_vec()),
            Some(partition),
        )
    })
}

/// The application's topics, with `records` changelog records already on each of the given
/// changelog partitions (as if the instance had lost its volume).
fn topics_with_changelog(
    broker: &Broker,
    options: &AppOptions,
    partitions: i32,
    records: &[(i32, usize)],
) -> String {
    broker.create_topic(&options.input_topic, partitions);
    broker.create_topic(&options.output_topic, partitions);
    let changelog = options.changelog_topic();
    broker.create_topic_with(&changelog, partitions, &[("cleanup.policy", "compact")]);
    for &(partition, count) in records {
        broker.produce(&changelog, changelog_records(partition, count));
    }
    changelog
}

/// `restored N records in S s` for `task`, from the instance's log.
fn restore_seconds(log: &str, task: &str) -> Option<(u64, f64)> {
    let line = log
        .lines()
        .find(|l| l.contains("restored ") && l.contains(" records in ") && l.contains(task))?;
    let after = line.split("restored ").nth(1)?;
    let records = after.split(' ').next()?.parse().ok()?;
    let seconds = after.split(" records in ").nth(1)?.split('s').next()?;
    Some((records, seconds.parse().ok()?))
}

/// Per running task other than `restoring`, the longest time its processed offset was seen
/// standing still while input waited for it, sampled from `/status` until `restoring` runs.
/// A stand-still is measured from the first sample that saw the offset unchanged with input
/// beyond it already stored (acknowledged to the load's producer) to the last sample that saw
/// the same offset; so neither a pause of the sampling itself (a busy 2-core machine) nor the
/// time the broker takes to store the load's records counts as one.
struct StallWatch {
    /// Per task: the offset, when a sample first saw input waiting beyond it, when one last
    /// saw it.
    last: HashMap<String, (Option<i64>, Option<Instant>, Instant)>,
    longest: HashMap<String, Duration>,
    /// Stand-stills over 1 s: task, when they ended (ms since the Unix epoch), how long.
    over_a_second: Vec<(String, u64, Duration)>,
    samples: usize,
}

impl StallWatch {
    fn new() -> Self {
        Self {
            last: HashMap::new(),
            longest: HashMap::new(),
            over_a_second: Vec::new(),
            samples: 0,
        }
    }

    fn sample(
        &mut self,
        tasks: &[kstreams_engine::status::TaskView],
        restoring: &str,
        load: &Load,
    ) {
        self.samples += 1;
        let now = Instant::now();
        for task in tasks.iter().filter(|t| t.task_id != restoring) {
            if task.state != TaskPhase::Running {
                continue;
            }
            let partition: i32 = task.task_id.split('_').nth(1).unwrap().parse().unwrap();
            let waiting = load
                .stored_up_to(partition)
                .is_some_and(|stored| task.processed_offset.is_none_or(|p| stored > p));
            let (offset, waiting_since, last_seen) = self
                .last
                .entry(task.task_id.clone())
                .or_insert((task.processed_offset, None, now));
            if *offset != task.processed_offset {
                *offset = task.processed_offset;
                *waiting_since = None;
            }
            *last_seen = now;
            if waiting && waiting_since.is_none() {
                *waiting_since = Some(now);
            }
            // Counted once it processed something: the first records may wait for the join.
            if let (Some(_), Some(since)) = (offset, waiting_since) {
                let stood = last_seen.duration_since(*since);
                let longest = self.longest.entry(task.task_id.clone()).or_default();
                *longest = (*longest).max(stood);
                if stood > Duration::from_secs(1) {
                    let at = kstreams_engine::status::unix_millis();
                    self.over_a_second.push((task.task_id.clone(), at, stood));
                }
            }
        }
    }
}

/// What a restore of partition 0 beside live input on the others showed.
struct RestoreBeside {
    app: App,
    broker: Broker,
    options: AppOptions,
    load: Load,
    /// `None` when the member lost its partitions before the restore ended.
    restored: Option<(u64, f64)>,
    watch: StallWatch,
    not_live: Vec<(Duration, Option<(u16, String)>)>,
    _state: tempfile::TempDir,
}

/// Starts an instance with `records` changelog records to restore for partition 0 (an
/// empty state dir: the pod lost its volume) and 300 input records/s on all four partitions,
/// and watches it until 0_0 runs, or the member loses its partitions.
fn restore_beside_processing(
    records: usize,
    extra_args: &[&str],
    env: &[(&str, &str)],
) -> RestoreBeside {
    let state = tempfile::tempdir().unwrap();
    let broker = Broker::start();
    let mut options = AppOptions::fresh(state.path());
    options.commit_interval_ms = 1_000;
    options.extra_args = extra_args.iter().map(|a| a.to_string()).collect();
    options.env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    topics_with_changelog(&broker, &options, 4, &[(0, records)]);

    let load = Load::start(&broker, &options.input_topic, 300, 200);
    let mut app = App::spawn(&broker.address(), &options);
    let mut watch = StallWatch::new();
    let mut not_live = Vec::new();
    let started = Instant::now();
    let mut saw_restoring = false;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            started.elapsed() < TIMEOUT,
            "0_0 did not finish restoring within {TIMEOUT:?}; log:\n{}",
            app.log()
        );
        assert!(app.is_running(), "the instance exited; log:\n{}", app.log());
        let Some(view) = app.view() else {
            continue; // the metrics server is not up yet
        };
        match app.http_get("/health/live") {
            Some((200, _)) => {}
            other => not_live.push((started.elapsed(), other)),
        }
        {
            if view.assignments.iter().any(|a| !a.lost.is_empty()) {
                break;
            }
            let restoring = view.tasks.iter().find(|t| t.task_id == "0_0");
            match restoring.map(|t| t.state) {
                Some(TaskPhase::Restoring) => {
                    saw_restoring = true;
                    // From the other three tasks' first commits on: a new task's first commit
                    // waits for its producer's id from the broker (seen: up to 2 s while the
                    // broker starts serving the restore), restore or not.
                    if app.metric("kstreams_commits_total", &[]).unwrap_or(0.0) >= 3.0 {
                        watch.sample(&view.tasks, "0_0", &load);
                    }
                }
                Some(TaskPhase::Running) if saw_restoring => break,
                _ => {}
            }
        }
    }
    let restored = restore_seconds(&app.log(), "0_0");
    RestoreBeside {
        app,
        broker,
        options,
        load,
        restored,
        watch,
        not_live,
        _state: state,
    }
}

impl RestoreBeside {
    /// The other tasks never stood still over 1 s, the instance stayed live and kept its
    /// partitions, and every count is exact.
    fn assert_processing_went_on(self, records: usize) -> (u64, f64) {
        let log = self.app.log();
        let (restored, seconds) = self.restored.unwrap_or_else(|| {
            panic!("the member lost its partitions during the restore; log:\n{log}")
        });
        assert_eq!(restored, records as u64, "log:\n{log}");
        assert!(
            self.not_live.is_empty(),
            "/health/live failed during the restore: {:?}",
            self.not_live
        );
        assert_eq!(
            self.watch.longest.len(),
            3,
            "every other task processed during the restore ({} samples): {:?}; log:\n{log}",
            self.watch.samples,
            self.watch.longest
        );
        for (task, longest) in &self.watch.longest {
            assert!(
                *longest <= Duration::from_secs(1),
                "{task}'s processed offset stood still {longest:?} during 0_0's {seconds:.1} s restore (stand-stills over 1 s, task / ended at ms / how long: {:?}); log:\n{log}",
                self.watch.over_a_second
            );
        }
        let view = self.app.view().expect("status");
        assert!(
            view.assignments
                .iter()
                .all(|a| a.lost.is_empty() && a.revoked.is_empty()),
            "the member lost or gave up partitions: {:?}",
            view.assignments
        );
        let expected = self.load.finish();
        self.broker
            .wait_for_counts(&self.options.output_topic, &expected, TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}; log:\n{}", self.app.log()));
        println!(
            "restored {restored} records in {seconds:.1} s; the other tasks' longest stand-still: {:?}",
            self.watch.longest
        );
        (restored, seconds)
    }
}

/// At the scale the promise is made for: 1M changelog records to restore for one partition
/// (an instance that lost its volume) while the other three partitions get live input. Before
/// the state updater, the other tasks did not advance once during a restore (measured with
/// 100,000 records: none of them moved in 5.5 s).
#[test]
fn a_million_record_restore_runs_beside_processing_on_the_other_partitions() {
    let _turn = take_turn();
    const RESTORE_RECORDS: usize = 1_000_000;
    let run = restore_beside_processing(RESTORE_RECORDS, &[], &[]);
    run.assert_processing_went_on(RESTORE_RECORDS);
}

/// A restore far longer than `max.poll.interval.ms` (10 s here; the restore made to last over
/// 30 s by a failpoint that delays each restore step) does not make the member leave the
/// group: no "maximum poll interval exceeded", no lost or revoked partition.
#[test]
fn a_restore_longer_than_max_poll_interval_keeps_the_member_in_the_group() {
    let _turn = take_turn();
    // At least 60 steps of at most 5,000 records, each delayed 600 ms: over 36 s.
    const RESTORE_RECORDS: usize = 300_000;
    let run = restore_beside_processing(
        RESTORE_RECORDS,
        &["-X", "max.poll.interval.ms=10000"],
        &[("FAILPOINTS", "restore-step-delay=return(600)")],
    );
    let log = run.app.log();
    // librdkafka's words when it leaves the group for it ("Application maximum poll interval
    // (10000ms) exceeded by ...", a PollExceeded error).
    assert!(
        !log.contains("maximum poll interval") && !log.contains("PollExceeded"),
        "the member exceeded max.poll.interval.ms; log:\n{log}"
    );
    let (_, seconds) = run.assert_processing_went_on(RESTORE_RECORDS);
    assert!(
        seconds > 30.0,
        "the restore took {seconds:.1} s: too short to show the member outlives 3x max.poll.interval.ms"
    );
}

/// A partition revoked while its task restores is handed over within 2 s (the revocation's
/// duration in the assignment history), and when the partition comes back its restore starts
/// from where the interrupted one stopped, not from the beginning.
#[test]
fn a_partition_revoked_while_restoring_is_handed_over_at_once_and_resumes_later() {
    let _turn = take_turn();
    const RESTORE_RECORDS: usize = 300_000;
    let state = tempfile::tempdir().unwrap();
    let broker = Broker::start();
    let options = AppOptions::fresh(state.path());
    let changelog = topics_with_changelog(
        &broker,
        &options,
        2,
        &[(0, RESTORE_RECORDS), (1, RESTORE_RECORDS)],
    );

    let first = App::spawn(&broker.address(), &options);
    wait_for(&first, "both tasks restoring on the first instance", || {
        first.view().is_some_and(|v| {
            v.tasks.len() == 2
                && v.tasks
                    .iter()
                    .all(|t| t.state == TaskPhase::Restoring && t.restore_done >= 10_000)
        })
    });
    let mut second_options = options.clone();
    second_options.state_dir = state.path().join("second");
    let mut second = App::spawn(&broker.address(), &second_options);
    let mut revoked = None;
    wait_for(&first, "the first instance to hand a task over", || {
        revoked = first
            .view()
            .and_then(|v| v.assignments.into_iter().find(|a| !a.revoked.is_empty()));
        revoked.is_some()
    });
    let revoked = revoked.unwrap();
    assert_eq!(revoked.revoked.len(), 1, "{revoked:?}");
    let task = revoked.revoked[0].clone();
    assert!(
        revoked.took_ms <= 2_000,
        "handing over {task} while it restored took {} ms; log:\n{}",
        revoked.took_ms,
        first.log()
    );
    let log = first.log();
    assert!(
        log.lines()
            .any(|l| l.contains("restore stopped with") && l.contains(&task)),
        "the first instance stopped {task}'s restore; log:\n{log}"
    );
    // The second instance restores it fully, then leaves: the task comes back to the first,
    // whose restore goes on from the offset it had written.
    wait_for(
        &second,
        &format!("{task} running on the second instance"),
        || {
            second.view().is_some_and(|v| {
                v.tasks
                    .iter()
                    .any(|t| t.task_id == task && t.state == TaskPhase::Running)
            })
        },
    );
    second.terminate(Duration::from_secs(30));
    wait_for(
        &first,
        &format!("{task} running on the first instance again"),
        || {
            first.view().is_some_and(|v| {
                v.tasks.len() == 2 && v.tasks.iter().all(|t| t.state == TaskPhase::Running)
            })
        },
    );
    let log = first.log();
    let restarts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("from {changelog} offsets")) && l.contains(&task))
        .collect();
    assert_eq!(
        restarts.len(),
        2,
        "{task} restored twice on the first instance; log:\n{log}"
    );
    let resumed_from: i64 = restarts[1]
        .split(" offsets ")
        .nth(1)
        .and_then(|r| r.split("..").next())
        .and_then(|s| s.parse().ok())
        .expect("start offset");
    assert!(
        resumed_from >= 10_000,
        "{task}'s second restore started at {resumed_from}, not where the first stopped; log:\n{log}"
    );
    // Everything restored, on the first instance.
    let view = first.view().unwrap();
    let restored: u64 = view.tasks.iter().map(|t| t.restore_done).sum();
    assert!(restored >= RESTORE_RECORDS as u64, "{view:?}");
}

/// Counts like the word count; on partition 0 each record takes 20 ms.
struct SlowOnZero {
    output: String,
}

impl Processor for SlowOnZero {
    fn process(
        &mut self,
        record: &InputRecord,
        ctx: &mut ProcessorContext<'_>,
    ) -> Result<(), RecordError> {
        if record.partition == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        let key = record.key.as_deref().ok_or(RecordError::NullKey)?;
        let updated = ctx.update(StoreId(0), key, |old| {
            let old = old.map_or(0, |b| i64::from_be_bytes(b.try_into().unwrap()));
            Ok((old + 1).to_be_bytes().to_vec())
        })?;
        match updated {
            Some(count) => {
                let count = i64::from_be_bytes(count.try_into().unwrap());
                ctx.forward(&self.output, key, count.to_string().as_bytes())
            }
            None => Ok(()), // already applied before a restart
        }
    }
}

/// Tasks are not in lock-step: partition 0's task needs 20 ms a record, and the other three
/// tasks get through 30 times as many records while it is still on its first half.
#[test]
fn a_slow_task_does_not_slow_the_others() {
    let _turn = take_turn();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
        .block_on(slow_task_does_not_slow_the_others());
}

async fn slow_task_does_not_slow_the_others() {
    const SLOW_RECORDS: usize = 300;
    const FAST_RECORDS: usize = 3_000;
    let broker = tokio::task::block_in_place(Broker::start);
    let (input, output) = (unique("input-topic"), unique("counts-topic"));
    tokio::task::block_in_place(|| {
        broker.create_topic(&input, 4);
        broker.create_topic(&output, 4);
    });
    let state = tempfile::tempdir().unwrap();
    let mut config = StreamsConfig::new(unique("slow-app"), broker.address());
    config.state_dir = state.path().to_path_buf();
    config.commit_interval = Duration::from_millis(500);
    config.session_timeout = Duration::from_secs(6);
    let sink = output.clone();
    let topology = Topology::from_processor(
        input.clone(),
        vec!["count-store".into()],
        vec![output.clone()],
        Arc::new(move || {
            Box::new(SlowOnZero {
                output: sink.clone(),
            }) as Box<dyn Processor>
        }),
    )
    .unwrap();
    let streams = KafkaStreams::start(topology, config).await.unwrap();
    tokio::task::block_in_place(|| {
        wait_until("four running tasks", TIMEOUT, || {
            let view = streams.status().view();
            view.tasks.len() == 4 && view.tasks.iter().all(|t| t.state == TaskPhase::Running)
        })
    });
    let record = |partition: i32, n: usize| -> RawRecord {
        (
            Some(format!("k{partition}-{}", n % 10).into_bytes()),
            Some(b"v".to_vec()),
            Some(partition),
        )
    };
    let records: Vec<RawRecord> = (0..SLOW_RECORDS)
        .map(|n| record(0, n))
        .chain((1..4).flat_map(|p| (0..FAST_RECORDS).map(move |n| record(p, n))))
        .collect();
    tokio::task::block_in_place(|| broker.produce(&input, records));
    let processed = |task: &str| {
        streams
            .status()
            .view()
            .tasks
            .iter()
            .find(|t| t.task_id == task)
            .and_then(|t| t.processed_offset)
            .map_or(0, |o| o + 1)
    };
    tokio::task::block_in_place(|| {
        wait_until("the fast tasks through their input", TIMEOUT, || {
            ["0_1", "0_2", "0_3"]
                .iter()
                .all(|t| processed(t) == FAST_RECORDS as i64)
        })
    });
    let slow_done = processed("0_0");
    assert!(
        slow_done < SLOW_RECORDS as i64 / 2,
        "the slow task had processed {slow_done} of {SLOW_RECORDS} when the fast ones were through {FAST_RECORDS} each: they waited for it"
    );
    // And the slow one finishes, exactly.
    let mut expected = HashMap::new();
    for partition in 0..4 {
        let n = if partition == 0 {
            SLOW_RECORDS
        } else {
            FAST_RECORDS
        };
        for key in 0..10 {
            expected.insert(format!("k{partition}-{key}"), (n / 10) as u64);
        }
    }
    tokio::task::block_in_place(|| broker.wait_for_counts(&output, &expected, TIMEOUT)).unwrap();
    streams.close().await.unwrap();
}
