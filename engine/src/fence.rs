//! A task incarnation's fence: closed by the supervisor once the task's partition may be
//! another member's (lost, or the task outlived its stop deadline). From then the task can
//! neither send a record nor write its store, and its producer's queued and in-flight records
//! are purged at once, so an orphaned task cannot write after the hand-over.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// What runs when the fence closes (e.g. purging the task's producer).
pub(crate) type OnClose = Box<dyn Fn() + Send + Sync>;

#[derive(Clone, Default)]
pub(crate) struct Fence(Arc<FenceState>);

#[derive(Default)]
struct FenceState {
    closed: AtomicBool,
    on_close: Mutex<Vec<OnClose>>,
}

impl Fence {
    /// Closes the fence (once; later calls do nothing) and runs what waited for it.
    pub(crate) fn close(&self) {
        if self.0.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let waiting = std::mem::take(&mut *self.0.on_close.lock().expect("fence lock poisoned"));
        for on_close in waiting {
            on_close();
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::Acquire)
    }

    /// Runs `on_close` when the fence closes, or at once if it is closed.
    pub(crate) fn on_close(&self, on_close: OnClose) {
        let mut waiting = self.0.on_close.lock().expect("fence lock poisoned");
        if self.is_closed() {
            drop(waiting);
            on_close();
        } else {
            waiting.push(on_close);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[test]
    fn closing_runs_what_waited_once_and_later_waiters_at_once() {
        let fence = Fence::default();
        let ran = Arc::new(AtomicUsize::new(0));
        let counter = || {
            let ran = ran.clone();
            Box::new(move || {
                ran.fetch_add(1, Ordering::SeqCst);
            }) as OnClose
        };
        fence.on_close(counter());
        assert!(!fence.is_closed());
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        fence.clone().close();
        fence.close();
        assert!(fence.is_closed());
        assert_eq!(ran.load(Ordering::SeqCst), 1, "ran once");
        fence.on_close(counter());
        assert_eq!(
            ran.load(Ordering::SeqCst),
            2,
            "a waiter after the close runs at once"
        );
    }
}
