//! Everything specific to the local broker, tansu 0.6.0 with our patches: finding its binary,
//! its storage engines, starting one per test, and reading its log (the group's leader).
//! The Kafka-protocol operations on a broker are in `kafka.rs`.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use tempfile::TempDir;

use crate::app::pinned_command;
use crate::{free_port, poll_until};

/// The tansu binary: `$TANSU_BIN`, else the one `scripts/install-deps.sh` built last (with
/// the patches in `third_party/tansu/`).
pub fn tansu_bin() -> PathBuf {
    installed_tool("tansu broker", "TANSU_BIN", "tansu-current/bin/tansu")
}

/// Python with confluent-kafka, the independent client: `$KSTREAMS_PYTHON`, else the venv
/// `scripts/install-deps.sh` fills.
pub fn python() -> PathBuf {
    installed_tool(
        "python with confluent-kafka",
        "KSTREAMS_PYTHON",
        "venv/bin/python",
    )
}

/// Runs the independent client's conformance script `suite/conformance/<script>` (Python
/// confluent-kafka) against `broker` with topic names under `prefix`, and asserts it exited 0
/// and printed `ok <check> ...` for each of `checks`; the failure shows its output and the
/// broker's log.
pub fn conformance(broker: &Broker, script: &str, prefix: &str, checks: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("conformance")
        .join(script);
    let output = std::process::Command::new(python())
        .arg(&script)
        .args(["--bootstrap", &broker.address()])
        .args(["--prefix", prefix])
        .output()
        .expect("run the conformance script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} exited {}\nstdout:\n{stdout}\nstderr:\n{stderr}\nbroker log:\n{}",
        script.display(),
        output.status,
        broker.log_tail(40)
    );
    for check in checks {
        assert!(
            stdout
                .lines()
                .any(|line| line.starts_with(&format!("ok {check} "))),
            "{check} did not pass; stdout:\n{stdout}"
        );
    }
}

/// A program `scripts/install-deps.sh` installs: `$variable`, else `cached` under
/// `~/.cache/kstreams/`; fails naming both when it is not there.
pub fn installed_tool(what: &str, variable: &str, cached: &str) -> PathBuf {
    let path = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/kstreams")
                .join(cached)
        });
    assert!(
        path.is_file(),
        "{what} not found at {} (run scripts/install-deps.sh or set {variable})",
        path.display()
    );
    path
}

/// Where a tansu broker keeps its records (see ../shared/broker.md for what each can do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// sqlite:// in the broker's temp dir: everything the tests need (resume, watermarks).
    Sqlite,
    /// memory://: much faster (the benchmarks'); its end offsets and fetches from inside a
    /// batch are Kafka's with our patches (`broker_offsets.rs`), but it keeps nothing across
    /// a broker restart and has no `read_committed` filter of aborted transactions.
    Memory,
}

impl Storage {
    pub fn url(self) -> &'static str {
        match self {
            Storage::Sqlite => "sqlite://tansu.db",
            Storage::Memory => "memory://tansu/",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Storage::Sqlite => "sqlite",
            Storage::Memory => "memory",
        }
    }

    /// The storage [`Storage::name`] calls `name`, if any.
    pub fn named(name: &str) -> Option<Self> {
        [Storage::Sqlite, Storage::Memory]
            .into_iter()
            .find(|storage| storage.name() == name)
    }

    /// Client settings a consumer needs to be fast against this storage: memory:// answers
    /// a fetch only after `fetch.wait.max.ms`, even when records are ready.
    pub fn client_overrides(self) -> Vec<(String, String)> {
        match self {
            Storage::Sqlite => vec![],
            Storage::Memory => [
                ("fetch.wait.max.ms", "10"),
                ("fetch.queue.backoff.ms", "10"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        }
    }
}

/// Reports that (part of) the running test is skipped for a limit of the local broker. The line
/// goes to the test's output and, where `KSTREAMS_SKIPPED_LOG` names a file, is appended to it:
/// `scripts/test.sh` lists every skip at the end of the suite, since libtest shows a passing
/// test's output to no one.
pub fn skip_for_broker_limit(what: &str) {
    record_skip(what);
}

/// `KSTREAMS_TEST_BROKER=host:port`: the tests that can share a broker (random topic and group
/// names) run against that one, any Kafka-protocol broker, instead of a private tansu each.
pub fn shared_broker() -> Option<String> {
    std::env::var("KSTREAMS_TEST_BROKER")
        .ok()
        .filter(|address| !address.trim().is_empty())
}

/// For a test that needs a private local broker (it restarts it, reads its log, or secures
/// it): `true`, with the skip recorded, when the suite runs against a shared broker.
pub fn skip_without_private_broker(why: &str) -> bool {
    if shared_broker().is_none() {
        return false;
    }
    record_skip(&format!(
        "this test: it {why}, which needs a private local broker (KSTREAMS_TEST_BROKER is set)"
    ));
    true
}

fn record_skip(what: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_owned();
    let line = format!("SKIPPED {what} [{test}]");
    eprintln!("{line}");
    if let Ok(path) = std::env::var("KSTREAMS_SKIPPED_LOG") {
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            // One write per line: tests running at once append to the same file.
            let _ = file.write_all(format!("{line}\n").as_bytes());
        }
    }
}

