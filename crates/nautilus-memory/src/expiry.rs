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
//! A rewrite that moves a key's expiry later leaves the key where it is filed: early,
//! which is never late. Its record keeps how many buckets early (its lag), so that a
//! removal unfiles it exactly, and the sweep that takes it there files it at its
//! expiry. A key refreshed every second is then filed once per TTL, not moved between
//! two bucket sets at every write (two random accesses to sets as large as the
//! records with a TTL: 2.4x a plain put at 100k records, 3x at 1M). A rewrite to an
//! earlier bucket than the filing moves it.
//!
//! The index may be stale (a key removed in a race with its filing): the sweep asks
//! the record, which decides. It is never late: a key is filed at its bucket's start
//! or at its exact expiry, or earlier, and a key of a split bucket is filed once (a
//! rewrite moves its filing), so rewrites that move an expiry back and forth do not
//! pile up. A clock that goes back can leave two buckets split; each stays split
//! until the clock passes its end.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::key::{HKey, PassThrough};

/// Width of an expiry bucket, in milliseconds (a power of two).
const BUCKET_MS: u64 = 1024;

/// Nothing filed.
const NONE: u64 = u64::MAX;

/// The bucket of an expiry (`None` for 0, "never").
#[inline]
fn bucket(expires_at: u64) -> Option<u64> {
    (expires_at != 0).then_some(expires_at / BUCKET_MS)
}

/// The bucket a key expiring at `expires_at` is filed in, `lag` buckets early.
fn filed_bucket(expires_at: u64, lag: u16) -> Option<u64> {
    bucket(expires_at).map(|b| b.saturating_sub(u64::from(lag)))
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
    /// The split buckets' keys, by exact expiry (milliseconds); a set per instant,
    /// so that unfiling one of many keys sharing an instant costs O(1) (a list made
    /// deleting each of N such keys cost O(N): 22 us a delete at 100k, found from
    /// outside).
    fine: BTreeMap<u64, HashSet<HKey, PassThrough>>,
    /// Where each key is in `fine`: one filing per key, so rewrites that move an
    /// expiry back and forth within a split bucket do not pile up.
    fine_at: HashMap<HKey, u64, PassThrough>,
    /// The buckets split and not yet ended (one, unless the clock went back).
    split: BTreeSet<u64>,
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

    fn is_split(&self, expires_at: u64) -> bool {
        bucket(expires_at).is_some_and(|b| self.split.contains(&b))
    }

    /// Files `key` at its exact expiry `at`, in place of its earlier filing.
    fn file_fine(&mut self, key: &HKey, at: u64) {
        if let Some(was) = self.fine_at.insert(key.clone(), at) {
            if was == at {
                return;
            }
            self.unfile_fine_at(key, was);
        }
        self.fine.entry(at).or_default().insert(key.clone());
    }

    fn unfile_fine(&mut self, key: &HKey) {
        if let Some(was) = self.fine_at.remove(key) {
            self.unfile_fine_at(key, was);
        }
    }

    fn unfile_fine_at(&mut self, key: &HKey, at: u64) {
        if let Some(keys) = self.fine.get_mut(&at) {
            keys.remove(key);
            if keys.is_empty() {
                self.fine.remove(&at);
            }
        }
    }

    /// Files `key`, expiring at `at`: exactly in a split bucket, by bucket otherwise.
    /// Returns the instant the filing comes due (`NONE` for no expiry).
    fn file(&mut self, key: &HKey, at: u64) -> u64 {
        let Some(b) = bucket(at) else {
            return NONE;
        };
        if self.split.contains(&b) {
            self.file_fine(key, at);
            at
        } else {
            self.coarse.entry(b).or_default().insert(key.clone());
            b.saturating_mul(BUCKET_MS)
        }
    }

    /// Takes `key`'s filing in bucket `b` out: by instant if `b` is split, by
    /// bucket otherwise.
    fn unfile(&mut self, key: &HKey, b: u64) {
        if self.split.contains(&b) {
            self.unfile_fine(key);
        } else if let Some(set) = self.coarse.get_mut(&b) {
            set.remove(key);
            if set.is_empty() {
                self.coarse.remove(&b);
            }
        }
    }
}

