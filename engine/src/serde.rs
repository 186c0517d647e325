//! Key/value serialization: the `Serde` trait and the built-in String and i64 serdes.

/// Why bytes could not be turned into a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SerdeError(pub String);

/// Turns values of one type into bytes and back. Implement it to plug in your own format.
pub trait Serde<T>: Send + Sync + 'static {
    fn serialize(&self, value: &T) -> Vec<u8>;
    fn deserialize(&self, bytes: &[u8]) -> Result<T, SerdeError>;
}

/// UTF-8 strings; invalid UTF-8 is a deserialization error.
#[derive(Debug, Clone, Copy, Default)]
pub struct StringSerde;

impl Serde<String> for StringSerde {
    fn serialize(&self, value: &String) -> Vec<u8> {
        value.as_bytes().to_vec()
    }

    fn deserialize(&self, bytes: &[u8]) -> Result<String, SerdeError> {
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| SerdeError(format!("not valid UTF-8: {e}")))
    }
}

/// 64-bit signed integers as 8 big-endian bytes, like Kafka's `LongSerializer`.
#[derive(Debug, Clone, Copy, Default)]
pub struct I64Serde;

impl Serde<i64> for I64Serde {
    fn serialize(&self, value: &i64) -> Vec<u8> {
        value.to_be_bytes().to_vec()
    }

    fn deserialize(&self, bytes: &[u8]) -> Result<i64, SerdeError> {
        let array: [u8; 8] = bytes
            .try_into()
            .map_err(|_| SerdeError(format!("expected 8 bytes for an i64, got {}", bytes.len())))?;
        Ok(i64::from_be_bytes(array))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_round_trips_and_rejects_invalid_utf8() {
        let s = StringSerde;
        assert_eq!(
            s.deserialize(&s.serialize(&"héllo".to_string())).unwrap(),
            "héllo"
        );
        assert!(s
            .deserialize(&[0xff, 0xfe])
            .unwrap_err()
            .0
            .contains("UTF-8"));
    }

    #[test]
    fn i64_is_big_endian_and_checks_length() {
        let s = I64Serde;
        assert_eq!(s.serialize(&1), vec![0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(s.deserialize(&s.serialize(&-42)).unwrap(), -42);
        assert!(s.deserialize(&[1, 2, 3]).is_err());
    }
}
