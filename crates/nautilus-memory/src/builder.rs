//! Building a memory registry: limits, clock, shard count, the sweep thread.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use nautilus_core::{Capacity, Clock, Error, Limits, Result};
use parking_lot::Mutex;

use crate::charging::{Charging, share};
use crate::counters::ReadCounters;
use crate::registry::{Inner, MemoryRegistry};
use crate::scan::Scans;
use crate::shard::{Listener, Removal, Shard, Shared};

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
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Self {
        MemoryRegistryBuilder {
            capacity: Capacity::unbounded(),
            limits: Limits::default(),
            clock,
            shards: None,
            sweep_interval: Some(Duration::from_secs(1)),
            listener: None,
        }
    }

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

    /// The number of shards (rounded up to a power of two, at most 65536). By
    /// default 8 per core,
    /// about one per 4096 records for large record limits (up to 1024; a scan walks
    /// one shard at a time, and a shard of a few thousand records stays in a core's
    /// cache), and fewer for small capacities so that each shard's share of the limit
    /// is not tiny. A registry built without a record limit that will hold millions of
    /// records scans faster with more shards; one whose limit will be lowered at run
    /// time far below the shard count borrows room between shards on most writes
    /// (see the crate docs), so keep it near the smallest limit.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = Some(n.clamp(1, MAX_SHARDS));
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
        let clock_floor = shared.now_ms();
        let inner = Arc::new(Inner {
            shards,
            mask: n - 1,
            shared,
            limits: self.limits,
            capacity: Mutex::new(capacity),
            charging: AtomicU64::new(charging.pack()),
            reads: ReadCounters::default(),
            scans: Scans::default(),
            sweeper: Mutex::new(None),
            closing: AtomicBool::new(false),
            clock_floor: AtomicU64::new(clock_floor),
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
        Ok(MemoryRegistry::from_inner(inner))
    }
}

/// Records per shard a large registry aims at: a scan snapshots one shard at a time,
/// and a snapshot of this many records stays within a core's cache (at 1M records,
/// 4k per shard scanned 1.5x faster than 62k per shard).
const RECORDS_PER_SHARD: u64 = 4096;

/// The most shards a registry gets by default.
const MAX_DEFAULT_SHARDS: usize = 1024;

/// The most shards a registry can be built with (a larger request is clamped).
const MAX_SHARDS: usize = 1 << 16;

/// 8 shards per core, more for large record limits (about [`RECORDS_PER_SHARD`]
/// each, up to [`MAX_DEFAULT_SHARDS`]), fewer for small limits. Without a record
/// limit the count stays at 8 per core: a limit set later at run time is split over
/// the shards, and one below the shard count has shards borrow room from each other.
fn default_shards(capacity: Capacity) -> usize {
    let cores = std::thread::available_parallelism().map_or(4, usize::from);
    let base = (cores * 8).clamp(8, 256);
    let mut n = match capacity.max_records {
        Some(r) => base.max(usize::try_from(r / RECORDS_PER_SHARD).unwrap_or(usize::MAX)),
        None => base,
    }
    .min(MAX_DEFAULT_SHARDS);
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

/// The background sweep: wakes every `every` until the registry is dropped.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_limits_get_few_shards_so_they_stay_exact() {
        assert_eq!(default_shards(Capacity::records(10)), 1);
        assert_eq!(default_shards(Capacity::records(1000)), 3);
        assert!(default_shards(Capacity::unbounded()) >= 8);
        assert!(default_shards(Capacity::unbounded()) <= 256);
        let bytes = Capacity::unbounded().with_max_bytes(Some(512 * 1024));
        assert_eq!(default_shards(bytes), 2);
    }

    #[test]
    fn large_limits_get_shards_of_a_few_thousand_records() {
        assert_eq!(
            default_shards(Capacity::records(2_000_000)),
            2_000_000 / 4096
        );
        assert_eq!(default_shards(Capacity::records(1 << 40)), 1024);
        let base = default_shards(Capacity::records(100_000));
        assert!((8..=256).contains(&base), "{base}");
    }

    #[test]
    fn the_shard_count_is_a_power_of_two() -> Result<()> {
        for asked in [1, 3, 5, 8, 100, usize::MAX] {
            let r = MemoryRegistry::builder()
                .shards(asked)
                .sweep_interval(None)
                .build()?;
            assert!(r.shard_count().is_power_of_two());
            assert!(r.shard_count() >= asked.min(MAX_SHARDS));
            // Usable, even when the request was absurd.
            r.put_now(
                "k",
                nautilus_core::Bytes::from_static(b"v"),
                Default::default(),
            )?;
        }
        Ok(())
    }

    #[test]
    fn a_zero_limit_is_refused() {
        let r = MemoryRegistry::builder().max_records(0).build();
        assert!(matches!(r, Err(Error::InvalidArgument { .. })));
    }
}
