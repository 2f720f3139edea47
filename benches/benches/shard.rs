//! The router side by side with one node, in one process: routed get and put over 4
//! memory nodes against one memory registry, both through `Arc<dyn Registry>` and
//! `.await`, interleaved; and the migration rate when a fourth node joins three,
//! against a plain scan-and-import loop moving the same records. Ratios go to
//! `target/criterion/shard-interleaved.json` for `cargo xtask bench`.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use nautilus_benches::{key, quick, ready};
use nautilus_core::{DynRegistry, Registry, RegistryExt};
use nautilus_memory::MemoryRegistry;
use nautilus_shard::{Placement, ShardedRegistry};

fn mem() -> DynRegistry {
    Arc::new(MemoryRegistry::new())
}

fn ratio(mut v: Vec<f64>, at_most: f64) -> serde_json::Value {
    v.sort_by(f64::total_cmp);
    let median = v[v.len() / 2];
    serde_json::json!({"median": median, "min": v[0], "max": v[v.len() - 1], "rounds": v.len(),
        "target": format!("≤{at_most}x"), "met": median <= at_most})
}

fn timed(iters: usize, mut op: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    for i in 0..iters {
        op(i);
    }
    start.elapsed().as_secs_f64()
}

/// `get_many` of 100 keys over a router of three Redis servers against the same batch
/// on one server: one round trip per server, sent at once, costs about one round trip.
fn redis_batch(
    urls: &str,
    single_url: &str,
    rounds: usize,
    out: &mut serde_json::Map<String, serde_json::Value>,
) {
    use nautilus_redis::{RedisConfig, RedisRegistry};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ns = format!("nautilus-bench-shard-{}", std::process::id());
        let connect = |url: String| {
            let ns = ns.clone();
            async move {
                let r: DynRegistry = Arc::new(
                    RedisRegistry::connect(RedisConfig::new(url).namespace(ns).pool_size(4))
                        .await
                        .unwrap(),
                );
                r
            }
        };
        let mut builder = ShardedRegistry::builder();
        for (i, url) in urls.split(',').enumerate() {
            builder = builder.node(format!("r{i}"), connect(url.to_owned()).await);
        }
        let router: DynRegistry = Arc::new(builder.build().unwrap());
        let single = connect(single_url.to_owned()).await;
        let keys: Vec<String> = (0..10_000u64).map(key).collect();
        for chunk in keys.chunks(500) {
            let items: Vec<nautilus_core::PutItem> = chunk
                .iter()
                .map(|k| nautilus_core::PutItem::new(k.clone(), vec![7u8; 64]))
                .collect();
            for r in router.put_many(items.clone()).await {
                r.unwrap();
            }
            for r in single.put_many(items).await {
                r.unwrap();
            }
        }
        let batches: Vec<Vec<&str>> = keys.chunks(100).map(|c| c.iter().map(String::as_str).collect()).collect();
        let per_round = 200;
        let mut ratios = Vec::new();
        let mut side_secs = [Vec::new(), Vec::new()];
        for round in 0..rounds {
            let mut secs = [0.0; 2];
            for k in 0..2 {
                let s = (round + k) % 2;
                let reg = if s == 0 { &router } else { &single };
                let start = Instant::now();
                for b in batches.iter().cycle().take(per_round) {
                    for r in reg.get_many(b).await {
                        black_box(r.unwrap());
                    }
                }
                secs[s] = start.elapsed().as_secs_f64() / per_round as f64;
            }
            ratios.push(secs[0] / secs[1]);
            side_secs[0].push(secs[0]);
            side_secs[1].push(secs[1]);
        }
        let v = ratio(ratios, 1.5);
        println!("get_many(100) over 3 Redis servers / on one: {v}");
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        out.insert(
            "redis_batch_100/3-servers".into(),
            serde_json::json!({ "router_over_single": v,
                "median_secs_per_side": [median(side_secs[0].clone()), median(side_secs[1].clone())] }),
        );
        router.clear().await.unwrap();
        single.clear().await.unwrap();
    });
}

