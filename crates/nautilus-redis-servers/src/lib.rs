#![doc = include_str!("../README.md")]

use std::fmt;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The variable holding the standalone server's URL, which the Redis tests read.
pub const URL_VAR: &str = "NAUTILUS_REDIS_URL";
/// The variable holding three standalone servers' URLs, comma-separated: the router's
/// nodes in its Redis tests.
pub const SHARD_URLS_VAR: &str = "NAUTILUS_REDIS_SHARD_URLS";
/// The variable holding the Redis Cluster's URL.
pub const CLUSTER_URL_VAR: &str = "NAUTILUS_REDIS_CLUSTER_URL";
/// The variable holding the Sentinel's URL (it watches the standalone server).
pub const SENTINEL_URL_VAR: &str = "NAUTILUS_REDIS_SENTINEL_URL";

/// Why servers could not be started or stopped, worded for the developer.
#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(s: String) -> Self {
        Error(s)
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to get the binaries, for the errors that miss them.
pub const INSTALL: &str = "the Redis tests need real servers: install them with \
    `apt-get install redis-server redis-tools` (Debian/Ubuntu) or `brew install redis` (macOS)";

/// Fails, saying how to install them, unless `redis-server` and `redis-cli` run.
pub fn require() -> Result<()> {
    for binary in ["redis-server", "redis-cli"] {
        match Command::new(binary).arg("--version").output() {
            Ok(out) if out.status.success() => {}
            _ => return Err(format!("{binary} not found: {INSTALL}").into()),
        }
    }
    Ok(())
}

/// A loopback port no one listens on right now.
pub fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}").into())
}

/// `redis-cli -h 127.0.0.1 -p port args..`: its output, if it ran and succeeded.
pub fn cli(port: u16, args: &[&str]) -> Option<String> {
    cli_with(port, &[], args)
}

/// As [`cli`], with what redis-cli needs to reach the server (a password, TLS files).
fn cli_with(port: u16, reach: &[String], args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(reach)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ready() {
            return Ok(());
        }
        sleep(Duration::from_millis(25));
    }
    Err(format!("{what} did not come up within {timeout:?}").into())
}

/// A fresh, empty directory of this process for one server.
fn fresh_dir(tag: &str, port: u16) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "nautilus-redis-{tag}-{port}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

fn spawn(what: &str, cmd: &mut Command) -> Result<Child> {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {what}: {e} ({INSTALL})").into())
}

/// How a server keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// In memory only: fast, for the conformance suites and the benchmarks.
    Memory,
    /// An append-only file synced on every write, so a restart keeps every
    /// acknowledged write: for the fault tests.
    Durable,
}

/// A redis-server on a loopback port; dropping it stops it (and only it) and removes
/// its directory.
#[derive(Debug)]
pub struct Server {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
    reach: Vec<String>,
}

impl Server {
    /// Starts redis-server on `port` with `extra` arguments, and waits until it answers.
    pub fn start(port: u16, persistence: Persistence, extra: &[&str]) -> Result<Server> {
        Server::start_with(port, persistence, extra, &[])
    }

    /// As [`Server::start`], for a server that redis-cli reaches only with `reach` (a
    /// password, TLS files).
    pub fn start_with(
        port: u16,
        persistence: Persistence,
        extra: &[&str],
        reach: &[&str],
    ) -> Result<Server> {
        let mut args: Vec<String> = ["--port", &port.to_string(), "--bind", "127.0.0.1"]
            .iter()
            .chain(match persistence {
                Persistence::Memory => &["--save", "", "--appendonly", "no"][..],
                Persistence::Durable => &[
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                ][..],
            })
            .chain(extra)
            .map(|s| (*s).to_owned())
            .collect();
        args.push("--protected-mode".into());
        args.push("no".into());
        let mut server = Server {
            child: None,
            port,
            dir: fresh_dir("server", port)?,
            args,
            reach: reach.iter().map(|s| (*s).to_owned()).collect(),
        };
        server.restart()?;
        Ok(server)
    }

