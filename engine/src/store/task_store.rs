//! A task's state: one RocksDB per task, one column family per store plus the engine's own
//! (`offsets`, `pending-output`), opened and trusted or wiped, read through the task's
//! [`WriteCache`], written a sealed generation at a time so that state and offsets reach disk
//! together in one write batch. Every value is stored with the input offset that produced it
//! (the changelog value format), so an update can tell whether it is already applied.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocksdb::{ColumnFamilyDescriptor, WriteBatch, DB};

use super::changelog_format::{decode_changelog_value, encode_changelog_value};
use super::layout::{StoreId, INTERNAL_COLUMN_FAMILIES, OFFSETS_CF, PENDING_OUTPUT_CF};
use super::offsets::{changelog_offset_key, decode_offset, encode_offset, INPUT_OFFSET_KEY};
use super::pending_output::{decode_pending_output_key, pending_output_key, PENDING_OUTPUT_END};
use super::reader::StoreReader;
use super::write_cache::{KeyMap, PendingWrite, SealedInfo, WriteCache, WriteOut};
use crate::error::{EngineError, Result};
use crate::store_memory::StoreMemory;
use crate::task_id::TaskId;
use tracing::warn;

/// How long a task waits for its store's lock, still held by a task of the same partition that
/// is stopping (its last flush may wait up to a minute on the broker) or by a restore still
/// being prepared. The wait is in the starting task's own actor and delays only that task.
pub const LOCK_WAIT: Duration = Duration::from_secs(90);

/// Key (in `offsets`) of the state format; state without it predates versioned values.
const STATE_FORMAT_KEY: &[u8] = b"state-format";
/// 2: values carry the input offset that produced them.
const STATE_FORMAT: i64 = 2;

/// What a task's store says it has applied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredOffsets {
    /// Next input offset to process.
    pub input_next: Option<i64>,
    /// Per store (by `StoreId`), the next changelog offset to restore from.
    pub changelog_next: Vec<Option<i64>>,
}

/// An update read back from a changelog: a key and its changelog value (input offset and
/// value, as [`encode_changelog_value`] writes it), `None` for a delete.
pub type ChangelogUpdate = (Vec<u8>, Option<Vec<u8>>);

/// Whether RocksDB's error is evidence that the files are damaged: corrupt, or a file the
/// store's own metadata names is missing. Anything else (a held lock, too many open files, a
/// full disk) says nothing about the data and never leads to a wipe.
fn is_corruption(error: &rocksdb::Error) -> bool {
    match error.kind() {
        rocksdb::ErrorKind::Corruption => true,
        // RocksDB reports a missing MANIFEST or table file as an I/O error ("No such file or
        // directory"); its status sub-code is not exposed to Rust, only its text.
        rocksdb::ErrorKind::IOError => error.as_ref().contains("No such file or directory"),
        _ => false,
    }
}

/// A task store's column families with their options: its state stores, then the engine's own.
fn column_families<'a>(
    store_names: &'a [String],
    memory: &'a StoreMemory,
) -> impl Iterator<Item = (&'a str, rocksdb::Options)> + 'a {
    let stores = store_names
        .iter()
        .map(|name| (name.as_str(), memory.store_column_family_options()));
    let internal = INTERNAL_COLUMN_FAMILIES
        .iter()
        .map(|name| (*name, memory.column_family_options()));
    stores.chain(internal)
}

/// Adds puts (`Some`) and deletes (`None`) for one column family to a write batch, in key
/// order: each memtable insert then starts from where the previous one ended, rather than
/// searching the skiplist from its top (a write-out's cache comes in hash order, a restore's
/// changelog in write order; either way that search was a quarter of the writing thread's
/// CPU). A stable sort: of a key's updates given in order, the last still wins.
fn add_updates<'a>(
    batch: &mut WriteBatch,
    cf: &rocksdb::ColumnFamily,
    updates: impl IntoIterator<Item = (&'a Vec<u8>, &'a Option<Vec<u8>>)>,
) {
    let mut updates: Vec<_> = updates.into_iter().collect();
    updates.sort_by(|a, b| a.0.cmp(b.0));
    for (key, value) in updates {
        match value {
            Some(value) => batch.put_cf(cf, key, value),
            None => batch.delete_cf(cf, key),
        }
    }
}

/// One task's RocksDB plus the writes not yet in it.
pub struct TaskStore {
    task: TaskId,
    path: PathBuf,
    /// Shared only with [`Self::reader`]'s view, which closes first (see [`Drop`]).
    db: Arc<DB>,
    reader: StoreReader,
    store_names: Vec<String>,
    cache: WriteCache,
    /// Whether `pending-output` may hold marks (cleared by the next commit).
    pending_output: bool,
    /// Values read ahead from RocksDB for the batch being processed (see [`Self::read_ahead`]),
    /// as RocksDB holds them (`None`: not there), and of which store.
    read_ahead: KeyMap<Option<Vec<u8>>>,
    read_ahead_store: Option<StoreId>,
}

