//! What the memory registry's test files share.

use std::sync::Arc;

use nautilus_core::ManualClock;
use nautilus_memory::{MemoryRegistry, MemoryRegistryBuilder};

/// A builder on a manual clock, with no background sweep: the test moves time.
pub(crate) fn manual() -> (ManualClock, MemoryRegistryBuilder) {
    let clock = ManualClock::starting_now();
    let builder = MemoryRegistry::builder()
        .clock(Arc::new(clock.clone()))
        .sweep_interval(None);
    (clock, builder)
}
