//! The memory registry: shards of quick_cache caches behind the Nautilus contract.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use nautilus_core::{
    Bytes, Capabilities, Capacity, Clock, Condition, Cursor, DeleteOptions, Entry, Error, Expiry,
    Limits, Page, PutItem, PutOptions, Registry, Result, Stats, SystemClock, Version, async_trait,
};
use parking_lot::Mutex;
use quick_cache::sync::{EntryAction, EntryResult};

use crate::counters::ReadCounters;
use crate::key::{HKey, Lookup, hash};
use crate::shard::{Listener, Removal, Shard, Shared, Slot};

/// Capacity weights are "unbounded" at this value per shard: far above anything a
/// process can hold, far below where sums could overflow.
const UNBOUNDED: u64 = 1 << 60;

/// How records are charged against the capacity; fixed per write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Charging {
    by_bytes: bool,
    /// With a byte limit, the least a record is charged: `max_bytes / max_records`
    /// when both limits are set, so that bytes within the limit imply records within it.
    floor: u64,
}

impl Charging {
    fn for_capacity(c: Capacity) -> Self {
        match (c.max_records, c.max_bytes) {
            (_, None) => Charging {
                by_bytes: false,
                floor: 1,
            },
            (None, Some(_)) => Charging {
                by_bytes: true,
                floor: 1,
            },
            (Some(n), Some(b)) => Charging {
                by_bytes: true,
                floor: b.div_ceil(n).max(1),
            },
        }
    }

    #[inline]
    fn charge(self, size: u64) -> u64 {
        if self.by_bytes {
            size.max(self.floor)
        } else {
            1
        }
    }

    /// Total weight the whole registry may hold.
    fn total(self, c: Capacity) -> Option<u64> {
        if self.by_bytes {
            c.max_bytes
        } else {
            c.max_records
        }
    }
}

/// The in-process registry on [quick_cache](https://docs.rs/quick_cache).
///
/// Cloning is cheap and shares the same records. See the crate docs for the eviction
/// policy, capacity and expiry semantics.
#[derive(Clone)]
pub struct MemoryRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Shard]>,
    mask: usize,
    shared: Arc<Shared>,
    limits: Limits,
    capacity: Mutex<Capacity>,
    /// Packed [`Charging`]: bit 63 = by bytes, low bits = floor.
    charging: AtomicU64,
    reads: ReadCounters,
    sweeper: Mutex<Option<std::thread::Thread>>,
    closing: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Wake the sweeper so it sees the registry gone and exits now, not a tick later.
        self.closing.store(true, Ordering::Release);
        if let Some(thread) = self.sweeper.lock().take() {
            thread.unpark();
        }
    }
}

impl fmt::Debug for MemoryRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryRegistry")
            .field("shards", &self.inner.shards.len())
            .field("capacity", &*self.inner.capacity.lock())
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        MemoryRegistry::new()
    }
}

/// Builds a [`MemoryRegistry`]: `MemoryRegistry::builder().max_records(n).build()`.
#[must_use]
pub struct MemoryRegistryBuilder {
    capacity: Capacity,
    limits: Limits,
    clock: Arc<dyn Clock>,
    shards: Option<usize>,
    sweep_interval: Option<Duration>,
    listener: Option<Listener>,
}

impl fmt::Debug for MemoryRegistryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryRegistryBuilder")
            .field("capacity", &self.capacity)
            .field("limits", &self.limits)
            .field("shards", &self.shards)
            .field("sweep_interval", &self.sweep_interval)
            .finish_non_exhaustive()
    }
}

impl MemoryRegistryBuilder {
    /// At most `n` live records (evicting to stay within).
    pub fn max_records(mut self, n: u64) -> Self {
        self.capacity.max_records = Some(n);
        self
    }

    /// At most `n` bytes of keys plus values (evicting to stay within).
    pub fn max_bytes(mut self, n: u64) -> Self {
        self.capacity.max_bytes = Some(n);
        self
    }

    /// Both limits at once.
    pub fn capacity(mut self, capacity: Capacity) -> Self {
        self.capacity = capacity;
        self
    }