impl TaskStore {
    /// Opens (or creates) the task's RocksDB at `path` with one column family per store.
    pub fn open(
        task: TaskId,
        path: &Path,
        store_names: &[String],
        memory: &Arc<StoreMemory>,
    ) -> Result<Self> {
        let mut options = memory.db_options();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_keep_log_file_num(2);
        let families = column_families(store_names, memory)
            .map(|(name, options)| ColumnFamilyDescriptor::new(name, options));
        let db = DB::open_cf_descriptors(&options, path, families).map_err(|source| {
            EngineError::Store {
                task,
                path: path.to_path_buf(),
                source,
            }
        })?;
        let pending_output = db.cf_handle(PENDING_OUTPUT_CF).is_some_and(|cf| {
            db.iterator_cf(cf, rocksdb::IteratorMode::Start)
                .next()
                .is_some()
        });
        let db = Arc::new(db);
        Ok(Self {
            task,
            path: path.to_path_buf(),
            reader: StoreReader::new(db.clone(), store_names),
            db,
            store_names: store_names.to_vec(),
            cache: WriteCache::new(store_names.len(), memory),
            pending_output,
            read_ahead: KeyMap::default(),
            read_ahead_store: None,
        })
    }

    /// Opens the task's store; state that cannot be trusted (RocksDB finds it corrupt or
    /// incomplete, or it holds data but no offsets) is wiped and opened empty, to be restored
    /// from the changelog. Returns the store and, if it was wiped, why. Any other failure to
    /// open (the store still open elsewhere, too many open files, a full disk) is an error and
    /// deletes nothing: a store that is merely locked is waited for up to `lock_wait`.
    pub fn open_or_wipe(
        task: TaskId,
        path: &Path,
        store_names: &[String],
        memory: &Arc<StoreMemory>,
        lock_wait: Duration,
    ) -> Result<(Self, Option<&'static str>)> {
        // A restarted task may briefly find its previous incarnation's lock still held.
        let deadline = Instant::now() + lock_wait;
        let opened = loop {
            match Self::open(task, path, store_names, memory) {
                Err(EngineError::Store { source, .. })
                    if !is_corruption(&source) && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => break other,
            }
        };
        let reason = match opened {
            Ok(store) => match store.untrusted_reason()? {
                Some(reason) => reason,
                None => return Ok((store, None)),
            },
            Err(EngineError::Store { source, .. }) if is_corruption(&source) => {
                warn!(%task, "state at {} is damaged: {source}", path.display());
                "open_failed"
            }
            Err(other) => return Err(other),
        };
        warn!(%task, reason, "wiping untrusted state at {}; it will be restored from the changelog", path.display());
        std::fs::remove_dir_all(path).map_err(|source| EngineError::StateDirIo {
            path: path.to_path_buf(),
            source,
        })?;
        Ok((Self::open(task, path, store_names, memory)?, Some(reason)))
    }

