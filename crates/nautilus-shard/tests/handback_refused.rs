//! Hand-backs a returning node refuses because it holds a record at least as new: a
//! write that failed after reaching that node alone, decided on a clock at or ahead
//! of the write acknowledged during the outage, must not hide that write; a record
//! another node holds too (a write acknowledged meanwhile, through this router or
//! another one) must not be overwritten by it.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nautilus_core::{Bytes, DynRegistry, Entry, Registry, RegistryExt, Timestamp, Version};
use nautilus_memory::MemoryRegistry;
use nautilus_shard::{NodeState, ShardedRegistry};

mod common;

use common::{Link, key_ranked};

/// Three memory nodes; `c` behind a link the test cuts. The stores are returned so
/// the test can plant copies behind the router's back.
struct Cluster {
    router: ShardedRegistry,
    stores: [DynRegistry; 3],
    cut: Arc<AtomicBool>,
}

fn cluster(r: usize) -> Cluster {
    cluster_with(r, r)
}

/// [`cluster`] with a write quorum of `w`.
fn cluster_with(r: usize, w: usize) -> Cluster {
    let cut = Arc::new(AtomicBool::new(false));
    let stores: [DynRegistry; 3] = [
        Arc::new(MemoryRegistry::new()),
        Arc::new(MemoryRegistry::new()),
        Arc::new(MemoryRegistry::new()),
    ];
    let router = ShardedRegistry::builder()
        .node("a", Arc::clone(&stores[0]))
        .node("b", Arc::clone(&stores[1]))
        .node(
            "c",
            Arc::new(Link::new(Arc::clone(&stores[2]), &cut)) as DynRegistry,
        )
        .replicas(r)
        .write_quorum(w)
        .background_health_checks(false)
        .build()
        .unwrap();
    Cluster {
        router,
        stores,
        cut,
    }
}

/// A version `ahead` of this machine's clock: what a node whose clock runs ahead
/// (or a later counter in the same millisecond) gives a write.
fn version_ahead(ahead: Duration) -> Version {
    let at = Timestamp::now().saturating_add(ahead).as_millis();
    Version::from_raw(at << Version::COUNTER_BITS)
}

impl Cluster {
    async fn down_c(&self) {
        self.cut.store(true, Ordering::Relaxed);
        self.router.check_health().await;
        self.router.check_health().await;
        assert!(
            self.node_is("c", NodeState::Down),
            "{:?}",
            self.router.health()
        );
    }

    /// c answers again; the round hands back what stand-ins took for it.
    async fn up_c(&self) {
        self.cut.store(false, Ordering::Relaxed);
        self.router.check_health().await;
        assert!(
            self.node_is("c", NodeState::Up),
            "{:?}",
            self.router.health()
        );
        let pending: usize = self
            .router
            .health()
            .iter()
            .map(|h| h.pending_handbacks)
            .sum();
        assert_eq!(
            pending,
            0,
            "hand-backs left pending: {:?}",
            self.router.health()
        );
    }

    fn node_is(&self, id: &str, state: NodeState) -> bool {
        self.router
            .health()
            .iter()
            .any(|h| h.node == id && h.state == state)
    }

    /// What each node holds under `key`, bypassing the router.
    async fn held(&self, key: &str) -> Vec<Option<(Bytes, Version)>> {
        let mut out = Vec::new();
        for s in &self.stores {
            out.push(
                s.get_entry(key)
                    .await
                    .unwrap()
                    .map(|e| (e.value, e.version)),
            );
        }
        out
    }
}

#[tokio::test]
async fn r2_a_failed_write_ahead_of_the_outages_write_does_not_hide_it_after_hand_back() {
    // c is the key's first replica, a its second, b its stand-in.
    let cl = cluster(2);
    let key = key_ranked([2, 0, 1]);
    cl.router.put(&key, "before").await.unwrap();
    // A write that failed after reaching c alone, on a clock a second ahead.
    let failed = Entry::new("failed", version_ahead(Duration::from_secs(1)), None);
    assert!(cl.stores[2].import(&key, failed).await.unwrap());
    cl.down_c().await;
    // Acknowledged by a and by b standing in for c.
    let acked = cl.router.put(&key, "acked").await.unwrap();
    assert_eq!(cl.router.get(&key).await.unwrap().unwrap(), "acked");
    cl.up_c().await;
    assert_eq!(
        cl.router.get(&key).await.unwrap().unwrap(),
        "acked",
        "the write acknowledged during the outage was hidden by a failed one: {:?}",
        cl.held(&key).await
    );
    // Every replica holds it at one version, newer than both.
    let held = cl.held(&key).await;
    let (value, version) = held[2].clone().unwrap();
    assert_eq!(value, "acked");
    assert!(version > acked, "{held:?}");
    assert_eq!(held[0], Some((value, version)), "{held:?}");
    assert_eq!(held[1], None, "the stand-in's copy stays: {held:?}");
    // A repair finds nothing to change, and the write stays.
    cl.router.repair().unwrap().wait().await.unwrap();
    assert_eq!(cl.router.get(&key).await.unwrap().unwrap(), "acked");
}

