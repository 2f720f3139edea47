//! Nodes broken on purpose (a ping that panics, batch reads answered short, scans
//! that never end): the router keeps checking, loses nothing, and never hangs.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nautilus_core::{DynRegistry, Error, Registry, RegistryExt};
use nautilus_memory::MemoryRegistry;
use nautilus_shard::{NodeState, ShardedRegistry};

mod common;

use common::Link;

fn mem() -> DynRegistry {
    Arc::new(MemoryRegistry::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_that_panics_does_not_stop_the_health_checks() {
    let cut = Arc::new(AtomicBool::new(false));
    let link = Link::new(mem(), &cut);
    let panics = Arc::clone(&link.panicking_pings);
    panics.store(true, Ordering::Relaxed);
    let router = ShardedRegistry::builder()
        .node("a", mem())
        .node("b", mem())
        .node("c", Arc::new(link))
        .replicas(2)
        .health_interval(Duration::from_millis(20))
        .health_timeout(Duration::from_millis(20))
        .build()
        .unwrap();
    // Rounds in which c's ping panics: c is counted down, the checker goes on.
    tokio::time::sleep(Duration::from_millis(200)).await;
    panics.store(false, Ordering::Relaxed);
    let up = async {
        while router.health().iter().any(|h| h.state != NodeState::Up) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), up)
        .await
        .expect("c answered again but was never marked up: the checker stopped");
    // And it still sees c go.
    cut.store(true, Ordering::Relaxed);
    let down = async {
        while !router
            .health()
            .iter()
            .any(|h| h.node == "c" && h.state == NodeState::Down)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), down)
        .await
        .expect("c was cut but never marked down: the checker stopped");
}

#[tokio::test]
async fn a_node_whose_scan_never_ends_gets_short_pages_not_a_hang() {
    let cut = Arc::new(AtomicBool::new(false));
    let mut link = Link::new(mem(), &cut);
    link.endless_scans = true;
    let router = ShardedRegistry::builder()
        .node("a", mem())
        .node("b", Arc::new(link))
        .background_health_checks(false)
        .build()
        .unwrap();
    for i in 0..20 {
        router.put(&format!("k{i}"), "v").await.unwrap();
    }
    // One page comes back, short, with its cursor.
    let page = tokio::time::timeout(Duration::from_secs(5), router.scan("", None, 100))
        .await
        .expect("one scan page never came back")
        .unwrap();
    assert!(page.next.is_some());
    // A walk of it all never ends, but it can be given up on.
    let walk = async {
        let mut scanner = router.scanner("");
        let mut n = 0;
        while scanner.next().await.unwrap().is_some() {
            n += 1;
        }
        n
    };
    let walked = tokio::time::timeout(Duration::from_millis(300), walk).await;
    assert!(walked.is_err(), "{walked:?}");
}

/// A node whose scan answers the cursor it was sent, with records each time (the
/// outside attempt's "scan forever"): a count, a scan walk and a repair through a
/// router end with an error instead of walking it forever. Before, a count at R=2
/// never returned, and a timeout around it never fired.
#[tokio::test]
async fn a_node_whose_scan_answers_the_cursor_it_was_sent_fails_walks_instead_of_hanging() {
    let cut = Arc::new(AtomicBool::new(false));
    let mut link = Link::new(mem(), &cut);
    link.stuck_scans = true;
    let router = ShardedRegistry::builder()
        .replicas(2)
        .node("a", mem())
        .node("b", Arc::new(link))
        .node("c", mem())
        .background_health_checks(false)
        .build()
        .unwrap();
    for i in 0..50 {
        router.put(&format!("k{i}"), "v").await.unwrap();
    }
    let count = tokio::time::timeout(Duration::from_secs(5), router.count())
        .await
        .expect("count never came back");
    assert!(
        matches!(&count, Err(Error::Backend { source, .. }) if source.to_string().contains("never end")),
        "{count:?}"
    );
    let walk = async {
        let mut scanner = router.scanner("");
        loop {
            match scanner.next().await {
                Ok(Some(_)) => {}
                other => return other.map(drop),
            }
        }
    };
    let walked = tokio::time::timeout(Duration::from_secs(5), walk)
        .await
        .expect("a scan walk never came back");
    assert!(walked.is_err(), "{walked:?}");
    let repaired = tokio::time::timeout(Duration::from_secs(5), router.repair().unwrap().wait())
        .await
        .expect("repair never came back");
    assert!(repaired.is_err(), "{repaired:?}");
}

