//! What restoring one task means: where each store's changelog restore starts and ends
//! (from the offset the task's own RocksDB says it applied, up to the changelog's end), how a
//! changelog record is applied (the newest input offset per key wins), where input resumes
//! (the task's own last commit or the group's, never past it), and which restored keys are
//! marked, durably, as possibly owing their output (or owing it again, after an overlapping
//! owner's older record). The state updater drives it.
//! A standby replica is a restore that never ends: it follows its changelogs, and the position
//! it keeps in its store is one its promotion can safely restore from (see [`Follow`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::config::StreamsConfig;
use crate::error::{EngineError, Result};
use crate::metrics::EngineMetrics;
use crate::runtime::consumer_port::RestoreConsumer;
use crate::status::{StandbyProgress, TaskProgress};
use crate::store::changelog_format::decode_changelog_value;
use crate::store::StoreId;
use crate::store::{ChangelogUpdate, KeyMap, StoredOffsets, TaskStore};
use crate::task_id::TaskId;

/// Changelog records applied to RocksDB per write batch.
const BATCH: usize = 10_000;
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// What a restore did and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreOutcome {
    /// Changelog records applied (all stores).
    pub records: u64,
    /// Where input processing resumes: the task's own last commit or the group's, whichever
    /// is further. Never past them: a write-out can be cut short at any record, so what the
    /// changelog holds beyond a commit says nothing about the keys whose records did not land
    /// (their input is read again; per-key versions skip what is already applied).
    pub input_next: Option<i64>,
    /// Restored keys newly marked as owing their output: changelog records at or past the
    /// resume point (their output may not have reached the broker), and keys with an older
    /// record of another writer after their value (that writer's output may be the key's last
    /// on the output topic). The marks are kept in the task's store until a commit has flushed
    /// the re-emitted output.
    pub replay_marked: u64,
    /// Per store, the changelog offset of the first record restored past the resume point:
    /// where the previous owner's last uncommitted write-out began. If that owner is still
    /// running (frozen, or cut off), its output for those keys may land late, after this
    /// task's; a task that later finds another writer's records restores from here again, so
    /// those keys owe their output once more.
    pub owed_from: Vec<Option<i64>>,
    /// Why the local state was wiped before restoring, if it was.
    pub wiped: Option<&'static str>,
    /// Per store, where the changelog stood when the restore ended: every record below it is
    /// in the store. The task's changelog position starts here (its own first records land
    /// exactly here unless another writer is at work), not at a position read back from
    /// RocksDB, which a store with nothing to restore never had written.
    pub changelog_next: Vec<Option<i64>>,
}

/// What says a changelog partition lost records this task's state was built from or still
/// needs: it ends below where the task's state says it wrote through (deleted and recreated,
/// or truncated by the broker), or it starts above where the task's restore would begin
/// (records deleted: by retention, or `DeleteRecords`). Either way restoring would silently
/// leave keys at an older count or at none, so the task stops instead.
fn check_changelog_history(
    task: TaskId,
    topic: &str,
    low: i64,
    high: i64,
    local_next: Option<i64>,
) -> Result<()> {
    let lost = |detail: String| EngineError::HistoryLost {
        task,
        topic: topic.to_string(),
        detail,
    };
    if let Some(next) = local_next.filter(|next| *next > high) {
        return Err(lost(format!(
            "ends at offset {high}, but this task's state was written through offset {next}: \
             the changelog was deleted and recreated, or truncated"
        )));
    }
    let start = local_next.unwrap_or(0);
    if low > start {
        return Err(lost(format!(
            "starts at offset {low}, but this task's restore starts at {start}: records were \
             deleted from it"
        )));
    }
    Ok(())
}

