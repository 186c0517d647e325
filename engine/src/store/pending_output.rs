//! The keys of the `pending-output` column family: a restored key that still owes its output
//! (re-emitted after the restore), as its store's index followed by the key.

use super::layout::StoreId;

/// The mark's key for `key` of `store`.
pub(super) fn pending_output_key(store: StoreId, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + key.len());
    out.extend_from_slice(&(store.0 as u32).to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// The store and key a mark's key names (`None`: not a mark's key).
pub(super) fn decode_pending_output_key(raw: &[u8]) -> Option<(StoreId, Vec<u8>)> {
    let (index, key) = raw.split_first_chunk::<4>()?;
    Some((StoreId(u32::from_be_bytes(*index) as usize), key.to_vec()))
}

/// Past every mark's key (store indexes are far below `u32::MAX`).
pub(super) const PENDING_OUTPUT_END: [u8; 4] = [0xff; 4];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marks_key_names_its_store_and_key_and_sorts_below_the_end() {
        let raw = pending_output_key(StoreId(3), b"word");
        assert_eq!(
            decode_pending_output_key(&raw),
            Some((StoreId(3), b"word".to_vec()))
        );
        assert!(raw.as_slice() < &PENDING_OUTPUT_END[..]);
        assert_eq!(decode_pending_output_key(b"abc"), None);
    }
}
