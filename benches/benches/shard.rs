//! The router side by side with one node, in one process: routed get and put over 4
//! memory nodes against one memory registry, both through `Arc<dyn Registry>` and
//! `.await`, interleaved; and the migration rate when a fourth node joins three,
//! against a plain scan-and-import loop moving the same records. Ratios go to
//! `target/criterion/shard-interleaved.json` for `cargo xtask bench`.

#![allow(missing_docs, clippy::unwrap_used)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use nautilus_core::{DynRegistry, Registry, RegistryExt};
use nautilus_memory::MemoryRegistry;
use nautilus_shard::{Placement, ShardedRegistry};

fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("memory nodes never wait"),
    }
}

fn quick() -> bool {
    std::env::var_os("NAUTILUS_BENCH_QUICK").is_some()
}

fn key(i: u64) -> String {
    format!("user:{i:010}")
}

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
    for i in 0..n {
        let v = (i as u32).to_le_bytes().to_vec();
        ready(single.put(&key(i), v.clone())).unwrap();
        ready(router.put(&key(i), v)).unwrap();
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

    // Migration rate: a fourth node joins three holding `m` records.
    let m = if quick() { 100_000u64 } else { 1_000_000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let (mut ours, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..if quick() { 1 } else { 3 } {
        let rates = rt.block_on(async {
            let nodes = [mem(), mem(), mem()];
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
            // The plain loop: scan the same three nodes, import into a fresh node the
            // records it would own, delete them from the source.
            let before = Placement::new([("a", 1), ("b", 1), ("c", 1)]).unwrap();
            let after = Placement::new([("a", 1), ("b", 1), ("c", 1), ("d", 1)]).unwrap();
            let copies = [mem(), mem(), mem()];
            for (src, copy) in nodes.iter().zip(&copies) {
                let mut cursor = None;
                loop {
                    let page = src.scan("", cursor.as_ref(), 512).await.unwrap();
                    for (k, e) in page.records {
                        copy.import(&k, e).await.unwrap();
                    }
                    match page.next {
                        Some(c) => cursor = Some(c),
                        None => break,
                    }
                }
            }
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
    ours.sort_by(f64::total_cmp);
    plain.sort_by(f64::total_cmp);
    let (o, p) = (ours[ours.len() / 2], plain[plain.len() / 2]);
    out.insert(
        format!("migration/{}k-3-to-4", m / 1000),
        serde_json::json!({ "router_rate_over_loop_rate": {
            "median": o / p, "min": o / p, "max": o / p, "rounds": ours.len(),
            "target": "≥0.8x", "met": o / p >= 0.8 },
            "median_secs_per_side": [1.0 / o, 1.0 / p] }),
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion");
    let _ = std::fs::create_dir_all(&dir);
    std::fs::write(
        dir.join("shard-interleaved.json"),
        serde_json::Value::Object(out).to_string(),
    )
    .unwrap();
}
