//! The live view: a table of instances and their tasks (restore progress bars, records/s,
//! group generation) above the event log, drawn with ratatui on a terminal (which it gives back
//! on every way out) or printed as plain snapshots otherwise; on a terminal it also reads the
//! command line typed at the prompt.

use kstreams_engine::TaskPhase;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossterm::event::{Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, List, ListItem, Paragraph, Row, Table};
use ratatui::{DefaultTerminal, Frame};
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

/// What one row of the instances table is, for its colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    /// An instance without tasks.
    Instance,
    Task(TaskPhase),
    Standby,
}

/// One row of the instances table: an instance's first row carries its own columns (name, pid,
/// port, state, generation, records/s), its further rows leave them empty.
pub struct TableRow {
    pub cells: [String; 11],
    pub kind: RowKind,
}

/// The instances table's columns, with their widths (the last takes what is left).
const COLUMNS: [(&str, u16); 11] = [
    ("INSTANCE", 17),
    ("PID", 7),
    ("PORT", 5),
    ("STATE", 17),
    ("GEN", 4),
    ("REC/S", 8),
    ("TASK", 5),
    ("TASK STATE", 10),
    ("OFFSET", 9),
    ("LAG", 6),
    ("RESTORE", 0),
];
/// Columns aligned to the right (numbers).
const RIGHT_ALIGNED: [usize; 6] = [1, 2, 4, 5, 8, 9];

/// Everything the view shows, once: for the live screen and the plain snapshots alike.
pub struct Snapshot {
    pub title: String,
    pub pauses: String,
    pub rows: Vec<TableRow>,
    /// The newest events: time of day (blank on an event's further lines) and text.
    pub events: Vec<(String, String)>,
}

/// The cluster as the view shows it, with its newest `events`.
pub fn snapshot(cluster: &Cluster, header: &Header, events: usize) -> Snapshot {
    let title = format!(
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
    );
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
    let pauses = match paused_now.is_empty() {
        true => pauses,
        false => format!("{pauses} | paused now: {}", paused_now.join(", ")),
    };
    let mut rows = Vec::new();
    for (instance, observed) in cluster.instances.iter().zip(&cluster.observed) {
        let status = observed.status.as_ref();
        let own = [
            instance.name.clone(),
            instance
                .pid()
                .filter(|_| instance.is_up())
                .map_or("-".to_string(), |p| p.to_string()),
            instance.port.to_string(),
            Cluster::phase_label(instance, observed).to_string(),
            status.map_or("-".to_string(), |s| s.generation.to_string()),
            format!("{:.0}", observed.records_per_second),
        ];
        let tasks = status.map(|s| s.tasks.as_slice()).unwrap_or(&[]);
        let standbys = status.map(|s| s.standbys.as_slice()).unwrap_or(&[]);
        let mut task_rows: Vec<([String; 5], RowKind)> = tasks
            .iter()
            .map(|task| {
                let restore = match task.state {
                    TaskPhase::Restoring => progress_bar(task.restore_done, task.restore_total, 20),
                    _ if task.restore_total > 0 => {
                        format!("restored {}", thousands(task.restore_total))
                    }
                    _ => String::new(),
                };
                let cells = [
                    task.task_id.clone(),
                    task.state.to_string(),
                    task.processed_offset
                        .map_or("-".to_string(), |o| o.to_string()),
                    task.lag.map_or("-".to_string(), |l| l.to_string()),
                    restore,
                ];
                (cells, RowKind::Task(task.state))
            })
            .collect();
        // Standby replicas: LAG is what promoting one would restore now.
        task_rows.extend(standbys.iter().map(|standby| {
            let cells = [
                standby.task_id.clone(),
                "standby".to_string(),
                "-".to_string(),
                standby.lag.map_or("-".to_string(), |l| l.to_string()),
                String::new(),
            ];
            (cells, RowKind::Standby)
        }));
        if task_rows.is_empty() {
            task_rows.push((Default::default(), RowKind::Instance));
        }
        for (i, (task_cells, kind)) in task_rows.into_iter().enumerate() {
            let lead = match i {
                0 => own.clone(),
                _ => Default::default(),
            };
            let mut cells: [String; 11] = Default::default();
            for (cell, text) in cells.iter_mut().zip(lead.into_iter().chain(task_cells)) {
                *cell = text;
            }
            rows.push(TableRow { cells, kind });
        }
    }
    let skip = cluster.events.len().saturating_sub(events);
    let events = cluster
        .events
        .iter()
        .skip(skip)
        .flat_map(|event| {
            event.text.lines().enumerate().map(|(i, text)| {
                let stamp = match i {
                    0 => clock(event.at_unix_ms),
                    _ => String::new(),
                };
                (stamp, text.to_string())
            })
        })
        .collect();
    Snapshot {
        title,
        pauses,
        rows,
        events,
    }
}

