//! Replication and failover, side by side in one process: put and get through an
//! R=2 router against the same router at R=1 (three memory nodes; three Redis servers
//! when `cargo xtask bench` started them), both through `Arc<dyn Registry>` and
//! `.await`, interleaved; the repair rate restoring a node that came back empty
//! against a plain scan-and-import loop restoring the same records; and the time
//! from a SIGKILL of a redis-server to the router marking it down. Ratios go to
//! `target/criterion/replication-interleaved.json` for `cargo xtask bench`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nautilus_benches::{
    Spread, interleave, key, measuring, on_tasks, quick, ready, rounds, write_interleaved,
};
use nautilus_core::{DynRegistry, PutItem, Registry, RegistryExt};
use nautilus_memory::MemoryRegistry;
use nautilus_shard::{NodeState, Placement, ShardedRegistry};

fn mem() -> DynRegistry {
    Arc::new(MemoryRegistry::new())
}

fn router(nodes: &[DynRegistry], r: usize) -> ShardedRegistry {
    let mut b = ShardedRegistry::builder()
        .replicas(r)
        .background_health_checks(false);
    for (i, n) in nodes.iter().enumerate() {
        b = b.node(format!("n{i}"), Arc::clone(n));
    }
    b.build().unwrap()
}

/// A cell: the ratio of side 0 over side 1, its target, and each side's median.
fn cell(
    times: &[[f64; 2]],
    name: &str,
    target: &str,
    met: impl Fn(f64) -> bool,
) -> serde_json::Value {
    let median = |side: usize| Spread::of(times.iter().map(|t| t[side]).collect()).median;
    let ratio = ratio_of(times, 0, 1, target, met);
    println!("{name}: {ratio}");
    serde_json::json!({ name: ratio, "median_secs_per_side": [median(0), median(1)] })
}

/// A ratio of side `a` over side `b` of `times`, with its target and verdict.
fn ratio_of<const N: usize>(
    times: &[[f64; N]],
    a: usize,
    b: usize,
    target: &str,
    met: impl Fn(f64) -> bool,
) -> serde_json::Value {
    let spread = Spread::of(times.iter().map(|t| t[a] / t[b]).collect());
    let mut ratio = spread.to_json();
    ratio["target"] = target.into();
    ratio["met"] = met(spread.median).into();
    ratio
}

/// Records 0..n put into `side`, one pass.
fn fill(side: &DynRegistry, n: u64) {
    for i in 0..n {
        ready(side.put(&key(i), (i as u32).to_le_bytes().to_vec())).unwrap();
    }
}

/// 65,536 keys of records 0..n, spread over them.
fn sample(n: u64) -> Vec<String> {
    (0..1u64 << 16)
        .map(|i| key(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) % n))
        .collect()
}

/// Interleaved rounds of 400,000 gets of `keys` (cycled) on each of `sides`.
fn timed_gets<const N: usize>(sides: [&DynRegistry; N], keys: &[String]) -> Vec<[f64; N]> {
    let mask = keys.len() - 1;
    interleave::<N>(rounds(), |s| {
        let start = Instant::now();
        for i in 0..400_000 {
            black_box(ready(sides[s].get(&keys[i & mask])).unwrap());
        }
        start.elapsed()
    })
}

/// Interleaved rounds of 200,000 puts over `keys` (cycled) on each of `sides`.
fn timed_puts<const N: usize>(sides: [&DynRegistry; N], keys: &[String]) -> Vec<[f64; N]> {
    let mask = keys.len() - 1;
    interleave::<N>(rounds(), |s| {
        let start = Instant::now();
        for i in 0..200_000 {
            black_box(ready(sides[s].put(&keys[i & mask], "v")).unwrap());
        }
        start.elapsed()
    })
}

