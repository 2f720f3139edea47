//! One shard: a quick_cache cache, its expiry index and its version clock.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use nautilus_core::{Bytes, Clock, Entry, Timestamp, Version, VersionClock};
use parking_lot::Mutex;
use quick_cache::sync::{EntryAction, EntryResult};
use quick_cache::{Lifecycle, Weighter};

use crate::expiry::ExpiryIndex;
use crate::key::{HKey, PassThrough};

/// What the cache stores per key. `expires_at == 0` means never.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub(crate) value: Bytes,
    pub(crate) version: u64,
    pub(crate) expires_at: u64,
    /// The weight charged against the capacity (the low
    /// [`crate::charging::CHARGE_BITS`] bits), fixed when written (quick_cache
    /// requires weights not to change behind its back), and the expiry filing's lag
    /// (the 16 bits above): how many buckets before its expiry's the key is filed in
    /// the expiry index (see [`crate::expiry`]). One word for both keeps the slot at
    /// 64 bytes: 8 more cost a read at a million records about 3%.
    weight: u64,
    /// When the key came into its shard: a number from the shard's sequence, kept by
    /// rewrites. Scans go in this order, which is fixed while a record lives and, as
    /// records are laid out in the order they came, walks memory nearly in sequence.
    /// Set by the write that stores the slot.
    pub(crate) born: u64,
}

impl Slot {
    /// A record of `value`, `version` and `expires_at`, charged `charge` (saturating at
    /// [`crate::charging::MAX_CHARGE`]), filed with no lag; [`Slot::born`] is set by
    /// the write that stores it.
    pub(crate) fn new(value: Bytes, version: u64, expires_at: u64, charge: u64) -> Self {
        let mut slot = Slot {
            value,
            version,
            expires_at,
            weight: 0,
            born: 0,
        };
        slot.set_charge(charge);
        slot
    }

    /// The weight charged against the capacity.
    #[inline]
    pub(crate) fn charge(&self) -> u64 {
        self.weight & crate::charging::MAX_CHARGE
    }

    pub(crate) fn set_charge(&mut self, charge: u64) {
        self.weight =
            (self.weight & !crate::charging::MAX_CHARGE) | charge.min(crate::charging::MAX_CHARGE);
    }

    /// How many expiry buckets before its expiry's the key is filed.
    #[inline]
    pub(crate) fn lag(&self) -> u16 {
        // The shift leaves 16 bits.
        (self.weight >> crate::charging::CHARGE_BITS) as u16
    }

    #[inline]
    pub(crate) fn set_lag(&mut self, lag: u16) {
        self.weight = self.charge() | (u64::from(lag) << crate::charging::CHARGE_BITS);
    }

    #[inline]
    pub(crate) fn live_at(&self, now: u64) -> bool {
        self.expires_at == 0 || self.expires_at > now
    }

    #[inline]
    pub(crate) fn has_expiry(&self) -> bool {
        self.expires_at != 0
    }

    pub(crate) fn size(&self, key_len: usize) -> u64 {
        (key_len + self.value.len()) as u64
    }

    /// The record as an [`Entry`], taking the slot's value without another clone.
    #[inline]
    pub(crate) fn into_entry(self) -> Entry {
        let expires_at = self
            .has_expiry()
            .then(|| Timestamp::from_millis(self.expires_at));
        Entry::new(self.value, Version::from_raw(self.version), expires_at)
    }

    pub(crate) fn to_entry(&self) -> Entry {
        let expires_at = self
            .has_expiry()
            .then(|| Timestamp::from_millis(self.expires_at));
        Entry::new(
            self.value.clone(),
            Version::from_raw(self.version),
            expires_at,
        )
    }
}

/// Why a record left without being deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemovalCause {
    /// Pushed out to stay within the capacity.
    Evicted,
    /// Its expiry passed.
    Expired,
}

/// A record that was evicted or expired, as given to the removal listener.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Removal {
    /// The key.
    pub key: Arc<str>,
    /// The record as it was.
    pub entry: Entry,
    /// Why it left.
    pub cause: RemovalCause,
}

pub(crate) type Listener = Arc<dyn Fn(Removal) + Send + Sync>;

