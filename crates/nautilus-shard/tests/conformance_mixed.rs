//! The whole conformance suite on a router over two memory nodes and a real
//! redis-server (started by `cargo xtask test`, found in `NAUTILUS_REDIS_URL`). Time
//! is real: the Redis node keeps its own.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use nautilus_core::async_trait;
use nautilus_core::testkit::{Harness, Sleeper};
use nautilus_memory::MemoryRegistry;
use nautilus_redis::{RedisConfig, RedisRegistry};
use nautilus_shard::ShardedRegistry;

struct TokioSleeper;

#[async_trait]
impl Sleeper for TokioSleeper {
    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}

fn url() -> String {
    match std::env::var("NAUTILUS_REDIS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "NAUTILUS_REDIS_URL is not set: run these tests with `cargo xtask test`, which \
             starts redis-server on a free port"
        ),
    }
}

fn namespace() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "nautilus-shard-test-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

nautilus_core::conformance_suite!(|| async {
    let redis = RedisRegistry::connect(RedisConfig::new(url()).namespace(namespace()).pool_size(1))
        .await
        .unwrap();
    let router = ShardedRegistry::builder()
        .node("m1", Arc::new(MemoryRegistry::new()))
        .node("m2", Arc::new(MemoryRegistry::new()))
        .node("redis", Arc::new(redis))
        .build()
        .unwrap();
    Harness::new(Arc::new(router), Arc::new(TokioSleeper))
});
