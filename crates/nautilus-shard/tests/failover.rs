//! Failover over memory nodes, one of which a test can cut off: what the router
//! answers while a node is down.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nautilus_core::{DynRegistry, Error, Expiry, Registry, RegistryExt};
use nautilus_memory::MemoryRegistry;
use nautilus_shard::{NodeState, ShardedRegistry};

mod common;

use common::{Link, key_ranked, linked, mark_down};

/// A router over three memory nodes, the last behind a link the test can cut, with
/// no background checks (the test runs the rounds).
fn router(r: usize) -> (ShardedRegistry, Arc<AtomicBool>) {
    let (router, _, cut) = linked(r);
    (router, cut)
}

#[tokio::test]
async fn r2_a_scan_goes_on_while_a_node_is_down_and_returns_each_record_once() {
    let (router, cut) = router(2);
    for i in 0..2_000 {
        router.put(&format!("k{i:05}"), "v").await.unwrap();
    }
    cut.store(true, Ordering::Relaxed);
    mark_down(&router).await;
    let mut seen = HashSet::new();
    let mut scanner = router.scanner("k").page_size(97);
    while let Some((key, _)) = scanner.next().await.unwrap() {
        assert!(seen.insert(key.clone()), "{key} returned twice");
    }
    assert_eq!(
        seen.len(),
        2_000,
        "every record once, though node c is down"
    );
    assert_eq!(router.count().await.unwrap(), 2_000);
    // Reads and writes of every key go on too.
    for i in (0..2_000).step_by(7) {
        let key = format!("k{i:05}");
        assert!(router.get(&key).await.unwrap().is_some(), "{key}");
        router.put(&key, "w").await.unwrap();
    }
}