/// A router over `nodes` (as a, b and c) holding records 0..m, put in order.
async fn filled_router(nodes: &[DynRegistry; 3], m: u64) -> ShardedRegistry {
    let r = ShardedRegistry::builder()
        .node("a", Arc::clone(&nodes[0]))
        .node("b", Arc::clone(&nodes[1]))
        .node("c", Arc::clone(&nodes[2]))
        .build()
        .unwrap();
    for i in 0..m {
        r.put(&key(i), (i as u32).to_le_bytes().to_vec())
            .await
            .unwrap();
    }
    r
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let rounds = if quick() { 5 } else { 15 };
    let mut out = serde_json::Map::new();
    let n = 100_000u64;
    let single = mem();
    let router: DynRegistry = Arc::new(
        ShardedRegistry::builder()
            .node("a", mem())
            .node("b", mem())
            .node("c", mem())
            .node("d", mem())
            .build()
            .unwrap(),
    );
    // Each side is filled in a pass of its own: filling both record by record
    // interleaves their allocations, which slows whichever comes first in each record
    // (heap layout, not code; see the memory bench).
    for i in 0..n {
        ready(single.put(&key(i), (i as u32).to_le_bytes().to_vec())).unwrap();
    }
    for i in 0..n {
        ready(router.put(&key(i), (i as u32).to_le_bytes().to_vec())).unwrap();
    }
    let sample: Vec<String> = (0..1u64 << 16)
        .map(|i| key(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) % n))
        .collect();
    let mask = sample.len() - 1;
    for (name, iters) in [("get", 400_000usize), ("put", 200_000)] {
        let mut secs = Vec::new();
        for round in 0..rounds {
            let mut side = [0.0; 2];
            for k in 0..2 {
                let s = (round + k) % 2;
                let reg = if s == 0 { &router } else { &single };
                side[s] = if name == "get" {
                    timed(iters, |i| {
                        black_box(ready(reg.get(&sample[i & mask])).unwrap());
                    })
                } else {
                    timed(iters, |i| {
                        black_box(ready(reg.put(&sample[i & mask], "v")).unwrap());
                    })
                };
            }
            secs.push(side);
        }
        let v = ratio(secs.iter().map(|s| s[0] / s[1]).collect(), 1.2);
        println!("routed {name} over 4 memory nodes / one memory registry: {v}");
        out.insert(
            format!("routed_{name}/100k-4-nodes"),
            serde_json::json!({ "router_over_single": v }),
        );
    }

    if let (Ok(urls), Ok(single_url)) = (
        std::env::var("NAUTILUS_REDIS_SHARD_URLS"),
        std::env::var("NAUTILUS_REDIS_URL"),
    ) {
        redis_batch(&urls, &single_url, rounds, &mut out);
    } else {
        println!(
            "NAUTILUS_REDIS_SHARD_URLS / NAUTILUS_REDIS_URL not set: no Redis batch cell (run `cargo xtask bench`)"
        );
    }

    // Migration rate: a fourth node joins three holding `m` records.
    let m = if quick() { 100_000u64 } else { 1_000_000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (mut ours, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..if quick() { 1 } else { 3 } {
        let rates = rt.block_on(async {
            let nodes = [mem(), mem(), mem()];
            let r = filled_router(&nodes, m).await;
            // The plain loop moves the same records from three other nodes filled the
            // same way (puts through a router, in the same order): copies imported in
            // scan order lay their records out in the order the loop reads them, which
            // made the loop up to 15% faster than over the nodes it is compared with.
            let before = Placement::new([("a", 1), ("b", 1), ("c", 1)]).unwrap();
            let after = Placement::new([("a", 1), ("b", 1), ("c", 1), ("d", 1)]).unwrap();
            let copies = [mem(), mem(), mem()];
            filled_router(&copies, m).await;
            let target = mem();
            let start = Instant::now();
            let mut moved = 0u64;
            for copy in &copies {
                let mut cursor = None;
                loop {
                    let page = copy.scan("", cursor.as_ref(), 512).await.unwrap();
                    let mut gone = Vec::new();
                    for (k, e) in page.records {
                        if after.node_id_of(&k) == Some("d") && before.node_id_of(&k) != Some("d") {
                            target.import(&k, e).await.unwrap();
                            gone.push(k);
                        }
                    }
                    let refs: Vec<&str> = gone.iter().map(String::as_str).collect();
                    moved += copy.delete_many(&refs).await.len() as u64;
                    match page.next {
                        Some(c) => cursor = Some(c),
                        None => break,
                    }
                }
            }
            let plain_rate = moved as f64 / start.elapsed().as_secs_f64();
            let start = Instant::now();
            let h = r.add_node("d", mem(), 1).await.unwrap();
            let p = h.wait().await.unwrap();
            let ours_rate = p.moved as f64 / start.elapsed().as_secs_f64();
            assert_eq!(
                p.moved, moved,
                "the router and the loop moved different records"
            );
            (ours_rate, plain_rate)
        });
        println!(
            "migration: router {:.0} records/s, plain loop {:.0} records/s",
            rates.0, rates.1
        );
        ours.push(rates.0);
        plain.push(rates.1);
    }
    // Each round's ratio: both rates come from the same round, so the drift of this
    // VM's speed over minutes cancels out.
    let ratios: Vec<f64> = ours.iter().zip(&plain).map(|(o, p)| o / p).collect();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let spread = nautilus_benches::Spread::of(ratios);
    let mut cell = spread.to_json();
    cell["target"] = "≥0.8x".into();
    cell["met"] = (spread.median >= 0.8).into();
    out.insert(
        format!("migration/{}k-3-to-4", m / 1000),
        serde_json::json!({ "router_rate_over_loop_rate": cell,
            "median_secs_per_side": [1.0 / median(ours), 1.0 / median(plain)] }),
    );
    nautilus_benches::write_interleaved("shard", &serde_json::Value::Object(out));
}
