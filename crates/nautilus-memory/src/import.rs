//! Imports: records and tombstones copied from another node (replication, migration,
//! repair), applied only if newer than what the key holds, and not counted as
//! writes.

use nautilus_core::{Entry, Result, Version};
use quick_cache::sync::{EntryAction, EntryResult};

use crate::key::{HKey, Lookup, hash};
use crate::ops::Counted;
use crate::registry::MemoryRegistry;
use crate::shard::Slot;

/// How long an imported tombstone without a collection time of its own is kept.
const TOMBSTONE_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

impl MemoryRegistry {
    pub(crate) fn import_now(&self, key: &str, entry: Entry) -> Result<bool> {
        let clock_now = self.inner.shared.clock.now();
        self.inner.limits.check_import(key, &entry, clock_now)?;
        let now = clock_now.as_millis();
        let incoming = entry.version;
        if entry.is_tombstone() {
            let until = entry
                .expires_at
                .unwrap_or_else(|| clock_now.saturating_add(TOMBSTONE_GRACE));
            return Ok(self.import_tombstone(key, incoming, until.as_millis(), now));
        }
        if entry.is_expired_at(clock_now) {
            return Ok(self.import_expired(key, incoming, now));
        }
        let charge = self
            .charging()
            .charge((key.len() + entry.value.len()) as u64);
        let expires_at = entry.expires_at.map_or(0, |t| t.as_millis());
        let written = self.write(key, now, charge, Counted::No, |live, shard| {
            shard.versions.observe(incoming);
            // Under the cache's lock: a delete's tombstone is written under it too.
            let tomb = shard.tombstones.version(key, now);
            if live.is_some_and(|s| s.version >= incoming.as_raw())
                || tomb.is_some_and(|t| t >= incoming.as_raw())
            {
                return Ok(None);
            }
            Ok(Some(Slot {
                value: entry.value.clone(),
                version: incoming.as_raw(),
                expires_at,
                charge,
                born: 0,
            }))
        })?;
        if written.is_some() {
            self.shard(hash(key))
                .tombstones
                .supersede(key, incoming.as_raw());
        }
        Ok(written.is_some())
    }

    /// A delete made elsewhere: removes an older live record (a delete in the stats)
    /// and keeps the tombstone until `until`. Not applied if the key holds a record or
    /// a tombstone as new or newer.
    fn import_tombstone(&self, key: &str, incoming: Version, until: u64, now: u64) -> bool {
        let hkey = HKey::new(key);
        let shard = self.shard(hash(key));
        shard.versions.observe(incoming);
        let raw = incoming.as_raw();
        let mut applied = false;
        let result = shard.cache.entry(&hkey, None, |k, slot| {
            if slot.live_at(now) && slot.version >= raw
                || shard.tombstones.version(key, now).is_some_and(|t| t >= raw)
            {
                return EntryAction::Retain(());
            }
            if until > now {
                shard.tombstones.insert(key, raw, until, now);
            }
            applied = true;
            // Unfiled with the removal, under the cache's lock (see `removed`).
            shard.state.reindex(k, slot.expires_at, 0);
            EntryAction::Remove
        });
        match result {
            EntryResult::Removed(k, slot) => self.removed(shard, k, &slot, now, Counted::No),
            EntryResult::Vacant(guard) => {
                // The placeholder holds the key while the tombstone is decided.
                if shard.tombstones.version(key, now).is_none_or(|t| t < raw) {
                    if until > now {
                        shard.tombstones.insert(key, raw, until, now);
                    }
                    applied = true;
                }
                drop(guard);
            }
            EntryResult::Retained(()) | EntryResult::Replaced(..) | EntryResult::Timeout => {}
        }
        applied
    }

    /// An already-expired record replaces an older one by making the key absent. Not a
    /// read and not a delete: the stored record, if older, leaves as expired (it was
    /// superseded by a version that has expired).
    fn import_expired(&self, key: &str, incoming: Version, now: u64) -> bool {
        let lookup = Lookup::new(key);
        let shard = self.shard(lookup.hash);
        shard.versions.observe(incoming);
        let raw = incoming.as_raw();
        if shard.tombstones.version(key, now).is_some_and(|t| t >= raw) {
            return false;
        }
        if let Some((k, s)) = shard.cache.remove_if(&lookup, |s| {
            let older = s.version < raw;
            if older {
                // Unfiled with the removal, under the cache's lock (see `removed`).
                shard.state.reindex(&HKey::new(key), s.expires_at, 0);
            }
            older
        }) {
            shard.state.expired(&k, &s);
            self.inner.shared.notify();
            return true;
        }
        // Nothing older was there: applied unless a live record as new or newer is.
        !shard
            .cache
            .peek(&lookup)
            .is_some_and(|s| s.live_at(now) && s.version >= raw)
    }
}

#[cfg(test)]
mod tests {
    use nautilus_core::{Bytes, Clock, ManualClock, PutOptions, Timestamp};

    use super::*;
    use crate::test_support::{registry, stats};

    #[test]
    fn importing_an_expired_record_is_neither_a_read_nor_a_delete() -> Result<()> {
        let clock = ManualClock::starting_now();
        let r = registry(&clock)?;
        let old = r.put_now("k", Bytes::from_static(b"v"), PutOptions::default())?;
        let before = stats(&r)?;
        let expired = Entry::new(
            Bytes::from_static(b"gone"),
            Version::from_raw(old.as_raw() + 1),
            Some(Timestamp::from_millis(clock.now().as_millis() - 1)),
        );
        assert!(
            r.import_now("k", expired)?,
            "a newer expired record applies"
        );
        let after = stats(&r)?;
        assert_eq!(after.hits, before.hits);
        assert_eq!(after.misses, before.misses);
        assert_eq!(after.deletes, before.deletes);
        assert_eq!(after.expirations, before.expirations + 1);
        assert_eq!(after.records, 0);
        assert_eq!(after.bytes, 0);
        assert_eq!(r.get_now("k")?, None);
        Ok(())
    }

    #[test]
    fn an_older_expired_import_leaves_the_record() -> Result<()> {
        let clock = ManualClock::starting_now();
        let r = registry(&clock)?;
        let v = r.put_now("k", Bytes::from_static(b"v"), PutOptions::default())?;
        let expired = Entry::new(
            Bytes::new(),
            Version::from_raw(v.as_raw() - 1),
            Some(Timestamp::from_millis(1)),
        );
        assert!(!r.import_now("k", expired)?);
        assert_eq!(r.get_now("k")?.map(|e| e.version), Some(v));
        Ok(())
    }
}
