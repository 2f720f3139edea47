//! The whole conformance suite on a router over three memory nodes.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use nautilus_core::ManualClock;
use nautilus_core::testkit::Harness;
use nautilus_memory::MemoryRegistry;
use nautilus_shard::ShardedRegistry;

/// A memory node on `clock`. One shard: the router hands each node a share of a
/// global limit, and a memory registry splits its limit over its own shards again.
pub fn node(clock: &ManualClock) -> Arc<MemoryRegistry> {
    Arc::new(
        MemoryRegistry::builder()
            .clock(Arc::new(clock.clone()))
            .shards(1)
            .build()
            .unwrap(),
    )
}

nautilus_core::conformance_suite!(|| async {
    let clock = ManualClock::starting_now();
    let router = ShardedRegistry::builder()
        .node("a", node(&clock))
        .node("b", node(&clock))
        .node_weighted("c", node(&clock), 2)
        .build()
        .unwrap();
    Harness::with_manual_clock(Arc::new(router), clock)
});
