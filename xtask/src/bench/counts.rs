//! `cargo xtask bench --counts`: instructions, loads, stores and simulated cache
//! misses per operation, counted by callgrind, written to `docs/op-counts.md`.
//!
//! The timed benches measure what users get, on a VM whose speed moves up to 3x from
//! round to round; these counts measure what the code does, the same on every run of
//! one build. A change to a hot path shows here as a count, not as a ratio lost in
//! the noise. Both are needed: at a million records a read waits on memory, and the
//! counts (the caches are simulated, with fixed sizes) say how often, not how long.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{cargo, root, step};

/// Record counts measured.
const SIZES: [u64; 2] = [100_000, 1_000_000];

/// The simulated caches: an L1 of 32 KiB, 8-way, and a last level of 32 MiB, 16-way,
/// 64-byte lines, as on the AMD EPYC (Zen 4) machines the benches run on. Fixed,
/// rather than read off the host, so counts compare across machines.
const CACHES: [&str; 3] = ["--I1=32768,8,64", "--D1=32768,8,64", "--LL=33554432,16,64"];

/// One operation's counts, per operation.
#[derive(Debug, Clone, Copy)]
struct Counts {
    instructions: f64,
    loads: f64,
    stores: f64,
    l1_misses: f64,
    ll_misses: f64,
}

pub(super) fn run() -> Result<(), String> {
    let valgrind = Command::new("valgrind").arg("--version").output();
    if !valgrind.is_ok_and(|o| o.status.success()) {
        return Err("`cargo xtask bench --counts` needs valgrind (callgrind) on the PATH".into());
    }
    let mut build = cargo();
    build.args([
        "build",
        "--profile",
        "bench",
        "-p",
        "nautilus-benches",
        "--example",
        "opcounts",
    ]);
    step("cargo build (opcounts)", &mut build)?;
    let exe = root().join("target/release/examples/opcounts");
    let list = Command::new(&exe)
        .arg("--list")
        .output()
        .map_err(|e| format!("running {}: {e}", exe.display()))?;
    let ops: Vec<(String, String, String)> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((f.next()?.into(), f.next()?.into(), f.next()?.into()))
        })
        .collect();
    if ops.is_empty() {
        return Err(format!("{} --list named no operation", exe.display()));
    }
    let out_dir = root().join("target/opcounts");
    fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let jobs: Vec<(u64, &(String, String, String))> = SIZES
        .iter()
        .flat_map(|&n| ops.iter().map(move |op| (n, op)))
        .collect();
    // Counts do not depend on what else runs, so the runs share the cores.
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let done: Vec<Result<Counts, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(n, (op, _, unit))) = jobs.get(i) else {
                            return mine;
                        };
                        // Operations counted: a scan's are whole passes.
                        let iters = match unit.as_str() {
                            "record" => 1,
                            "put" | "key" => 50_000,
                            _ => 100_000,
                        };
                        eprintln!("==> counting {op} at {n} records");
                        mine.push((i, count(&exe, &out_dir, op, n, iters)));
                    }
                })
            })
            .collect();
        let mut all: Vec<(usize, Result<Counts, String>)> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect();
        all.sort_by_key(|(i, _)| *i);
        all.into_iter().map(|(_, r)| r).collect()
    });
    if done.len() != jobs.len() {
        return Err("a counting thread panicked".into());
    }
    let mut rows = Vec::new();
    for ((n, (op, baseline, unit)), counts) in jobs.iter().zip(done) {
        rows.push((*n, op.clone(), baseline.clone(), unit.clone(), counts?));
    }
    let md = render(&rows);
    let path = root().join("docs/op-counts.md");
    fs::write(&path, md).map_err(|e| format!("writing {}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// Runs `op` under callgrind, counting inside its `measured_` function only.
fn count(exe: &Path, out_dir: &Path, op: &str, n: u64, iters: usize) -> Result<Counts, String> {
    let out = out_dir.join(format!("{op}-{n}.callgrind"));
    let run = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg("--cache-sim=yes")
        .args(CACHES)
        .arg("--collect-atstart=no")
        .arg("--toggle-collect=*measured_*")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(exe)
        .args([op, &n.to_string(), &iters.to_string()])
        .output()
        .map_err(|e| format!("running valgrind: {e}"))?;
    if !run.status.success() {
        return Err(format!(
            "opcounts {op} {n} failed under callgrind: {}",
            String::from_utf8_lossy(&run.stderr)
        ));
    }
    let units: f64 = String::from_utf8_lossy(&run.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("units: ")?.trim().parse().ok())
        .ok_or_else(|| format!("opcounts {op} {n} printed no unit count"))?;
    let text = fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    parse(&text, units).ok_or_else(|| format!("no totals in {}", out.display()))
}

/// The totals of a callgrind output, divided by `units`.
fn parse(text: &str, units: f64) -> Option<Counts> {
    let events: Vec<&str> = text
        .lines()
        .find_map(|l| l.strip_prefix("events:"))?
        .split_whitespace()
        .collect();
    let totals: Vec<f64> = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })?
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let get = |name: &str| {
        events
            .iter()
            .position(|e| *e == name)
            .and_then(|i| totals.get(i))
            .map_or(0.0, |v| v / units)
    };
    (units > 0.0).then(|| Counts {
        instructions: get("Ir"),
        loads: get("Dr"),
        stores: get("Dw"),
        l1_misses: get("D1mr") + get("D1mw"),
        ll_misses: get("DLmr") + get("DLmw"),
    })
}

