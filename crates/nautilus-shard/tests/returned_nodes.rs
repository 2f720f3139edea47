//! A node that comes back from down may have lost its data (a process restarted
//! empty) or come back from an old snapshot (a Redis restarted from an older RDB),
//! holding stale values and records deleted since. With two replicas, until a repair
//! covers it, reads of its keys, batches, scans and `count` must answer as if it had
//! kept everything: no stale value, no deleted record back, none missing.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use nautilus_core::{DynRegistry, Registry, RegistryExt};
use nautilus_memory::MemoryRegistry;
use nautilus_shard::ShardedRegistry;

mod common;

const KEYS: u64 = 3_000;

fn key(i: u64) -> String {
    format!("k{i:05}")
}

fn mem() -> DynRegistry {
    Arc::new(MemoryRegistry::new())
}

/// A copy of every live record of `node`, in a new memory registry: its snapshot.
async fn snapshot(node: &DynRegistry) -> DynRegistry {
    let copy = mem();
    let mut scanner = node.scanner("");
    while let Some((k, _)) = scanner.next().await.unwrap() {
        if let Some(e) = node.get_entry(&k).await.unwrap() {
            copy.import(&k, e).await.unwrap();
        }
    }
    copy
}

struct Setup {
    router: ShardedRegistry,
    /// What every key must read: `None` for a deleted one.
    expected: BTreeMap<String, Option<Vec<u8>>>,
    nodes: Vec<DynRegistry>,
}

/// Three memory nodes at R=2, c behind a link; c is taken down, and comes back as
/// `restored(c's data before the changes)`: writes, deletes and new keys were made
/// after the snapshot was taken.
async fn returning(repair_on_return: bool, empty: bool) -> Setup {
    let cut = Arc::new(AtomicBool::new(false));
    let c = mem();
    let nodes = vec![mem(), mem(), Arc::clone(&c)];
    let router = ShardedRegistry::builder()
        .node("a", Arc::clone(&nodes[0]))
        .node("b", Arc::clone(&nodes[1]))
        .node(
            "c",
            Arc::new(common::Link::new(Arc::clone(&c), &cut)) as DynRegistry,
        )
        .replicas(2)
        .failure_threshold(1)
        .background_health_checks(false)
        .repair_on_return(repair_on_return)
        .build()
        .unwrap();
    let mut expected = BTreeMap::new();
    for i in 0..KEYS {
        router.put(&key(i), b"old".to_vec()).await.unwrap();
    }
    let old = if empty { mem() } else { snapshot(&c).await };
    for i in 0..KEYS {
        let k = key(i);
        if i % 3 == 0 {
            router.delete(&k).await.unwrap();
            expected.insert(k, None);
        } else {
            router.put(&k, b"new".to_vec()).await.unwrap();
            expected.insert(k, Some(b"new".to_vec()));
        }
    }
    for i in KEYS..KEYS + 300 {
        router.put(&key(i), b"added".to_vec()).await.unwrap();
        expected.insert(key(i), Some(b"added".to_vec()));
    }
    // c dies, and comes back with what it held before the changes.
    cut.store(true, std::sync::atomic::Ordering::Relaxed);
    router.check_health().await;
    assert_eq!(
        router.health()[2].state,
        nautilus_shard::NodeState::Down,
        "{:?}",
        router.health()
    );
    let back = Arc::new(AtomicBool::new(false));
    router
        .replace_node("c", Arc::new(common::Link::new(old, &back)))
        .unwrap();
    router.check_health().await;
    assert!(router.health()[2].unverified, "{:?}", router.health());
    Setup {
        router,
        expected,
        nodes,
    }
}

/// Every scan, count, batch and read answers the newest state.
async fn assert_reads_right(s: &Setup) {
    let live = s.expected.values().filter(|v| v.is_some()).count() as u64;
    // Scans and counts first: reads repair what they meet.
    let mut scanner = s.router.scanner("");
    let mut seen = BTreeMap::new();
    while let Some((k, v)) = scanner.next().await.unwrap() {
        assert!(
            seen.insert(k.clone(), v.value.to_vec()).is_none(),
            "{k} twice"
        );
    }
    assert_eq!(seen.len() as u64, live, "scan");
    for (k, v) in &seen {
        assert_eq!(s.expected[k].as_ref(), Some(v), "{k} in the scan");
    }
    assert_eq!(s.router.count().await.unwrap(), live);
    let keys: Vec<&str> = s.expected.keys().map(String::as_str).collect();
    for (answer, (k, want)) in s.router.get_many(&keys).await.into_iter().zip(&s.expected) {
        let got = answer.unwrap().map(|e| e.value.to_vec());
        assert_eq!(&got, want, "{k} in a batch");
    }
    for (k, want) in &s.expected {
        let got = s.router.get(k).await.unwrap().map(|v| v.to_vec());
        assert_eq!(&got, want, "{k}");
    }
}

