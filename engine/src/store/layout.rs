//! What a task's RocksDB holds: one column family per state store (named by the user, found
//! by `StoreId`) beside the engine's own, and so the names a user's store may not take.

/// Index of a state store within its topology (the order stores were added).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoreId(pub usize);

/// Column family holding the task's offsets.
pub(crate) const OFFSETS_CF: &str = "offsets";

/// Column family marking restored keys whose output may not have reached the output topic
/// (key: the store's index, 4 bytes big-endian, then the key). A restore marks them in the
/// same write as the restored values; the first commit after they are re-emitted (which
/// flushes that output) clears them in its own write. A crash in between leaves them marked,
/// so the next start re-emits them again.
pub(crate) const PENDING_OUTPUT_CF: &str = "pending-output";

/// Internal column families, beside one per store.
pub(crate) const INTERNAL_COLUMN_FAMILIES: [&str; 2] = [OFFSETS_CF, PENDING_OUTPUT_CF];

/// Whether a state store may not be named `name`: it is empty, RocksDB's own column family, or
/// one of the engine's.
pub fn is_reserved(name: &str) -> bool {
    name.is_empty() || name == "default" || INTERNAL_COLUMN_FAMILIES.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_internal_column_family_is_reserved() {
        for name in INTERNAL_COLUMN_FAMILIES {
            assert!(is_reserved(name), "{name}");
        }
        assert!(is_reserved("pending-output"));
        assert!(is_reserved("default"));
        assert!(is_reserved(""));
        assert!(!is_reserved("count-store"));
    }
}
