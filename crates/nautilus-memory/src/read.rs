//! The synchronous reads of the memory registry, one key or a batch at a time: the
//! path of an in-process read, kept short (see [`MemoryRegistry::get_now`]).

use nautilus_core::{Entry, Result};

use crate::key::{HKey, Lookup, hash};
use crate::now::LazyNow;
use crate::registry::MemoryRegistry;
use crate::shard::Shard;

/// What one read found, for the caller to count.
enum Read {
    Hit(Entry),
    Miss,
}

/// How many keys of a batch are hashed before they are looked up.
const HASH_AHEAD: usize = 16;

impl MemoryRegistry {
    /// The live record under `key`: the synchronous core of
    /// [`Registry::get_entry`](nautilus_core::Registry::get_entry).
    ///
    /// Always inlined, so that `Registry::get_ready` and `get_value_ready` hold its
    /// body and an awaited read does not copy the answer through a second call.
    #[inline(always)]
    pub fn get_now(&self, key: &str) -> Result<Option<Entry>> {
        let now = LazyNow::unread();
        match self.read(key, &now)? {
            Read::Hit(entry) => {
                self.inner.reads.hit();
                Ok(Some(entry))
            }
            Read::Miss => {
                self.inner.reads.miss();
                Ok(None)
            }
        }
    }

    /// One read. The path of a live record is kept short: at a million records a read
    /// waits on memory, and the processor overlaps those waits across reads only while
    /// the work between them, stores above all, fits in its buffers. The rare cases
    /// (an invalid key, an expired record) are calls out of line.
    #[inline(always)]
    fn read(&self, key: &str, now: &LazyNow) -> Result<Read> {
        self.inner.limits.check_key(key)?;
        self.read_hashed(Lookup::new(key), now)
    }

    /// A read of a valid key whose hash is already known.
    #[inline(always)]
    fn read_hashed(&self, lookup: Lookup<'_>, now: &LazyNow) -> Result<Read> {
        let shard = self.shard(lookup.hash);
        let Some(slot) = shard.cache.get(&lookup) else {
            return Ok(Read::Miss);
        };
        // Only records with an expiry pay for reading the clock.
        if slot.has_expiry() && !self.live_or_expire(shard, &lookup, slot.expires_at, now) {
            return Ok(Read::Miss);
        }
        Ok(Read::Hit(slot.into_entry()))
    }

    /// Whether a record expiring at `expires_at` (not 0) is live; if not, removes it
    /// (unless a write replaced it meanwhile) and queues its removal notice. Takes the
    /// expiry, not the slot, so that the read's slot need not be copied to memory.
    #[inline(never)]
    fn live_or_expire(
        &self,
        shard: &Shard,
        lookup: &Lookup<'_>,
        expires_at: u64,
        now: &LazyNow,
    ) -> bool {
        let now = now.get(&self.inner.shared);
        if expires_at > now {
            return true;
        }
        // Unfiled under the cache's lock, with the removal: after it, a write of the
        // key could file its new record first, and lose that filing (never swept).
        if let Some((k, s)) = shard.cache.remove_if(lookup, |s| {
            let expired = s.has_expiry() && !s.live_at(now);
            if expired {
                shard.state.unfile(&HKey::new(lookup.key), s);
            }
            expired
        }) {
            shard.state.expired(&k, &s);
            self.inner.shared.notify();
        }
        false
    }

    /// Many reads, counted once: the core of
    /// [`Registry::get_many`](nautilus_core::Registry::get_many).
    ///
    /// The keys are hashed a run of 16 at a time before the run is looked
    /// up, so the lookups, each a wait on memory in a large registry, follow one another
    /// with little work between them and the processor overlaps their waits. Measured
    /// against a loop of `get_now` at 1M records: 0.75-0.85x the time (hashing each key
    /// just before its lookup, as single reads do, was 0.97-1.04x).
    pub fn get_many_now(&self, keys: &[&str]) -> Vec<Result<Option<Entry>>> {
        let now = LazyNow::unread();
        let (mut hits, mut misses) = (0, 0);
        let mut out = Vec::with_capacity(keys.len());
        for run in keys.chunks(HASH_AHEAD) {
            let mut hashes = [0u64; HASH_AHEAD];
            for (h, key) in hashes.iter_mut().zip(run) {
                *h = hash(key);
            }
            for (key, &hash) in run.iter().zip(&hashes) {
                let read = self
                    .inner
                    .limits
                    .check_key(key)
                    .and_then(|()| self.read_hashed(Lookup { hash, key }, &now));
                out.push(match read {
                    Ok(Read::Hit(entry)) => {
                        hits += 1;
                        Ok(Some(entry))
                    }
                    Ok(Read::Miss) => {
                        misses += 1;
                        Ok(None)
                    }
                    Err(e) => Err(e),
                });
            }
        }
        self.inner.reads.add(hits, misses);
        out
    }
}

#[cfg(test)]
mod tests {
    use nautilus_core::{Bytes, Error, ManualClock, PutOptions};

    use super::*;
    use crate::test_support::{registry, stats};

    #[test]
    fn a_batch_longer_than_a_hashed_run_answers_every_key_in_place() -> Result<()> {
        let clock = ManualClock::starting_now();
        let r = registry(&clock)?;
        let n = HASH_AHEAD * 3 + 5;
        let keys: Vec<String> = (0..n)
            .map(|i| match i % 7 {
                3 => String::new(),
                5 => format!("missing/{i}"),
                _ => format!("k/{i}"),
            })
            .collect();
        for k in keys.iter().filter(|k| k.starts_with("k/")) {
            r.put_now(k, Bytes::from(k.clone()), PutOptions::default())?;
        }
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let got = r.get_many_now(&refs);
        assert_eq!(got.len(), n);
        let (mut hits, mut misses) = (0, 0);
        for (key, answer) in keys.iter().zip(&got) {
            match answer {
                Err(Error::InvalidKey { .. }) => assert!(key.is_empty()),
                Ok(Some(entry)) => {
                    hits += 1;
                    assert_eq!(entry.value, key.as_bytes(), "{key}");
                }
                Ok(None) => {
                    misses += 1;
                    assert!(key.starts_with("missing/"), "{key}");
                }
                Err(e) => panic!("{key}: {e}"),
            }
        }
        let s = stats(&r)?;
        assert_eq!((s.hits, s.misses), (hits, misses));
        assert!(hits > 0 && misses > 0);
        Ok(())
    }
}
