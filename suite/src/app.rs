//! The `kstreams-count` binary as a child process: how to run it, its log, its HTTP
//! endpoints (`/status`, `/metrics`, health), stopping and killing it.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{free_port, metric_sum, poll_every, poll_until, unique, Broker, InstanceView};

/// The `kstreams-count` binary: `$KSTREAMS_COUNT_BIN`, else beside this test's target dir.
pub fn app_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("KSTREAMS_COUNT_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let path = profile_dir.join("kstreams-count");
    assert!(
        path.is_file(),
        "{} not found: build it first (cargo build -p kstreams-count) or set KSTREAMS_COUNT_BIN",
        path.display()
    );
    path
}

/// A command for `program`, run under `taskset -c <cpus>` when `cpus` is given.
pub(crate) fn pinned_command(program: PathBuf, cpus: Option<&str>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut taskset = Command::new("taskset");
            taskset.args(["-c", cpus]).arg(program);
            taskset
        }
        None => Command::new(program),
    }
}

/// How to run one `kstreams-count` instance.
#[derive(Debug, Clone)]
pub struct AppOptions {
    pub application_id: String,
    pub input_topic: String,
    pub output_topic: String,
    pub state_dir: PathBuf,
    pub extra_args: Vec<String>,
    /// Tests commit often (500 ms); benchmarks use the product's default.
    pub commit_interval_ms: u64,
    /// Most tests use 6 s to see a dead member go sooner; `None`: the product's default (10 s),
    /// which the group tests (`tests/group_membership.rs`) run with.
    pub session_timeout_ms: Option<u64>,
    /// `taskset` CPU list to pin the process to (benchmarks), e.g. `0-3`.
    pub cpus: Option<String>,
    /// Extra environment, e.g. `FAILPOINTS` for fault injection.
    pub env: Vec<(String, String)>,
}

impl AppOptions {
    /// The changelog topic of the word count's store (`count-store`, the app's default).
    pub fn changelog_topic(&self) -> String {
        kstreams_engine::changelog_topic_name(&self.application_id, "count-store")
    }

    /// A fresh application: random application id and topic names, state in `state_root/state`.
    pub fn fresh(state_root: &Path) -> Self {
        AppOptions {
            application_id: unique("counts-app"),
            input_topic: unique("input-topic"),
            output_topic: unique("counts-topic"),
            state_dir: state_root.join("state"),
            extra_args: vec![],
            commit_interval_ms: 500,
            session_timeout_ms: Some(6000),
            cpus: None,
            env: vec![],
        }
    }
}

impl AppOptions {
    /// One instance's options per name, each with its own state directory under `root`
    /// (`state-<name>`), as instances on separate volumes.
    pub fn instances(&self, root: &Path, names: &[&str]) -> Vec<AppOptions> {
        names
            .iter()
            .map(|name| {
                let mut o = self.clone();
                o.state_dir = root.join(format!("state-{name}"));
                o
            })
            .collect()
    }

    /// The product's defaults: no session timeout given on the command line (10 s), and the
    /// default commit interval (30 s).
    pub fn with_product_defaults(mut self) -> Self {
        self.session_timeout_ms = None;
        self.commit_interval_ms = 30_000;
        self
    }
}

/// The ids (`0_P`) of the tasks of `partitions` partitions.
pub fn all_tasks(partitions: usize) -> BTreeSet<String> {
    (0..partitions).map(|p| format!("0_{p}")).collect()
}

/// Every task of `partitions` runs on exactly one of `apps`, and every instance runs at least
/// one: the group formed with all of them.
pub fn group_complete(apps: &[App], partitions: usize) -> bool {
    let mut seen = BTreeSet::new();
    for app in apps {
        let Some(tasks) = app.running_tasks() else {
            return false;
        };
        if tasks.is_empty() || tasks.iter().any(|t| !seen.insert(t.clone())) {
            return false;
        }
    }
    seen == all_tasks(partitions)
}

