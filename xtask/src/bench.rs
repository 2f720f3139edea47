//! `cargo xtask bench`: runs the criterion suite and writes `docs/benchmarks.md` from
//! criterion's own estimates, with the ratios against the raw libraries.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::{cargo, root, step};

mod counts;
mod report;

use report::{render, render_replication, render_shard};

/// (group, parameter) -> function -> throughput in elements per second.
type Table = BTreeMap<(String, String), BTreeMap<String, f64>>;

/// The benches, in the order they run. `--only a,b` runs some of them; the report is
/// written from every bench's last results either way.
const BENCHES: [&str; 5] = ["memory", "placement", "shard", "replication", "redis"];

pub(crate) fn run(extra: &[String]) -> Result<(), String> {
    if extra.iter().any(|a| a == "--counts") {
        return counts::run();
    }
    let report_only = extra.iter().any(|a| a == "--report-only");
    let mut only: Option<Vec<String>> = None;
    let mut passthrough: Vec<&String> = Vec::new();
    let mut args = extra.iter();
    while let Some(a) = args.next() {
        if a == "--report-only" {
            continue;
        }
        let list = match a.strip_prefix("--only") {
            Some("") => args.next().cloned(),
            Some(rest) => rest.strip_prefix('=').map(str::to_owned),
            None => {
                passthrough.push(a);
                continue;
            }
        };
        let list = list.ok_or("--only takes a list of benches: --only memory,redis")?;
        let names: Vec<String> = list.split(',').map(str::to_owned).collect();
        if let Some(bad) = names.iter().find(|n| !BENCHES.contains(&n.as_str())) {
            return Err(format!(
                "no bench {bad:?}; the benches are {}",
                BENCHES.join(", ")
            ));
        }
        only = Some(names);
    }
    let wanted = |b: &str| only.as_ref().is_none_or(|o| o.iter().any(|n| n == b));
    if !report_only {
        let mut servers = None;
        for bench in BENCHES.into_iter().filter(|b| wanted(b)) {
            let mut cmd = cargo();
            cmd.args(["bench", "-p", "nautilus-benches", "--bench", bench, "--"]);
            cmd.args(&passthrough);
            if bench != "memory" {
                if servers.is_none() {
                    servers = Some(crate::redis::start_standalone()?);
                }
                if let Some(s) = &servers {
                    cmd.envs(s.env());
                }
            }
            step(&format!("cargo bench ({bench})"), &mut cmd)?;
        }
        drop(servers);
    }
    let table = collect(&root().join("target/criterion"))?;
    let interleaved = read_json(&root().join("target/criterion/redis-interleaved.json"));
    let memory_interleaved = read_json(&root().join("target/criterion/memory-interleaved.json"));
    let shard = read_json(&root().join("target/criterion/shard-interleaved.json"));
    let replication = read_json(&root().join("target/criterion/replication-interleaved.json"));
    let mut md = render(&table, memory_interleaved.as_ref(), interleaved.as_ref());
    if std::env::var_os("NAUTILUS_BENCH_QUICK").is_some() {
        md = md.replacen(
            "# Benchmarks\n\n",
            "# Benchmarks\n\n\
             > A quick run (`NAUTILUS_BENCH_QUICK=1`): 5 interleaved rounds instead of 21,\n\
             > shorter criterion samples, and the migration and repair cells at 100k\n\
             > records. Ranges are wider than a full run's.\n\n",
            1,
        );
    }
    render_shard(&mut md, &table, shard.as_ref());
    render_replication(&mut md, replication.as_ref());
    let out = root().join("docs/benchmarks.md");
    fs::write(&out, md).map_err(|e| format!("writing {}: {e}", out.display()))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&fs::read_to_string(path).ok()?).ok()
}

fn collect(dir: &Path) -> Result<Table, String> {
    let mut table = Table::new();
    fs::read_dir(dir).map_err(|e| {
        format!(
            "no criterion results in {} ({e}); run `cargo xtask bench` first",
            dir.display()
        )
    })?;
    collect_into(dir, &mut table, 0);
    Ok(table)
}

/// Every `new/benchmark.json` under `dir`, named by the ids criterion wrote in it:
/// a benchmark is `group/function/parameter` or `group/parameter` on disk (and a
/// group named `a/b` is the directory `a_b`), so directory depth alone misreads some.
fn collect_into(dir: &Path, table: &mut Table, depth: usize) {
    if depth > 4 {
        return;
    }
    let new = dir.join("new");
    if let (Some(estimates), Some(meta)) = (
        read_json(&new.join("estimates.json")),
        read_json(&new.join("benchmark.json")),
    ) {
        if let (Some(mean_ns), Some(group)) = (
            estimates["mean"]["point_estimate"].as_f64(),
            meta["group_id"].as_str(),
        ) {
            let elements = meta["throughput"]["Elements"].as_f64().unwrap_or(1.0);
            let function = meta["function_id"].as_str().unwrap_or("").to_owned();
            let param = meta["value_str"].as_str().unwrap_or("").to_owned();
            let group = group.replace('/', "_");
            table
                .entry((group, param))
                .or_default()
                .insert(function, elements * 1e9 / mean_ns);
        }
        return;
    }
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() && entry.file_name() != "report" {
            collect_into(&path, table, depth + 1);
        }
    }
}
