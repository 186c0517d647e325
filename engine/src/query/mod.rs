//! Interactive queries: any instance answers for any key. A key's partition comes from the
//! input producers' partitioner, its owner from the group (each member publishes where it
//! answers in its consumer's `client.id`), its value from the owner's store as last written
//! out; other instances forward to the owner, and standbys answer when staleness is accepted.

mod answers;
mod api;
mod directory;
mod partitioner;
mod peers;
mod service;

pub use answers::{
    key_path, keys_path, ErrorAnswer, GroupMetadata, HeldPartition, Holder, InstanceMetadata,
    KeyAnswer, KeyEntry, KeysPage, PartitionHolders,
};
pub(crate) use api::{routes, QuerySlot};
pub(crate) use directory::{GroupDirectory, Me};
pub use partitioner::KeyPartitioner;
pub(crate) use peers::Peers;
pub(crate) use service::QueryService;
pub use service::{DEFAULT_PAGE, MAX_PAGE};
