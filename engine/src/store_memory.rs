//! The memory all task stores of one instance share, bounded by settings rather than by the
//! number of keys: the write-back cache budget (Kafka Streams' `statestore.cache.max.bytes`),
//! RocksDB's block cache, and RocksDB's memtables (write buffers).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, DataBlockIndexType, Options, WriteBufferManager,
};

/// Per cached key, what a write-back cache entry (key, value and timestamp in a `HashMap`)
/// costs beyond its bytes.
pub const CACHE_ENTRY_OVERHEAD: usize = 80;

/// Size of one partition of an SST file's index or filter.
const METADATA_BLOCK_BYTES: usize = 4096;

/// Share of a data block given to its hash index of keys (RocksDB's recommended 0.75).
const DATA_BLOCK_HASH_RATIO: f64 = 0.75;

/// Share of a memtable's size given to its bloom filter of whole keys: about 10 bits per entry
/// for entries of ~60 bytes (a word count's key, value and skiplist node). The filter is
/// allocated whole when the memtable is created, so it is sized for a full one: 0.1, RocksDB's
/// usual example, gave each memtable 1.7 MiB of filter and cost a 16-task instance with few
/// keys 70 MiB of RSS.
const MEMTABLE_BLOOM_RATIO: f64 = 0.02;

/// The largest memtable one column family gets before RocksDB flushes it to a file.
const MAX_MEMTABLE_BYTES: usize = 16 << 20;

/// How much memory the stores of one instance may use. Defaults follow Kafka Streams (10 MiB
/// of record cache) and keep RocksDB within 64 MiB of blocks plus 64 MiB of memtables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreMemorySettings {
    /// Write-back cache of uncommitted updates, all tasks together; a task whose share is
    /// exceeded writes its updates out early (flush, then one RocksDB batch).
    pub cache_max_bytes: usize,
    /// RocksDB block cache (data, index and filter blocks), shared by all tasks.
    pub block_cache_bytes: usize,
    /// RocksDB memtables, all tasks and stores together; above it RocksDB flushes memtables.
    pub write_buffer_bytes: usize,
}

impl Default for StoreMemorySettings {
    fn default() -> Self {
        Self {
            cache_max_bytes: 10 << 20,
            block_cache_bytes: 64 << 20,
            write_buffer_bytes: 64 << 20,
        }
    }
}

/// The shared budgets; every task store of an instance holds the same one.
pub struct StoreMemory {
    settings: StoreMemorySettings,
    /// Bytes held by the write-back caches of all open task stores.
    cache_bytes: AtomicUsize,
    /// Bytes of written-out cache generations held until the broker acknowledges their
    /// changelog records (at most one per task, so at most the cache budget again).
    write_out_bytes: AtomicUsize,
    /// Open task stores (each holds one write-back cache).
    caches: AtomicUsize,
    block_cache: Cache,
    write_buffers: WriteBufferManager,
}

impl StoreMemory {
    pub fn new(settings: StoreMemorySettings) -> Arc<Self> {
        Arc::new(Self {
            settings,
            cache_bytes: AtomicUsize::new(0),
            write_out_bytes: AtomicUsize::new(0),
            caches: AtomicUsize::new(0),
            block_cache: Cache::new_lru_cache(settings.block_cache_bytes),
            write_buffers: WriteBufferManager::new_write_buffer_manager(
                settings.write_buffer_bytes,
                false,
            ),
        })
    }

    /// Whether the record cache is on (`cache_max_bytes` > 0): store writes wait for the
    /// commit, and their changelog and output records with them.
    pub fn caching(&self) -> bool {
        self.settings.cache_max_bytes > 0
    }

    /// Database options drawing on the shared memtable budget.
    pub(crate) fn db_options(&self) -> Options {
        let mut options = Options::default();
        options.set_write_buffer_manager(&self.write_buffers);
        options
    }

    /// Table options of every column family: blocks (index and filters included) in the
    /// shared cache, a bloom filter for point lookups. Index and filters are partitioned (4 KiB
    /// partitions under a small pinned top level): with whole-file filters, a lookup of a new
    /// key in a store of millions of keys reads and checksums megabytes of filter evicted from
    /// the bounded cache.
    fn table_options(&self) -> BlockBasedOptions {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&self.block_cache);
        table.set_cache_index_and_filter_blocks(true);
        table.set_cache_index_and_filter_blocks_with_high_priority(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        table.set_pin_top_level_index_and_filter(true);
        table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_metadata_block_size(METADATA_BLOCK_BYTES);
        table.set_bloom_filter(10.0, false);
        table
    }

    /// Column family options for the engine's own small column families (offsets,
    /// pending-output marks): see [`Self::table_options`].
    pub(crate) fn column_family_options(&self) -> Options {
        self.options_with(self.table_options())
    }

