//! The reference backend passes its own conformance suite: the suite is satisfiable
//! and the reference is a trustworthy template.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::Arc;

use nautilus_core::ManualClock;
use nautilus_core::testkit::{Harness, MapRegistry};

nautilus_core::conformance_suite!(|| async {
    let clock = ManualClock::starting_now();
    let registry = MapRegistry::with_clock(Arc::new(clock.clone()));
    Harness::with_manual_clock(Arc::new(registry), clock)
});