    /// Key and value size limits (default: 1 KiB keys, 16 MiB values).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The clock expiry is measured on (default: the system clock). Tests pass a
    /// [`ManualClock`](nautilus_core::ManualClock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The number of shards (rounded up to a power of two). By default 8 per core, and
    /// fewer for small capacities so that each shard's share of the limit is not tiny.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = Some(n.max(1));
        self
    }

    /// How often the background sweep reclaims expired records (default 1 s);
    /// `None` disables the thread (expired records are still never visible, and are
    /// reclaimed when read, when their shard is full, and by
    /// [`MemoryRegistry::sweep_expired`]).
    pub fn sweep_interval(mut self, every: Option<Duration>) -> Self {
        self.sweep_interval = every;
        self
    }

    /// Calls `listener` for every record evicted or expired, outside the cache's locks
    /// (so it may use the registry), shortly after the removal: after the write that
    /// caused it, or at the next sweep.
    pub fn on_removal(mut self, listener: impl Fn(Removal) + Send + Sync + 'static) -> Self {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// Builds the registry. Fails on a zero limit, or if the sweep thread cannot start.
    pub fn build(self) -> Result<MemoryRegistry> {
        let capacity = self.capacity.validate()?;
        let charging = Charging::for_capacity(capacity);
        let n = self
            .shards
            .unwrap_or_else(|| default_shards(capacity))
            .next_power_of_two();
        let shared = Arc::new(Shared::new(self.clock, self.listener));
        let total = charging.total(capacity);
        let estimated = capacity
            .max_records
            .map_or(1024, |r| usize::try_from(r).unwrap_or(usize::MAX) / n);
        let shards = (0..n)
            .map(|i| {
                Shard::new(
                    Arc::clone(&shared),
                    share(total, n, i),
                    estimated.min(1 << 20),
                )
            })
            .collect::<Result<Box<[_]>>>()?;
        let inner = Arc::new(Inner {
            shards,
            mask: n - 1,
            shared,
            limits: self.limits,
            capacity: Mutex::new(capacity),
            charging: AtomicU64::new(pack(charging)),
            reads: ReadCounters::default(),
            sweeper: Mutex::new(None),
            closing: AtomicBool::new(false),
        });
        if let Some(every) = self.sweep_interval {
            let weak = Arc::downgrade(&inner);
            let handle = std::thread::Builder::new()
                .name("nautilus-memory-sweep".into())
                .spawn(move || sweep_loop(&weak, every))
                .map_err(|e| Error::Backend {
                    backend: "memory",
                    source: Box::new(e),
                })?;
            *inner.sweeper.lock() = Some(handle.thread().clone());
        }
        Ok(MemoryRegistry { inner })
    }
}

fn default_shards(capacity: Capacity) -> usize {
    let cores = std::thread::available_parallelism().map_or(4, usize::from);
    let mut n = (cores * 8).clamp(8, 256);
    // Keep each shard's share at a few hundred records or a few hundred KiB: the
    // limit is split across shards, so tiny shares evict early.
    if let Some(r) = capacity.max_records {
        n = n.min(usize::try_from(r / 256).unwrap_or(usize::MAX).max(1));
    }
    if let Some(b) = capacity.max_bytes {
        n = n.min(
            usize::try_from(b / (256 * 1024))
                .unwrap_or(usize::MAX)
                .max(1),
        );
    }
    n
}

/// Shard `i`'s part of `total`, so the parts add up to exactly `total`.
fn share(total: Option<u64>, n: usize, i: usize) -> u64 {
    match total {
        None => UNBOUNDED,
        Some(t) => {
            let n = n as u64;
            t / n + u64::from((i as u64) < t % n)
        }
    }
}

fn pack(c: Charging) -> u64 {
    (u64::from(c.by_bytes) << 63) | (c.floor & !(1 << 63))
}

fn unpack(v: u64) -> Charging {
    Charging {
        by_bytes: v >> 63 == 1,
        floor: v & !(1 << 63),
    }
}

fn sweep_loop(registry: &Weak<Inner>, every: Duration) {
    loop {
        std::thread::park_timeout(every);
        let Some(inner) = registry.upgrade() else {
            return;
        };
        if inner.closing.load(Ordering::Acquire) {
            return;
        }
        inner.sweep_due();
    }
}

impl Inner {
    /// Reclaims every expired record of the shards with something due, then delivers
    /// the notifications; returns how many. Costs time in proportion to what is due.
    fn sweep_due(&self) -> usize {
        let now = self.shared.now_ms();
        let n = self
            .shards
            .iter()
            .filter(|s| s.state.is_due(now))
            .map(|s| s.sweep(now))
            .sum();
        self.shared.notify();
        n
    }
}

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
    },
    /// `decide` chose not to write (touch of a missing key, import of an older record).
    Skipped,
    Refused(Error),
}