/// Keys a sweep is to check, from [`ExpiryIndex::take_due`].
#[derive(Debug)]
pub(crate) struct Due {
    /// Keys that may have expired (or, from a bucket just split, may not yet).
    pub(crate) keys: Vec<HKey>,
    /// The split buckets: a checked key still live with an expiry in one goes back
    /// to the index through [`ExpiryIndex::file`], at its expiry.
    split: Vec<u64>,
}

impl Due {
    /// Whether a key still live at `expires_at` is to be filed again: its expiry is in
    /// a split bucket (elsewhere, the write that moved it filed it).
    pub(crate) fn refiles(&self, expires_at: u64) -> bool {
        bucket(expires_at).is_some_and(|b| self.split.contains(&b))
    }
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct ExpiryIndex {
    filed: Mutex<Filed>,
    /// The earliest instant something filed may be due (`NONE` if nothing is): a tick
    /// with nothing due costs one load per shard.
    next: AtomicU64,
}

impl Default for ExpiryIndex {
    fn default() -> Self {
        ExpiryIndex {
            filed: Mutex::default(),
            next: AtomicU64::new(NONE),
        }
    }
}

impl ExpiryIndex {
    /// Keeps the index in step with a change of a key's expiry from `old`, filed `lag`
    /// buckets before its own, to `new` (0: none). Returns the lag `new` is filed
    /// with, which its record keeps.
    pub(crate) fn reindex(&self, key: &HKey, old: u64, lag: u16, new: u64) -> u16 {
        let filed = filed_bucket(old, lag);
        let new_b = bucket(new);
        match (filed, new_b) {
            (None, None) => return 0,
            // A later expiry: the key stays where it is filed, early, which is never
            // late; the sweep that takes it there files it at its expiry. Moved at
            // each rewrite, it cost two random accesses to sets as large as the
            // records with a TTL: a refreshed key's put 2.4x (100k) to 3x (1M) a
            // plain put (found from outside).
            (Some(f), Some(n)) if n > f => {
                if let Ok(lag) = u16::try_from(n - f) {
                    return lag;
                }
            }
            (Some(f), Some(n)) if n == f => {
                // Filed at its bucket's start, a key is never late; filed at its exact
                // expiry (a split bucket), it is late if that moved earlier, which is
                // rare enough to take the lock for.
                if new < old {
                    let mut filed = self.filed.lock();
                    if filed.is_split(new) {
                        filed.file_fine(key, new);
                        self.next.fetch_min(new, Ordering::Relaxed);
                    }
                }
                return 0;
            }
            _ => {}
        }
        let mut index = self.filed.lock();
        if let Some(f) = filed {
            index.unfile(key, f);
        }
        let due = index.file(key, new);
        self.next.fetch_min(due, Ordering::Relaxed);
        0
    }

    /// Takes out the filing of `key`, which expires at `at` (0: never, not filed) and is
    /// filed `lag` buckets before it: a removal.
    pub(crate) fn unfile(&self, key: &HKey, at: u64, lag: u16) {
        if let Some(b) = filed_bucket(at, lag) {
            self.filed.lock().unfile(key, b);
        }
    }

    /// Files `key`, not filed, at its expiry `at` (0: never, which files nothing),
    /// with no lag: a new key, or one a sweep took from an early filing or a bucket
    /// it split.
    pub(crate) fn file(&self, key: &HKey, at: u64) {
        if at == 0 {
            return;
        }
        let due = self.filed.lock().file(key, at);
        self.next.fetch_min(due, Ordering::Relaxed);
    }

    pub(crate) fn is_due(&self, now: u64) -> bool {
        self.is_due_by(|| now)
    }

