//! A replica that refuses the copy of a write its coordinator just made holds a copy
//! as new or newer. Three cases:
//! - The same write (a read repair or another copy got there first): it counts.
//! - A later write through the same coordinator (its copy overtook this one): the
//!   coordinator holds it or newer, so this write was applied and then superseded in
//!   the coordinator's own order. It counts.
//! - A write the coordinator has not seen: one that failed after reaching only that
//!   replica, in the same millisecond or from a node whose clock runs ahead.
//!   Acknowledging the write then would lose it to that copy on every later read and
//!   repair. Instead the coordinator takes the newer copy, which its version clock
//!   then sees, and the write is decided again over it (a compare-and-swap then fails
//!   on it, a put gets a newer version). A copy at the write's very version (a tie)
//!   is refused by the coordinator too: the write, decided again, replaces itself,
//!   and if the coordinator has moved on meanwhile it was superseded and counts.
//!
//! A newer delete cannot be read back (tombstones are invisible): if the coordinator
//! still holds the write, the delete did not come through it (it failed after
//! reaching that replica alone). Acknowledged as it is, the write would be undone by
//! the delete on the next repair; instead it is written again on that replica, whose
//! clock has seen the delete, the coordinator takes that copy, and the write is
//! decided again over it.
//!
//! The coordinator can also be behind the other way: a conditional write or a delete
//! that finds nothing on it first brings it up to the others' newest live copy
//! (`prime`); if it refuses that copy, it holds a newer delete (one that reached it
//! alone), which a delete or a touch then carries to the others (`bury`).

use std::future::Future;

use nautilus_core::{Entry, Error, Expiry, PutOptions, Result, Version};

use crate::replica::Target;
use crate::router::{ShardedRegistry, newest};
use crate::state::{Node, State};

/// How many times a write is decided again over a newer copy before it fails.
pub(crate) const MAX_REDECISIONS: usize = 3;

/// What a replica that refused a write's copy holds instead.
#[derive(Debug, Clone, PartialEq)]
enum Refusal {
    /// The very write: the copy counts.
    Same,
    /// This live copy, as new as the write or newer: decide the write again over it.
    Newer(Entry),
    /// A delete as new as the write or newer.
    Deleted,
}

/// Judges a refusal of `written` from what the replica answered a read with, `held`.
fn judge(written: &Entry, held: Option<Entry>) -> Refusal {
    match held {
        Some(e) if e.version == written.version && e.value == written.value => Refusal::Same,
        Some(e) if e.version >= written.version => Refusal::Newer(e),
        // Older than the write yet it refused: a newer delete came in between.
        Some(_) => Refusal::Deleted,
        // A delete refused for a newer delete: the record is gone either way.
        None if written.is_tombstone() => Refusal::Same,
        None => Refusal::Deleted,
    }
}

/// What a refused copy comes to, once the coordinator has been told of the newer one.
#[derive(Debug)]
pub(crate) enum Resolved {
    /// The copy counts: the same write, or one superseded through the coordinator.
    Counts,
    /// The copy fails.
    Failed(Error),
    /// The coordinator took a copy it had not seen: decide the write again. With
    /// `Some(v)`, the coordinator holds the write at `v` and the replica another copy
    /// as new: decide it again over itself.
    Again(Option<Version>),
}

/// Adds one copy's `Again` to what a write's copies asked so far: a tie outweighs a
/// plain `Again`, and the later of two ties wins.
pub(crate) fn merge(again: &mut Option<Option<Version>>, tie: Option<Version>) {
    *again = Some(tie.max(again.flatten()));
}

/// The calls that resolve a refusal: on the replica that refused, and on the
/// coordinator. Awaited ([`Awaited`]) or made without waiting (`crate::ready`).
pub(crate) trait Calls: Sync {
    /// What the replica holds.
    fn held(&self) -> impl Future<Output = Result<Option<Entry>>> + Send;
    /// Writes the record again on the replica, on its clock: its version there.
    fn rewrite(&self, entry: &Entry) -> impl Future<Output = Result<Version>> + Send;
    /// Imports a copy into the coordinator: whether it took it.
    fn adopt(&self, entry: Entry) -> impl Future<Output = Result<bool>> + Send;
    /// The version of the coordinator's live copy.
    fn holds(&self) -> impl Future<Output = Result<Option<Version>>> + Send;
}

