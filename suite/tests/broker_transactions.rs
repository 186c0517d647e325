//! The local broker's Kafka transactions, proven with an independent client before the engine
//! relies on them: `suite/conformance/transactions.py` (Python confluent-kafka) against a tansu
//! broker with our patches (`third_party/tansu/`).

use std::path::PathBuf;
use std::process::Command;

use kstreams_suite::{python, unique, Broker};

/// Commit and abort (read_committed sees exactly the committed records, the group exactly the
/// committed offsets), the last stable offset at an open transaction, a zombie fenced by its
/// successor's InitProducerId, many transactions in a row and two producers interleaving on one
/// partition, and an abandoned transaction aborted after its timeout.
#[test]
fn transactions_behave_as_kafkas_for_an_independent_client() {
    let broker = Broker::start();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conformance/transactions.py");
    let output = Command::new(python())
        .arg(&script)
        .args(["--bootstrap", &broker.address()])
        .args(["--prefix", &unique("txn")])
        .output()
        .expect("run the conformance script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {}\nstdout:\n{stdout}\nstderr:\n{stderr}\nbroker log:\n{}",
        output.status,
        broker.log_tail(40)
    );
    for check in [
        "commit_and_abort",
        "last_stable_offset",
        "fenced_zombie",
        "many_and_interleaved",
        "abandoned_transaction_times_out",
    ] {
        assert!(
            stdout
                .lines()
                .any(|line| line.starts_with(&format!("ok {check} "))),
            "{check} did not pass; stdout:\n{stdout}"
        );
    }
}
