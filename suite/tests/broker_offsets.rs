//! The local broker's offsets on each of its storages, proven with an independent client:
//! `suite/conformance/offsets.py` (Python confluent-kafka) against a tansu broker with our
//! patches (`third_party/tansu/`). A restore reads to the end offset it is told, and a consumer
//! that resumes or seeks starts inside a record batch; both must be what Kafka answers on
//! memory:// too, where the benchmarks run restores and failovers.

use kstreams_suite::{
    conformance, free_port, skip_without_private_broker, unique, Broker, Storage,
};

/// The script's checks: its records' offsets, the end and start offsets after multi-record
/// batches (`ListOffsets`, as a restore reads them), and fetches that start inside a batch.
const CHECKS: [&str; 3] = ["produced", "end_offsets", "fetch_inside_a_batch"];

/// sqlite:// (the tests' and the demo's storage).
#[test]
fn sqlite_offsets_behave_as_kafkas_for_an_independent_client() {
    conformance(&Broker::start(), "offsets.py", &unique("offsets"), &CHECKS);
}

/// memory:// (the benchmarks' storage): unpatched, its ListOffsets answered the last batch's
/// base offset + 1 (`tansu-storage/0010`) and its fetch skipped the rest of a batch it started
/// inside (`0004`).
#[test]
fn memory_offsets_behave_as_kafkas_for_an_independent_client() {
    if skip_without_private_broker("runs a broker on memory:// storage") {
        return;
    }
    let broker = Broker::start_with(free_port(), Storage::Memory, None);
    conformance(&broker, "offsets.py", &unique("offsets"), &CHECKS);
}
