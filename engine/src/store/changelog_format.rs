//! The changelog record format: every value the engine writes to a changelog (and keeps in
//! RocksDB) carries the input offset that produced it, so an update can tell whether it is
//! already applied.

use super::offsets::decode_offset;

/// First bytes of every changelog value the engine writes: magic and format version.
const CHANGELOG_VALUE_PREFIX: [u8; 2] = [b'K', 1];

/// A changelog value: the prefix, the input offset that produced the update (8 bytes,
/// big-endian), then the store's value. The offset travels in the value rather than in a
/// record header because some brokers (tansu) store headers unindexed, which makes every
/// fetch slower as headers accumulate.
pub fn encode_changelog_value(input_offset: i64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + value.len());
    out.extend_from_slice(&CHANGELOG_VALUE_PREFIX);
    out.extend_from_slice(&input_offset.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// Splits a changelog value into its input offset and the store's value; a value without the
/// engine's prefix is taken as a plain store value with no known input offset.
pub fn decode_changelog_value(bytes: &[u8]) -> (Option<i64>, &[u8]) {
    match bytes.strip_prefix(&CHANGELOG_VALUE_PREFIX[..]) {
        Some(rest) if rest.len() >= 8 => (decode_offset(&rest[..8]), &rest[8..]),
        _ => (None, bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changelog_values_carry_their_input_offset() {
        let encoded = encode_changelog_value(42, b"value");
        assert_eq!(decode_changelog_value(&encoded), (Some(42), &b"value"[..]));
        assert_eq!(
            decode_changelog_value(&encode_changelog_value(7, b"")),
            (Some(7), &b""[..])
        );
        let plain = 5i64.to_be_bytes();
        assert_eq!(
            decode_changelog_value(&plain),
            (None, &plain[..]),
            "values from elsewhere pass through"
        );
        assert_eq!(decode_changelog_value(b"K"), (None, &b"K"[..]));
    }
}
