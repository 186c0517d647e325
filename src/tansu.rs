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
    let path = std::env::var_os("TANSU_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/kstreams/tansu-current/bin/tansu")
        });
    assert!(
        path.is_file(),
        "tansu broker not found at {} (run scripts/install-deps.sh or set TANSU_BIN)",
        path.display()
    );
    path
}

/// Where a tansu broker keeps its records (see ../shared/broker.md for what each can do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// sqlite:// in the broker's temp dir: everything the tests need (resume, watermarks).
    Sqlite,
    /// memory://: much faster, but only for reading sequentially from offset 0 without
    /// resuming; its high watermarks are wrong (no lag, restore or record counts on it).
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
            let _ = writeln!(file, "{line}");
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
    /// Members whose session ran out, in order (`missed heartbeat for [leader] <member> for
    /// <group> in generation ..`).
    pub expired: Vec<String>,
}

impl GroupEvents {
    /// Reads them from tansu 0.6.0's log text (written without colours: `NO_COLOR`).
    pub fn from_log(log: &str, group: &str) -> Self {
        let group_field = format!("group_id=\"{group}\"");
        let expiry_end = format!(" for {group} in generation");
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
            expired: log
                .lines()
                .filter_map(|l| {
                    let rest = l.split("missed heartbeat for ").nth(1)?;
                    let member = rest.split(expiry_end.as_str()).next()?;
                    (member.len() < rest.len())
                        .then(|| member.trim_start_matches("leader ").to_owned())
                })
                .collect(),
        }
    }
}

/// A tansu broker with its storage in its own temp dir; killed on drop.
pub struct Broker {
    pub port: u16,
    pub storage: Storage,
    child: Child,
    dir: TempDir,
}

impl Broker {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, Storage::Sqlite, None)
    }

    /// A broker with the given storage; `cpus` (a `taskset` list such as `8-15`) pins it.
    pub fn start_with(port: u16, storage: Storage, cpus: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("broker.log")).unwrap();
        let child = pinned_command(tansu_bin(), cpus)
            .current_dir(dir.path())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", storage.url()])
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
            .expect("start tansu");
        let mut broker = Broker {
            port,
            storage,
            child,
            dir,
        };
        let mut exited = None;
        let up = poll_until(Duration::from_secs(20), || {
            exited = broker.child.try_wait().unwrap();
            exited.is_some() || TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        if let Some(status) = exited {
            panic!(
                "tansu ({}) exited ({status}) at start with {} storage{}; its log:\n{}",
                tansu_bin().display(),
                storage.name(),
                if storage == Storage::Memory {
                    " (memory:// needs the broker scripts/bench.sh builds, with \
                     TANSU_FEATURES=libsql,dynostore)"
                } else {
                    ""
                },
                broker.log_tail(50)
            );
        }
        assert!(
            up.is_some(),
            "tansu did not accept connections on port {port} within 20 s"
        );
        broker
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
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
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    /// What tansu's group coordinator has logged for `group` so far. tansu 0.6.0 answers
    /// DescribeGroups with an error on sqlite storage, so its log is the only view of the
    /// group it offers.
    pub fn group_events(&self, group: &str) -> GroupEvents {
        GroupEvents::from_log(&self.log(), group)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
                expired: vec!["g-consumer-b".into(), "g-consumer-a".into()],
            }
        );
        let other = GroupEvents::from_log(TANSU_LOG, "other");
        assert_eq!(other.leader_elections, 1);
        assert_eq!(other.expired, vec!["other-consumer-x".to_string()]);
    }
}
