//! The synchronous writes of the memory registry: conditional puts, deletes and
//! touches, one key or a batch at a time. The async trait methods call these; reads
//! are in `read.rs`, imports in `import.rs`.

use std::sync::atomic::Ordering;

use nautilus_core::{
    Bytes, DeleteOptions, Error, Expiry, PutItem, PutOptions, Result, Timestamp, Version,
};
use quick_cache::sync::{EntryAction, EntryResult};

use crate::charging::Charging;
use crate::key::{HKey, hash};
use crate::now::LazyNow;
use crate::registry::MemoryRegistry;
use crate::shard::{Shard, Slot};

/// quick_cache's `entry` never answers these with no timeout and a callback that
/// never removes; reported rather than unwrapped.
fn unexpected_entry_state() -> Error {
    Error::Backend {
        backend: "memory",
        source: "unexpected cache entry state".into(),
    }
}

/// Outcome of a write decided under the shard lock.
enum Written {
    Done {
        version: Version,
        replaced_live: bool,
        /// A rewrite that charged the record more than before: quick_cache evicts on
        /// inserts only, so the shard may now be over its share.
        grew: bool,
    },
    /// `decide` chose not to write (touch of a missing key, import of an older record).
    Skipped,
    Refused(Error),
}

/// Whether a write counts in [`nautilus_core::Stats`]' inserts, updates and deletes:
/// imports do not (they copy records between nodes: replication, migration, repair).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counted {
    Yes,
    No,
}

