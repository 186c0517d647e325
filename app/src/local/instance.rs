//! One local instance, `kstreams-count-<i>`: its process, state dir (its "volume"), metrics
//! port and log file, started, stopped (SIGTERM) or killed (SIGKILL) on request.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Where an instance's process is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// SIGTERM sent at this time; waiting for the clean shutdown.
    Stopping(Instant),
    /// Exited; how (`exit 0`, `killed by SIGKILL`, ...).
    Exited(String),
}

pub struct Instance {
    pub name: String,
    pub port: u16,
    pub state_dir: PathBuf,
    pub log_path: PathBuf,
    pub phase: Phase,
    child: Option<Child>,
}

impl Instance {
    pub fn new(index: usize, root: &Path, port: u16) -> Self {
        let name = format!("kstreams-count-{index}");
        Self {
            state_dir: root.join(&name),
            log_path: root.join(format!("{name}.log")),
            name,
            port,
            phase: Phase::Exited("not started".into()),
            child: None,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process: `program args.. --state-dir <own dir> --metrics-address <own port>`,
    /// output appended to its log file.
    pub fn start(&mut self, program: &Path, args: &[String]) -> anyhow::Result<()> {
        anyhow::ensure!(
            !matches!(self.phase, Phase::Running | Phase::Stopping(_)),
            "{} is already running",
            self.name
        );
        std::fs::create_dir_all(&self.state_dir)
            .with_context(|| format!("create state dir {}", self.state_dir.display()))?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("open log {}", self.log_path.display()))?;
        let mut command = Command::new(program);
        // SAFETY: the closure runs in the forked child before exec and only makes one
        // async-signal-safe system call (prctl).
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                // If the runner dies without stopping the instances, they get SIGTERM.
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
            });
        }
        let child = command
            .args(args)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--metrics-address")
            .arg(format!("127.0.0.1:{}", self.port))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {} ({})", self.name, program.display()))?;
        self.child = Some(child);
        self.phase = Phase::Running;
        Ok(())
    }

    /// Asks for a clean shutdown (SIGTERM).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let pid = self.running_pid()?;
        kill(Pid::from_raw(pid as i32), Signal::SIGTERM)
            .with_context(|| format!("send SIGTERM to {}", self.name))?;
        self.phase = Phase::Stopping(Instant::now());
        Ok(())
    }

    /// Kills the process at once (SIGKILL), as a node failure would.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.running_pid()?;
        if let Some(child) = self.child.as_mut() {
            child
                .kill()
                .with_context(|| format!("kill {}", self.name))?;
        }
        // The next refresh reaps it and reports how it ended.
        Ok(())
    }

    fn running_pid(&self) -> anyhow::Result<u32> {
        match (&self.phase, self.pid()) {
            (Phase::Running | Phase::Stopping(_), Some(pid)) => Ok(pid),
            _ => anyhow::bail!("{} is not running", self.name),
        }
    }

    /// Notices an exit; returns how it ended when the process has just exited.
    pub fn reap(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        if matches!(self.phase, Phase::Exited(_)) {
            return None;
        }
        let status = child.try_wait().ok()??;
        let how = match (
            status.code(),
            std::os::unix::process::ExitStatusExt::signal(&status),
        ) {
            (Some(code), _) => format!("exit {code}"),
            (None, Some(9)) => "killed by SIGKILL".to_string(),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None) => "exited".to_string(),
        };
        self.phase = Phase::Exited(how.clone());
        Some(how)
    }

    pub fn is_up(&self) -> bool {
        matches!(self.phase, Phase::Running | Phase::Stopping(_))
    }

    /// The last `lines` lines of the instance's log (for errors worth showing).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}
