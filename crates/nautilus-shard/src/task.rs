//! What a background job of the router (a migration, a repair) shares with its
//! handle: the request to cancel, whether it is over and how it ended.

use std::sync::atomic::{AtomicBool, Ordering};

use nautilus_core::{Error, Result};
use parking_lot::Mutex;

#[derive(Debug, Default)]
pub(crate) struct Task {
    cancel: AtomicBool,
    cancelled: AtomicBool,
    done: tokio::sync::watch::Sender<bool>,
    error: Mutex<Option<String>>,
}

impl Task {
    /// Asks the job to stop at its next page.
    pub(crate) fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Whether the job was asked to stop.
    pub(crate) fn cancel_requested(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Ends the job: `Ok(true)` finished, `Ok(false)` cancelled, or the error that
    /// stopped it.
    pub(crate) fn finish(&self, outcome: Result<bool>) {
        match outcome {
            Ok(true) => {}
            Ok(false) => self.cancelled.store(true, Ordering::Relaxed),
            Err(e) => *self.error.lock() = Some(e.to_string()),
        }
        self.done.send_replace(true);
    }

    pub(crate) fn is_done(&self) -> bool {
        *self.done.borrow()
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Waits until the job is over: `Ok` if it finished or was cancelled, else the
    /// error that stopped it.
    pub(crate) async fn wait(&self) -> Result<()> {
        let mut rx = self.done.subscribe();
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                break;
            }
        }
        match self.error.lock().clone() {
            Some(reason) => Err(Error::Backend {
                backend: "shard",
                source: reason.into(),
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_job_ends_once_with_its_outcome() {
        let t = Task::default();
        assert!(!t.is_done() && !t.cancel_requested());
        t.cancel();
        assert!(t.cancel_requested());
        t.finish(Ok(false));
        assert!(t.is_done() && t.is_cancelled());
        assert!(t.wait().await.is_ok());
        let failed = Task::default();
        failed.finish(Err(Error::invalid_argument("node gone")));
        assert!(matches!(failed.wait().await, Err(Error::Backend { .. })));
    }
}
