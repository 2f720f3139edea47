//! redis-server processes for the tests: one standalone server, three more standalone
//! servers for the router's tests, and a three-primary Redis Cluster, on free
//! loopback ports, stopped by a drop guard (on failure too).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The servers this run started; dropping it stops them (and only them).
pub(crate) struct Servers {
    children: Vec<Child>,
    dir: PathBuf,
    pub(crate) standalone_url: String,
    pub(crate) cluster_url: String,
    pub(crate) sentinel_url: String,
    /// Three separate standalone servers, comma-separated: the router's nodes.
    pub(crate) shard_urls: String,
}

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free loopback port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// Fails with how to install `binary` if running it with `arg` does not succeed.
pub(crate) fn require(binary: &str, arg: &str, why_and_how: &str) -> Result<(), String> {
    match Command::new(binary).arg(arg).output() {
        Ok(out) if out.status.success() => Ok(()),
        _ => Err(format!(
            "{binary} not found: {why_and_how}, then run `cargo xtask test` again."
        )),
    }
}

const REDIS_HOW: &str = "the Redis tests need real servers. Install them with \
    `apt-get install redis-server redis-tools` (Debian/Ubuntu) or `brew install redis` (macOS)";

fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<(), String> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ready() {
            return Ok(());
        }
        sleep(Duration::from_millis(50));
    }
    Err(format!("{what} did not come up within {timeout:?}"))
}

impl Servers {
    fn spawn(&mut self, port: u16, extra: &[&str]) -> Result<(), String> {
        let dir = self.dir.join(port.to_string());
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting redis-server on {port}: {e}"))?;
        self.children.push(child);
        wait_for(
            &format!("redis-server on {port}"),
            Duration::from_secs(10),
            || cli(port, &["ping"]).is_some_and(|s| s.trim() == "PONG"),
        )
    }

    /// A Sentinel (the same redis-server binary in sentinel mode) watching the
    /// standalone server as primary `nautilus`.
    fn start_sentinel(&mut self, primary: u16) -> Result<(), String> {
        let port = free_port()?;
        let dir = self.dir.join(format!("sentinel-{port}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        // Sentinel rewrites its configuration file, so it gets one of its own.
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor nautilus 127.0.0.1 {primary} 1\n\
                 sentinel down-after-milliseconds nautilus 2000\n",
                dir.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting redis sentinel on {port}: {e}"))?;
        self.children.push(child);
        wait_for(
            &format!("sentinel on {port}"),
            Duration::from_secs(10),
            || {
                cli(port, &["sentinel", "get-master-addr-by-name", "nautilus"])
                    .is_some_and(|s| s.contains(&primary.to_string()))
            },
        )?;
        self.sentinel_url =
            format!("redis-sentinel://127.0.0.1:{port}/0?sentinelServiceName=nautilus");
        Ok(())
    }

    /// Starts a standalone server and, if asked, a three-primary cluster and a
    /// Sentinel watching the standalone server.
    pub(crate) fn start(with_cluster: bool) -> Result<Self, String> {
        require("redis-server", "--version", REDIS_HOW)?;
        require("redis-cli", "--version", REDIS_HOW)?;
        let dir = std::env::temp_dir().join(format!("nautilus-xtask-redis-{}", std::process::id()));
        let mut servers = Servers {
            children: Vec::new(),
            dir,
            standalone_url: String::new(),
            cluster_url: String::new(),
            sentinel_url: String::new(),
            shard_urls: String::new(),
        };
        let port = free_port()?;
        servers.spawn(port, &[])?;
        servers.standalone_url = format!("redis://127.0.0.1:{port}");
        let mut shard = Vec::new();
        for _ in 0..3 {
            let p = free_port()?;
            servers.spawn(p, &[])?;
            shard.push(format!("redis://127.0.0.1:{p}"));
        }
        servers.shard_urls = shard.join(",");
        if !with_cluster {
            return Ok(servers);
        }
        servers.start_sentinel(port)?;

        let ports = [free_port()?, free_port()?, free_port()?];
        for p in ports {
            let conf = format!("nodes-{p}.conf");
            servers.spawn(
                p,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &conf,
                    "--cluster-node-timeout",
                    "2000",
                ],
            )?;
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut create = Command::new("redis-cli");
        create
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let status = create
            .status()
            .map_err(|e| format!("redis-cli --cluster create: {e}"))?;
        if !status.success() {
            return Err(format!("redis-cli --cluster create failed ({status})"));
        }
        for p in ports {
            wait_for(
                &format!("cluster node {p}"),
                Duration::from_secs(20),
                || cli(p, &["cluster", "info"]).is_some_and(|s| s.contains("cluster_state:ok")),
            )?;
        }
        servers.cluster_url = format!(
            "redis-cluster://{}?node={}&node={}",
            nodes[0], nodes[1], nodes[2]
        );
        eprintln!(
            "redis: standalone {} / cluster {} / sentinel {}",
            servers.standalone_url, servers.cluster_url, servers.sentinel_url
        );
        Ok(servers)
    }
}
