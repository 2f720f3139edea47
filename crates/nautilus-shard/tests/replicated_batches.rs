//! Batches through a router keeping two copies: `get_many` asks each key's first
//! replica in one call per node, and a miss there must still be confirmed on the next
//! replica, never answered as "not found" on the first one's word.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;

use nautilus_core::{DynRegistry, Registry, RegistryExt};
use nautilus_memory::MemoryRegistry;
use nautilus_shard::ShardedRegistry;

fn mem() -> DynRegistry {
    Arc::new(MemoryRegistry::new())
}

#[tokio::test]
async fn r2_get_many_over_a_node_that_came_back_empty_finds_every_record() {
    let router = ShardedRegistry::builder()
        .node("a", mem())
        .node("b", mem())
        .node("c", mem())
        .replicas(2)
        .background_health_checks(false)
        .build()
        .unwrap();
    let keys: Vec<String> = (0..3_000).map(|i| format!("k{i:05}")).collect();
    for k in &keys {
        router.put(k, k.as_bytes().to_vec()).await.unwrap();
    }
    // c restarts empty (a Redis without persistence, a new process): a third of the
    // keys have it as their first replica.
    router.replace_node("c", mem()).unwrap();
    let asked: Vec<&str> = keys
        .iter()
        .map(String::as_str)
        .chain(["missing-1", "k00007", "missing-2"])
        .collect();
    let before = router.stats().await.unwrap();
    let got = router.get_many(&asked).await;
    assert_eq!(got.len(), asked.len());
    for (k, r) in asked.iter().zip(&got) {
        let found = r.as_ref().unwrap().as_ref().map(|e| e.value.clone());
        if k.starts_with("missing") {
            assert_eq!(found, None, "{k}");
        } else {
            assert_eq!(
                found.as_deref(),
                Some(k.as_bytes()),
                "{k}: a false not-found"
            );
        }
    }
    // Each key read counts once, a hit or a miss, however many replicas were asked.
    let after = router.stats().await.unwrap();
    assert_eq!(after.hits - before.hits, 3_001);
    assert_eq!(after.misses - before.misses, 2);
}
