//! A node behind a link a test can cut, slow down or break on purpose, and a router
//! over three memory nodes with the last one behind such a link.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nautilus_core::{
    Bytes, Capabilities, Capacity, Cursor, DeleteOptions, DynRegistry, Entry, Error, Expiry,
    Limits, Page, PutItem, PutOptions, Registry, RegistryExt, Result, Stats, Version,
};
use nautilus_memory::MemoryRegistry;
use nautilus_shard::{NodeState, ShardedRegistry};

/// A node as one router sees it: while `cut`, every call fails as if the network
/// between them were down.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) inner: DynRegistry,
    pub(crate) cut: Arc<AtomicBool>,
    /// Pings answer even while cut: a node that looks alive but fails every call.
    pub(crate) pings_anyway: bool,
    /// Broken on purpose, while set: pings panic.
    pub(crate) panicking_pings: Arc<AtomicBool>,
    /// Broken on purpose, while set: batch reads answer half their keys.
    pub(crate) short_batches: Arc<AtomicBool>,
    /// Broken on purpose: scans answer empty pages that never end (each with a new
    /// cursor).
    pub(crate) endless_scans: bool,
    /// Broken on purpose: scans answer their first page again and again, with the
    /// cursor they were sent.
    pub(crate) stuck_scans: bool,
    /// Broken on purpose: every scan page under a prefix also holds this key, outside
    /// it.
    pub(crate) foreign_scans: Option<String>,
    /// Broken on purpose, while set: single-key calls never answer (pings do).
    pub(crate) hanging: Arc<AtomicBool>,
    /// Imports to fail (`Unavailable`) before they go through again: a late hand-back.
    pub(crate) failing_imports: Arc<std::sync::atomic::AtomicUsize>,
    /// Milliseconds each import waits before it runs: a slow node.
    pub(crate) slow_imports_ms: Arc<std::sync::atomic::AtomicU64>,
    /// Milliseconds each put waits before it runs.
    pub(crate) slow_puts_ms: Arc<std::sync::atomic::AtomicU64>,
    /// Puts still to delay by 50 ms, whatever `slow_puts_ms` says: the first of two
    /// writes sent at once lands last.
    pub(crate) slow_first_puts: Arc<std::sync::atomic::AtomicUsize>,
    /// Puts and imports that reached this link so far (slow or not).
    pub(crate) writes_seen: Arc<std::sync::atomic::AtomicUsize>,
    /// A write that lands on the node just before the next import does: another
    /// writer's, racing the import.
    pub(crate) put_before_import: Arc<parking_lot::Mutex<Option<(String, Bytes)>>>,
    /// While set, puts are held and fail with `Timeout`: a node frozen with them in
    /// flight, which runs them when it thaws (the test lands them).
    pub(crate) holding_puts: Arc<AtomicBool>,
    pub(crate) held_puts: Arc<parking_lot::Mutex<Vec<(String, Bytes)>>>,
    /// While set, pings fail (calls still go through): a node its checks cannot
    /// reach for a moment.
    pub(crate) failing_pings: Arc<AtomicBool>,
    /// While set, reads and imports answer without waiting, as an in-process node's
    /// do (its capabilities say so).
    pub(crate) ready: Arc<AtomicBool>,
    /// Reads still to answer nothing: reads that reached the node just before a
    /// write's copy did.
    pub(crate) stale_reads: Arc<std::sync::atomic::AtomicUsize>,
    /// Imports still to land twice, the first copy just before the import itself (a
    /// read's repair carrying the same record, racing it): the import is then refused.
    pub(crate) doubled_imports: Arc<std::sync::atomic::AtomicUsize>,
    /// A write to make on another node right after the next import lands here, then
    /// a pause of a few milliseconds: a write racing whoever sent the import.
    #[allow(clippy::type_complexity)]
    pub(crate) put_after_import: Arc<parking_lot::Mutex<Option<(DynRegistry, String, Bytes)>>>,
    /// A key to delete on another node right after the next import lands here: a
    /// stand-in's copy removed once handed back, racing whoever sent the import.
    pub(crate) delete_after_import: Arc<parking_lot::Mutex<Option<(DynRegistry, String)>>>,
    /// Scans wait while a writer holds this lock: a source a migration cannot walk yet.
    pub(crate) scan_gate: Arc<tokio::sync::RwLock<()>>,
    /// Counts wait while a writer holds this lock: a node slow to count.
    pub(crate) count_gate: Arc<tokio::sync::RwLock<()>>,
    /// Keys whose copies here are corrupt: reads answer `Corrupt`, and scans never
    /// return them but list them all as skipped on their last page, however small,
    /// until an import replaces them.
    pub(crate) corrupt: Arc<parking_lot::Mutex<Vec<String>>>,
}

