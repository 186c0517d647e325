//! The local broker's Kafka transactions, proven with an independent client before the engine
//! relies on them: `suite/conformance/transactions.py` (Python confluent-kafka) against a tansu
//! broker with our patches (`third_party/tansu/`).

use kstreams_suite::{conformance, unique, Broker};

/// Commit and abort (read_committed sees exactly the committed records, the group exactly the
/// committed offsets), the last stable offset at an open transaction, a zombie fenced by its
/// successor's InitProducerId, many transactions in a row and two producers interleaving on one
/// partition, and an abandoned transaction aborted after its timeout.
#[test]
fn transactions_behave_as_kafkas_for_an_independent_client() {
    conformance(
        &Broker::start(),
        "transactions.py",
        &unique("txn"),
        &[
            "commit_and_abort",
            "last_stable_offset",
            "fenced_zombie",
            "many_and_interleaved",
            "abandoned_transaction_times_out",
        ],
    );
}
