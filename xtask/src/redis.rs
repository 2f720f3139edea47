//! Redis servers for the tests: started for one run of `cargo xtask test` or `bench`
//! (stopped by a drop guard, on failure too), or left running by `cargo xtask redis
//! up` until `cargo xtask redis down`, so that a developer can run a Redis test with
//! plain `cargo test`. The processes themselves are `nautilus-redis-servers`'s.

use std::fs;
use std::path::PathBuf;

use nautilus_redis_servers::{Deployment, Detached, stop_detached};

/// Where `redis up` writes what it left running (`pid port dir` lines).
fn state_file() -> PathBuf {
    crate::root().join("target/nautilus-redis-up")
}

/// Where `redis up` writes the variables to export, as shell lines.
fn env_file() -> PathBuf {
    crate::root().join("target/nautilus-redis.env")
}

/// Starts everything the tests use (standalone, Sentinel, Cluster).
pub(crate) fn start_all() -> Result<Deployment, String> {
    Deployment::start(true).map_err(|e| e.to_string())
}

/// Starts the standalone server only (the benchmarks').
pub(crate) fn start_standalone() -> Result<Deployment, String> {
    Deployment::start(false).map_err(|e| e.to_string())
}

/// `cargo xtask redis up|down`.
pub(crate) fn run(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("up") => up(),
        Some("down") => down(),
        _ => Err("usage: cargo xtask redis up | down".into()),
    }
}

fn up() -> Result<(), String> {
    if state_file().exists() {
        return Err(format!(
            "Redis servers are already up (see {}); run `cargo xtask redis down` first",
            env_file().display()
        ));
    }
    let servers = start_all()?;
    let exports: String = servers
        .env()
        .iter()
        .map(|(var, value)| format!("export {var}='{value}'\n"))
        .collect();
    let detached = servers.detach();
    let lines: String = detached.iter().map(|d| d.to_line() + "\n").collect();
    fs::create_dir_all(crate::root().join("target")).map_err(|e| e.to_string())?;
    fs::write(state_file(), lines).map_err(|e| format!("{}: {e}", state_file().display()))?;
    fs::write(env_file(), &exports).map_err(|e| format!("{}: {e}", env_file().display()))?;
    eprintln!(
        "redis: {} servers up. Export these (or `source {}`, or \
         `eval \"$(cargo xtask redis up)\"`), then run e.g. \
         `cargo test -p nautilus-redis`; stop them with `cargo xtask redis down`:",
        detached.len(),
        env_file().display()
    );
    // Only the exports on stdout, so that `eval "$(cargo xtask redis up)"` works.
    print!("{exports}");
    Ok(())
}

fn down() -> Result<(), String> {
    let state = match fs::read_to_string(state_file()) {
        Ok(state) => state,
        Err(_) => {
            eprintln!("redis: nothing is up (no {})", state_file().display());
            return Ok(());
        }
    };
    let mut stopped = 0;
    for server in state.lines().filter_map(Detached::from_line) {
        if stop_detached(&server).map_err(|e| e.to_string())? {
            stopped += 1;
        }
    }
    let _ = fs::remove_file(state_file());
    let _ = fs::remove_file(env_file());
    eprintln!("redis: stopped {stopped} servers");
    Ok(())
}
