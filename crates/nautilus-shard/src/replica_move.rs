//! Membership changes with several replicas: how a key whose replica set changes
//! moves, for the migrator and for a write of the key.
//!
//! Placement is rendezvous hashing, so a change moves one node within every
//! preference list and leaves the others in order: a key's new replicas are its old
//! ones with at most one node **gaining** the key and at most one **losing** it (a
//! node added or grown may push the last old replica out; a node removed or shrunk
//! lets the next one in). The others (at least one when R ≥ 2) are replicas before,
//! during and after the change, and take every write as usual.
//!
//! A key moves under the lock of its stripe, as with one replica: the newest copy on
//! the old replicas (merged with what stand-ins hold for them, a hand-back's delete
//! included; nodes show no tombstones, so a key deleted everywhere moves nothing)
//! is imported into the gaining node, then the losing node drops its copy (only the
//! copy it held: a newer one stays). Moving is `import`, so it never overwrites a
//! newer write, and it is idempotent: a key moved twice ends the same.
//!
//! - Every **write** while records move first waits until no operation of the
//!   state before the change runs (see [`Moving::drained`]): a weight change can
//!   make another node coordinate a key whose replicas stay the same.
//! - A **write** of such a key moves it first (once; the moved set remembers it),
//!   then takes the replicated path over the new replicas. The move needs the
//!   gaining and the losing node up: otherwise the write answers `Unavailable`
//!   (nothing is lost, and the old copy cannot outlive the migration on a node
//!   that no longer owns the key).
//! - A **read** takes the replicated path over the new replicas; the losing node is
//!   asked after them, so a miss is confirmed there too, and is never repaired (it
//!   is losing the key).
//! - A **scan** reports the key from its first new replica that was an old one:
//!   that node holds the key throughout, so the record is reported exactly once.
//! - The **migrator** walks the old replicas page by page and moves each key it
//!   finds on the losing node (or on the first old replica when none loses it).

use futures_util::future::join_all;
use nautilus_core::{Entry, Error, Result, Version};

use crate::placement::Preference;
use crate::router::{ShardedRegistry, newest};
use crate::state::{Moving, State};

/// How a key's replica set changes.
#[derive(Debug)]
pub(crate) struct ReplicaMove {
    /// Its old replicas, best first.
    pub(crate) old: Preference,
    /// The first new replica that was an old one: the node that reports it in scans.
    pub(crate) keeper: Option<usize>,
    /// New replicas that were not old ones.
    pub(crate) gaining: Preference,
    /// Old replicas that are not new ones.
    pub(crate) losing: Preference,
}

impl ReplicaMove {
    /// How `key`'s `replicas` change from `m`'s old placement to `state`'s; `None`
    /// when they stay the same nodes.
    pub(crate) fn of(state: &State, m: &Moving, key: &str, replicas: usize) -> Option<Self> {
        let old = m.old.preference_inline(key, replicas);
        let new = state.current.preference_inline(key, replicas);
        let gaining: Preference = new.iter().copied().filter(|n| !old.contains(n)).collect();
        let losing: Preference = old.iter().copied().filter(|n| !new.contains(n)).collect();
        if gaining.is_empty() && losing.is_empty() {
            return None;
        }
        let keeper = new.iter().copied().find(|n| old.contains(n));
        Some(ReplicaMove {
            old,
            keeper,
            gaining,
            losing,
        })
    }

    /// Whether the migrator, walking node `source`, moves the key: `source` loses
    /// it, or nothing loses it and `source` is its first old replica.
    pub(crate) fn walked_from(&self, source: usize) -> bool {
        self.losing.contains(&source)
            || (self.losing.is_empty() && self.old.first() == Some(&source))
    }
}

/// `Unavailable` for a move that needs node `n`, which is down.
fn needs(state: &State, n: usize) -> Error {
    Error::Unavailable {
        node: state.nodes[n].id.clone(),
        source: "a key whose replicas change moves only while its gaining and losing nodes \
                 are up"
            .into(),
    }
}

