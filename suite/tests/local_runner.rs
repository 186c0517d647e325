//! `kstreams-count local`, driven through its plain mode: starts instances, takes `add`,
//! `kill`, `start`, `stop`, `get` and `quit` from stdin while its load generator produces, and
//! reports what happened.

use kstreams_engine::TaskPhase;
use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use kstreams_suite::{app_bin, http_get, poll_until, unique, wait_until, Broker, InstanceView};

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

impl Runner {
    /// Its exit status once it has exited, polled until `timeout`.
    fn exited(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        poll_until(timeout, || {
            status = self.0.try_wait().unwrap();
            status.is_some()
        });
        status
    }
}

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
    let status = runner
        .exited(TIMEOUT)
        .unwrap_or_else(|| panic!("runner did not quit:\n{}", output_text()));
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

/// What the terminal received so far (read from the pseudo-terminal's master side).
#[derive(Clone, Default)]
struct Screen(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Screen {
    /// Copies everything the master side reads, until the terminal closes.
    fn record(master: std::fs::File) -> Self {
        let screen = Screen::default();
        let bytes = screen.0.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut master = master;
            let mut buffer = [0u8; 8192];
            while let Ok(n @ 1..) = master.read(&mut buffer) {
                bytes.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        });
        screen
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// What the terminal shows now, as a terminal emulator (vt100) draws the bytes received.
    fn shown(&self) -> String {
        let mut terminal = vt100::Parser::new(40, 160, 0);
        terminal.process(&self.0.lock().unwrap());
        terminal.screen().contents()
    }
}

/// The live view, driven in a pseudo-terminal as a user at a terminal would: it takes the
/// terminal over (alternate screen, raw mode) and draws the instances; typed `kill 1` and
/// `start 1` act; SIGTERM stops it like `quit` (instances stopped cleanly, exit 0) and the
/// terminal is given back: the main screen and the cursor restored, raw mode off.
#[test]
fn the_live_view_takes_commands_in_a_terminal_and_gives_the_terminal_back_on_sigterm() {
    use nix::pty::{openpty, Winsize};
    use nix::sys::termios::{tcgetattr, LocalFlags};
    let broker = Broker::start();
    let root = tempfile::tempdir().unwrap();
    let base = free_port_range(2);
    let size = Winsize {
        ws_row: 40,
        ws_col: 160,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = openpty(Some(&size), None).expect("open a pseudo-terminal");
    let before = tcgetattr(&pty.slave).unwrap();
    assert!(before
        .local_flags
        .contains(LocalFlags::ICANON | LocalFlags::ECHO));
    let terminal = |fd: &std::os::fd::OwnedFd| Stdio::from(fd.try_clone().unwrap());
    let mut runner = Runner(
        Command::new(app_bin())
            .env_remove("KAFKA_BROKER")
            .env("TERM", "xterm-256color")
            .args(["local", "--instances", "2", "--partitions", "4"])
            .args([
                "--rate",
                "100",
                "--keys",
                "50",
                "--broker",
                &broker.address(),
            ])
            .args(["--application-id", &unique("counts-app")])
            .args([
                "--input-topic",
                &unique("input"),
                "--output-topic",
                &unique("counts"),
            ])
            .args(["--metrics-port-base", &base.to_string()])
            .arg("--state-root")
            .arg(root.path().join("instances"))
            .args(["--", "--session-timeout-ms", "6000"])
            .stdin(terminal(&pty.slave))
            .stdout(terminal(&pty.slave))
            .stderr(terminal(&pty.slave))
            .spawn()
            .expect("start kstreams-count local"),
    );
    let screen = Screen::record(std::fs::File::from(pty.master.try_clone().unwrap()));
    let mut keyboard = std::fs::File::from(pty.master);
    let mut type_line = |line: &str| keyboard.write_all(format!("{line}\r").as_bytes()).unwrap();

    wait_until("both instances sharing the tasks", TIMEOUT, || {
        let (first, second) = (running_tasks(base), running_tasks(base + 1));
        first > 0 && second > 0 && first + second == 4
    });
    wait_until("the view to draw the instances", TIMEOUT, || {
        let text = screen.text();
        text.contains("\x1b[?1049h")
            && text.contains("kstreams-count-1")
            && text.contains("instances")
    });
    let raw = tcgetattr(&pty.slave).unwrap();
    assert!(
        !raw.local_flags
            .intersects(LocalFlags::ICANON | LocalFlags::ECHO),
        "the view did not put the terminal in raw mode"
    );

    type_line("kill 1");
    wait_until("the survivor to run every task", TIMEOUT, || {
        running_tasks(base) == 4
            && screen
                .shown()
                .contains("kstreams-count-1 exited (killed by SIGKILL)")
    });
    type_line("start 1");
    assert!(
        poll_until(TIMEOUT, || running_tasks(base + 1) > 0).is_some(),
        "kstreams-count-1 did not run tasks again; the screen ended:\n{}",
        screen.shown()
    );
    wait_until("the view to show the restart", TIMEOUT, || {
        screen.text().contains("kstreams-count-1 started")
    });

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(runner.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = runner
        .exited(TIMEOUT)
        .expect("the runner did not stop on SIGTERM");
    assert!(
        status.success(),
        "runner exit {status}; the terminal received at the end:\n{}",
        screen.shown()
    );
    let after = tcgetattr(&pty.slave).unwrap();
    assert!(
        after
            .local_flags
            .contains(LocalFlags::ICANON | LocalFlags::ECHO),
        "raw mode was left on after SIGTERM"
    );
    wait_until("the runner's last words to arrive", TIMEOUT, || {
        screen.text().contains("produced ")
    });
    let text = screen.text();
    let entered = text
        .rfind("\x1b[?1049h")
        .expect("entered the alternate screen");
    let left = text
        .rfind("\x1b[?1049l")
        .expect("left the alternate screen");
    assert!(
        left > entered,
        "the alternate screen was not left at the end"
    );
    let hidden = text.rfind("\x1b[?25l");
    assert!(
        hidden < text.rfind("\x1b[?25h"),
        "the cursor was left hidden"
    );
    assert!(
        text[left..].contains("stopping the load generator"),
        "the summary is printed on the main screen after the view: {:?}",
        &text[left..]
    );
    for i in 0..2 {
        assert_eq!(
            http_get(base + i, "/health/live"),
            None,
            "instance {i} still up"
        );
    }
}
