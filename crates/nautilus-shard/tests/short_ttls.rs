//! Writes with a TTL of a few milliseconds through a replicated router. The router
//! resolves a TTL to the instant every copy expires at on its own clock; a write sent
//! again after that instant has passed (the coordinator had to be brought up to date
//! first) must still land, on the node's own clock, not fail as an invalid argument.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nautilus_core::{DeleteOptions, DynRegistry, Expiry, Registry, RegistryExt};
use nautilus_memory::MemoryRegistry;
use nautilus_shard::ShardedRegistry;

mod common;

use common::{Link, key_ranked};

/// R=2 over a, b and c, c behind a link (never cut) whose imports can be slowed,
/// and a key c coordinates and a replicates.
fn router() -> (ShardedRegistry, Arc<Link>, DynRegistry, String) {
    let mem = || -> DynRegistry { Arc::new(MemoryRegistry::new()) };
    let a = mem();
    let c = Arc::new(Link::new(mem(), &Arc::new(AtomicBool::new(false))));
    let router = ShardedRegistry::builder()
        .node("a", Arc::clone(&a))
        .node("b", mem())
        .node("c", Arc::clone(&c) as DynRegistry)
        .replicas(2)
        .background_health_checks(false)
        .build()
        .unwrap();
    (router, c, a, key_ranked([2, 0, 1]))
}

/// The coordinator lost its copy (as a node restarted empty does) while the other
/// replica kept it: a compare-and-swap from that copy's version finds nothing on
/// the coordinator, brings the copy over (slowly: the TTL passes meanwhile) and
/// writes again. Before, the second write carried the instant resolved before the
/// first, now past, and the swap failed with `InvalidArgument` (seen once by an
/// outside load test swapping with TTLs of 1-50 ms).
#[tokio::test]
async fn r2_a_swap_with_a_short_ttl_sent_again_after_its_instant_passed_lands() {
    let (router, c, a, key) = router();
    let v1 = router.put(&key, "v1").await.unwrap();
    assert!(
        c.inner
            .delete_opts(&key, DeleteOptions::default())
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(a.get(&key).await.unwrap().as_deref(), Some(&b"v1"[..]));
    c.slow_imports_ms.store(60, Ordering::Relaxed);
    let ttl = Duration::from_millis(20);
    let swapped = router
        .compare_and_swap(&key, v1, "v2", Expiry::After(ttl))
        .await;
    c.slow_imports_ms.store(0, Ordering::Relaxed);
    let v2 = swapped.unwrap();
    assert!(v2 > v1);
    // The write landed on the coordinator's clock, with the TTL asked for: live
    // for a moment on both replicas, then gone from both.
    let on_c = c.inner.get_entry(&key).await.unwrap();
    assert!(
        on_c.as_ref()
            .is_none_or(|e| e.version == v2 && e.expires_at.is_some()),
        "{on_c:?}"
    );
    tokio::time::sleep(ttl * 3).await;
    assert_eq!(router.get(&key).await.unwrap(), None);
    assert_eq!(c.inner.get(&key).await.unwrap(), None);
    assert_eq!(a.get(&key).await.unwrap(), None);
}