/// A fresh broker and application, with the application's input and output topics created
/// (4 partitions each).
pub fn broker_and_app(state_root: &Path) -> (Broker, AppOptions) {
    let broker = Broker::start();
    let options = AppOptions::fresh(state_root);
    broker.create_topic(&options.input_topic, 4);
    broker.create_topic(&options.output_topic, 4);
    (broker, options)
}

/// Starts an instance after another one of the same application crashed (SIGKILL or abort,
/// no leaving the group) and waits until it runs `tasks` tasks: the crashed member's session
/// must run out first. Fails after `timeout` with the instance's log and the broker's.
pub fn restart_after_crash(
    broker: &Broker,
    options: &AppOptions,
    tasks: usize,
    timeout: Duration,
) -> App {
    let restarted = App::spawn(&broker.address(), options);
    let running = || {
        restarted
            .metric("kstreams_tasks_running", &[])
            .unwrap_or(0.0)
            >= tasks as f64
    };
    if poll_until(timeout, running).is_none() {
        panic!(
            "the restarted instance got no tasks within {timeout:?}; log:\n{}\nthe broker's \
             log:\n{}",
            restarted.log(),
            broker.log_tail(200)
        );
    }
    restarted
}

/// A running `kstreams-count` process with its log in a file; killed on drop.
pub struct App {
    child: Child,
    pub metrics_port: u16,
    log_path: PathBuf,
    _log_dir: TempDir,
}

impl App {
    pub fn spawn(broker: &str, options: &AppOptions) -> Self {
        Self::spawn_with_metrics_port(broker, options, free_port())
    }

    /// Like [`App::spawn`], serving metrics on a port chosen beforehand (e.g. a scrape target).
    pub fn spawn_with_metrics_port(broker: &str, options: &AppOptions, metrics_port: u16) -> Self {
        let log_dir = tempfile::tempdir().unwrap();
        let log_path = log_dir.path().join("app.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = pinned_command(app_bin(), options.cpus.as_deref())
            .env_remove("KAFKA_BROKER")
            .env("RUST_LOG", "info")
            .args([
                "--broker",
                broker,
                "--application-id",
                &options.application_id,
            ])
            .args([
                "--input-topic",
                &options.input_topic,
                "--output-topic",
                &options.output_topic,
            ])
            .arg("--state-dir")
            .arg(&options.state_dir)
            .args([
                "--commit-interval-ms",
                &options.commit_interval_ms.to_string(),
            ])
            .args(
                options
                    .session_timeout_ms
                    .iter()
                    .flat_map(|ms| ["--session-timeout-ms".to_string(), ms.to_string()]),
            )
            .args(["--metrics-address", &format!("127.0.0.1:{metrics_port}")])
            .args(&options.extra_args)
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start kstreams-count");
        App {
            child,
            metrics_port,
            log_path,
            _log_dir: log_dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `GET path` on the metrics port: (status code, body).
    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.metrics_port, path)
    }

    /// `/status` as JSON.
    pub fn status(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.http_get("/status")?.1).ok()
    }

    /// `/status`, typed.
    pub fn view(&self) -> Option<InstanceView> {
        serde_json::from_str(&self.http_get("/status")?.1).ok()
    }

    /// The group member id this instance holds (`/status`), if it answers.
    pub fn member_id(&self) -> Option<String> {
        self.view().map(|v| v.member_id)
    }

    /// Tasks the instance runs (phase `running`), if it answers and is ready.
    pub fn running_tasks(&self) -> Option<BTreeSet<String>> {
        if !self.is_ready() {
            return None;
        }
        let view = self.view()?;
        Some(
            view.tasks
                .iter()
                .filter(|t| t.state == kstreams_engine::TaskPhase::Running)
                .map(|t| t.task_id.clone())
                .collect(),
        )
    }

    /// `(task id, state)` of every task in `/status`.
    pub fn tasks(&self) -> Option<Vec<(String, String)>> {
        let status = self.status()?;
        let field =
            |t: &serde_json::Value, name: &str| t[name].as_str().unwrap_or_default().to_string();
        Some(
            status["tasks"]
                .as_array()?
                .iter()
                .map(|t| (field(t, "task_id"), field(t, "state")))
                .collect(),
        )
    }