impl MemoryRegistry {
    /// Writes under the shard's lock: `decide` sees the stored slot (live or not) and
    /// returns the new slot, or an error to refuse. Counted as an insert or an update
    /// unless it is an import (`Counted::No`).
    ///
    /// `value`, if any, is moved into the slot `decide` returns in place of the value
    /// that slot holds, so `decide` (which may run twice) need not clone it: each
    /// clone and drop of a shared value is a locked instruction on its reference
    /// count, a line every thread writing that value contends for. A placeholder
    /// removed before its slot landed hands the value back for the next try.
    pub(crate) fn write(
        &self,
        key: &str,
        now: &LazyNow,
        charge_hint: u64,
        counted: Counted,
        mut value: Option<Bytes>,
        mut decide: impl FnMut(Option<&Slot>, &Shard) -> Result<Option<Slot>>,
    ) -> Result<Option<Version>> {
        let hkey = HKey::new(key);
        let shard = self.shard(hash(key));
        let mut capacity = shard.capacity();
        // A touch (no charge) adds no record, and a shard with no room holds none to
        // touch: it borrows none. It did, evicting a live record of another shard for
        // a key that was not there (found from outside).
        if charge_hint > 0 && (capacity == 0 || charge_hint > shard.admits()) {
            capacity = self.borrow_room(shard, key, charge_hint)?;
        }
        // Expired records go before live ones are evicted to make room.
        let shared = &self.inner.shared;
        if shard.state.is_due_by(|| now.get(shared))
            && shard.cache.weight() + charge_hint > capacity
        {
            shard.sweep(now.get(shared));
        }
        let result = loop {
            let result = shard.cache.entry(&hkey, None, |k, slot| {
                let live = !slot.has_expiry() || slot.live_at(now.get(shared));
                match decide(live.then_some(&*slot), shard) {
                    Err(e) => EntryAction::Retain(Written::Refused(e)),
                    Ok(None) => EntryAction::Retain(Written::Skipped),
                    Ok(Some(mut new)) => {
                        if let Some(v) = value.take() {
                            new.value = v;
                        }
                        let version = Version::from_raw(new.version);
                        // The rule as it is now, under the lock: one read before a
                        // change of units (a batch reads it once) would charge a
                        // record the recharge has already passed by the old one.
                        new.set_charge(self.charging().charge(new.size(k.len())));
                        let grew = new.charge() > slot.charge();
                        new.born = slot.born;
                        new.set_lag(shard.state.refile(k, slot, new.expires_at));
                        if !live {
                            // An expired record not swept yet leaves as expired (its
                            // bytes, the count, the listener), as a sweep would have
                            // removed it: before, its bytes stayed counted for good.
                            shard.state.expired(k, slot);
                        }
                        let delta = new.size(k.len()) as i64
                            - if live { slot.size(k.len()) as i64 } else { 0 };
                        shard.state.bytes.fetch_add(delta, Ordering::Relaxed);
                        *slot = new;
                        EntryAction::Retain(Written::Done {
                            version,
                            replaced_live: live,
                            grew,
                        })
                    }
                }
            });
            match result {
                EntryResult::Retained(w) => break w,
                EntryResult::Vacant(guard) => match decide(None, shard) {
                    Err(e) => break Written::Refused(e),
                    // Through the end, which delivers what the sweep above queued.
                    Ok(None) => break Written::Skipped,
                    Ok(Some(mut new)) => {
                        if let Some(v) = value.take() {
                            new.value = v;
                        }
                        let version = Version::from_raw(new.version);
                        new.set_charge(self.charging().charge(new.size(key.len())));
                        new.born = shard.state.births.fetch_add(1, Ordering::Relaxed);
                        let (expires_at, size) = (new.expires_at, new.size(key.len()));
                        if crate::room::few_fit(shard.capacity(), new.charge()) {
                            self.make_room(shard, &hkey, new.charge(), now.get(shared));
                        }
                        // Filed before the insert, while the placeholder holds the key:
                        // quick_cache may evict the new record within its own insert
                        // (a new key is the coldest), and that eviction unfiles it.
                        // Filed after, such a record left its filing behind for its
                        // TTL: a bounded registry under churn held 14 filings a record
                        // (found while testing filings kept early). A sweep that takes
                        // this filing waits for the insert.
                        shard.state.file(&hkey, expires_at);
                        match guard.insert(new) {
                            Ok(()) => {
                                shard.state.bytes.fetch_add(size as i64, Ordering::Relaxed);
                                break Written::Done {
                                    version,
                                    replaced_live: false,
                                    grew: false,
                                };
                            }
                            // A concurrent clear removed our placeholder: retry, with
                            // the value back (a filing left over is stale, which a
                            // sweep drops).
                            Err(back) => {
                                if value.is_none() {
                                    value = Some(back.value);
                                }
                            }
                        }
                    }
                },
                // `entry` with no timeout and a callback that never removes.
                EntryResult::Removed(..) | EntryResult::Replaced(..) | EntryResult::Timeout => {
                    return Err(unexpected_entry_state());
                }
            }
        };
        if let Written::Done { grew: true, .. } = result
            && shard.cache.weight() > shard.capacity()
        {
            // Evicts down to the share, as an insert would have (the share as it is
            // now: a change of limits may have run meanwhile).
            shard.cache.set_capacity(shard.capacity());
        }
        self.inner.shared.notify();
        match result {
            Written::Done {
                version,
                replaced_live,
                ..
            } => {
                if counted == Counted::Yes {
                    let counter = if replaced_live {
                        &shard.state.updates
                    } else {
                        &shard.state.inserts
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Some(version))
            }
            Written::Skipped => Ok(None),
            Written::Refused(e) => Err(e),
        }
    }

    /// Writes a value: the synchronous core of
    /// [`Registry::put_opts`](nautilus_core::Registry::put_opts).
    pub fn put_now(&self, key: &str, value: Bytes, options: PutOptions) -> Result<Version> {
        let clock_now = self.inner.shared.clock.now();
        self.put_at(key, value, options, clock_now, self.charging())
    }

    /// A put decided at `clock_now` under `charging` (read once per batch).
    fn put_at(
        &self,
        key: &str,
        value: Bytes,
        options: PutOptions,
        clock_now: Timestamp,
        charging: Charging,
    ) -> Result<Version> {
        self.inner.limits.check_record(key, value.len())?;
        let expires_at = options
            .expiry
            .resolve(clock_now)?
            .map_or(0, |t| t.as_millis());
        let now = clock_now.as_millis();
        let charge = charging.charge((key.len() + value.len()) as u64);
        let condition = options.condition;
        let written = self.write(
            key,
            &LazyNow::at(now),
            charge,
            Counted::Yes,
            Some(value),
            |live, shard| {
                condition.check(key, live.map(|s| Version::from_raw(s.version)))?;
                let floor = live.map(|s| Version::from_raw(s.version));
                Ok(Some(Slot::new(
                    // `write` moves the value in.
                    Bytes::new(),
                    shard.versions.next(clock_now, floor).as_raw(),
                    expires_at,
                    charge,
                )))
            },
        )?;
        written.ok_or_else(|| Error::invalid_argument("write was not applied"))
    }

    /// Many writes on one reading of the clock: the core of
    /// [`Registry::put_many`](nautilus_core::Registry::put_many).
    pub fn put_many_now(&self, items: Vec<PutItem>) -> Vec<Result<Version>> {
        let clock_now = self.inner.shared.clock.now();
        let charging = self.charging();
        items
            .into_iter()
            .map(|item| self.put_at(&item.key, item.value, item.options, clock_now, charging))
            .collect()
    }

    /// Deletes: the synchronous core of
    /// [`Registry::delete_opts`](nautilus_core::Registry::delete_opts).
    pub fn delete_now(&self, key: &str, options: DeleteOptions) -> Result<Option<Version>> {
        self.delete_at(key, options, self.inner.shared.clock.now())
    }

    fn delete_at(
        &self,
        key: &str,
        options: DeleteOptions,
        clock_now: Timestamp,
    ) -> Result<Option<Version>> {
        self.inner.limits.check_key(key)?;
        let now = clock_now.as_millis();
        let hkey = HKey::new(key);
        let shard = self.shard(hash(key));
        let condition = options.condition;
        let mut deleted = None;
        let result = shard.cache.entry(&hkey, None, |k, slot| {
            let live = slot.live_at(now);
            let stored = live.then(|| Version::from_raw(slot.version));
            match condition.check(key, stored) {
                Err(e) => EntryAction::Retain(Err(e)),
                Ok(()) => {
                    if live {
                        // Decided under the cache's lock, so that no import can slip
                        // an older record in between the removal and its tombstone.
                        let version = shard
                            .versions
                            .next(clock_now, Some(Version::from_raw(slot.version)));
                        if let Some(grace) = options.tombstone {
                            let until = clock_now.saturating_add(grace).as_millis();
                            shard.tombstones.insert(key, version.as_raw(), until, now);
                        }
                        deleted = Some(version);
                    }
                    // Unfiled with the removal, under the cache's lock (see
                    // `removed`).
                    shard.state.unfile(k, slot);
                    EntryAction::Remove
                }
            }
        });
        match result {
            EntryResult::Retained(r) => r.map(|()| None),
            EntryResult::Removed(k, slot) => {
                self.removed(shard, k, &slot, now, Counted::Yes);
                Ok(deleted)
            }
            EntryResult::Vacant(guard) => {
                drop(guard);
                condition.check(key, None).map(|()| None)
            }
            EntryResult::Replaced(..) | EntryResult::Timeout => Err(unexpected_entry_state()),
        }
    }

    /// Counts a record a delete took out of the cache: a delete if it was live at
    /// `now`, else an expiry (its listener is told). The caller unfiled it from the
    /// expiry index under the cache's lock, with the removal: unfiled after, a write of
    /// the key in between could have its new record's filing removed (never swept,
    /// counted after it expired; found from outside).
    pub(crate) fn removed(&self, shard: &Shard, k: HKey, slot: &Slot, now: u64, counted: Counted) {
        if slot.live_at(now) {
            if counted == Counted::Yes {
                shard.state.deletes.fetch_add(1, Ordering::Relaxed);
            }
            shard
                .state
                .bytes
                .fetch_sub(slot.size(k.len()) as i64, Ordering::Relaxed);
        } else {
            shard.state.expired(&k, slot);
            self.inner.shared.notify();
        }
    }

    /// Many unconditional deletes on one reading of the clock: the core of
    /// [`Registry::delete_many`](nautilus_core::Registry::delete_many).
    pub fn delete_many_now(&self, keys: &[&str]) -> Vec<Result<bool>> {
        let now = self.inner.shared.clock.now();
        keys.iter()
            .map(|k| {
                self.delete_at(k, DeleteOptions::default(), now)
                    .map(|v| v.is_some())
            })
            .collect()
    }

    pub(crate) fn touch_now(&self, key: &str, expiry: Expiry) -> Result<Option<Version>> {
        self.inner.limits.check_key(key)?;
        let clock_now = self.inner.shared.clock.now();
        let expires_at = expiry.resolve(clock_now)?.map_or(0, |t| t.as_millis());
        let now = clock_now.as_millis();
        self.write(
            key,
            &LazyNow::at(now),
            0,
            Counted::Yes,
            None,
            |live, shard| {
                Ok(live.map(|s| {
                    Slot::new(
                        s.value.clone(),
                        shard
                            .versions
                            .next(clock_now, Some(Version::from_raw(s.version)))
                            .as_raw(),
                        expires_at,
                        s.charge(),
                    )
                }))
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use nautilus_core::{ManualClock, Registry};

    use super::*;
    use crate::test_support::{ready, registry, stats};

    #[test]
    fn a_write_over_an_expired_record_not_swept_yet_counts_it_expired() -> Result<()> {
        let clock = ManualClock::starting_now();
        let removed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = Arc::clone(&removed);
        let r = MemoryRegistry::builder()
            .clock(Arc::new(clock.clone()))
            .sweep_interval(None)
            .on_removal(move |_| {
                seen.fetch_add(1, Ordering::Relaxed);
            })
            .build()?;
        let ttl = PutOptions::default().ttl(Duration::from_millis(10));
        let value = || Bytes::from_static(b"0123456789");
        r.put_now("k", value(), ttl)?;
        let one = stats(&r)?.bytes;
        for round in 1..=3u64 {
            clock.advance(Duration::from_millis(20));
            // Expired, not swept: the write replaces it in place.
            r.put_now("k", value(), ttl)?;
            let s = stats(&r)?;
            assert_eq!((s.bytes, s.records), (one, 1), "round {round}");
            assert_eq!(s.expirations, round, "round {round}");
        }
        r.delete_now("k", DeleteOptions::default())?;
        assert_eq!(stats(&r)?.bytes, 0);
        // The listener hears of each expired record (not of the delete).
        assert_eq!(removed.load(Ordering::Relaxed), 3);
        Ok(())
    }

    #[test]
    fn batches_count_like_single_operations() -> Result<()> {
        let clock = ManualClock::starting_now();
        let r = registry(&clock)?;
        let ttl = PutOptions::default().ttl(Duration::from_secs(1));
        let items = vec![
            PutItem::new("a", Bytes::from_static(b"1")),
            PutItem::new("b", Bytes::from_static(b"2")).with_options(ttl),
            PutItem::new("", Bytes::from_static(b"bad key")),
        ];
        let put = r.put_many_now(items);
        assert!(put[0].is_ok() && put[1].is_ok());
        assert!(matches!(put[2], Err(Error::InvalidKey { .. })));
        clock.advance(Duration::from_secs(2));
        let got = r.get_many_now(&["a", "b", "c"]);
        assert!(matches!(got[0], Ok(Some(_))));
        assert!(matches!(got[1], Ok(None)), "expired records are not read");
        assert!(matches!(got[2], Ok(None)));
        let s = stats(&r)?;
        assert_eq!((s.hits, s.misses, s.inserts), (1, 2, 2));
        let deleted = r.delete_many_now(&["a", "b", "a"]);
        assert_eq!(
            deleted.into_iter().map(|d| d.ok()).collect::<Vec<_>>(),
            vec![Some(true), Some(false), Some(false)]
        );
        assert_eq!(ready(r.count())?, 0);
        Ok(())
    }

    /// `builder` with a removal listener that logs the keys it hears of.
    fn logging(
        builder: crate::MemoryRegistryBuilder,
    ) -> (
        crate::MemoryRegistryBuilder,
        Arc<std::sync::Mutex<Vec<String>>>,
    ) {
        let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = Arc::clone(&heard);
        let builder = builder.on_removal(move |removal| {
            if let Ok(mut log) = log.lock() {
                log.push(removal.key.to_string());
            }
        });
        (builder, heard)
    }

    #[test]
    fn a_touch_of_a_missing_key_evicts_nothing_under_a_limit_below_the_shards() -> Result<()> {
        let (builder, heard) = logging(MemoryRegistry::builder());
        let r = builder
            .sweep_interval(None)
            .shards(16)
            .max_records(4)
            .build()?;
        for k in ["a", "b", "c", "d"] {
            r.put_now(k, Bytes::from_static(b"v"), PutOptions::default())?;
        }
        for i in 0..16 {
            let missing = format!("missing-{i}");
            assert_eq!(ready(r.touch(&missing, Expiry::Never))?, None);
        }
        let s = stats(&r)?;
        assert_eq!((s.records, s.evictions), (4, 0));
        assert_eq!(heard.lock().map(|h| h.len()).unwrap_or(usize::MAX), 0);
        Ok(())
    }

    #[test]
    fn a_write_that_is_skipped_still_delivers_what_its_sweep_removed() -> Result<()> {
        let clock = ManualClock::starting_now();
        let (builder, heard) = logging(MemoryRegistry::builder());
        let r = builder
            .clock(Arc::new(clock.clone()))
            .sweep_interval(None)
            .shards(1)
            .max_records(1)
            .build()?;
        let v = Version::from_raw(1 << 40);
        assert!(r.import_now("b", nautilus_core::Entry::tombstone(v, None))?);
        let ttl = PutOptions::default().ttl(Duration::from_millis(10));
        r.put_now("a", Bytes::from_static(b"v"), ttl)?;
        clock.advance(Duration::from_millis(20));
        // The shard is full with "a" due: the import sweeps it, then is refused by
        // the newer tombstone.
        let older =
            nautilus_core::Entry::new(Bytes::from_static(b"old"), Version::from_raw(1), None);
        assert!(!r.import_now("b", older)?);
        let heard = heard.lock().map(|h| h.clone()).unwrap_or_default();
        assert_eq!(heard, vec!["a".to_owned()], "told of the sweep's removal");
        Ok(())
    }
}
