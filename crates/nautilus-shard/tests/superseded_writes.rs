//! R=2, W=2 over two nodes: a write that failed after reaching one replica only, then
//! an acknowledged write or delete of the same key. The acknowledged one must win on
//! every replica, even when the failed one holds the same version or a newer one (the
//! same millisecond, a clock ahead), whether the put is made without waiting or
//! awaited.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nautilus_core::{Bytes, DynRegistry, ManualClock, Registry, RegistryExt};
use nautilus_shard::{NodeState, Placement, ShardedRegistry};

mod common;

use common::{Link, copies, memory_node};

const T0: u64 = 1_700_000_000_000;

/// Nodes a (behind a link the test can cut) and b, on frozen clocks `b_ahead_ms`
/// apart, and an R=2, W=2 router over them on a's clock; the memory nodes too.
fn setup(
    b_ahead_ms: u64,
    ready: bool,
) -> (
    ShardedRegistry,
    Arc<Link>,
    Vec<DynRegistry>,
    Arc<AtomicBool>,
) {
    let (ca, cb) = (ManualClock::new(T0), ManualClock::new(T0 + b_ahead_ms));
    let (a, b): (DynRegistry, DynRegistry) = (memory_node(&ca), memory_node(&cb));
    let cut = Arc::new(AtomicBool::new(false));
    let link = Arc::new(Link::new(Arc::clone(&a), &cut));
    link.ready.store(ready, Ordering::Relaxed);
    let router = ShardedRegistry::builder()
        .node("a", Arc::clone(&link) as DynRegistry)
        .node("b", Arc::clone(&b))
        .replicas(2)
        .write_quorum(2)
        .clock(Arc::new(ca))
        .background_health_checks(false)
        .build()
        .unwrap();
    (router, link, vec![a, b], cut)
}

/// A key whose first replica is a.
fn key_on_a() -> String {
    let placement = Placement::new([("a", 1), ("b", 1)]).unwrap();
    (0..)
        .map(|i| format!("k{i}"))
        .find(|k| placement.preference(k, 2)[0] == 0)
        .unwrap()
}

async fn set_down(router: &ShardedRegistry, cut: &AtomicBool, down: bool) {
    cut.store(down, Ordering::Relaxed);
    router.check_health().await;
    router.check_health().await;
    let want = if down { NodeState::Down } else { NodeState::Up };
    assert!(
        router
            .health()
            .iter()
            .any(|h| h.node == "a" && h.state == want),
        "{:?}",
        router.health()
    );
}

/// Nodes a and b on one frozen clock, b behind a link (which the tests make fail
/// imports), and an R=2, W=2 router over them; the memory nodes and the link too.
fn b_behind_a_link() -> (ShardedRegistry, DynRegistry, DynRegistry, Arc<Link>) {
    let clock = ManualClock::new(T0);
    let a: DynRegistry = memory_node(&clock);
    let b: DynRegistry = memory_node(&clock);
    let cut = Arc::new(AtomicBool::new(false));
    let link = Arc::new(Link::new(Arc::clone(&b), &cut));
    let router = ShardedRegistry::builder()
        .node("a", Arc::clone(&a))
        .node("b", Arc::clone(&link) as DynRegistry)
        .replicas(2)
        .write_quorum(2)
        .clock(Arc::new(clock))
        .background_health_checks(false)
        .build()
        .unwrap();
    (router, a, b, link)
}

/// One variant of [`after_a_failure_on_b_alone`].
struct Variant {
    what: String,
    router: ShardedRegistry,
    nodes: Vec<DynRegistry>,
    cut: Arc<AtomicBool>,
    key: String,
}

/// Every variant (b's clock 0 or 1000 ms ahead, puts made without waiting or
/// awaited): a router over a and b, v1 on a key of a, then `fail` while a is down,
/// which must fail (applied on b alone, W=2 is not met), and a up again.
async fn after_a_failure_on_b_alone(
    fail: impl AsyncFn(&ShardedRegistry, &str) -> nautilus_core::Result<()>,
) -> Vec<Variant> {
    let mut out = Vec::new();
    for b_ahead_ms in [0, 1000] {
        for ready in [false, true] {
            let what = format!("b ahead {b_ahead_ms} ms, ready {ready}");
            let (router, _link, nodes, cut) = setup(b_ahead_ms, ready);
            let key = key_on_a();
            router.put(&key, "v1").await.unwrap();
            set_down(&router, &cut, true).await;
            assert!(fail(&router, &key).await.is_err(), "{what}");
            set_down(&router, &cut, false).await;
            out.push(Variant {
                what,
                router,
                nodes,
                cut,
                key,
            });
        }
    }
    out
}

