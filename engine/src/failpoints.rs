//! Fault injection for tests: named points on the commit and restore paths where a test makes
//! the process crash, an operation fail or a restore slow (the `fail` crate, compiled in only with the
//! `failpoints` feature and set through the `FAILPOINTS` environment variable, e.g.
//! `FAILPOINTS="write-out-abort-after=return(1500)"`). Without the feature every point is inert.

/// `return(N)`: during a commit's write-out, once N changelog records are sent (the Nth key's
/// output record not yet), wait for the broker to acknowledge them and abort the process.
pub const WRITE_OUT_ABORT_AFTER: &str = "write-out-abort-after";
/// `return(N)`: during a commit's write-out, once N changelog records are sent (the Nth key's
/// output record not yet), wait for the broker to acknowledge them, then hold the write-out
/// for [`WRITE_OUT_PAUSE`] before sending the rest: a window in which a test finds exactly N
/// changelog records on the broker and freezes the process (SIGSTOP) mid write-out.
pub const WRITE_OUT_PAUSE_AFTER: &str = "write-out-pause-after";
/// How long [`WRITE_OUT_PAUSE_AFTER`] holds a write-out.
pub const WRITE_OUT_PAUSE: std::time::Duration = std::time::Duration::from_secs(5);
/// `return(N)`: the same as [`WRITE_OUT_ABORT_AFTER`] for an early write-out (a task's cache over its share of the budget).
pub const EARLY_WRITE_OUT_ABORT_AFTER: &str = "early-write-out-abort-after";
/// `return`: abort the process once a task processed a batch while a write-out of its is still
/// in flight (its records sent, not all acknowledged, its state not yet in RocksDB);
/// `N*off->return` lets N such batches pass first.
pub const ABORT_WITH_WRITE_OUT_IN_FLIGHT: &str = "abort-with-write-out-in-flight";
/// `return`: the commit of tasks being revoked fails (as a flush timeout or a delivery error
/// would); `1*return` fails only the first revocation.
pub const REVOCATION_COMMIT_FAILS: &str = "revocation-commit-fails";
/// `return`: abort the process once a task has restored its stores, before it re-emits the
/// output of restored keys.
pub const ABORT_BEFORE_REPLAY: &str = "abort-before-replay";

/// `return`: under exactly-once, abort the process once a write-out's records are sent
/// (acknowledged or not) and before its transaction commits: the broker aborts the
/// transaction when the task's next owner registers its transactional id.
pub const TRANSACTION_ABORT_BEFORE_COMMIT: &str = "transaction-abort-before-commit";
/// `return`: under exactly-once, abort the process once a write-out's transaction committed
/// and before its state and offsets reach RocksDB: the restart restores them from the
/// changelog.
pub const TRANSACTION_ABORT_AFTER_COMMIT: &str = "transaction-abort-after-commit";

/// `return`: under exactly-once, a transaction's commit fails as the broker could make it fail
/// (an abortable error, e.g. a timeout): the task aborts it and restarts from its last commit.
pub const TRANSACTION_COMMIT_FAILS: &str = "transaction-commit-fails";
/// `return`: under exactly-once, abort the process while it aborts a failed transaction.
pub const TRANSACTION_ABORT_DURING_ABORT: &str = "transaction-abort-during-abort";

/// `return(MS)`: the state updater waits MS milliseconds before each restore step (at most
/// 5,000 records), as a slow broker or a long changelog would make it take longer.
pub const RESTORE_STEP_DELAY: &str = "restore-step-delay";

/// Every point this build knows, for the start-up check of `FAILPOINTS`.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
pub const ALL: [&str; 11] = [
    WRITE_OUT_ABORT_AFTER,
    WRITE_OUT_PAUSE_AFTER,
    EARLY_WRITE_OUT_ABORT_AFTER,
    ABORT_WITH_WRITE_OUT_IN_FLIGHT,
    REVOCATION_COMMIT_FAILS,
    ABORT_BEFORE_REPLAY,
    RESTORE_STEP_DELAY,
    TRANSACTION_ABORT_BEFORE_COMMIT,
    TRANSACTION_ABORT_AFTER_COMMIT,
    TRANSACTION_COMMIT_FAILS,
    TRANSACTION_ABORT_DURING_ABORT,
];

/// Why `FAILPOINTS` could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum FailpointsError {
    #[error(
        "FAILPOINTS is set but this build has no failpoints (build with the `failpoints` feature)"
    )]
    NotCompiledIn,
    #[error("FAILPOINTS entry `{entry}`: {reason}")]
    Invalid { entry: String, reason: String },
}

/// Applies `FAILPOINTS` (`name=actions;name=actions`), if set; returns the points it set.
pub fn setup_from_env() -> Result<Vec<String>, FailpointsError> {
    match std::env::var("FAILPOINTS") {
        Ok(spec) if !spec.trim().is_empty() => apply(&spec),
        _ => Ok(Vec::new()),
    }
}

#[cfg(feature = "failpoints")]
fn apply(spec: &str) -> Result<Vec<String>, FailpointsError> {
    let mut set = Vec::new();
    for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let invalid = |reason: String| FailpointsError::Invalid {
            entry: entry.to_string(),
            reason,
        };
        let (name, actions) = entry
            .split_once('=')
            .ok_or_else(|| invalid("expected name=actions".into()))?;
        if !ALL.contains(&name) {
            return Err(invalid(format!("unknown point; known: {}", ALL.join(", "))));
        }
        fail::cfg(name, actions).map_err(invalid)?;
        set.push(name.to_string());
    }
    Ok(set)
}

#[cfg(not(feature = "failpoints"))]
fn apply(_spec: &str) -> Result<Vec<String>, FailpointsError> {
    Err(FailpointsError::NotCompiledIn)
}

/// Whether the point fires now (its action is `return`, with or without an argument).
pub(crate) fn fires(name: &str) -> bool {
    argument(name).is_some()
}

/// The point's `return(ARG)` argument when it fires now (`""` for a bare `return`).
#[cfg(feature = "failpoints")]
pub(crate) fn argument(name: &str) -> Option<String> {
    fail::eval(name, Option::unwrap_or_default)
}

#[cfg(not(feature = "failpoints"))]
pub(crate) fn argument(_name: &str) -> Option<String> {
    None
}

/// The point's numeric argument when it fires now.
pub(crate) fn number(name: &str) -> Option<usize> {
    argument(name).and_then(|arg| arg.trim().parse().ok())
}

/// Ends the process at once, as SIGKILL or an OOM kill would (no destructor, no commit).
pub(crate) fn crash(name: &str) -> ! {
    eprintln!("failpoint {name}: aborting the process");
    std::process::abort()
}