/// What tansu's group coordinator logged for one group (see [`Broker::group_events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEvents {
    /// Lines naming a new leader (`member_id=".." group_id=".." __self.generation_id=..`).
    pub leader_elections: usize,
    /// The member id the last of them named.
    pub leader: Option<String>,
}

impl GroupEvents {
    /// Reads them from tansu 0.6.0's log text (written without colours: `NO_COLOR`).
    pub fn from_log(log: &str, group: &str) -> Self {
        let group_field = format!("group_id=\"{group}\"");
        let elections: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&group_field) && l.contains("generation_id="))
            .collect();
        GroupEvents {
            leader_elections: elections.len(),
            leader: elections
                .last()
                .and_then(|l| l.split("member_id=\"").nth(1)?.split('"').next())
                .map(str::to_owned),
        }
    }
}

/// A tansu broker with its storage in its own temp dir; killed on drop.
pub struct Broker {
    /// Where tansu listens.
    pub port: u16,
    /// Where clients are told to connect: `port`, or a TLS front's (see `secured.rs`).
    pub advertised_port: u16,
    pub storage: Storage,
    /// Settings every client of this broker needs (SASL credentials, TLS trust); the
    /// harness's own clients (`kafka.rs`) use them.
    pub client_settings: Vec<(String, String)>,
    /// The bootstrap address clients use.
    address: String,
    /// `None` for a shared broker (`KSTREAMS_TEST_BROKER`).
    child: Option<Child>,
    pub(crate) dir: TempDir,
    cpus: Option<String>,
    /// Kept alive as long as the broker (e.g. a TLS front).
    pub(crate) companions: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl Broker {
    /// A private tansu broker on a free port, or the shared broker when `KSTREAMS_TEST_BROKER`
    /// names one.
    pub fn start() -> Self {
        match shared_broker() {
            Some(address) => Broker {
                port: 0,
                advertised_port: 0,
                address,
                storage: Storage::Sqlite,
                client_settings: vec![],
                child: None,
                dir: tempfile::tempdir().unwrap(),
                cpus: None,
                companions: vec![],
            },
            None => Self::start_on(free_port()),
        }
    }

    /// A private broker on `port` (tests that need one call `skip_without_private_broker`).
    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, Storage::Sqlite, None)
    }

    /// A private broker with the given storage; `cpus` (a `taskset` list such as `8-15`) pins
    /// it.
    pub fn start_with(port: u16, storage: Storage, cpus: Option<&str>) -> Self {
        Self::launch(port, port, storage, cpus)
    }

    /// Listens on `port` and tells clients to connect to `advertised_port`.
    pub(crate) fn launch(
        port: u16,
        advertised_port: u16,
        storage: Storage,
        cpus: Option<&str>,
    ) -> Self {
        assert!(
            shared_broker().is_none(),
            "this test needs a private broker: it must begin with skip_without_private_broker"
        );
        let dir = tempfile::tempdir().unwrap();
        let child = spawn_tansu(dir.path(), port, advertised_port, storage, cpus, &[]);
        let mut broker = Broker {
            port,
            advertised_port,
            address: format!("127.0.0.1:{advertised_port}"),
            storage,
            client_settings: vec![],
            child: Some(child),
            dir,
            cpus: cpus.map(str::to_owned),
            companions: vec![],
        };
        broker.wait_up();
        broker
    }

    /// Stops the broker and starts it again on the same storage and ports, with `extra_args`
    /// (e.g. `--authentication`).
    pub(crate) fn relaunch(&mut self, extra_args: &[&str]) {
        self.stop();
        self.child = Some(spawn_tansu(
            self.dir.path(),
            self.port,
            self.advertised_port,
            self.storage,
            self.cpus.as_deref(),
            extra_args,
        ));
        self.wait_up();
    }

    fn stop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn wait_up(&mut self) {
        let port = self.port;
        let mut exited = None;
        let child = self.child.as_mut().expect("a private broker");
        let up = poll_until(Duration::from_secs(20), || {
            exited = child.try_wait().unwrap();
            exited.is_some() || TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        if let Some(status) = exited {
            panic!(
                "tansu ({}) exited ({status}) at start with {} storage{}; its log:\n{}",
                tansu_bin().display(),
                self.storage.name(),
                if self.storage == Storage::Memory {
                    " (memory:// needs a broker built with TANSU_FEATURES=libsql,dynostore, \
                     the default of scripts/env.sh)"
                } else {
                    ""
                },
                self.log_tail(50)
            );
        }
        assert!(
            up.is_some(),
            "tansu did not accept connections on port {port} within 20 s"
        );
    }

    /// The bootstrap address clients use.
    pub fn address(&self) -> String {
        self.address.clone()
    }

    /// The last `lines` lines the broker logged (its coordinator at info level by default,
    /// `TANSU_LOG` overrides the filter), for a failure message.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The broker's log (plain text: the broker runs with `NO_COLOR`).
    fn log(&self) -> String {
        if self.child.is_none() {
            return format!("(the shared broker {} keeps its own log)", self.address);
        }
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    /// What tansu's group coordinator has logged for `group` so far: the leader elections,
    /// which DescribeGroups (`describe_group`) does not show.
    pub fn group_events(&self, group: &str) -> GroupEvents {
        assert!(
            self.child.is_some(),
            "group events come from a private broker's log: call skip_without_private_broker"
        );
        GroupEvents::from_log(&self.log(), group)
    }
}

/// Starts tansu in `dir` (its log goes to `dir/broker.log`, appended across restarts).
fn spawn_tansu(
    dir: &Path,
    port: u16,
    advertised_port: u16,
    storage: Storage,
    cpus: Option<&str>,
    extra_args: &[&str],
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("broker.log"))
        .unwrap();
    pinned_command(tansu_bin(), cpus)
        .current_dir(dir)
        .args([
            "broker",
            "--listener-url",
            &format!("tcp://127.0.0.1:{port}"),
            "--advertised-listener-url",
            &format!("tcp://127.0.0.1:{advertised_port}"),
        ])
        .args(["--storage-engine", storage.url()])
        .args(extra_args)
        // tansu logs only errors by default; its group coordinator's info lines (members
        // joining, missed heartbeats) are what explain a stuck rebalance in a failed test.
        .env(
            "RUST_LOG",
            std::env::var("TANSU_LOG")
                .unwrap_or_else(|_| "warn,tansu_broker::coordinator=info".into()),
        )
        // Plain text, so the tests can read the group's events from it.
        .env("NO_COLOR", "1")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start tansu")
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.child.is_none() {
            return;
        }
        self.stop();
        // `TANSU_LOG_KEEP=<dir>` keeps every broker's whole log for a post-mortem.
        if let Ok(keep) = std::env::var("TANSU_LOG_KEEP") {
            let _ = std::fs::copy(
                self.dir.path().join("broker.log"),
                Path::new(&keep).join(format!("broker-{}.log", self.port)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as tansu 0.6.0 writes them: a leader named, a leader dropped on a survivor's
    /// heartbeat, the survivor's member ids expiring, another group's lines in between.
    const TANSU_LOG: &str = "\
2026-11-26T04:05:33.311629Z  INFO tansu_broker::coordinator::group::administrator: 1865: member_id=\"g-consumer-b\" group_id=\"g\" __self.generation_id=1
2026-11-26T04:05:33.4Z  INFO tansu_broker::coordinator::group::administrator: 1865: member_id=\"other-consumer-x\" group_id=\"other\" __self.generation_id=1
2026-11-26T04:05:39.3Z  INFO tansu_broker::coordinator::group::administrator: 1386: missed heartbeat for g-consumer-b for g in generation: 1, after 6004ms
2026-11-26T04:05:42.3Z  INFO tansu_broker::coordinator::group::administrator: 1344: missed heartbeat for g-consumer-a for g in generation: 2, after 6007ms
2026-11-26T04:05:43.3Z  INFO tansu_broker::coordinator::group::administrator: 1337: missed heartbeat for leader other-consumer-x for other in generation: 1, after 6181ms
";

    #[test]
    fn group_events_are_read_from_tansus_log() {
        let events = GroupEvents::from_log(TANSU_LOG, "g");
        assert_eq!(
            events,
            GroupEvents {
                leader_elections: 1,
                leader: Some("g-consumer-b".into()),
            }
        );
        let other = GroupEvents::from_log(TANSU_LOG, "other");
        assert_eq!(other.leader_elections, 1);
        assert_eq!(other.leader.as_deref(), Some("other-consumer-x"));
    }
}
