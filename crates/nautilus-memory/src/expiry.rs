//! One shard's expiry index: which keys may expire when, so that a sweep takes the
//! due ones instead of scanning the shard.
//!
//! Keys are bucketed by expiry (`BUCKET_MS` wide), so that a rewrite that stays in
//! its bucket (the common case) does not touch the index. A bucket the clock has
//! reached but not passed (the running bucket) is split once, by its keys' exact
//! expiries read from their records, and its keys are then taken as each comes
//! due. Before, the running bucket was copied whole by every sweep, and a sweep ran
//! at every write into a full shard until the bucket ended: up to a second of
//! writes each paying a pass over the bucket (500x a put's cost at 100k records,
//! 8,900x at 1M with a capacity set at run time; found from outside).
//!
//! The index may be stale (a key rewritten, removed or moved to another bucket since
//! it was filed): the sweep asks the record, which decides. It is never late: a key
//! is filed at its bucket's start or at its exact expiry, or earlier.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::key::{HKey, PassThrough};

/// Width of an expiry bucket, in milliseconds (a power of two).
const BUCKET_MS: u64 = 1024;

/// No bucket (split or due).
const NONE: u64 = u64::MAX;

/// The bucket of an expiry (`None` for 0, "never").
#[inline]
fn bucket(expires_at: u64) -> Option<u64> {
    (expires_at != 0).then_some(expires_at / BUCKET_MS)
}

/// Whether bucket `b` has ended at `now` (saturating: a bucket that ends past the
/// clock's range ends at its top, where nothing is live).
fn ended(b: u64, now: u64) -> bool {
    (b + 1).saturating_mul(BUCKET_MS) <= now.saturating_add(1)
}

#[derive(Debug, Default)]
struct Filed {
    /// Keys by expiry bucket.
    coarse: BTreeMap<u64, HashSet<HKey, PassThrough>>,
    /// The split bucket's keys, by exact expiry (milliseconds).
    fine: BTreeMap<u64, Vec<HKey>>,
}

impl Filed {
    /// The earliest instant something filed may be due.
    fn next(&self) -> u64 {
        let coarse = self
            .coarse
            .first_key_value()
            .map_or(NONE, |(b, _)| b.saturating_mul(BUCKET_MS));
        let fine = self.fine.first_key_value().map_or(NONE, |(t, _)| *t);
        coarse.min(fine)
    }
}

/// Keys a sweep is to check, from [`ExpiryIndex::take_due`].
#[derive(Debug)]
pub(crate) struct Due {
    /// Keys that may have expired (or, from the running bucket, may not yet).
    pub(crate) keys: Vec<HKey>,
    /// The split bucket: a checked key still live with an expiry in it goes back to
    /// the index through [`ExpiryIndex::refile`].
    split: u64,
}

