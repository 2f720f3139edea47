//! The whole conformance suite on a router that keeps two copies of every record
//! (R=2, W=2) over three real redis-server processes (started by `cargo xtask test`,
//! found in `NAUTILUS_REDIS_SHARD_URLS`).

#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;

use nautilus_core::testkit::Harness;
use nautilus_redis::{RedisConfig, RedisRegistry};
use nautilus_shard::ShardedRegistry;

mod common;

use common::{TokioSleeper, namespace, shard_urls};

nautilus_core::conformance_suite!(|| async {
    let ns = namespace();
    let mut builder = ShardedRegistry::builder().replicas(2);
    for (i, url) in shard_urls().iter().enumerate() {
        let node = RedisRegistry::connect(RedisConfig::new(url).namespace(&ns).pool_size(1))
            .await
            .unwrap();
        builder = builder.node(format!("r{i}"), Arc::new(node));
    }
    Harness::new(Arc::new(builder.build().unwrap()), Arc::new(TokioSleeper))
});
