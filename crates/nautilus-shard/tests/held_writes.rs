//! A write a node held (frozen with it in flight, for less than its checks need to
//! mark it down) and ran when it thawed, after a delete that found nothing: the
//! delete stands.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nautilus_core::{DynRegistry, Entry, Registry, RegistryExt, Timestamp, Version};
use nautilus_memory::MemoryRegistry;
use nautilus_shard::{NodeState, ShardedRegistry};

mod common;

/// R=2: a put fails on the key's first replica, which holds it (a Redis frozen
/// with the command in flight); the node is not marked down (one failure); a
/// delete then finds nothing (the key was deleted before) and is acknowledged; the
/// node runs the held put at the version it was sent with. Before, nothing newer
/// than that put existed anywhere, and it came back; the delete, finding nothing
/// right after a failed call on a replica, now leaves a tombstone above it.
#[tokio::test]
async fn r2_a_delete_finding_nothing_stands_over_a_write_the_node_held_and_ran_late() {
    let cut = Arc::new(AtomicBool::new(false));
    let inner: DynRegistry = Arc::new(MemoryRegistry::new());
    let a = Arc::new(common::Link::new(Arc::clone(&inner), &cut));
    let others: [DynRegistry; 2] = [
        Arc::new(MemoryRegistry::new()),
        Arc::new(MemoryRegistry::new()),
    ];
    let router = ShardedRegistry::builder()
        .replicas(2)
        .background_health_checks(false)
        .node("a", Arc::clone(&a) as DynRegistry)
        .node("b", Arc::clone(&others[0]))
        .node("c", Arc::clone(&others[1]))
        .build()
        .unwrap();
    let key = common::keys_on(&router, "a", "held", 1).remove(0);
    router.put(&key, "first").await.unwrap();
    assert!(router.delete(&key).await.unwrap());

    // The version the held put was sent with: the node's clock as it was sent.
    let sent = Version::from_raw((Timestamp::now().as_millis() << Version::COUNTER_BITS) | 0xFFFF);
    a.holding_puts.store(true, Ordering::Relaxed);
    assert!(router.put(&key, "held").await.is_err());
    a.holding_puts.store(false, Ordering::Relaxed);
    assert!(
        router.health().iter().all(|h| h.state == NodeState::Up),
        "{:?}",
        router.health()
    );
    assert!(!router.delete(&key).await.unwrap(), "nothing to delete");

    // The thaw: the node runs the put it held.
    let (k, value) = a.held_puts.lock().pop().unwrap();
    inner
        .import(&k, Entry::new(value, sent, None))
        .await
        .unwrap();
    assert_eq!(
        router.get(&key).await.unwrap(),
        None,
        "the delete was undone"
    );
    let progress = router.repair().unwrap().wait().await.unwrap();
    assert_eq!(progress.failed, 0, "{progress:?}");
    assert_eq!(
        router.get(&key).await.unwrap(),
        None,
        "the delete was undone"
    );
    for (name, node) in [("a", &inner), ("b", &others[0]), ("c", &others[1])] {
        assert_eq!(
            node.get(&key).await.unwrap(),
            None,
            "{key} is back on {name}"
        );
    }
}