    /// Why state on disk cannot be trusted, if it cannot: data without the offsets that say
    /// how far it got, or data in the format before values carried their input offset.
    fn untrusted_reason(&self) -> Result<Option<&'static str>> {
        let has_data = self.store_names.iter().any(|name| {
            self.db
                .iterator_cf(self.cf(name), rocksdb::IteratorMode::Start)
                .next()
                .is_some()
        });
        if !has_data {
            return Ok(None);
        }
        if self
            .read_offsets()?
            .changelog_next
            .iter()
            .any(Option::is_none)
        {
            return Ok(Some("missing_offsets"));
        }
        let format = self
            .db
            .get_cf(self.cf(OFFSETS_CF), STATE_FORMAT_KEY)
            .map_err(self.store_error())?
            .and_then(|bytes| decode_offset(&bytes));
        Ok((format != Some(STATE_FORMAT)).then_some("old_format"))
    }

    /// Drops all state and offsets (the store stays open, empty).
    pub fn wipe(&mut self) -> Result<()> {
        // Dropping column families needs the only handle: queries wait until it is done.
        self.reader.close();
        let (task, path) = (self.task, self.path.clone());
        let db = Arc::get_mut(&mut self.db).expect("the store's only other handle is its reader");
        let wiped = column_families(&self.store_names, self.cache.memory()).try_for_each(
            |(name, options)| {
                db.drop_cf(name)?;
                db.create_cf(name, &options)
            },
        );
        self.reader.reopen(self.db.clone());
        wiped.map_err(|source| EngineError::Store { task, path, source })?;
        self.cache.clear();
        self.end_read_ahead();
        self.pending_output = false;
        Ok(())
    }

    fn store_error(&self) -> impl FnOnce(rocksdb::Error) -> EngineError + '_ {
        |source| EngineError::Store {
            task: self.task,
            path: self.path.clone(),
            source,
        }
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created when the store opens")
    }

    /// A view of what this store has written out, for queries from other threads; it closes
    /// when the store does.
    pub fn reader(&self) -> StoreReader {
        self.reader.clone()
    }

    pub fn store_names(&self) -> &[String] {
        &self.store_names
    }

    /// Reads a key with the input offset of the update that produced it (`None` when not
    /// known), seeing this task's own uncommitted writes: the cache, then the write-outs in
    /// flight, newest first, then RocksDB (read in place, one copy of the value).
    pub fn get_with_version(
        &self,
        store: StoreId,
        key: &[u8],
    ) -> Result<Option<(Option<i64>, Vec<u8>)>> {
        let decode = |bytes: &[u8]| {
            let (version, value) = decode_changelog_value(bytes);
            (version, value.to_vec())
        };
        if let Some(held) = self.cache.get(store, key) {
            return Ok(held.map(decode));
        }
        if self.read_ahead_store == Some(store) {
            if let Some(stored) = self.read_ahead.get(key) {
                return Ok(stored.as_deref().map(decode));
            }
        }
        let cf = self.cf(&self.store_names[store.0]);
        let stored = self.db.get_pinned_cf(cf, key).map_err(self.store_error())?;
        Ok(stored.as_deref().map(decode))
    }

    /// Reads the keys of `store` a batch is about to read, those the cache does not hold, from
    /// RocksDB in one MultiGet: one sorted pass through the memtables and SST files instead of
    /// a point lookup per record (at 1M keys nearly every record misses the cache). Reads see
    /// them until [`Self::end_read_ahead`]. Only what RocksDB holds is read ahead, and RocksDB
    /// changes only when a write-out is written (between batches), so a value read ahead is
    /// never stale within the batch; the cache, which holds the batch's own writes, is looked
    /// at first.
    pub fn read_ahead<'k>(
        &mut self,
        store: StoreId,
        keys: impl Iterator<Item = &'k [u8]>,
    ) -> Result<()> {
        self.end_read_ahead();
        let mut missing: Vec<&[u8]> = keys
            .filter(|key| self.cache.get(store, key).is_none())
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        let cf = self.cf(&self.store_names[store.0]);
        let values: Vec<Option<Vec<u8>>> = self
            .db
            .batched_multi_get_cf(cf, &missing, true)
            .into_iter()
            .map(|value| Ok(value?.map(|v| v.to_vec())))
            .collect::<std::result::Result<_, rocksdb::Error>>()
            .map_err(self.store_error())?;
        self.read_ahead
            .extend(missing.into_iter().map(<[u8]>::to_vec).zip(values));
        self.read_ahead_store = Some(store);
        Ok(())
    }

    /// Forgets what was read ahead (the batch is done: a write-out may change RocksDB next).
    pub fn end_read_ahead(&mut self) {
        self.read_ahead.clear();
        self.read_ahead_store = None;
    }

    /// Reads a key as RocksDB holds it (no cache, no write-out in flight): unit tests.
    #[cfg(test)]
    pub fn get_on_disk(&self, store: StoreId, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let cf = self.cf(&self.store_names[store.0]);
        let stored = self.db.get_pinned_cf(cf, key).map_err(self.store_error())?;
        Ok(stored.map(|bytes| decode_changelog_value(&bytes).1.to_vec()))
    }

    /// Reads a key, seeing this task's own uncommitted writes.
    pub fn get(&self, store: StoreId, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get_with_version(store, key)?.map(|(_, value)| value))
    }

    /// The input offset of the update that produced a key's current value (`None` when the
    /// key has no value, or a value without a known offset).
    pub fn version(&self, store: StoreId, key: &[u8]) -> Result<Option<i64>> {
        Ok(self
            .get_with_version(store, key)?
            .and_then(|(version, _)| version))
    }

    /// Whether the key was written since the last write-out (by this task incarnation).
    pub fn written_since_commit(&self, store: StoreId, key: &[u8]) -> bool {
        self.cache.written_since_write_out(store, key)
    }

    /// Buffers a write, produced by the input record at `input_offset` (with `timestamp`),
    /// until the next commit.
    pub fn put(
        &mut self,
        store: StoreId,
        key: &[u8],
        value: &[u8],
        input_offset: i64,
        timestamp: Option<i64>,
    ) {
        let value = encode_changelog_value(input_offset, value);
        self.cache.put(store, key, Some(value), timestamp);
    }

    /// Whether this store's uncommitted writes should be written out now, to keep the
    /// instance's write-back caches within their budget.
    pub fn cache_over_budget(&self) -> bool {
        self.cache.over_budget()
    }

    /// Whether the record cache is on (see [`StoreMemory::caching`]).
    pub fn caching(&self) -> bool {
        self.cache.memory().caching()
    }

    /// The instance's shared store memory.
    pub fn memory(&self) -> &StoreMemory {
        self.cache.memory()
    }

    /// Bytes of uncommitted writes held (counted as the cache budget counts them).
    #[cfg(test)]
    pub fn dirty_bytes(&self) -> usize {
        self.cache.dirty_bytes()
    }

    /// Every write since the last commit (copies: the flush that sends them on may read the
    /// store meanwhile).
    pub fn pending_writes(&self) -> Vec<PendingWrite> {
        self.cache.pending_writes()
    }

    /// Number of keys written and not yet in RocksDB (cached or in flight).
    pub fn dirty_keys(&self) -> usize {
        self.cache.keys_held()
    }

    /// Seals the cache as write-out `generation` (its changelog records just sent), to reach
    /// RocksDB with `input_next` once acknowledged; the task caches anew meanwhile.
    pub fn seal(&mut self, generation: u64, input_next: Option<i64>, trigger: WriteOut) {
        let clears_pending_output = std::mem::take(&mut self.pending_output);
        self.cache
            .seal(generation, input_next, trigger, clears_pending_output);
    }

    /// The oldest write-out in flight.
    pub fn oldest_sealed(&self) -> Option<SealedInfo> {
        self.cache.oldest_sealed().map(|sealed| sealed.info)
    }

    /// Bytes held by write-outs in flight.
    #[cfg(test)]
    pub fn sealed_bytes(&self) -> usize {
        self.cache.sealed_bytes()
    }

    /// Writes the oldest write-out in flight (acknowledged) to RocksDB with its input offset
    /// and `changelog_next`, in one atomic batch.
    pub fn write_oldest_sealed(&mut self, changelog_next: &[Option<i64>]) -> Result<()> {
        let Some(sealed) = self.cache.oldest_sealed() else {
            return Ok(());
        };
        let mut batch = WriteBatch::default();
        for (name, writes) in self.store_names.iter().zip(&sealed.writes) {
            let updates = writes.iter().map(|(key, pending)| (key, &pending.bytes));
            add_updates(&mut batch, self.cf(name), updates);
        }
        self.put_offsets(
            &mut batch,
            &StoredOffsets {
                input_next: sealed.info.input_next,
                changelog_next: changelog_next.to_vec(),
            },
        );
        if sealed.clears_pending_output {
            batch.delete_range_cf(self.cf(PENDING_OUTPUT_CF), &[][..], &PENDING_OUTPUT_END[..]);
        }
        // RocksDB changes: nothing read ahead of it may be read again.
        self.end_read_ahead();
        self.db.write(batch).map_err(self.store_error())?;
        self.cache.drop_oldest_sealed();
        Ok(())
    }

    /// The offsets persisted by the last commit or restore.
    pub fn read_offsets(&self) -> Result<StoredOffsets> {
        let cf = self.cf(OFFSETS_CF);
        let read = |key: &[u8]| -> Result<Option<i64>> {
            Ok(self
                .db
                .get_cf(cf, key)
                .map_err(self.store_error())?
                .and_then(|bytes| decode_offset(&bytes)))
        };
        let input_next = read(INPUT_OFFSET_KEY)?;
        let changelog_next = self
            .store_names
            .iter()
            .map(|name| read(&changelog_offset_key(name)))
            .collect::<Result<_>>()?;
        Ok(StoredOffsets {
            input_next,
            changelog_next,
        })
    }

    /// Writes every held write (write-outs in flight, then the cache) and the given offsets
    /// now, as if every record sent was acknowledged (unit tests of the store and the
    /// processor; the product and the engine benchmark commit through the checkpoint).
    #[cfg(test)]
    pub fn commit(&mut self, offsets: &StoredOffsets) -> Result<()> {
        self.seal(u64::MAX, offsets.input_next, WriteOut::Commit);
        while self.cache.oldest_sealed().is_some() {
            self.write_oldest_sealed(&offsets.changelog_next)?;
        }
        Ok(())
    }

    /// Writes only where each store's next restore on this volume starts (lowered, so that a
    /// restart reads records again).
    pub fn write_changelog_positions(&mut self, changelog_next: &[Option<i64>]) -> Result<()> {
        let mut batch = WriteBatch::default();
        self.put_changelog_positions(&mut batch, changelog_next);
        self.db.write(batch).map_err(self.store_error())
    }

    /// Adds each store's changelog position that is known to `batch`.
    fn put_changelog_positions(&self, batch: &mut WriteBatch, changelog_next: &[Option<i64>]) {
        let cf = self.cf(OFFSETS_CF);
        for (name, next) in self.store_names.iter().zip(changelog_next) {
            if let Some(next) = next {
                batch.put_cf(cf, changelog_offset_key(name), encode_offset(*next));
            }
        }
    }

    fn put_offsets(&self, batch: &mut WriteBatch, offsets: &StoredOffsets) {
        let cf = self.cf(OFFSETS_CF);
        batch.put_cf(cf, STATE_FORMAT_KEY, encode_offset(STATE_FORMAT));
        if let Some(next) = offsets.input_next {
            batch.put_cf(cf, INPUT_OFFSET_KEY, encode_offset(next));
        }
        self.put_changelog_positions(batch, &offsets.changelog_next);
    }

    /// Applies restored changelog updates to one store, marks `owe_output` keys as owing their
    /// output, and records how far the restore got, in one atomic batch (so an interrupted
    /// restore resumes where it stopped and still knows what to re-emit).
    pub fn apply_restored(
        &mut self,
        store: StoreId,
        updates: &[ChangelogUpdate],
        owe_output: &[Vec<u8>],
        offsets: &StoredOffsets,
    ) -> Result<()> {
        let mut batch = WriteBatch::default();
        let updates = updates.iter().map(|(key, value)| (key, value));
        add_updates(&mut batch, self.cf(&self.store_names[store.0]), updates);
        let pending = self.cf(PENDING_OUTPUT_CF);
        for key in owe_output {
            batch.put_cf(pending, pending_output_key(store, key), b"");
        }
        self.put_offsets(&mut batch, offsets);
        // RocksDB changes: nothing read ahead of it may be read again.
        self.end_read_ahead();
        self.db.write(batch).map_err(self.store_error())?;
        self.pending_output |= !owe_output.is_empty();
        Ok(())
    }

    /// Up to `limit` keys marked as owing their output, in key order, after `after` (a key
    /// this returned before; `None` from the start).
    pub fn pending_output_after(
        &self,
        after: Option<&(StoreId, Vec<u8>)>,
        limit: usize,
    ) -> Result<Vec<(StoreId, Vec<u8>)>> {
        if !self.pending_output {
            return Ok(Vec::new());
        }
        let start = after.map(|(store, key)| pending_output_key(*store, key));
        let mode = match &start {
            Some(start) => rocksdb::IteratorMode::From(start, rocksdb::Direction::Forward),
            None => rocksdb::IteratorMode::Start,
        };
        let mut keys = Vec::new();
        for item in self.db.iterator_cf(self.cf(PENDING_OUTPUT_CF), mode) {
            let (raw, _) = item.map_err(self.store_error())?;
            if start.as_deref() == Some(&raw[..]) {
                continue;
            }
            let Some(marked) = decode_pending_output_key(&raw) else {
                continue;
            };
            keys.push(marked);
            if keys.len() >= limit {
                break;
            }
        }
        Ok(keys)
    }

    /// Approximate on-disk size of the task's live data, in bytes.
    pub fn approximate_size_bytes(&self) -> u64 {
        self.store_names
            .iter()
            .filter_map(|name| {
                self.db
                    .property_int_value_cf(self.cf(name), "rocksdb.estimate-live-data-size")
                    .ok()
                    .flatten()
            })
            .sum()
    }
}