/// What says the input partition was recreated or truncated: it ends below an offset the task
/// (or the group) already committed, so resuming there would skip whatever it now holds.
fn check_input_history(
    task: TaskId,
    topic: &str,
    end: i64,
    local_next: Option<i64>,
    group_next: Option<i64>,
) -> Result<()> {
    let committed = local_next.max(group_next);
    match committed {
        Some(committed) if committed > end => Err(EngineError::HistoryLost {
            task,
            topic: topic.to_string(),
            detail: format!(
                "(the input) ends at offset {end}, but offset {committed} was already \
                 committed: the input topic was deleted and recreated, or truncated"
            ),
        }),
        _ => Ok(()),
    }
}

/// A changelog record read: its key, its value (`None`: a tombstone) and the input offset the
/// value carries (`None`: not known).
type ReadRecord = (Vec<u8>, Option<Vec<u8>>, Option<i64>);

/// What a standby knows of one changelog beyond what a restore does: which stretches of what
/// it applied may still be past the group's last commit.
///
/// Under at-least-once, a changelog record whose input offset is at or past the group's commit
/// may belong to a write-out whose output never landed; a restore marks such keys as owing
/// their output (the restore's `owe_output`). A standby cannot know where the commit will
/// stand when it is promoted, so the position it keeps is the start of the first stretch it
/// applied that holds such a record: promotion restores from there, re-applying (versions make
/// that a no-op) and marking what it must. A write-out's records all carry input offsets past
/// the previous commit, so stretches resolve as the group commits, one commit interval behind.
#[derive(Default)]
pub(crate) struct Follow {
    /// Applied stretches not yet known to lie wholly below the group's commit: their first
    /// offset and the highest input offset they hold.
    unresolved: VecDeque<(i64, i64)>,
    /// Where the stretch being read began.
    stretch_start: i64,
    /// The highest input offset read in it (-1: none).
    stretch_max_input: i64,
}

impl Follow {
    fn new(start: i64) -> Self {
        Self {
            unresolved: VecDeque::new(),
            stretch_start: start,
            stretch_max_input: -1,
        }
    }

    /// The stretch read since the last write ends at `position` (just written).
    fn close_stretch(&mut self, position: i64) {
        if self.stretch_max_input >= 0 {
            self.unresolved
                .push_back((self.stretch_start, self.stretch_max_input));
        }
        self.stretch_start = position;
        self.stretch_max_input = -1;
    }

    /// Where a promotion must restore from, with the group's commit at `ceiling`: the first
    /// stretch that may hold input at or past it, or `position` when none does.
    fn safe_position(&mut self, ceiling: Option<i64>, position: i64) -> i64 {
        while let (Some((_, max_input)), Some(ceiling)) = (self.unresolved.front(), ceiling) {
            if *max_input >= ceiling {
                break;
            }
            self.unresolved.pop_front();
        }
        self.unresolved
            .front()
            .map_or(position, |(start, _)| *start)
    }
}

/// One store's changelog partition being restored.
pub(crate) struct ChangelogRestore {
    pub(crate) topic: String,
    name: String,
    /// The changelog's end when the restore began: restored once `position` reaches it. A
    /// standby's never ends; its end is refreshed for its lag.
    pub(crate) high: i64,
    /// Next changelog offset to read.
    pub(crate) position: i64,
    total: u64,
    /// Records read since the last write, in order. Checked against the store's versions a
    /// batch at a time (one MultiGet), then written.
    read: Vec<ReadRecord>,
    applied: u64,
    skipped: u64,
    started: Instant,
    last_report: Instant,
    /// Set for a standby's changelog.
    follow: Option<Follow>,
    /// The offset of the first record read past the resume point (see
    /// [`RestoreOutcome::owed_from`]).
    owed_from: Option<i64>,
}

impl ChangelogRestore {
    pub(crate) fn done(&self) -> bool {
        self.follow.is_none() && self.position >= self.high
    }
}

