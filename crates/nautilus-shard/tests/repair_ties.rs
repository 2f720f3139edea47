//! Repair of replicas holding different records at one version (two writes that
//! failed after reaching one replica each, in the same millisecond, whose hand-backs
//! were lost with a router): imports refuse equal versions, so repair writes one of
//! them again above the tie, and every replica ends up with the same record.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;

use nautilus_core::{DynRegistry, Entry, Registry, RegistryExt, Timestamp, Version};
use nautilus_memory::MemoryRegistry;
use nautilus_shard::ShardedRegistry;

#[tokio::test]
async fn r2_repair_settles_replicas_that_hold_different_records_at_one_version() {
    let stores: Vec<DynRegistry> = (0..3)
        .map(|_| Arc::new(MemoryRegistry::new()) as DynRegistry)
        .collect();
    let mut builder = ShardedRegistry::builder()
        .replicas(2)
        .background_health_checks(false);
    for (id, s) in ["a", "b", "c"].iter().zip(&stores) {
        builder = builder.node(*id, Arc::clone(s));
    }
    let router = builder.build().unwrap();
    let placement = nautilus_shard::Placement::new([("a", 1), ("b", 1), ("c", 1)]).unwrap();
    let version = Version::from_raw(Timestamp::now().as_millis() << Version::COUNTER_BITS);
    let mut tied = Vec::new();
    for i in 0..200 {
        let key = format!("t{i}");
        let p = placement.preference(&key, 2);
        let (x, y) = if i % 2 == 0 {
            ("left", "right")
        } else {
            ("right", "left")
        };
        assert!(
            stores[p[0]]
                .import(&key, Entry::new(x, version, None))
                .await
                .unwrap()
        );
        assert!(
            stores[p[1]]
                .import(&key, Entry::new(y, version, None))
                .await
                .unwrap()
        );
        tied.push((key, p));
    }
    let progress = router.repair().unwrap().wait().await.unwrap();
    assert_eq!(progress.failed, 0, "{progress:?}");
    for (key, p) in &tied {
        let first = stores[p[0]].get_entry(key).await.unwrap().unwrap();
        let second = stores[p[1]].get_entry(key).await.unwrap().unwrap();
        assert_eq!(
            (&first.value, first.version),
            (&second.value, second.version),
            "{key}: the replicas still disagree"
        );
        assert!(first.version > version, "{key}");
        // One fixed rule decides, whichever replica held which record.
        assert_eq!(first.value, "right", "{key}");
        assert_eq!(router.get(key).await.unwrap().unwrap(), "right");
    }
    // A second repair finds nothing to change.
    let again = router.repair().unwrap().wait().await.unwrap();
    assert_eq!(again.repaired, 0, "{again:?}");
}
