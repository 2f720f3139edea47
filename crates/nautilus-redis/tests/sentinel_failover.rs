//! Sentinel promotes the replica when the primary dies: the registry, connected
//! through Sentinel, follows it by itself, every write that reached the replica keeps
//! its version, and versions keep going up on the new primary (whose script cache
//! starts empty).

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use nautilus_core::{Registry, RegistryExt};
use nautilus_redis::{RedisConfig, RedisRegistry};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_keeps_replicated_writes_and_the_registry_follows_it() {
    let (mut primary, replica) = common::primary_and_replica().await;
    let (p, r) = (primary.port(), replica.port());
    let sentinel = common::Sentinel::start("failover", p, 500, 1).unwrap();
    let registry = RedisRegistry::connect(
        RedisConfig::new(format!(
            "redis-sentinel://127.0.0.1:{}/0?sentinelServiceName=failover",
            sentinel.port()
        ))
        .namespace(common::fresh_namespace())
        .command_timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap();

    let acked = common::write_acked(&registry, 100).await;
    // Replication is asynchronous: only writes the replica has are promised to
    // survive, so wait for it to have them all.
    assert_eq!(common::cli(p, &["wait", "1", "5000"]).trim(), "1");
    let newest = acked.iter().map(|(_, v)| *v).max().unwrap();

    primary.stop();
    // Until every connection of the pool has found the new primary, calls fail:
    // promptly and transiently.
    let after = common::until_recovered(&registry, Duration::from_secs(30)).await;
    assert_eq!(
        sentinel.primary("failover"),
        Some(r),
        "Sentinel promoted the replica"
    );
    assert!(after > newest, "versions went back after the failover");
    common::assert_kept(&registry, &acked).await;
    let v = registry.put("acked/0", "rewritten").await.unwrap();
    assert!(v > acked[0].1);
    registry.clear().await.unwrap();
}
