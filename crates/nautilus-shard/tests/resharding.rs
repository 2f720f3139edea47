//! Nodes added, removed and reweighed under concurrent writers and readers: every read
//! is checked against the writes and deletes acknowledged before it started, and at
//! the end every key holds its last acknowledged state on exactly its owner.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use nautilus_core::{DynRegistry, Registry, RegistryExt};
use nautilus_memory::MemoryRegistry;
use nautilus_shard::ShardedRegistry;

const KEYS: u64 = 20_000;
const WRITERS: u64 = 2;

fn key(i: u64) -> String {
    format!("k{i:06}")
}

/// Last acknowledged operation per key: `counter << 1 | deleted`.
struct Acks(Vec<AtomicU64>);

fn node() -> DynRegistry {
    Arc::new(MemoryRegistry::new())
}

async fn check_read(router: &ShardedRegistry, acks: &Acks, i: u64) {
    let before = acks.0[i as usize].load(Ordering::Acquire);
    let got = router.get(&key(i)).await.unwrap();
    let after = acks.0[i as usize].load(Ordering::Acquire);
    match got {
        None => assert!(
            before & 1 == 1 || after != before,
            "key {i}: read nothing, though write {} was acknowledged and nothing since",
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
        }
    }
}

async fn run(router: ShardedRegistry, changes: impl AsyncFnOnce(&ShardedRegistry)) {
    let acks = Arc::new(Acks((0..KEYS).map(|_| AtomicU64::new(0)).collect()));
    for i in 0..KEYS {
        router
            .put(&key(i), 0u64.to_le_bytes().to_vec())
            .await
            .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (router, acks, stop) = (router.clone(), Arc::clone(&acks), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let mut counter = 1u64;
            let mut x = w + 1;
            let mut ops = 0u64;
            while !stop.load(Ordering::Relaxed) {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let i = (x >> 33) % (KEYS / WRITERS) * WRITERS + w;
                counter += 1;
                if counter.is_multiple_of(10) {
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
                if ops.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
            ops
        }));
    }
    for r in 0..2u64 {
        let (router, acks, stop) = (router.clone(), Arc::clone(&acks), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let mut x = r + 100;
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                check_read(&router, &acks, (x >> 33) % KEYS).await;
                reads += 1;
                if reads.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
            reads
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    changes(&router).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, Ordering::Relaxed);
    let mut ops = 0;
    for t in tasks {
        ops += t.await.unwrap();
    }
    assert!(ops > 1000, "the load barely ran: {ops} operations");
    // Every key in its last acknowledged state, and held once.
    let mut live = 0;
    for i in 0..KEYS {
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_remove_and_reweigh_under_load() {
    let router = ShardedRegistry::builder()
        .node("a", node())
        .node("b", node())
        .node("c", node())
        .build()
        .unwrap();
    run(router, async |r| {
        let added = r.add_node("d", node(), 1).await.unwrap();
        let p = added.wait().await.unwrap();
        assert!(p.done && !p.cancelled);
        assert!(p.moved > 0 && p.failed == 0, "{p:?}");
        // About a quarter of the keys moved, to the new node only.
        assert!(p.moved < KEYS / 3, "{p:?}");
        let removed = r.remove_node("a").await.unwrap();
        assert_eq!(removed.wait().await.unwrap().failed, 0);
        assert!(r.nodes().iter().all(|(id, _)| id != "a"));
        let heavier = r.set_weight("b", 3).await.unwrap();
        assert_eq!(heavier.wait().await.unwrap().failed, 0);
        assert!(!r.is_migrating());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_migration_resumes_to_the_same_result() {
    let router = ShardedRegistry::builder()
        .node("a", node())
        .node("b", node())
        .build()
        .unwrap();
    run(router, async |r| {
        let first = r.add_node("c", node(), 2).await.unwrap();
        first.cancel();
        let p = first.wait().await.unwrap();
        assert!(p.done);
        if p.cancelled {
            assert!(r.is_migrating());
            // No new change while one is unfinished.
            assert!(r.add_node("d", node(), 1).await.is_err());
        }
        let again = r.resume_migration().await.unwrap();
        let p = again.wait().await.unwrap();
        assert!(p.done && !p.cancelled && p.failed == 0, "{p:?}");
        assert!(!r.is_migrating());
    })
    .await;
}

#[tokio::test]
async fn bad_membership_is_refused_and_an_empty_router_answers_typed_errors() {
    use nautilus_core::Error;
    let dup = ShardedRegistry::builder()
        .node("a", node())
        .node("a", node())
        .build();
    assert!(matches!(dup, Err(Error::InvalidArgument { .. })));
    let zero = ShardedRegistry::builder()
        .node_weighted("a", node(), 0)
        .build();
    assert!(matches!(zero, Err(Error::InvalidArgument { .. })));
    let empty = ShardedRegistry::builder().build().unwrap();
    assert!(matches!(
        empty.get("k").await,
        Err(Error::Unavailable { .. })
    ));
    assert!(matches!(
        empty.put("k", "v").await,
        Err(Error::Unavailable { .. })
    ));
    assert!(matches!(
        empty.count().await,
        Err(Error::Unavailable { .. })
    ));
    assert!(matches!(
        empty.scan("", None, 10).await,
        Err(Error::Unavailable { .. })
    ));
    assert!(
        empty
            .get_many(&["a", "b"])
            .await
            .iter()
            .all(|r| matches!(r, Err(Error::Unavailable { .. })))
    );
    assert!(matches!(
        empty.remove_node("x").await,
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        empty.set_weight("x", 2).await,
        Err(Error::InvalidArgument { .. })
    ));
    // The first node makes it work.
    let h = empty.add_node("a", node(), 1).await.unwrap();
    h.wait().await.unwrap();
    empty.put("k", "v").await.unwrap();
    assert!(matches!(
        empty.remove_node("a").await,
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        empty.add_node("a", node(), 1).await,
        Err(Error::InvalidArgument { .. })
    ));
}