/// One task's restore, step by step: records are offered as the shared restore consumer
/// returns them; every [`BATCH`] records (and at the end) they are written with the restore's
/// progress in one RocksDB batch, so an interrupted restore resumes where it stopped.
pub(crate) struct TaskRestore {
    pub(crate) task: TaskId,
    pub(crate) store: TaskStore,
    pub(crate) changelogs: Vec<ChangelogRestore>,
    pub(crate) progress: Arc<TaskProgress>,
    offsets: StoredOffsets,
    /// Input offsets at or past this are newer than the last commit: keys restored from them
    /// may owe their output.
    resume_from: i64,
    outcome: RestoreOutcome,
    metrics: EngineMetrics,
    labels: [String; 2],
    started: Instant,
    /// When a record of this task last arrived (or the restore began).
    pub(crate) last_progress: Instant,
    /// A standby's: the group's last commit for its input partition, and where its lag goes.
    standby: Option<StandbyFollow>,
}

/// What a standby restore keeps besides its changelogs.
struct StandbyFollow {
    ceiling: Option<i64>,
    progress: Arc<StandbyProgress>,
}

/// Whether a restore ends once caught up (an active task's) or follows its changelogs for as
/// long as it is kept (a standby replica's, which reports its lag here).
pub(crate) enum RestoreKind {
    /// An active task's, with the progress `/status` shows for it.
    Active(Arc<TaskProgress>),
    Standby(Arc<StandbyProgress>),
}

impl TaskRestore {
    /// Works out what to restore: the changelogs' ends, whether they (and the input) still
    /// hold the history the local state was built from ([`EngineError::HistoryLost`] if not),
    /// and where input resumes. After a reset (no group offset), local state from the ended
    /// history is wiped instead.
    pub(crate) fn begin(
        task: TaskId,
        mut store: TaskStore,
        kind: RestoreKind,
        consumer: &impl RestoreConsumer,
        config: &StreamsConfig,
        source_topic: &str,
        metrics: &EngineMetrics,
    ) -> Result<Self> {
        let (progress, standby) = match kind {
            RestoreKind::Active(progress) => (progress, None),
            RestoreKind::Standby(standby) => (Arc::default(), Some(standby)),
        };
        let mut outcome = RestoreOutcome::default();
        let store_names = store.store_names().to_vec();
        let mut watermarks = Vec::new();
        for name in &store_names {
            let topic = config.changelog_topic(name);
            let (low, high) = consumer
                .watermarks(&topic, task.partition, METADATA_TIMEOUT)
                .map_err(EngineError::kafka("read changelog watermarks"))?;
            watermarks.push((topic, low, high));
        }
        let group_committed = consumer
            .group_committed(source_topic, task.partition, METADATA_TIMEOUT)
            .map_err(EngineError::kafka("read committed offset"))?;
        let mut offsets = store.read_offsets()?;
        let history = watermarks.iter().zip(&offsets.changelog_next);
        let lost = history
            .map(|((topic, low, high), local)| {
                check_changelog_history(task, topic, *low, *high, *local)
            })
            .find_map(Result::err);
        match lost {
            // The application was reset (`kstreams-count reset` deletes the group's offsets and
            // the changelogs): the local state belongs to the history it ended; start over.
            Some(_) if group_committed.is_none() => {
                warn!(%task, "the changelog no longer holds this task's local state and the group has no committed offset (the application was reset): wiping the local state and starting over");
                store.wipe()?;
                outcome.wiped = Some("reset");
                offsets = store.read_offsets()?;
            }
            // A standby vouches for nothing: the active task decides about the history; the
            // copy starts over from what the changelog holds now.
            Some(lost) if standby.is_some() => {
                warn!(%task, "standby: {lost}; wiping its copy and reading the changelog afresh");
                store.wipe()?;
                outcome.wiped = Some("standby_history_lost");
                offsets = store.read_offsets()?;
            }
            Some(lost) => return Err(lost),
            None => {}
        }
        // Input below this offset was flushed (changelog and output) before a commit; input
        // resumes here. The changelog may hold records of later input (a write-out cut short,
        // or a previous owner's last window), but only some of them: a write-out sends one
        // record per key, in no input order, so the keys whose records did not land must see
        // their input again. Re-processing skips what a key's restored version reflects.
        if standby.is_some() {
            // The copy's input position is the group's, whoever owns the partition: a
            // position of this instance's own from an earlier ownership would say the store
            // holds input it may not (promotion resumes at the group's commit).
            offsets.input_next = None;
        } else {
            let (_, input_end) = consumer
                .watermarks(source_topic, task.partition, METADATA_TIMEOUT)
                .map_err(EngineError::kafka("read input watermarks"))?;
            check_input_history(
                task,
                source_topic,
                input_end,
                offsets.input_next,
                group_committed,
            )?;
            outcome.input_next = offsets.input_next.max(group_committed);
            offsets.input_next = outcome.input_next;
        }
        let labels = EngineMetrics::task_labels(task);
        let mut changelogs = Vec::new();
        let mut remaining = 0u64;
        for (index, (name, (topic, low, high))) in store_names.iter().zip(watermarks).enumerate() {
            let start = offsets.changelog_next[index].unwrap_or(0).clamp(low, high);
            if standby.is_some() {
                offsets.changelog_next[index] = Some(start);
                info!(%task, store = %name, "standby: following {topic} from offset {start} ({} records behind)", high - start);
            } else if start >= high {
                info!(%task, store = %name, "store is up to date with its changelog (offset {high}), nothing to restore");
                offsets.changelog_next[index] = Some(high);
            } else {
                let total = (high - start) as u64;
                remaining += total;
                info!(%task, store = %name, "restoring {total} changelog records from {topic} offsets {start}..{high}");
            }
            changelogs.push(ChangelogRestore {
                topic,
                name: name.clone(),
                high,
                position: start,
                total: (high - start).max(0) as u64,
                read: Vec::new(),
                applied: 0,
                skipped: 0,
                started: Instant::now(),
                last_report: Instant::now(),
                follow: standby.as_ref().map(|_| Follow::new(start)),
                owed_from: None,
            });
        }
        if standby.is_none() {
            progress.add_restore_total(remaining);
            metrics
                .restore_remaining
                .with_label_values(&[labels[0].as_str(), labels[1].as_str()])
                .set(remaining as i64);
        }
        let resume_from = match standby {
            // A standby marks nothing: its promotion's restore does (see `Follow`).
            Some(_) => i64::MAX,
            None => outcome.input_next.unwrap_or(0),
        };
        let restore = Self {
            task,
            store,
            changelogs,
            progress,
            offsets,
            resume_from,
            outcome,
            metrics: metrics.clone(),
            labels,
            started: Instant::now(),
            last_progress: Instant::now(),
            standby: standby.map(|progress| StandbyFollow {
                ceiling: group_committed,
                progress,
            }),
        };
        restore.report_standby();
        Ok(restore)
    }