#[tokio::test]
async fn r2_a_node_lost_during_a_scan_fails_the_page_instead_of_skipping_records() {
    let (router, cut) = router(2);
    for i in 0..600 {
        router.put(&format!("k{i:04}"), "v").await.unwrap();
    }
    let first = router.scan("k", None, 10).await.unwrap();
    cut.store(true, Ordering::Relaxed);
    mark_down(&router).await;
    let mut cursor = first.next;
    let mut failed = false;
    while let Some(c) = cursor {
        match router.scan("k", Some(&c), 50).await {
            Ok(page) => cursor = page.next,
            Err(Error::Unavailable { node, .. }) => {
                assert_eq!(node, "c");
                failed = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        failed,
        "the scan went past the lost node's records without a word"
    );
}

#[tokio::test]
async fn r1_a_stand_in_refuses_what_it_cannot_check() {
    let (router, cut) = router(1);
    let key = common::keys_on(&router, "c", "k", 1).remove(0);
    let v = router.put(&key, "v").await.unwrap();
    cut.store(true, Ordering::Relaxed);
    mark_down(&router).await;
    // Conditions and deletes need the record's node: a stand-in does not have it.
    for r in [
        router
            .put_if_absent(&key, "w", Expiry::Never)
            .await
            .map(drop),
        router
            .compare_and_swap(&key, v, "w", Expiry::Never)
            .await
            .map(drop),
        router.delete(&key).await.map(drop),
    ] {
        assert!(matches!(r, Err(Error::Unavailable { .. })), "{r:?}");
    }
    assert!(matches!(
        router.get(&key).await,
        Err(Error::Unavailable { .. })
    ));
    // An unconditional write goes to a stand-in, and from then on the key answers.
    let w = router.put(&key, "w").await.unwrap();
    assert_eq!(router.get(&key).await.unwrap().as_deref(), Some(&b"w"[..]));
    assert!(router.delete_if_version(&key, w).await.unwrap());
    assert_eq!(router.get(&key).await.unwrap(), None);
    cut.store(false, Ordering::Relaxed);
    router.check_health().await;
    assert!(router.health().iter().all(|h| h.pending_handbacks == 0));
    assert_eq!(
        router.get(&key).await.unwrap(),
        None,
        "the delete was handed back"
    );
}

#[tokio::test]
async fn r2_a_node_back_empty_still_sees_the_records_its_partner_holds() {
    let mem = || -> DynRegistry { Arc::new(MemoryRegistry::new()) };
    let router = ShardedRegistry::builder()
        .node("a", mem())
        .node("b", mem())
        .node("c", mem())
        .replicas(2)
        .background_health_checks(false)
        .build()
        .unwrap();
    for i in 0..300 {
        router.put(&format!("k{i}"), "old").await.unwrap();
    }
    // Node a's process restarted: the same id, nothing in it.
    router.replace_node("a", mem()).unwrap();
    let mine: Vec<String> = (0..300)
        .map(|i| format!("k{i}"))
        .filter(|k| router.node_of(k).as_deref() == Some("a"))
        .collect();
    assert!(mine.len() > 50);
    for (n, key) in mine.iter().enumerate() {
        match n % 3 {
            // A delete removes the record its partner holds: never a silent no-op.
            0 => {
                assert!(router.delete(key).await.unwrap(), "{key}");
                assert_eq!(router.get(key).await.unwrap(), None, "{key}");
            }
            // Put-if-absent sees it too: a conflict, not an overwrite.
            1 => {
                let r = router.put_if_absent(key, "new", Expiry::Never).await;
                assert!(matches!(r, Err(Error::Conflict { .. })), "{key}: {r:?}");
                assert_eq!(router.get(key).await.unwrap().as_deref(), Some(&b"old"[..]));
            }
            // And a touch finds it.
            _ => {
                let t = router.touch(key, Expiry::Never).await.unwrap();
                assert!(t.is_some(), "{key}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_pings_but_fails_every_call_does_not_spin_the_checker() {
    let cut = Arc::new(AtomicBool::new(false));
    let mem = || -> DynRegistry { Arc::new(MemoryRegistry::new()) };
    let mut link = Link::new(mem(), &cut);
    link.pings_anyway = true;
    let router = ShardedRegistry::builder()
        .node("a", mem())
        .node("b", mem())
        .node("c", Arc::new(link))
        .replicas(2)
        .health_interval(std::time::Duration::from_millis(50))
        .build()
        .unwrap();
    // Writes while c fails leave hand-backs for it, which keep failing.
    cut.store(true, Ordering::Relaxed);
    for i in 0..300 {
        let _ = router.put(&format!("k{i}"), "v").await;
    }
    let before = router
        .health()
        .iter()
        .find(|h| h.node == "c")
        .map(|h| h.failures);
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let after = router
        .health()
        .iter()
        .find(|h| h.node == "c")
        .map(|h| h.failures);
    let rounds = after.unwrap_or(0) - before.unwrap_or(0);
    // One failed hand-back per interval (and the node coming back up in between),
    // not a loop of rounds: about 20 in a second.
    assert!(
        rounds < 100,
        "{rounds} failures in a second: the checker spins"
    );
}

/// A replicated write with a TTL: every copy expires at the same instant, the TTL
/// taken on the router's clock, and the write costs no read of the coordinator (the
/// copies used to learn the instant from a `get_entry`, a third round trip).
#[tokio::test]
async fn r2_a_ttl_write_gives_every_copy_one_instant_without_an_extra_read() {
    let clock = nautilus_core::ManualClock::starting_now();
    let nodes: Vec<Arc<MemoryRegistry>> = (0..3).map(|_| common::memory_node(&clock)).collect();
    let mut builder = ShardedRegistry::builder()
        .clock(Arc::new(clock.clone()))
        .replicas(2)
        .background_health_checks(false);
    for (i, n) in nodes.iter().enumerate() {
        builder = builder.node(format!("n{i}"), Arc::clone(n) as DynRegistry);
    }
    let router = builder.build().unwrap();
    let ttl = std::time::Duration::from_secs(30);
    for i in 0..50 {
        router
            .put_with_ttl(&format!("k{i}"), "v", ttl)
            .await
            .unwrap();
    }
    let want = nautilus_core::Clock::now(&clock).as_millis() + 30_000;
    let mut copies = 0;
    for n in &nodes {
        assert_eq!(
            n.stats().await.unwrap().hits,
            0,
            "a put read its coordinator"
        );
        for i in 0..50 {
            if let Some(e) = n.get_entry(&format!("k{i}")).await.unwrap() {
                assert_eq!(e.expires_at.map(|t| t.as_millis()), Some(want), "k{i}");
                copies += 1;
            }
        }
    }
    assert_eq!(copies, 100, "every record on its two replicas");
    // Gone from both copies at that instant.
    clock.advance(ttl);
    for i in 0..50 {
        assert_eq!(router.get(&format!("k{i}")).await.unwrap(), None);
    }
    // A TTL too short for the coordinator's clock falls back to its own: a node
    // ahead of the router still takes the write.
    let ahead = nautilus_core::ManualClock::starting_now();
    ahead.advance(std::time::Duration::from_secs(5));
    let fast: Vec<DynRegistry> = (0..2)
        .map(|_| common::memory_node(&ahead) as DynRegistry)
        .collect();
    let router = ShardedRegistry::builder()
        .clock(Arc::new(clock.clone()))
        .node("a", Arc::clone(&fast[0]))
        .node("b", Arc::clone(&fast[1]))
        .replicas(2)
        .background_health_checks(false)
        .build()
        .unwrap();
    router
        .put_with_ttl("short", "v", std::time::Duration::from_secs(1))
        .await
        .unwrap();
    let on = |n: &DynRegistry| {
        let n = Arc::clone(n);
        async move { n.get_entry("short").await.unwrap().map(|e| e.expires_at) }
    };
    let (a, b) = (on(&fast[0]).await, on(&fast[1]).await);
    assert!(a.is_some() && a == b, "{a:?} {b:?}");
}

/// R=2 over a, b and c (behind a link), a key whose replicas are b then c: c goes
/// down, `outage` writes the key (a stand-in holds it for c), c comes back but its
/// hand-back fails once, so the hint is still pending when the next write comes.
async fn late_handback(
    outage: impl AsyncFnOnce(&ShardedRegistry, &str),
) -> (ShardedRegistry, Arc<Link>, String) {
    let (router, link, cut) = linked(2);
    let key = key_ranked([1, 2, 0]);
    router.put(&key, "before").await.unwrap();
    cut.store(true, Ordering::Relaxed);
    mark_down(&router).await;
    outage(&router, &key).await;
    cut.store(false, Ordering::Relaxed);
    link.failing_imports.store(1, Ordering::Relaxed);
    router.check_health().await;
    let c = router.health().into_iter().find(|h| h.node == "c").unwrap();
    assert_eq!((c.state, c.pending_handbacks), (NodeState::Up, 1));
    (router, link, key)
}

/// The write of [`late_handback`]'s outage in the first two tests.
async fn during_the_outage(router: &ShardedRegistry, key: &str) {
    router.put(key, "during the outage").await.unwrap();
}

#[tokio::test]
async fn r2_a_delete_acknowledged_while_a_handback_is_pending_is_never_undone() {
    let (router, _link, key) = late_handback(during_the_outage).await;
    assert!(router.delete(&key).await.unwrap());
    assert_eq!(
        router.get(&key).await.unwrap(),
        None,
        "the delete was undone"
    );
    router.check_health().await;
    assert_eq!(
        router.get(&key).await.unwrap(),
        None,
        "undone by the hand-back"
    );
    let repair = router.repair().unwrap().wait().await.unwrap();
    assert_eq!(repair.failed, 0);
    assert_eq!(router.get(&key).await.unwrap(), None, "undone by repair");
}

#[tokio::test]
async fn r2_an_expired_write_made_while_a_handback_is_pending_brings_nothing_back() {
    let (router, _link, key) = late_handback(during_the_outage).await;
    router
        .put_with_ttl(&key, "short", std::time::Duration::from_millis(50))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    assert_eq!(
        router.get(&key).await.unwrap(),
        None,
        "an older value came back"
    );
    router.check_health().await;
    let repair = router.repair().unwrap().wait().await.unwrap();
    assert_eq!(repair.failed, 0);
    assert_eq!(router.get(&key).await.unwrap(), None, "back after repair");
}

#[tokio::test]
async fn r2_a_pending_handback_that_expired_is_not_answered() {
    let (router, _link, key) = late_handback(async |router: &ShardedRegistry, key: &str| {
        router
            .put_with_ttl(key, "short", std::time::Duration::from_millis(50))
            .await
            .unwrap();
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    assert_eq!(
        router.entry(&key).await.unwrap(),
        None,
        "a record whose newest write expired was answered"
    );
    router.check_health().await;
    assert_eq!(router.get(&key).await.unwrap(), None);
}

#[tokio::test]
async fn r2_writes_after_an_import_at_the_routers_horizon_reach_every_replica() {
    use nautilus_core::{Entry, ManualClock, Version};
    let now = 1_800_000_000_000u64;
    let clock = Arc::new(ManualClock::new(now));
    let mut b = ShardedRegistry::builder()
        .background_health_checks(false)
        .replicas(2)
        .clock(clock.clone());
    for i in 0..3 {
        let node = MemoryRegistry::builder()
            .clock(clock.clone())
            .build()
            .unwrap();
        b = b.node(format!("n{i}"), Arc::new(node) as DynRegistry);
    }
    let router = b.build().unwrap();
    let nodes_horizon = now + Version::MAX_AHEAD.as_millis() as u64;
    let at = |ms: u64| Version::from_raw((ms << Version::COUNTER_BITS) | 0xffff);
    // The nodes would take this one; the router, a day stricter, does not.
    match router
        .import(
            "k",
            Entry::new(
                nautilus_core::Bytes::from_static(b"h"),
                at(nodes_horizon),
                None,
            ),
        )
        .await
    {
        Err(Error::InvalidArgument { .. }) => {}
        other => panic!("an import at the nodes' horizon: {other:?}"),
    }
    // The furthest it takes leaves room for the writes after it.
    let furthest = at(nodes_horizon - 86_400_000);
    assert!(
        router
            .import(
                "k",
                Entry::new(nautilus_core::Bytes::from_static(b"h"), furthest, None)
            )
            .await
            .unwrap()
    );
    for i in 0..3 {
        let v = router.put("k", format!("after {i}")).await.unwrap();
        assert!(v > furthest);
    }
    assert_eq!(
        router.get("k").await.unwrap().as_deref(),
        Some(&b"after 2"[..])
    );
    let repair = router.repair().unwrap().wait().await.unwrap();
    assert_eq!(repair.failed, 0);
}

#[tokio::test]
async fn r2_repair_removes_a_stand_ins_leftover_copy_even_when_the_replicas_moved_on() {
    let (cut_b, cut_c) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let c_store: DynRegistry = Arc::new(MemoryRegistry::new());
    let router = ShardedRegistry::builder()
        .node("a", Arc::new(MemoryRegistry::new()))
        .node(
            "b",
            Arc::new(Link::new(Arc::new(MemoryRegistry::new()), &cut_b)),
        )
        .node("c", Arc::new(Link::new(Arc::clone(&c_store), &cut_c)))
        .replicas(2)
        .background_health_checks(false)
        .build()
        .unwrap();
    let key = key_ranked([0, 1, 2]);
    let state = |node: &str| {
        router
            .health()
            .into_iter()
            .find(|h| h.node == node)
            .map(|h| h.state)
    };
    // b down: v1 goes to a and to c, standing in for b.
    cut_b.store(true, Ordering::Relaxed);
    router.check_health().await;
    router.check_health().await;
    assert_eq!(state("b"), Some(NodeState::Down));
    router.put(&key, "v1").await.unwrap();
    assert!(c_store.get_entry(&key).await.unwrap().is_some());
    // b back while c is cut: the hand-back reaches b, removing c's copy cannot.
    cut_c.store(true, Ordering::Relaxed);
    cut_b.store(false, Ordering::Relaxed);
    router.check_health().await;
    router.check_health().await;
    assert_eq!(state("b"), Some(NodeState::Up));
    cut_c.store(false, Ordering::Relaxed);
    router.check_health().await;
    assert_eq!(state("c"), Some(NodeState::Up));
    assert!(
        c_store.get_entry(&key).await.unwrap().is_some(),
        "c's copy is left over"
    );
    // The replicas move on; repair must still remove c's copy, not update it.
    router.put(&key, "v2").await.unwrap();
    let repair = router.repair().unwrap().wait().await.unwrap();
    assert_eq!(repair.failed, 0);
    assert_eq!(
        c_store.get_entry(&key).await.unwrap(),
        None,
        "repair left a live copy on a node that is not a replica"
    );
    assert_eq!(router.get(&key).await.unwrap().as_deref(), Some(&b"v2"[..]));
}

#[tokio::test]
async fn r1_a_write_a_stand_in_took_in_the_replicas_last_millisecond_is_handed_back() {
    let (router, cut) = router(1);
    let keys = common::keys_on(&router, "c", "t", 20);
    for k in &keys {
        // The replica's last write and the stand-in's, most often in one millisecond:
        // the stand-in's clock must not give the second the first one's version.
        router.put(k, "old").await.unwrap();
        cut.store(true, Ordering::Relaxed);
        mark_down(&router).await;
        router.put(k, "new").await.unwrap();
        cut.store(false, Ordering::Relaxed);
        router.check_health().await;
        assert_eq!(
            router.get(k).await.unwrap().as_deref(),
            Some(&b"new"[..]),
            "{k}: the write taken during the outage was lost at hand-back"
        );
    }
}

#[tokio::test]
async fn a_read_quorum_of_two_sees_a_write_its_first_replica_missed() {
    // R=3, W=2, read quorum 2: every read overlaps every acknowledged write, the
    // reads of `RegistryExt::get` (which try the router's `get_ready` first) too.
    let cut = Arc::new(AtomicBool::new(false));
    let mem = || -> DynRegistry { Arc::new(MemoryRegistry::new()) };
    let router = ShardedRegistry::builder()
        .node("a", mem())
        .node("b", mem())
        .node("c", {
            let link = Link::new(mem(), &cut);
            // c reads without waiting, as an in-process node does.
            link.ready.store(true, Ordering::Relaxed);
            Arc::new(link) as DynRegistry
        })
        .replicas(3)
        .write_quorum(2)
        .read_quorum(2)
        .background_health_checks(false)
        .build()
        .unwrap();
    let key = key_ranked([2, 0, 1]);
    router.put(&key, "v1").await.unwrap();
    cut.store(true, Ordering::Relaxed);
    mark_down(&router).await;
    router.put(&key, "v2").await.unwrap();
    cut.store(false, Ordering::Relaxed);
    router.check_health().await;
    assert!(router.health().iter().all(|h| h.state == NodeState::Up));
    // c, the key's first replica, still holds v1: no node could stand in for it.
    let read = router.get(&key).await.unwrap().unwrap();
    assert_eq!(read, "v2");
}