/// Resolves a refusal of `written` (see the module docs).
pub(crate) async fn resolve(written: &Entry, calls: &impl Calls) -> Resolved {
    let held = match calls.held().await {
        Ok(held) => held,
        Err(e) => return Resolved::Failed(e),
    };
    match judge(written, held) {
        Refusal::Same => Resolved::Counts,
        Refusal::Newer(e) => {
            let newer = e.version;
            match calls.adopt(e).await {
                Ok(true) => Resolved::Again(None),
                Ok(false) if newer > written.version => Resolved::Counts,
                Ok(false) => Resolved::Again(Some(written.version)),
                Err(e) => Resolved::Failed(e),
            }
        }
        Refusal::Deleted => match calls.holds().await {
            // A delete that failed after reaching that replica alone: the record is
            // written again there, on a clock that has seen the delete, and the
            // coordinator takes that copy.
            Ok(Some(v)) if v == written.version => match calls.rewrite(written).await {
                Ok(w) => {
                    let copy = Entry::new(written.value.clone(), w, written.expires_at);
                    match calls.adopt(copy).await {
                        Ok(_) => Resolved::Again(Some(w)),
                        Err(e) => Resolved::Failed(e),
                    }
                }
                Err(e) => Resolved::Failed(e),
            },
            Ok(_) => Resolved::Counts,
            Err(e) => Resolved::Failed(e),
        },
    }
}

/// [`Calls`] awaited, each bounded by the router's call timeout.
pub(crate) struct Awaited<'a> {
    pub(crate) replica: &'a Node,
    pub(crate) coordinator: &'a Node,
    pub(crate) key: &'a str,
}

impl Calls for Awaited<'_> {
    async fn held(&self) -> Result<Option<Entry>> {
        self.replica.read_uncounted(self.key).await
    }

    async fn rewrite(&self, entry: &Entry) -> Result<Version> {
        let node = self.replica;
        let options = rewrite_options(entry);
        node.answer(
            node.registry
                .put_opts(self.key, entry.value.clone(), options)
                .await,
        )
    }

    async fn adopt(&self, entry: Entry) -> Result<bool> {
        let node = self.coordinator;
        node.answer(node.registry.import(self.key, entry).await)
    }

    async fn holds(&self) -> Result<Option<Version>> {
        let held = self.coordinator.read_uncounted(self.key).await?;
        Ok(held.map(|e| e.version))
    }
}

/// The options that write `entry`'s record again: unconditional, same expiry.
pub(crate) fn rewrite_options(entry: &Entry) -> PutOptions {
    PutOptions::default().expiry(entry.expires_at.map_or(Expiry::Never, Expiry::At))
}

/// What a write decided again [`MAX_REDECISIONS`] times fails with.
pub(crate) fn kept_refused(key: &str) -> Error {
    Error::Unavailable {
        node: "router".into(),
        source: format!(
            "the replicas of {key:?} kept holding copies newer than the write; try again"
        )
        .into(),
    }
}

/// What priming a coordinator found ([`ShardedRegistry::prime`]).
#[derive(Debug, PartialEq)]
pub(crate) enum Primed {
    /// No other replica holds a live copy.
    Nothing,
    /// The coordinator took the newest live copy the others hold: try again.
    Imported,
    /// The coordinator refused the others' newest live copy: it holds a newer
    /// version (a tombstone, when it had no live record).
    Refused(Entry),
}

/// How a write decided on the coordinator ended.
pub(crate) enum Decided<T> {
    /// Spread, with this answer.
    Done(T),
    /// A replica refused the write for a copy the coordinator had not seen, which it
    /// has taken now (or, `tie`, one at the write's own version): decide again. `ok`
    /// is what the write answers if, decided again over itself, it finds it was
    /// superseded.
    Again { tie: Option<Version>, ok: T },
}

impl ShardedRegistry {
    /// Brings the coordinator up to the newest live copy the other replicas hold, so
    /// that a condition or a delete decided on it sees the record even if it came
    /// back empty.
    pub(crate) async fn prime(
        &self,
        state: &State,
        key: &str,
        targets: &[Target],
        c: usize,
    ) -> Result<Primed> {
        let now = self.inner.clock.now();
        let others = targets
            .iter()
            .enumerate()
            .filter(|&(i, t)| i != c && t.standin_for.is_none());
        let mut found = None;
        for (_, t) in others {
            if let Ok(e) = Self::read_one(&state.nodes[t.node], key, now).await {
                found = newest(found, e);
            }
        }
        match found.filter(|e| !e.is_tombstone()) {
            Some(e) => {
                let node = &state.nodes[targets[c].node];
                if node.answer(node.registry.import(key, e.clone()).await)? {
                    return Ok(Primed::Imported);
                }
                // Refused: the coordinator holds this version or a newer one. Live, it
                // landed meanwhile (a read's repair carrying the same copy, a racing
                // write), and the caller decides on it; taken for a newer delete, the
                // delete buried the others' copy and left this one, which every read
                // then answered (found from outside after a node came back empty).
                Ok(match node.read_uncounted(key).await? {
                    Some(held) if held.version >= e.version => Primed::Imported,
                    _ => Primed::Refused(e),
                })
            }
            None => Ok(Primed::Nothing),
        }
    }

