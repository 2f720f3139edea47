//! Placement: a key's owner (hash included, table filled), a preference list of 3, and
//! the cost of a placement: `new` alone (the table fills lazily) and `new` plus
//! `precompute` (every slot ranked), for 8, 64 and 1024 nodes.
//!
//! Lookups cycle through 64Ki keys, so their slots spread over the whole 2 MiB table
//! as a router's would. A weighted 1024-node precompute takes seconds, more than
//! criterion's ten samples should cost, so it is timed once after criterion.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group};
use nautilus_benches::key;
use nautilus_shard::Placement;

const SIZES: [usize; 3] = [8, 64, 1024];
const SAMPLE: usize = 1 << 16;

fn config() -> Criterion {
    nautilus_benches::in_process()
}

/// `n` nodes, all of weight 1, or of weights 1, 2, 3, 4, 1, ...
fn nodes(n: usize, weighted: bool) -> Vec<(String, u32)> {
    (0..n)
        .map(|i| {
            let weight = if weighted { 1 + (i % 4) as u32 } else { 1 };
            (format!("node-{i:04}"), weight)
        })
        .collect()
}

fn keys() -> Vec<String> {
    (0..SAMPLE as u64).map(key).collect()
}

fn bench_lookups(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("placement/node_of");
    group.throughput(Throughput::Elements(1));
    for n in SIZES {
        let placement = Placement::new(nodes(n, false)).unwrap();
        placement.precompute();
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & (SAMPLE - 1);
                placement.node_of(black_box(&keys[i]))
            });
        });
    }
    group.finish();

    for weighted in [false, true] {
        let name = if weighted {
            "placement/preference3_weighted"
        } else {
            "placement/preference3"
        };
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(1));
        for n in SIZES {
            let placement = Placement::new(nodes(n, weighted)).unwrap();
            let mut out = Vec::with_capacity(3);
            group.bench_function(BenchmarkId::from_parameter(n), |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) & (SAMPLE - 1);
                    placement.preference_into(black_box(&keys[i]), 3, &mut out);
                    out.first().copied()
                });
            });
        }
        group.finish();
    }
}

fn bench_builds(c: &mut Criterion) {
    let mut group = c.benchmark_group("placement/new");
    for n in SIZES {
        let list = nodes(n, true);
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| Placement::new(black_box(list.clone())).unwrap());
        });
    }
    group.finish();

    for weighted in [false, true] {
        let name = if weighted {
            "placement/precompute_weighted"
        } else {
            "placement/precompute"
        };
        let mut group = c.benchmark_group(name);
        group.sampling_mode(SamplingMode::Flat).sample_size(10);
        for n in SIZES {
            if weighted && n > 64 {
                continue;
            }
            let list = nodes(n, weighted);
            group.bench_function(BenchmarkId::from_parameter(n), |b| {
                b.iter(|| {
                    let placement = Placement::new(black_box(list.clone())).unwrap();
                    placement.precompute();
                    placement
                });
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = placement;
    config = config();
    targets = bench_lookups, bench_builds
}

fn main() {
    placement();
    Criterion::default().configure_from_args().final_summary();
    if nautilus_benches::measuring() {
        let placement = Placement::new(nodes(1024, true)).unwrap();
        let start = Instant::now();
        placement.precompute();
        println!(
            "placement/precompute_weighted/1024: {:.2?} (one run)",
            start.elapsed()
        );
    }
}
