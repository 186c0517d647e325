//! `kstreams-count local`, driven through its plain mode: starts instances, takes `add`,
//! `kill`, `start`, `stop`, `get` and `quit` from stdin while its load generator produces, and
//! reports what happened.

use kstreams_engine::TaskPhase;
use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use kstreams_suite::{app_bin, http_get, unique, wait_until, Broker, InstanceView};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A base port with `count` free ports from it.
fn free_port_range(count: u16) -> u16 {
    for _ in 0..100 {
        let base = 20_000 + rand::random::<u16>() % 30_000;
        if (base..base + count).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
    panic!("no {count} consecutive free ports found");
}

/// Kills the runner if the test fails before it quits (its instances follow it).
struct Runner(std::process::Child);

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn running_tasks(port: u16) -> usize {
    http_get(port, "/status")
        .and_then(|(_, body)| serde_json::from_str::<InstanceView>(&body).ok())
        .map_or(0, |v| {
            v.tasks
                .iter()
                .filter(|t| t.state == TaskPhase::Running)
                .count()
        })
}

#[test]
fn the_local_runner_adds_kills_restarts_and_stops_instances_on_command() {
    let broker = Broker::start();
    let root = tempfile::tempdir().unwrap();
    let (input, output) = (unique("input-topic"), unique("counts-topic"));
    broker.create_topic(&output, 4);
    let base = free_port_range(3);
    let out_path = root.path().join("runner.out");
    let mut runner = Runner(
        Command::new(app_bin())
            .env_remove("KAFKA_BROKER")
            .args(["local", "--plain", "--instances", "2", "--partitions", "4"])
            .args([
                "--rate",
                "200",
                "--keys",
                "50",
                "--broker",
                &broker.address(),
            ])
            .args(["--application-id", &unique("counts-app")])
            .args(["--input-topic", &input, "--output-topic", &output])
            .args(["--metrics-port-base", &base.to_string()])
            .arg("--state-root")
            .arg(root.path().join("instances"))
            .args(["--", "--session-timeout-ms", "6000"])
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kstreams-count local"),
    );
    let mut commands = runner.0.stdin.take().unwrap();
    let mut send = |line: &str| writeln!(commands, "{line}").unwrap();
    let output_text = || std::fs::read_to_string(&out_path).unwrap_or_default();

    wait_until("both instances running tasks", TIMEOUT, || {
        running_tasks(base) + running_tasks(base + 1) == 4
    });
    assert_eq!(
        broker.partitions(&input),
        Some(4),
        "the runner created the input topic"
    );

    send("add");
    wait_until("kstreams-count-2 to run tasks", TIMEOUT, || {
        running_tasks(base + 2) > 0
    });

    send("kill 1");
    wait_until("the kill to be reported", TIMEOUT, || {
        output_text().contains("kstreams-count-1 exited (killed by SIGKILL)")
    });
    wait_until("the survivors to run every task", TIMEOUT, || {
        running_tasks(base) + running_tasks(base + 2) == 4
    });

    send("start 1");
    wait_until("kstreams-count-1 to run tasks again", TIMEOUT, || {
        running_tasks(base + 1) > 0
    });

    send("stop 2");
    wait_until("the clean stop to be reported", TIMEOUT, || {
        output_text().contains("kstreams-count-2 exited (exit 0)")
    });

    // `get KEY` asks the running instances in turn; the first write-out (the product's 30 s
    // commit interval) may still be ahead, so ask about once a second until a count comes.
    let mut asked_at: Option<std::time::Instant> = None;
    wait_until("`get` to answer a count", TIMEOUT, || {
        if asked_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            send("get word-00007");
            asked_at = Some(std::time::Instant::now());
        }
        output_text().contains("ok: word-00007 = ")
    });

    send("rate 0");
    send("bogus");
    send("quit");
    let deadline = std::time::Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = runner.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "runner did not quit:\n{}",
            output_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = output_text();
    assert!(status.success(), "runner exit {status}:\n{text}");
    for expected in [
        "kstreams-count-0 started",
        "kstreams-count-2 started",
        "generation",
        "error: unknown command `bogus`",
        "ok: load rate now 0 records/s",
        ", answered by kstreams-count-",
        "partition pauses:",
    ] {
        assert!(
            text.contains(expected),
            "`{expected}` missing from:\n{text}"
        );
    }
    let produced: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("produced ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no `produced N records` line in:\n{text}"));
    assert!(produced > 0 && broker.record_count(&input) as u64 >= produced);
    assert!(
        broker.record_count(&output) > 0,
        "the instances wrote counts"
    );
    for i in 0..3 {
        let dir = root
            .path()
            .join("instances")
            .join(format!("kstreams-count-{i}"));
        assert!(
            dir.is_dir(),
            "{} is instance {i}'s own state dir",
            dir.display()
        );
    }
}
