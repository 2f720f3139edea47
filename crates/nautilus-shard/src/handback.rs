//! Hand-backs: the writes stand-ins took while a node was down, imported into it once
//! it answers again, and what to do when it refuses one.
//!
//! A returning node refuses a hand-back it holds something at least as new for. The
//! hand-back was acknowledged while the node was down, so it is the later write,
//! unless the node's copy was written after it:
//! - **The very same version** (two clocks issued one version within a millisecond:
//!   the node's last write before it went down, and the stand-in's during the
//!   outage): the hand-back is applied over that record only.
//! - **A newer live record, with W = R of two or more.** If the key's other
//!   replicas still hold the hand-back's record and no other node holds the node's
//!   record, every node answering, that record reached the node alone: a write that
//!   failed after its coordinator applied it, decided before the outage on a clock
//!   at or ahead of the hand-back's. Kept, it would hide the acknowledged write from
//!   every read of the node and win every repair. The hand-back is applied over it
//!   on the node's clock, and that new version copied to the other replicas.
//! - Anything else stays. A record another node holds too was acknowledged after
//!   the hand-back (through this router once the node was back, which supersedes
//!   the hand-back, or through another router that could reach the node, whose
//!   stand-in may hold it); with a node that cannot be asked, that cannot be ruled
//!   out. A newer delete stays: tombstones are invisible to reads, so another
//!   router's stand-in holding it too cannot be told from a delete that failed.
//!   With one replica, or W below R, a record on one node alone may have been
//!   acknowledged (by another router too: routers over the same nodes are assumed
//!   to share R and W).

use std::sync::Arc;
use std::time::Duration;

use nautilus_core::{Condition, DeleteOptions, Entry, Error, Expiry, PutOptions, Result};

use crate::hints::Hint;
use crate::router::ShardedRegistry;
use crate::state::{Node, State};

impl ShardedRegistry {
    /// Imports into `node` up to `max` of the writes stand-ins hold for it, then
    /// removes each stand-in's copy (only if it is still that version). Stops at the
    /// first node error; the next round goes on.
    pub(crate) async fn hand_back(&self, node: &Arc<Node>, max: usize) -> usize {
        let mut done = 0;
        while done < max && node.is_up() {
            let batch = node.hints.batch(256.min(max - done));
            if batch.is_empty() {
                break;
            }
            let state = self.inner.state.load_full();
            for (key, hint) in batch {
                if self.hand_back_one(&state, node, &key, hint).await.is_err() {
                    return done;
                }
                done += 1;
            }
        }
        done
    }

    /// Imports one pending write into `node`, settles a refusal (see the module
    /// docs), forgets the write, and removes the stand-in's copy unless it was
    /// written again since.
    pub(crate) async fn hand_back_one(
        &self,
        state: &State,
        node: &Node,
        key: &str,
        hint: Hint,
    ) -> Result<()> {
        if !node.answer(node.registry.import(key, hint.entry.clone()).await)? {
            self.settle_refused(state, node, key, &hint.entry).await?;
        }
        node.hints.done(key, hint.entry.version);
        if hint.entry.is_tombstone() {
            // A repair comparing this node's old copy before this hand-back may have
            // given it to the other replicas, whose own tombstones a long outage let
            // them collect: the delete goes to them too (only if newer; best effort).
            for n in state.current.preference(key, self.inner.config.replicas) {
                let other = &state.nodes[n];
                if other.id != node.id && other.is_up() {
                    let _ = other.answer(other.registry.import(key, hint.entry.clone()).await);
                }
            }
        }
        hint.remove_standin_copy(key).await;
        Ok(())
    }

    /// A hand-back of `hint` that `node` refused (see the module docs).
    async fn settle_refused(
        &self,
        state: &State,
        node: &Node,
        key: &str,
        hint: &Entry,
    ) -> Result<()> {
        // A newer delete stays: tombstones are invisible to reads, so whether another
        // node (another router's stand-in) holds it too cannot be told, and applying
        // the hand-back over it undid another router's acknowledged delete (found
        // from outside, 300 of 300).
        let Some(held) = node.read_uncounted(key).await? else {
            return Ok(());
        };
        match &held {
            h if h.version == hint.version => {
                if h.value == hint.value && !hint.is_tombstone() {
                    return Ok(());
                }
            }
            // Written again between the import and this read: the later write stays.
            h if h.version < hint.version => return Ok(()),
            h => {
                let still_pending = node
                    .hints
                    .hint(key)
                    .is_some_and(|p| p.entry.version == hint.version);
                // With W = R (two or more), a record on one node alone was never
                // acknowledged; with W below R, it may have been.
                let config = &self.inner.config;
                if config.replicas < 2
                    || config.write_quorum < config.replicas
                    || !still_pending
                    || !self.alone_on(state, node, key, hint, h).await
                {
                    return Ok(());
                }
            }
        }
        let Some(entry) = self.apply_over(node, key, hint, &held).await? else {
            return Ok(());
        };
        // The other replicas hold the hint's record: the new version, same record,
        // replaces it (repair would otherwise, later).
        for n in state.current.preference(key, self.inner.config.replicas) {
            let other = &state.nodes[n];
            if other.id != node.id && other.is_up() {
                let _ = other.answer(other.registry.import(key, entry.clone()).await);
            }
        }
        Ok(())
    }