    /// Column family options for a state store: point lookups, a store's one read, skip work
    /// where they can. Data blocks carry a hash index of their keys (no binary search within
    /// the block), and memtables a bloom filter of whole keys, so a key not in a memtable costs
    /// a hash probe rather than a walk of its skiplist (at 1M keys most lookups miss the
    /// memtables).
    pub(crate) fn store_column_family_options(&self) -> Options {
        let mut table = self.table_options();
        table.set_data_block_index_type(DataBlockIndexType::BinaryAndHash);
        table.set_data_block_hash_ratio(DATA_BLOCK_HASH_RATIO);
        let mut options = self.options_with(table);
        options.set_memtable_whole_key_filtering(true);
        options.set_memtable_prefix_bloom_ratio(MEMTABLE_BLOOM_RATIO);
        options
    }

    /// Options with `table`, and memtables within the shared budget.
    fn options_with(&self, table: BlockBasedOptions) -> Options {
        let mut options = Options::default();
        options.set_block_based_table_factory(&table);
        options.set_write_buffer_size(
            (self.settings.write_buffer_bytes / 4).clamp(1 << 20, MAX_MEMTABLE_BYTES),
        );
        options
    }

    pub(crate) fn open_cache(&self) {
        self.caches.fetch_add(1, Ordering::Relaxed);
    }

    /// A task store closes, releasing what its cache and its write-outs in flight still held.
    pub(crate) fn close_cache(&self, held_bytes: usize, write_out_bytes: usize) {
        self.release(held_bytes);
        self.release_write_out(write_out_bytes);
        self.caches.fetch_sub(1, Ordering::Relaxed);
    }

    /// A cache's contents become a write-out in flight: no longer counted against the cache
    /// budget (the task caches anew meanwhile), held until acknowledged.
    pub(crate) fn start_write_out(&self, bytes: usize) {
        self.write_out_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.release(bytes);
    }

    /// A write-out reached RocksDB (or was dropped): its bytes are freed.
    pub(crate) fn release_write_out(&self, bytes: usize) {
        self.write_out_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Bytes held by write-outs waiting for the broker's acknowledgement now.
    pub fn write_out_bytes(&self) -> usize {
        self.write_out_bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn reserve(&self, bytes: usize) {
        self.cache_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn release(&self, bytes: usize) {
        self.cache_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Whether a cache holding `own_bytes` should be written out: the record cache is on, the
    /// caches together are over budget and this one holds at least an even share of it. With
    /// the cache off, writes wait for the commit alone.
    pub(crate) fn cache_over_budget(&self, own_bytes: usize) -> bool {
        let used = self.cache_bytes();
        let caches = self.caches.load(Ordering::Relaxed).max(1);
        self.caching()
            && used > self.settings.cache_max_bytes
            && own_bytes.saturating_mul(caches) >= used
    }

    /// Bytes held by all write-back caches now.
    pub fn cache_bytes(&self) -> usize {
        self.cache_bytes.load(Ordering::Relaxed)
    }

    /// Bytes RocksDB holds in its block cache and memtables now.
    pub fn rocksdb_bytes(&self) -> usize {
        self.block_cache.get_usage() + self.write_buffers.get_usage()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(cache_max_bytes: usize) -> Arc<StoreMemory> {
        StoreMemory::new(StoreMemorySettings {
            cache_max_bytes,
            ..StoreMemorySettings::default()
        })
    }

    #[test]
    fn within_budget_nothing_is_written_out() {
        let memory = memory(1000);
        memory.open_cache();
        memory.reserve(1000);
        assert!(!memory.cache_over_budget(1000));
    }

    #[test]
    fn over_budget_only_caches_holding_an_even_share_are_written_out() {
        let memory = memory(1000);
        for _ in 0..4 {
            memory.open_cache();
        }
        memory.reserve(1200);
        assert!(memory.cache_over_budget(300), "an even share (1200 / 4)");
        assert!(memory.cache_over_budget(900));
        assert!(
            !memory.cache_over_budget(100),
            "a small cache is left alone"
        );
        memory.close_cache(900, 0);
        assert_eq!(memory.cache_bytes(), 300);
        assert!(!memory.cache_over_budget(300));
    }

    #[test]
    fn a_write_out_in_flight_leaves_the_cache_budget_and_is_freed_once_written() {
        let memory = memory(1000);
        memory.open_cache();
        memory.reserve(1200);
        assert!(memory.cache_over_budget(1200));
        memory.start_write_out(1200);
        assert_eq!((memory.cache_bytes(), memory.write_out_bytes()), (0, 1200));
        assert!(!memory.cache_over_budget(0), "the task caches anew");
        memory.reserve(100);
        memory.close_cache(100, 1200);
        assert_eq!((memory.cache_bytes(), memory.write_out_bytes()), (0, 0));
    }

    #[test]
    fn with_the_cache_off_nothing_is_written_out_early() {
        let memory = memory(0);
        memory.open_cache();
        memory.reserve(1000);
        assert!(!memory.caching());
        assert!(!memory.cache_over_budget(1000));
    }
}
