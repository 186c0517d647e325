//! Reads of a task's RocksDB from outside the task (interactive queries): a handle that sees
//! what the task has written out, valid exactly as long as the task holds its store.

use std::sync::{Arc, Mutex, RwLock};

use rocksdb::{Direction, IteratorMode, DB};

use super::changelog_format::decode_changelog_value;

/// A read-only view of one task's store, shared with whoever answers queries. The store closes
/// the view before it closes RocksDB (taking the write lock waits for reads in progress), so a
/// query never keeps a store open, or its directory locked, past its task.
#[derive(Clone)]
pub struct StoreReader {
    db: Arc<RwLock<Option<Arc<DB>>>>,
    store_names: Arc<[String]>,
}

/// Where a task's (or a standby's) view is kept for queries: empty until its store opens, and
/// reading nothing once it closes.
#[derive(Debug, Default)]
pub struct ReaderSlot(Mutex<Option<StoreReader>>);

impl ReaderSlot {
    pub(crate) fn set(&self, reader: StoreReader) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(reader);
    }

    pub(crate) fn get(&self) -> Option<StoreReader> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One key's value as the task last wrote it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredValue {
    /// The input offset of the update that produced it (`None` when not known).
    pub version: Option<i64>,
    pub value: Vec<u8>,
}

/// Why a read found nothing to read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("no store named `{0}`")]
    UnknownStore(String),
    #[error("the store is closed (its task stopped or moved)")]
    Closed,
    #[error("reading the store: {0}")]
    Rocksdb(String),
}

impl StoreReader {
    pub(super) fn new(db: Arc<DB>, store_names: &[String]) -> Self {
        Self {
            db: Arc::new(RwLock::new(Some(db))),
            store_names: store_names.into(),
        }
    }

    /// Ends every read through this view (the store is closing): waits for reads in progress.
    pub(super) fn close(&self) {
        self.db.write().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Opens the view on `db` again (after the store was wiped in place).
    pub(super) fn reopen(&self, db: Arc<DB>) {
        *self.db.write().unwrap_or_else(|e| e.into_inner()) = Some(db);
    }

    fn with_store<T>(
        &self,
        store: &str,
        read: impl FnOnce(&DB, &rocksdb::ColumnFamily) -> Result<T, rocksdb::Error>,
    ) -> Result<T, ReadError> {
        if !self.store_names.iter().any(|name| name == store) {
            return Err(ReadError::UnknownStore(store.to_string()));
        }
        let guard = self.db.read().unwrap_or_else(|e| e.into_inner());
        let db = guard.as_deref().ok_or(ReadError::Closed)?;
        let cf = db.cf_handle(store).ok_or(ReadError::Closed)?;
        read(db, cf).map_err(|e| ReadError::Rocksdb(e.to_string()))
    }

    /// `key`'s value in `store` as last written out (`None`: the store has not seen it).
    pub fn get(&self, store: &str, key: &[u8]) -> Result<Option<StoredValue>, ReadError> {
        self.with_store(store, |db, cf| {
            Ok(db.get_pinned_cf(cf, key)?.map(|bytes| {
                let (version, value) = decode_changelog_value(&bytes);
                StoredValue {
                    version,
                    value: value.to_vec(),
                }
            }))
        })
    }

    /// Up to `limit` entries of `store` in key order, from `from` (inclusive) or the first.
    pub fn range(
        &self,
        store: &str,
        from: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, StoredValue)>, ReadError> {
        self.with_store(store, |db, cf| {
            let mode = match from {
                Some(start) => IteratorMode::From(start, Direction::Forward),
                None => IteratorMode::Start,
            };
            db.iterator_cf(cf, mode)
                .take(limit)
                .map(|entry| {
                    let (key, bytes) = entry?;
                    let (version, value) = decode_changelog_value(&bytes);
                    Ok((
                        key.into_vec(),
                        StoredValue {
                            version,
                            value: value.to_vec(),
                        },
                    ))
                })
                .collect()
        })
    }
}

impl std::fmt::Debug for StoreReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreReader")
            .field("stores", &self.store_names)
            .finish_non_exhaustive()
    }
}