impl MemoryRegistry {
    /// An unbounded registry on the system clock with a 1 s background sweep.
    ///
    /// # Panics
    /// If the operating system refuses to start the sweep thread; use
    /// [`MemoryRegistry::builder`] to handle that as an error.
    #[must_use]
    pub fn new() -> Self {
        match MemoryRegistry::builder().build() {
            Ok(r) => r,
            Err(e) => panic!("could not start the memory registry: {e}"),
        }
    }

    /// A builder with no limits, the default key and value limits, the system clock and
    /// a 1 s sweep.
    pub fn builder() -> MemoryRegistryBuilder {
        MemoryRegistryBuilder {
            capacity: Capacity::unbounded(),
            limits: Limits::default(),
            clock: Arc::new(SystemClock),
            shards: None,
            sweep_interval: Some(Duration::from_secs(1)),
            listener: None,
        }
    }

    /// Reclaims every expired record now; returns how many. Costs time in proportion
    /// to the expired records, not to the records held.
    pub fn sweep_expired(&self) -> usize {
        self.inner.sweep_due()
    }

    /// The number of shards.
    #[must_use]
    pub fn shard_count(&self) -> usize {
        self.inner.shards.len()
    }

    #[inline]
    fn shard(&self, hash: u64) -> &Shard {
        // Middle bits: quick_cache's table uses the low and top bits of the same hash.
        &self.inner.shards[(hash >> 32) as usize & self.inner.mask]
    }

    #[inline]
    fn charging(&self) -> Charging {
        unpack(self.inner.charging.load(Ordering::Relaxed))
    }

    /// The live record under `key`: the synchronous core of [`Registry::get_entry`].
    #[inline]
    pub fn get_now(&self, key: &str) -> Result<Option<Entry>> {
        self.inner.limits.check_key(key)?;
        let lookup = Lookup::new(key);
        let shard = self.shard(lookup.hash);
        let Some(slot) = shard.cache.get(&lookup) else {
            self.inner.reads.miss();
            return Ok(None);
        };
        // Only records with an expiry pay for reading the clock.
        if slot.has_expiry() {
            let now = self.inner.shared.now_ms();
            if !slot.live_at(now) {
                self.inner.reads.miss();
                if let Some((k, s)) = shard
                    .cache
                    .remove_if(&lookup, |s| s.has_expiry() && !s.live_at(now))
                {
                    shard.state.expired(k.key, &s);
                    self.inner.shared.notify();
                }
                return Ok(None);
            }
        }
        self.inner.reads.hit();
        Ok(Some(slot.into_entry()))
    }

    /// Writes under the shard's lock: `decide` sees the stored slot (live or not) and
    /// returns the new slot, or an error to refuse.
    fn write(
        &self,
        key: &str,
        now: u64,
        charge_hint: u64,
        mut decide: impl FnMut(Option<&Slot>, &Shard) -> Result<Option<Slot>>,
    ) -> Result<Option<Version>> {
        let hkey = HKey::new(key);
        let shard = self.shard(hash(key));
        if charge_hint > shard.cache.capacity() {
            return Err(Error::TooLarge {
                key: key.to_owned(),
                size: charge_hint,
                limit: shard.cache.capacity(),
            });
        }
        // Expired records go before live ones are evicted to make room.
        if shard.state.is_due(now) && shard.cache.weight() + charge_hint > shard.cache.capacity() {
            shard.sweep(now);
        }
        let result = loop {
            let result = shard.cache.entry(&hkey, None, |k, slot| {
                let live = slot.live_at(now);
                match decide(live.then_some(&*slot), shard) {
                    Err(e) => EntryAction::Retain(Written::Refused(e)),
                    Ok(None) => EntryAction::Retain(Written::Skipped),
                    Ok(Some(new)) => {
                        let version = Version::from_raw(new.version);
                        shard.state.reindex(k, slot.expires_at, new.expires_at);
                        let delta = new.size(&k.key) as i64
                            - if live { slot.size(&k.key) as i64 } else { 0 };
                        shard.state.bytes.fetch_add(delta, Ordering::Relaxed);
                        *slot = new;
                        EntryAction::Retain(Written::Done {
                            version,
                            replaced_live: live,
                        })
                    }
                }
            });
            match result {
                EntryResult::Retained(w) => break w,
                EntryResult::Vacant(guard) => match decide(None, shard) {
                    Err(e) => break Written::Refused(e),
                    Ok(None) => return Ok(None),
                    Ok(Some(new)) => {
                        let version = Version::from_raw(new.version);
                        let (expires_at, size) = (new.expires_at, new.size(key));
                        if guard.insert(new).is_ok() {
                            shard.state.reindex(&hkey, 0, expires_at);
                            shard.state.bytes.fetch_add(size as i64, Ordering::Relaxed);
                            break Written::Done {
                                version,
                                replaced_live: false,
                            };
                        }
                        // A concurrent clear or delete removed our placeholder: retry.
                    }
                },
                // `entry` with no timeout and a callback that never removes.
                EntryResult::Removed(..) | EntryResult::Replaced(..) | EntryResult::Timeout => {
                    return Err(unexpected_entry_state());
                }
            }
        };
        self.inner.shared.notify();
        match result {
            Written::Done {
                version,
                replaced_live,
            } => {
                let counter = if replaced_live {
                    &shard.state.updates
                } else {
                    &shard.state.inserts
                };
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(Some(version))
            }
            Written::Skipped => Ok(None),
            Written::Refused(e) => Err(e),
        }
    }