/// Sleeps `ms` milliseconds (not at all for 0): a slow node's delay.
async fn wait_ms(ms: u64) {
    if ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

/// Takes one from `counter` if it is above 0: whether this call is one of those it
/// still counts.
fn take_one(counter: &std::sync::atomic::AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

impl Link {
    pub(crate) fn new(inner: DynRegistry, cut: &Arc<AtomicBool>) -> Self {
        Link {
            inner,
            cut: Arc::clone(cut),
            pings_anyway: false,
            panicking_pings: Arc::default(),
            short_batches: Arc::default(),
            endless_scans: false,
            stuck_scans: false,
            foreign_scans: None,
            hanging: Arc::default(),
            failing_imports: Arc::default(),
            slow_imports_ms: Arc::default(),
            slow_puts_ms: Arc::default(),
            slow_first_puts: Arc::default(),
            writes_seen: Arc::default(),
            put_before_import: Arc::default(),
            holding_puts: Arc::default(),
            held_puts: Arc::default(),
            failing_pings: Arc::default(),
            ready: Arc::default(),
            stale_reads: Arc::default(),
            doubled_imports: Arc::default(),
            put_after_import: Arc::default(),
            delete_after_import: Arc::default(),
            scan_gate: Arc::default(),
            count_gate: Arc::default(),
            corrupt: Arc::default(),
        }
    }

    /// [`Link::check`], after hanging forever while [`Link::hanging`] is set.
    async fn pass(&self) -> Result<()> {
        if self.hanging.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
        self.check()
    }
}

impl Link {
    /// `Corrupt` if this node's copy of `key` is (see [`Link::corrupt`]).
    fn readable(&self, key: &str) -> Result<()> {
        if self.corrupt.lock().iter().any(|k| k == key) {
            return Err(Error::corrupt(key, "bytes this node did not write"));
        }
        Ok(())
    }

    fn check(&self) -> Result<()> {
        if self.cut.load(Ordering::Relaxed) {
            return Err(Error::Unavailable {
                node: "partitioned".into(),
                source: "the link to this node is cut".into(),
            });
        }
        Ok(())
    }
}

#[nautilus_core::async_trait]
impl nautilus_core::Registry for Link {
    fn capabilities(&self) -> Capabilities {
        // Calls through a link wait, unless its imports are set to answer at once.
        self.inner
            .capabilities()
            .with_answers_ready(self.ready.load(Ordering::Relaxed))
    }
    fn limits(&self) -> Limits {
        self.inner.limits()
    }
    async fn get_entry(&self, key: &str) -> Result<Option<Entry>> {
        self.pass().await?;
        if take_one(&self.stale_reads) {
            return Ok(None);
        }
        self.readable(key)?;
        self.inner.get_entry(key).await
    }
    fn get_ready(&self, key: &str) -> Option<Result<Option<Entry>>> {
        if !self.ready.load(Ordering::Relaxed) {
            return None;
        }
        if let Err(e) = self.check().and_then(|()| self.readable(key)) {
            return Some(Err(e));
        }
        self.inner.get_ready(key)
    }
    // Calls through a link wait, as over a network.
    fn put_ready(
        &self,
        _key: &str,
        value: Bytes,
        _options: PutOptions,
    ) -> std::result::Result<Result<Version>, Bytes> {
        Err(value)
    }
    async fn put_opts(&self, key: &str, value: Bytes, options: PutOptions) -> Result<Version> {
        self.pass().await?;
        self.writes_seen.fetch_add(1, Ordering::Relaxed);
        if self.holding_puts.load(Ordering::Relaxed) {
            self.held_puts.lock().push((key.to_owned(), value));
            return Err(Error::Timeout {
                op: "put",
                after: std::time::Duration::from_millis(400),
            });
        }
        wait_ms(self.slow_puts_ms.load(Ordering::Relaxed)).await;
        if take_one(&self.slow_first_puts) {
            wait_ms(50).await;
        }
        self.inner.put_opts(key, value, options).await
    }
    async fn delete_opts(&self, key: &str, options: DeleteOptions) -> Result<Option<Version>> {
        self.pass().await?;
        self.inner.delete_opts(key, options).await
    }
    async fn touch(&self, key: &str, expiry: Expiry) -> Result<Option<Version>> {
        self.pass().await?;
        self.inner.touch(key, expiry).await
    }
    fn import_ready(&self, key: &str, entry: Entry) -> std::result::Result<Result<bool>, Entry> {
        if !self.ready.load(Ordering::Relaxed) {
            return Err(entry);
        }
        if let Err(e) = self.check() {
            return Ok(Err(e));
        }
        // A corrupt copy is replaced on the awaited path.
        if self.readable(key).is_err() {
            return Err(entry);
        }
        self.inner.import_ready(key, entry)
    }
    async fn import(&self, key: &str, entry: Entry) -> Result<bool> {
        self.pass().await?;
        self.writes_seen.fetch_add(1, Ordering::Relaxed);
        // A corrupt copy holds no version: the import replaces it.
        let was_corrupt = {
            let mut corrupt = self.corrupt.lock();
            let before = corrupt.len();
            corrupt.retain(|k| k != key);
            corrupt.len() < before
        };
        if was_corrupt {
            self.inner.delete(key).await?;
        }
        let racing = self.put_before_import.lock().take();
        if let Some((k, v)) = racing {
            self.inner.put(&k, v).await?;
        }
        wait_ms(self.slow_imports_ms.load(Ordering::Relaxed)).await;
        if take_one(&self.failing_imports) {
            return Err(Error::Unavailable {
                node: "flaky".into(),
                source: "an import failed on purpose".into(),
            });
        }
        if take_one(&self.doubled_imports) {
            self.inner.import(key, entry.clone()).await?;
        }
        let landed = self.inner.import(key, entry).await;
        let racing = self.put_after_import.lock().take();
        if let Some((node, k, v)) = racing {
            node.put(&k, v).await?;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let removed = self.delete_after_import.lock().take();
        if let Some((node, k)) = removed {
            node.delete(&k).await?;
        }
        landed
    }
    async fn get_many(&self, keys: &[&str]) -> Vec<Result<Option<Entry>>> {
        match self.check() {
            Ok(()) if self.short_batches.load(Ordering::Relaxed) => {
                self.inner.get_many(&keys[..keys.len() / 2]).await
            }
            Ok(()) => {
                let mut answers = self.inner.get_many(keys).await;
                for (answer, key) in answers.iter_mut().zip(keys) {
                    if let Err(e) = self.readable(key) {
                        *answer = Err(e);
                    }
                }
                answers
            }
            Err(_) => keys.iter().map(|_| self.check().map(|()| None)).collect(),
        }
    }
    async fn put_many(&self, items: Vec<PutItem>) -> Vec<Result<Version>> {
        match self.check() {
            Ok(()) => self.inner.put_many(items).await,
            Err(_) => items
                .iter()
                .map(|_| self.check().map(|()| Version::from_raw(0)))
                .collect(),
        }
    }
    async fn delete_many(&self, keys: &[&str]) -> Vec<Result<bool>> {
        match self.check() {
            Ok(()) => self.inner.delete_many(keys).await,
            Err(_) => keys.iter().map(|_| self.check().map(|()| false)).collect(),
        }
    }
    async fn scan(&self, prefix: &str, cursor: Option<&Cursor>, limit: usize) -> Result<Page> {
        drop(self.scan_gate.read().await);
        self.check()?;
        if self.endless_scans {
            let next = format!("{}+", cursor.map_or("", Cursor::as_str));
            return Ok(Page::new(Vec::new(), Some(Cursor::new(next))));
        }
        if self.stuck_scans {
            let page = self.inner.scan(prefix, None, limit).await?;
            let sent = cursor.cloned().unwrap_or_else(|| Cursor::new("stuck"));
            return Ok(Page::new(page.records, Some(sent)));
        }
        let mut page = self.inner.scan(prefix, cursor, limit).await?;
        {
            let corrupt = self.corrupt.lock();
            page.records.retain(|(k, _)| !corrupt.contains(k));
            if page.next.is_none() {
                let listed = corrupt.iter().filter(|k| k.starts_with(prefix)).cloned();
                page.skipped.extend(listed);
            }
        }
        if let Some(key) = self.foreign_scans.as_ref().filter(|_| !prefix.is_empty()) {
            let foreign = Entry::new("x", Version::from_raw(1), None);
            page.records.push((key.clone(), foreign));
        }
        Ok(page)
    }
    async fn count(&self) -> Result<u64> {
        drop(self.count_gate.read().await);
        self.check()?;
        self.inner.count().await
    }
    async fn clear(&self) -> Result<()> {
        self.check()?;
        self.inner.clear().await
    }
    async fn ping(&self) -> Result<()> {
        assert!(
            !self.panicking_pings.load(Ordering::Relaxed),
            "a broken node panics when pinged"
        );
        if !self.pings_anyway {
            self.check()?;
        }
        if self.failing_pings.load(Ordering::Relaxed) {
            return Err(Error::Unavailable {
                node: "unreachable".into(),
                source: "pings fail on purpose".into(),
            });
        }
        self.inner.ping().await
    }
    async fn stats(&self) -> Result<Stats> {
        self.check()?;
        self.inner.stats().await
    }
    async fn capacity(&self) -> Result<Capacity> {
        self.check()?;
        self.inner.capacity().await
    }
    async fn set_capacity(&self, capacity: Capacity) -> Result<()> {
        self.check()?;
        self.inner.set_capacity(capacity).await
    }
}

/// The value and version each of `nodes` holds for `key`.
#[allow(dead_code)] // not every test binary uses it
pub(crate) async fn copies(
    nodes: &[DynRegistry],
    key: &str,
) -> Vec<Option<(nautilus_core::Bytes, nautilus_core::Version)>> {
    let mut out = Vec::new();
    for n in nodes {
        out.push(
            n.get_entry(key)
                .await
                .unwrap()
                .map(|e| (e.value, e.version)),
        );
    }
    out
}

/// A key whose preference over a, b and c is `order` (indices in that order).
pub(crate) fn key_ranked(order: [usize; 3]) -> String {
    let placement = nautilus_shard::Placement::new([("a", 1), ("b", 1), ("c", 1)]).unwrap();
    (0..)
        .map(|i| format!("k{i}"))
        .find(|k| placement.preference(k, 3) == order)
        .unwrap()
}

/// A router over three memory nodes a, b and c, c behind a link the test can cut
/// (returned with its switch), with no background checks (the test runs the rounds).
pub(crate) fn linked(r: usize) -> (ShardedRegistry, Arc<Link>, Arc<AtomicBool>) {
    let cut = Arc::new(AtomicBool::new(false));
    let mem = || -> nautilus_core::DynRegistry { Arc::new(MemoryRegistry::new()) };
    let link = Arc::new(Link::new(mem(), &cut));
    let router = ShardedRegistry::builder()
        .node("a", mem())
        .node("b", mem())
        .node("c", Arc::clone(&link) as nautilus_core::DynRegistry)
        .replicas(r)
        .background_health_checks(false)
        .build()
        .unwrap();
    (router, link, cut)
}

/// Marks node c of a [`linked`] router down, by two rounds of checks while it is cut.
pub(crate) async fn mark_down(router: &ShardedRegistry) {
    router.check_health().await;
    router.check_health().await;
    assert!(
        router
            .health()
            .iter()
            .any(|h| h.node == "c" && h.state == NodeState::Down),
        "{:?}",
        router.health()
    );
}
