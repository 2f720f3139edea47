//! Shared by the router's tests: a load of writers and readers that checks every read
//! against the writes and deletes acknowledged before it started (the resharding
//! tests), the Redis servers `cargo xtask test` starts, and, in [`link`], a node
//! behind a link a test can cut.

#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use nautilus_core::{ManualClock, Registry, RegistryExt};
use nautilus_memory::MemoryRegistry;
use nautilus_shard::{NodeState, ShardedRegistry};

mod link;
pub(crate) mod own_servers;

// Not every test binary uses each of them.
#[allow(unused_imports)]
pub(crate) use link::{Link, copies, key_ranked, linked, mark_down};

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