impl Due {
    /// Whether a key still live at `expires_at` is to be filed again: its expiry is in
    /// the split bucket (elsewhere, the write that moved it filed it).
    pub(crate) fn refiles(&self, expires_at: u64) -> bool {
        self.split != NONE && bucket(expires_at) == Some(self.split)
    }
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct ExpiryIndex {
    filed: Mutex<Filed>,
    /// The earliest instant something filed may be due (`NONE` if nothing is): a tick
    /// with nothing due costs one load per shard.
    next: AtomicU64,
    /// The bucket whose keys are in `fine` (`NONE` if none).
    split: AtomicU64,
}

impl Default for ExpiryIndex {
    fn default() -> Self {
        ExpiryIndex {
            filed: Mutex::default(),
            next: AtomicU64::new(NONE),
            split: AtomicU64::new(NONE),
        }
    }
}

impl ExpiryIndex {
    /// Keeps the index in step with a change of a key's expiry (0: none).
    pub(crate) fn reindex(&self, key: &HKey, old: u64, new: u64) {
        let (old_b, new_b) = (bucket(old), bucket(new));
        if old_b == new_b {
            // Filed at its bucket's start, it is never late; filed at its exact
            // expiry (the split bucket), it is late if that moved earlier.
            if new < old && new_b.is_some_and(|b| b == self.split.load(Ordering::Acquire)) {
                self.filed
                    .lock()
                    .fine
                    .entry(new)
                    .or_default()
                    .push(key.clone());
                self.next.fetch_min(new, Ordering::Relaxed);
            }
            return;
        }
        let mut filed = self.filed.lock();
        if let Some(b) = old_b
            && let Some(set) = filed.coarse.get_mut(&b)
        {
            set.remove(key);
            if set.is_empty() {
                filed.coarse.remove(&b);
            }
        }
        if let Some(b) = new_b {
            if b == self.split.load(Ordering::Acquire) {
                filed.fine.entry(new).or_default().push(key.clone());
                self.next.fetch_min(new, Ordering::Relaxed);
            } else {
                filed.coarse.entry(b).or_default().insert(key.clone());
                self.next
                    .fetch_min(b.saturating_mul(BUCKET_MS), Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn is_due(&self, now: u64) -> bool {
        self.next.load(Ordering::Relaxed) <= now
    }

    /// The keys to check at `now`, taken out of the index: every bucket that ended,
    /// the running bucket's keys the first time it is met (it is then split: the
    /// sweep files the live ones again at their exact expiries), and the split keys
    /// now due.
    pub(crate) fn take_due(&self, now: u64) -> Due {
        let mut filed = self.filed.lock();
        let mut keys = Vec::new();
        while let Some((&b, _)) = filed.coarse.first_key_value() {
            if b.saturating_mul(BUCKET_MS) > now {
                break;
            }
            let Some((_, set)) = filed.coarse.pop_first() else {
                break;
            };
            keys.extend(set);
            if !ended(b, now) {
                // Under the lock: a write filing a key in this bucket from now on
                // files it at its exact expiry.
                self.split.store(b, Ordering::Release);
                break;
            }
        }
        while let Some(entry) = filed.fine.first_entry() {
            if *entry.key() > now {
                break;
            }
            keys.extend(entry.remove());
        }
        let split = self.split.load(Ordering::Acquire);
        if split != NONE && ended(split, now) {
            // Every key filed in it was due, and is taken.
            self.split.store(NONE, Ordering::Release);
        }
        self.next.store(filed.next(), Ordering::Relaxed);
        Due {
            keys,
            split: self.split.load(Ordering::Acquire),
        }
    }

    /// Files again keys a sweep found live, at their exact expiries (in the split
    /// bucket: see [`Due::refiles`]).
    pub(crate) fn refile(&self, keys: Vec<(HKey, u64)>) {
        if keys.is_empty() {
            return;
        }
        let mut filed = self.filed.lock();
        for (key, expires_at) in keys {
            filed.fine.entry(expires_at).or_default().push(key);
        }
        self.next.store(filed.next(), Ordering::Relaxed);
    }

    pub(crate) fn clear(&self) {
        let mut filed = self.filed.lock();
        filed.coarse.clear();
        filed.fine.clear();
        self.split.store(NONE, Ordering::Release);
        self.next.store(NONE, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> HKey {
        HKey::new(s)
    }

    #[test]
    fn a_running_bucket_is_taken_once_then_key_by_key() {
        let index = ExpiryIndex::default();
        let base = 100 * BUCKET_MS;
        for i in 0..1000 {
            index.reindex(&key(&format!("k{i}")), 0, base + 10 + i % 500);
        }
        // The clock enters the bucket before any key is due: all are taken once...
        let due = index.take_due(base + 5);
        assert_eq!(due.keys.len(), 1000);
        assert!(due.refiles(base + 10) && !due.refiles(base + BUCKET_MS));
        // ...and filed again at their exact expiries by the sweep.
        let live: Vec<(HKey, u64)> = (0..1000)
            .map(|i| (key(&format!("k{i}")), base + 10 + i % 500))
            .collect();
        index.refile(live);
        assert!(
            !index.is_due(base + 9),
            "nothing is due before the first expiry"
        );
        assert!(index.take_due(base + 9).keys.is_empty());
        // Then each comes due on its own.
        assert_eq!(index.take_due(base + 10).keys.len(), 2);
        assert_eq!(index.take_due(base + 11).keys.len(), 2);
        assert_eq!(index.take_due(base + 509).keys.len(), 996);
        assert!(!index.is_due(base + BUCKET_MS * 5));
    }

    #[test]
    fn keys_written_into_the_split_bucket_are_filed_at_their_expiry() {
        let index = ExpiryIndex::default();
        let base = 7 * BUCKET_MS;
        index.reindex(&key("a"), 0, base + 500);
        let due = index.take_due(base + 1);
        assert_eq!(due.keys.len(), 1);
        index.refile(vec![(key("a"), base + 500)]);
        // A new key, and a rewrite to an earlier instant in the same bucket.
        index.reindex(&key("b"), 0, base + 300);
        index.reindex(&key("a"), base + 500, base + 200);
        assert!(!index.is_due(base + 199));
        assert_eq!(index.take_due(base + 200).keys, vec![key("a")]);
        assert_eq!(index.take_due(base + 300).keys, vec![key("b")]);
        // The stale filing of "a" comes due too; the sweep finds it gone.
        assert_eq!(index.take_due(base + 500).keys, vec![key("a")]);
        assert!(!index.is_due(u64::MAX - 1));
    }

    #[test]
    fn a_clock_at_the_top_of_its_range_ends_every_bucket() {
        let index = ExpiryIndex::default();
        index.reindex(&key("a"), 0, u64::MAX - 1);
        let due = index.take_due(u64::MAX);
        assert_eq!(due.keys.len(), 1);
        assert!(!due.refiles(u64::MAX - 1));
        assert!(!index.is_due(u64::MAX - 1));
    }
}
