//! Shared by the Redis tests: where the servers are, fresh namespaces, real-time sleeps.

#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nautilus_core::testkit::{Harness, Sleeper};
use nautilus_redis::{RedisConfig, RedisRegistry};
pub(crate) use nautilus_redis_servers::{Cluster, Persistence, Sentinel, Server};

/// The URL in `var`, or a loud failure that says how to get one.
pub(crate) fn url(var: &str) -> String {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "{var} is not set. These tests talk to real Redis servers: run them with \
             `cargo xtask test`, which starts redis-server (standalone, Sentinel and a \
             Cluster) on free ports; or start those with `cargo xtask redis up`, export the \
             variables it prints and run `cargo test`; or set {var} to a Redis you own (the \
             tests write only under fresh random namespaces)."
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

/// A registry on `url` under `namespace`.
pub(crate) async fn connect(url: &str, namespace: &str) -> RedisRegistry {
    RedisRegistry::connect(RedisConfig::new(url).namespace(namespace))
        .await
        .unwrap()
}

/// Two registries on one fresh namespace of the server in `var`: two clients of the
/// same records.
pub(crate) async fn two_clients(var: &str) -> (RedisRegistry, RedisRegistry) {
    let url = url(var);
    let ns = fresh_namespace();
    (connect(&url, &ns).await, connect(&url, &ns).await)
}

/// A raw fred client, for what the registry itself would never do.
pub(crate) async fn raw_client(url: &str) -> fred::prelude::Client {
    use fred::prelude::ClientLike;
    let raw = fred::prelude::Builder::from_config(fred::prelude::Config::from_url(url).unwrap())
        .build()
        .unwrap();
    raw.init().await.unwrap();
    raw
}

/// Puts a key of another Redis type (a hash) under the namespace `ns`, as `key`.
pub(crate) async fn plant_hash(raw: &fred::prelude::Client, ns: &str, key: &str) {
    use fred::prelude::ClientLike;
    let hset =
        fred::types::CustomCommand::new_static("HSET", fred::types::ClusterHash::FirstKey, false);
    let _: i64 = raw
        .custom(hset, vec![format!("{ns}:{key}"), "f".into(), "v".into()])
        .await
        .unwrap();
}

/// Stores under the namespace `ns`, as `key`, a record in the backend's own layout
/// (`tag` `N` live, `T` tombstone; layout 1) at `version`, never expiring, with the
/// value `value`, written past the library: its bytes, to compare with what is left.
pub(crate) async fn plant_record(
    raw: &fred::prelude::Client,
    ns: &str,
    key: &str,
    tag: u8,
    version: u64,
    value: &[u8],
) -> Vec<u8> {
    use fred::prelude::KeysInterface;
    let mut stored = vec![tag, 1];
    stored.extend_from_slice(&version.to_be_bytes());
    stored.extend_from_slice(&0u64.to_be_bytes());
    stored.extend_from_slice(value);
    let _: () = raw
        .set(format!("{ns}:{key}"), stored.as_slice(), None, None, false)
        .await
        .unwrap();
    stored
}

/// Connects with `config`, which must fail, and within 4 s (its connect timeout is
/// set to 2 s): the error.
pub(crate) async fn refused(config: RedisConfig, why: &str) -> nautilus_core::Error {
    let started = std::time::Instant::now();
    let err = RedisRegistry::connect(config.connect_timeout(Duration::from_secs(2)))
        .await
        .expect_err(why);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{why}: the error took {:?}",
        started.elapsed()
    );
    err
}

/// Writes `n` records `acked/0..n`: the acknowledged writes a fault must not lose.
pub(crate) async fn write_acked(
    registry: &RedisRegistry,
    n: usize,
) -> Vec<(String, nautilus_core::Version)> {
    use nautilus_core::RegistryExt;
    let mut acked = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("acked/{i}");
        let version = registry.put(&key, format!("v{i}")).await.unwrap();
        acked.push((key, version));
    }
    acked
}

/// Every acknowledged write is there, at its version.
pub(crate) async fn assert_kept(
    registry: &RedisRegistry,
    acked: &[(String, nautilus_core::Version)],
) {
    use nautilus_core::Registry;
    for (key, version) in acked {
        let entry = registry.get_entry(key).await.unwrap();
        assert_eq!(
            entry.map(|e| e.version),
            Some(*version),
            "acknowledged write {key} was lost"
        );
    }
}

/// Writes until 20 in a row succeed, so that every connection of the pool is back
/// (each reconnects on its own backoff): until then every failure must be transient
/// and prompt, and all of it must end within `within`. The first version written.
pub(crate) async fn until_recovered(
    registry: &RedisRegistry,
    within: Duration,
) -> nautilus_core::Version {
    use nautilus_core::RegistryExt;
    let started = std::time::Instant::now();
    let (mut streak, mut first, mut failures) = (0, None, 0);
    while streak < 20 {
        let attempt = std::time::Instant::now();
        match registry.put(&format!("recovered/{streak}"), "back").await {
            Ok(v) => {
                first.get_or_insert(v);
                streak += 1;
            }
            Err(e) => {
                failures += 1;
                streak = 0;
                assert!(e.is_transient(), "not transient while recovering: {e:?}");
                assert!(
                    attempt.elapsed() < Duration::from_secs(3),
                    "a call took {:?}",
                    attempt.elapsed()
                );
                assert!(started.elapsed() < within, "did not recover: {e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    eprintln!(
        "recovered after {:?} and {failures} failed calls",
        started.elapsed()
    );
    first.unwrap()
}

/// A primary and a replica of it, on free ports, once the replica is in sync.
pub(crate) async fn primary_and_replica() -> (Server, Server) {
    let primary = durable(free_port(), &[]);
    let p = primary.port().to_string();
    let replica = durable(free_port(), &["--replicaof", "127.0.0.1", &p]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cli(replica.port(), &["info", "replication"]).contains("master_link_status:up") {
        assert!(
            std::time::Instant::now() < deadline,
            "the replica did not sync"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (primary, replica)
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

/// A redis-server of the test's own (stopped when dropped) with durable writes (AOF,
/// fsync on every write), so a restart keeps every acknowledged write.
pub(crate) fn durable(port: u16, extra: &[&str]) -> Server {
    Server::start(port, Persistence::Durable, extra).unwrap()
}

/// As [`durable`], for a server redis-cli reaches only with `reach` (a password, TLS
/// files).
pub(crate) fn durable_with(port: u16, extra: &[&str], reach: &[&str]) -> Server {
    Server::start_with(port, Persistence::Durable, extra, reach).unwrap()
}

pub(crate) fn free_port() -> u16 {
    nautilus_redis_servers::free_port().unwrap()
}

/// redis-cli's output against the server on `port` (empty if it failed).
pub(crate) fn cli(port: u16, args: &[&str]) -> String {
    nautilus_redis_servers::cli(port, args).unwrap_or_default()
}