    /// Its port on 127.0.0.1.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:port`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again (after [`Server::stop`]) on the same port and data, and waits
    /// until it answers.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let mut cmd = Command::new("redis-server");
        cmd.args(&self.args).arg("--dir").arg(&self.dir);
        self.child = Some(spawn(&format!("redis-server on {}", self.port), &mut cmd)?);
        wait_for(
            &format!("redis-server on {}", self.port),
            Duration::from_secs(10),
            || self.cli(&["ping"]).is_some_and(|s| s.trim() == "PONG"),
        )
    }

    /// redis-cli against it: its output, if it succeeded.
    #[must_use]
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        cli_with(self.port, &self.reach, args)
    }

    /// Freezes it (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws it after [`Server::pause`] (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
        }
    }

    /// Kills it (SIGKILL), keeping its data for [`Server::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A frozen process dies of SIGKILL only once thawed on some systems.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Leaves it running past this guard: what [`stop_detached`] stops later.
    fn detach(mut self) -> Detached {
        let detached = Detached {
            pid: self.child.take().map_or(0, |c| c.id()),
            port: self.port,
            dir: std::mem::take(&mut self.dir),
        };
        std::mem::forget(self);
        detached
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Sentinel (redis-server in sentinel mode) watching one primary; dropping it stops
/// it and removes its directory.
#[derive(Debug)]
pub struct Sentinel {
    server: Server,
}

impl Sentinel {
    /// Starts one on a free port, watching the primary on `primary` as `name` (quorum
    /// 1), and waits until it knows the primary and `replicas` replicas of it.
    pub fn start(name: &str, primary: u16, down_after_ms: u64, replicas: usize) -> Result<Self> {
        let port = free_port()?;
        let dir = fresh_dir("sentinel", port)?;
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
        .map_err(|e| format!("writing {}: {e}", conf.display()))?;
        let mut cmd = Command::new("redis-server");
        cmd.arg(&conf).arg("--sentinel");
        let child = spawn(&format!("redis sentinel on {port}"), &mut cmd)?;
        let sentinel = Sentinel {
            server: Server {
                child: Some(child),
                port,
                dir,
                args: Vec::new(),
                reach: Vec::new(),
            },
        };
        wait_for(
            &format!("sentinel on {port} knowing {primary} and {replicas} replicas"),
            Duration::from_secs(20),
            || {
                let known = cli(port, &["sentinel", "replicas", name])
                    .map_or(0, |s| s.matches("name").count());
                known >= replicas && sentinel.primary(name) == Some(primary)
            },
        )?;
        Ok(sentinel)
    }

    /// Its port on 127.0.0.1.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// The URL through which a client finds primary `name`.
    #[must_use]
    pub fn url(&self, name: &str) -> String {
        format!(
            "redis-sentinel://127.0.0.1:{}/0?sentinelServiceName={name}",
            self.server.port
        )
    }

    /// The port of primary `name`, as this Sentinel names it.
    #[must_use]
    pub fn primary(&self, name: &str) -> Option<u16> {
        cli(
            self.server.port,
            &["sentinel", "get-master-addr-by-name", name],
        )?
        .lines()
        .nth(1)
        .and_then(|p| p.trim().parse().ok())
    }
}

/// A Redis Cluster of primaries without replicas, each a [`Server`].
#[derive(Debug)]
pub struct Cluster {
    nodes: Vec<Server>,
}

impl Cluster {
    /// Starts `primaries` servers on free ports with `extra` arguments, joins them
    /// with `redis-cli --cluster create`, and waits until every node says the cluster
    /// is ok.
    pub fn start(primaries: usize, persistence: Persistence, extra: &[&str]) -> Result<Self> {
        let mut nodes = Vec::with_capacity(primaries);
        for _ in 0..primaries {
            let port = free_port()?;
            let conf = format!("nodes-{port}.conf");
            let mut args = vec!["--cluster-enabled", "yes", "--cluster-config-file", &conf];
            args.extend_from_slice(extra);
            nodes.push(Server::start(port, persistence, &args)?);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("redis-cli --cluster create: {e}"))?;
        if !status.success() {
            return Err(format!("redis-cli --cluster create failed ({status})").into());
        }
        for node in &nodes {
            wait_for(
                &format!("cluster node {}", node.port),
                Duration::from_secs(20),
                || {
                    node.cli(&["cluster", "info"])
                        .is_some_and(|s| s.contains("cluster_state:ok"))
                },
            )?;
        }
        Ok(Cluster { nodes })
    }

    /// `redis-cluster://first?node=second&node=..`.
    #[must_use]
    pub fn url(&self) -> String {
        let mut url = String::from("redis-cluster://");
        for (i, node) in self.nodes.iter().enumerate() {
            url.push_str(if i == 0 {
                ""
            } else if i == 1 {
                "?node="
            } else {
                "&node="
            });
            url.push_str(&format!("127.0.0.1:{}", node.port));
        }
        url
    }

    /// Its nodes, to stop and restart.
    pub fn nodes_mut(&mut self) -> &mut [Server] {
        &mut self.nodes
    }
}

/// What the Redis tests expect to be running: a standalone server, three more for the
/// router, a Sentinel watching the first as `nautilus`, and a three-primary Cluster, all in memory on free ports, with
/// their URLs in [`URL_VAR`], [`SENTINEL_URL_VAR`] and [`CLUSTER_URL_VAR`].
#[derive(Debug)]
pub struct Deployment {
    standalone: Server,
    /// Three more standalone servers: the router's nodes ([`SHARD_URLS_VAR`]).
    shards: Vec<Server>,
    sentinel: Option<Sentinel>,
    cluster: Option<Cluster>,
}

impl Deployment {
    /// Starts the standalone server, and with `everything` the Sentinel and the
    /// Cluster too (the benchmarks need the standalone server only).
    pub fn start(everything: bool) -> Result<Self> {
        require()?;
        let standalone = Server::start(free_port()?, Persistence::Memory, &[])?;
        let shards = (0..3)
            .map(|_| Server::start(free_port()?, Persistence::Memory, &[]))
            .collect::<Result<Vec<_>>>()?;
        let (sentinel, cluster) = if everything {
            (
                Some(Sentinel::start("nautilus", standalone.port, 2_000, 0)?),
                Some(Cluster::start(
                    3,
                    Persistence::Memory,
                    &["--cluster-node-timeout", "2000"],
                )?),
            )
        } else {
            (None, None)
        };
        Ok(Deployment {
            standalone,
            shards,
            sentinel,
            cluster,
        })
    }

    /// The variables to set for the tests, with their values.
    #[must_use]
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![(URL_VAR, self.standalone.url())];
        let shards: Vec<String> = self.shards.iter().map(Server::url).collect();
        env.push((SHARD_URLS_VAR, shards.join(",")));
        if let Some(cluster) = &self.cluster {
            env.push((CLUSTER_URL_VAR, cluster.url()));
        }
        if let Some(sentinel) = &self.sentinel {
            env.push((SENTINEL_URL_VAR, sentinel.url("nautilus")));
        }
        env
    }

    /// Leaves every process running after this value is gone: what
    /// [`stop_detached`] stops, one by one, later (from another process too).
    #[must_use]
    pub fn detach(self) -> Vec<Detached> {
        let mut out = vec![self.standalone.detach()];
        out.extend(self.shards.into_iter().map(Server::detach));
        out.extend(self.sentinel.map(|s| s.server.detach()));
        for node in self.cluster.map(|c| c.nodes).unwrap_or_default() {
            out.push(node.detach());
        }
        out
    }
}

