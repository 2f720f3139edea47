//! Replicated puts and reads made without waiting (`put_ready`, `get_ready` through an
//! R=2 router over in-process nodes): the same copies and answers as the awaited path,
//! and the awaited path whenever a node waits or a replica is stale.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nautilus_core::{
    Bytes, Condition, DynRegistry, Error, PutOptions, Registry, RegistryExt, Version,
};
use nautilus_memory::MemoryRegistry;
use nautilus_shard::ShardedRegistry;

mod common;

use common::{Link, copies};

/// Three in-process nodes.
fn memory_nodes() -> Vec<DynRegistry> {
    (0..3)
        .map(|_| Arc::new(MemoryRegistry::new()) as DynRegistry)
        .collect()
}

fn router(nodes: &[DynRegistry]) -> ShardedRegistry {
    let mut b = ShardedRegistry::builder()
        .replicas(2)
        .write_quorum(2)
        .background_health_checks(false);
    for (i, n) in nodes.iter().enumerate() {
        b = b.node(format!("n{i}"), Arc::clone(n));
    }
    b.build().unwrap()
}

#[tokio::test]
async fn a_put_without_waiting_leaves_the_same_copy_on_both_replicas() {
    let nodes = memory_nodes();
    let router = router(&nodes);
    // The first imports into each node show the router it answers without waiting.
    for i in 0..30 {
        router.put(&format!("warm{i}"), "w").await.unwrap();
    }
    // A put that breaks the key or value limit and has a zero TTL is refused for its
    // limit, as `put_opts` refuses it.
    let zero = PutOptions::default().ttl(std::time::Duration::ZERO);
    let refused = router.put_ready("", Bytes::from("v"), zero);
    assert!(
        matches!(refused, Ok(Err(Error::InvalidKey { .. }))),
        "{refused:?}"
    );
    let huge = Bytes::from(vec![b'x'; router.limits().max_value_bytes + 1]);
    let refused = router.put_ready("huge", huge, zero);
    assert!(
        matches!(refused, Ok(Err(Error::TooLarge { .. }))),
        "{refused:?}"
    );
    for i in 0..300 {
        let key = format!("k{i}");
        let value = Bytes::from(format!("v{i}"));
        let version = match router.put_ready(&key, value.clone(), PutOptions::default()) {
            Ok(answer) => answer.unwrap(),
            Err(_) => panic!("{key}: a put over memory nodes had to wait"),
        };
        let held: Vec<_> = copies(&nodes, &key).await.into_iter().flatten().collect();
        assert_eq!(held, vec![(value.clone(), version); 2], "{key}");
        // A compare-and-swap without waiting: the live version wins, a stale one
        // changes nothing anywhere.
        let cas = |v| PutOptions::default().condition(Condition::Version(v));
        let stale = router.put_ready(&key, Bytes::from("x"), cas(Version::from_raw(1)));
        assert!(
            matches!(stale, Ok(Err(Error::Conflict { .. }))),
            "{key}: {stale:?}"
        );
        let newer = router
            .put_ready(&key, Bytes::from("y"), cas(version))
            .unwrap()
            .unwrap();
        assert!(newer > version);
        let held: Vec<_> = copies(&nodes, &key).await.into_iter().flatten().collect();
        assert_eq!(held, vec![(Bytes::from("y"), newer); 2], "{key}");
    }
}

#[tokio::test]
async fn a_replica_whose_imports_wait_sends_the_put_down_the_awaited_path() {
    let cut = Arc::new(AtomicBool::new(false));
    let link = Arc::new(Link::new(Arc::new(MemoryRegistry::new()), &cut));
    let nodes: Vec<DynRegistry> = vec![
        Arc::new(MemoryRegistry::new()),
        Arc::clone(&link) as DynRegistry,
    ];
    let router = router(&nodes);
    // Two nodes, two replicas: every key is on both, and the link's imports wait.
    for i in 0..50 {
        let key = format!("k{i}");
        router.put(&key, "w").await.unwrap();
        let back = router.put_ready(&key, Bytes::from("v"), PutOptions::default());
        assert!(
            matches!(&back, Err(v) if v == "v"),
            "{key}: not handed back: {back:?}"
        );
        let held = copies(&nodes, &key).await;
        assert!(
            held.iter()
                .all(|c| c.as_ref().map(|c| &c.0) == Some(&Bytes::from("w"))),
            "{key}: a handed-back put changed a copy: {held:?}"
        );
    }
    // A link whose imports answer at once, and say so: puts the memory node
    // coordinates go through without waiting.
    link.ready.store(true, Ordering::Relaxed);
    let router = self::router(&nodes);
    let placement = nautilus_shard::Placement::new([("n0", 1), ("n1", 1)]).unwrap();
    let mut first = (0..)
        .map(|i| format!("m{i}"))
        .filter(|k| placement.preference(k, 2)[0] == 0);
    let (k1, k2) = (first.next().unwrap(), first.next().unwrap());
    let v = router
        .put_ready(&k1, Bytes::from("r"), PutOptions::default())
        .unwrap()
        .unwrap();
    assert_eq!(
        copies(&nodes, &k1).await,
        vec![Some((Bytes::from("r"), v)); 2]
    );
    // It says so but waits after all: the copy fails (W=2 is not met, as after a
    // timeout), without a panic or a hang, and the replica is left as it was.
    link.ready.store(false, Ordering::Relaxed);
    let failed = router.put_ready(&k2, Bytes::from("f"), PutOptions::default());
    assert!(
        matches!(failed, Ok(Err(Error::Unavailable { .. }))),
        "{failed:?}"
    );
    assert_eq!(nodes[1].get_entry(&k2).await.unwrap(), None);
}

