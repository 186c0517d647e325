//! The word count, the topology `kstreams-count` runs and the benchmarks measure: records of
//! the input topic counted per key in a store, each new count written to the output topic as
//! a decimal string (Kafka Streams' `groupByKey().count()`).

use crate::dsl::{StreamsBuilder, Topology};
use crate::error::Result;
use crate::serde::StringSerde;

/// `input` -> count per key in `store` -> `output` (counts as decimal strings).
pub fn word_count(input: &str, store: &str, output: &str) -> Result<Topology> {
    let builder = StreamsBuilder::new();
    builder
        .stream(input, StringSerde, StringSerde)
        .group_by_key()
        .count(store)
        .to_stream()
        .map_values(|count| count.to_string())
        .to(output, StringSerde, StringSerde);
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_count_reads_counts_and_writes_where_it_is_told() {
        let topology = word_count("in", "counts", "out").unwrap();
        assert_eq!(topology.source_topic(), "in");
        assert_eq!(topology.stores(), ["counts".to_string()]);
        assert_eq!(topology.sink_topics, ["out".to_string()]);
        // The count is read at each record's key: a batch's keys are read ahead.
        assert_eq!(topology.read_ahead(), Some(crate::StoreId(0)));
        let error = topology.with_read_ahead(crate::StoreId(1)).err().unwrap();
        assert!(error.to_string().contains("store 1 of 1"), "{error}");
    }
}
