//! Hand-backs: the writes a stand-in took while a replica was down, kept by the
//! router (key -> the newest entry written, and which node holds it) until the
//! replica is back and has imported them.
//!
//! Reads of a replica with pending hand-backs answer the newer of the replica's copy
//! and the hint, so a returning node never hides a write behind its stale copy; a
//! write to such a key hands its hint back first, so the replica's version clock
//! has observed it and the write is newer.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use nautilus_core::Entry;
use parking_lot::Mutex;

use crate::state::Node;

/// One pending hand-back.
#[derive(Clone)]
pub(crate) struct Hint {
    pub(crate) entry: Entry,
    /// The stand-in that holds the entry.
    pub(crate) holder: Arc<Node>,
}

impl Hint {
    /// Removes the stand-in's copy of `key` once the replica has the write, unless it
    /// was written since (a tombstone's stays: it is collected after its grace).
    /// Best effort: a copy left behind is found by repair.
    pub(crate) async fn remove_standin_copy(&self, key: &str) {
        if !self.entry.is_tombstone() {
            let _ = self.holder.remove_copy(key, self.entry.version).await;
        }
    }
}

/// One node's pending hand-backs.
#[derive(Default)]
pub(crate) struct Hints {
    len: AtomicUsize,
    map: Mutex<HashMap<String, Hint>>,
    /// Whether a background hand-back to this node is running.
    draining: std::sync::atomic::AtomicBool,
    /// Writes in flight that took a stand-in for this node (see [`InFlight`]).
    standing_in: AtomicUsize,
    /// Writes in flight that this node coordinates (see [`InFlight`]).
    coordinating: AtomicUsize,
}

/// A write's registration with the nodes of its key, held until it has recorded its
/// hand-backs: with its coordinator, and with each down replica it takes a stand-in
/// for. Two gates read them, so that one router never has two nodes decide
/// conditions on the same key at once.
///
/// **A replica back up.** A write decided on one replica while another is down sends
/// that one's copy to a stand-in, and records the hand-back only at its end. If the
/// replica is marked up in between, the next write of the key may be coordinated by
/// it, find no hand-back to make first, and decide its condition on a copy the first
/// write already replaced: two compare-and-swaps from the same version both won (21
/// times in 27 runs of an outside test freezing a node under swap loops, every one
/// right after the node came back). So a write registers with each replica it stands
/// in for and then checks that the replica is still down; a replica that is up
/// coordinates only once no write is registered with it, then hands back what they
/// recorded.
///
/// **A replica going down.** A write coordinated by a replica that is marked down
/// while it runs (a call of another write timed out) is still deciding there; the
/// next replica, which now coordinates the key, would decide the same condition on
/// a copy that write has not reached yet (3 double wins in 47 runs of an outside
/// test whose node's calls hung while its pings answered). So a write registers with
/// its coordinator and then checks that it is still up; a replica coordinating in
/// place of a down one waits until no write is registered with that one.
///
/// Every registration, check and health change is sequentially consistent, so a
/// write that found a node in one state is seen by every write that found it in the
/// other afterwards.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    standing_in: smallvec::SmallVec<[Arc<Hints>; 2]>,
    coordinating: Option<Arc<Hints>>,
}

impl InFlight {
    /// Registers with each of `replicas`, as standing in for them.
    pub(crate) fn stand_in<'a>(replicas: impl Iterator<Item = &'a Arc<Hints>>) -> Self {
        InFlight {
            standing_in: replicas
                .map(|h| {
                    h.standing_in.fetch_add(1, Ordering::SeqCst);
                    Arc::clone(h)
                })
                .collect(),
            coordinating: None,
        }
    }

    /// Registers with `node` as the write's coordinator (once per registration).
    pub(crate) fn coordinate(&mut self, node: &Arc<Hints>) {
        debug_assert!(self.coordinating.is_none(), "one coordinator per write");
        node.coordinating.fetch_add(1, Ordering::SeqCst);
        self.coordinating = Some(Arc::clone(node));
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        for h in &self.standing_in {
            h.standing_in.fetch_sub(1, Ordering::SeqCst);
        }
        if let Some(h) = &self.coordinating {
            h.coordinating.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl fmt::Debug for Hints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hints").field("len", &self.len()).finish()
    }
}