    /// A standby's lag and kept positions, to `/status` and the lag gauge (nothing for an
    /// active restore).
    fn report_standby(&self) {
        let Some(standby) = &self.standby else {
            return;
        };
        let positions = self.offsets.changelog_next.iter().map(|p| p.unwrap_or(0));
        let behind = self.standby_lag();
        standby.progress.set(behind, positions.collect());
        self.metrics
            .standby_lag
            .with_label_values(&[self.labels[0].as_str(), self.labels[1].as_str()])
            .set(behind);
    }

    /// A standby's lag: per store, from the position its promotion would restore from to the
    /// furthest it knows the changelog reaches.
    fn standby_lag(&self) -> i64 {
        let behind = self.changelogs.iter().zip(&self.offsets.changelog_next);
        let behind = behind.map(|(c, safe)| c.high.max(c.position) - safe.unwrap_or(0));
        behind.sum::<i64>().max(0)
    }

    /// Whether this is a standby replica's restore (it never ends).
    pub(crate) fn is_standby(&self) -> bool {
        self.standby.is_some()
    }

    /// A standby's news from the broker: the group's commit for its input partition and its
    /// changelogs' ends. Writes the position a promotion would restore from, and the lag.
    pub(crate) fn follow(&mut self, ceiling: Option<i64>, ends: &[Option<i64>]) -> Result<()> {
        let Some(standby) = &mut self.standby else {
            return Ok(());
        };
        standby.ceiling = ceiling;
        for (changelog, end) in self.changelogs.iter_mut().zip(ends) {
            if let Some(end) = end {
                changelog.high = changelog.high.max(*end);
            }
        }
        for index in 0..self.changelogs.len() {
            self.write_batch(index)?;
        }
        Ok(())
    }

