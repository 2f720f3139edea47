//! Nodes added, removed and reweighed under concurrent writers and readers: every read
//! is checked against the writes and deletes acknowledged before it started, and at
//! the end every key holds its last acknowledged state on exactly its owner.

#![allow(clippy::unwrap_used, clippy::panic)]

use nautilus_core::{DynRegistry, Registry, RegistryExt};
use nautilus_memory::MemoryRegistry;
use nautilus_shard::ShardedRegistry;
use std::sync::Arc;

mod common;

const KEYS: u64 = 20_000;

fn node() -> DynRegistry {
    Arc::new(MemoryRegistry::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_remove_and_reweigh_under_load() {
    let router = ShardedRegistry::builder()
        .node("a", node())
        .node("b", node())
        .node("c", node())
        .build()
        .unwrap();
    common::run(router, KEYS, async |r| {
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

/// A count while records move may count one twice, never miss one. The source's walk
/// is held until the count has asked every node, and the source answers its count
/// only after the records moved: counted all at once, the new node (asked before any
/// record came) and the source (after they left) both missed the moved records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_while_records_move_never_misses_one() {
    let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let a = Arc::new(common::Link::new(node(), &cut));
    let (scans, counts) = (Arc::clone(&a.scan_gate), Arc::clone(&a.count_gate));
    let router = ShardedRegistry::builder()
        .node("a", a)
        .node("b", node())
        .build()
        .unwrap();
    const N: u64 = 3000;
    for i in 0..N {
        router.put(&format!("k{i}"), "v").await.unwrap();
    }
    let walks_held = scans.write().await;
    let counts_held = counts.write().await;
    let added = router.add_node("c", node(), 1).await.unwrap();
    let counting = tokio::spawn({
        let router = router.clone();
        async move { router.count().await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    drop(walks_held);
    // The walk moves every record (the migration then ends only once the count, an
    // operation of its state, is over).
    for _ in 0..500 {
        if added.progress().scanned >= N {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    drop(counts_held);
    let counted = counting.await.unwrap().unwrap();
    let p = added.wait().await.unwrap();
    assert!(p.moved > 0 && p.failed == 0, "{p:?}");
    assert!(counted >= N, "counted {counted} of {N}, {} moved", p.moved);
    assert_eq!(router.count().await.unwrap(), N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_migration_resumes_to_the_same_result() {
    let router = ShardedRegistry::builder()
        .node("a", node())
        .node("b", node())
        .build()
        .unwrap();
    common::run(router, KEYS, async |r| {
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

/// A router over a, b, c holding `n` records, and a fourth node whose imports fail
/// `failing` times before they go through.
async fn with_a_flaky_fourth(n: u64, failing: usize) -> (ShardedRegistry, Arc<common::Link>) {
    let router = ShardedRegistry::builder()
        .node("a", node())
        .node("b", node())
        .node("c", node())
        .background_health_checks(false)
        .build()
        .unwrap();
    for i in 0..n {
        router.put(&format!("k{i}"), format!("v{i}")).await.unwrap();
    }
    let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let link = Arc::new(common::Link::new(node(), &cut));
    link.failing_imports
        .store(failing, std::sync::atomic::Ordering::Relaxed);
    (router, link)
}

async fn assert_all_readable(router: &ShardedRegistry, n: u64) {
    for i in 0..n {
        let got = router.get(&format!("k{i}")).await.unwrap();
        assert_eq!(
            got.as_deref(),
            Some(format!("v{i}").as_bytes()),
            "key k{i} after the migration"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_whose_move_failed_are_moved_again_before_the_old_placement_goes() {
    let n = 2_000;
    let (router, link) = with_a_flaky_fourth(n, 50).await;
    let h = router.add_node("d", link.clone(), 1).await.unwrap();
    let p = h.wait().await.unwrap();
    assert!(p.done && !p.cancelled, "{p:?}");
    // The 50 failed in the first walk and moved in the second: none is left.
    assert_eq!((p.failed, p.retried, p.walks), (0, 50, 2), "{p:?}");
    assert!(!router.is_migrating());
    // Before, the migration finished over its failures, and the records it had not
    // moved stayed on their old nodes, where nothing reads any more.
    assert_all_readable(&router, n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_that_cannot_move_a_record_ends_in_error_still_migrating_and_resumes() {
    let n = 500;
    let (router, link) = with_a_flaky_fourth(n, usize::MAX).await;
    let h = router.add_node("d", link.clone(), 1).await.unwrap();
    let err = h.wait().await.unwrap_err();
    assert!(err.to_string().contains("could not be moved"), "{err}");
    let p = h.progress();
    assert!(p.done && p.failed > 0 && p.walks == 5, "{p:?}");
    // Still migrating: the old placement finds every record where it is.
    assert!(router.is_migrating());
    assert_all_readable(&router, n).await;
    link.failing_imports
        .store(0, std::sync::atomic::Ordering::Relaxed);
    let p = router
        .resume_migration()
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert!(p.done && p.failed == 0 && p.moved > 0, "{p:?}");
    assert!(!router.is_migrating());
    assert_all_readable(&router, n).await;
}

/// A migration over in-process nodes leaves turns to other tasks as it goes (its
/// stripe locks are tokio's, which spend the task's cooperative budget): on a
/// current-thread runtime, one that did not would hold every request until it ended.
#[tokio::test(flavor = "current_thread")]
async fn a_migration_over_memory_nodes_leaves_turns_to_other_tasks() {
    let n = 20_000;
    let router = ShardedRegistry::builder()
        .node("a", node())
        .node("b", node())
        .build()
        .unwrap();
    for i in 0..n {
        router.put(&format!("k{i}"), format!("v{i}")).await.unwrap();
    }
    let h = router.add_node("c", node(), 1).await.unwrap();
    // The migration's task runs for a turn, then this one again.
    tokio::task::yield_now().await;
    assert!(
        router.is_migrating() && !h.progress().done,
        "the migration ran to its end in one turn: {:?}",
        h.progress()
    );
    assert_eq!(router.get("k7").await.unwrap().as_deref(), Some(&b"v7"[..]));
    let p = h.wait().await.unwrap();
    assert!(p.done && p.failed == 0 && p.moved > 0, "{p:?}");
    assert_all_readable(&router, n).await;
}

/// A router restarted while a migration is unfinished (its process died, or it was
/// dropped after a cancel) is built with the membership from before the change and
/// makes the same change again, before it serves anything: records already moved are
/// found on their new node, the walk moves the rest, and nothing reads as missing or
/// comes back after a delete. (Built with the new membership instead, it missed the
/// records still on their old nodes, and the repair that moved them brought back the
/// ones deleted meanwhile.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_restarted_mid_migration_resumes_by_repeating_the_change() {
    use std::sync::atomic::{AtomicBool, Ordering};
    const N: u64 = 4_000;
    let mems: Vec<Arc<MemoryRegistry>> = (0..4).map(|_| Arc::new(MemoryRegistry::new())).collect();
    let dyns: Vec<DynRegistry> = mems.iter().map(|m| Arc::clone(m) as DynRegistry).collect();
    // The new node takes each copy slowly, so the first run is cut off part way.
    let link = common::Link::new(Arc::clone(&dyns[3]), &Arc::new(AtomicBool::new(false)));
    let slow = Arc::clone(&link.slow_imports_ms);
    slow.store(20, Ordering::Relaxed);
    let d: DynRegistry = Arc::new(link);
    let old_membership = || {
        ShardedRegistry::builder()
            .node("a", Arc::clone(&dyns[0]))
            .node("b", Arc::clone(&dyns[1]))
            .node("c", Arc::clone(&dyns[2]))
            .build()
            .unwrap()
    };
    let k = |i: u64| format!("restart:{i:05}");
    let first = old_membership();
    for i in 0..N {
        first.put(&k(i), "v0").await.unwrap();
    }
    let run = first.add_node("d", Arc::clone(&d), 1).await.unwrap();
    while run.progress().moved == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    run.cancel();
    let p = run.wait().await.unwrap();
    assert!(p.cancelled && p.moved > 0, "{p:?}");
    drop(first);
    let placement =
        nautilus_shard::Placement::new([("a", 1), ("b", 1), ("c", 1), ("d", 1)]).unwrap();
    let owned_by_d = (0..N)
        .filter(|&i| placement.node_id_of(&k(i)) == Some("d"))
        .count() as u64;
    let moved_before = mems[3].count().await.unwrap();
    eprintln!("{moved_before} of {owned_by_d} moved before the restart");
    assert!(
        moved_before > 0 && moved_before < owned_by_d,
        "{moved_before} of {owned_by_d} on d"
    );

    // The restart: the old membership, then the same change again, slow enough that
    // everything below runs while records move.
    slow.store(300, Ordering::Relaxed);
    let router = old_membership();
    let again = router.add_node("d", Arc::clone(&d), 1).await.unwrap();
    // While it runs: every record reads back, wherever it is; deletes and writes of
    // keys moved or not yet moved hold.
    for i in 0..N {
        let got = router.get(&k(i)).await.unwrap();
        assert!(got.is_some(), "{} read as missing while moving", k(i));
    }
    // All at once: a write of a key still to move first moves it, at the new node's
    // slow pace.
    let writes: Vec<_> = (0..N)
        .filter(|i| i % 7 == 0 || i % 7 == 3)
        .map(|i| {
            let (router, key) = (router.clone(), k(i));
            tokio::spawn(async move {
                if i % 7 == 0 {
                    assert!(router.delete(&key).await.unwrap(), "{key}");
                } else {
                    router.put(&key, "v1").await.unwrap();
                }
            })
        })
        .collect();
    for w in writes {
        w.await.unwrap();
    }
    assert!(router.is_migrating() && !again.progress().done);
    let p = again.wait().await.unwrap();
    assert!(p.done && !p.cancelled && p.failed == 0, "{p:?}");
    assert!(!router.is_migrating());
    let ids = ["a", "b", "c", "d"];
    for i in 0..N {
        let key = k(i);
        let want: Option<&[u8]> = match i % 7 {
            0 => None,
            3 => Some(b"v1"),
            _ => Some(b"v0"),
        };
        let got = router.get(&key).await.unwrap();
        assert_eq!(got.as_deref(), want, "{key} through the router");
        let owner = placement.node_id_of(&key).unwrap();
        for (id, mem) in ids.iter().zip(&mems) {
            let held = mem.get(&key).await.unwrap();
            let expected = if *id == owner { want } else { None };
            assert_eq!(
                held.as_deref(),
                expected,
                "{key} on node {id} (owner {owner})"
            );
        }
    }
}

/// A router's stats count what its callers did, not the copies and reads a migration
/// makes: reads of keys on the move (from both nodes) count once each, the moves
/// (imports, and removals of the old copies) count as nothing.
#[tokio::test]
async fn stats_count_callers_reads_and_writes_while_records_move() {
    use std::sync::atomic::{AtomicBool, Ordering};
    const N: u64 = 600;
    let slow = common::Link::new(node(), &Arc::new(AtomicBool::new(false)));
    slow.slow_imports_ms.store(5, Ordering::Relaxed);
    // No background checks: on a loaded machine a check that times out could mark a
    // node down mid-test, which this test is not about.
    let router = ShardedRegistry::builder()
        .node("a", node())
        .node("b", node())
        .node("c", node())
        .background_health_checks(false)
        .build()
        .unwrap();
    let k = |i: u64| format!("counted:{i:05}");
    for i in 0..N {
        router.put(&k(i), "v").await.unwrap();
    }
    let before = router.stats().await.unwrap();
    assert_eq!((before.inserts, before.records), (N, N));
    let run = router.add_node("d", Arc::new(slow), 1).await.unwrap();
    for i in 0..N {
        assert!(router.get(&k(i)).await.unwrap().is_some());
    }
    assert!(router.get("counted:missing").await.unwrap().is_none());
    assert!(
        router.is_migrating(),
        "the reads ran after the records moved"
    );
    let p = run.wait().await.unwrap();
    assert!(p.done && p.moved > 0 && p.failed == 0, "{p:?}");
    for i in 0..N {
        assert!(router.get(&k(i)).await.unwrap().is_some());
    }
    let after = router.stats().await.unwrap();
    assert_eq!(
        (after.hits - before.hits, after.misses - before.misses),
        (2 * N, 1),
        "{before:?} -> {after:?}"
    );
    assert_eq!(
        (after.inserts, after.updates, after.deletes, after.records),
        (N, 0, 0, N),
        "{before:?} -> {after:?}"
    );
}