/// R=2 against R=1 over three memory nodes, 100k records; and against R=1 over three
/// nodes holding as many records as R=2's do (each record beside one never read, as
/// R=2's nodes hold a copy of another node's record beside each of their own), which
/// tells the router's cost from the cost of the memory the second copies take.
fn memory_cells(out: &mut serde_json::Map<String, serde_json::Value>) {
    let n = 100_000u64;
    let two: DynRegistry = Arc::new(router(&[mem(), mem(), mem()], 2));
    let one: DynRegistry = Arc::new(router(&[mem(), mem(), mem()], 1));
    let padded: DynRegistry = Arc::new(router(&[mem(), mem(), mem()], 1));
    // Each router is filled in a pass of its own: filling both record by record
    // interleaves their allocations, which slows whichever comes first in each record
    // (heap layout, not code; see the memory bench).
    fill(&two, n);
    fill(&one, n);
    for i in 0..n {
        ready(padded.put(&key(i), (i as u32).to_le_bytes().to_vec())).unwrap();
        ready(padded.put(&format!("pad:{i:010}"), (i as u32).to_le_bytes().to_vec())).unwrap();
    }
    let sample = sample(n);
    let sides = [&two, &one, &padded];
    let gets = timed_gets(sides, &sample);
    // Keys no router holds: an R=2 miss on a clean first replica is confirmed by the
    // second (a first replica may have lost its copy behind the router's back).
    let absent: Vec<String> = (0..1u64 << 16).map(|i| format!("absent:{i:010}")).collect();
    let misses = timed_gets(sides, &absent);
    let puts = timed_puts(sides, &sample);
    // Batches of 1,000 keys, per key, and misses: no target; the hits' are below.
    let batch: Vec<&str> = sample.iter().take(1_000).map(String::as_str).collect();
    let get_batches = interleave::<3>(rounds(), |s| {
        let start = Instant::now();
        for _ in 0..200 {
            black_box(ready(sides[s].get_many(&batch)));
        }
        start.elapsed()
    });
    let put_batches = interleave::<3>(rounds(), |s| {
        let start = Instant::now();
        for _ in 0..100 {
            let items: Vec<PutItem> = batch.iter().map(|&k| PutItem::new(k, "b")).collect();
            black_box(ready(sides[s].put_many(items)));
        }
        start.elapsed()
    });
    for (op, times) in [
        ("get_miss", &misses),
        ("get_many_1000", &get_batches),
        ("put_many_1000", &put_batches),
    ] {
        let median = |side: usize| Spread::of(times.iter().map(|t| t[side]).collect()).median;
        let c = serde_json::json!({
            "r2_over_r1": Spread::of(times.iter().map(|t| t[0] / t[1]).collect()).to_json(),
            "r2_over_r1_same_records": Spread::of(times.iter().map(|t| t[0] / t[2]).collect()).to_json(),
            "median_secs_per_side": [median(0), median(1), median(2)],
        });
        println!("r2_{op}/memory-3-nodes: {c}");
        out.insert(format!("r2_{op}/memory-3-nodes"), c);
    }
    for (op, times, target, limit) in [("get", &gets, "≤1.1x", 1.1), ("put", &puts, "≤2.2x", 2.2)]
    {
        let median = |side: usize| Spread::of(times.iter().map(|t| t[side]).collect()).median;
        let met = |m: f64| m <= limit;
        let c = serde_json::json!({
            "r2_over_r1": ratio_of(times, 0, 1, target, met),
            "r2_over_r1_same_records": ratio_of(times, 0, 2, target, met),
            "median_secs_per_side": [median(0), median(1), median(2)],
        });
        println!("r2_{op}/memory-3-nodes: {c}");
        out.insert(format!("r2_{op}/memory-3-nodes"), c);
    }
}

/// R=2 against R=1 over three memory nodes at 10k and 1M records, get and put: where
/// the second copies' memory starts to cost. At 10k every copy stays in the
/// processor's cache on both sides; at 100k (the cells above) and 1M, R=2's nodes
/// hold twice the memory R=1's do.
fn memory_sizes(out: &mut serde_json::Map<String, serde_json::Value>) {
    for (n, label) in [(10_000u64, "10k"), (1_000_000, "1m")] {
        if quick() && n > 100_000 {
            continue;
        }
        let two: DynRegistry = Arc::new(router(&[mem(), mem(), mem()], 2));
        let one: DynRegistry = Arc::new(router(&[mem(), mem(), mem()], 1));
        fill(&two, n);
        fill(&one, n);
        let sample = sample(n);
        let gets = timed_gets([&two, &one], &sample);
        let puts = timed_puts([&two, &one], &sample);
        for (op, times, target, limit) in
            [("get", &gets, "≤1.1x", 1.1), ("put", &puts, "≤2.2x", 2.2)]
        {
            out.insert(
                format!("r2_{op}/memory-3-nodes-{label}"),
                cell(times, "r2_over_r1", target, |m| m <= limit),
            );
        }
    }
}

