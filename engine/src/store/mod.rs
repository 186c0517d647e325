//! A task's local state: its RocksDB (one column family per state store beside the engine's
//! own), the write-back cache and write-outs in flight, the offsets kept with the state, the
//! keys that owe output after a restore, the changelog record format, and the read-only view
//! queries take of it (`StoreReader`). It owns the store
//! ids and the names a user's store may not take; it knows nothing of the commit or the
//! processor above it.

pub(crate) mod changelog_format;
mod layout;
pub(crate) mod offsets;
mod pending_output;
pub(crate) mod reader;
mod task_store;
mod write_cache;

pub(crate) use layout::is_reserved;
pub use layout::StoreId;
pub use reader::{ReadError, StoreReader, StoredValue};
pub use task_store::{ChangelogUpdate, StoredOffsets, TaskStore, LOCK_WAIT};
pub(crate) use write_cache::KeyMap;
pub use write_cache::WriteOut;