impl Drop for TaskStore {
    /// Queries stop reading before RocksDB closes (and its lock is released for the next
    /// owner of the directory).
    fn drop(&mut self) {
        self.reader.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store_memory::{StoreMemorySettings, CACHE_ENTRY_OVERHEAD};

    fn memory() -> Arc<StoreMemory> {
        StoreMemory::new(StoreMemorySettings::default())
    }

    /// A store at `path` holding `k` = `v` (from input offset 0), committed.
    fn committed_store(task: TaskId, path: &Path, stores: &[String]) -> TaskStore {
        let mut store = TaskStore::open(task, path, stores, &memory()).unwrap();
        store.put(StoreId(0), b"k", b"v", 0, None);
        store
            .commit(&StoredOffsets {
                input_next: Some(1),
                changelog_next: vec![Some(1)],
            })
            .unwrap();
        store
    }

    /// A batch's keys read ahead in one MultiGet read as RocksDB held them (a key it does not
    /// hold as absent), the batch's own writes (in the cache) win over them, and a write to
    /// RocksDB forgets them, so a value read ahead is never read stale.
    #[test]
    fn keys_read_ahead_read_as_rocksdb_held_them_and_never_stale() {
        let dir = tempfile::tempdir().unwrap();
        let stores = vec!["count-store".to_string()];
        let mut store = committed_store(TaskId::new(0, 0), dir.path(), &stores); // k = v
        let s = StoreId(0);
        let keys: [&[u8]; 3] = [b"k", b"absent", b"k"];
        store.read_ahead(s, keys.into_iter()).unwrap();
        assert_eq!(store.read_ahead.len(), 2, "each key read once");
        assert_eq!(store.get(s, b"k").unwrap(), Some(b"v".to_vec()));
        assert_eq!(store.version(s, b"k").unwrap(), Some(0));
        assert_eq!(store.get(s, b"absent").unwrap(), None);

        store.put(s, b"k", b"w", 1, None);
        assert_eq!(store.get(s, b"k").unwrap(), Some(b"w".to_vec()));
        let offsets = StoredOffsets {
            input_next: Some(2),
            changelog_next: vec![Some(2)],
        };
        store.commit(&offsets).unwrap();
        assert!(store.read_ahead.is_empty(), "kept across a write");
        assert_eq!(store.get(s, b"k").unwrap(), Some(b"w".to_vec()));

        store.put(s, b"cached", b"1", 3, None);
        store.read_ahead(s, [&b"cached"[..]].into_iter()).unwrap();
        assert!(
            store.read_ahead.is_empty(),
            "a key the cache holds was read"
        );
    }

    #[test]
    fn commit_writes_state_and_offsets_together_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let task = TaskId::new(0, 1);
        let stores = vec!["count-store".to_string()];
        {
            let mut store = TaskStore::open(task, dir.path(), &stores, &memory()).unwrap();
            assert_eq!(
                store.read_offsets().unwrap(),
                StoredOffsets {
                    input_next: None,
                    changelog_next: vec![None]
                }
            );
            store.put(StoreId(0), b"foo", b"1", 6, None);
            assert_eq!(store.get(StoreId(0), b"foo").unwrap(), Some(b"1".to_vec()));
            assert_eq!(store.version(StoreId(0), b"foo").unwrap(), Some(6));
            assert_eq!(store.dirty_keys(), 1);
            let offsets = StoredOffsets {
                input_next: Some(7),
                changelog_next: vec![Some(3)],
            };
            store.commit(&offsets).unwrap();
            assert_eq!(store.dirty_keys(), 0);
            store.put(StoreId(0), b"bar", b"uncommitted", 8, None);
        }
        let store = TaskStore::open(task, dir.path(), &stores, &memory()).unwrap();
        assert_eq!(store.get(StoreId(0), b"foo").unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.version(StoreId(0), b"foo").unwrap(), Some(6));
        assert_eq!(
            store.get(StoreId(0), b"bar").unwrap(),
            None,
            "uncommitted writes are not on disk"
        );
        assert_eq!(store.read_offsets().unwrap().input_next, Some(7));
        assert_eq!(store.read_offsets().unwrap().changelog_next, vec![Some(3)]);
    }

