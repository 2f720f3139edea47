//! Writes and reads racing a replica's change of state, over memory nodes behind links
//! a test can cut, slow down or fail: two compare-and-swaps from one version across a
//! replica coming back or going down (one must win alone), a delete that reached one
//! replica, and read repairs racing writes and deletes.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nautilus_core::{DynRegistry, Error, Expiry, Registry, RegistryExt};
use nautilus_memory::MemoryRegistry;
use nautilus_shard::{NodeState, ShardedRegistry};

mod common;

use common::{Link, key_ranked, linked, mark_down};

/// Two routers' worth of nodes for the swap races below: a and c behind links (a's
/// not cut), b in memory, R=2, and a key that c coordinates, b replicates and a
/// stands in for.
fn swap_race_router(cut: &Arc<AtomicBool>) -> (Arc<ShardedRegistry>, Arc<Link>, Arc<Link>, String) {
    let mem = || -> DynRegistry { Arc::new(MemoryRegistry::new()) };
    let a = Arc::new(Link::new(mem(), &Arc::new(AtomicBool::new(false))));
    let c = Arc::new(Link::new(mem(), cut));
    let router = Arc::new(
        ShardedRegistry::builder()
            .node("a", Arc::clone(&a) as DynRegistry)
            .node("b", mem())
            .node("c", Arc::clone(&c) as DynRegistry)
            .replicas(2)
            .background_health_checks(false)
            .build()
            .unwrap(),
    );
    (router, a, c, key_ranked([2, 1, 0]))
}

/// A compare-and-swap from `v0` started and in flight on `slow` (its slowed write
/// has reached that link), then `turn` (c changes state meanwhile), then a second
/// from the same version: the first must win alone.
async fn one_swap_wins_across(
    router: &Arc<ShardedRegistry>,
    key: &str,
    v0: nautilus_core::Version,
    slow: &Link,
    turn: impl AsyncFnOnce(),
) {
    let seen = slow.writes_seen.load(Ordering::Relaxed);
    let first = tokio::spawn({
        let (router, key) = (Arc::clone(router), key.to_owned());
        async move {
            router
                .compare_and_swap(&key, v0, "first", Expiry::Never)
                .await
        }
    });
    // However loaded the machine, the turn comes while the first is in flight.
    for _ in 0..500 {
        if slow.writes_seen.load(Ordering::Relaxed) > seen {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    assert!(
        slow.writes_seen.load(Ordering::Relaxed) > seen,
        "the first swap never reached the slow node"
    );
    turn().await;
    let second = router
        .compare_and_swap(key, v0, "second", Expiry::Never)
        .await;
    let first = first.await.unwrap();
    assert!(first.is_ok(), "{first:?}");
    assert!(
        matches!(second, Err(Error::Conflict { .. })),
        "both swaps from version {v0:?} won: {first:?} then {second:?}"
    );
}

/// R=2 over a (behind a link whose imports can be slowed), b and c (behind a link
/// the test cuts): a compare-and-swap decided on b while c is down, whose copy for c
/// is still on its way to the stand-in a when c comes back, and a second one from the
/// same version that c coordinates. Before, c decided the second on the copy the
/// first had replaced, with no hand-back yet to make: both won (21 double wins in 27
/// runs of an outside test freezing a Redis node under swap loops).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_a_replica_back_up_does_not_decide_a_swap_over_one_still_going_through_a_stand_in() {
    let cut = Arc::new(AtomicBool::new(false));
    let (router, a, _c, key) = swap_race_router(&cut);
    let v0 = router.put(&key, "0").await.unwrap();
    cut.store(true, Ordering::Relaxed);
    mark_down(&router).await;
    a.slow_imports_ms.store(300, Ordering::Relaxed);
    // The first is applied on b and its copy is on its way to a: c comes back.
    one_swap_wins_across(&router, &key, v0, &a, async || {
        cut.store(false, Ordering::Relaxed);
        router.check_health().await;
        assert!(
            router
                .health()
                .iter()
                .any(|h| h.node == "c" && h.state == NodeState::Up)
        );
    })
    .await;
    assert_eq!(
        router.get(&key).await.unwrap().as_deref(),
        Some(&b"first"[..])
    );
    a.slow_imports_ms.store(0, Ordering::Relaxed);
}

/// R=2: a delete that reached the first replica alone (the second's link failed),
/// then a second delete while the second replica is down, which finds nothing to
/// delete. The second replica comes back with the record. First, reads confirmed
/// the first replica's miss on it and answered the deleted record (outside test: 20
/// of 20 keys), and the first replica's refusal of that copy was made to show the
/// delete and bury the copy; now the second delete, finding nothing while a replica
/// is down, leaves a tombstone whose hand-back removes the copy on the return.
#[tokio::test]
async fn r2_a_record_whose_delete_reached_one_replica_does_not_come_back_with_the_other() {
    let (router, link, cut) = linked(2);
    // b first, then c (behind the link), a standing in.
    let key = key_ranked([1, 2, 0]);
    router.put(&key, "deleted").await.unwrap();
    cut.store(true, Ordering::Relaxed);
    assert!(
        router.delete(&key).await.is_err(),
        "c's copy of the delete failed"
    );
    mark_down(&router).await;
    assert!(
        !router.delete(&key).await.unwrap(),
        "nothing left to delete on b"
    );
    assert_eq!(
        router.get(&key).await.unwrap(),
        None,
        "the delete was undone while c was down"
    );
    cut.store(false, Ordering::Relaxed);
    router.check_health().await;
    assert_eq!(
        router.get(&key).await.unwrap(),
        None,
        "the delete was undone"
    );
    assert_eq!(
        common::copies(&[Arc::clone(&link.inner)], &key).await[0],
        None,
        "c kept the record after the hand-back and a read"
    );
    assert_eq!(router.get(&key).await.unwrap(), None);
}

/// R=2 over a, b and c (behind a link whose puts are slow and whose pings can be
/// failed): a compare-and-swap coordinated by c, still deciding there when c is
/// marked down, and a second one from the same version that b coordinates in c's
/// place. Before, b decided it on the copy the first had not reached yet: both won,
/// and the first's copy then replaced the second's on b (outside test: 3 double
/// wins in 47 runs with a node whose calls hung while its pings answered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_a_replica_does_not_decide_a_swap_that_a_replica_gone_down_is_still_deciding() {
    let (router, _a, c, key) = swap_race_router(&Arc::new(AtomicBool::new(false)));
    let v0 = router.put(&key, "0").await.unwrap();
    c.slow_puts_ms.store(300, Ordering::Relaxed);
    // The first is still deciding on c when c is marked down.
    one_swap_wins_across(&router, &key, v0, &c, async || {
        c.failing_pings.store(true, Ordering::Relaxed);
        mark_down(&router).await;
    })
    .await;
    c.failing_pings.store(false, Ordering::Relaxed);
    c.slow_puts_ms.store(0, Ordering::Relaxed);
    router.check_health().await;
    assert_eq!(
        router.get(&key).await.unwrap().as_deref(),
        Some(&b"first"[..])
    );
}

