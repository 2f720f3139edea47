//! A migration as its caller sees it: the handle that watches, waits for and cancels
//! it, its progress, and the counters the walk keeps them in.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nautilus_core::{Error, Result};

#[cfg(doc)]
use crate::router::ShardedRegistry;
use crate::task::Task;

/// What a migration has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Progress {
    /// Records read from the source nodes, over every walk.
    pub scanned: u64,
    /// Records moved to their new node.
    pub moved: u64,
    /// Moves that failed (a node error) in the latest walk over the sources: records
    /// not moved yet. A record that could not be moved stays on its old node, readable
    /// there: the migration walks the sources again, and keeps the old placement until
    /// a walk moves everything it meets. So this is zero once a migration finished,
    /// and non-zero at its end only if it gave up: after five walks with failures it
    /// ends with an error, still migrating, and
    /// [`ShardedRegistry::resume_migration`] tries again.
    pub failed: u64,
    /// Moves that failed in an earlier walk, and were tried again in the next.
    pub retried: u64,
    /// Walks over the sources started: 1 for a migration that met no failure.
    pub walks: u32,
    /// The migration is over: finished, cancelled or failed.
    pub done: bool,
    /// It stopped because it was cancelled.
    pub cancelled: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(super) scanned: AtomicU64,
    pub(super) moved: AtomicU64,
    /// Failed moves of the walk running (or the last one).
    pub(super) failed: AtomicU64,
    /// Failed moves of earlier walks.
    pub(super) retried: AtomicU64,
    walks: std::sync::atomic::AtomicU32,
    /// The last move that failed, for the error a migration that gives up ends with.
    pub(super) last_failure: parking_lot::Mutex<Option<String>>,
    pub(super) task: Task,
}

impl Shared {
    pub(super) fn fail(&self, e: &Error) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *self.last_failure.lock() = Some(e.to_string());
    }

    /// A new walk starts: the last one's failures become moves to try again.
    pub(super) fn next_walk(&self) {
        let failed = self.failed.swap(0, Ordering::Relaxed);
        self.retried.fetch_add(failed, Ordering::Relaxed);
        self.walks.fetch_add(1, Ordering::Relaxed);
    }

    fn progress(&self) -> Progress {
        Progress {
            scanned: self.scanned.load(Ordering::Relaxed),
            moved: self.moved.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            walks: self.walks.load(Ordering::Relaxed),
            done: self.task.is_done(),
            cancelled: self.task.is_cancelled(),
        }
    }
}

/// A running (or finished) migration: watch it, wait for it, cancel it.
///
/// The migration runs on the runtime until it finishes or is cancelled, whether or
/// not the handle and the router are kept: dropping them does not stop it.
///
/// A router restarted while a migration is unfinished (the process died, or the old
/// router was dropped after a cancel; stop the old migration first if it still runs)
/// is built with the membership from *before* the change, and makes the same change
/// again (`add_node`, `remove_node` or `set_weight`, same arguments) before it serves
/// anything. From that call on it reads every key from its old node and its new one,
/// so the records already moved are found, and the walk moves the rest. Built with
/// the new membership instead, a router misses the records still on their old nodes
/// and deletes of them do nothing; a [repair](ShardedRegistry::repair) then moves
/// those copies, deleted or not, to their owners.
#[derive(Debug, Clone)]
pub struct MigrationHandle {
    pub(super) shared: Arc<Shared>,
}

impl MigrationHandle {
    /// What it has done so far.
    #[must_use]
    pub fn progress(&self) -> Progress {
        self.shared.progress()
    }

    /// Asks it to stop after the page it is moving. The router keeps serving every
    /// key correctly; [`ShardedRegistry::resume_migration`] finishes the job.
    pub fn cancel(&self) {
        self.shared.task.cancel();
    }

    /// Waits until it is over. `Ok` with the final progress when it finished or was
    /// cancelled; the node error that stopped it otherwise (resume to retry).
    pub async fn wait(&self) -> Result<Progress> {
        self.shared.task.wait().await?;
        Ok(self.shared.progress())
    }

    pub(super) fn finished() -> Self {
        let shared = Shared::default();
        shared.task.finish(Ok(true));
        MigrationHandle {
            shared: Arc::new(shared),
        }
    }
}