    /// Sum of every series of a metric whose labels contain all of `label_filters`.
    pub fn metric(&self, name: &str, label_filters: &[&str]) -> Option<f64> {
        let (_, body) = self.http_get("/metrics")?;
        Some(metric_sum(&body, name, label_filters))
    }

    pub fn is_ready(&self) -> bool {
        matches!(self.http_get("/health/ready"), Some((200, _)))
    }

    /// Asserts that the process runs, and that while it answers, it is live and not ready (as
    /// while it waits for the broker or its topics). Whether the health endpoints answered.
    pub fn assert_live_not_ready(&mut self) -> bool {
        assert!(self.is_running(), "exited; log:\n{}", self.log());
        let Some((live, _)) = self.http_get("/health/live") else {
            return false;
        };
        assert_eq!(live, 200, "not live; log:\n{}", self.log());
        if let Some((ready, _)) = self.http_get("/health/ready") {
            assert_eq!(ready, 503, "ready; log:\n{}", self.log());
        }
        true
    }

    /// [`App::assert_live_not_ready`] on every poll for `duration`.
    pub fn assert_live_not_ready_for(&mut self, duration: Duration) {
        let mut answered = 0;
        poll_until(duration, || {
            answered += usize::from(self.assert_live_not_ready());
            false
        });
        assert!(
            answered > 10,
            "the health endpoints answered {answered} times in {duration:?}"
        );
    }

    /// Waits for readiness, failing early (with the log) if the process exits.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let mut exited = None;
        let ready = poll_until(timeout, || {
            exited = self.child.try_wait().unwrap();
            exited.is_some() || self.is_ready()
        });
        if let Some(status) = exited {
            panic!(
                "kstreams-count exited ({status}) before ready; log:\n{}",
                self.log()
            );
        }
        assert!(
            ready.is_some(),
            "not ready after {timeout:?}; log:\n{}",
            self.log()
        );
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.wait_exit(timeout).unwrap_or_else(|| {
            panic!(
                "no exit within {timeout:?} of SIGTERM; log:\n{}",
                self.log()
            )
        })
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        poll_every(Duration::from_millis(50), timeout, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status
    }

    /// SIGKILL, as a crash or an OOM kill would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends `signal` (`-STOP`, `-CONT`, `-TERM`) to the process without waiting.
    pub fn signal(&self, signal: &str) {
        let sent = std::process::Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill {signal} failed");
    }

    /// The next input offset the instance's first task will process (-1: none yet, or no
    /// answer).
    pub fn next_input(&self) -> i64 {
        let Some(status) = self.status() else {
            return -1;
        };
        status["tasks"][0]["processed_offset"]
            .as_i64()
            .map_or(-1, |processed| processed + 1)
    }
}

/// Runs an instance until its first task processed the input below `end`, then stops it
/// cleanly; answers its log.
pub fn run_until_processed(
    broker: &Broker,
    options: &AppOptions,
    name: &str,
    end: i64,
    timeout: Duration,
) -> String {
    let mut app = App::spawn(&broker.address(), options);
    let what = format!("{name} processed the input below offset {end}");
    crate::wait_until(&what, timeout, || app.next_input() >= end);
    let log = app.log();
    let stopped = app.terminate(timeout);
    assert!(stopped.success(), "{name}: exit {stopped}; log:\n{log}");
    log
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on a loopback port over HTTP/1.0: (status code, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// Runs `kstreams-count <args>` (a console tool) with `env` added and `stdin` as its input, and
/// waits for it to end.
pub fn run_cli(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut child = Command::new(app_bin())
        .env_remove("KAFKA_BROKER")
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kstreams-count");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `key:value` lines, as `kstreams-count produce` reads them.
pub fn key_value_lines(records: &[(String, String)]) -> String {
    records.iter().map(|(k, v)| format!("{k}:{v}\n")).collect()
}