/// R=2 against R=1 over three Redis servers, 10k records, 64 tasks.
fn redis_cells(urls: &str, out: &mut serde_json::Map<String, serde_json::Value>) {
    use nautilus_redis::{RedisConfig, RedisRegistry};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (two, one) = rt.block_on(async {
        let mut routers = Vec::new();
        for (r, ns) in [(2, "r2"), (1, "r1")] {
            let mut nodes = Vec::new();
            for url in urls.split(',') {
                let config = RedisConfig::new(url)
                    .namespace(format!(
                        "nautilus-bench-replication-{ns}-{}",
                        std::process::id()
                    ))
                    .pool_size(4);
                let node: DynRegistry = Arc::new(RedisRegistry::connect(config).await.unwrap());
                nodes.push(node);
            }
            let router: DynRegistry = Arc::new(router(&nodes, r));
            for i in 0..10_000u64 {
                router.put(&key(i), vec![7u8; 64]).await.unwrap();
            }
            routers.push(router);
        }
        (routers.remove(0), routers.remove(0))
    });
    let iters = if quick() { 5_000 } else { 20_000 };
    for (op, target, limit) in [("get", "≤1.1x", 1.1), ("put", "≤2.2x", 2.2)] {
        let times = interleave::<2>(rounds(), |s| {
            let reg = Arc::clone(if s == 0 { &two } else { &one });
            on_tasks(&rt, iters, 64, move |i| {
                let reg = Arc::clone(&reg);
                async move {
                    let k = key(i as u64 % 10_000);
                    if op == "get" {
                        black_box(reg.get(&k).await.unwrap());
                    } else {
                        black_box(reg.put(&k, vec![7u8; 64]).await.unwrap());
                    }
                }
            })
        });
        out.insert(
            format!("r2_{op}/redis-3-servers-c64"),
            cell(&times, "r2_over_r1", target, |m| m <= limit),
        );
    }
    rt.block_on(async {
        two.clear().await.unwrap();
        one.clear().await.unwrap();
    });
}