    /// The changelog partitions still to read, at the offsets to read them from.
    pub(crate) fn unfinished(&self) -> impl Iterator<Item = (usize, &ChangelogRestore)> {
        self.changelogs
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.done())
    }

    pub(crate) fn is_done(&self) -> bool {
        self.changelogs.iter().all(ChangelogRestore::done)
    }

    /// Takes one changelog record of store `index`, read at about `now` (the caller's clock,
    /// read once per many records), writing a batch once it is full or the store has reached
    /// its changelog's end.
    pub(crate) fn offer(
        &mut self,
        index: usize,
        offset: i64,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        now: Instant,
    ) -> Result<()> {
        self.last_progress = now;
        let changelog = &mut self.changelogs[index];
        if changelog.done() || offset < changelog.position {
            return Ok(()); // read twice (a compacted partition, or a re-seek)
        }
        changelog.position = offset + 1;
        if changelog.follow.is_some() && changelog.position > changelog.high {
            // Read past the end last looked up: the lag grows now, not at the next look.
            changelog.high = changelog.position;
            if let Some(standby) = &self.standby {
                standby.progress.set_lag(self.standby_lag());
            }
        }
        let resume_from = self.resume_from;
        let changelog = &mut self.changelogs[index];
        if let Some(key) = key {
            let input = payload.and_then(|bytes| decode_changelog_value(bytes).0);
            if changelog.owed_from.is_none() && input.is_some_and(|input| input >= resume_from) {
                changelog.owed_from = Some(offset);
            }
            if let (Some(follow), Some(input)) = (&mut changelog.follow, input) {
                follow.stretch_max_input = follow.stretch_max_input.max(input);
            }
            changelog
                .read
                .push((key.to_vec(), payload.map(<[u8]>::to_vec), input));
        }
        if changelog.read.len() >= BATCH || changelog.done() {
            self.write_batch(index)?;
        }
        Ok(())
    }

    /// Turns the records of store `index` read since the last write into the updates to
    /// write and the keys that owe their output. Each changelog value is the key's state as
    /// of its input offset, so the newest offset wins, not the newest write: two owners of one
    /// partition for a while (a zombie, or a broker handing a partition out early) interleave
    /// their writes. The store's versions of the keys are read ahead in one MultiGet (a point
    /// lookup per record cost the restore a RocksDB search each); writing the batch forgets
    /// them.
    fn check_versions(&mut self, index: usize) -> Result<(Vec<ChangelogUpdate>, Vec<Vec<u8>>)> {
        let store = StoreId(index);
        let read = std::mem::take(&mut self.changelogs[index].read);
        let versioned = read
            .iter()
            .filter(|(_, _, input)| input.is_some())
            .map(|(key, _, _)| key.as_slice());
        self.store.read_ahead(store, versioned)?;
        // Which records are older than the key's newest version, the store's or an earlier
        // one of this batch (the newest input offset per key, by borrowed key: no copy).
        let mut stale = Vec::with_capacity(read.len());
        let mut batch_versions: KeyMap<i64, &[u8]> =
            KeyMap::with_capacity_and_hasher(read.len(), Default::default());
        for (key, _, input) in &read {
            let current = match batch_versions.get(key.as_slice()) {
                Some(version) => Some(*version),
                None if input.is_some() => self.store.version(store, key)?,
                None => None,
            };
            let older = input.is_some_and(|input| current.is_some_and(|c| c > input));
            if let (false, Some(input)) = (older, input) {
                batch_versions.insert(key, *input);
            }
            stale.push(older);
        }
        let mut batch = Vec::with_capacity(read.len());
        let mut owe_output = Vec::new();
        for ((key, value, input), older) in read.into_iter().zip(stale) {
            if older {
                // Another writer's older value, written after this one (two owners for a
                // while): its output may be the key's last on the output topic, so the key's
                // own value owes its output again.
                self.changelogs[index].skipped += 1;
                owe_output.push(key);
                continue;
            }
            if input.is_some_and(|input| input >= self.resume_from) {
                owe_output.push(key.clone());
            }
            batch.push((key, value));
        }
        Ok((batch, owe_output))
    }

    /// The broker says store `index`'s changelog has nothing past `end` (compaction may hide
    /// the last offsets below the end seen when the restore began).
    pub(crate) fn reached_end(&mut self, index: usize, end: i64) -> Result<()> {
        let changelog = &mut self.changelogs[index];
        if !changelog.done() && end >= changelog.position {
            changelog.position = changelog.high.max(end);
            self.last_progress = Instant::now();
            self.write_batch(index)?;
        }
        Ok(())
    }

    /// Writes what store `index` has read so far, with its progress, in one RocksDB batch.
    pub(crate) fn write_batch(&mut self, index: usize) -> Result<()> {
        let (batch, owe_output) = self.check_versions(index)?;
        let changelog = &mut self.changelogs[index];
        let finished = changelog.done();
        let ceiling = self.standby.as_ref().and_then(|s| s.ceiling);
        self.offsets.changelog_next[index] = Some(match (&mut changelog.follow, finished) {
            (Some(follow), _) => {
                follow.close_stretch(changelog.position);
                follow.safe_position(ceiling, changelog.position)
            }
            (None, true) => changelog.high,
            (None, false) => changelog.position,
        });
        self.store
            .apply_restored(StoreId(index), &batch, &owe_output, &self.offsets)?;
        let n = batch.len() as u64;
        self.outcome.replay_marked += owe_output.len() as u64;
        changelog.applied += n;
        let labels = [self.labels[0].as_str(), self.labels[1].as_str()];
        if self.standby.is_some() {
            self.metrics
                .standby_records
                .with_label_values(&labels)
                .inc_by(n);
            self.report_standby();
            return Ok(());
        }
        self.metrics
            .restore_records
            .with_label_values(&labels)
            .inc_by(n);
        self.progress.add_restored(n);
        let remaining: i64 = self.unfinished().map(|(_, c)| c.high - c.position).sum();
        self.metrics
            .restore_remaining
            .with_label_values(&labels)
            .set(remaining.max(0));
        let changelog = &mut self.changelogs[index];
        if finished {
            self.progress.add_restored(changelog.skipped);
            self.outcome.records += changelog.applied;
            if changelog.skipped > 0 {
                warn!(task = %self.task, store = %changelog.name, "skipped {} changelog records older than the state they would overwrite (written by an overlapping previous owner); their keys' own values are output again", changelog.skipped);
            }
            let elapsed = changelog.started.elapsed().as_secs_f64();
            if changelog.total > 0 {
                info!(
                    task = %self.task, store = %changelog.name,
                    "restored {} records in {elapsed:.3}s ({:.0} records/s)",
                    changelog.applied,
                    changelog.applied as f64 / elapsed.max(1e-9)
                );
            }
        } else if changelog.last_report.elapsed() >= PROGRESS_EVERY {
            changelog.last_report = Instant::now();
            let done = changelog.total - (changelog.high - changelog.position).max(0) as u64;
            let line = progress_line(done, changelog.total, changelog.started.elapsed());
            info!(task = %self.task, store = %changelog.name, "restore progress {line}");
        }
        Ok(())
    }

    /// Why local state was wiped before restoring, if it was.
    pub(crate) fn outcome_wiped(&self) -> Option<&'static str> {
        self.outcome.wiped
    }

    /// The restore is over: the store and what was found, for the task to run with.
    pub(crate) fn finish(self) -> (TaskStore, RestoreOutcome) {
        if self.standby.is_some() {
            return (self.store, self.outcome);
        }
        let labels = [self.labels[0].as_str(), self.labels[1].as_str()];
        self.metrics
            .restore_remaining
            .with_label_values(&labels)
            .set(0);
        self.metrics
            .restore_duration
            .observe(self.started.elapsed().as_secs_f64());
        let mut outcome = self.outcome;
        outcome.changelog_next = self.offsets.changelog_next;
        outcome.owed_from = self.changelogs.iter().map(|c| c.owed_from).collect();
        (self.store, outcome)
    }

    /// Stops restoring before the end (the task was revoked or stopped): what was read is
    /// written, so the next restore of this store starts from there.
    pub(crate) fn abandon(mut self) -> Result<TaskStore> {
        for index in 0..self.changelogs.len() {
            // A standby writes its latest safe position even with nothing read since.
            if !self.changelogs[index].read.is_empty() || self.standby.is_some() {
                self.write_batch(index)?;
            }
        }
        Ok(self.finish().0)
    }
}