    /// [`ExpiryIndex::is_due`] at the time `now` answers, asked only if anything is
    /// filed: a write to a shard with no expiries does not read the clock.
    #[inline]
    pub(crate) fn is_due_by(&self, now: impl FnOnce() -> u64) -> bool {
        let next = self.next.load(Ordering::Relaxed);
        next != NONE && next <= now()
    }

    /// The keys to check at `now`, taken out of the index: every bucket that ended,
    /// a running bucket's keys the first time it is met (it is then split: the sweep
    /// files the live ones again at their exact expiries), and the split keys now
    /// due.
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
                // From now on a write filing a key in this bucket files it at its
                // exact expiry.
                filed.split.insert(b);
                break;
            }
        }
        while let Some(entry) = filed.fine.first_entry() {
            if *entry.key() > now {
                break;
            }
            let due = entry.remove();
            for key in &due {
                filed.fine_at.remove(key);
            }
            keys.extend(due);
        }
        // Every key filed in a bucket that ended was due, and is taken.
        filed.split.retain(|&b| !ended(b, now));
        self.next.store(filed.next(), Ordering::Relaxed);
        Due {
            keys,
            split: filed.split.iter().copied().collect(),
        }
    }

    pub(crate) fn clear(&self) {
        let mut filed = self.filed.lock();
        *filed = Filed::default();
        self.next.store(NONE, Ordering::Relaxed);
    }

    /// Filings held (keys by bucket plus keys by instant), for tests.
    #[cfg(test)]
    pub(crate) fn filings(&self) -> usize {
        let filed = self.filed.lock();
        filed.coarse.values().map(HashSet::len).sum::<usize>()
            + filed.fine.values().map(HashSet::len).sum::<usize>()
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
            index.reindex(&key(&format!("k{i}")), 0, 0, base + 10 + i % 500);
        }
        // The clock enters the bucket before any key is due: all are taken once...
        let due = index.take_due(base + 5);
        assert_eq!(due.keys.len(), 1000);
        assert!(due.refiles(base + 10) && !due.refiles(base + BUCKET_MS));
        // ...and filed again at their exact expiries by the sweep.
        let live: Vec<(HKey, u64)> = (0..1000)
            .map(|i| (key(&format!("k{i}")), base + 10 + i % 500))
            .collect();
        for (k, at) in live {
            index.file(&k, at);
        }
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
        index.reindex(&key("a"), 0, 0, base + 500);
        let due = index.take_due(base + 1);
        assert_eq!(due.keys.len(), 1);
        index.file(&key("a"), base + 500);
        // A new key, and a rewrite to an earlier instant in the same bucket.
        index.reindex(&key("b"), 0, 0, base + 300);
        index.reindex(&key("a"), base + 500, 0, base + 200);
        assert!(!index.is_due(base + 199));
        assert_eq!(index.take_due(base + 200).keys, vec![key("a")]);
        assert_eq!(index.take_due(base + 300).keys, vec![key("b")]);
        // "a" was filed once: its earlier filing left with the rewrite.
        assert!(index.take_due(base + 500).keys.is_empty());
        assert!(!index.is_due(u64::MAX - 1));
    }

    #[test]
    fn a_clock_that_went_back_still_files_an_earlier_expiry_in_a_split_bucket() {
        let index = ExpiryIndex::default();
        let b = 50 * BUCKET_MS;
        index.reindex(&key("k"), 0, 0, b + 900);
        assert_eq!(index.take_due(b + 1).keys, vec![key("k")]);
        index.file(&key("k"), b + 900);
        // The clock steps back a bucket, which is split in turn.
        index.reindex(&key("old"), 0, 0, b - 100);
        assert_eq!(index.take_due(b - 500).keys, vec![key("old")]);
        index.file(&key("old"), b - 100);
        // k moves earlier within its own split bucket: due at its new instant.
        index.reindex(&key("k"), b + 900, 0, b + 300);
        assert_eq!(index.take_due(b + 500).keys, vec![key("old"), key("k")]);
    }

    #[test]
    fn rewrites_back_and_forth_in_a_split_bucket_keep_one_filing_per_key() {
        let index = ExpiryIndex::default();
        let b = 9 * BUCKET_MS;
        index.reindex(&key("k"), 0, 0, b + 300);
        index.take_due(b + 1);
        index.file(&key("k"), b + 300);
        let mut at = b + 300;
        for i in 0..10_000 {
            let next = if i % 2 == 0 { b + 200 } else { b + 300 };
            index.reindex(&key("k"), at, 0, next);
            at = next;
        }
        assert_eq!(index.filings(), 1);
        // Moved to a later bucket it stays filed where it was; removed, it leaves.
        let lag = index.reindex(&key("k"), at, 0, b + 5 * BUCKET_MS);
        assert_eq!((lag, index.filings()), (5, 1));
        index.reindex(&key("k"), b + 5 * BUCKET_MS, lag, 0);
        assert_eq!(index.filings(), 0);
    }

    #[test]
    fn a_later_expiry_leaves_the_key_filed_early_and_its_lag_unfiles_it() {
        let index = ExpiryIndex::default();
        let b = 20 * BUCKET_MS;
        assert_eq!(index.reindex(&key("k"), 0, 0, b + 10), 0);
        // Refreshed a second at a time: no new filing, the lag grows.
        let mut at = b + 10;
        let mut lag = 0;
        for step in 1..=30 {
            let next = b + 10 + step * BUCKET_MS;
            lag = index.reindex(&key("k"), at, lag, next);
            at = next;
            assert_eq!(u64::from(lag), step);
        }
        assert_eq!(index.filings(), 1);
        // Removed, it is unfiled from where it is, not from its expiry's bucket.
        index.reindex(&key("k"), at, lag, 0);
        assert_eq!(index.filings(), 0);
        assert!(index.take_due(u64::MAX - 1).keys.is_empty());
    }

    #[test]
    fn a_key_filed_early_comes_due_at_its_filing_and_moves_only_when_earlier() {
        let index = ExpiryIndex::default();
        let b = 40 * BUCKET_MS;
        index.reindex(&key("k"), 0, 0, b + 10);
        let lag = index.reindex(&key("k"), b + 10, 0, b + 10 * BUCKET_MS);
        // Still due at the first bucket: early, never late.
        assert!(index.is_due(b));
        // An expiry between the filing and the last one keeps the filing.
        let lag = index.reindex(&key("k"), b + 10 * BUCKET_MS, lag, b + 3 * BUCKET_MS);
        assert_eq!((lag, index.filings()), (3, 1));
        // One before the filing's bucket moves it there.
        let lag = index.reindex(&key("k"), b + 3 * BUCKET_MS, lag, b - 2 * BUCKET_MS);
        assert_eq!((lag, index.filings()), (0, 1));
        assert!(index.is_due(b - 2 * BUCKET_MS));
        assert_eq!(index.take_due(b - BUCKET_MS).keys, vec![key("k")]);
        assert_eq!(index.filings(), 0);
    }

    #[test]
    fn a_lag_past_what_the_record_keeps_moves_the_key() {
        let index = ExpiryIndex::default();
        let b = 3 * BUCKET_MS;
        index.reindex(&key("k"), 0, 0, b);
        let far = b + (u64::from(u16::MAX) + 1) * BUCKET_MS;
        assert_eq!(index.reindex(&key("k"), b, 0, far), 0);
        assert_eq!(index.filings(), 1);
        assert!(
            index.take_due(far - 1).keys.is_empty(),
            "moved to its own bucket"
        );
        assert_eq!(index.take_due(far).keys, vec![key("k")]);
    }

    #[test]
    fn a_clock_at_the_top_of_its_range_ends_every_bucket() {
        let index = ExpiryIndex::default();
        index.reindex(&key("a"), 0, 0, u64::MAX - 1);
        let due = index.take_due(u64::MAX);
        assert_eq!(due.keys.len(), 1);
        assert!(!due.refiles(u64::MAX - 1));
        assert!(!index.is_due(u64::MAX - 1));
    }
}
