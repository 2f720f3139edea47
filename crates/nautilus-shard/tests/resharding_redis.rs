//! Resharding over three real redis-server processes (started by `cargo xtask test`,
//! found in `NAUTILUS_REDIS_SHARD_URLS`) under concurrent writers and readers: a node
//! added, one removed, every read checked against the acknowledged writes.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;

use nautilus_core::{DynRegistry, Registry};
use nautilus_redis::{RedisConfig, RedisRegistry};
use nautilus_shard::ShardedRegistry;

mod common;

async fn node(url: &str, namespace: &str) -> DynRegistry {
    let config = RedisConfig::new(url).namespace(namespace).pool_size(2);
    Arc::new(RedisRegistry::connect(config).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_node_added_and_one_removed_under_load() {
    let urls = common::shard_urls();
    let ns = format!(
        "nautilus-shard-resharding-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let router = ShardedRegistry::builder()
        .node("r0", node(&urls[0], &ns).await)
        .node("r1", node(&urls[1], &ns).await)
        .build()
        .unwrap();
    let third = node(&urls[2], &ns).await;
    let cleanup = router.clone();
    let ops = common::run(router, 3_000, async |r| {
        let p = r
            .add_node("r2", third, 1)
            .await
            .unwrap()
            .wait()
            .await
            .unwrap();
        assert!(p.done && p.failed == 0 && p.moved > 0, "{p:?}");
        let p = r.remove_node("r0").await.unwrap().wait().await.unwrap();
        assert!(p.done && p.failed == 0 && p.moved > 0, "{p:?}");
    })
    .await;
    assert!(ops > 1000);
    cleanup.clear().await.unwrap();
}
