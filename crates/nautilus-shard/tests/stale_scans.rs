//! Scans and counts right after a replica comes back, while what stand-ins took for
//! it is still to be handed back: that node lacks the outage's writes and still holds
//! what was deleted or rewritten meanwhile, so its records are reported by another
//! replica until it has caught up.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nautilus_core::{DynRegistry, Registry, RegistryExt};
use nautilus_memory::MemoryRegistry;
use nautilus_shard::{NodeState, ShardedRegistry};

mod common;

use common::Link;

/// R=2 over a, b and c, c behind a link: c is cut, marked down, and `outage` runs;
/// then c answers again but its first hand-back fails, so all of them stay pending.
async fn returned_with_handbacks_pending(
    outage: impl AsyncFnOnce(&ShardedRegistry),
) -> (ShardedRegistry, Arc<AtomicBool>) {
    let (router, link, cut) = common::linked(2);
    for i in 0..3_000 {
        router.put(&format!("k{i:05}"), "before").await.unwrap();
    }
    cut.store(true, Ordering::Relaxed);
    router.check_health().await;
    router.check_health().await;
    outage(&router).await;
    cut.store(false, Ordering::Relaxed);
    link.failing_imports.store(1, Ordering::Relaxed);
    router.check_health().await;
    let c = router.health().into_iter().find(|h| h.node == "c").unwrap();
    assert_eq!(c.state, NodeState::Up);
    assert!(c.pending_handbacks > 500, "{c:?}");
    (router, cut)
}

/// Deletes the first thousand keys, rewrites the next thousand, writes a thousand new.
async fn churn(router: &ShardedRegistry) {
    for i in 0..1_000 {
        assert!(router.delete(&format!("k{i:05}")).await.unwrap());
    }
    for i in 1_000..2_000 {
        router.put(&format!("k{i:05}"), "during").await.unwrap();
    }
    for i in 3_000..4_000 {
        router.put(&format!("k{i:05}"), "during").await.unwrap();
    }
}

/// What the scan should answer after [`churn`].
fn expected() -> HashMap<String, &'static str> {
    (1_000..4_000)
        .map(|i| {
            let v = if (2_000..3_000).contains(&i) {
                "before"
            } else {
                "during"
            };
            (format!("k{i:05}"), v)
        })
        .collect()
}

async fn scanned(router: &ShardedRegistry) -> HashMap<String, String> {
    let mut seen = HashMap::new();
    let mut scanner = router.scanner("k").page_size(97);
    while let Some((key, entry)) = scanner.next().await.unwrap() {
        let value = String::from_utf8(entry.value.to_vec()).unwrap();
        assert!(
            seen.insert(key.clone(), value).is_none(),
            "{key} returned twice"
        );
    }
    seen
}

fn compare(seen: &HashMap<String, String>, when: &str) {
    let want = expected();
    let shown_deleted = seen.keys().filter(|k| !want.contains_key(*k)).count();
    let missing = want.keys().filter(|k| !seen.contains_key(*k)).count();
    let stale = want
        .iter()
        .filter(|(k, v)| seen.get(*k).is_some_and(|s| s != *v))
        .count();
    assert_eq!(
        (shown_deleted, missing, stale),
        (0, 0, 0),
        "{when}: deleted records shown, written ones missing, stale values"
    );
}

#[tokio::test]
async fn r2_a_scan_while_a_returned_node_has_handbacks_pending_answers_the_newest_records() {
    let (router, _cut) = returned_with_handbacks_pending(churn).await;
    compare(&scanned(&router).await, "hand-backs pending");
    assert_eq!(router.count().await.unwrap(), 3_000);
    // Once handed back, the node reports its records again, and they are the same.
    router.check_health().await;
    assert!(router.health().iter().all(|h| h.pending_handbacks == 0));
    compare(&scanned(&router).await, "handed back");
    assert_eq!(router.count().await.unwrap(), 3_000);
}

#[tokio::test]
async fn r2_a_scan_started_before_the_handbacks_land_stays_right_after_they_do() {
    let (router, _cut) = returned_with_handbacks_pending(churn).await;
    let first = router.scan("k", None, 500).await.unwrap();
    // The hand-backs land mid-scan: the node stays out of this scan.
    router.check_health().await;
    assert!(router.health().iter().all(|h| h.pending_handbacks == 0));
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut page = first;
    loop {
        for (k, e) in page.records {
            let v = String::from_utf8(e.value.to_vec()).unwrap();
            assert!(seen.insert(k.clone(), v).is_none(), "{k} returned twice");
        }
        match page.next {
            Some(c) => page = router.scan("k", Some(&c), 500).await.unwrap(),
            None => break,
        }
    }
    compare(&seen, "hand-backs landed mid-scan");
}

#[tokio::test]
async fn r2_a_stale_node_still_reports_keys_whose_other_replica_is_down() {
    // c has hand-backs pending and then a goes down: keys whose replicas are a and c
    // have only c left, which reports them rather than none.
    let cut_a = Arc::new(AtomicBool::new(false));
    let cut_c = Arc::new(AtomicBool::new(false));
    let mem = || -> DynRegistry { Arc::new(MemoryRegistry::new()) };
    let link_c = Arc::new(Link::new(mem(), &cut_c));
    let router = ShardedRegistry::builder()
        .node("a", Arc::new(Link::new(mem(), &cut_a)) as DynRegistry)
        .node("b", mem())
        .node("c", Arc::clone(&link_c) as DynRegistry)
        .replicas(2)
        .background_health_checks(false)
        .build()
        .unwrap();
    for i in 0..1_000 {
        router.put(&format!("k{i:05}"), "v").await.unwrap();
    }
    cut_c.store(true, Ordering::Relaxed);
    router.check_health().await;
    router.check_health().await;
    // A write c's stand-in takes, so c has a hand-back pending.
    let placement = nautilus_shard::Placement::new([("a", 1), ("b", 1), ("c", 1)]).unwrap();
    let of_c = (0..1_000)
        .map(|i| format!("k{i:05}"))
        .find(|k| placement.preference(k, 2)[0] == 2)
        .unwrap();
    router.put(&of_c, "w").await.unwrap();
    cut_c.store(false, Ordering::Relaxed);
    // The hand-back fails in both rounds that mark a down.
    link_c.failing_imports.store(2, Ordering::Relaxed);
    cut_a.store(true, Ordering::Relaxed);
    router.check_health().await;
    router.check_health().await;
    let states: Vec<_> = router
        .health()
        .into_iter()
        .map(|h| (h.node, h.state, h.pending_handbacks))
        .collect();
    assert!(
        states.contains(&("a".into(), NodeState::Down, 0))
            && states.contains(&("c".into(), NodeState::Up, 1)),
        "{states:?}"
    );
    let a_and_c = (0..1_000)
        .map(|i| format!("k{i:05}"))
        .filter(|k| {
            let p = placement.preference(k, 2);
            p.contains(&0) && p.contains(&2)
        })
        .count();
    assert!(a_and_c > 100, "{a_and_c}");
    let seen = scanned(&router).await;
    assert_eq!(
        seen.len(),
        1_000,
        "every record once, a's and c's keys from c"
    );
}
