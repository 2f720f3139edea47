//! Shared by the Redis tests: where the servers are, fresh namespaces, real-time sleeps.

#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nautilus_core::testkit::{Harness, Sleeper};
use nautilus_redis::{RedisConfig, RedisRegistry};

/// The URL in `var`, or a loud failure that says how to get one.
pub(crate) fn url(var: &str) -> String {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "{var} is not set. These tests talk to real Redis servers: run them with \
             `cargo xtask test`, which starts redis-server (standalone and a Cluster) on free \
             ports, or set {var} to a Redis you own (the tests write only under fresh \
             random namespaces)."
        ),
    }
}

/// A namespace no other run or test uses.
pub(crate) fn fresh_namespace() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "nautilus-test-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub(crate) async fn registry(var: &str) -> RedisRegistry {
    let config = RedisConfig::new(url(var))
        .namespace(fresh_namespace())
        .pool_size(1);
    RedisRegistry::connect(config).await.unwrap()
}

pub(crate) struct TokioSleeper;

#[nautilus_core::async_trait]
impl Sleeper for TokioSleeper {
    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}

pub(crate) async fn harness(var: &str) -> Harness {
    Harness::new(Arc::new(registry(var).await), Arc::new(TokioSleeper))
}
