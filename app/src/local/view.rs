//! The live view: a table of instances and their tasks (restore progress bars, records/s,
//! group generation) above the event log, redrawn in place on a terminal or printed as plain
//! snapshots otherwise; on a terminal it also reads the command line typed at the prompt.

use kstreams_engine::TaskPhase;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossterm::event::{Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};
use crossterm::{cursor, execute, queue, terminal};
use tokio::sync::mpsc::UnboundedSender;

use super::cluster::Cluster;

/// What the header shows besides the cluster itself.
pub struct Header {
    pub broker: String,
    pub input_topic: String,
    pub partitions: usize,
    pub rate: u64,
    pub delivered: u64,
    pub failed: u64,
}

/// `[######----]  60%  6,000/10,000`
pub fn progress_bar(done: u64, total: u64, width: usize) -> String {
    let fraction = if total == 0 {
        1.0
    } else {
        (done as f64 / total as f64).clamp(0.0, 1.0)
    };
    let filled = (fraction * width as f64).round() as usize;
    format!(
        "[{}{}] {:>3.0}% {}/{}",
        "#".repeat(filled),
        "-".repeat(width - filled),
        fraction * 100.0,
        thousands(done),
        thousands(total)
    )
}

pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `HH:MM:SS.mmm` (UTC) of a Unix time in milliseconds.
pub fn clock(unix_ms: u64) -> String {
    let ms = unix_ms % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// The table and the newest events, as lines.
pub fn render(cluster: &Cluster, header: &Header, events: usize) -> Vec<String> {
    let mut lines = vec![format!(
        "kstreams-count local: {} instance(s) up | broker {} | {} ({} partitions) | load {} rec/s, {} delivered{}",
        cluster.up_count(),
        header.broker,
        header.input_topic,
        header.partitions,
        header.rate,
        thousands(header.delivered),
        match header.failed {
            0 => String::new(),
            n => format!(", {n} FAILED"),
        }
    )];
    let pauses = match cluster.pauses.summary() {
        Some((median, max)) => format!(
            "partition pauses: {} seen, median {:.2} s, max {:.2} s",
            cluster.pauses.count(),
            median.as_secs_f64(),
            max.as_secs_f64()
        ),
        None => "partition pauses: none yet".to_string(),
    };
    let paused_now: Vec<String> = cluster
        .pauses
        .paused_now(Instant::now())
        .iter()
        .map(|(task, d)| format!("{task} {:.1}s", d.as_secs_f64()))
        .collect();
    lines.push(match paused_now.is_empty() {
        true => pauses,
        false => format!("{pauses} | paused now: {}", paused_now.join(", ")),
    });
    lines.push(String::new());
    lines.push(format!(
        "{:<17} {:>7} {:>5} {:<12} {:>4} {:>8}  {:<5} {:<10} {:>9} {:>6}  RESTORE",
        "INSTANCE", "PID", "PORT", "STATE", "GEN", "REC/S", "TASK", "TASK STATE", "OFFSET", "LAG"
    ));
    for (instance, observed) in cluster.instances.iter().zip(&cluster.observed) {
        let pid = instance
            .pid()
            .filter(|_| instance.is_up())
            .map_or("-".to_string(), |p| p.to_string());
        let generation = observed
            .status
            .as_ref()
            .map_or("-".to_string(), |s| s.generation.to_string());
        let prefix = format!(
            "{:<17} {:>7} {:>5} {:<12} {:>4} {:>8.0}",
            instance.name,
            pid,
            instance.port,
            Cluster::phase_label(instance, observed),
            generation,
            observed.records_per_second
        );
        let tasks = observed
            .status
            .as_ref()
            .map(|s| s.tasks.as_slice())
            .unwrap_or(&[]);
        let standbys = observed
            .status
            .as_ref()
            .map(|s| s.standbys.as_slice())
            .unwrap_or(&[]);
        if tasks.is_empty() && standbys.is_empty() {
            lines.push(prefix.clone());
        }
        for (i, task) in tasks.iter().enumerate() {
            let lead = match i {
                0 => prefix.clone(),
                _ => " ".repeat(prefix.len()),
            };
            let restore = match task.state {
                TaskPhase::Restoring => progress_bar(task.restore_done, task.restore_total, 20),
                _ if task.restore_total > 0 => {
                    format!("restored {}", thousands(task.restore_total))
                }
                _ => String::new(),
            };
            lines.push(format!(
                "{lead}  {:<5} {:<10} {:>9} {:>6}  {restore}",
                task.task_id,
                task.state,
                task.processed_offset
                    .map_or("-".to_string(), |o| o.to_string()),
                task.lag.map_or("-".to_string(), |l| l.to_string()),
            ));
        }
        // Standby replicas: LAG is what promoting one would restore now.
        for (i, standby) in standbys.iter().enumerate() {
            let lead = match i + tasks.len() {
                0 => prefix.clone(),
                _ => " ".repeat(prefix.len()),
            };
            lines.push(format!(
                "{lead}  {:<5} {:<10} {:>9} {:>6}",
                standby.task_id,
                "standby",
                "-",
                standby.lag.map_or("-".to_string(), |l| l.to_string()),
            ));
        }
    }
    lines.push(String::new());
    lines.push("events (UTC):".to_string());
    let skip = cluster.events.len().saturating_sub(events);
    for event in cluster.events.iter().skip(skip) {
        for (i, text) in event.text.lines().enumerate() {
            let stamp = match i {
                0 => clock(event.at_unix_ms),
                _ => " ".repeat(12),
            };
            lines.push(format!("  {stamp}  {text}"));
        }
    }
    lines
}

/// Where the view goes: a live terminal screen, or plain printed snapshots.
pub enum Screen {
    Live {
        prompt: Arc<Mutex<String>>,
        message: String,
    },
    Plain {
        polls: u64,
        every: u64,
    },
}

impl Screen {
    /// Takes over the terminal (alternate screen, raw mode) and starts reading typed lines.
    pub fn live(lines: UnboundedSender<String>) -> io::Result<Self> {
        terminal::enable_raw_mode()?;
        execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
        let prompt = Arc::new(Mutex::new(String::new()));
        let typed = prompt.clone();
        std::thread::spawn(move || read_keys(typed, lines));
        Ok(Self::Live {
            prompt,
            message: super::command::HELP.to_string(),
        })
    }

    /// Prints a full snapshot every `every` polls, and each event as it happens.
    pub fn plain(every: u64) -> Self {
        Self::Plain { polls: 0, every }
    }

    /// A line under the table (a command's result or error).
    pub fn say(&mut self, text: String) {
        match self {
            Self::Live { message, .. } => *message = text,
            Self::Plain { .. } => println!("{text}"),
        }
    }

    pub fn draw(&mut self, cluster: &mut Cluster, header: &Header) -> io::Result<()> {
        match self {
            Self::Live { prompt, message } => {
                let (width, height) = terminal::size().unwrap_or((120, 40));
                let fixed = 3; // blank, message, prompt
                let mut lines = render(cluster, header, 12);
                lines.truncate((height as usize).saturating_sub(fixed));
                let mut out = io::stdout().lock();
                queue!(
                    out,
                    cursor::MoveTo(0, 0),
                    terminal::Clear(terminal::ClearType::All)
                )?;
                for line in lines {
                    let line: String = line.chars().take(width as usize).collect();
                    write!(out, "{line}\r\n")?;
                }
                let typed = prompt.lock().map(|p| p.clone()).unwrap_or_default();
                write!(out, "\r\n{message}\r\n> {typed}")?;
                out.flush()
            }
            Self::Plain { polls, every } => {
                for event in cluster.take_new_events() {
                    println!("{}  {}", clock(event.at_unix_ms), event.text);
                }
                *polls += 1;
                if (*polls).is_multiple_of(*every) {
                    for line in render(cluster, header, 0) {
                        println!("| {line}");
                    }
                }
                io::stdout().flush()
            }
        }
    }

    /// Gives the terminal back.
    pub fn finish(&mut self) {
        if let Self::Live { .. } = self {
            let _ = execute!(io::stdout(), cursor::Show, terminal::LeaveAlternateScreen);
            let _ = terminal::disable_raw_mode();
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Builds the prompt line from key presses; Enter sends it, Ctrl-C or Esc sends `quit`.
fn read_keys(prompt: Arc<Mutex<String>>, lines: UnboundedSender<String>) {
    while let Ok(event) = crossterm::event::read() {
        let TermEvent::Key(key) = event else { continue };
        if key.kind == KeyEventKind::Release {
            continue;
        }
        let Ok(mut typed) = prompt.lock() else { return };
        match key.code {
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                let _ = lines.send("quit".into());
            }
            KeyCode::Esc => {
                let _ = lines.send("quit".into());
            }
            KeyCode::Enter => {
                let line = std::mem::take(&mut *typed);
                if lines.send(line).is_err() {
                    return;
                }
            }
            KeyCode::Backspace => {
                typed.pop();
            }
            KeyCode::Char(c) => typed.push(c),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_bar_shows_fraction_and_counts() {
        assert_eq!(
            progress_bar(5_200, 10_000, 10),
            "[#####-----]  52% 5,200/10,000"
        );
        assert_eq!(progress_bar(0, 0, 4), "[####] 100% 0/0");
    }

    #[test]
    fn clock_formats_utc_time_of_day() {
        assert_eq!(clock(3_723_004), "01:02:03.004");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
    }
}