    /// Writes a value: the synchronous core of [`Registry::put_opts`].
    pub fn put_now(&self, key: &str, value: Bytes, options: PutOptions) -> Result<Version> {
        self.inner.limits.check_record(key, value.len())?;
        let clock_now = self.inner.shared.clock.now();
        let expires_at = options
            .expiry
            .resolve(clock_now)?
            .map_or(0, |t| t.as_millis());
        let now = clock_now.as_millis();
        let charge = self.charging().charge((key.len() + value.len()) as u64);
        let condition = options.condition;
        let written = self.write(key, now, charge, |live, shard| {
            condition.check(key, live.map(|s| Version::from_raw(s.version)))?;
            let floor = live.map(|s| Version::from_raw(s.version));
            Ok(Some(Slot {
                value: value.clone(),
                version: shard.versions.next(clock_now, floor).as_raw(),
                expires_at,
                charge,
            }))
        })?;
        written.ok_or_else(|| Error::invalid_argument("write was not applied"))
    }

    /// Deletes: the synchronous core of [`Registry::delete_opts`].
    pub fn delete_now(&self, key: &str, options: DeleteOptions) -> Result<bool> {
        self.inner.limits.check_key(key)?;
        let now = self.inner.shared.now_ms();
        let hkey = HKey::new(key);
        let shard = self.shard(hash(key));
        let condition = options.condition;
        let result = shard.cache.entry(&hkey, None, |_, slot| {
            let live = slot.live_at(now);
            match condition.check(key, live.then(|| Version::from_raw(slot.version))) {
                Err(e) => EntryAction::Retain(Err(e)),
                Ok(()) => EntryAction::Remove,
            }
        });
        match result {
            EntryResult::Retained(r) => r,
            EntryResult::Removed(k, slot) => {
                shard.state.reindex(&k, slot.expires_at, 0);
                if slot.live_at(now) {
                    shard.state.deletes.fetch_add(1, Ordering::Relaxed);
                    shard
                        .state
                        .bytes
                        .fetch_sub(slot.size(&k.key) as i64, Ordering::Relaxed);
                    Ok(true)
                } else {
                    shard.state.expired(k.key, &slot);
                    self.inner.shared.notify();
                    Ok(false)
                }
            }
            EntryResult::Vacant(guard) => {
                drop(guard);
                condition.check(key, None).map(|()| false)
            }
            EntryResult::Replaced(..) | EntryResult::Timeout => Err(unexpected_entry_state()),
        }
    }

    fn touch_now(&self, key: &str, expiry: Expiry) -> Result<Option<Version>> {
        self.inner.limits.check_key(key)?;
        let clock_now = self.inner.shared.clock.now();
        let expires_at = expiry.resolve(clock_now)?.map_or(0, |t| t.as_millis());
        let now = clock_now.as_millis();
        self.write(key, now, 0, |live, shard| {
            Ok(live.map(|s| Slot {
                value: s.value.clone(),
                version: shard
                    .versions
                    .next(clock_now, Some(Version::from_raw(s.version)))
                    .as_raw(),
                expires_at,
                charge: s.charge,
            }))
        })
    }