/// State shared by all shards: the clock and the pending notifications.
pub(crate) struct Shared {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) listener: Option<Listener>,
    pending: Mutex<Vec<Removal>>,
    has_pending: AtomicBool,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("clock", &self.clock)
            .field("listener", &self.listener.is_some())
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(clock: Arc<dyn Clock>, listener: Option<Listener>) -> Self {
        Shared {
            clock,
            listener,
            pending: Mutex::new(Vec::new()),
            has_pending: AtomicBool::new(false),
        }
    }

    #[inline]
    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now().as_millis()
    }

    fn queue(&self, key: &HKey, slot: &Slot, cause: RemovalCause) {
        if self.listener.is_some() {
            self.pending.lock().push(Removal {
                key: key.to_shared(),
                entry: slot.to_entry(),
                cause,
            });
            self.has_pending.store(true, Ordering::Release);
        }
    }

    /// Calls the listener for queued removals, outside every cache lock, so the
    /// listener may use the registry.
    pub(crate) fn notify(&self) {
        if !self.has_pending.load(Ordering::Acquire) {
            return;
        }
        let Some(listener) = &self.listener else {
            return;
        };
        let batch = {
            let mut pending = self.pending.lock();
            self.has_pending.store(false, Ordering::Release);
            std::mem::take(&mut *pending)
        };
        for removal in batch {
            listener(removal);
        }
    }
}

/// Per-shard bookkeeping that quick_cache's eviction hook also reaches.
#[derive(Debug)]
pub(crate) struct ShardState {
    /// Which keys may expire when (see [`ExpiryIndex`]).
    expiry: ExpiryIndex,
    pub(crate) bytes: AtomicI64,
    pub(crate) inserts: AtomicU64,
    pub(crate) updates: AtomicU64,
    pub(crate) deletes: AtomicU64,
    pub(crate) evictions: AtomicU64,
    pub(crate) expirations: AtomicU64,
    /// The next [`Slot::born`].
    pub(crate) births: AtomicU64,
    shared: Arc<Shared>,
}

impl ShardState {
    fn new(shared: Arc<Shared>) -> Self {
        ShardState {
            expiry: ExpiryIndex::default(),
            bytes: AtomicI64::new(0),
            inserts: AtomicU64::new(0),
            updates: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            expirations: AtomicU64::new(0),
            births: AtomicU64::new(0),
            shared,
        }
    }

    /// Filings in the expiry index, for tests.
    #[cfg(test)]
    pub(crate) fn filings(&self) -> usize {
        self.expiry.filings()
    }

    /// Keeps the index in step with a rewrite of `old` to a record expiring at `new`
    /// (0: never); returns the lag the new record keeps (see [`Slot::lag`]).
    #[inline]
    pub(crate) fn refile(&self, key: &HKey, old: &Slot, new: u64) -> u16 {
        self.expiry.reindex(key, old.expires_at, old.lag(), new)
    }

    /// Files a key not filed (a new one, or one a sweep took), expiring at `expires_at`
    /// (0: never), with no lag.
    #[inline]
    pub(crate) fn file(&self, key: &HKey, expires_at: u64) {
        self.expiry.file(key, expires_at);
    }

    /// Takes a removed record's key out of the index.
    #[inline]
    pub(crate) fn unfile(&self, key: &HKey, slot: &Slot) {
        self.expiry.unfile(key, slot.expires_at, slot.lag());
    }

    #[inline]
    pub(crate) fn is_due(&self, now: u64) -> bool {
        self.expiry.is_due(now)
    }

    /// Whether anything is due, the clock read only if anything is filed.
    #[inline]
    pub(crate) fn is_due_by(&self, now: impl FnOnce() -> u64) -> bool {
        self.expiry.is_due_by(now)
    }

    pub(crate) fn clear_index(&self) {
        self.expiry.clear();
    }

    /// A record evicted (its filing already undone): counted as an eviction, or as
    /// expired if it had expired by `now` without being swept yet.
    pub(crate) fn evicted(&self, key: &HKey, slot: &Slot, now: u64) {
        if slot.live_at(now) {
            self.evictions.fetch_add(1, Ordering::Relaxed);
            self.bytes
                .fetch_sub(slot.size(key.len()) as i64, Ordering::Relaxed);
            self.shared.queue(key, slot, RemovalCause::Evicted);
        } else {
            self.expired(key, slot);
        }
    }

    /// Accounts for a record that left because it expired.
    pub(crate) fn expired(&self, key: &HKey, slot: &Slot) {
        self.expirations.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_sub(slot.size(key.len()) as i64, Ordering::Relaxed);
        self.shared.queue(key, slot, RemovalCause::Expired);
    }
}

/// The heaviest record a hot section of `hot` admits, with one to spare (see
/// [`Shard::admits`]); at least one where there is room at all.
fn admitted_by(hot: u64) -> u64 {
    hot.saturating_sub(1).max(hot.min(1))
}

/// Charges each record the weight fixed in its slot.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SlotWeighter;

impl Weighter<HKey, Slot> for SlotWeighter {
    #[inline]
    fn weight(&self, _key: &HKey, val: &Slot) -> u64 {
        val.charge()
    }
}

/// quick_cache's eviction hook: keeps the index and counters right and queues the
/// notification. Runs under the shard lock, so it never calls user code.
#[derive(Debug, Clone)]
pub(crate) struct Hooks {
    state: Arc<ShardState>,
}

