//! A task's writes not yet in RocksDB: the write-back cache (per store, each key's latest
//! stored bytes) and the write-outs in flight (sealed generations of it whose changelog
//! records are sent but not yet acknowledged), with their bytes counted against the
//! instance's [`StoreMemory`] budget. Reads see the cache, then the write-outs newest first.
//! In memory only: writing a generation to RocksDB is the task store's.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use super::layout::StoreId;
use crate::store_memory::{StoreMemory, CACHE_ENTRY_OVERHEAD};

/// What made a task write its cached updates out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOut {
    /// A commit (interval, revocation, shutdown, or before stopping on a bad record).
    Commit,
    /// The task's record cache went over its share of the budget.
    CacheOverBudget,
}

/// A write not yet in RocksDB: the stored bytes (input offset and value; `None` = delete)
/// and the timestamp of the input record that made it (given to the records it emits).
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub bytes: Option<Vec<u8>>,
    pub timestamp: Option<i64>,
}

/// An uncommitted write, as the cache flush sends it on: store, key, stored bytes (input
/// offset and value, `None` = delete) and the input record's timestamp.
pub type PendingWrite = (StoreId, Vec<u8>, Option<Vec<u8>>, Option<i64>);

/// A write-out in flight, as [`WriteCache::oldest_sealed`] describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedInfo {
    /// The record collector's write-out generation that sent its records.
    pub generation: u64,
    /// The next input offset once its writes are in RocksDB.
    pub input_next: Option<i64>,
    pub trigger: WriteOut,
    pub sealed_at: Instant,
}

/// A map by store key. aHash rather than the standard SipHash (2.8% of the instance's CPU at
/// 1M keys): still keyed at random per process, so keys shaped by whoever writes the input
/// cannot be made to collide. Keys owned, or borrowed (`KeyMap<V, &[u8]>`) where the map lives
/// shorter than the records it indexes.
pub(crate) type KeyMap<V, K = Vec<u8>> = HashMap<K, V, ahash::RandomState>;

/// A sealed generation of cached writes: its changelog records are sent; it stays readable
/// until the broker acknowledges them, then reaches RocksDB with its offsets in one batch.
pub(super) struct SealedWrites {
    pub info: SealedInfo,
    /// Per store, as the cache held them.
    pub writes: Vec<KeyMap<Pending>>,
    /// What they hold, counted as the cache budget counts it.
    bytes: usize,
    /// Whether writing them clears the pending-output marks (their records carry the output
    /// re-emitted for every marked key).
    pub clears_pending_output: bool,
}

/// One task's cache and write-outs in flight.
pub(super) struct WriteCache {
    /// Per store: writes since the last write-out, encoded with their input offset.
    dirty: Vec<KeyMap<Pending>>,
    /// What `dirty` holds, counted against the instance's cache budget.
    dirty_bytes: usize,
    /// Write-outs in flight, oldest first: read after `dirty`, newest first.
    sealed: VecDeque<SealedWrites>,
    /// What `sealed` holds.
    sealed_bytes: usize,
    memory: Arc<StoreMemory>,
}

impl Drop for WriteCache {
    fn drop(&mut self) {
        self.memory.close_cache(self.dirty_bytes, self.sealed_bytes);
    }
}

impl WriteCache {
    /// An empty cache for `stores` stores, counted in `memory` from now on.
    pub fn new(stores: usize, memory: &Arc<StoreMemory>) -> Self {
        memory.open_cache();
        Self {
            dirty: vec![KeyMap::default(); stores],
            dirty_bytes: 0,
            sealed: VecDeque::new(),
            sealed_bytes: 0,
            memory: memory.clone(),
        }
    }

    /// A key's newest write held here (`Some(None)`: deleted), the cache first, then the
    /// write-outs in flight, newest first; `None` when RocksDB has the answer.
    pub fn get(&self, store: StoreId, key: &[u8]) -> Option<Option<&[u8]>> {
        std::iter::once(&self.dirty[store.0])
            .chain(
                self.sealed
                    .iter()
                    .rev()
                    .map(|sealed| &sealed.writes[store.0]),
            )
            .find_map(|writes| writes.get(key))
            .map(|pending| pending.bytes.as_deref())
    }

    /// Whether the key was written since the last write-out.
    pub fn written_since_write_out(&self, store: StoreId, key: &[u8]) -> bool {
        self.dirty[store.0].contains_key(key)
    }

    /// Caches `bytes` (`None`: a delete) as the key's newest write, made by an input record
    /// with `timestamp`.
    pub fn put(
        &mut self,
        store: StoreId,
        key: &[u8],
        bytes: Option<Vec<u8>>,
        timestamp: Option<i64>,
    ) {
        let added = bytes.as_ref().map_or(0, Vec::len);
        let replaced = match self.dirty[store.0].get_mut(key) {
            Some(pending) => {
                pending.timestamp = timestamp;
                std::mem::replace(&mut pending.bytes, bytes).map_or(0, |old| old.len())
            }
            None => {
                self.dirty[store.0].insert(key.to_vec(), Pending { bytes, timestamp });
                self.reserve(key.len() + CACHE_ENTRY_OVERHEAD);
                0
            }
        };
        self.reserve(added);
        self.release(replaced);
    }

    fn reserve(&mut self, bytes: usize) {
        self.dirty_bytes += bytes;
        self.memory.reserve(bytes);
    }

    fn release(&mut self, bytes: usize) {
        self.dirty_bytes -= bytes;
        self.memory.release(bytes);
    }