    fn import_now(&self, key: &str, entry: Entry) -> Result<bool> {
        self.inner.limits.check_record(key, entry.value.len())?;
        let now = self.inner.shared.now_ms();
        let incoming = entry.version;
        if entry.is_expired_at(nautilus_core::Timestamp::from_millis(now)) {
            // An already-expired record replaces an older one by making the key absent.
            self.shard(crate::key::hash(key)).versions.observe(incoming);
            let stored = self.get_now(key)?;
            return match stored {
                Some(s) if s.version >= incoming => Ok(false),
                Some(s) => {
                    let opts = DeleteOptions::default().condition(Condition::Version(s.version));
                    match self.delete_now(key, opts) {
                        // A newer write got in between: the import is not the newest.
                        Err(Error::Conflict { .. }) => Ok(false),
                        other => other,
                    }
                }
                None => Ok(true),
            };
        }
        let charge = self
            .charging()
            .charge((key.len() + entry.value.len()) as u64);
        let expires_at = entry.expires_at.map_or(0, |t| t.as_millis());
        let written = self.write(key, now, charge, |live, shard| {
            shard.versions.observe(incoming);
            if live.is_some_and(|s| s.version >= incoming.as_raw()) {
                return Ok(None);
            }
            Ok(Some(Slot {
                value: entry.value.clone(),
                version: incoming.as_raw(),
                expires_at,
                charge,
            }))
        });
        Ok(written?.is_some())
    }

    fn scan_now(&self, prefix: &str, cursor: Option<&Cursor>, limit: usize) -> Result<Page> {
        if limit == 0 {
            return Err(Error::invalid_argument(
                "a scan page must ask for at least one record",
            ));
        }
        // The cursor is "shard/last key": keys are returned in key order within a
        // shard, so a record present for the whole scan is returned exactly once.
        let (mut shard_idx, mut after) = match cursor {
            None => (0usize, None),
            Some(c) => {
                let (s, k) = c
                    .as_str()
                    .split_once('/')
                    .ok_or_else(|| Error::invalid_argument("not a memory registry cursor"))?;
                let s: usize = s
                    .parse()
                    .map_err(|_| Error::invalid_argument("not a memory registry cursor"))?;
                if s >= self.inner.shards.len() {
                    return Err(Error::invalid_argument("cursor from another registry"));
                }
                (s, (!k.is_empty()).then(|| k.to_owned()))
            }
        };
        let now = self.inner.shared.now_ms();
        let mut records = Vec::new();
        while shard_idx < self.inner.shards.len() {
            let room = limit - records.len();
            let mut found: Vec<(HKey, Slot)> = self.inner.shards[shard_idx]
                .cache
                .iter()
                .filter(|(k, s)| {
                    k.key.starts_with(prefix)
                        && after.as_deref().is_none_or(|a| &*k.key > a)
                        && s.live_at(now)
                })
                .collect();
            if found.len() > room {
                found.select_nth_unstable_by(room - 1, |a, b| a.0.key.cmp(&b.0.key));
                found.truncate(room);
                found.sort_unstable_by(|a, b| a.0.key.cmp(&b.0.key));
                let last = found
                    .last()
                    .map(|(k, _)| k.key.to_string())
                    .unwrap_or_default();
                records.extend(
                    found
                        .into_iter()
                        .map(|(k, s)| (k.key.to_string(), s.to_entry())),
                );
                return Ok(Page::new(
                    records,
                    Some(Cursor::new(format!("{shard_idx}/{last}"))),
                ));
            }
            found.sort_unstable_by(|a, b| a.0.key.cmp(&b.0.key));
            records.extend(
                found
                    .into_iter()
                    .map(|(k, s)| (k.key.to_string(), s.to_entry())),
            );
            shard_idx += 1;
            after = None;
            if records.len() == limit {
                break;
            }
        }
        let next =
            (shard_idx < self.inner.shards.len()).then(|| Cursor::new(format!("{shard_idx}/")));
        Ok(Page::new(records, next))
    }

