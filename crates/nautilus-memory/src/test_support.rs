//! Helpers the unit tests of several files share.

use std::sync::Arc;

use nautilus_core::{ManualClock, Registry, Result, Stats};

use crate::MemoryRegistry;

/// A registry on `clock`, with no background sweep.
pub(crate) fn registry(clock: &ManualClock) -> Result<MemoryRegistry> {
    MemoryRegistry::builder()
        .clock(Arc::new(clock.clone()))
        .sweep_interval(None)
        .build()
}

pub(crate) fn stats(r: &MemoryRegistry) -> Result<Stats> {
    ready(r.stats())
}

/// Drives a future of the memory registry, which never waits.
pub(crate) fn ready<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let waker = std::task::Waker::noop();
    match f.as_mut().poll(&mut std::task::Context::from_waker(waker)) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => unreachable!("the memory registry never waits"),
    }
}
