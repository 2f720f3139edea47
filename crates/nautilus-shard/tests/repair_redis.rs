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