/// Restoring a node that came back empty: the router's repair against a plain loop
/// that scans the other nodes and imports into the empty one the records it holds
/// a replica of (records per second, higher is better).
fn repair_cell(out: &mut serde_json::Map<String, serde_json::Value>) {
    let n = if quick() { 100_000u64 } else { 300_000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let nodes = [mem(), mem(), mem()];
    let r = router(&nodes, 2);
    let placement = Placement::new([("n0", 1), ("n1", 1), ("n2", 1)]).unwrap();
    let owned: u64 = rt.block_on(async {
        for i in 0..n {
            r.put(&key(i), (i as u32).to_le_bytes().to_vec())
                .await
                .unwrap();
        }
        nodes[2].count().await.unwrap()
    });
    let runs = if quick() { 3 } else { 5 };
    let times = interleave::<2>(runs, |side| {
        rt.block_on(async {
            nodes[2].clear().await.unwrap();
            let start = Instant::now();
            if side == 0 {
                let p = r.repair().unwrap().wait().await.unwrap();
                assert_eq!(p.failed, 0);
            } else {
                let mut restored = 0;
                for src in &nodes[..2] {
                    let mut cursor = None;
                    loop {
                        let page = src.scan("", cursor.as_ref(), 512).await.unwrap();
                        for (k, e) in page.records {
                            let prefs = placement.preference(&k, 2);
                            let mine = prefs.iter().any(|&p| placement.node_id(p) == Some("n2"));
                            if mine && nodes[2].import(&k, e).await.unwrap() {
                                restored += 1;
                            }
                        }
                        match page.next {
                            Some(c) => cursor = Some(c),
                            None => break,
                        }
                    }
                }
                assert_eq!(restored, owned);
            }
            let took = start.elapsed();
            assert_eq!(nodes[2].count().await.unwrap(), owned);
            took
        })
    });
    // Rates: records restored per second; the ratio is repair's rate over the loop's.
    let rates: Vec<[f64; 2]> = times.iter().map(|t| [t[1], t[0]]).collect();
    let mut c = cell(&rates, "repair_rate_over_loop_rate", "≥0.8x", |m| {
        m >= 0.8
    });
    c["median_secs_per_side"] = serde_json::json!([
        Spread::of(times.iter().map(|t| t[0]).collect()).median,
        Spread::of(times.iter().map(|t| t[1]).collect()).median
    ]);
    out.insert(format!("repair/{}k-empty-node-r2", n / 1000), c);
}

/// SIGKILL of one of three redis-servers of the bench's own to the router marking
/// it down, with pings every 100 ms: milliseconds, against two intervals.
fn kill_to_down(out: &mut serde_json::Map<String, serde_json::Value>) {
    use nautilus_redis::{RedisConfig, RedisRegistry};
    use nautilus_redis_servers::{Persistence, Server, free_port};
    let interval = Duration::from_millis(100);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut servers: Vec<Server> = (0..3)
        .map(|_| Server::start(free_port().unwrap(), Persistence::Memory, &[]).unwrap())
        .collect();
    let router = rt.block_on(async {
        let mut b = ShardedRegistry::builder()
            .replicas(2)
            .health_interval(interval)
            .health_timeout(interval * 2 / 5)
            .failure_threshold(2);
        for (i, s) in servers.iter().enumerate() {
            let config = RedisConfig::new(s.url())
                .namespace("bench-kill")
                .command_timeout(Duration::from_millis(300));
            let node: DynRegistry = Arc::new(RedisRegistry::connect(config).await.unwrap());
            b = b.node(format!("n{i}"), node);
        }
        b.build().unwrap()
    });
    let mut ms = Vec::new();
    for _ in 0..if quick() { 3 } else { 7 } {
        let down = rt.block_on(async {
            tokio::time::sleep(interval * 3).await;
            let killed = Instant::now();
            servers[1].stop();
            loop {
                let h = router.health();
                if h.iter()
                    .any(|h| h.node == "n1" && h.state == NodeState::Down)
                {
                    return killed.elapsed();
                }
                assert!(
                    killed.elapsed() < Duration::from_secs(10),
                    "never marked down"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        ms.push(down.as_secs_f64() * 1e3);
        servers[1].restart().unwrap();
        rt.block_on(async {
            while router.health().iter().any(|h| h.state == NodeState::Down) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
    }
    let spread = Spread::of(
        ms.iter()
            .map(|m| m / interval.as_secs_f64() / 1e3)
            .collect(),
    );
    let mut ratio = spread.to_json();
    ratio["target"] = "≤2 intervals".into();
    ratio["met"] = (spread.max <= 2.0).into();
    println!("kill to down (intervals of 100 ms): {ratio}");
    let median_ms = Spread::of(ms).median;
    out.insert(
        "kill_to_down/100ms-interval".into(),
        serde_json::json!({ "intervals": ratio, "median_secs_per_side": [median_ms / 1e3] }),
    );
}

fn main() {
    if !measuring() {
        return;
    }
    let mut out = serde_json::Map::new();
    memory_cells(&mut out);
    memory_sizes(&mut out);
    match std::env::var("NAUTILUS_REDIS_SHARD_URLS") {
        Ok(urls) => redis_cells(&urls, &mut out),
        Err(_) => {
            println!("NAUTILUS_REDIS_SHARD_URLS not set: no Redis cells (run `cargo xtask bench`)")
        }
    }
    repair_cell(&mut out);
    if nautilus_redis_servers::require().is_ok() {
        kill_to_down(&mut out);
    }
    write_interleaved("replication", &serde_json::Value::Object(out));
}
