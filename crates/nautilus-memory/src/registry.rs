//! The memory registry: its shared state, its bookkeeping operations (stats, capacity,
//! clear) and the `Registry` trait, which forwards to the synchronous operations in
//! `read`, `ops` and `import`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nautilus_core::{
    Bytes, Capabilities, Capacity, Cursor, DeleteOptions, Entry, Expiry, Limits, Page, PutItem,
    PutOptions, Registry, Result, Stats, SystemClock, Version, async_trait,
};
use parking_lot::Mutex;
use quick_cache::sync::EntryAction;

use crate::builder::MemoryRegistryBuilder;
use crate::charging::{Charging, UNBOUNDED, share};
use crate::counters::ReadCounters;
use crate::key::HKey;
use crate::scan::Scans;
use crate::shard::{Shard, Shared};

/// The in-process registry on [quick_cache](https://docs.rs/quick_cache).
///
/// Cloning is cheap and shares the same records. See the crate docs for the eviction
/// policy, capacity and expiry semantics.
#[derive(Clone)]
pub struct MemoryRegistry {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) shards: Box<[Shard]>,
    pub(crate) mask: usize,
    pub(crate) shared: Arc<Shared>,
    pub(crate) limits: Limits,
    pub(crate) capacity: Mutex<Capacity>,
    /// [`Charging::pack`]ed.
    pub(crate) charging: AtomicU64,
    pub(crate) reads: ReadCounters,
    pub(crate) scans: Scans,
    pub(crate) sweeper: Mutex<Option<std::thread::Thread>>,
    pub(crate) closing: AtomicBool,
    /// A reading of the clock no later than the time now (ms): the one at build,
    /// raised by the imports that read it (see `import::check_import`).
    pub(crate) clock_floor: AtomicU64,
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

