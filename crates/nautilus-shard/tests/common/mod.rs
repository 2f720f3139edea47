//! Shared by the resharding tests: a load of writers and readers that checks every
//! read against the writes and deletes acknowledged before it started.

#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use nautilus_core::{
    Bytes, Capabilities, Capacity, Cursor, DeleteOptions, DynRegistry, Entry, Error, Expiry,
    Limits, ManualClock, Page, PutItem, PutOptions, Registry, RegistryExt, Result, Stats, Version,
};
use nautilus_memory::MemoryRegistry;
use nautilus_shard::{NodeState, ShardedRegistry};

const WRITERS: u64 = 2;

/// Real time for the conformance suite over Redis nodes, which keep their own clocks.
pub(crate) struct TokioSleeper;

#[nautilus_core::async_trait]
impl nautilus_core::testkit::Sleeper for TokioSleeper {
    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}

/// The first `n` keys `{prefix}0`, `{prefix}1`... whose first node is `node`.
pub(crate) fn keys_on(router: &ShardedRegistry, node: &str, prefix: &str, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|k| router.node_of(k).as_deref() == Some(node))
        .take(n)
        .collect()
}

/// Waits until the router sees node `id` in `state` (at most 10 s); how long it took.
pub(crate) async fn until(router: &ShardedRegistry, id: &str, state: NodeState) -> Duration {
    let start = std::time::Instant::now();
    loop {
        if router
            .health()
            .iter()
            .any(|h| h.node == id && h.state == state)
        {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{id} never became {state:?}: {:?}",
            router.health()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A namespace no other run uses, so runs sharing a server never meet.
pub(crate) fn namespace() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "nautilus-shard-test-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The three servers `cargo xtask test` starts for the router's Redis tests.
pub(crate) fn shard_urls() -> Vec<String> {
    match std::env::var("NAUTILUS_REDIS_SHARD_URLS") {
        Ok(v) if v.split(',').count() >= 3 => v.split(',').map(str::to_owned).collect(),
        _ => panic!(
            "NAUTILUS_REDIS_SHARD_URLS (three redis:// URLs, comma-separated) is not set: run \
             these tests with `cargo xtask test`, which starts three redis-server processes \
             (or `cargo xtask redis up` and export what it prints)"
        ),
    }
}

/// A memory node on `clock`. One shard: the router hands each node a share of a
/// global limit, and a memory registry splits its limit over its own shards again.
pub(crate) fn memory_node(clock: &ManualClock) -> Arc<MemoryRegistry> {
    Arc::new(
        MemoryRegistry::builder()
            .clock(Arc::new(clock.clone()))
            .shards(1)
            .build()
            .unwrap(),
    )
}

fn key(i: u64) -> String {
    format!("k{i:06}")
}

/// Per key, the last acknowledged operation (`.0`) and the last one started (`.1`), each
/// `counter << 1 | deleted`. A read may see an operation that was applied but not yet
/// acknowledged to its writer: it counts as started, not acknowledged.
struct Acks(Vec<AtomicU64>, Vec<AtomicU64>);

async fn check_read(router: &ShardedRegistry, acks: &Acks, i: u64) {
    let before = acks.0[i as usize].load(Ordering::Acquire);
    let got = router.get(&key(i)).await.unwrap();
    let after = acks.1[i as usize].load(Ordering::Acquire);
    match got {
        None => assert!(
            before & 1 == 1 || after != before,
            "key {i}: read nothing, though write {} was acknowledged and nothing started since",
            before >> 1
        ),
        Some(v) => {
            let c = u64::from_le_bytes(v[..8].try_into().unwrap());
            assert!(
                c >= before >> 1,
                "key {i}: read write {c} after {} {} was acknowledged",
                if before & 1 == 1 { "delete" } else { "write" },
                before >> 1
            );
            assert!(c <= after >> 1, "key {i}: read write {c}, never started");
        }
    }
}

/// Loads `keys` records, runs writers and readers while `changes` runs, then checks
/// the end state; returns the number of operations and checked reads.
pub(crate) async fn run(
    router: ShardedRegistry,
    keys: u64,
    changes: impl AsyncFnOnce(&ShardedRegistry),
) -> u64 {
    let acks = Arc::new(Acks(
        (0..keys).map(|_| AtomicU64::new(0)).collect(),
        (0..keys).map(|_| AtomicU64::new(0)).collect(),
    ));
    for i in 0..keys {
        router
            .put(&key(i), 0u64.to_le_bytes().to_vec())
            .await
            .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    // Every operation of the load, counted as it completes.
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (router, acks, stop) = (router.clone(), Arc::clone(&acks), Arc::clone(&stop));
        let done = Arc::clone(&done);
        tasks.push(tokio::spawn(async move {
            let mut counter = 1u64;
            let mut x = w + 1;
            let mut ops = 0u64;
            while !stop.load(Ordering::Relaxed) {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let i = (x >> 33) % (keys / WRITERS) * WRITERS + w;
                counter += 1;
                let deleting = counter.is_multiple_of(10);
                acks.1[i as usize].store(counter << 1 | u64::from(deleting), Ordering::Release);
                if deleting {
                    router.delete(&key(i)).await.unwrap();
                    acks.0[i as usize].store(counter << 1 | 1, Ordering::Release);
                } else {
                    router
                        .put(&key(i), counter.to_le_bytes().to_vec())
                        .await
                        .unwrap();
                    acks.0[i as usize].store(counter << 1, Ordering::Release);
                }
                ops += 1;
                done.fetch_add(1, Ordering::Relaxed);
                if ops.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
            ops
        }));
    }
    for r in 0..2u64 {
        let (router, acks, stop) = (router.clone(), Arc::clone(&acks), Arc::clone(&stop));
        let done = Arc::clone(&done);
        tasks.push(tokio::spawn(async move {
            let mut x = r + 100;
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                check_read(&router, &acks, (x >> 33) % keys).await;
                reads += 1;
                done.fetch_add(1, Ordering::Relaxed);
                if reads.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
            reads
        }));
    }
    // The load is running before the changes start, runs during them, and goes on
    // after them, however slow the machine.
    let at_least = async |n: u64| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while done.load(Ordering::Relaxed) < n && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    at_least(500).await;
    let before = done.load(Ordering::Relaxed);
    changes(&router).await;
    let after = done.load(Ordering::Relaxed);
    at_least(after + 500).await;
    stop.store(true, Ordering::Relaxed);
    let mut ops = 0;
    for t in tasks {
        ops += t.await.unwrap();
    }
    assert!(ops >= 1000, "the load barely ran: {ops} operations");
    assert!(after > before, "no operation ran while the nodes changed");
    // Every key in its last acknowledged state, and held once.
    let mut live = 0;
    for i in 0..keys {
        let ack = acks.0[i as usize].load(Ordering::Acquire);
        let got = router.get(&key(i)).await.unwrap();
        if ack & 1 == 1 {
            assert_eq!(got, None, "key {i} came back after its delete");
        } else {
            live += 1;
            let v = got.unwrap_or_else(|| panic!("key {i} lost"));
            assert_eq!(u64::from_le_bytes(v[..8].try_into().unwrap()), ack >> 1);
        }
    }
    assert_eq!(
        router.count().await.unwrap(),
        live,
        "a record is held twice or leaked"
    );
    let mut scanner = router.scanner("");
    let mut scanned = 0;
    while let Some((k, _)) = scanner.next().await.unwrap() {
        assert!(router.node_of(&k).is_some());
        scanned += 1;
    }
    assert_eq!(scanned, live);
    ops
}

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
