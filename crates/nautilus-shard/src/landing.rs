//! A copy that moves to a node (a migration's import), when the node refuses it.
//!
//! `import` refuses a record that is not newer than what the node holds. For a copy
//! that moves, that is right when the node holds the record or a newer one; but a
//! node that gave the key away a moment ago may hold only the **tombstone its
//! removal left**: a backend that keeps a tombstone after every delete (Redis, for
//! `tombstone_ttl`, one second by default, so that versions keep increasing) dates it
//! above the record. Moving the key back while that tombstone lives was refused, and
//! the copy was then removed from where it came from: adding a Redis node and
//! removing it within a second lost every record that had moved (337 of 1,000).
//!
//! The old copies stay where they are until the new node holds the record, so a
//! removal's tombstone only delays a move: [`land`] imports again, with growing
//! pauses, until it is collected (nodes show no tombstones, so nothing says when),
//! for at most [`MAX_WAIT`]; past that the move
//! fails, and the migration tries it again in its next walk. A tombstone above a
//! live record cannot come from a delete the key's owners saw (they would hold it
//! too), so waiting for it loses nothing.

use std::time::Duration;

use nautilus_core::{Entry, Error, Result};

use crate::deadline::Timers;
use crate::state::Node;

/// The longest a move waits for a removal's tombstone to be collected.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(3);

/// The longest pause between two imports of a refused move (they start at 2 ms and
/// double).
const MAX_PAUSE: Duration = Duration::from_millis(250);

/// Imports `entry`, a copy of `key` moving to `node`; `Ok` once the node holds it or
/// something newer that is not a tombstone (or, for a tombstone that moves, anything
/// as new). An error leaves the old copies where they are.
pub(crate) async fn land(
    node: &Node,
    key: &str,
    entry: &Entry,
    clock: &dyn nautilus_core::Clock,
    timers: &Timers,
) -> Result<()> {
    if node.answer(node.registry.import(key, entry.clone()).await)? {
        return Ok(());
    }
    refused(node, key, entry, clock, timers).await
}

/// [`land`] after the first import was refused. A node that keeps its tombstones
/// out of reads (Redis) shows nothing: the move then imports again, with growing
/// pauses, until the tombstone is collected or [`MAX_WAIT`] has passed.
pub(crate) async fn refused(
    node: &Node,
    key: &str,
    entry: &Entry,
    clock: &dyn nautilus_core::Clock,
    timers: &Timers,
) -> Result<()> {
    if entry.is_tombstone() {
        // A delete that moves: whatever refused it is as new, and hides older copies.
        return Ok(());
    }
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(2);
    // Bounded in calls too: where no timer can be armed, a pause only yields.
    for _ in 0..64 {
        if entry.is_expired_at(clock.now()) {
            // Nothing to move any more.
            return Ok(());
        }
        // Nodes show no tombstones, so one that blocks the import shows as
        // nothing (or as something older than the record).
        if let Some(held) = node.read_uncounted(key).await?
            && held.version >= entry.version
        {
            return Ok(());
        }
        if started.elapsed() + pause > MAX_WAIT {
            break;
        }
        timers.pause(pause).await;
        if node.answer(node.registry.import(key, entry.clone()).await)? {
            return Ok(());
        }
        pause = (pause * 2).min(MAX_PAUSE);
    }
    Err(blocked(node))
}

fn blocked(node: &Node) -> Error {
    Error::Unavailable {
        node: node.id.clone(),
        source: "the node refuses a moving record for a newer tombstone (a removal's, \
                 collected soon); the record stays on its old node, retry"
            .into(),
    }
}