/// One table row as a plain line, in the columns' widths.
fn plain_row(cells: &[String; 11]) -> String {
    let mut line = String::new();
    for (i, (cell, (_, width))) in cells.iter().zip(COLUMNS).enumerate() {
        let width = width as usize;
        let separator = match i {
            0 => "",
            6 | 10 => "  ",
            _ => " ",
        };
        line.push_str(separator);
        match (RIGHT_ALIGNED.contains(&i), width) {
            (_, 0) => line.push_str(cell),
            (true, _) => line.push_str(&format!("{cell:>width$}")),
            (false, _) => line.push_str(&format!("{cell:<width$}")),
        }
    }
    line.trim_end().to_string()
}

/// The table and the newest events, as plain lines.
pub fn render(cluster: &Cluster, header: &Header, events: usize) -> Vec<String> {
    let snapshot = snapshot(cluster, header, events);
    let mut lines = vec![snapshot.title, snapshot.pauses, String::new()];
    lines.push(plain_row(&COLUMNS.map(|(name, _)| name.to_string())));
    lines.extend(snapshot.rows.iter().map(|row| plain_row(&row.cells)));
    lines.push(String::new());
    lines.push("events (UTC):".to_string());
    lines.extend(
        snapshot
            .events
            .iter()
            .map(|(stamp, text)| format!("  {stamp:<12}  {text}")),
    );
    lines
}

/// Draws the live screen: the header, the instances table, the events, the last command's
/// answer and the prompt (with the cursor at its end).
fn draw_live(frame: &mut Frame, snapshot: &Snapshot, message: &str, typed: &str) {
    let event_rows = (snapshot.events.len() as u16).clamp(1, 12) + 2;
    let [head, table, events, answer, prompt] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(4),
        Constraint::Length(event_rows),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(
        Paragraph::new(vec![
            Line::from(snapshot.title.as_str()).bold(),
            Line::from(snapshot.pauses.as_str()),
        ]),
        head,
    );
    let cell = |i: usize, text: &str| {
        let line = Line::from(text.to_string());
        Cell::from(match RIGHT_ALIGNED.contains(&i) {
            true => line.right_aligned(),
            false => line,
        })
    };
    let header = Row::new(
        COLUMNS
            .iter()
            .enumerate()
            .map(|(i, (name, _))| cell(i, name)),
    )
    .style(Style::new().bold().reversed());
    let rows = snapshot.rows.iter().map(|row| {
        let style = match row.kind {
            RowKind::Instance => Style::new(),
            RowKind::Task(TaskPhase::Running) => Style::new().green(),
            RowKind::Task(TaskPhase::Restoring | TaskPhase::Created) => Style::new().yellow(),
            RowKind::Task(TaskPhase::Closed) => Style::new().dim(),
            RowKind::Standby => Style::new().cyan(),
        };
        Row::new(row.cells.iter().enumerate().map(|(i, text)| cell(i, text))).style(style)
    });
    let widths = COLUMNS.map(|(_, width)| match width {
        0 => Constraint::Fill(1),
        width => Constraint::Length(width),
    });
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(" instances ")),
        table,
    );
    let shown = (event_rows - 2) as usize;
    let skip = snapshot.events.len().saturating_sub(shown);
    let lines: Vec<ListItem> = snapshot
        .events
        .iter()
        .skip(skip)
        .map(|(stamp, text)| ListItem::new(format!("{stamp:<12}  {text}")))
        .collect();
    frame.render_widget(
        List::new(lines).block(Block::bordered().title(" events (UTC) ")),
        events,
    );
    frame.render_widget(Paragraph::new(message).italic(), answer);
    let line = format!("> {typed}");
    frame.set_cursor_position((prompt.x + line.chars().count() as u16, prompt.y));
    frame.render_widget(Paragraph::new(line), prompt);
}

/// Where the view goes: a live terminal screen (ratatui), or plain printed snapshots.
pub enum Screen {
    Live {
        /// `None` once given back ([`Screen::finish`]).
        terminal: Option<Box<DefaultTerminal>>,
        prompt: Arc<Mutex<String>>,
        message: String,
    },
    Plain {
        polls: u64,
        every: u64,
    },
}

impl Screen {
    /// Takes over the terminal (alternate screen, raw mode; a panic gives it back first) and
    /// starts reading typed lines.
    pub fn live(lines: UnboundedSender<String>) -> io::Result<Self> {
        let terminal = ratatui::try_init()?;
        let prompt = Arc::new(Mutex::new(String::new()));
        let typed = prompt.clone();
        std::thread::spawn(move || read_keys(typed, lines));
        Ok(Self::Live {
            terminal: Some(Box::new(terminal)),
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
            Self::Live {
                terminal,
                prompt,
                message,
            } => {
                let Some(terminal) = terminal else {
                    return Ok(());
                };
                let snapshot = snapshot(cluster, header, 12);
                let typed = prompt.lock().map(|p| p.clone()).unwrap_or_default();
                terminal.draw(|frame| draw_live(frame, &snapshot, message, &typed))?;
                Ok(())
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

    /// Gives the terminal back (raw mode off, the main screen and the cursor back).
    pub fn finish(&mut self) {
        if let Self::Live { terminal, .. } = self {
            if terminal.take().is_some() {
                ratatui::restore();
                let _ = crossterm::execute!(io::stdout(), crossterm::cursor::Show);
            }
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