impl Inner {
    /// Reclaims every expired record of the shards with something due, then delivers
    /// the notifications; returns how many. Costs time in proportion to what is due.
    pub(crate) fn sweep_due(&self) -> usize {
        let now = self.shared.now_ms();
        // Every shard, due or not: one with nothing due may be in another sweep's
        // hands (the background one, on an earlier clock reading), which the sweep
        // waits for before it decides, so that what follows (a count) does not see
        // records that sweep is removing or filing again.
        let n = self.shards.iter().map(|s| s.sweep(now)).sum();
        self.scans.drop_idle(now);
        self.shared.notify();
        n
    }
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
        MemoryRegistryBuilder::new(Arc::new(SystemClock))
    }

    pub(crate) fn from_inner(inner: Arc<Inner>) -> Self {
        MemoryRegistry { inner }
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

    /// The shard of a key hash. Middle bits: quick_cache's table uses the low and top
    /// bits of the same hash.
    #[inline]
    pub(crate) fn shard(&self, hash: u64) -> &Shard {
        &self.inner.shards[shard_index(hash, self.inner.mask)]
    }

    #[inline]
    pub(crate) fn charging(&self) -> Charging {
        Charging::unpack(self.inner.charging.load(Ordering::Relaxed))
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
            self.inner.charging.store(new.pack(), Ordering::Relaxed);
            // Re-charge every record under the new rule, with room to spare while doing
            // it, so that no record is evicted for the change of units alone.
            for shard in &self.inner.shards {
                shard.set_capacity(UNBOUNDED);
                let keys: Vec<HKey> = shard.cache.iter().map(|(k, _)| k).collect();
                for k in keys {
                    let size_key = k.len() as u64;
                    let _ = shard.cache.entry(&k, None, |_, slot| {
                        slot.set_charge(new.charge(size_key + slot.value.len() as u64));
                        EntryAction::Retain(())
                    });
                }
            }
        }
        for (i, shard) in self.inner.shards.iter().enumerate() {
            shard.set_capacity(share(total, n, i));
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

    /// Removes every record. The index is emptied before the cache, so a write racing
    /// the clear that stays is indexed (emptied after, its record was never swept and
    /// was counted after it expired; found from outside), and the bytes are then
    /// those of the records that stayed. (Removing records one by one to take their
    /// bytes off exactly cost 20x as much: 2 s at 10M records.)
    fn clear_now(&self) {
        for shard in &self.inner.shards {
            shard.state.clear_index();
            shard.tombstones.clear();
            shard.cache.clear();
            let stayed: i64 = shard
                .cache
                .iter()
                .map(|(k, slot)| slot.size(k.len()) as i64)
                .sum();
            shard.state.bytes.store(stayed, Ordering::Relaxed);
        }
        self.inner.scans.clear();
    }
}

/// Which of `mask + 1` shards holds a key of this hash.
#[inline]
pub(crate) fn shard_index(hash: u64, mask: usize) -> usize {
    (hash >> 32) as usize & mask
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Registry for MemoryRegistry {
    fn capabilities(&self) -> Capabilities {
        Capabilities::new("memory")
            .with_max_records(true)
            .with_max_bytes(true)
            .with_evicts(true)
            .with_answers_ready(true)
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

    /// The value alone, so that an awaited `get` moves four words, not the entry.
    #[inline]
    fn get_value_ready(&self, key: &str) -> Option<Result<Option<Bytes>>> {
        // A match, not `map(|e| e.map(..))`: the closures measured 3 more stores per
        // read (67 instead of 64), which at a million records is past the buffer.
        Some(match self.get_now(key) {
            Ok(Some(entry)) => Ok(Some(entry.value)),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        })
    }

    async fn put_opts(&self, key: &str, value: Bytes, options: PutOptions) -> Result<Version> {
        self.put_now(key, value, options)
    }

    #[inline]
    fn put_ready(
        &self,
        key: &str,
        value: Bytes,
        options: PutOptions,
    ) -> std::result::Result<Result<Version>, Bytes> {
        Ok(self.put_now(key, value, options))
    }

    async fn delete_opts(&self, key: &str, options: DeleteOptions) -> Result<Option<Version>> {
        self.delete_now(key, options)
    }

    async fn touch(&self, key: &str, expiry: Expiry) -> Result<Option<Version>> {
        self.touch_now(key, expiry)
    }

    async fn import(&self, key: &str, entry: Entry) -> Result<bool> {
        self.import_now(key, entry)
    }

    #[inline]
    fn import_ready(&self, key: &str, entry: Entry) -> std::result::Result<Result<bool>, Entry> {
        Ok(self.import_now(key, entry))
    }

    async fn get_many(&self, keys: &[&str]) -> Vec<Result<Option<Entry>>> {
        self.get_many_now(keys)
    }

    async fn put_many(&self, items: Vec<PutItem>) -> Vec<Result<Version>> {
        self.put_many_now(items)
    }

    async fn delete_many(&self, keys: &[&str]) -> Vec<Result<bool>> {
        self.delete_many_now(keys)
    }

    async fn scan(&self, prefix: &str, cursor: Option<&Cursor>, limit: usize) -> Result<Page> {
        let now = self.inner.shared.now_ms();
        self.inner
            .scans
            .page(&self.inner.shards, prefix, cursor, limit, now)
    }

    async fn count(&self) -> Result<u64> {
        self.inner.sweep_due();
        Ok(self.inner.shards.iter().map(|s| s.cache.len() as u64).sum())
    }

    async fn clear(&self) -> Result<()> {
        self.clear_now();
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    /// In-process: the records live as long as the registry.
    fn incarnation(&self) -> Option<u64> {
        None
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::hash;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_key_has_one_shard_in_range(key in ".{0,64}", bits in 0u32..9) {
            let mask = (1usize << bits) - 1;
            let i = shard_index(hash(&key), mask);
            prop_assert!(i <= mask);
            prop_assert_eq!(i, shard_index(hash(&key), mask));
        }
    }

    #[test]
    fn keys_spread_over_the_shards() {
        let mask = 15;
        let mut counts = [0u32; 16];
        for i in 0..16_000 {
            counts[shard_index(hash(&format!("user:{i}")), mask)] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "unbalanced shards: {counts:?}");
        }
    }

    #[test]
    fn a_sweep_in_a_running_expiry_bucket_leaves_nothing_due_until_the_next_expiry()
    -> nautilus_core::Result<()> {
        use nautilus_core::{Clock, Expiry, ManualClock, PutOptions, Timestamp};
        let clock = ManualClock::new(1 << 40);
        let r = MemoryRegistry::builder()
            .clock(std::sync::Arc::new(clock.clone()))
            .sweep_interval(None)
            .build()?;
        let start = clock.now().as_millis();
        for i in 0..2_000u64 {
            let at = Timestamp::from_millis(start + 100 + i % 200);
            r.put_now(
                &format!("k{i}"),
                nautilus_core::Bytes::from_static(b"v"),
                PutOptions::default().expiry(Expiry::At(at)),
            )?;
        }
        let due = |r: &MemoryRegistry| {
            let now = r.inner.shared.now_ms();
            r.inner
                .shards
                .iter()
                .filter(|s| s.state.is_due(now))
                .count()
        };
        // Inside the records' bucket, before any is due: one sweep files them at
        // their expiries, and no shard is due again (every write into a full shard,
        // and every count, swept the whole bucket again until it ended).
        clock.advance(std::time::Duration::from_millis(50));
        if due(&r) > 0 {
            assert_eq!(r.inner.sweep_due(), 0);
        }
        assert_eq!(due(&r), 0, "shards due again with nothing expired");
        clock.advance(std::time::Duration::from_millis(50));
        assert!(due(&r) > 0);
        assert_eq!(
            r.inner.sweep_due(),
            10,
            "the records due at the first instant"
        );
        clock.advance(std::time::Duration::from_millis(200));
        assert_eq!(r.inner.sweep_due(), 1_990);
        assert_eq!(due(&r), 0);
        Ok(())
    }

    #[test]
    fn the_hash_is_pinned() {
        // Shard placement must not change between releases of xxhash-rust.
        assert_eq!(hash(""), 0x2d06_8005_38d3_94c2);
    }
}
