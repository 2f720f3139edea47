//! One shard: a quick_cache cache, its expiry index and its version clock.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use nautilus_core::{Bytes, Clock, Entry, Timestamp, Version, VersionClock};
use parking_lot::Mutex;
use quick_cache::{Lifecycle, Weighter};

use crate::key::{HKey, Lookup, PassThrough};

/// What the cache stores per key. `expires_at == 0` means never.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub(crate) value: Bytes,
    pub(crate) version: u64,
    pub(crate) expires_at: u64,
    /// The weight charged against the capacity, fixed when written (quick_cache requires
    /// weights not to change behind its back).
    pub(crate) charge: u64,
}

impl Slot {
    #[inline]
    pub(crate) fn live_at(&self, now: u64) -> bool {
        self.expires_at == 0 || self.expires_at > now
    }

    #[inline]
    pub(crate) fn has_expiry(&self) -> bool {
        self.expires_at != 0
    }

    pub(crate) fn size(&self, key: &str) -> u64 {
        (key.len() + self.value.len()) as u64
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

    fn queue(&self, key: Arc<str>, slot: &Slot, cause: RemovalCause) {
        if self.listener.is_some() {
            self.pending.lock().push(Removal {
                key,
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
    /// `(expires_at, key)` of every record with an expiry: the sweep pops what is due
    /// instead of scanning the shard.
    index: Mutex<BTreeSet<(u64, Arc<str>)>>,
    /// The earliest expiry in the index (`u64::MAX` if none): a tick with nothing due
    /// costs one load per shard.
    next_expiry: AtomicU64,
    pub(crate) bytes: AtomicI64,
    pub(crate) inserts: AtomicU64,
    pub(crate) updates: AtomicU64,
    pub(crate) deletes: AtomicU64,
    pub(crate) evictions: AtomicU64,
    pub(crate) expirations: AtomicU64,
    shared: Arc<Shared>,
}

impl ShardState {
    fn new(shared: Arc<Shared>) -> Self {
        ShardState {
            index: Mutex::new(BTreeSet::new()),
            next_expiry: AtomicU64::new(u64::MAX),
            bytes: AtomicI64::new(0),
            inserts: AtomicU64::new(0),
            updates: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            expirations: AtomicU64::new(0),
            shared,
        }
    }

    /// Keeps the index in step with a change of a key's expiry (0: none).
    pub(crate) fn reindex(&self, key: &Arc<str>, old: u64, new: u64) {
        if old == new || (old == 0 && new == 0) {
            return;
        }
        let mut index = self.index.lock();
        if old != 0 {
            index.remove(&(old, Arc::clone(key)));
        }
        if new != 0 {
            index.insert((new, Arc::clone(key)));
            self.next_expiry.fetch_min(new, Ordering::Relaxed);
        }
    }

    pub(crate) fn is_due(&self, now: u64) -> bool {
        self.next_expiry.load(Ordering::Relaxed) <= now
    }

    /// Pops every index entry due at `now`.
    fn take_due(&self, now: u64) -> Vec<Arc<str>> {
        let mut index = self.index.lock();
        let mut due = Vec::new();
        while let Some((at, _)) = index.first() {
            if *at > now {
                break;
            }
            if let Some((_, key)) = index.pop_first() {
                due.push(key);
            }
        }
        let next = index.first().map_or(u64::MAX, |(at, _)| *at);
        self.next_expiry.store(next, Ordering::Relaxed);
        due
    }

    pub(crate) fn clear_index(&self) {
        self.index.lock().clear();
        self.next_expiry.store(u64::MAX, Ordering::Relaxed);
    }

    /// Accounts for a record that left because it expired.
    pub(crate) fn expired(&self, key: Arc<str>, slot: &Slot) {
        self.expirations.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_sub(slot.size(&key) as i64, Ordering::Relaxed);
        self.shared.queue(key, slot, RemovalCause::Expired);
    }
}

/// Charges each record the weight fixed in its slot.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SlotWeighter;

impl Weighter<HKey, Slot> for SlotWeighter {
    #[inline]
    fn weight(&self, _key: &HKey, val: &Slot) -> u64 {
        val.charge
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
        if val.has_expiry() {
            state
                .index
                .lock()
                .remove(&(val.expires_at, Arc::clone(&key.key)));
        }
        // A record that had already expired but not yet been swept counts as expired.
        if val.live_at(state.shared.now_ms()) {
            state.evictions.fetch_add(1, Ordering::Relaxed);
            state
                .bytes
                .fetch_sub(val.size(&key.key) as i64, Ordering::Relaxed);
            state.shared.queue(key.key, &val, RemovalCause::Evicted);
        } else {
            state.expired(key.key, &val);
        }
    }
}

pub(crate) type Cache = quick_cache::sync::Cache<HKey, Slot, SlotWeighter, PassThrough, Hooks>;

/// One shard of the registry.
#[derive(Debug)]
pub(crate) struct Shard {
    pub(crate) cache: Cache,
    pub(crate) state: Arc<ShardState>,
    pub(crate) versions: VersionClock,
}

impl Shard {
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
            state,
            versions: VersionClock::new(),
        })
    }

    /// Removes every record of this shard whose expiry is due; returns how many.
    pub(crate) fn sweep(&self, now: u64) -> usize {
        let mut removed = 0;
        for key in self.state.take_due(now) {
            let lookup = Lookup::new(&key);
            // The index may be stale (the key was rewritten); the slot decides.
            if let Some((k, slot)) = self
                .cache
                .remove_if(&lookup, |s| s.has_expiry() && !s.live_at(now))
            {
                self.state.expired(k.key, &slot);
                removed += 1;
            }
        }
        removed
    }
}