#[tokio::test]
async fn r2_a_newer_delete_on_the_returning_node_alone_stays() {
    // A delete on c alone, newer than the write acknowledged during the outage: it may
    // be a delete that failed there, or another router's, acknowledged through a
    // stand-in whose tombstone no read shows. Nothing tells them apart: it stays.
    let cl = cluster(2);
    let key = key_ranked([2, 0, 1]);
    cl.router.put(&key, "before").await.unwrap();
    let tomb = Entry::tombstone(version_ahead(Duration::from_secs(1)), None);
    assert!(cl.stores[2].import(&key, tomb).await.unwrap());
    cl.down_c().await;
    cl.router.put(&key, "acked").await.unwrap();
    cl.up_c().await;
    assert_eq!(
        cl.router.get(&key).await.unwrap(),
        None,
        "{:?}",
        cl.held(&key).await
    );
}

#[tokio::test]
async fn r2_another_routers_delete_through_a_stand_in_is_not_undone_by_a_hand_back() {
    // Router B could not reach a, the key's second replica: its delete went to c and
    // to b standing in. This router could not reach c: its put went to a and to b
    // standing in. c comes back with B's tombstone, a holds this router's put.
    let cl = cluster(2);
    let key = key_ranked([2, 0, 1]);
    cl.router.put(&key, "before").await.unwrap();
    cl.down_c().await;
    cl.router.put(&key, "ours").await.unwrap();
    let tomb = Entry::tombstone(version_ahead(Duration::from_secs(1)), None);
    assert!(cl.stores[2].import(&key, tomb.clone()).await.unwrap());
    assert!(cl.stores[1].import(&key, tomb).await.unwrap());
    cl.up_c().await;
    assert_eq!(
        cl.router.get(&key).await.unwrap(),
        None,
        "{:?}",
        cl.held(&key).await
    );
    cl.router.repair().unwrap().wait().await.unwrap();
    assert_eq!(cl.router.get(&key).await.unwrap(), None, "undone by repair");
}

#[tokio::test]
async fn r2_a_newer_write_whose_other_copy_is_on_an_unreachable_node_stays() {
    // Four nodes; the key's preference is c, a, b, d. Router B reached c but neither
    // a nor b: its newer put went to c and to d standing in. This router's put, made
    // while c was down, went to a and b; when c returns, d cannot be asked.
    let cut_c = Arc::new(AtomicBool::new(false));
    let cut_d = Arc::new(AtomicBool::new(false));
    let stores: Vec<DynRegistry> = (0..4)
        .map(|_| Arc::new(MemoryRegistry::new()) as DynRegistry)
        .collect();
    let router = ShardedRegistry::builder()
        .node("a", Arc::clone(&stores[0]))
        .node("b", Arc::clone(&stores[1]))
        .node(
            "c",
            Arc::new(Link::new(Arc::clone(&stores[2]), &cut_c)) as DynRegistry,
        )
        .node(
            "d",
            Arc::new(Link::new(Arc::clone(&stores[3]), &cut_d)) as DynRegistry,
        )
        .replicas(2)
        .background_health_checks(false)
        .build()
        .unwrap();
    let placement =
        nautilus_shard::Placement::new([("a", 1), ("b", 1), ("c", 1), ("d", 1)]).unwrap();
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| placement.preference(k, 4) == [2, 0, 1, 3])
        .unwrap();
    router.put(&key, "before").await.unwrap();
    cut_c.store(true, Ordering::Relaxed);
    cut_d.store(true, Ordering::Relaxed);
    router.check_health().await;
    router.check_health().await;
    router.put(&key, "ours").await.unwrap();
    let theirs = Entry::new("theirs", version_ahead(Duration::from_secs(1)), None);
    assert!(stores[2].import(&key, theirs.clone()).await.unwrap());
    assert!(stores[3].import(&key, theirs).await.unwrap());
    cut_c.store(false, Ordering::Relaxed);
    router.check_health().await;
    assert_eq!(router.get(&key).await.unwrap().unwrap(), "theirs");
}

