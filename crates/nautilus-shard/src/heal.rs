//! Corrupt copies: a replica whose copy of a key holds bytes its store did not write
//! (junk set by hand, a key of another type) answers reads of it with `Corrupt`, and
//! its own writes of the key refuse it. With several replicas the router heals such a
//! copy instead of passing the error on: `import` replaces what holds no version.
//!
//! Reads do it as part of their read repair (see [`crate::reads`]); a write that its
//! coordinator refused as corrupt heals the key and is made again (see
//! [`ShardedRegistry::healing`]); a repair heals the keys each node lists as skipped
//! (see [`crate::repair`]).

use nautilus_core::{Entry, Error, Result, Version};

use crate::router::{ShardedRegistry, newest};
use crate::state::{Node, State};

/// The lowest version: a tombstone at it replaces a corrupt copy where no replica
/// holds anything, and refuses no write (every version a write takes is above it).
const FLOOR: Version = Version::from_raw(1);

impl ShardedRegistry {
    /// Heals the corrupt copies of `key` on its replicas that are up: the record a
    /// read through the router answers is imported over them (the read itself
    /// repairs only the replicas it asked), and where there is none (the key deleted,
    /// or never written) they are replaced by a tombstone at [`FLOOR`]. Whether the
    /// key's replicas were all reached and none is corrupt now; not if one is down
    /// (what it holds is unknown) or kept its copy.
    pub(crate) async fn heal(&self, state: &State, key: &str) -> bool {
        let found = match self.get_replicated_uncounted(state, key).await {
            Ok(found) => found,
            // No answer a read may give: the replicas that could be read may have
            // lost records (back empty, not yet repaired), the others' copies are
            // corrupt. No repair brings a better one (a corrupt copy holds nothing,
            // and its record, if any, went with it), so the newest readable copy
            // replaces them, as a stand-in's hand-back of a newer write would later.
            // (Before, every repair of a node that came back empty counted the key
            // failed and never verified the node, and a write of a key whose only
            // other copy was corrupt failed as corrupt for good; found from outside.)
            Err(Error::Corrupt { .. }) => match self.newest_readable(state, key).await {
                Some(found) => found,
                None => return false,
            },
            Err(_) => return false,
        };
        // Before, a tombstone at the floor replaced a corrupt copy the read had not
        // asked (a second replica, at read quorum 1) though the first held the
        // record; a repair's walk giving that record to the same copy at once then
        // saw its import refused over nothing live, took it for a delete, and removed
        // the last good copy (found from outside: a layout byte changed on a second
        // replica lost the record in 4 of 21 trials).
        let clear = found.unwrap_or_else(|| Entry::tombstone(FLOOR, None));
        let replicas = state.current.preference(key, self.inner.config.replicas);
        let mut healed = true;
        for n in replicas {
            let node = &state.nodes[n];
            if !node.is_up() {
                healed = false;
                continue;
            }
            match node.read_uncounted(key).await {
                Ok(_) => {}
                Err(Error::Corrupt { .. }) => {
                    healed &= replace_corrupt(node, key, clear.clone()).await
                }
                Err(_) => healed = false,
            }
        }
        healed
    }

    /// The newest copy any replica of `key` reads (with what stand-ins hold for it),
    /// none if no replica holds a readable one; `None` (no answer) if a replica is
    /// down, which may hold the record, or fails otherwise than as corrupt.
    async fn newest_readable(&self, state: &State, key: &str) -> Option<Option<Entry>> {
        let now = self.inner.clock.now();
        let mut best = None;
        for n in state.current.preference(key, self.inner.config.replicas) {
            let node = &state.nodes[n];
            if !node.is_up() {
                return None;
            }
            match Self::read_one(node, key, now).await {
                Ok(found) => best = newest(best, found),
                Err(Error::Corrupt { .. }) => {}
                Err(_) => return None,
            }
        }
        Some(best)
    }

    /// Clears a corrupt copy of `key` on node `n`, which is not one of the key's
    /// replicas: no read asks that node and no replica's walk gives it anything, so
    /// such a copy stayed for good (found from outside: 64-96 damaged copies on such
    /// nodes after each run). A tombstone at [`FLOOR`] replaces it, and nothing else:
    /// a record written there since is newer. `None` if the copy does not read as
    /// corrupt (nothing to do), else whether it was cleared.
    pub(crate) async fn clear_foreign(&self, state: &State, n: usize, key: &str) -> Option<bool> {
        let node = &state.nodes[n];
        match node.read_uncounted(key).await {
            Err(Error::Corrupt { .. }) => {}
            Ok(_) => return None,
            Err(_) => return Some(false),
        }
        Some(replace_corrupt(node, key, Entry::tombstone(FLOOR, None)).await)
    }

    /// `write`, made again once if a replica refused it as corrupt and [`Self::heal`]
    /// healed the key. With one replica a corrupt record has no other copy: the
    /// error stands, as the backend answers it.
    pub(crate) async fn healing<T, F, Fut>(
        &self,
        state: &State,
        key: &str,
        mut write: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        match write().await {
            Err(e @ Error::Corrupt { .. }) => {
                if self.inner.config.replicas > 1 && self.heal(state, key).await {
                    write().await
                } else {
                    Err(e)
                }
            }
            other => other,
        }
    }
}

/// Imports `with` over `node`'s corrupt copy of `key`; whether the copy is whole now.
/// An import refused means the copy was replaced since it was read (a parallel walk's
/// give, a write, a hand-back) by one at this version or newer: healed if it reads
/// whole. (Counted failed before: a repair of a second replica's damaged copy
/// reported a failed step in 2-4 of 8 keys though both copies ended whole, and its
/// nodes were not marked verified; found from outside, 16 of 72 trials.)
async fn replace_corrupt(node: &Node, key: &str, with: Entry) -> bool {
    match node.answer(node.registry.import(key, with).await) {
        Ok(true) => true,
        Ok(false) => node.read_uncounted(key).await.is_ok(),
        Err(_) => false,
    }
}