    /// Whether `held`, the live copy `node` refused `hint` for, is on that node alone
    /// while the key's other replicas still hold `hint`: a write that failed after
    /// reaching the node only. `false` whenever a node cannot be asked.
    async fn alone_on(
        &self,
        state: &State,
        node: &Node,
        key: &str,
        hint: &Entry,
        held: &Entry,
    ) -> bool {
        let replicas = state.current.preference(key, self.inner.config.replicas);
        // The other nodes first, the replicas after: another router's hand-back moves
        // its stand-in's copy to a replica before it removes it from the stand-in, so
        // a copy that leaves a stand-in between the two passes is on a replica in the
        // second (asked in node order, a replica before the stand-in, such a moving
        // copy was missed on both: found from outside, 2 to 3 acknowledged puts lost
        // in 30 to 60 keys).
        let order = state
            .nodes
            .iter()
            .enumerate()
            .filter(|(n, _)| !replicas.contains(n))
            .chain(
                state
                    .nodes
                    .iter()
                    .enumerate()
                    .filter(|(n, _)| replicas.contains(n)),
            );
        for (n, other) in order {
            if other.id == node.id {
                continue;
            }
            // A node that cannot be asked may hold the copy too (another router's
            // stand-in): nothing is known (found from outside: a put another router
            // acknowledged through a stand-in this one saw down was lost).
            if !other.is_up() {
                return false;
            }
            let replica = replicas.contains(&n);
            let Ok(theirs) = other.read_uncounted(key).await else {
                return false;
            };
            if replica {
                let holds_hint = match &theirs {
                    Some(e) => !hint.is_tombstone() && e.version == hint.version,
                    None => hint.is_tombstone(),
                };
                if !holds_hint {
                    return false;
                }
            } else if theirs.is_some_and(|e| e.version >= held.version) {
                return false;
            }
        }
        true
    }

    /// Writes `hint` on `node` over `held` only (a condition on its version), on the
    /// node's clock; the record written, or `None` if the node's copy changed since
    /// (that later write stays). A hinted record that has expired deletes `held`: the
    /// newest write of the key is gone.
    async fn apply_over(
        &self,
        node: &Node,
        key: &str,
        hint: &Entry,
        held: &Entry,
    ) -> Result<Option<Entry>> {
        let only_that = Condition::Version(held.version);
        // A tombstone's hint keeps the rest of the grace its delete asked for.
        let left = hint
            .expires_at
            .filter(|_| hint.is_tombstone())
            .map_or(0, |until| {
                until
                    .as_millis()
                    .saturating_sub(self.inner.clock.now().as_millis())
            });
        let grace = self.tombstone_grace(Duration::from_millis(left));
        let delete = || async {
            let options = DeleteOptions::default()
                .condition(only_that)
                .tombstone(grace);
            match node.registry.delete_opts(key, options).await {
                Ok(Some(v)) => Ok(Some(Entry::tombstone(
                    v,
                    Some(self.inner.clock.now().saturating_add(grace)),
                ))),
                Ok(None) | Err(Error::Conflict { .. }) => Ok(None),
                Err(e) => Err(node.error(e)),
            }
        };
        if hint.is_tombstone() {
            return delete().await;
        }
        let expiry = hint.expires_at.map_or(Expiry::Never, Expiry::At);
        let options = PutOptions::default().expiry(expiry).condition(only_that);
        match node
            .registry
            .put_opts(key, hint.value.clone(), options)
            .await
        {
            Ok(v) => Ok(Some(Entry::new(hint.value.clone(), v, hint.expires_at))),
            Err(Error::Conflict { .. }) => Ok(None),
            Err(Error::InvalidArgument { .. }) => delete().await,
            Err(e) => Err(node.error(e)),
        }
    }
}
