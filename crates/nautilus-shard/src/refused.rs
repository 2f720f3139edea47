//! A replica that refuses the copy of a write its coordinator just made holds a copy
//! as new or newer: the same write (a read repair or another copy got there first),
//! or a write the coordinator's clock had not seen: one that failed after reaching
//! only that replica, in the same millisecond or from a node whose clock runs ahead.
//! Acknowledging the write then would lose it to that copy on every later read and
//! repair. Instead the coordinator takes the newer copy, which its version clock then
//! sees, and the write is decided again over it (a compare-and-swap then fails on
//! it, a put gets a newer version). A newer delete cannot be read back (tombstones
//! are invisible), so a write refused for one is not acknowledged by that replica.
//!
//! The coordinator can also be behind the other way: a conditional write or a delete
//! that finds nothing on it first brings it up to the others' newest live copy
//! (`prime`); if it refuses that copy, it holds a newer delete (one that reached it
//! alone), which a delete or a touch then carries to the others (`bury`).

use nautilus_core::{Entry, Error, Result, Version};

use crate::replica::Target;
use crate::router::{ShardedRegistry, newest};
use crate::state::State;

/// How many times a write is decided again over a newer copy before it fails.
pub(crate) const MAX_REDECISIONS: usize = 3;

/// What a replica that refused a write's copy holds instead.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Refusal {
    /// The very write: the copy counts.
    Same,
    /// This live copy, as new as the write or newer: decide the write again over it.
    Newer(Entry),
    /// A delete as new as the write or newer.
    Deleted,
}

/// Judges a refusal of `written` from what the replica answered a read with, `held`.
pub(crate) fn judge(written: &Entry, held: Option<Entry>) -> Refusal {
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

/// What a copy refused for a newer delete fails with.
pub(crate) fn deleted(node: &str) -> Error {
    Error::Unavailable {
        node: node.to_owned(),
        source: "the replica holds a delete of the key newer than the write, which it \
                 refused; the write is not acknowledged there"
            .into(),
    }
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
    /// A replica refused the write (at version `ours`) for this copy, as new or
    /// newer: the coordinator (node `node`) takes it and the write is decided again.
    Again {
        node: usize,
        newer: Entry,
        ours: Version,
    },
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
                Ok(
                    if node.answer(node.registry.import(key, e.clone()).await)? {
                        Primed::Imported
                    } else {
                        Primed::Refused(e)
                    },
                )
            }
            None => Ok(Primed::Nothing),
        }
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
        let version = Version::from_raw(stale.version.as_raw().saturating_add(1));
        let until = self
            .inner
            .clock
            .now()
            .saturating_add(self.inner.config.tombstone_grace);
        let tombstone = Entry::tombstone(version, Some(until));
        self.replicate(state, key, &tombstone, targets, c, Some(version))
            .await
    }

    /// Runs a write `once`, and again over each newer copy a replica refused it for,
    /// up to [`MAX_REDECISIONS`] times. `once` gets the write's own version when the
    /// coordinator refused that copy (a tie at that version).
    pub(crate) async fn redecide<T, F, Fut>(
        &self,
        state: &State,
        key: &str,
        mut once: F,
    ) -> Result<T>
    where
        F: FnMut(Option<Version>) -> Fut,
        Fut: std::future::Future<Output = Result<Decided<T>>>,
    {
        let mut tie = None;
        for _ in 0..MAX_REDECISIONS {
            match once(tie).await? {
                Decided::Done(answer) => return Ok(answer),
                Decided::Again { node, newer, ours } => {
                    tie = (!Self::adopt(state, node, key, newer).await?).then_some(ours);
                }
            }
        }
        Err(kept_refused(key))
    }

    /// The coordinator takes a newer copy a replica refused its write for, so that
    /// the write is decided again over it, on a clock that has seen its version.
    /// Whether it took it: not for a copy at the very version of the write (the same
    /// millisecond on two nodes), which the write, decided again over itself, then
    /// passes.
    async fn adopt(state: &State, node: usize, key: &str, newer: Entry) -> Result<bool> {
        let node = &state.nodes[node];
        node.answer(node.registry.import(key, newer).await)
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
