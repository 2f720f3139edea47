//! Imports: records and tombstones copied from another node (replication, migration,
//! repair), applied only if newer than what the key holds, and not counted as
//! writes.

use std::sync::atomic::Ordering;

use nautilus_core::{Bytes, Entry, Result, Timestamp, Version};
use quick_cache::sync::{EntryAction, EntryResult};

use crate::key::{HKey, Lookup, hash};
use crate::now::LazyNow;
use crate::ops::Counted;
use crate::registry::MemoryRegistry;
use crate::shard::Slot;

/// How long an imported tombstone without a collection time of its own is kept.
const TOMBSTONE_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

impl MemoryRegistry {
    pub(crate) fn import_now(&self, key: &str, entry: Entry) -> Result<bool> {
        let shared = &self.inner.shared;
        // The clock is read only where this import needs it: a record with no expiry,
        // over a key with none, in a shard with nothing due, needs none.
        let now = LazyNow::unread();
        self.check_import(key, &entry, &now)?;
        let incoming = entry.version;
        if entry.is_tombstone() {
            let clock_now = Timestamp::from_millis(now.get(shared));
            let until = entry
                .expires_at
                .unwrap_or_else(|| clock_now.saturating_add(TOMBSTONE_GRACE));
            return Ok(self.import_tombstone(key, incoming, until.as_millis(), now.get(shared)));
        }
        if entry
            .expires_at
            .is_some_and(|t| t.as_millis() <= now.get(shared))
        {
            return Ok(self.import_expired(key, incoming, now.get(shared)));
        }
        let charge = self
            .charging()
            .charge((key.len() + entry.value.len()) as u64);
        let expires_at = entry.expires_at.map_or(0, |t| t.as_millis());
        let value = Some(entry.value);
        let written = self.write(key, &now, charge, Counted::No, value, |live, shard| {
            shard.versions.observe(incoming);
            // Under the cache's lock: a delete's tombstone is written under it too.
            let tomb = shard.tombstones.version(key, || now.get(shared));
            if live.is_some_and(|s| s.version >= incoming.as_raw())
                || tomb.is_some_and(|t| t >= incoming.as_raw())
            {
                return Ok(None);
            }
            Ok(Some(Slot::new(
                // `write` moves the value in.
                Bytes::new(),
                incoming.as_raw(),
                expires_at,
                charge,
            )))
        })?;
        if written.is_some() {
            self.shard(hash(key))
                .tombstones
                .supersede(key, incoming.as_raw());
        }
        Ok(written.is_some())
    }

    /// [`Limits::check_import`](nautilus_core::Limits::check_import) without a clock
    /// reading where none is needed: a version within the horizon of an earlier
    /// reading (the registry's clock floor) is within the horizon of the time now,
    /// which is later. Only a version past it is checked against the clock itself,
    /// whose reading then raises the floor.
    fn check_import(&self, key: &str, entry: &Entry, now: &LazyNow) -> Result<()> {
        let limits = &self.inner.limits;
        let floor = &self.inner.clock_floor;
        let at_floor = Timestamp::from_millis(floor.load(Ordering::Relaxed));
        if limits.check_import(key, entry, at_floor).is_ok() {
            return Ok(());
        }
        let ms = now.get(&self.inner.shared);
        floor.fetch_max(ms, Ordering::Relaxed);
        limits.check_import(key, entry, Timestamp::from_millis(ms))
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
                || shard
                    .tombstones
                    .version(key, || now)
                    .is_some_and(|t| t >= raw)
            {
                return EntryAction::Retain(());
            }
            if until > now {
                shard.tombstones.insert(key, raw, until, now);
            }
            applied = true;
            // Unfiled with the removal, under the cache's lock (see `removed`).
            shard.state.unfile(k, slot);
            EntryAction::Remove
        });
        match result {
            EntryResult::Removed(k, slot) => self.removed(shard, k, &slot, now, Counted::No),
            EntryResult::Vacant(guard) => {
                // The placeholder holds the key while the tombstone is decided.
                if shard
                    .tombstones
                    .version(key, || now)
                    .is_none_or(|t| t < raw)
                {
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
        if shard
            .tombstones
            .version(key, || now)
            .is_some_and(|t| t >= raw)
        {
            return false;
        }
        if let Some((k, s)) = shard.cache.remove_if(&lookup, |s| {
            let older = s.version < raw;
            if older {
                // Unfiled with the removal, under the cache's lock (see `removed`).
                shard.state.unfile(&HKey::new(key), s);
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
    use std::sync::Arc;

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

    /// A clock that counts its readings.
    #[derive(Debug)]
    struct Counting(ManualClock, std::sync::atomic::AtomicUsize);

    impl Clock for Counting {
        fn now(&self) -> Timestamp {
            self.1.fetch_add(1, Ordering::Relaxed);
            self.0.now()
        }
    }

    impl Counting {
        fn readings(&self) -> usize {
            self.1.load(Ordering::Relaxed)
        }
    }

    /// An R=2 router's put imports the record into its second replica: without an
    /// expiry, over a key with none, in a shard with nothing due, that import reads
    /// no clock (a reading is about 40 ns on a VM, a tenth of a put). Imports that
    /// need the time still read it: an expiring record, a tombstone, a version past
    /// the horizon of the clock floor, which is then refused as before.
    #[test]
    fn imports_read_the_clock_only_where_they_need_the_time() -> Result<()> {
        let clock = Arc::new(Counting(
            ManualClock::starting_now(),
            std::sync::atomic::AtomicUsize::new(0),
        ));
        let r = MemoryRegistry::builder()
            .clock(Arc::clone(&clock) as Arc<dyn Clock>)
            .sweep_interval(None)
            .build()?;
        let v = r.put_now("k", Bytes::from_static(b"v"), PutOptions::default())?;
        let now = clock.0.now();
        let before = clock.readings();
        let newer = |n: u64, expires_at| {
            Entry::new(
                Bytes::from_static(b"w"),
                Version::from_raw(v.as_raw() + n),
                expires_at,
            )
        };
        assert!(r.import_now("k", newer(1, None))?);
        assert!(r.import_now("other", newer(1, None))?);
        assert_eq!(clock.readings(), before, "plain imports read the clock");
        let later = Some(now.saturating_add(std::time::Duration::from_secs(60)));
        assert!(r.import_now("k", newer(2, later))?);
        assert_eq!(
            clock.readings(),
            before + 1,
            "an expiring import needs the time"
        );
        assert!(r.import_now(
            "k",
            Entry::tombstone(Version::from_raw(v.as_raw() + 3), None)
        )?);
        assert_eq!(r.get_now("k")?, None);
        let readings = clock.readings();
        let far = now.saturating_add(Version::MAX_AHEAD + std::time::Duration::from_secs(86_400));
        let forged = Entry::new(
            Bytes::from_static(b"x"),
            Version::from_raw(far.as_millis() << Version::COUNTER_BITS),
            None,
        );
        assert!(matches!(
            r.import_now("z", forged),
            Err(nautilus_core::Error::InvalidArgument { .. })
        ));
        assert!(
            clock.readings() > readings,
            "a version past the floor's horizon is checked against the clock"
        );
        assert_eq!(r.get_now("z")?, None);
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