#[tokio::test]
async fn a_router_node_takes_the_awaited_path_and_loses_no_put() {
    // Routers over routers: an inner router answers some imports at once and hands
    // others back (a key on a down node, a moving key), so it never claims to
    // answer without waiting, and every put through the outer router succeeds.
    let cut = Arc::new(AtomicBool::new(false));
    let inner = |link: Option<&Arc<Link>>| -> Arc<ShardedRegistry> {
        let mut b = ShardedRegistry::builder().background_health_checks(false);
        for i in 0..3 {
            let node: DynRegistry = match (i, link) {
                (2, Some(link)) => Arc::clone(link) as DynRegistry,
                _ => Arc::new(MemoryRegistry::new()),
            };
            b = b.node(format!("i{i}"), node);
        }
        Arc::new(b.build().unwrap())
    };
    let link = Arc::new(Link::new(Arc::new(MemoryRegistry::new()), &cut));
    link.ready.store(true, Ordering::Relaxed);
    let inner_a = inner(Some(&link));
    assert!(!inner_a.capabilities().answers_ready);
    let nodes: Vec<DynRegistry> = vec![Arc::clone(&inner_a) as DynRegistry, inner(None)];
    let outer = router(&nodes);
    // One inner node down: the inner router's stand-ins take its keys.
    cut.store(true, Ordering::Relaxed);
    inner_a.check_health().await;
    inner_a.check_health().await;
    let mut acked = Vec::new();
    for i in 0..300 {
        let key = format!("k{i}");
        let v = outer.put(&key, format!("v{i}")).await.unwrap();
        acked.push((key, v));
    }
    cut.store(false, Ordering::Relaxed);
    for (key, v) in acked {
        let e = outer.get_entry(&key).await.unwrap().unwrap();
        assert_eq!(e.version, v, "{key}");
    }
}

#[tokio::test]
async fn a_miss_is_confirmed_without_waiting_and_a_stale_first_replica_still_repaired() {
    let nodes = memory_nodes();
    let router = router(&nodes);
    let index = |id: String| id.trim_start_matches('n').parse::<usize>().unwrap();
    // A key on no replica: both replicas answer at once, so does the router.
    for i in 0..50 {
        let key = format!("never{i}");
        assert!(
            matches!(router.get_ready(&key), Some(Ok(None))),
            "{key}: a miss on both replicas of memory nodes had to wait"
        );
    }
    let never: Vec<String> = (0..50).map(|i| format!("never{i}")).collect();
    let refs: Vec<&str> = never.iter().map(String::as_str).collect();
    let before = router.stats().await.unwrap().misses;
    assert!(
        router
            .get_many(&refs)
            .await
            .iter()
            .all(|r| matches!(r, Ok(None)))
    );
    assert_eq!(
        router.stats().await.unwrap().misses,
        before + 50,
        "a batch of 50 misses counted otherwise"
    );
    // A first replica that lost its copy (removed behind the router's back): the
    // second replica's copy is the answer, never a miss, and the first gets it back,
    // through a batch as through a single read.
    for i in 0..100 {
        let key = format!("b{i}");
        router.put(&key, format!("v{i}")).await.unwrap();
        let first = index(router.node_of(&key).unwrap());
        assert!(nodes[first].delete(&key).await.unwrap());
    }
    let batch: Vec<String> = (0..100).map(|i| format!("b{i}")).collect();
    let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
    for (i, got) in router.get_many(&refs).await.into_iter().enumerate() {
        let got = got.unwrap().map(|e| e.value);
        assert_eq!(got, Some(Bytes::from(format!("v{i}"))), "b{i} in a batch");
    }
    for i in 0..100 {
        let key = format!("k{i}");
        router.put(&key, format!("v{i}")).await.unwrap();
        let first = index(router.node_of(&key).unwrap());
        assert!(nodes[first].delete(&key).await.unwrap());
        assert_eq!(
            router.get(&key).await.unwrap(),
            Some(Bytes::from(format!("v{i}"))),
            "{key}: its first replica's miss was taken for the answer"
        );
        assert_eq!(
            nodes[first].get(&key).await.unwrap(),
            Some(Bytes::from(format!("v{i}"))),
            "{key}: the read did not repair the first replica"
        );
    }
}
