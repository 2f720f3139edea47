//! Repair over three real redis-servers (`NAUTILUS_REDIS_SHARD_URLS`), whose deletes
//! leave tombstones of their own: what an outage leaves behind (the second replica
//! and a stand-in at a newer version, the first replica stale) ends with two copies
//! of the newest version on every key, none deleted.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;

use nautilus_core::{Bytes, DynRegistry, Entry, Registry, RegistryExt, Version};
use nautilus_redis::{RedisConfig, RedisRegistry};
use nautilus_shard::{Placement, ShardedRegistry};

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_never_deletes_the_newest_copy_of_a_record() {
    let ns = common::namespace();
    let mut nodes: Vec<DynRegistry> = Vec::new();
    let mut builder = ShardedRegistry::builder()
        .replicas(2)
        .background_health_checks(false);
    for (i, url) in common::shard_urls().iter().take(3).enumerate() {
        let config = RedisConfig::new(url).namespace(&ns).pool_size(2);
        let node: DynRegistry = Arc::new(RedisRegistry::connect(config).await.unwrap());
        nodes.push(Arc::clone(&node));
        builder = builder.node(format!("r{i}"), node);
    }
    let router = builder.build().unwrap();
    let placement = Placement::new([("r0", 1), ("r1", 1), ("r2", 1)]).unwrap();
    let index = |p: usize| match placement.node_id(p) {
        Some("r0") => 0,
        Some("r1") => 1,
        _ => 2,
    };
    let keys: Vec<String> = (0..2_000).map(|i| format!("k{i:05}")).collect();
    for k in &keys {
        router.put(k, "v:1").await.unwrap();
    }
    for k in &keys {
        let prefs = placement.preference(k, 3);
        let old = router.get_entry(k).await.unwrap().unwrap().version;
        let newer = Entry::new(
            Bytes::from_static(b"v:2"),
            Version::from_raw(old.as_raw() + 1_000),
            None,
        );
        nodes[index(prefs[1])]
            .import(k, newer.clone())
            .await
            .unwrap();
        nodes[index(prefs[2])].import(k, newer).await.unwrap();
    }
    let p = router.repair().unwrap().wait().await.unwrap();
    assert_eq!(p.failed, 0, "{p:?}");
    let mut wrong = Vec::new();
    for k in &keys {
        let mut copies = 0;
        for n in &nodes {
            if n.get(k).await.unwrap().as_deref() == Some(&b"v:2"[..]) {
                copies += 1;
            }
        }
        if copies != 2 {
            wrong.push((k.clone(), copies));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} keys without two copies of v:2: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    router.clear().await.unwrap();
}

/// An R=2 router over three redis-servers a, b and c (fresh namespace), a behind a
/// link whose hooks the test sets, with no background checks: the router, the link,
/// and the servers' registries in that order.
async fn linked_to_redis() -> (ShardedRegistry, Arc<common::Link>, Vec<DynRegistry>) {
    let ns = common::namespace();
    let mut nodes: Vec<DynRegistry> = Vec::new();
    for url in common::shard_urls().iter().take(3) {
        let config = RedisConfig::new(url).namespace(&ns).pool_size(2);
        nodes.push(Arc::new(RedisRegistry::connect(config).await.unwrap()));
    }
    let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let a = Arc::new(common::Link::new(Arc::clone(&nodes[0]), &cut));
    let router = ShardedRegistry::builder()
        .replicas(2)
        .background_health_checks(false)
        .node("a", Arc::clone(&a) as DynRegistry)
        .node("b", Arc::clone(&nodes[1]))
        .node("c", Arc::clone(&nodes[2]))
        .build()
        .unwrap();
    (router, a, nodes)
}

/// A repair gives a replica a copy it lacks, and a write lands on the copy's source
/// right after: the replica ends with that write, not with the copy taken back. Taken
/// back, the copy left the replica a tombstone newer than the write (a Redis delete
/// keeps one), which refused the write's copy: reads answered "not found", and the
/// next repair removed the write from its source too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_racing_a_repairs_copy_is_never_taken_back() {
    let (router, a, nodes) = linked_to_redis().await;
    // Replicas a then b; only b holds the record, and a write lands on b right
    // after the repair's copy lands on a.
    let key = common::key_ranked([0, 1, 2]);
    nodes[1].put(&key, "first").await.unwrap();
    *a.put_after_import.lock() = Some((Arc::clone(&nodes[1]), key.clone(), "second".into()));
    let p = router.repair().unwrap().wait().await.unwrap();
    assert_eq!(p.failed, 0, "{p:?}");
    assert!(
        a.put_after_import.lock().is_none(),
        "the copy was never given"
    );
    assert_eq!(
        router.get(&key).await.unwrap().as_deref(),
        Some(&b"second"[..])
    );
    let p = router.repair().unwrap().wait().await.unwrap();
    assert_eq!(p.failed, 0, "{p:?}");
    for n in &nodes[..2] {
        assert_eq!(n.get(&key).await.unwrap().as_deref(), Some(&b"second"[..]));
    }
    router.clear().await.unwrap();
}

/// A repair gives the key's replicas the copy only a node that is not a replica holds
/// (a stand-in's, its hand-back pending), and that copy is removed right after the
/// first one lands (the hand-back done): the replicas keep their copies. Taken back as
/// if deleted, each copy left its replica a tombstone of the removal, and the record
/// was gone from both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stand_ins_copy_removed_after_repair_gave_it_is_not_a_delete() {
    let (router, a, nodes) = linked_to_redis().await;
    // Replicas a then b; only c, not a replica, holds the record.
    let key = common::key_ranked([0, 1, 2]);
    nodes[2].put(&key, "kept").await.unwrap();
    *a.delete_after_import.lock() = Some((Arc::clone(&nodes[2]), key.clone()));
    let p = router.repair().unwrap().wait().await.unwrap();
    assert_eq!(p.failed, 0, "{p:?}");
    assert!(
        a.delete_after_import.lock().is_none(),
        "the copy was never given"
    );
    assert_eq!(
        router.get(&key).await.unwrap().as_deref(),
        Some(&b"kept"[..])
    );
    for n in &nodes[..2] {
        assert_eq!(n.get(&key).await.unwrap().as_deref(), Some(&b"kept"[..]));
    }
    router.clear().await.unwrap();
}