#[tokio::test]
async fn r2_a_newer_write_another_node_holds_too_stays_after_hand_back() {
    // Another router, which could reach c, wrote the key during the outage: c and a
    // hold its record, newer than this router's. It was acknowledged: it stays.
    let cl = cluster(2);
    let key = key_ranked([2, 0, 1]);
    cl.router.put(&key, "before").await.unwrap();
    cl.down_c().await;
    cl.router.put(&key, "ours").await.unwrap();
    let theirs = Entry::new("theirs", version_ahead(Duration::from_secs(1)), None);
    assert!(cl.stores[2].import(&key, theirs.clone()).await.unwrap());
    assert!(cl.stores[0].import(&key, theirs).await.unwrap());
    cl.up_c().await;
    assert_eq!(cl.router.get(&key).await.unwrap().unwrap(), "theirs");
    let held = cl.held(&key).await;
    assert_eq!(held[2].as_ref().unwrap().0, "theirs", "{held:?}");
    assert_eq!(held[0].as_ref().unwrap().0, "theirs", "{held:?}");
}

#[tokio::test]
async fn r2_a_newer_delete_another_node_holds_too_stays_after_hand_back() {
    let cl = cluster(2);
    let key = key_ranked([2, 0, 1]);
    cl.router.put(&key, "before").await.unwrap();
    cl.down_c().await;
    cl.router.put(&key, "ours").await.unwrap();
    let tomb = Entry::tombstone(version_ahead(Duration::from_secs(1)), None);
    assert!(cl.stores[2].import(&key, tomb.clone()).await.unwrap());
    assert!(cl.stores[0].import(&key, tomb).await.unwrap());
    cl.up_c().await;
    assert_eq!(
        cl.router.get(&key).await.unwrap(),
        None,
        "{:?}",
        cl.held(&key).await
    );
}

#[tokio::test]
async fn r1_a_newer_copy_on_the_returning_node_stays_after_hand_back() {
    // With one replica nothing tells a write that failed on c from another router's
    // write acknowledged there during the outage: c's newer copy is kept.
    let cl = cluster(1);
    let key = key_ranked([2, 0, 1]);
    cl.router.put(&key, "before").await.unwrap();
    cl.down_c().await;
    cl.router.put(&key, "ours").await.unwrap();
    let theirs = Entry::new("theirs", version_ahead(Duration::from_secs(1)), None);
    assert!(cl.stores[2].import(&key, theirs).await.unwrap());
    cl.up_c().await;
    assert_eq!(cl.router.get(&key).await.unwrap().unwrap(), "theirs");
    assert_eq!(cl.held(&key).await[0], None, "the stand-in's copy stays");
}

#[tokio::test]
async fn r2_a_replica_that_cannot_be_asked_keeps_the_returning_nodes_copy() {
    // a, the other replica, is cut when c comes back: whether c's newer copy reached
    // c alone cannot be told, so it stays (a repair later settles nothing either:
    // it is the newest).
    let cut_a = Arc::new(AtomicBool::new(false));
    let cut_c = Arc::new(AtomicBool::new(false));
    let stores: [DynRegistry; 3] = [
        Arc::new(MemoryRegistry::new()),
        Arc::new(MemoryRegistry::new()),
        Arc::new(MemoryRegistry::new()),
    ];
    let router = ShardedRegistry::builder()
        .node(
            "a",
            Arc::new(Link::new(Arc::clone(&stores[0]), &cut_a)) as DynRegistry,
        )
        .node("b", Arc::clone(&stores[1]))
        .node(
            "c",
            Arc::new(Link::new(Arc::clone(&stores[2]), &cut_c)) as DynRegistry,
        )
        .replicas(2)
        .background_health_checks(false)
        .build()
        .unwrap();
    let key = key_ranked([2, 0, 1]);
    router.put(&key, "before").await.unwrap();
    let failed = Entry::new("failed", version_ahead(Duration::from_secs(1)), None);
    assert!(stores[2].import(&key, failed).await.unwrap());
    cut_c.store(true, Ordering::Relaxed);
    router.check_health().await;
    router.check_health().await;
    router.put(&key, "acked").await.unwrap();
    cut_c.store(false, Ordering::Relaxed);
    cut_a.store(true, Ordering::Relaxed);
    router.check_health().await;
    assert_eq!(
        stores[2].get(&key).await.unwrap().as_deref(),
        Some(&b"failed"[..]),
        "c's copy was overwritten although a could not be asked"
    );
}

#[tokio::test]
async fn r2_w1_a_newer_record_on_the_returning_node_alone_stays() {
    // With W=1 a record on one node alone may have been acknowledged (a write made
    // while the other replica was down, with no stand-in to take it): it stays.
    let cl = cluster_with(2, 1);
    let key = key_ranked([2, 0, 1]);
    cl.router.put(&key, "before").await.unwrap();
    let alone = Entry::new("alone", version_ahead(Duration::from_secs(1)), None);
    assert!(cl.stores[2].import(&key, alone).await.unwrap());
    cl.down_c().await;
    cl.router.put(&key, "ours").await.unwrap();
    cl.up_c().await;
    assert_eq!(cl.router.get(&key).await.unwrap().unwrap(), "alone");
}