/// A node whose scan pages hold records outside the prefix asked for: the router's
/// scans and counts leave them out.
#[tokio::test]
async fn records_a_node_scans_outside_the_prefix_are_left_out() {
    for replicas in [1, 2] {
        let cut = Arc::new(AtomicBool::new(false));
        let mut link = Link::new(mem(), &cut);
        // A key outside the prefix that b owns, so that only the prefix can leave it out.
        let placement = nautilus_shard::Placement::new([("a", 1), ("b", 1)]).unwrap();
        link.foreign_scans = (0..)
            .map(|i| format!("q{i}"))
            .find(|k| placement.preference(k, 2)[0] == 1);
        let router = ShardedRegistry::builder()
            .replicas(replicas)
            .node("a", mem())
            .node("b", Arc::new(link))
            .background_health_checks(false)
            .build()
            .unwrap();
        for i in 0..30 {
            router.put(&format!("p{i}"), "v").await.unwrap();
        }
        let mut scanner = router.scanner("p");
        let mut keys = Vec::new();
        while let Some((k, _)) = scanner.next().await.unwrap() {
            keys.push(k);
        }
        assert_eq!(keys.len(), 30, "R={replicas}: {keys:?}");
        assert!(
            keys.iter().all(|k| k.starts_with('p')),
            "R={replicas}: {keys:?}"
        );
    }
}

#[tokio::test]
async fn repair_removes_no_copy_a_replica_did_not_answer_for() {
    let cut = Arc::new(AtomicBool::new(false));
    let (c, d) = (Link::new(mem(), &cut), Link::new(mem(), &cut));
    let short = [Arc::clone(&c.short_batches), Arc::clone(&d.short_batches)];
    let nodes: Vec<(&str, DynRegistry)> = vec![
        ("a", mem()),
        ("b", mem()),
        ("c", Arc::new(c)),
        ("d", Arc::new(d)),
    ];
    let router = |nodes: &[(&str, DynRegistry)]| {
        let mut b = ShardedRegistry::builder()
            .replicas(2)
            .background_health_checks(false);
        for (id, n) in nodes {
            b = b.node(*id, Arc::clone(n));
        }
        b.build().unwrap()
    };
    let first = router(&nodes);
    // c and d cut off and known down: the keys they both hold go to stand-ins.
    cut.store(true, Ordering::Relaxed);
    for _ in 0..2 {
        first.check_health().await;
    }
    for i in 0..200 {
        first.put(&format!("k{i}"), format!("v{i}")).await.unwrap();
    }
    // That router stops before handing anything back; c and d return, answering
    // batch reads short; a new router repairs.
    drop(first);
    cut.store(false, Ordering::Relaxed);
    for s in &short {
        s.store(true, Ordering::Relaxed);
    }
    let second = router(&nodes);
    let progress = second.repair().unwrap().wait().await.unwrap();
    assert!(
        progress.failed > 0,
        "short answers were not counted: {progress:?}"
    );
    // Nothing was lost: repaired properly once the nodes answer whole batches.
    for s in &short {
        s.store(false, Ordering::Relaxed);
    }
    let progress = second.repair().unwrap().wait().await.unwrap();
    assert_eq!(progress.failed, 0, "{progress:?}");
    for i in 0..200 {
        let got = second.get(&format!("k{i}")).await.unwrap();
        assert_eq!(
            got.as_deref(),
            Some(format!("v{i}").as_bytes()),
            "k{i} lost"
        );
    }
    assert_eq!(second.count().await.unwrap(), 200);
}