    #[test]
    fn restored_updates_apply_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let mut store =
            TaskStore::open(TaskId::new(0, 0), dir.path(), &["s".to_string()], &memory()).unwrap();
        let offsets = StoredOffsets {
            input_next: Some(2),
            changelog_next: vec![Some(3)],
        };
        // Out of key order, a key deleted after its put and one written twice: of a key's
        // updates the last wins.
        let updates = vec![
            (b"c".to_vec(), Some(encode_changelog_value(0, b"1"))),
            (b"a".to_vec(), Some(encode_changelog_value(0, b"1"))),
            (b"b".to_vec(), Some(encode_changelog_value(1, b"1"))),
            (b"a".to_vec(), None),
            (b"c".to_vec(), Some(encode_changelog_value(1, b"2"))),
        ];
        store
            .apply_restored(StoreId(0), &updates, &[], &offsets)
            .unwrap();
        assert_eq!(store.get(StoreId(0), b"a").unwrap(), None);
        assert_eq!(store.get(StoreId(0), b"b").unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.version(StoreId(0), b"b").unwrap(), Some(1));
        assert_eq!(store.get(StoreId(0), b"c").unwrap(), Some(b"2".to_vec()));
        assert_eq!(store.read_offsets().unwrap(), offsets);
    }

    #[test]
    fn unopenable_or_offsetless_state_is_wiped() {
        let dir = tempfile::tempdir().unwrap();
        let task = TaskId::new(0, 2);
        let stores = vec!["s".to_string()];
        drop(committed_store(task, dir.path(), &stores));
        let (store, wiped) =
            TaskStore::open_or_wipe(task, dir.path(), &stores, &memory(), LOCK_WAIT).unwrap();
        assert_eq!(wiped, None, "consistent state is kept");
        assert_eq!(store.get(StoreId(0), b"k").unwrap(), Some(b"v".to_vec()));
        drop(store);

        std::fs::write(dir.path().join("CURRENT"), b"garbage\n").unwrap();
        let (store, wiped) =
            TaskStore::open_or_wipe(task, dir.path(), &stores, &memory(), LOCK_WAIT).unwrap();
        assert_eq!(wiped, Some("open_failed"));
        assert_eq!(store.get(StoreId(0), b"k").unwrap(), None);
        drop(store);

        {
            let mut store = TaskStore::open(task, dir.path(), &stores, &memory()).unwrap();
            store.put(StoreId(0), b"k", b"v", 0, None);
            store
                .commit(&StoredOffsets {
                    input_next: None,
                    changelog_next: vec![None],
                })
                .unwrap();
        }
        let (store, wiped) =
            TaskStore::open_or_wipe(task, dir.path(), &stores, &memory(), LOCK_WAIT).unwrap();
        assert_eq!(wiped, Some("missing_offsets"));
        drop(store);

        {
            // State written before values carried their input offset.
            let store = TaskStore::open(task, dir.path(), &stores, &memory()).unwrap();
            let offsets = store.cf(OFFSETS_CF);
            store.db.put_cf(store.cf("s"), b"k", b"plain").unwrap();
            store
                .db
                .put_cf(offsets, INPUT_OFFSET_KEY, encode_offset(1))
                .unwrap();
            store
                .db
                .put_cf(offsets, changelog_offset_key("s"), encode_offset(1))
                .unwrap();
        }
        let (_, wiped) =
            TaskStore::open_or_wipe(task, dir.path(), &stores, &memory(), LOCK_WAIT).unwrap();
        assert_eq!(wiped, Some("old_format"));
    }

    #[test]
    fn a_store_whose_lock_is_held_is_never_wiped() {
        let dir = tempfile::tempdir().unwrap();
        let task = TaskId::new(0, 3);
        let stores = vec!["s".to_string()];
        let held = committed_store(task, dir.path(), &stores);
        let opened = TaskStore::open_or_wipe(
            task,
            dir.path(),
            &stores,
            &memory(),
            Duration::from_millis(300),
        );
        let error = opened.err().expect("a held store cannot open twice");
        assert!(
            matches!(error, EngineError::Store { .. }),
            "a store error, not a wipe: {error}"
        );
        assert!(dir.path().join("CURRENT").exists(), "files kept");
        assert_eq!(held.get(StoreId(0), b"k").unwrap(), Some(b"v".to_vec()));
        drop(held);
        let (store, wiped) =
            TaskStore::open_or_wipe(task, dir.path(), &stores, &memory(), LOCK_WAIT).unwrap();
        assert_eq!(wiped, None, "once released it opens with its state");
        assert_eq!(store.get(StoreId(0), b"k").unwrap(), Some(b"v".to_vec()));
    }

    #[test]
    fn pending_output_marks_survive_reopen_until_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let task = TaskId::new(0, 4);
        let stores = vec!["a".to_string(), "b".to_string()];
        let offsets = StoredOffsets {
            input_next: Some(5),
            changelog_next: vec![Some(2), Some(1)],
        };
        {
            let mut store = TaskStore::open(task, dir.path(), &stores, &memory()).unwrap();
            assert!(store.pending_output_after(None, 10).unwrap().is_empty());
            let updates = vec![(b"x".to_vec(), Some(encode_changelog_value(3, b"1")))];
            store
                .apply_restored(StoreId(0), &updates, &[b"x".to_vec()], &offsets)
                .unwrap();
            store
                .apply_restored(StoreId(1), &[], &[b"y".to_vec(), b"z".to_vec()], &offsets)
                .unwrap();
        }
        let mut store = TaskStore::open(task, dir.path(), &stores, &memory()).unwrap();
        let all = store.pending_output_after(None, 10).unwrap();
        let expected = vec![
            (StoreId(0), b"x".to_vec()),
            (StoreId(1), b"y".to_vec()),
            (StoreId(1), b"z".to_vec()),
        ];
        assert_eq!(all, expected, "marks are durable, in store and key order");
        let first = store.pending_output_after(None, 1).unwrap();
        assert_eq!(first, expected[..1]);
        let rest = store.pending_output_after(first.last(), 10).unwrap();
        assert_eq!(rest, expected[1..], "paging resumes after the last key");
        store.commit(&offsets).unwrap();
        assert!(store.pending_output_after(None, 10).unwrap().is_empty());
        drop(store);
        let store = TaskStore::open(task, dir.path(), &stores, &memory()).unwrap();
        assert!(
            store.pending_output_after(None, 10).unwrap().is_empty(),
            "a commit clears them for good"
        );
    }

    #[test]
    fn wipe_empties_state_and_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let mut store =
            TaskStore::open(TaskId::new(0, 0), dir.path(), &["s".to_string()], &memory()).unwrap();
        store.put(StoreId(0), b"k", b"v", 3, None);
        store
            .commit(&StoredOffsets {
                input_next: Some(4),
                changelog_next: vec![Some(9)],
            })
            .unwrap();
        store.wipe().unwrap();
        assert_eq!(store.get(StoreId(0), b"k").unwrap(), None);
        assert_eq!(
            store.read_offsets().unwrap(),
            StoredOffsets {
                input_next: None,
                changelog_next: vec![None]
            }
        );
    }

    #[test]
    fn a_reader_sees_what_was_written_out_until_the_store_closes() {
        use crate::store::{ReadError, StoredValue};
        let dir = tempfile::tempdir().unwrap();
        let names = ["s".to_string()];
        let mut store = TaskStore::open(TaskId::new(0, 0), dir.path(), &names, &memory()).unwrap();
        let reader = store.reader();
        store.put(StoreId(0), b"b", b"2", 3, None);
        store.put(StoreId(0), b"a", b"1", 4, None);
        // Not yet written out: queries do not see the cache.
        assert_eq!(reader.get("s", b"a").unwrap(), None);
        let offsets = StoredOffsets {
            input_next: Some(5),
            changelog_next: vec![Some(2)],
        };
        store.commit(&offsets).unwrap();
        let a = StoredValue {
            version: Some(4),
            value: b"1".to_vec(),
        };
        assert_eq!(reader.get("s", b"a").unwrap(), Some(a.clone()));
        let keys: Vec<Vec<u8>> = reader
            .range("s", None, 10)
            .unwrap()
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert_eq!(keys, [b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(reader.range("s", Some(b"b"), 10).unwrap().len(), 1);
        assert_eq!(
            reader.get("other", b"a"),
            Err(ReadError::UnknownStore("other".into()))
        );
        // A wipe in place empties what the reader sees, and it keeps reading.
        store.wipe().unwrap();
        assert_eq!(reader.get("s", b"a").unwrap(), None);
        // Once the store closes, the reader holds nothing open: the store opens again at once.
        drop(store);
        assert_eq!(reader.get("s", b"a"), Err(ReadError::Closed));
        let again = TaskStore::open(TaskId::new(0, 0), dir.path(), &names, &memory());
        assert!(again.is_ok(), "the reader kept the store's lock");
    }

    #[test]
    fn cache_bytes_count_each_key_once_and_are_released_at_commit() {
        let dir = tempfile::tempdir().unwrap();
        let memory = StoreMemory::new(StoreMemorySettings {
            cache_max_bytes: 1000,
            ..StoreMemorySettings::default()
        });
        let mut store =
            TaskStore::open(TaskId::new(0, 0), dir.path(), &["s".to_string()], &memory).unwrap();
        store.put(StoreId(0), b"k", b"1", 0, None);
        let one_key = store.dirty_bytes();
        assert!(one_key > CACHE_ENTRY_OVERHEAD);
        assert_eq!(memory.cache_bytes(), one_key);
        store.put(StoreId(0), b"k", b"2", 1, None);
        assert_eq!(
            store.dirty_bytes(),
            one_key,
            "an update replaces, it does not add"
        );
        assert!(!store.cache_over_budget());
        for i in 2..20 {
            store.put(StoreId(0), format!("key-{i}").as_bytes(), b"1", i, None);
        }
        assert!(store.cache_over_budget(), "{} bytes", store.dirty_bytes());
        store
            .commit(&StoredOffsets {
                input_next: Some(20),
                changelog_next: vec![None],
            })
            .unwrap();
        assert_eq!((store.dirty_bytes(), memory.cache_bytes()), (0, 0));
        assert!(!store.cache_over_budget());
        store.put(StoreId(0), b"k", b"3", 20, None);
        drop(store);
        assert_eq!(memory.cache_bytes(), 0, "a closed store releases its share");
    }

    #[test]
    fn a_write_out_in_flight_is_read_until_written_while_the_task_caches_anew() {
        let dir = tempfile::tempdir().unwrap();
        let task = TaskId::new(0, 0);
        let stores = vec!["s".to_string()];
        let memory = memory();
        {
            let mut store = TaskStore::open(task, dir.path(), &stores, &memory).unwrap();
            store.put(StoreId(0), b"k", b"1", 0, None);
            store.put(StoreId(0), b"gone", b"1", 1, None);
            let sealed_bytes = store.dirty_bytes();
            store.seal(7, Some(2), WriteOut::Commit);
            assert_eq!(
                (memory.cache_bytes(), memory.write_out_bytes()),
                (0, sealed_bytes),
                "the write-out leaves the cache budget"
            );
            assert_eq!(store.get(StoreId(0), b"k").unwrap(), Some(b"1".to_vec()));
            assert!(!store.written_since_commit(StoreId(0), b"k"));
            store.put(StoreId(0), b"k", b"2", 2, None);
            assert_eq!(
                store.get(StoreId(0), b"k").unwrap(),
                Some(b"2".to_vec()),
                "the cache is read before the write-out"
            );
            assert_eq!(store.dirty_keys(), 3);
            let sealed = store.oldest_sealed().unwrap();
            assert_eq!(
                (sealed.generation, sealed.input_next, sealed.trigger),
                (7, Some(2), WriteOut::Commit)
            );
            store.write_oldest_sealed(&[Some(40)]).unwrap();
            assert_eq!(store.oldest_sealed(), None);
            assert_eq!(memory.write_out_bytes(), 0);
            assert_eq!(
                store.read_offsets().unwrap(),
                StoredOffsets {
                    input_next: Some(2),
                    changelog_next: vec![Some(40)]
                }
            );
            assert_eq!(store.get(StoreId(0), b"k").unwrap(), Some(b"2".to_vec()));
            store.seal(8, Some(3), WriteOut::CacheOverBudget);
            assert_eq!(store.sealed_bytes(), memory.write_out_bytes());
            // Closed with the second write-out unacknowledged: it never reaches RocksDB.
        }
        assert_eq!(
            memory.write_out_bytes(),
            0,
            "a closed store frees its write-outs"
        );
        let store = TaskStore::open(task, dir.path(), &stores, &memory).unwrap();
        assert_eq!(store.get(StoreId(0), b"k").unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.get(StoreId(0), b"gone").unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.read_offsets().unwrap().input_next, Some(2));
    }
}
