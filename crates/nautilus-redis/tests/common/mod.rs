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
    let (p, r) = (free_port(), free_port());
    let primary = Server::start(p, &[]);
    let replica = Server::start(r, &["--replicaof", "127.0.0.1", &p.to_string()]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cli(r, &["info", "replication"]).contains("master_link_status:up") {
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

/// A redis-server this test started; dropping it stops it (and only it).
pub(crate) struct Server {
    child: Option<std::process::Child>,
    pub(crate) port: u16,
    dir: std::path::PathBuf,
    extra: Vec<String>,
    /// What redis-cli needs to reach it (a password, TLS files).
    cli: Vec<String>,
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

fn ping(port: u16, cli: &[String]) -> bool {
    std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(cli)
        .arg("ping")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG")
}

pub(crate) fn cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Server {
    /// Starts redis-server on `port` with durable writes (AOF, fsync on every write),
    /// so a restart keeps every acknowledged write.
    pub(crate) fn start(port: u16, extra: &[&str]) -> Server {
        Server::start_with(port, extra, &[])
    }

    /// As [`Server::start`], for a server redis-cli reaches only with `cli` (a
    /// password, TLS files).
    pub(crate) fn start_with(port: u16, extra: &[&str], cli: &[&str]) -> Server {
        let dir = std::env::temp_dir().join(format!("nautilus-redis-test-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Server {
            child: None,
            port,
            dir,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            cli: cli.iter().map(|s| (*s).to_owned()).collect(),
        };
        server.restart();
        server
    }

    pub(crate) fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "redis-server could not start ({e}); install it: apt-get install redis-server"
                )
            });
        self.child = Some(child);
        for _ in 0..200 {
            if ping(self.port, &self.cli) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server on {} did not answer", self.port);
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub(crate) fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub(crate) fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = std::process::Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success(), "kill {signal} failed");
        }
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A paused server would not die of SIGKILL until thawed on some systems'
        // process accounting; thaw it first.
        self.resume();
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Sentinel (redis-server in sentinel mode) watching one primary as `name`;
/// dropping it stops it.
pub(crate) struct Sentinel {
    child: std::process::Child,
    pub(crate) port: u16,
    dir: std::path::PathBuf,
}

impl Sentinel {
    /// Starts it and waits until it knows the primary and `replicas` replicas of it.
    pub(crate) fn start(name: &str, primary: u16, down_after_ms: u64, replicas: usize) -> Sentinel {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("nautilus-sentinel-test-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Sentinel rewrites its configuration file, so it gets one of its own.
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor {name} 127.0.0.1 {primary} 1\n\
                 sentinel down-after-milliseconds {name} {down_after_ms}\n\
                 sentinel failover-timeout {name} 5000\n",
                dir.display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let sentinel = Sentinel { child, port, dir };
        for _ in 0..400 {
            let known = cli(port, &["sentinel", "replicas", name])
                .matches("name")
                .count();
            if known >= replicas && sentinel.primary(name) == Some(primary) {
                return sentinel;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("sentinel on {port} did not learn primary {primary} and {replicas} replicas");
    }

    /// The primary's port as this Sentinel names it.
    pub(crate) fn primary(&self, name: &str) -> Option<u16> {
        cli(self.port, &["sentinel", "get-master-addr-by-name", name])
            .lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