/// A restore's progress as an operator reads it: records done of the total, the share, the
/// rate since it began and the time left at that rate.
fn progress_line(done: u64, total: u64, elapsed: std::time::Duration) -> String {
    let share = done as f64 * 100.0 / total.max(1) as f64;
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-3);
    let left = match rate > 0.0 {
        true => format!("{:.0} s left", total.saturating_sub(done) as f64 / rate),
        false => "time left unknown".to_string(),
    };
    format!("{done} / {total} records ({share:.1}%), {rate:.0} records/s, {left}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_says_share_rate_and_time_left() {
        let line = progress_line(25_000, 100_000, std::time::Duration::from_secs(5));
        assert_eq!(
            line,
            "25000 / 100000 records (25.0%), 5000 records/s, 15 s left"
        );
        let stalled = progress_line(0, 10, std::time::Duration::from_secs(5));
        assert_eq!(
            stalled,
            "0 / 10 records (0.0%), 0 records/s, time left unknown"
        );
    }

    const TASK: TaskId = TaskId {
        subtopology: 0,
        partition: 3,
    };

    fn changelog(low: i64, high: i64, local: Option<i64>) -> Result<()> {
        check_changelog_history(TASK, "app-store-changelog", low, high, local)
    }

    #[test]
    fn a_changelog_holding_everything_the_state_needs_passes() {
        assert!(changelog(0, 0, None).is_ok(), "a first start");
        assert!(changelog(0, 10, Some(10)).is_ok(), "up to date");
        assert!(changelog(0, 10, Some(4)).is_ok(), "a tail to restore");
        assert!(
            changelog(4, 10, Some(6)).is_ok(),
            "deleted below what the state holds"
        );
    }

    #[test]
    fn a_changelog_that_lost_records_the_state_needs_is_refused_naming_it() {
        let recreated = changelog(0, 3, Some(10)).unwrap_err().to_string();
        assert!(recreated.contains("`app-store-changelog` partition 3 ends at offset 3"));
        assert!(
            recreated.contains("written through offset 10"),
            "{recreated}"
        );
        let truncated = changelog(7, 10, Some(5)).unwrap_err().to_string();
        assert!(truncated.contains("starts at offset 7"), "{truncated}");
        let lost_volume = changelog(7, 10, None).unwrap_err();
        assert!(lost_volume.stops_the_instance());
    }

    #[test]
    fn an_input_ending_below_a_commit_is_refused() {
        let input = |end, local, group| check_input_history(TASK, "in", end, local, group);
        assert!(input(10, None, None).is_ok());
        assert!(input(10, Some(10), Some(8)).is_ok());
        let error = input(10, Some(4), Some(12)).unwrap_err().to_string();
        assert!(error.contains("offset 12 was already committed"), "{error}");
        assert!(input(10, Some(11), None).is_err());
    }
}