    /// Whether the cache should be written out now, to keep the instance's write-back caches
    /// within their budget.
    pub fn over_budget(&self) -> bool {
        self.memory.cache_over_budget(self.dirty_bytes)
    }

    pub fn memory(&self) -> &StoreMemory {
        &self.memory
    }

    /// Bytes cached (counted as the cache budget counts them).
    #[cfg(test)]
    pub fn dirty_bytes(&self) -> usize {
        self.dirty_bytes
    }

    /// Bytes held by write-outs in flight.
    #[cfg(test)]
    pub fn sealed_bytes(&self) -> usize {
        self.sealed_bytes
    }

    /// Every cached write (copies: the flush that sends them on may read the store
    /// meanwhile).
    pub fn pending_writes(&self) -> Vec<PendingWrite> {
        self.dirty
            .iter()
            .enumerate()
            .flat_map(|(index, dirty)| {
                dirty.iter().map(move |(key, pending)| {
                    let Pending { bytes, timestamp } = pending;
                    (StoreId(index), key.clone(), bytes.clone(), *timestamp)
                })
            })
            .collect()
    }

    /// Keys written and not yet in RocksDB (cached or in flight).
    pub fn keys_held(&self) -> usize {
        std::iter::once(&self.dirty)
            .chain(self.sealed.iter().map(|sealed| &sealed.writes))
            .flatten()
            .map(KeyMap::len)
            .sum()
    }

    /// Seals the cache as write-out `generation` (its changelog records just sent), to reach
    /// RocksDB with `input_next` once acknowledged; caching starts anew.
    pub fn seal(
        &mut self,
        generation: u64,
        input_next: Option<i64>,
        trigger: WriteOut,
        clears_pending_output: bool,
    ) {
        let stores = self.dirty.len();
        let writes = std::mem::replace(&mut self.dirty, vec![KeyMap::default(); stores]);
        let bytes = std::mem::take(&mut self.dirty_bytes);
        self.memory.start_write_out(bytes);
        self.sealed_bytes += bytes;
        self.sealed.push_back(SealedWrites {
            info: SealedInfo {
                generation,
                input_next,
                trigger,
                sealed_at: Instant::now(),
            },
            writes,
            bytes,
            clears_pending_output,
        });
    }

    /// The oldest write-out in flight.
    pub fn oldest_sealed(&self) -> Option<&SealedWrites> {
        self.sealed.front()
    }

    /// Forgets the oldest write-out in flight, once it is in RocksDB.
    pub fn drop_oldest_sealed(&mut self) {
        if let Some(written) = self.sealed.pop_front() {
            self.sealed_bytes -= written.bytes;
            self.memory.release_write_out(written.bytes);
        }
    }

    /// Forgets every write held (the state was wiped).
    pub fn clear(&mut self) {
        self.dirty.iter_mut().for_each(KeyMap::clear);
        self.release(self.dirty_bytes);
        self.memory.release_write_out(self.sealed_bytes);
        self.sealed.clear();
        self.sealed_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store_memory::StoreMemorySettings;

    fn cache() -> WriteCache {
        let memory = StoreMemory::new(StoreMemorySettings::default());
        WriteCache::new(2, &memory)
    }

    const A: StoreId = StoreId(0);
    const B: StoreId = StoreId(1);

    #[test]
    fn reads_see_the_cache_then_write_outs_newest_first_per_store() {
        let mut cache = cache();
        cache.put(A, b"k", Some(b"1".to_vec()), None);
        cache.seal(1, Some(1), WriteOut::Commit, false);
        cache.put(A, b"k", Some(b"2".to_vec()), None);
        cache.seal(2, Some(2), WriteOut::CacheOverBudget, false);
        assert_eq!(
            cache.get(A, b"k"),
            Some(Some(&b"2"[..])),
            "the newest write-out"
        );
        cache.put(A, b"k", None, None);
        assert_eq!(
            cache.get(A, b"k"),
            Some(None),
            "a cached delete hides what is in flight"
        );
        assert_eq!(cache.get(B, b"k"), None, "another store's key is its own");
        assert!(cache.written_since_write_out(A, b"k"));
        assert_eq!(cache.keys_held(), 3, "once per generation holding it");
        cache.drop_oldest_sealed();
        assert_eq!(cache.oldest_sealed().map(|s| s.info.generation), Some(2));
    }

    #[test]
    fn bytes_count_each_key_once_move_to_the_write_out_and_are_released() {
        let mut cache = cache();
        cache.put(A, b"key", Some(vec![0; 10]), Some(7));
        cache.put(A, b"key", Some(vec![0; 4]), Some(8));
        let one_key = 3 + CACHE_ENTRY_OVERHEAD + 4;
        assert_eq!(cache.dirty_bytes(), one_key);
        assert_eq!(
            cache.pending_writes(),
            vec![(A, b"key".to_vec(), Some(vec![0; 4]), Some(8))],
            "the newest write with its record's timestamp"
        );
        cache.seal(1, Some(9), WriteOut::Commit, true);
        assert_eq!((cache.dirty_bytes(), cache.sealed_bytes()), (0, one_key));
        assert!(cache.oldest_sealed().unwrap().clears_pending_output);
        cache.put(B, b"x", None, None);
        cache.clear();
        assert_eq!((cache.dirty_bytes(), cache.sealed_bytes()), (0, 0));
        assert_eq!(cache.keys_held(), 0);
        assert!(cache.oldest_sealed().is_none());
    }
}