    /// Brings a coordinator that came back and is not verified yet (it may hold an
    /// old snapshot) up to the key's newest state before a condition, a delete or a
    /// touch is decided on it: a replicated read of the key, which asks another
    /// replica too, repairs the stale copy and carries a delete the coordinator
    /// missed to it. Else a compare-and-swap from the version every read answers
    /// conflicted with its older copy, and a put-if-absent with a record deleted
    /// since. Whether it read.
    pub(crate) async fn catch_up(
        &self,
        state: &State,
        key: &str,
        targets: &[Target],
        c: usize,
    ) -> Result<bool> {
        let node = &state.nodes[targets[c].node];
        // A restart the next check would see is seen here too: between the store
        // telling its new process and the check noticing, nothing is decided on it.
        if node.unverified() {
            self.get_replicated_uncounted(state, key).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Just before a conditional write or delete goes to its coordinator: catches the
    /// key up if the coordinator turned unverified since [`Self::catch_up`] looked
    /// (`caught_up`: that look did), so a restart another call noticed meanwhile
    /// (its refusal moving the Redis fence) is not decided on; the race left is the
    /// backend's own call. Whether the coordinator was verified: a write it fails
    /// after turning unverified under it is decided again.
    pub(crate) async fn look_again(
        &self,
        state: &State,
        key: &str,
        targets: &[Target],
        c: usize,
        caught_up: bool,
    ) -> Result<bool> {
        let verified = !state.nodes[targets[c].node].unverified();
        if !verified && !caught_up {
            self.get_replicated_uncounted(state, key).await?;
        }
        Ok(verified)
    }

    /// A conditional write or delete that `node`, its coordinator, answered with
    /// `first`: if that is an error and the node's store restarted under it, or
    /// refused it as its new process with its fence behind (a Redis server refuses a
    /// conditional write fenced against its predecessor, and only that refusal moves
    /// the fence: after a restart a check saw first, every write sent before it is
    /// refused), `again` decides it once more, after the key is caught up if the
    /// node is unverified (`verified`: it was not when the write was sent). Never
    /// on a coordinator marked down meanwhile: the catch-up did not ask it, and it
    /// would decide on its old copy. The catch-up's own failure is the outer error.
    pub(crate) async fn again_after_restart<T, Fut>(
        &self,
        state: &State,
        key: &str,
        node: &Node,
        verified: bool,
        first: Result<T>,
        again: impl FnOnce() -> Fut,
    ) -> Result<Result<T>>
    where
        Fut: Future<Output = Result<T>>,
    {
        let refused = first.as_ref().is_err_and(Error::is_restart_refusal);
        if first.is_ok() || !(refused || (verified && node.unverified())) {
            return Ok(first);
        }
        if node.unverified() {
            self.get_replicated_uncounted(state, key).await?;
        }
        if !node.is_up() {
            return Ok(first);
        }
        Ok(node.answer(again().await))
    }

    /// A delete that reached the coordinator alone (it refused the others' older live
    /// copy for its tombstone): carried to them as a tombstone just above that copy,
    /// and answered as the delete of it.
    pub(crate) async fn bury(
        &self,
        state: &State,
        key: &str,
        stale: &Entry,
        targets: &[Target],
        c: usize,
    ) -> Result<Option<Version>> {
        let tombstone = self.tombstone_above(stale);
        self.replicate(state, key, &tombstone, targets, c, Some(tombstone.version))
            .await
    }

    /// A delete just above `stale`, kept for the tombstone grace: it removes that
    /// copy wherever it is imported, and nothing newer.
    pub(crate) fn tombstone_above(&self, stale: &Entry) -> Entry {
        let version = Version::from_raw(stale.version.as_raw().saturating_add(1));
        let until = self
            .inner
            .clock
            .now()
            .saturating_add(self.inner.config.tombstone_grace);
        Entry::tombstone(version, Some(until))
    }

    /// Runs a write `once`, and again after a replica refused it for a copy the
    /// coordinator had not seen, up to [`MAX_REDECISIONS`] times. `once` gets the
    /// write's own version after a tie, for a conditional write to replace itself.
    pub(crate) async fn redecide<T, F, Fut>(&self, key: &str, mut once: F) -> Result<T>
    where
        F: FnMut(Option<Version>) -> Fut,
        Fut: std::future::Future<Output = Result<Decided<T>>>,
    {
        let mut tie: Option<(Version, T)> = None;
        for _ in 0..MAX_REDECISIONS {
            let answer = once(tie.as_ref().map(|(v, _)| *v)).await;
            match (answer, tie.take()) {
                (Ok(Decided::Done(answer)), _) => return Ok(answer),
                // Decided again over itself, the write found a later one: it was
                // applied, then superseded through the coordinator.
                (Err(Error::Conflict { .. }), Some((_, ok))) => return Ok(ok),
                (Err(e), _) => return Err(e),
                (Ok(Decided::Again { tie: t, ok }), _) => tie = t.map(|v| (v, ok)),
            }
        }
        Err(kept_refused(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nautilus_core::{Bytes, Version};

    fn live(v: u64, value: &'static str) -> Entry {
        Entry::new(
            Bytes::from_static(value.as_bytes()),
            Version::from_raw(v),
            None,
        )
    }

    #[test]
    fn the_same_write_counts_and_another_at_the_same_version_does_not() {
        let written = live(10, "v3");
        assert_eq!(judge(&written, Some(live(10, "v3"))), Refusal::Same);
        // A write that failed after reaching only this replica, in the same tick.
        assert_eq!(
            judge(&written, Some(live(10, "v2"))),
            Refusal::Newer(live(10, "v2"))
        );
        assert_eq!(
            judge(&written, Some(live(11, "v2"))),
            Refusal::Newer(live(11, "v2"))
        );
    }

    /// A replica that holds `held` and rewrites at version 20, and a coordinator that
    /// takes a newer copy if `takes` and holds a live copy at `holds`.
    struct Fake {
        held: Option<Entry>,
        takes: bool,
        holds: Option<u64>,
    }

    impl Calls for Fake {
        async fn held(&self) -> Result<Option<Entry>> {
            Ok(self.held.clone())
        }
        async fn rewrite(&self, _: &Entry) -> Result<Version> {
            Ok(Version::from_raw(REWRITTEN))
        }
        async fn adopt(&self, _: Entry) -> Result<bool> {
            Ok(self.takes)
        }
        async fn holds(&self) -> Result<Option<Version>> {
            Ok(self.holds.map(Version::from_raw))
        }
    }

    const REWRITTEN: u64 = 20;

    fn resolved(written: &Entry, held: Option<Entry>, takes: bool, holds: Option<u64>) -> Resolved {
        use futures_util::FutureExt;
        let calls = Fake { held, takes, holds };
        resolve(written, &calls).now_or_never().unwrap()
    }

    #[test]
    fn a_copy_the_coordinator_had_not_seen_decides_the_write_again() {
        let written = live(10, "a");
        assert!(matches!(
            resolved(&written, Some(live(12, "x")), true, None),
            Resolved::Again(None)
        ));
        assert!(matches!(
            resolved(&written, Some(live(10, "x")), false, Some(10)),
            Resolved::Again(Some(v)) if v == written.version
        ));
    }

    #[test]
    fn a_write_superseded_through_the_coordinator_counts() {
        // A later compare-and-swap built on this write overtook its copy: the
        // coordinator holds it already.
        let written = live(10, "a");
        assert!(matches!(
            resolved(&written, Some(live(12, "b")), false, Some(12)),
            Resolved::Counts
        ));
        // A delete through the coordinator overtook it: the coordinator no longer
        // holds the write.
        assert!(matches!(
            resolved(&written, None, false, None),
            Resolved::Counts
        ));
        assert!(matches!(
            resolved(&written, None, false, Some(13)),
            Resolved::Counts
        ));
        // A delete that did not come through the coordinator: written again over it.
        assert!(matches!(
            resolved(&written, None, false, Some(10)),
            Resolved::Again(Some(v)) if v.as_raw() == REWRITTEN
        ));
    }

    #[test]
    fn a_refusal_with_nothing_readable_is_a_newer_delete() {
        assert_eq!(judge(&live(10, "v"), None), Refusal::Deleted);
        assert_eq!(
            judge(&live(10, "v"), Some(live(9, "old"))),
            Refusal::Deleted
        );
        let tombstone = Entry::tombstone(Version::from_raw(10), None);
        assert_eq!(judge(&tombstone, None), Refusal::Same);
    }
}