impl Hints {
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether writes that took a stand-in for this node are in flight (see
    /// [`InFlight`]).
    #[inline]
    pub(crate) fn standing_in(&self) -> bool {
        self.standing_in.load(Ordering::SeqCst) > 0
    }

    /// Whether writes this node coordinates are in flight (see [`InFlight`]).
    #[inline]
    pub(crate) fn coordinating(&self) -> bool {
        self.coordinating.load(Ordering::SeqCst) > 0
    }

    /// Claims the node's background hand-back; `false` if one is running.
    pub(crate) fn claim(&self) -> bool {
        !self.draining.swap(true, Ordering::AcqRel)
    }

    /// Ends the background hand-back [`Hints::claim`] started.
    pub(crate) fn release(&self) {
        self.draining.store(false, Ordering::Release);
    }

    /// Records that `holder` took `entry` for `key`, unless a newer hint is there.
    /// Refused (`false`) once `max` hints are pending and `key` is not among them.
    pub(crate) fn record(&self, key: &str, entry: Entry, holder: Arc<Node>, max: usize) -> bool {
        let mut map = self.map.lock();
        match map.get_mut(key) {
            Some(h) => {
                if entry.version > h.entry.version {
                    *h = Hint { entry, holder };
                }
            }
            None => {
                if map.len() >= max {
                    return false;
                }
                map.insert(key.to_owned(), Hint { entry, holder });
                self.len.store(map.len(), Ordering::Relaxed);
            }
        }
        true
    }

    /// Whether `key` has a pending hint.
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.len() > 0 && self.map.lock().contains_key(key)
    }

    /// The pending hint of `key`, if any.
    #[inline]
    pub(crate) fn hint(&self, key: &str) -> Option<Hint> {
        if self.len() == 0 {
            return None;
        }
        self.map.lock().get(key).cloned()
    }

    /// Forgets `key`'s hint if it is still the one at `version` (a newer one that
    /// arrived meanwhile stays for the next hand-back).
    pub(crate) fn done(&self, key: &str, version: nautilus_core::Version) {
        let mut map = self.map.lock();
        if map.get(key).is_some_and(|h| h.entry.version == version) {
            map.remove(key);
            self.len.store(map.len(), Ordering::Relaxed);
        }
    }

    /// Forgets `key`'s hint if the node now holds `version`, as new or newer (a write
    /// that reached the node itself), and returns it: the node has no use for it, and
    /// a read must not take the older hint over what the node holds, which it cannot
    /// see when that is a tombstone or an expired record.
    #[inline]
    pub(crate) fn supersede(&self, key: &str, version: nautilus_core::Version) -> Option<Hint> {
        // Inline up to here: every replicated write asks, twice, and almost always
        // nothing is pending.
        if self.len() == 0 {
            return None;
        }
        self.supersede_pending(key, version)
    }

    #[inline(never)]
    fn supersede_pending(&self, key: &str, version: nautilus_core::Version) -> Option<Hint> {
        let mut map = self.map.lock();
        if map.get(key).is_none_or(|h| h.entry.version > version) {
            return None;
        }
        let gone = map.remove(key);
        self.len.store(map.len(), Ordering::Relaxed);
        gone
    }

    /// Up to `n` pending hints, to hand back.
    pub(crate) fn batch(&self, n: usize) -> Vec<(String, Hint)> {
        self.map
            .lock()
            .iter()
            .take(n)
            .map(|(k, h)| (k.clone(), h.clone()))
            .collect()
    }

    pub(crate) fn clear(&self) {
        let mut map = self.map.lock();
        map.clear();
        self.len.store(0, Ordering::Relaxed);
    }
}
