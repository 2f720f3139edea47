//! The reference backend broken on purpose, one promise at a time: what
//! `broken_backends.rs` runs the conformance checks against.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nautilus_core::testkit::MapRegistry;
use nautilus_core::{
    Bytes, Capabilities, Capacity, CapacityLimit, Clock, Condition, Cursor, DeleteOptions, Entry,
    Error, Expiry, Limits, ManualClock, Page, PutItem, PutOptions, Registry, Result, Stats,
    Timestamp, Version, async_trait, batch,
};

/// The one promise a [`Broken`] registry breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// None: the reference as it is.
    Nothing,
    /// Deletes leave no tombstone, whatever the options say.
    ForgetsTombstones,
    /// Imported tombstones are kept forever, whatever their collection time.
    NeverCollectsTombstones,
    /// An already-expired import is kept somewhere and counted.
    StoresExpiredImports,
    /// Imports skip the value limit that puts honour.
    ImportIgnoresValueLimit,
    /// A cursor it cannot read restarts the scan instead of being refused.
    AcceptsAnyCursor,
    /// Claims a refusing byte limit, remembers it, never enforces it.
    IgnoresByteLimit,
    /// Enforces its record limit on puts only.
    ImportIgnoresCapacity,
    /// Counts no inserts, updates or deletes.
    CountsNoWrites,
    /// Counts the reads of single gets only, not those of batches.
    CountsNoBatchReads,
    /// Refuses puts past its capacity naming another limit than it reports.
    MisnamesTheLimit,
    /// Deletes under `Condition::Absent` as if unconditional.
    AbsentDeleteDeletes,
    /// Writes without waiting ignore their condition.
    ReadyPutIgnoresConditions,
    /// Writes without waiting, then hands the value back as if it had not.
    ReadyPutWritesAndHandsBack,
    /// Takes imports of any version, dating those from far ahead at the horizon.
    ImportsAnyVersion,
    /// Imports without waiting skip the value limit.
    ReadyImportIgnoresValueLimit,
    /// Imports without waiting, then hands the entry back as if it had not.
    ReadyImportWritesAndHandsBack,
    /// Claims its synchronous methods always answer, and hands back.
    ClaimsReadyButWaits,
    /// Keeps tombstones for a second at most, whatever the delete asked.
    ShortensTombstones,
    /// Drops the expiry of the items of a batch (refusing a zero TTL still).
    BatchesDropTtls,
    /// Lists records at a made-up version, without their expiry.
    ScanForgetsVersions,
    /// Counts an applied import as an insert.
    CountsImports,
    /// Takes a zero TTL on a touch as a millisecond.
    TouchTakesZeroTtl,
    /// Takes an instant in the past on a touch as "never expires".
    TouchTakesPastInstant,
    /// Lists every key a scan page returns as skipped too.
    SkippedListsLiveKeys,
    /// Tells another incarnation at every call.
    IncarnationChanges,
    /// Drops the tombstone of a delete under a condition.
    ConditionalDeleteDropsTombstone,
    /// Counts a record removed by `delete_many` as still there.
    DeleteManyKeepsCount,
    /// Stores the items of a batch with an instant in the past as never expiring.
    BatchPutTakesPastInstant,
    /// Tells half the bytes it holds.
    HalvesBytes,
    /// Answers a batch's reads without their expiry.
    BatchReadsDropExpiry,
    /// Answers `true` for every valid key of a batch delete.
    DeleteManyClaimsAll,
    /// Clears by deleting each live record, leaving the tombstones.
    ClearKeepsTombstones,
    /// Counts every read that found nothing as an eviction.
    CountsMissesAsEvictions,
}

/// The value limit the [`Broken`] registry says it has; its inner one is larger.
const SAID_MAX_VALUE: usize = 1024;

