//! Nodes on different limits: the router answers with the strictest (the limits it
//! reports), for batches as for single keys, even where a key lands on a node that
//! would take it.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;

use nautilus_core::{DynRegistry, Error, Limits, PutItem, Registry, RegistryExt};
use nautilus_memory::MemoryRegistry;
use nautilus_shard::ShardedRegistry;

fn node(max_key: usize, max_value: usize) -> DynRegistry {
    let limits = Limits::default()
        .with_max_key_bytes(max_key)
        .with_max_value_bytes(max_value);
    Arc::new(MemoryRegistry::builder().limits(limits).build().unwrap())
}

fn router(replicas: usize) -> ShardedRegistry {
    ShardedRegistry::builder()
        .node("narrow", node(24, 10))
        .node("wide-1", node(1024, 1000))
        .node("wide-2", node(1024, 1000))
        .replicas(replicas)
        .background_health_checks(false)
        .build()
        .unwrap()
}

#[tokio::test]
async fn batches_refuse_what_single_calls_refuse_on_every_node() {
    for replicas in [1, 2] {
        let router = router(replicas);
        assert_eq!(router.limits().max_key_bytes, 24);
        assert_eq!(router.limits().max_value_bytes, 10);
        // 30 keys of 30 bytes: most of them land on a node whose limit is 1024.
        let long: Vec<String> = (0..30).map(|i| format!("{i:0>30}")).collect();
        let keys: Vec<&str> = long.iter().map(String::as_str).collect();
        let items = keys.iter().map(|k| PutItem::new(*k, "v")).collect();
        for r in router.put_many(items).await {
            assert!(
                matches!(r, Err(Error::InvalidKey { .. })),
                "R={replicas}: {r:?}"
            );
        }
        for r in router.get_many(&keys).await {
            assert!(
                matches!(r, Err(Error::InvalidKey { .. })),
                "R={replicas}: {r:?}"
            );
        }
        for r in router.delete_many(&keys).await {
            assert!(
                matches!(r, Err(Error::InvalidKey { .. })),
                "R={replicas}: {r:?}"
            );
        }
        // Values over the strictest limit, under short keys.
        let short: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
        let items = short
            .iter()
            .map(|k| PutItem::new(k.as_str(), vec![7u8; 50]))
            .collect();
        for r in router.put_many(items).await {
            assert!(
                matches!(r, Err(Error::TooLarge { .. })),
                "R={replicas}: {r:?}"
            );
        }
        for k in &short {
            assert_eq!(router.get(k).await.unwrap(), None, "R={replicas}: {k}");
        }
        // Refusals are answered in place; the rest of the batch is written.
        let out = router
            .put_many(vec![
                PutItem::new("ok", "v"),
                PutItem::new(keys[0], "v"),
                PutItem::new("big", vec![1u8; 50]),
                PutItem::new("ok-2", "w"),
            ])
            .await;
        assert!(out[0].is_ok() && out[3].is_ok(), "R={replicas}: {out:?}");
        assert!(matches!(out[1], Err(Error::InvalidKey { .. })), "{out:?}");
        assert!(matches!(out[2], Err(Error::TooLarge { .. })), "{out:?}");
        assert_eq!(router.get("ok-2").await.unwrap().unwrap(), "w");
    }
}
