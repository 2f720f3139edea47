//! The whole conformance suite on a router over two memory nodes and a real
//! redis-server (started by `cargo xtask test`, found in `NAUTILUS_REDIS_URL`). Time
//! is real: the Redis node keeps its own.

#![allow(clippy::unwrap_used, clippy::panic)]

use nautilus_core::testkit::Harness;
use nautilus_memory::MemoryRegistry;
use nautilus_redis::{RedisConfig, RedisRegistry};
use nautilus_shard::ShardedRegistry;
use std::sync::Arc;

fn url() -> String {
    match std::env::var("NAUTILUS_REDIS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "NAUTILUS_REDIS_URL is not set: run these tests with `cargo xtask test`, which \
             starts redis-server on a free port"
        ),
    }
}

mod common;

use common::{TokioSleeper, namespace};

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