    fn set_capacity_now(&self, capacity: Capacity) -> Result<()> {
        let capacity = capacity.validate()?;
        let mut current = self.inner.capacity.lock();
        let old = Charging::for_capacity(*current);
        let new = Charging::for_capacity(capacity);
        let n = self.inner.shards.len();
        let total = new.total(capacity);
        self.inner.sweep_due();
        if old != new {
            self.inner.charging.store(pack(new), Ordering::Relaxed);
            // Re-charge every record under the new rule, with room to spare while doing
            // it, so that no record is evicted for the change of units alone.
            for shard in &self.inner.shards {
                shard.cache.set_capacity(UNBOUNDED);
                let keys: Vec<HKey> = shard.cache.iter().map(|(k, _)| k).collect();
                for k in keys {
                    let size_key = k.key.len() as u64;
                    let _ = shard.cache.entry(&k, None, |_, slot| {
                        slot.charge = new.charge(size_key + slot.value.len() as u64);
                        EntryAction::Retain(())
                    });
                }
            }
        }
        for (i, shard) in self.inner.shards.iter().enumerate() {
            shard.cache.set_capacity(share(total, n, i));
        }
        *current = capacity;
        drop(current);
        self.inner.shared.notify();
        Ok(())
    }

    fn stats_now(&self) -> Stats {
        self.inner.sweep_due();
        let (hits, misses) = self.inner.reads.totals();
        let mut stats = Stats::default();
        stats.hits = hits;
        stats.misses = misses;
        for shard in &self.inner.shards {
            let s = &shard.state;
            stats.records += shard.cache.len() as u64;
            stats.bytes += u64::try_from(s.bytes.load(Ordering::Relaxed)).unwrap_or(0);
            stats.inserts += s.inserts.load(Ordering::Relaxed);
            stats.updates += s.updates.load(Ordering::Relaxed);
            stats.deletes += s.deletes.load(Ordering::Relaxed);
            stats.evictions += s.evictions.load(Ordering::Relaxed);
            stats.expirations += s.expirations.load(Ordering::Relaxed);
        }
        stats
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Registry for MemoryRegistry {
    fn capabilities(&self) -> Capabilities {
        Capabilities::new("memory").with_limits(true, true, true)
    }

    fn limits(&self) -> Limits {
        self.inner.limits
    }

    async fn get_entry(&self, key: &str) -> Result<Option<Entry>> {
        self.get_now(key)
    }

    #[inline]
    fn get_ready(&self, key: &str) -> Option<Result<Option<Entry>>> {
        Some(self.get_now(key))
    }

    async fn put_opts(&self, key: &str, value: Bytes, options: PutOptions) -> Result<Version> {
        self.put_now(key, value, options)
    }

    async fn delete_opts(&self, key: &str, options: DeleteOptions) -> Result<bool> {
        self.delete_now(key, options)
    }

    async fn touch(&self, key: &str, expiry: Expiry) -> Result<Option<Version>> {
        self.touch_now(key, expiry)
    }

    async fn import(&self, key: &str, entry: Entry) -> Result<bool> {
        self.import_now(key, entry)
    }

    async fn get_many(&self, keys: &[&str]) -> Vec<Result<Option<Entry>>> {
        keys.iter().map(|k| self.get_now(k)).collect()
    }

    async fn put_many(&self, items: Vec<PutItem>) -> Vec<Result<Version>> {
        items
            .into_iter()
            .map(|item| self.put_now(&item.key, item.value, item.options))
            .collect()
    }

    async fn delete_many(&self, keys: &[&str]) -> Vec<Result<bool>> {
        keys.iter()
            .map(|k| self.delete_now(k, DeleteOptions::default()))
            .collect()
    }

    async fn scan(&self, prefix: &str, cursor: Option<&Cursor>, limit: usize) -> Result<Page> {
        self.scan_now(prefix, cursor, limit)
    }

    async fn count(&self) -> Result<u64> {
        self.inner.sweep_due();
        Ok(self.inner.shards.iter().map(|s| s.cache.len() as u64).sum())
    }

    async fn clear(&self) -> Result<()> {
        for shard in &self.inner.shards {
            shard.cache.clear();
            shard.state.clear_index();
            shard.state.bytes.store(0, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn stats(&self) -> Result<Stats> {
        Ok(self.stats_now())
    }

    async fn capacity(&self) -> Result<Capacity> {
        Ok(*self.inner.capacity.lock())
    }

    async fn set_capacity(&self, capacity: Capacity) -> Result<()> {
        self.set_capacity_now(capacity)
    }
}