#[tokio::test]
async fn forged_scan_cursors_are_refused_not_taken_as_the_end() {
    let router = ShardedRegistry::builder()
        .node("a", mem())
        .node("b", mem())
        .replicas(2)
        .background_health_checks(false)
        .build()
        .unwrap();
    router.put("k", "v").await.unwrap();
    // At the end (a finished scan hands out no cursor), past it, a node named
    // twice, a node that is not there.
    for raw in [
        "r2.0.2.-.-",
        "r2.0.2.0+0+0+1.cgarbage",
        "r2.0.5.-.-",
        "r2.0.0.1+1.-",
        "r2.0.0.7.-",
    ] {
        let got = router
            .scan("", Some(&nautilus_core::Cursor::new(raw)), 10)
            .await;
        assert!(
            matches!(got, Err(nautilus_core::Error::InvalidArgument { .. })),
            "{raw}: {got:?}"
        );
    }
    // A real cursor still works.
    let first = router.scan("", None, 1).await.unwrap();
    if let Some(next) = first.next {
        router.scan("", Some(&next), 10).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_hangs_times_out_is_marked_down_and_its_keys_answer_from_replicas() {
    let cut = Arc::new(AtomicBool::new(false));
    let mut link = Link::new(mem(), &cut);
    // It looks alive: pings answer while its calls hang.
    link.pings_anyway = true;
    let hanging = Arc::clone(&link.hanging);
    let router = ShardedRegistry::builder()
        .node("a", mem())
        .node("b", mem())
        .node("c", Arc::new(link))
        .replicas(2)
        .write_quorum(1)
        .call_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let keys = common::keys_on(&router, "c", "k", 20);
    for k in &keys {
        router.put(k, k.clone()).await.unwrap();
    }
    hanging.store(true, Ordering::Relaxed);
    let (mut timed_out, mut answered) = (0, 0);
    for k in &keys {
        let read = tokio::time::timeout(Duration::from_secs(3), router.get(k))
            .await
            .expect("a read of a hanging node's key hung");
        match read {
            Ok(v) => {
                assert_eq!(v.as_deref(), Some(k.as_bytes()), "{k}");
                answered += 1;
            }
            Err(nautilus_core::Error::Unavailable { node, .. }) => {
                assert_eq!(node, "c");
                timed_out += 1;
            }
            Err(other) => panic!("{k}: {other:?}"),
        }
    }
    // The timeouts marked c down (threshold 2); its keys then answer from replicas.
    assert!(
        timed_out <= 2,
        "{timed_out} reads failed before c was marked down"
    );
    assert!(answered >= keys.len() - 2);
    assert!(
        router
            .health()
            .iter()
            .any(|h| h.node == "c" && h.state == NodeState::Down)
    );
    let write = tokio::time::timeout(Duration::from_secs(3), router.put(&keys[0], "new"))
        .await
        .expect("a write of a hanging node's key hung");
    write.unwrap();
    assert_eq!(
        router.get(&keys[0]).await.unwrap().as_deref(),
        Some(&b"new"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_handback_to_a_slow_node_does_not_delay_noticing_another_node_die() {
    let (cut_c, cut_d) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let c = Link::new(mem(), &cut_c);
    let slow = Arc::clone(&c.slow_imports_ms);
    let interval = Duration::from_millis(50);
    let router = ShardedRegistry::builder()
        .node("a", mem())
        .node("b", mem())
        .node("c", Arc::new(c))
        .node("d", Arc::new(Link::new(mem(), &cut_d)))
        .replicas(2)
        .write_quorum(1)
        .health_interval(interval)
        .health_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let wait_for = |node: &'static str, state: NodeState| {
        let router = &router;
        async move {
            while !router
                .health()
                .iter()
                .any(|h| h.node == node && h.state == state)
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    // Keys c is a replica of, whose other replica and stand-in are a and b: nothing
    // about them calls d, so only the health checks can notice d die.
    let placement =
        nautilus_shard::Placement::new([("a", 1), ("b", 1), ("c", 1), ("d", 1)]).unwrap();
    let keys: Vec<String> = (0..20_000)
        .map(|i| format!("k{i}"))
        .filter(|k| {
            let p = placement.preference(k, 3);
            p[1] == 2 && !p.contains(&3)
        })
        .take(300)
        .collect();
    cut_c.store(true, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(5), wait_for("c", NodeState::Down))
        .await
        .unwrap();
    for k in &keys {
        router.put(k, "v").await.unwrap();
    }
    // c comes back with a backlog that takes seconds to drain (20 ms an import).
    slow.store(20, Ordering::Relaxed);
    cut_c.store(false, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(5), wait_for("c", NodeState::Up))
        .await
        .unwrap();
    // d dies while c drains: it is down within a few intervals, not after the backlog.
    let died = std::time::Instant::now();
    cut_d.store(true, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(3), wait_for("d", NodeState::Down))
        .await
        .unwrap_or_else(|_| panic!("d not marked down 3 s after it died"));
    assert!(died.elapsed() < interval * 10, "{:?}", died.elapsed());
    assert!(
        router
            .health()
            .iter()
            .any(|h| h.node == "c" && h.pending_handbacks > 0),
        "the backlog drained before d died: the test proves nothing"
    );
}

/// A node that lists more corrupt keys as skipped on its last page than the page has
/// room for, all of them keys it would report: the router owes them from the other
/// replica, carries what does not fit in its cursor, and every page stays within its
/// limit. A read of each then heals the node's copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_a_node_skips_as_corrupt_are_scanned_from_a_replica_within_the_page_limit() {
    let cut = Arc::new(AtomicBool::new(false));
    let links: Vec<Arc<Link>> = (0..3).map(|_| Arc::new(Link::new(mem(), &cut))).collect();
    let mut b = ShardedRegistry::builder()
        .replicas(2)
        .background_health_checks(false);
    for (i, l) in links.iter().enumerate() {
        b = b.node(format!("n{i}"), Arc::clone(l) as DynRegistry);
    }
    let router = b.build().unwrap();
    let mut all = std::collections::BTreeMap::new();
    for i in 0..60 {
        let k = format!("k{i}");
        router.put(&k, format!("v{i}")).await.unwrap();
        all.insert(k, format!("v{i}").into_bytes());
    }
    for (n, link) in links.iter().enumerate() {
        *link.corrupt.lock() = common::keys_on(&router, &format!("n{n}"), "k", 6);
    }
    for limit in [1, 2, 4] {
        let mut seen = std::collections::BTreeMap::new();
        let mut cursor = None;
        loop {
            let page = router.scan("", cursor.as_ref(), limit).await.unwrap();
            assert!(
                page.records.len() <= limit,
                "{} > {limit}",
                page.records.len()
            );
            for (k, e) in page.records {
                assert!(
                    seen.insert(k.clone(), e.value.to_vec()).is_none(),
                    "{k} twice"
                );
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, all, "limit {limit}");
        assert_eq!(router.count().await.unwrap(), 60);
    }
    for link in &links {
        let corrupt = link.corrupt.lock().clone();
        for k in &corrupt {
            assert!(router.get(k).await.unwrap().is_some(), "{k}");
        }
        assert!(
            link.corrupt.lock().is_empty(),
            "not healed: {:?}",
            link.corrupt.lock()
        );
    }
}
