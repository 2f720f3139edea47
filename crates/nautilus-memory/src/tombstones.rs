//! Tombstones: the versions of deletes that must keep older copies out (replicated
//! deletes, imported tombstones), kept beside the cache so that they are never
//! counted, charged against the capacity or evicted, and collected after their grace.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

/// One shard's tombstones: key -> (version, collect at in Unix ms).
///
/// Lock order: a caller may hold the shard's cache lock when it takes this one, never
/// the other way round.
#[derive(Debug, Default)]
pub(crate) struct Tombstones {
    /// How many are held, so that the common case (none) costs one load.
    len: AtomicUsize,
    map: Mutex<Map>,
}

#[derive(Debug, Default)]
struct Map {
    entries: HashMap<Box<str>, (u64, u64)>,
    /// Collect expired tombstones when the map grows past this.
    purge_at: usize,
}

impl Tombstones {
    /// The version of `key`'s tombstone, if it has one not yet collected at `now`.
    #[inline]
    pub(crate) fn version(&self, key: &str, now: u64) -> Option<u64> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let map = self.map.lock();
        map.entries
            .get(key)
            .filter(|(_, until)| *until > now)
            .map(|(v, _)| *v)
    }

    /// Keeps a tombstone of `version` for `key` until `until`, unless a newer one is
    /// already there.
    pub(crate) fn insert(&self, key: &str, version: u64, until: u64, now: u64) {
        let mut map = self.map.lock();
        if map.entries.len() >= map.purge_at {
            map.entries.retain(|_, (_, until)| *until > now);
            map.purge_at = (map.entries.len() * 2).max(1024);
        }
        let slot = map.entries.entry(key.into()).or_insert((0, 0));
        if version >= slot.0 {
            *slot = (version, until);
        }
        self.len.store(map.entries.len(), Ordering::Relaxed);
    }

    /// Drops `key`'s tombstone if it is older than `version` (a newer record landed).
    pub(crate) fn supersede(&self, key: &str, version: u64) {
        if self.len.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut map = self.map.lock();
        if map.entries.get(key).is_some_and(|(v, _)| *v < version) {
            map.entries.remove(key);
            self.len.store(map.entries.len(), Ordering::Relaxed);
        }
    }

    /// Collects every tombstone whose grace has passed.
    pub(crate) fn purge(&self, now: u64) {
        if self.len.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut map = self.map.lock();
        map.entries.retain(|_, (_, until)| *until > now);
        self.len.store(map.entries.len(), Ordering::Relaxed);
    }

    pub(crate) fn clear(&self) {
        let mut map = self.map.lock();
        map.entries.clear();
        self.len.store(0, Ordering::Relaxed);
    }

    /// How many are held (collected or not).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tombstone_counts_until_its_grace_passes() {
        let t = Tombstones::default();
        assert_eq!(t.version("k", 0), None);
        t.insert("k", 10, 100, 0);
        assert_eq!(t.version("k", 99), Some(10));
        assert_eq!(t.version("k", 100), None, "collected at its time");
        t.purge(100);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn an_older_tombstone_never_replaces_a_newer_one() {
        let t = Tombstones::default();
        t.insert("k", 10, 100, 0);
        t.insert("k", 5, 1000, 0);
        assert_eq!(t.version("k", 50), Some(10));
        t.supersede("k", 10);
        assert_eq!(
            t.version("k", 50),
            Some(10),
            "an equal version does not supersede"
        );
        t.supersede("k", 11);
        assert_eq!(t.version("k", 50), None);
    }

    #[test]
    fn growth_collects_the_expired() {
        let t = Tombstones::default();
        for i in 0..5000 {
            t.insert(&format!("k{i}"), 1, 10, 0);
        }
        for i in 0..4000 {
            t.insert(&format!("late{i}"), 1, 1000, 20);
        }
        assert!(
            t.len() <= 4000,
            "expired tombstones were collected: {}",
            t.len()
        );
        assert_eq!(t.version("late3999", 20), Some(1));
    }
}