impl ShardedRegistry {
    /// Moves `key` as `mv` says (the caller holds its stripe's lock): the newest copy
    /// of its old replicas into the gaining node, then the losing node's copy away.
    /// `Unavailable` when either is down; a node's error when a call fails (the key
    /// is then where it was, or on its new replica too: both are read).
    pub(crate) async fn move_copies(
        &self,
        state: &State,
        key: &str,
        mv: &ReplicaMove,
    ) -> Result<()> {
        if let Some(&n) = mv
            .gaining
            .iter()
            .chain(&mv.losing)
            .find(|&&n| !state.nodes[n].is_up())
        {
            return Err(needs(state, n));
        }
        let now = self.inner.clock.now();
        // Every old replica that is up: one that is down and keeps the key gets what
        // it misses by hand-back, as for any write.
        let asked: Vec<usize> = mv
            .old
            .iter()
            .copied()
            .filter(|&n| state.nodes[n].is_up())
            .collect();
        let copies = join_all(asked.iter().map(|&n| {
            let node = &state.nodes[n];
            async move {
                if mv.losing.contains(&n) {
                    // The copy it stores, which is the one to remove.
                    node.read_uncounted(key).await
                } else {
                    Self::read_one(node, key, now).await
                }
            }
        }))
        .await;
        let mut best: Option<Entry> = None;
        let mut held: Vec<(usize, Version)> = Vec::new();
        for (&n, copy) in asked.iter().zip(copies) {
            let copy = copy?;
            if mv.losing.contains(&n)
                && let Some(c) = &copy
            {
                held.push((n, c.version));
            }
            best = newest(best, copy);
        }
        if let Some(best) = best {
            let (clock, timers) = (&*self.inner.clock, &self.inner.monitor.timers);
            for &g in &mv.gaining {
                crate::landing::land(&state.nodes[g], key, &best, clock, timers).await?;
            }
        }
        for (n, version) in held {
            state.nodes[n].remove_copy(key, version).await?;
        }
        Ok(())
    }

    /// A write's first step while records move: moves `key` unless its replicas stay
    /// the same or it moved already.
    pub(crate) async fn move_replicated(&self, state: &State, m: &Moving, key: &str) -> Result<()> {
        let Some(mv) = ReplicaMove::of(state, m, key, self.inner.config.replicas) else {
            return Ok(());
        };
        // The caller (`writer`) waited for `Moving::drained` already.
        let mut moved = m.moved[Moving::stripe(key)].lock().await;
        if moved.contains(key) {
            return Ok(());
        }
        self.move_copies(state, key, &mv).await?;
        moved.insert(key.to_owned());
        Ok(())
    }

    /// The migrator's moves of one page of keys found on a source, under the locks
    /// of their stripes; keys a write moved already are skipped. Each key's answer,
    /// in order (`None`: skipped).
    pub(crate) async fn move_page_replicated(
        &self,
        state: &State,
        m: &Moving,
        keys: Vec<(String, ReplicaMove)>,
    ) -> Vec<Option<Result<()>>> {
        let guards = m.lock(keys.iter().map(|(k, _)| k.as_str())).await;
        let skip: Vec<bool> = keys.iter().map(|(k, _)| guards.moved(k)).collect();
        let answers = join_all(keys.iter().zip(&skip).map(|((k, mv), &skip)| async move {
            if skip {
                None
            } else {
                Some(self.move_copies(state, k, mv).await)
            }
        }))
        .await;
        drop(guards);
        answers
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use nautilus_memory::MemoryRegistry;

    use super::*;
    use crate::state::{Direction, Layout};

    #[test]
    fn an_added_node_gains_keys_and_pushes_out_at_most_one_replica() {
        let mut b = ShardedRegistry::builder().replicas(2);
        for i in 0..4 {
            b = b.node(format!("n{i}"), Arc::new(MemoryRegistry::new()));
        }
        let router = b.build().unwrap();
        let state = router.inner.state.load_full();
        let old = Layout::new(&state.nodes, &[0, 1, 2]).unwrap();
        let moving = Moving::new(old, Direction::To(3), None);
        let mut gained = 0;
        for i in 0..2_000 {
            let key = format!("k{i}");
            let Some(mv) = ReplicaMove::of(&state, &moving, &key, 2) else {
                continue;
            };
            gained += 1;
            assert_eq!(mv.gaining.as_slice(), &[3], "only the new node gains");
            assert_eq!(mv.losing.len(), 1, "one old replica is pushed out");
            let keeper = mv.keeper.unwrap();
            assert!(mv.old.contains(&keeper) && keeper != 3);
            assert!(mv.walked_from(mv.losing[0]));
            assert!(!mv.walked_from(keeper), "the keeper keeps it");
        }
        // Half the keys (2 of 4 places) have the new node among their two replicas.
        assert!((800..1_200).contains(&gained), "{gained}");
    }
}
