//! Writes that failed on a frozen replica and run when it thaws, over redis-server
//! processes of the test's own: they never undo a delete acknowledged meanwhile.

#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use nautilus_core::{DynRegistry, RegistryExt};
use nautilus_redis::{RedisConfig, RedisRegistry};
use nautilus_redis_servers::{Persistence, Server, free_port};
use nautilus_shard::{NodeState, ShardedRegistry};

mod common;

async fn router(servers: &[Server]) -> (ShardedRegistry, Vec<DynRegistry>) {
    let mut b = ShardedRegistry::builder()
        .replicas(2)
        .health_interval(Duration::from_millis(100))
        .health_timeout(Duration::from_millis(300))
        .failure_threshold(2);
    let mut nodes = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        let config = RedisConfig::new(s.url())
            .namespace("late")
            .pool_size(2)
            .command_timeout(Duration::from_millis(400));
        let n: DynRegistry = Arc::new(RedisRegistry::connect(config).await.unwrap());
        nodes.push(Arc::clone(&n));
        b = b.node(format!("n{i}"), n);
    }
    (b.build().unwrap(), nodes)
}

/// A key deleted, then a put that fails on its first replica, frozen, then a delete
/// acknowledged while that replica is down, which finds nothing to delete: when the
/// replica thaws it runs the failed put, which must not come back. Before, with
/// nothing newer anywhere, hand-back and repair copied it to both replicas (from
/// outside: 74 to 116 of 200 such deletes undone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_a_delete_finding_nothing_is_not_undone_by_a_failed_write_run_at_the_thaw() {
    nautilus_redis_servers::require().expect("redis-server is needed");
    let servers: Vec<Server> = (0..3)
        .map(|_| Server::start(free_port().unwrap(), Persistence::Memory, &[]).unwrap())
        .collect();
    let (router, nodes) = router(&servers).await;
    let keys = common::keys_on(&router, "n0", "lw", 60);
    for k in &keys {
        router.put(k, "before").await.unwrap();
        assert!(router.delete(k).await.unwrap());
    }
    servers[0].pause();
    // All sent while n0 still counts as up: each times out on it, and Redis holds
    // them for the thaw.
    let puts = join_all(keys.iter().map(|k| router.put(k, "failed"))).await;
    common::until(&router, "n0", NodeState::Down).await;
    let mut deleted = Vec::new();
    for (k, put) in keys.iter().zip(&puts) {
        if put.is_err() {
            // Acknowledged: nothing was live on the replica that answered.
            assert!(!router.delete(k).await.unwrap(), "{k}");
            deleted.push(k);
        }
    }
    assert!(
        deleted.len() >= keys.len() / 2,
        "only {} of {} puts failed on the frozen node",
        deleted.len(),
        keys.len()
    );
    servers[0].resume();
    common::until(&router, "n0", NodeState::Up).await;
    for _ in 0..50 {
        router.check_health().await;
        if router.health().iter().all(|h| h.pending_handbacks == 0) {
            break;
        }
    }
    let progress = router.repair().unwrap().wait().await.unwrap();
    assert_eq!(progress.failed, 0, "{progress:?}");
    for k in &deleted {
        assert_eq!(router.get(k).await.unwrap(), None, "{k} came back");
        for (i, n) in nodes.iter().enumerate() {
            assert_eq!(n.get(k).await.unwrap(), None, "{k} came back on n{i}");
        }
    }
}
