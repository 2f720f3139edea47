//! Project tasks, run as `cargo xtask <task>` from anywhere in the checkout.
//!
//! - `test`: what CI runs: fmt check, clippy with warnings denied, API docs with
//!   warnings denied, every test and doctest, with a standalone redis-server, a
//!   three-primary Redis Cluster and a Sentinel that it starts on free loopback ports
//!   and stops afterwards.
//! - `bench`: the criterion suite, then `docs/benchmarks.md` from its results;
//!   `bench --counts`: instructions, stores and simulated cache misses per operation,
//!   counted by callgrind, to `docs/op-counts.md`.
//! - `redis up` / `redis down`: starts the servers `test` uses and leaves them running,
//!   printing the variables to export so that `cargo test` alone runs the Redis
//!   tests; then stops them.

mod bench;
mod redis;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("redis") => redis::run(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 tasks:\n  \
                 test   fmt check, clippy (warnings denied), all tests and doctests\n  \
                 bench  criterion benchmarks, then docs/benchmarks.md\n        \
                 (NAUTILUS_BENCH_QUICK=1 for a short run; --only memory,redis runs some;\n        \
                 --report-only rewrites the report; --counts writes docs/op-counts.md\n        \
                 from callgrind's counts instead; other args go to criterion)\n  \
                 redis up | down\n         \
                 start the test servers and print the variables to export, so that\n         \
                 plain `cargo test` runs the Redis tests; stop them"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: xtask lives one level below it.
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

pub(crate) fn step(what: &str, cmd: &mut Command) -> Result<(), String> {
    eprintln!("\n==> {what}");
    let status = cmd
        .status()
        .map_err(|e| format!("{what}: could not start: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

fn test(extra: &[String]) -> Result<(), String> {
    step(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--", "--check"]),
    )?;
    step(
        "cargo clippy (warnings denied)",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    // The facade with default features only: what most users build.
    step(
        "cargo check (facade, default features)",
        cargo().args(["check", "-p", "nautilus"]),
    )?;
    // The API docs build without warnings: no broken intra-doc link.
    step(
        "cargo doc (warnings denied)",
        cargo()
            .args(["doc", "--no-deps", "--workspace", "--all-features"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    if !Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Err(
            "openssl not found: the TLS test makes its throwaway CA with it. Install \
                    it with `apt-get install openssl`, then run `cargo xtask test` again."
                .into(),
        );
    }
    // This tool's own unit tests (it is outside the workspace, so `--workspace`
    // does not reach them).
    let mut own = cargo();
    own.args(["test", "--manifest-path", "xtask/Cargo.toml"]);
    let (own_passed, own_failed) = tests("cargo test (xtask)", &mut own)?;
    // Real servers for the Redis tests, stopped when `servers` drops (on failure too).
    let servers = redis::start_all()?;
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--all-features"])
        .args(extra)
        .envs(servers.env())
        .env("NAUTILUS_UNDER_XTASK", "1");
    let (passed, failed) = tests("cargo test (all tests and doctests)", &mut cmd)?;
    let (passed, failed) = (passed + own_passed, failed + own_failed);
    drop(servers);
    if passed == 0 {
        return Err("cargo test ran no test".into());
    }
    eprintln!("\nxtask test: all green");
    // The last line: the totals over every test binary and doctest run.
    println!("tests: {passed} passed, {failed} failed");
    Ok(())
}

/// Runs a `cargo test` command, echoing its output, and adds up its result lines.
fn tests(what: &str, cmd: &mut Command) -> Result<(u64, u64), String> {
    use std::io::{BufRead, BufReader};
    eprintln!("\n==> {what}");
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: could not start: {e}"))?;
    let (mut passed, mut failed) = (0, 0);
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                let count = |label: &str| {
                    rest.split(';')
                        .find_map(|part| part.trim().strip_suffix(label))
                        .and_then(|n| n.trim().rsplit(' ').next()?.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                passed += count(" passed");
                failed += count(" failed");
            }
        }
    }
    let status = child.wait().map_err(|e| format!("{what}: {e}"))?;
    if status.success() {
        Ok((passed, failed))
    } else {
        println!("tests: {passed} passed, {failed} failed");
        Err(format!("{what} failed ({status})"))
    }
}