/// A server left running by [`Deployment::detach`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detached {
    /// Its process id.
    pub pid: u32,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its directory, removed when it is stopped.
    pub dir: PathBuf,
}

impl Detached {
    /// One line: `pid port dir`.
    #[must_use]
    pub fn to_line(&self) -> String {
        format!("{} {} {}", self.pid, self.port, self.dir.display())
    }

    /// The value of [`Detached::to_line`].
    #[must_use]
    pub fn from_line(line: &str) -> Option<Self> {
        let mut parts = line.splitn(3, ' ');
        Some(Detached {
            pid: parts.next()?.parse().ok()?,
            port: parts.next()?.parse().ok()?,
            dir: PathBuf::from(parts.next()?),
        })
    }
}

/// Stops a detached server, if its process is still the redis-server on its port
/// (never another process that took its pid), and removes its directory. Whether it
/// was running.
pub fn stop_detached(server: &Detached) -> Result<bool> {
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", server.pid)).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    let ours = cmdline.contains("redis-server")
        && (cmdline.contains(&server.port.to_string()) || is_under(&cmdline, &server.dir));
    if ours {
        let status = Command::new("kill")
            .arg(server.pid.to_string())
            .status()
            .map_err(|e| format!("kill {}: {e}", server.pid))?;
        if !status.success() {
            return Err(format!("kill {} failed ({status})", server.pid).into());
        }
        let _ = wait_for(
            &format!("redis-server {} to stop", server.pid),
            Duration::from_secs(10),
            || cli(server.port, &["ping"]).is_none(),
        );
    }
    if server.dir.starts_with(std::env::temp_dir()) {
        let _ = std::fs::remove_dir_all(&server.dir);
    }
    Ok(ours)
}

/// Whether a Sentinel's command line names its configuration file under `dir`.
fn is_under(cmdline: &str, dir: &Path) -> bool {
    cmdline.contains(&*dir.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detached_lines_round_trip() {
        let d = Detached {
            pid: 42,
            port: 6390,
            dir: PathBuf::from("/tmp/nautilus redis/dir"),
        };
        assert_eq!(Detached::from_line(&d.to_line()), Some(d));
        assert_eq!(Detached::from_line("not a line"), None);
    }
}