impl Lifecycle<HKey, Slot> for Hooks {
    type RequestState = ();

    fn on_evict(&self, _state: &mut (), key: HKey, val: Slot) {
        let state = &self.state;
        state.unfile(&key, &val);
        state.evicted(&key, &val, state.shared.now_ms());
    }
}

pub(crate) type Cache = quick_cache::sync::Cache<HKey, Slot, SlotWeighter, PassThrough, Hooks>;

/// One shard of the registry.
#[derive(Debug)]
pub(crate) struct Shard {
    pub(crate) cache: Cache,
    /// The cache's weight capacity, as last set: quick_cache takes the shard's lock to
    /// answer it, and every write checks it.
    capacity: AtomicU64,
    /// quick_cache's hot section, mirrored (see [`crate::room::hot_after`]): it
    /// admits no entry heavier.
    hot: AtomicU64,
    pub(crate) state: Arc<ShardState>,
    pub(crate) versions: VersionClock,
    pub(crate) tombstones: crate::tombstones::Tombstones,
    /// Held by a sweep from taking the due keys out of the index until it has
    /// removed them, so a second sweep (a count's, a full write's) waits for the
    /// first instead of finding nothing due and counting records it is removing.
    sweeping: Mutex<()>,
}

impl Shard {
    /// The cache's weight capacity.
    #[inline]
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity.load(Ordering::Relaxed)
    }

    /// Sets the cache's weight capacity (evicting down to it). Callers hold the
    /// registry's capacity lock, so the mirrored hot section follows quick_cache's.
    pub(crate) fn set_capacity(&self, capacity: u64) {
        let before = self.capacity.swap(capacity, Ordering::Relaxed);
        let hot = self.hot.load(Ordering::Relaxed);
        self.hot.store(
            crate::room::hot_after(before, hot, capacity),
            Ordering::Relaxed,
        );
        self.cache.set_capacity(capacity);
    }

    /// The heaviest record quick_cache admits now (one under its hot section: a
    /// write that grew a record sets the same capacity again, which may round the
    /// section down by one), at least one in a shard with room.
    #[inline]
    pub(crate) fn admits(&self) -> u64 {
        admitted_by(self.hot.load(Ordering::Relaxed))
    }

    /// The heaviest record quick_cache would admit at `capacity`, set from now.
    pub(crate) fn admits_at(&self, capacity: u64) -> u64 {
        let hot = self.hot.load(Ordering::Relaxed);
        admitted_by(crate::room::hot_after(self.capacity(), hot, capacity))
    }

    pub(crate) fn new(
        shared: Arc<Shared>,
        weight_capacity: u64,
        estimated_items: usize,
    ) -> Result<Self, nautilus_core::Error> {
        let state = Arc::new(ShardState::new(shared));
        let mut options = quick_cache::OptionsBuilder::new();
        // Sharding happens above quick_cache, by the key's hash; one internal shard each.
        options
            .shards(1)
            .estimated_items_capacity(estimated_items.max(32))
            .weight_capacity(weight_capacity);
        let options = options
            .build()
            .map_err(|e| nautilus_core::Error::invalid_argument(format!("cache options: {e:?}")))?;
        let cache = Cache::with_options(
            options,
            SlotWeighter,
            PassThrough,
            Hooks {
                state: Arc::clone(&state),
            },
        );
        Ok(Shard {
            cache,
            capacity: AtomicU64::new(weight_capacity),
            hot: AtomicU64::new(crate::room::hot_after(0, 0, weight_capacity)),
            state,
            versions: VersionClock::new(),
            tombstones: crate::tombstones::Tombstones::default(),
            sweeping: Mutex::new(()),
        })
    }

    /// Removes every record of this shard whose expiry is due; returns how many.
    /// One sweep at a time: a second one waits, then finds what the first left.
    pub(crate) fn sweep(&self, now: u64) -> usize {
        let _one_at_a_time = self.sweeping.lock();
        self.tombstones.purge(now);
        if !self.state.is_due(now) {
            return 0;
        }
        let mut removed = 0;
        let due = self.state.expiry.take_due(now);
        for key in &due.keys {
            // The record decides: a key may have been rewritten since it was filed.
            // Under the cache's lock, so that a write or a removal of the key sees
            // the filing and the lag its record keeps agree.
            // A placeholder is a write that filed the key before inserting it (see
            // `MemoryRegistry::write`): waited for, as its filing may be this one.
            let checked = self.cache.entry(key, None, |k, s| {
                if !s.has_expiry() {
                    return EntryAction::Retain(());
                }
                if !s.live_at(now) {
                    self.state.unfile(k, s);
                    return EntryAction::Remove;
                }
                // Filed early (its expiry moved later), or in a bucket just split:
                // filed again at its expiry.
                if s.lag() > 0 || due.refiles(s.expires_at) {
                    self.state.file(k, s.expires_at);
                    s.set_lag(0);
                }
                EntryAction::Retain(())
            });
            match checked {
                EntryResult::Removed(k, slot) => {
                    self.state.expired(&k, &slot);
                    removed += 1;
                }
                // Gone: its filing was stale.
                EntryResult::Vacant(guard) => drop(guard),
                EntryResult::Retained(()) | EntryResult::Replaced(..) | EntryResult::Timeout => {}
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use nautilus_core::{DeleteOptions, Expiry, ManualClock, PutOptions, Registry};

    use super::*;
    use crate::MemoryRegistry;
    use crate::test_support::{ready, registry, stats};

    fn filings(r: &MemoryRegistry) -> usize {
        r.inner.shards.iter().map(|s| s.state.filings()).sum()
    }

    fn ttl(secs: u64) -> PutOptions {
        PutOptions::default().ttl(Duration::from_secs(secs))
    }

    #[test]
    fn a_key_refreshed_each_second_is_filed_once_and_expires_at_its_last_expiry()
    -> nautilus_core::Result<()> {
        let clock = ManualClock::starting_now();
        let r = registry(&clock)?;
        let v = || Bytes::from_static(b"v");
        r.put_now("k", v(), ttl(10))?;
        for _ in 0..30 {
            clock.advance(Duration::from_secs(1));
            r.put_now("k", v(), ttl(10))?;
        }
        assert_eq!(filings(&r), 1, "filed once, early");
        // Its first filing comes due 20 s before it expires: the sweep files it
        // again, and it stays.
        clock.advance(Duration::from_millis(9_990));
        assert_eq!(r.sweep_expired(), 0);
        assert!(r.get_now("k")?.is_some(), "expired at an early filing");
        assert_eq!(filings(&r), 1);
        clock.advance(Duration::from_millis(20));
        assert_eq!(r.sweep_expired(), 1, "swept at its last expiry");
        assert_eq!(stats(&r)?.expirations, 1);
        assert_eq!(filings(&r), 0);
        Ok(())
    }

    #[test]
    fn removals_of_keys_filed_early_leave_no_filing_behind() -> nautilus_core::Result<()> {
        let clock = ManualClock::starting_now();
        let r = registry(&clock)?;
        let v = || Bytes::from_static(b"v");
        let n = 1_000;
        for round in 0..3 {
            for i in 0..n {
                r.put_now(&format!("k{i}"), v(), ttl(60))?;
            }
            if round < 2 {
                clock.advance(Duration::from_secs(2));
            }
        }
        assert_eq!(filings(&r), n);
        // Half deleted, a quarter given no expiry, the rest swept once early and
        // then deleted: each removal finds the filing where its record says.
        for i in 0..n / 2 {
            r.delete_now(&format!("k{i}"), DeleteOptions::default())?;
        }
        for i in n / 2..3 * n / 4 {
            ready(r.touch(&format!("k{i}"), Expiry::Never))?;
        }
        assert_eq!(filings(&r), n / 4);
        clock.advance(Duration::from_secs(57));
        assert_eq!(r.sweep_expired(), 0, "filed early, not expired");
        assert_eq!(filings(&r), n / 4);
        for i in 3 * n / 4..n {
            r.delete_now(&format!("k{i}"), DeleteOptions::default())?;
        }
        assert_eq!(filings(&r), 0);
        assert_eq!(stats(&r)?.records, n as u64 / 4);
        Ok(())
    }

    #[test]
    fn evicted_keys_filed_early_leave_no_filing_behind() -> nautilus_core::Result<()> {
        // 25 records a shard: evicted by `make_room`; 1,000: by quick_cache.
        for limit in [100, 4_000] {
            let clock = ManualClock::starting_now();
            let r = MemoryRegistry::builder()
                .clock(std::sync::Arc::new(clock.clone()))
                .sweep_interval(None)
                .shards(4)
                .max_records(limit)
                .build()?;
            let v = || Bytes::from_static(b"v");
            for round in 0..20 {
                // Each key written, then refreshed 2 s later: filed early.
                for _ in 0..2 {
                    for i in 0..limit / 2 {
                        r.put_now(&format!("k{round}-{i}"), v(), ttl(600))?;
                    }
                    clock.advance(Duration::from_secs(2));
                }
            }
            let s = stats(&r)?;
            assert!(s.records <= limit && s.evictions > 0, "{limit}: {s:?}");
            assert_eq!(
                filings(&r) as u64,
                s.records,
                "{limit}: one filing a record"
            );
        }
        Ok(())
    }
}
