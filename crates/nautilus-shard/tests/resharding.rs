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