#[tokio::test]
async fn an_acknowledged_write_wins_over_a_failed_one_at_the_same_or_a_newer_version() {
    let failed_put = async |r: &ShardedRegistry, k: &str| r.put(k, "v2-failed").await.map(drop);
    for Variant {
        what,
        router,
        nodes,
        cut,
        key,
    } in after_a_failure_on_b_alone(failed_put).await
    {
        let v3 = router.put(&key, "v3-acked").await.unwrap();
        assert_eq!(
            copies(&nodes, &key).await,
            vec![Some((Bytes::from("v3-acked"), v3)); 2],
            "{what}"
        );
        assert_eq!(router.get(&key).await.unwrap().unwrap(), "v3-acked");
        // A compare-and-swap decided over the failed write's copy fails.
        let v4 = router.put(&key, "v4").await.unwrap();
        set_down(&router, &cut, true).await;
        assert!(router.put(&key, "v5-failed").await.is_err(), "{what}");
        set_down(&router, &cut, false).await;
        let cas = router
            .compare_and_swap(&key, v4, "v6", nautilus_core::Expiry::Never)
            .await;
        assert!(
            cas.is_err() || router.get(&key).await.unwrap().unwrap() == "v6",
            "{what}: {cas:?}"
        );
        let held = copies(&nodes, &key).await;
        assert_eq!(held[0], held[1], "{what}: the replicas diverged");
    }
}

#[tokio::test]
async fn an_acknowledged_delete_wins_over_a_failed_write() {
    let (router, _link, nodes, cut) = setup(0, false);
    let key = key_on_a();
    router.put(&key, "v1").await.unwrap();
    set_down(&router, &cut, true).await;
    assert!(router.put(&key, "v2-failed").await.is_err());
    set_down(&router, &cut, false).await;
    assert!(router.delete(&key).await.unwrap());
    assert_eq!(copies(&nodes, &key).await, vec![None, None]);
    assert_eq!(router.get(&key).await.unwrap(), None);
}

#[tokio::test]
async fn a_delete_retried_after_reaching_one_replica_deletes_everywhere() {
    // a is plain memory here and b fails one import: the first delete leaves a's
    // tombstone and b's record.
    let (router, a, b, link) = b_behind_a_link();
    let key = key_on_a();
    router.put(&key, "v1").await.unwrap();
    link.failing_imports.store(1, Ordering::Relaxed);
    assert!(router.delete(&key).await.is_err());
    assert_eq!(a.get_entry(&key).await.unwrap(), None);
    assert!(b.get_entry(&key).await.unwrap().is_some());
    // The retry removes the record b still serves, and says so.
    assert!(router.delete(&key).await.unwrap());
    assert_eq!(b.get_entry(&key).await.unwrap(), None);
    assert_eq!(router.get(&key).await.unwrap(), None);
    assert!(!router.exists(&key).await.unwrap());
}

#[tokio::test]
async fn a_conditional_write_over_a_delete_that_reached_one_replica_agrees_with_reads() {
    let (router, _, b, link) = b_behind_a_link();
    let key = key_on_a();
    let v1 = router.put(&key, "v1").await.unwrap();
    link.failing_imports.store(1, Ordering::Relaxed);
    assert!(router.delete(&key).await.is_err());
    // The compare-and-swap conflicts with the delete a holds, and b's copy goes:
    // reads no longer answer a record no conditional write can reach.
    let cas = router
        .compare_and_swap(&key, v1, "v2", nautilus_core::Expiry::Never)
        .await;
    assert!(
        matches!(
            cas,
            Err(nautilus_core::Error::Conflict { actual: None, .. })
        ),
        "{cas:?}"
    );
    assert_eq!(router.get(&key).await.unwrap(), None);
    assert_eq!(b.get_entry(&key).await.unwrap(), None);
}

#[tokio::test]
async fn a_put_after_a_delete_that_reached_the_other_replica_alone_succeeds_at_once() {
    let failed_delete = async |r: &ShardedRegistry, k: &str| r.delete(k).await.map(drop);
    for Variant {
        what,
        router,
        nodes,
        key,
        ..
    } in after_a_failure_on_b_alone(failed_delete).await
    {
        // Not refused until a's clock passes the delete, and never undone by it.
        let v = router.put(&key, "v2").await.unwrap();
        assert_eq!(
            copies(&nodes, &key).await,
            vec![Some((Bytes::from("v2"), v)); 2],
            "{what}"
        );
        router.repair().unwrap().wait().await.unwrap();
        assert_eq!(router.get(&key).await.unwrap().unwrap(), "v2", "{what}");
    }
}
