//! Which partition a key is on: the partitioner the input's producers use, so that a query
//! finds the task that counted the key.

use crate::error::{EngineError, Result};

/// The keyed partitioners a query can follow (librdkafka's names; `_random` only changes where
/// keyless records go).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPartitioner {
    /// Kafka's Java clients, Kafka Streams and our tools: murmur2 of the key with Kafka's seed.
    Murmur2,
    /// librdkafka's former default: CRC32 of the key.
    Crc32,
}

impl KeyPartitioner {
    /// The partitioner named by librdkafka's `partitioner` setting (`None`: our default,
    /// murmur2). Partitioners that do not hash the key cannot locate one.
    pub fn from_setting(name: Option<&str>) -> Result<Self> {
        match name.unwrap_or(crate::clients::KEY_PARTITIONER) {
            "murmur2" | "murmur2_random" => Ok(Self::Murmur2),
            "consistent" | "consistent_random" => Ok(Self::Crc32),
            other => Err(EngineError::InvalidConfig {
                setting: "partitioner",
                reason: format!(
                    "queries find a key's partition with the input producers' partitioner, and \
                     `{other}` is not one they can follow: use murmur2_random (Kafka's Java \
                     clients) or consistent_random"
                ),
            }),
        }
    }

    /// The partition of `key` among `partitions` (> 0).
    pub fn partition(self, key: &[u8], partitions: usize) -> i32 {
        let hash = match self {
            // Kafka's `Utils.toPositive(Utils.murmur2(key)) % partitions`.
            KeyPartitioner::Murmur2 => murmur2::murmur2(key, murmur2::KAFKA_SEED) & 0x7fff_ffff,
            KeyPartitioner::Crc32 => crc32fast::hash(key),
        };
        (hash % partitions as u32) as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_java_client() {
        // Kafka's own test vectors (clients UtilsTest.testMurmur2), as signed 32-bit results.
        let vectors: [(&[u8], i32); 4] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
        ];
        for (key, java) in vectors {
            assert_eq!(murmur2::murmur2(key, murmur2::KAFKA_SEED) as i32, java);
            let expected = ((java as u32 & 0x7fff_ffff) % 12) as i32;
            assert_eq!(KeyPartitioner::Murmur2.partition(key, 12), expected);
        }
    }

    #[test]
    fn the_setting_picks_the_partitioner_or_says_why_not() {
        assert_eq!(
            KeyPartitioner::from_setting(None).unwrap(),
            KeyPartitioner::Murmur2
        );
        assert_eq!(
            KeyPartitioner::from_setting(Some("consistent_random")).unwrap(),
            KeyPartitioner::Crc32
        );
        assert_eq!(
            KeyPartitioner::Crc32.partition(b"foo", 4),
            (crc32fast::hash(b"foo") % 4) as i32
        );
        let error = KeyPartitioner::from_setting(Some("random")).unwrap_err();
        assert!(error.to_string().contains("`random`"), "{error}");
    }
}
