//! Tombstones: the versions of deletes that must keep older copies out (replicated
//! deletes, imported tombstones), kept beside the cache so that they are never
//! counted, charged against the capacity or evicted, and collected after their grace.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

/// One shard's tombstones: key -> (version, collect at in Unix ms), and the times
/// they fall due, earliest first, so that collecting them costs time in proportion
/// to what is due, not to what is held. (A pass over every tombstone on each
/// collection made `count` and `stats`, which collect first, cost 2 ms a call at
/// 500k tombstones held, from outside.)
///
/// Lock order: a caller may hold the shard's cache lock when it takes this one, never
/// the other way round.
#[derive(Debug)]
pub(crate) struct Tombstones {
    /// How many are held, so that the common case (none) costs one load.
    len: AtomicUsize,
    /// When the earliest entry of the due queue falls due (`u64::MAX`: none), so that
    /// a collection with nothing due costs one load too.
    next_due: AtomicU64,
    map: Mutex<Map>,
}

impl Default for Tombstones {
    fn default() -> Self {
        Tombstones {
            len: AtomicUsize::new(0),
            next_due: AtomicU64::new(u64::MAX),
            map: Mutex::new(Map::default()),
        }
    }
}

/// The tombstone map's hasher: xxh3 of the key's bytes in one call, with a fixed seed,
/// as the cache hashes keys. (std's SipHash, twice per insert, and the map's growth
/// were a fifth of an R=2 delete's instructions over memory nodes.) Only `str` keys
/// are hashed here, whose `Hash` writes the bytes then a `0xff` terminator: the bytes
/// alone make the hash.
#[derive(Debug, Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        self.0 ^= crate::key::hash_bytes(bytes);
    }

    #[inline]
    fn write_u8(&mut self, _terminator: u8) {}

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Debug, Default)]
struct Map {
    entries: HashMap<Arc<str>, (u64, u64), BuildHasherDefault<KeyHasher>>,
    /// (collect at, key) of every tombstone kept, earliest first. An entry whose key
    /// now holds another tombstone, or none, is stale and skipped when it falls due.
    due: BinaryHeap<Reverse<(u64, Arc<str>)>>,
}

impl Map {
    /// Collects the tombstones due at `now`.
    fn collect(&mut self, now: u64) {
        while let Some(Reverse((until, _))) = self.due.peek() {
            if *until > now {
                break;
            }
            let Some(Reverse((until, key))) = self.due.pop() else {
                break;
            };
            // Only if the key's tombstone is this one (not one kept longer since).
            if self.entries.get(&key).is_some_and(|(_, u)| *u == until) {
                self.entries.remove(&key);
            }
        }
        // Stale entries (superseded, replaced) are dropped once they outnumber the
        // tombstones held, so the queue stays within twice the map.
        if self.due.len() > 2 * self.entries.len() + 1024 {
            let entries = &self.entries;
            self.due
                .retain(|Reverse((until, key))| entries.get(key).is_some_and(|(_, u)| u == until));
        }
    }

    fn next_due(&self) -> u64 {
        self.due
            .peek()
            .map_or(u64::MAX, |Reverse((until, _))| *until)
    }
}

impl Tombstones {
    /// The version of `key`'s tombstone, if it has one not yet collected at the time
    /// `now` answers, asked only if any tombstone is held (an import of a shard that
    /// holds none reads no clock).
    #[inline]
    pub(crate) fn version(&self, key: &str, now: impl FnOnce() -> u64) -> Option<u64> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let now = now();
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
        map.collect(now);
        // One hash of the key: a new tombstone (the common case) needs the shared
        // key anyway.
        let key: Arc<str> = Arc::from(key);
        let kept = match map.entries.entry(Arc::clone(&key)) {
            Entry::Vacant(slot) => {
                slot.insert((version, until));
                true
            }
            Entry::Occupied(mut slot) => {
                let newer = version >= slot.get().0;
                if newer {
                    slot.insert((version, until));
                }
                newer
            }
        };
        if kept {
            map.due.push(Reverse((until, key)));
        }
        self.publish(&map);
    }

    /// Drops `key`'s tombstone if it is older than `version` (a newer record landed).
    pub(crate) fn supersede(&self, key: &str, version: u64) {
        if self.len.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut map = self.map.lock();
        if map.entries.get(key).is_some_and(|(v, _)| *v < version) {
            map.entries.remove(key);
            self.publish(&map);
        }
    }

    /// Collects every tombstone whose grace has passed.
    pub(crate) fn purge(&self, now: u64) {
        if self.len.load(Ordering::Relaxed) == 0 || self.next_due.load(Ordering::Relaxed) > now {
            return;
        }
        let mut map = self.map.lock();
        map.collect(now);
        self.publish(&map);
    }

    pub(crate) fn clear(&self) {
        let mut map = self.map.lock();
        map.entries.clear();
        map.due.clear();
        self.publish(&map);
    }

    /// Tells the lock-free checks what `map` holds now.
    fn publish(&self, map: &Map) {
        self.len.store(map.entries.len(), Ordering::Relaxed);
        self.next_due.store(map.next_due(), Ordering::Relaxed);
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
        assert_eq!(t.version("k", || 0), None);
        t.insert("k", 10, 100, 0);
        assert_eq!(t.version("k", || 99), Some(10));
        assert_eq!(t.version("k", || 100), None, "collected at its time");
        t.purge(100);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn an_older_tombstone_never_replaces_a_newer_one() {
        let t = Tombstones::default();
        t.insert("k", 10, 100, 0);
        t.insert("k", 5, 1000, 0);
        assert_eq!(t.version("k", || 50), Some(10));
        t.supersede("k", 10);
        assert_eq!(
            t.version("k", || 50),
            Some(10),
            "an equal version does not supersede"
        );
        t.supersede("k", 11);
        assert_eq!(t.version("k", || 50), None);
    }

    #[test]
    fn each_tombstone_is_collected_when_its_own_grace_passes() {
        let t = Tombstones::default();
        for i in 0..100u64 {
            t.insert(&format!("k{i}"), 1, 1000 + i, 0);
        }
        // Kept longer by a newer delete: its first due time passes it by.
        t.insert("k0", 2, 5000, 10);
        // Superseded by a newer record: gone at once, and its due time finds nothing.
        t.supersede("k1", 5);
        assert_eq!(t.version("k1", || 10), None);
        t.purge(999);
        assert_eq!(t.len(), 99, "nothing was due before 1000");
        t.purge(1049);
        assert_eq!(t.len(), 51, "k2..=k49 were due by 1049");
        assert_eq!(t.version("k50", || 1049), Some(1));
        assert_eq!(t.version("k0", || 1049), Some(2), "k0 was kept until 5000");
        t.purge(1099);
        assert_eq!(t.len(), 1);
        t.purge(5000);
        assert_eq!(t.len(), 0);
        assert_eq!(
            t.map.lock().due.len(),
            0,
            "the due queue holds nothing stale"
        );
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
        assert_eq!(t.version("late3999", || 20), Some(1));
    }
}
