//! Waiting on a condition with a deadline (never a bare sleep as synchronization).

use std::time::{Duration, Instant};

/// Polls `condition` every 100 ms until it holds: how long that took, or `None` once
/// `timeout` has passed without it.
pub fn poll_until(timeout: Duration, condition: impl FnMut() -> bool) -> Option<Duration> {
    poll_every(Duration::from_millis(100), timeout, condition)
}

/// [`poll_until`] with another interval between polls (longer for costly conditions).
pub fn poll_every(
    interval: Duration,
    timeout: Duration,
    mut condition: impl FnMut() -> bool,
) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if condition() {
            return Some(started.elapsed());
        }
        if started.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(interval);
    }
}

/// Polls `condition` every 100 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, condition: impl FnMut() -> bool) {
    assert!(
        poll_until(timeout, condition).is_some(),
        "timed out after {timeout:?} waiting for {what}"
    );
}
