//! The whole conformance suite on a router whose nodes are a router and a memory
//! registry.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use nautilus_core::ManualClock;
use nautilus_core::testkit::Harness;
use nautilus_shard::ShardedRegistry;

mod common;

use common::memory_node as node;

nautilus_core::conformance_suite!(|| async {
    let clock = ManualClock::starting_now();
    let inner = ShardedRegistry::builder()
        .clock(Arc::new(clock.clone()))
        .node("x", node(&clock))
        .node("y", node(&clock))
        .build()
        .unwrap();
    let router = ShardedRegistry::builder()
        .clock(Arc::new(clock.clone()))
        .node("inner", Arc::new(inner))
        .node("m", node(&clock))
        .build()
        .unwrap();
    Harness::with_manual_clock(Arc::new(router), clock)
});
