//! Offset bookkeeping for one task: which input records are already applied, and how offsets
//! are keyed and encoded in the task's `offsets` column family.

/// Key under which the next input offset to process is stored.
pub const INPUT_OFFSET_KEY: &[u8] = b"input";

/// Key under which the next changelog offset to restore from is stored, per store.
pub fn changelog_offset_key(store: &str) -> Vec<u8> {
    format!("changelog:{store}").into_bytes()
}

pub fn encode_offset(offset: i64) -> [u8; 8] {
    offset.to_be_bytes()
}

/// `None` for anything that is not exactly 8 bytes holding a non-negative offset.
pub fn decode_offset(bytes: &[u8]) -> Option<i64> {
    let array: [u8; 8] = bytes.try_into().ok()?;
    Some(i64::from_be_bytes(array)).filter(|o| *o >= 0)
}

/// Where a task's input stands: the next offset to process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InputPosition {
    next: Option<i64>,
}

impl InputPosition {
    /// Resumes from what the local store says and what the changelog records say, whichever is
    /// further: both record input that is already reflected in the state.
    pub fn resume(local_next: Option<i64>, restored_next: Option<i64>) -> Self {
        Self {
            next: local_next.max(restored_next),
        }
    }

    /// Whether the record at `offset` still needs processing (it may arrive again after a
    /// crash, because the group's committed offset can lag the task's own).
    pub fn needs(&self, offset: i64) -> bool {
        self.next.is_none_or(|next| offset >= next)
    }

    /// Marks `offset` processed (or deliberately skipped).
    pub fn advance(&mut self, offset: i64) {
        self.next = Some(self.next.map_or(offset + 1, |next| next.max(offset + 1)));
    }

    pub fn next(&self) -> Option<i64> {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_and_reject_garbage() {
        assert_eq!(decode_offset(&encode_offset(0)), Some(0));
        assert_eq!(
            decode_offset(&encode_offset(123_456_789)),
            Some(123_456_789)
        );
        assert_eq!(decode_offset(&encode_offset(-1)), None);
        assert_eq!(decode_offset(b"1234567"), None);
        assert_eq!(decode_offset(b""), None);
    }

    #[test]
    fn changelog_keys_differ_per_store_and_from_input() {
        assert_ne!(changelog_offset_key("a"), changelog_offset_key("b"));
        assert_ne!(changelog_offset_key("input").as_slice(), INPUT_OFFSET_KEY);
    }

    #[test]
    fn resume_takes_the_furthest_known_position() {
        assert_eq!(InputPosition::resume(None, None).next(), None);
        assert_eq!(InputPosition::resume(Some(10), None).next(), Some(10));
        assert_eq!(InputPosition::resume(Some(10), Some(15)).next(), Some(15));
        assert_eq!(InputPosition::resume(Some(20), Some(15)).next(), Some(20));
    }

    #[test]
    fn applied_records_are_not_needed_again() {
        let mut p = InputPosition::resume(Some(5), None);
        assert!(!p.needs(4));
        assert!(p.needs(5));
        p.advance(5);
        assert!(!p.needs(5));
        assert_eq!(p.next(), Some(6));
        p.advance(3); // a replayed, older record never moves the position back
        assert_eq!(p.next(), Some(6));
        let fresh = InputPosition::default();
        assert!(fresh.needs(0));
    }
}
