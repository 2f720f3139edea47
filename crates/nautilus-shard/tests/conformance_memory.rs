//! The whole conformance suite on a router over three memory nodes: keeping one copy
//! of every record (R=1), and two (R=2, W=2).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use nautilus_core::ManualClock;
use nautilus_core::testkit::Harness;
use nautilus_shard::ShardedRegistry;

mod common;

use common::memory_node as node;

fn harness(replicas: usize) -> Harness {
    let clock = ManualClock::starting_now();
    let router = ShardedRegistry::builder()
        .clock(Arc::new(clock.clone()))
        .node("a", node(&clock))
        .node("b", node(&clock))
        .node_weighted("c", node(&clock), 2)
        .replicas(replicas)
        .build()
        .unwrap();
    Harness::with_manual_clock(Arc::new(router), clock)
}

mod one_copy {
    use super::harness;

    nautilus_core::conformance_suite!(|| async { harness(1) });
}

mod two_copies {
    use super::harness;

    nautilus_core::conformance_suite!(|| async { harness(2) });
}
