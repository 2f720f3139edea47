//! The whole conformance suite on a router that keeps two copies of every record
//! (R=2, W=2) over three memory nodes.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use nautilus_core::ManualClock;
use nautilus_core::testkit::Harness;
use nautilus_shard::ShardedRegistry;

mod common;

use common::memory_node as node;

nautilus_core::conformance_suite!(|| async {
    let clock = ManualClock::starting_now();
    let router = ShardedRegistry::builder()
        .node("a", node(&clock))
        .node("b", node(&clock))
        .node_weighted("c", node(&clock), 2)
        .replicas(2)
        .build()
        .unwrap();
    Harness::with_manual_clock(Arc::new(router), clock)
});