/// R=2: a read asks the first replica just before a write's copy reaches it and the
/// second just after, then repairs the first with the copy it already holds, which it
/// refuses. The read answers the write and buries nothing. Before, it took the refusal
/// for a delete it could not see and wrote a tombstone over the second replica's copy:
/// a false "not found", and repair then removed the acknowledged write everywhere
/// (outside test: 9% of delete-then-put cycles raced by readers).
#[tokio::test]
async fn r2_a_read_repair_refused_for_the_same_write_answers_it_and_buries_nothing() {
    let cut = Arc::new(AtomicBool::new(false));
    let a: DynRegistry = Arc::new(MemoryRegistry::new());
    let b: DynRegistry = Arc::new(MemoryRegistry::new());
    let link = Arc::new(Link::new(Arc::new(MemoryRegistry::new()), &cut));
    let router = ShardedRegistry::builder()
        .node("a", Arc::clone(&a))
        .node("b", Arc::clone(&b))
        .node("c", Arc::clone(&link) as DynRegistry)
        .replicas(2)
        .background_health_checks(false)
        .build()
        .unwrap();
    // c first (behind the link), then b.
    let key = key_ranked([2, 1, 0]);
    let v = router.put(&key, "acked").await.unwrap();
    link.stale_reads.store(1, Ordering::Relaxed);
    assert_eq!(
        router.get(&key).await.unwrap().as_deref(),
        Some(&b"acked"[..]),
        "a false not-found"
    );
    let held = common::copies(&[Arc::clone(&link.inner), Arc::clone(&b)], &key).await;
    for copy in held {
        assert_eq!(copy, Some(("acked".into(), v)));
    }
    router.repair().unwrap().wait().await.unwrap();
    assert_eq!(
        router.get(&key).await.unwrap().as_deref(),
        Some(&b"acked"[..]),
        "repair removed an acknowledged write"
    );
}

/// R=2: the first replica came back empty, and a newer write of the key lands on it
/// while a read is repairing it with the other replica's older copy, which it then
/// refuses. The read answers the write that landed, not a false "not found" (the
/// refusal alone would say the first replica holds a delete).
#[tokio::test]
async fn r2_a_read_racing_a_write_on_a_replica_back_empty_answers_the_write() {
    let (router, link, _cut) = linked(2);
    // c first (behind the link), then b.
    let key = key_ranked([2, 1, 0]);
    router.put(&key, "older").await.unwrap();
    link.inner.clear().await.unwrap();
    *link.put_before_import.lock() = Some((key.clone(), "newer".into()));
    assert_eq!(
        router.get(&key).await.unwrap().as_deref(),
        Some(&b"newer"[..])
    );
}

#[tokio::test]
async fn r2_a_delete_racing_a_reads_repair_on_a_node_back_empty_is_not_undone() {
    // c, the key's first replica, came back empty. A delete finds nothing on it and
    // brings it up to a's copy first; a read's repair lands that same copy on c just
    // before, so c refuses the delete's import. It holds the record, not a newer
    // delete: the delete must delete it, not only bury a's copy.
    let cut = Arc::new(AtomicBool::new(false));
    let c_store: DynRegistry = Arc::new(MemoryRegistry::new());
    let link = Arc::new(Link::new(Arc::clone(&c_store), &cut));
    let router = ShardedRegistry::builder()
        .node("a", Arc::new(MemoryRegistry::new()))
        .node("b", Arc::new(MemoryRegistry::new()))
        .node("c", Arc::clone(&link) as DynRegistry)
        .replicas(2)
        .background_health_checks(false)
        .build()
        .unwrap();
    let key = key_ranked([2, 0, 1]);
    router.put(&key, "v1").await.unwrap();
    c_store.clear().await.unwrap();
    link.doubled_imports.store(1, Ordering::Relaxed);
    assert!(router.delete(&key).await.unwrap());
    assert_eq!(
        c_store.get(&key).await.unwrap(),
        None,
        "the first replica kept the deleted record"
    );
    assert_eq!(
        router.get(&key).await.unwrap(),
        None,
        "the delete was undone"
    );
}