/// Every key on exactly its two replicas, at the value it reads.
async fn assert_repaired(s: &Setup) {
    let placement = nautilus_shard::Placement::new(s.router.nodes()).unwrap();
    for (k, want) in &s.expected {
        let replicas = placement.preference(k, 2);
        for (i, node) in s.nodes.iter().enumerate() {
            if i == 2 {
                continue; // c's first registry is gone; its replacement is checked by reads
            }
            let held = node.get(k).await.unwrap().map(|v| v.to_vec());
            if replicas.contains(&i) {
                assert_eq!(&held, want, "{k} on node {i}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_from_an_old_snapshot_answers_nothing_stale_before_a_repair() {
    let s = returning(false, false).await;
    assert_reads_right(&s).await;
    let p = s.router.repair().unwrap().wait().await.unwrap();
    assert!(p.repaired > 0 && p.failed == 0, "{p:?}");
    assert!(!s.router.health()[2].unverified, "the repair verified it");
    assert_reads_right(&s).await;
    assert_repaired(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_empty_misses_nothing_in_scans_before_a_repair() {
    let s = returning(false, true).await;
    assert_reads_right(&s).await;
    s.router.repair().unwrap().wait().await.unwrap();
    assert!(!s.router.health()[2].unverified);
    assert_repaired(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_coming_back_starts_the_repair_that_verifies_it() {
    let s = returning(true, false).await;
    let start = Instant::now();
    while s.router.health()[2].unverified {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never verified: {:?}",
            s.router.health()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_reads_right(&s).await;
    assert_repaired(&s).await;
}

/// Conditional writes decided on a coordinator back from an old snapshot: a
/// compare-and-swap from the version reads answer wins, and a put-if-absent of a
/// record deleted since the snapshot succeeds (both conflicted with its older copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_on_a_coordinator_back_from_an_old_snapshot() {
    use nautilus_core::{Condition, PutOptions};
    let s = returning(false, false).await;
    let placement = nautilus_shard::Placement::new(s.router.nodes()).unwrap();
    let (mut swapped, mut created) = (0, 0);
    for (k, want) in &s.expected {
        if placement.preference(k, 2)[0] != 2 {
            continue;
        }
        match want {
            Some(_) => {
                let read = s.router.get_entry(k).await.unwrap().unwrap();
                let cas = PutOptions::default().condition(Condition::Version(read.version));
                s.router
                    .put_opts(k, b"swapped".to_vec().into(), cas)
                    .await
                    .unwrap_or_else(|e| panic!("{k}: {e}"));
                swapped += 1;
            }
            None => {
                let absent = PutOptions::default().condition(Condition::Absent);
                s.router
                    .put_opts(k, b"created".to_vec().into(), absent)
                    .await
                    .unwrap_or_else(|e| panic!("{k}: {e}"));
                created += 1;
            }
        }
    }
    assert!(swapped > 100 && created > 50, "{swapped} {created}");
}

/// A repair's own reads are not the caller's: the router's hits and misses stay as
/// they were (a repair runs on its own after every return).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_counts_no_reads() {
    let s = returning(false, false).await;
    let before = s.router.stats().await.unwrap();
    let p = s.router.repair().unwrap().wait().await.unwrap();
    assert!(p.repaired > 0, "{p:?}");
    let after = s.router.stats().await.unwrap();
    assert_eq!((after.hits, after.misses), (before.hits, before.misses));
}

/// A node back empty, not yet repaired, whose partner replica goes down: reads of the
/// keys the two share are `Unavailable` (naming the partner), never the empty node's
/// false "not found"; every other key reads its value, singly and in batches. Once
/// the partner is back, they all read right. Before, each such read answered "not
/// found".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_empty_with_its_partner_down_answers_unavailable_not_a_false_miss() {
    let (cut_a, cut_c, back) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let link = |r: DynRegistry, cut: &Arc<AtomicBool>| -> DynRegistry {
        Arc::new(common::Link::new(r, cut))
    };
    let router = ShardedRegistry::builder()
        .node("a", link(mem(), &cut_a))
        .node("b", mem())
        .node("c", link(mem(), &cut_c))
        .replicas(2)
        .failure_threshold(1)
        .background_health_checks(false)
        .repair_on_return(false)
        .build()
        .unwrap();
    for i in 0..KEYS {
        router.put(&key(i), b"v".to_vec()).await.unwrap();
    }
    // c dies and comes back empty; then a dies.
    cut_c.store(true, std::sync::atomic::Ordering::Relaxed);
    router.check_health().await;
    router.replace_node("c", link(mem(), &back)).unwrap();
    router.check_health().await;
    cut_a.store(true, std::sync::atomic::Ordering::Relaxed);
    router.check_health().await;
    let h = router.health();
    assert!(
        h[2].unverified && h[0].state == nautilus_shard::NodeState::Down,
        "{h:?}"
    );

    let placement = nautilus_shard::Placement::new(router.nodes()).unwrap();
    let shared = |k: &str| {
        let mut r = placement.preference(k, 2);
        r.sort_unstable();
        r == [0, 2]
    };
    let keys: Vec<String> = (0..KEYS).map(key).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let batch = router.get_many(&refs).await;
    let mut unavailable = 0;
    for (k, batched) in keys.iter().zip(batch) {
        let single = router.get(k).await;
        for answer in [
            single.map(|v| v.map(|v| v.to_vec())),
            batched.map(|e| e.map(|e| e.value.to_vec())),
        ] {
            if shared(k) {
                match answer {
                    Err(nautilus_core::Error::Unavailable { node, .. }) => {
                        assert_eq!(node, "a", "{k}");
                        unavailable += 1;
                    }
                    other => panic!("{k}: {other:?}, not Unavailable"),
                }
            } else {
                assert_eq!(answer.unwrap().as_deref(), Some(&b"v"[..]), "{k}");
            }
        }
    }
    assert!(unavailable > 200, "{unavailable}");
    // A delete would answer whether c held the record: refused too. A plain put
    // goes on, through a stand-in for a.
    let written = keys.iter().find(|k| shared(k)).unwrap();
    assert!(matches!(
        router.delete(written).await,
        Err(nautilus_core::Error::Unavailable { .. })
    ));
    router.put(written, b"w".to_vec()).await.unwrap();

    cut_a.store(false, std::sync::atomic::Ordering::Relaxed);
    router.check_health().await;
    for k in &keys {
        let want: &[u8] = if k == written { b"w" } else { b"v" };
        assert_eq!(router.get(k).await.unwrap().as_deref(), Some(want), "{k}");
    }
}
