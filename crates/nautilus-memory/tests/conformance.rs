//! The memory registry passes the whole conformance suite, on a manual clock.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::Arc;

use nautilus_core::ManualClock;
use nautilus_core::testkit::Harness;
use nautilus_memory::MemoryRegistry;

nautilus_core::conformance_suite!(|| async {
    let clock = ManualClock::starting_now();
    let registry = MemoryRegistry::builder()
        .clock(Arc::new(clock.clone()))
        .build()
        .expect("registry");
    Harness::with_manual_clock(Arc::new(registry), clock)
});