#[derive(Debug)]
pub(crate) struct Broken {
    inner: MapRegistry,
    clock: ManualClock,
    fault: Fault,
    /// Expired imports "stored" ([`Fault::StoresExpiredImports`]).
    ghosts: AtomicU64,
    /// Imports counted as inserts ([`Fault::CountsImports`]).
    imports: AtomicU64,
    /// The limit set but not passed on ([`Fault::IgnoresByteLimit`],
    /// [`Fault::ImportIgnoresCapacity`]).
    said: std::sync::Mutex<Capacity>,
    /// Hits and misses of batches ([`Fault::CountsNoBatchReads`]).
    batch_hits: AtomicU64,
    batch_misses: AtomicU64,
    /// Incarnations told ([`Fault::IncarnationChanges`]), records `delete_many`
    /// removed but still counts ([`Fault::DeleteManyKeepsCount`]).
    told: AtomicU64,
    uncounted: AtomicU64,
}

impl Broken {
    pub(crate) fn new(fault: Fault, clock: &ManualClock) -> Self {
        let limits = Limits::default().with_max_value_bytes(
            if matches!(
                fault,
                Fault::ImportIgnoresValueLimit | Fault::ReadyImportIgnoresValueLimit
            ) {
                1 << 20
            } else {
                SAID_MAX_VALUE
            },
        );
        Broken {
            inner: MapRegistry::with_clock(Arc::new(clock.clone())).with_limits(limits),
            clock: clock.clone(),
            fault,
            ghosts: AtomicU64::new(0),
            imports: AtomicU64::new(0),
            said: std::sync::Mutex::new(Capacity::unbounded()),
            batch_hits: AtomicU64::new(0),
            batch_misses: AtomicU64::new(0),
            told: AtomicU64::new(0),
            uncounted: AtomicU64::new(0),
        }
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Registry for Broken {
    fn capabilities(&self) -> Capabilities {
        // Its synchronous methods hand back outside the faults that break them.
        self.inner
            .capabilities()
            .with_answers_ready(self.fault == Fault::ClaimsReadyButWaits)
    }

    fn limits(&self) -> Limits {
        Limits::default().with_max_value_bytes(SAID_MAX_VALUE)
    }

    async fn get_entry(&self, key: &str) -> Result<Option<Entry>> {
        self.inner.get_entry(key).await
    }

    fn get_ready(&self, _key: &str) -> Option<Result<Option<Entry>>> {
        None
    }

    fn get_value_ready(&self, _key: &str) -> Option<Result<Option<Bytes>>> {
        None
    }

    async fn put_opts(&self, key: &str, value: Bytes, options: PutOptions) -> Result<Version> {
        self.limits().check_record(key, value.len())?;
        let said = self.said.lock().unwrap().max_records;
        if let Some(max) = said.filter(|_| self.fault == Fault::ImportIgnoresCapacity)
            && self.inner.get_entry(key).await?.is_none()
            && self.inner.count().await? >= max
        {
            return Err(Error::CapacityExceeded {
                limit: CapacityLimit::Records,
                max,
            });
        }
        match self.inner.put_opts(key, value, options).await {
            // A share of the limit, as a node of a router might know it.
            Err(Error::CapacityExceeded { limit, max })
                if self.fault == Fault::MisnamesTheLimit =>
            {
                Err(Error::CapacityExceeded {
                    limit,
                    max: max / 2,
                })
            }
            other => other,
        }
    }

    fn put_ready(
        &self,
        key: &str,
        value: Bytes,
        options: PutOptions,
    ) -> std::result::Result<Result<Version>, Bytes> {
        match self.fault {
            Fault::ReadyPutIgnoresConditions => {
                self.inner
                    .put_ready(key, value, options.condition(Condition::Always))
            }
            Fault::ReadyPutWritesAndHandsBack => {
                let _ = self.inner.put_ready(key, value.clone(), options);
                Err(value)
            }
            // The other faults live on the awaited path.
            _ => Err(value),
        }
    }

    async fn delete_opts(&self, key: &str, options: DeleteOptions) -> Result<Option<Version>> {
        let mut options = options;
        if self.fault == Fault::ForgetsTombstones {
            options.tombstone = None;
        }
        if self.fault == Fault::AbsentDeleteDeletes && options.condition == Condition::Absent {
            options.condition = Condition::Always;
        }
        if self.fault == Fault::ConditionalDeleteDropsTombstone
            && options.condition != Condition::Always
        {
            options.tombstone = None;
        }
        if self.fault == Fault::ShortensTombstones {
            options.tombstone = options
                .tombstone
                .map(|grace| grace.min(std::time::Duration::from_secs(1)));
        }
        self.inner.delete_opts(key, options).await
    }

    async fn touch(&self, key: &str, expiry: Expiry) -> Result<Option<Version>> {
        match expiry {
            Expiry::At(t)
                if t <= self.clock.now() && self.fault == Fault::TouchTakesPastInstant =>
            {
                self.inner.touch(key, Expiry::Never).await
            }
            Expiry::After(ttl) if ttl.is_zero() && self.fault == Fault::TouchTakesZeroTtl => {
                let ms = std::time::Duration::from_millis(1);
                self.inner.touch(key, Expiry::After(ms)).await
            }
            _ => self.inner.touch(key, expiry).await,
        }
    }

    fn import_ready(&self, key: &str, entry: Entry) -> std::result::Result<Result<bool>, Entry> {
        match self.fault {
            // Its inner value limit is larger than the one it reports.
            Fault::ReadyImportIgnoresValueLimit => self.inner.import_ready(key, entry),
            Fault::ReadyImportWritesAndHandsBack => {
                let _ = self.inner.import_ready(key, entry.clone());
                Err(entry)
            }
            // The other faults live on the awaited path.
            _ => Err(entry),
        }
    }

    async fn import(&self, key: &str, entry: Entry) -> Result<bool> {
        match self.fault {
            Fault::CountsImports => {
                let applied = self.inner.import(key, entry).await?;
                if applied {
                    self.imports.fetch_add(1, Ordering::Relaxed);
                }
                Ok(applied)
            }
            Fault::NeverCollectsTombstones if entry.is_tombstone() => {
                let forever = Timestamp::from_millis(u64::MAX / 2);
                self.inner
                    .import(key, Entry::tombstone(entry.version, Some(forever)))
                    .await
            }
            Fault::StoresExpiredImports
                if !entry.is_tombstone() && entry.is_expired_at(self.clock.now()) =>
            {
                let applied = self.inner.import(key, entry).await?;
                if applied {
                    self.ghosts.fetch_add(1, Ordering::Relaxed);
                }
                Ok(applied)
            }
            Fault::ImportIgnoresValueLimit => self.inner.import(key, entry).await,
            Fault::ReadyImportIgnoresValueLimit => {
                // The awaited path keeps the limit it reports.
                self.limits().check_import(key, &entry, self.clock.now())?;
                self.inner.import(key, entry).await
            }
            Fault::ImportsAnyVersion => {
                // Dated at the horizon instead of refused.
                let horizon = Version::from_raw(
                    (self.clock.now().as_millis() + Version::MAX_AHEAD.as_millis() as u64)
                        << Version::COUNTER_BITS,
                );
                let version = entry.version.min(horizon);
                let held = if entry.is_tombstone() {
                    Entry::tombstone(version, entry.expires_at)
                } else {
                    Entry::new(entry.value, version, entry.expires_at)
                };
                self.inner.import(key, held).await
            }
            _ => {
                self.limits().check_record(key, entry.value.len())?;
                self.inner.import(key, entry).await
            }
        }
    }

    async fn get_many(&self, keys: &[&str]) -> Vec<Result<Option<Entry>>> {
        let mut got = self.inner.get_many(keys).await;
        if self.fault == Fault::BatchReadsDropExpiry {
            for entry in got.iter_mut().flatten().flatten() {
                entry.expires_at = None;
            }
        }
        let hits = got.iter().filter(|r| matches!(r, Ok(Some(_)))).count();
        let misses = got.iter().filter(|r| matches!(r, Ok(None))).count();
        self.batch_hits.fetch_add(hits as u64, Ordering::Relaxed);
        self.batch_misses
            .fetch_add(misses as u64, Ordering::Relaxed);
        got
    }

    async fn put_many(&self, items: Vec<PutItem>) -> Vec<Result<Version>> {
        let mut items = items;
        if self.fault == Fault::BatchPutTakesPastInstant {
            for item in &mut items {
                if matches!(item.options.expiry, Expiry::At(t) if t <= self.clock.now()) {
                    item.options.expiry = Expiry::Never;
                }
            }
            return self.inner.put_many(items).await;
        }
        if self.fault == Fault::BatchesDropTtls {
            // A zero TTL still refused: the fault is in storing the others.
            for item in &mut items {
                if !matches!(item.options.expiry, Expiry::After(d) if d.is_zero()) {
                    item.options.expiry = Expiry::Never;
                }
            }
        }
        // Through this registry's own puts, so that their faults apply to batches too.
        batch::put_each(self, items).await
    }

    async fn delete_many(&self, keys: &[&str]) -> Vec<Result<bool>> {
        let mut out = self.inner.delete_many(keys).await;
        if self.fault == Fault::DeleteManyClaimsAll {
            for removed in out.iter_mut().flatten() {
                *removed = true;
            }
        }
        if self.fault == Fault::DeleteManyKeepsCount {
            let removed = out.iter().filter(|d| matches!(d, Ok(true))).count();
            self.uncounted.fetch_add(removed as u64, Ordering::Relaxed);
        }
        out
    }

    async fn scan(&self, prefix: &str, cursor: Option<&Cursor>, limit: usize) -> Result<Page> {
        match self.inner.scan(prefix, cursor, limit).await {
            Err(Error::InvalidArgument { .. })
                if cursor.is_some() && self.fault == Fault::AcceptsAnyCursor =>
            {
                self.inner.scan(prefix, None, limit).await
            }
            Ok(page) if self.fault == Fault::SkippedListsLiveKeys => {
                let keys = page.records.iter().map(|(k, _)| k.clone()).collect();
                Ok(page.with_skipped(keys))
            }
            Ok(mut page) if self.fault == Fault::ScanForgetsVersions => {
                for (_, entry) in &mut page.records {
                    entry.version = Version::from_raw(1);
                    entry.expires_at = None;
                }
                Ok(page)
            }
            other => other,
        }
    }

    async fn count(&self) -> Result<u64> {
        Ok(self.inner.count().await?
            + self.ghosts.load(Ordering::Relaxed)
            + self.uncounted.load(Ordering::Relaxed))
    }

    async fn clear(&self) -> Result<()> {
        self.ghosts.store(0, Ordering::Relaxed);
        if self.fault == Fault::ClearKeepsTombstones {
            let page = self.inner.scan("", None, 10_000).await?;
            let keys: Vec<&str> = page.records.iter().map(|(k, _)| k.as_str()).collect();
            self.inner.delete_many(&keys).await;
            return Ok(());
        }
        self.inner.clear().await
    }

    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }

    fn incarnation(&self) -> Option<u64> {
        if self.fault == Fault::IncarnationChanges {
            return Some(self.told.fetch_add(1, Ordering::Relaxed));
        }
        self.inner.incarnation()
    }

    async fn stats(&self) -> Result<Stats> {
        let mut stats = self.inner.stats().await?;
        stats.records += self.ghosts.load(Ordering::Relaxed);
        stats.inserts += self.imports.load(Ordering::Relaxed);
        if self.fault == Fault::CountsNoWrites {
            stats.inserts = 0;
            stats.updates = 0;
            stats.deletes = 0;
        }
        if self.fault == Fault::CountsNoBatchReads {
            stats.hits -= self.batch_hits.load(Ordering::Relaxed);
            stats.misses -= self.batch_misses.load(Ordering::Relaxed);
        }
        if self.fault == Fault::HalvesBytes {
            stats.bytes /= 2;
        }
        if self.fault == Fault::CountsMissesAsEvictions {
            stats.evictions = stats.misses;
        }
        Ok(stats)
    }

    async fn capacity(&self) -> Result<Capacity> {
        let said = *self.said.lock().unwrap();
        match self.fault {
            Fault::IgnoresByteLimit => {
                Ok(self.inner.capacity().await?.with_max_bytes(said.max_bytes))
            }
            Fault::ImportIgnoresCapacity => Ok(said),
            _ => self.inner.capacity().await,
        }
    }

    async fn set_capacity(&self, capacity: Capacity) -> Result<()> {
        match self.fault {
            Fault::IgnoresByteLimit => {
                self.said.lock().unwrap().max_bytes = capacity.validate()?.max_bytes;
                self.inner.set_capacity(capacity.with_max_bytes(None)).await
            }
            Fault::ImportIgnoresCapacity => {
                *self.said.lock().unwrap() = capacity.validate()?;
                Ok(())
            }
            _ => self.inner.set_capacity(capacity).await,
        }
    }
}