fn render(rows: &[(u64, String, String, String, Counts)]) -> String {
    let mut md = String::from(
        "# Operation counts\n\n\
         Generated by `cargo xtask bench --counts`: what one operation does, counted by\n\
         callgrind inside the operation's loop alone (the fill is not counted), from\n\
         `benches/examples/opcounts.rs`, through the same calls as the memory bench\n\
         (`nautilus-dyn`: `Arc<dyn Registry>` and `.await`). The same keys and 64-byte\n\
         values; single-key operations cycle over 65,536 keys drawn at random.\n\n\
         Unlike the timings in `benchmarks.md`, which move up to 3x on this VM from one\n\
         round or day to the next, these counts are the same on every run of one build\n\
         (up to a few probes from quick_cache's randomly seeded hasher, and the put with\n\
         a TTL, whose expiry index follows the wall clock). The caches are\n\
         simulated with fixed sizes (L1 data 32 KiB 8-way, last level 32 MiB 16-way), so\n\
         misses say how often an operation leaves the cache, not how long it waits: at a\n\
         million records that wait, not the instructions, is most of a read's time.\n\n\
         | operation | records | per | instructions | loads | stores | L1d misses | LL misses | instructions over baseline | stores over baseline | baseline |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (n, op, baseline, unit, c) in rows {
        let base = rows
            .iter()
            .find(|(bn, bop, ..)| bn == n && bop == baseline)
            .map(|r| r.4);
        let ratio = |a: f64, b: Option<f64>| match b {
            Some(b) if b > 0.0 => format!("{:.2}x", a / b),
            _ => "–".into(),
        };
        let _ = writeln!(
            md,
            "| {op} | {} | {unit} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {} | {} | {} |",
            label(*n),
            c.instructions,
            c.loads,
            c.stores,
            c.l1_misses,
            c.ll_misses,
            ratio(c.instructions, base.map(|b| b.instructions)),
            ratio(c.stores, base.map(|b| b.stores)),
            if baseline.is_empty() { "–" } else { baseline },
        );
    }
    md
}

fn label(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{}M", n / 1_000_000)
    } else {
        format!("{}k", n / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_are_divided_per_operation_by_event_name() {
        let text = "version: 1\nevents: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw\n\
                    fn=x\n1 2\nsummary: 3000 1000 600 0 90 10 0 4 1\n\
                    totals: 3000 1000 600 0 90 10 0 4 1\n";
        let c = parse(text, 10.0).expect("counts");
        assert_eq!(c.instructions, 300.0);
        assert_eq!(c.loads, 100.0);
        assert_eq!(c.stores, 60.0);
        assert_eq!(c.l1_misses, 10.0);
        assert_eq!(c.ll_misses, 0.5);
        assert!(parse("events: Ir\n", 10.0).is_none());
        assert!(parse(text, 0.0).is_none());
    }
}
