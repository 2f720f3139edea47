//! Two routers over the same three redis-servers (`NAUTILUS_REDIS_SHARD_URLS`), with
//! different views of health: for a while router B cannot reach one server that
//! router A reaches. Both write throughout (their own keys, and keys both write).
//! Afterwards, with B's hand-backs and a repair, every key is on exactly its two
//! replicas at one version, and no acknowledged write is lost.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::Link;
use nautilus_core::{DynRegistry, Registry, RegistryExt};
use nautilus_redis::{RedisConfig, RedisRegistry};
use nautilus_shard::{NodeState, ShardedRegistry};

mod common;

const KEYS: u64 = 300;

fn router(nodes: Vec<DynRegistry>) -> ShardedRegistry {
    let mut b = ShardedRegistry::builder()
        .replicas(2)
        .health_interval(Duration::from_millis(50))
        .failure_threshold(2);
    for (i, n) in nodes.into_iter().enumerate() {
        b = b.node(format!("r{i}"), n);
    }
    b.build().unwrap()
}

/// Writes `{prefix}{i}` round after round until `stop`; returns the last
/// acknowledged counter per key.
async fn writer(router: ShardedRegistry, prefix: &'static str, stop: Arc<AtomicBool>) -> Vec<u64> {
    let mut acked = vec![0; KEYS as usize];
    let mut counter = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for i in 0..KEYS {
            counter += 1;
            let key = format!("{prefix}{i}");
            match router.put(&key, counter.to_le_bytes().to_vec()).await {
                Ok(_) => acked[i as usize] = counter,
                Err(e) => assert!(e.is_transient(), "{key}: {e}"),
            }
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routers_with_different_health_views_converge_and_lose_nothing() {
    let ns = common::namespace();
    let mut direct: Vec<DynRegistry> = Vec::new();
    for url in common::shard_urls().iter().take(3) {
        let config = RedisConfig::new(url).namespace(&ns).pool_size(2);
        direct.push(Arc::new(RedisRegistry::connect(config).await.unwrap()));
    }
    let cut = Arc::new(AtomicBool::new(false));
    let a = router(direct.clone());
    let b = router(vec![
        Arc::clone(&direct[0]),
        Arc::clone(&direct[1]),
        Arc::new(Link::new(Arc::clone(&direct[2]), &cut)),
    ]);

    let stop = Arc::new(AtomicBool::new(false));
    let tasks = [
        tokio::spawn(writer(a.clone(), "a", stop.clone())),
        tokio::spawn(writer(b.clone(), "b", stop.clone())),
        tokio::spawn(writer(a.clone(), "s", stop.clone())),
        tokio::spawn(writer(b.clone(), "s", stop.clone())),
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;
    cut.store(true, Ordering::Relaxed);
    // B sees r2 down, A does not.
    for _ in 0..200 {
        if b.health()
            .iter()
            .any(|h| h.node == "r2" && h.state == NodeState::Down)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        b.health()
            .iter()
            .any(|h| h.node == "r2" && h.state == NodeState::Down)
    );
    assert!(a.health().iter().all(|h| h.state == NodeState::Up));
    tokio::time::sleep(Duration::from_millis(800)).await;
    // B's writes for r2 went to a stand-in, A's went to r2 itself.
    let pending = b
        .health()
        .iter()
        .find(|h| h.node == "r2")
        .map(|h| h.pending_handbacks);
    assert!(pending.is_some_and(|p| p > 0), "{:?}", b.health());
    cut.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for t in tasks {
        acked.push(t.await.unwrap());
    }
    for _ in 0..100 {
        b.check_health().await;
        if b.health().iter().all(|h| h.pending_handbacks == 0) {
            break;
        }
    }
    assert!(
        b.health().iter().all(|h| h.pending_handbacks == 0),
        "{:?}",
        b.health()
    );
    let repaired = a.repair().unwrap().wait().await.unwrap();
    assert_eq!(repaired.failed, 0, "{repaired:?}");

    // No acknowledged write lost: each router's own keys read back, from both
    // routers, at the last acknowledged counter (one writer per key).
    for (prefix, acked) in [("a", &acked[0]), ("b", &acked[1])] {
        for i in 0..KEYS {
            let key = format!("{prefix}{i}");
            for r in [&a, &b] {
                let got = r.get(&key).await.unwrap().unwrap();
                let c = u64::from_le_bytes(got[..8].try_into().unwrap());
                assert!(
                    c >= acked[i as usize],
                    "{key}: read {c}, acknowledged {}",
                    acked[i as usize]
                );
            }
        }
    }
    // Converged: every key, the raced ones too, is on exactly two nodes at one
    // version, and both routers read that version.
    for prefix in ["a", "b", "s"] {
        for i in 0..KEYS {
            let key = format!("{prefix}{i}");
            let mut versions = Vec::new();
            for n in &direct {
                if let Some(e) = n.get_entry(&key).await.unwrap() {
                    versions.push(e.version);
                }
            }
            assert_eq!(versions.len(), 2, "{key}: {versions:?}");
            assert_eq!(versions[0], versions[1], "{key}: replicas differ");
            let (ea, eb) = (
                a.get_entry(&key).await.unwrap(),
                b.get_entry(&key).await.unwrap(),
            );
            assert_eq!(ea.map(|e| e.version), Some(versions[0]), "{key}");
            assert_eq!(eb.map(|e| e.version), Some(versions[0]), "{key}");
        }
    }
    a.clear().await.unwrap();
}
