//! A batch that writes one key twice leaves the later write, on the router's paths
//! that send single calls at once (replicated batches, keys on the move), as every
//! backend's own batch does.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nautilus_core::{DynRegistry, PutItem, Registry, RegistryExt};
use nautilus_memory::MemoryRegistry;
use nautilus_shard::ShardedRegistry;

mod common;

use common::Link;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_batch_writing_one_key_twice_leaves_the_later_write() {
    let cut = Arc::new(AtomicBool::new(false));
    let links: Vec<Link> = (0..3)
        .map(|_| Link::new(Arc::new(MemoryRegistry::new()) as DynRegistry, &cut))
        .collect();
    let slow: Vec<_> = links
        .iter()
        .map(|l| Arc::clone(&l.slow_first_puts))
        .collect();
    let mut builder = ShardedRegistry::builder()
        .replicas(2)
        .background_health_checks(false);
    for (i, link) in links.into_iter().enumerate() {
        builder = builder.node(format!("n{i}"), Arc::new(link) as DynRegistry);
    }
    let router = builder.build().unwrap();
    for round in 0..5 {
        let key = format!("k{round}");
        // Whichever node coordinates, its next put (the batch's first) lands 50 ms late.
        for s in &slow {
            s.store(1, Ordering::Relaxed);
        }
        let out = router
            .put_many(vec![
                PutItem::new(key.as_str(), "first"),
                PutItem::new("other", "x"),
                PutItem::new(key.as_str(), "second"),
                PutItem::new(key.as_str(), "third"),
            ])
            .await;
        let versions: Vec<_> = out.iter().map(|r| r.as_ref().unwrap().as_raw()).collect();
        assert!(
            versions[0] < versions[2] && versions[2] < versions[3],
            "{versions:?}"
        );
        let entry = router.entry(&key).await.unwrap().unwrap();
        assert_eq!(entry.value, "third");
        assert_eq!(entry.version.as_raw(), versions[3]);
    }
    let deleted = router.delete_many(&["k0", "k0"]).await;
    assert_eq!(
        deleted.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        vec![true, false]
    );
}
