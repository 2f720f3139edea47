//! Three redis-server processes of a test's own (killed, frozen and restarted by the
//! test, so never the shared ones), a router over them, and the records the fault
//! tests write: counters, so a read tells which write it saw.

use std::sync::Arc;
use std::time::Duration;

use nautilus_core::{DynRegistry, RegistryExt};
use nautilus_redis::{RedisConfig, RedisRegistry};
use nautilus_redis_servers::{Persistence, Server, free_port};
use nautilus_shard::{ShardedRegistry, ShardedRegistryBuilder};

/// The keys the fault tests write.
pub(crate) const KEYS: u64 = 600;

/// The `i`th key.
pub(crate) fn key(i: u64) -> String {
    format!("k{i:05}")
}

/// Three servers of the test's own, each keeping its data as `persistence` says.
pub(crate) fn servers(persistence: Persistence) -> Vec<Server> {
    nautilus_redis_servers::require().expect("redis-server is needed for the fault tests");
    (0..3)
        .map(|_| Server::start(free_port().unwrap(), persistence, &[]).unwrap())
        .collect()
}

/// A node on the server at `url`, with timeouts short enough for the fault tests.
pub(crate) async fn node(url: &str) -> DynRegistry {
    let config = RedisConfig::new(url)
        .namespace("faults")
        .pool_size(2)
        .command_timeout(Duration::from_millis(400))
        .connect_timeout(Duration::from_millis(400));
    // A server just started, on a loaded machine, may miss the 400 ms connect
    // timeout the faults need once or twice.
    let mut tries = 0;
    loop {
        match RedisRegistry::connect(config.clone()).await {
            Ok(r) => return Arc::new(r),
            Err(e) if tries < 5 => {
                tries += 1;
                eprintln!("connect to {url} failed ({e}), trying again");
            }
            Err(e) => panic!("connect to {url}: {e}"),
        }
    }
}

/// An R=`r` router over `servers`, checking them every 100 ms; it and its nodes.
pub(crate) async fn router(servers: &[Server], r: usize) -> (ShardedRegistry, Vec<DynRegistry>) {
    let b = ShardedRegistry::builder()
        .replicas(r)
        .health_interval(Duration::from_millis(100))
        .health_timeout(Duration::from_millis(300))
        .failure_threshold(2);
    built(servers, b).await
}

/// `b` over a node per server, `n0`, `n1`...; the router and its nodes.
pub(crate) async fn built(
    servers: &[Server],
    mut b: ShardedRegistryBuilder,
) -> (ShardedRegistry, Vec<DynRegistry>) {
    let mut nodes = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        let n = node(&s.url()).await;
        nodes.push(Arc::clone(&n));
        b = b.node(format!("n{i}"), n);
    }
    (b.build().unwrap(), nodes)
}

/// The value a write of `counter` puts.
pub(crate) fn value(counter: u64) -> Vec<u8> {
    counter.to_le_bytes().to_vec()
}

/// The counter a value holds.
pub(crate) fn counter(v: &[u8]) -> u64 {
    u64::from_le_bytes(v[..8].try_into().unwrap())
}

/// How many copies of `key` the nodes hold.
pub(crate) async fn copies(nodes: &[DynRegistry], key: &str) -> usize {
    let mut n = 0;
    for node in nodes {
        if node.get(key).await.unwrap().is_some() {
            n += 1;
        }
    }
    n
}
