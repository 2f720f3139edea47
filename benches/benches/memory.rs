//! The memory registry side by side with raw quick_cache and moka, in one process, on
//! the same keys and values. Each criterion iteration is one operation (one batch for
//! the batch scenario); multi-threaded scenarios split the iterations over the threads
//! and report wall time, so throughput is the aggregate.
//!
//! After criterion, the target cells (get hit, put) run again interleaved: short
//! rounds of nautilus, quick_cache and moka back to back, and the median ratios go to
//! `target/criterion/memory-interleaved.json`, from which `cargo xtask bench` takes
//! its verdicts (criterion measures one library after the other, minutes apart on a
//! VM whose speed drifts).

#![allow(missing_docs, clippy::unwrap_used)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use nautilus_core::{DynRegistry, ManualClock, PutOptions, Registry, RegistryExt};
use nautilus_memory::MemoryRegistry;

type Qc = quick_cache::sync::Cache<String, Bytes>;
type Moka = moka::sync::Cache<String, Bytes>;

/// Drives a future that completes without waiting (the memory registry's always do).
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the memory registry never waits"),
    }
}

fn quick() -> bool {
    std::env::var_os("NAUTILUS_BENCH_QUICK").is_some()
}

fn key(i: u64) -> String {
    format!("user:{i:010}")
}

/// A fixed pseudo-random sequence of indices (splitmix64), the same in every run.
fn indices(n: u64, count: usize, seed: u64) -> Vec<u64> {
    let mut x = seed;
    (0..count)
        .map(|_| {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) % n
        })
        .collect()
}

struct Fixture {
    n: u64,
    keys: Vec<String>,
    miss_keys: Vec<String>,
    value: Bytes,
    nautilus: MemoryRegistry,
    dyn_reg: DynRegistry,
    qc: Qc,
    moka: Moka,
}

const SAMPLE: usize = 1 << 16;

impl Fixture {
    fn new(n: u64) -> Self {
        let value = Bytes::from(vec![0xabu8; 64]);
        let nautilus = MemoryRegistry::builder()
            .max_records(n * 2)
            .build()
            .unwrap();
        let qc = Qc::new((n * 2) as usize);
        let moka = Moka::new(n * 2);
        // Distinct values, as real data has: one shared value would make every read
        // fight over the same reference count.
        for i in 0..n {
            let k = key(i);
            let v = Bytes::from(vec![(i % 251) as u8; 64]);
            nautilus
                .put_now(&k, v.clone(), PutOptions::default())
                .unwrap();
            let v = Bytes::from(v.to_vec());
            qc.insert(k.clone(), v.clone());
            let v = Bytes::from(v.to_vec());
            moka.insert(k, v);
        }
        moka.run_pending_tasks();
        let keys = indices(n, SAMPLE, 1).into_iter().map(key).collect();
        let miss_keys = indices(n, SAMPLE, 2)
            .into_iter()
            .map(|i| key(i + n))
            .collect();
        let dyn_reg: DynRegistry = Arc::new(nautilus.clone());
        Fixture {
            n,
            keys,
            miss_keys,
            value,
            nautilus,
            dyn_reg,
            qc,
            moka,
        }
    }

    /// The `i`-th batch of up to 100 sampled keys.
    fn batch(&self, i: usize) -> &[String] {
        let start = (i * 100) & (SAMPLE - 1);
        &self.keys[start..(start + 100).min(SAMPLE)]
    }

    fn label(&self, threads: usize) -> String {
        let size = if self.n >= 1_000_000 {
            format!("{}M", self.n / 1_000_000)
        } else {
            format!("{}k", self.n / 1_000)
        };
        format!("{size}-{threads}t")
    }
}

/// Runs `op(i)` for `iters` iterations split over `threads` threads; wall time.
fn timed<F: Fn(usize) + Sync>(iters: u64, threads: usize, op: F) -> Duration {
    let per = (iters as usize).div_ceil(threads);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let op = &op;
            s.spawn(move || {
                let base = t * 7919;
                for i in 0..per {
                    op(base + i);
                }
            });
        }
    });
    start.elapsed()
}

fn config() -> Criterion {
    let c = Criterion::default().configure_from_args();
    if quick() {
        c.warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_millis(700))
            .sample_size(10)
    } else {
        c.warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(2))
            .sample_size(20)
    }
}

fn sizes() -> Vec<u64> {
    vec![100_000, 1_000_000]
}

fn bench_reads(c: &mut Criterion) {
    for n in sizes() {
        let f = Fixture::new(n);
        for threads in [1usize, 2] {
            let label = f.label(threads);
            let mask = SAMPLE - 1;
            let mut g = c.benchmark_group("get_hit");
            g.throughput(Throughput::Elements(1));
            g.bench_function(BenchmarkId::new("nautilus-dyn", &label), |b| {
                b.iter_custom(|iters| {
                    timed(iters, threads, |i| {
                        black_box(ready(f.dyn_reg.entry(&f.keys[i & mask])).unwrap());
                    })
                })
            });
            g.bench_function(BenchmarkId::new("nautilus", &label), |b| {
                b.iter_custom(|iters| {
                    timed(iters, threads, |i| {
                        black_box(f.nautilus.get_now(&f.keys[i & mask]).unwrap());
                    })
                })
            });
            g.bench_function(BenchmarkId::new("quick_cache", &label), |b| {
                b.iter_custom(|iters| {
                    timed(iters, threads, |i| {
                        black_box(f.qc.get(f.keys[i & mask].as_str()));
                    })
                })
            });
            g.bench_function(BenchmarkId::new("moka", &label), |b| {
                b.iter_custom(|iters| {
                    timed(iters, threads, |i| {
                        black_box(f.moka.get(f.keys[i & mask].as_str()));
                    })
                })
            });
            g.finish();
            if threads == 1 {
                let mut g = c.benchmark_group("get_miss");
                g.throughput(Throughput::Elements(1));
                g.bench_function(BenchmarkId::new("nautilus", &label), |b| {
                    b.iter_custom(|iters| {
                        timed(iters, 1, |i| {
                            black_box(f.nautilus.get_now(&f.miss_keys[i & mask]).unwrap());
                        })
                    })
                });
                g.bench_function(BenchmarkId::new("quick_cache", &label), |b| {
                    b.iter_custom(|iters| {
                        timed(iters, 1, |i| {
                            black_box(f.qc.get(f.miss_keys[i & mask].as_str()));
                        })
                    })
                });
                g.bench_function(BenchmarkId::new("moka", &label), |b| {
                    b.iter_custom(|iters| {
                        timed(iters, 1, |i| {
                            black_box(f.moka.get(f.miss_keys[i & mask].as_str()));
                        })
                    })
                });
                g.finish();
            }
        }
        bench_writes(c, &f);
    }
}

fn bench_writes(c: &mut Criterion, f: &Fixture) {
    let mask = SAMPLE - 1;
    for threads in [1usize, 2] {
        let label = f.label(threads);
        let mut g = c.benchmark_group("put");
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("nautilus", &label), |b| {
            b.iter_custom(|iters| {
                timed(iters, threads, |i| {
                    black_box(
                        f.nautilus
                            .put_now(&f.keys[i & mask], f.value.clone(), PutOptions::default())
                            .unwrap(),
                    );
                })
            })
        });
        g.bench_function(BenchmarkId::new("nautilus-dyn", &label), |b| {
            b.iter_custom(|iters| {
                timed(iters, threads, |i| {
                    black_box(ready(f.dyn_reg.put(&f.keys[i & mask], f.value.clone())).unwrap());
                })
            })
        });
        g.bench_function(BenchmarkId::new("quick_cache", &label), |b| {
            b.iter_custom(|iters| {
                timed(iters, threads, |i| {
                    f.qc.insert(f.keys[i & mask].clone(), f.value.clone());
                })
            })
        });
        g.bench_function(BenchmarkId::new("moka", &label), |b| {
            b.iter_custom(|iters| {
                timed(iters, threads, |i| {
                    f.moka.insert(f.keys[i & mask].clone(), f.value.clone());
                })
            })
        });
        g.finish();
    }

    let label = f.label(1);
    let mut g = c.benchmark_group("put_ttl");
    g.throughput(Throughput::Elements(1));
    let ttl = PutOptions::default().ttl(Duration::from_secs(3600));
    g.bench_function(BenchmarkId::new("nautilus", &label), |b| {
        b.iter_custom(|iters| {
            timed(iters, 1, |i| {
                black_box(
                    f.nautilus
                        .put_now(&f.keys[i & mask], f.value.clone(), ttl)
                        .unwrap(),
                );
            })
        })
    });
    // quick_cache has no TTL: the raw baseline stores the expiry next to the value.
    let qc_ttl: quick_cache::sync::Cache<String, (Bytes, u64)> =
        quick_cache::sync::Cache::new((f.n * 2) as usize);
    g.bench_function(BenchmarkId::new("quick_cache", &label), |b| {
        b.iter_custom(|iters| {
            timed(iters, 1, |i| {
                let expires = nautilus_core::Timestamp::now().as_millis() + 3_600_000;
                qc_ttl.insert(f.keys[i & mask].clone(), (f.value.clone(), expires));
            })
        })
    });
    g.finish();

    let mut g = c.benchmark_group("get_batch_100");
    g.throughput(Throughput::Elements(100));
    g.bench_function(BenchmarkId::new("nautilus", &label), |b| {
        b.iter_custom(|iters| {
            timed(iters, 1, |i| {
                let keys: Vec<&str> = f.batch(i).iter().map(String::as_str).collect();
                black_box(ready(f.nautilus.get_many(&keys)));
            })
        })
    });
    g.bench_function(BenchmarkId::new("quick_cache", &label), |b| {
        b.iter_custom(|iters| {
            timed(iters, 1, |i| {
                let out: Vec<_> = f.batch(i).iter().map(|k| f.qc.get(k.as_str())).collect();
                black_box(out);
            })
        })
    });
    g.bench_function(BenchmarkId::new("moka", &label), |b| {
        b.iter_custom(|iters| {
            timed(iters, 1, |i| {
                let out: Vec<_> = f.batch(i).iter().map(|k| f.moka.get(k.as_str())).collect();
                black_box(out);
            })
        })
    });
    g.finish();

    let label = f.label(2);
    let mut g = c.benchmark_group("mixed_90_10");
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("nautilus", &label), |b| {
        b.iter_custom(|iters| {
            timed(iters, 2, |i| {
                let k = &f.keys[i & mask];
                if i % 10 == 0 {
                    black_box(
                        f.nautilus
                            .put_now(k, f.value.clone(), PutOptions::default())
                            .unwrap(),
                    );
                } else {
                    black_box(f.nautilus.get_now(k).unwrap());
                }
            })
        })
    });
    g.bench_function(BenchmarkId::new("quick_cache", &label), |b| {
        b.iter_custom(|iters| {
            timed(iters, 2, |i| {
                let k = &f.keys[i & mask];
                if i % 10 == 0 {
                    f.qc.insert(k.clone(), f.value.clone());
                } else {
                    black_box(f.qc.get(k.as_str()));
                }
            })
        })
    });
    g.bench_function(BenchmarkId::new("moka", &label), |b| {
        b.iter_custom(|iters| {
            timed(iters, 2, |i| {
                let k = &f.keys[i & mask];
                if i % 10 == 0 {
                    f.moka.insert(k.clone(), f.value.clone());
                } else {
                    black_box(f.moka.get(k.as_str()));
                }
            })
        })
    });
    g.finish();
}

/// One sweep pass over 1M records of which 10% are due. Each iteration re-arms the
/// 100k due records (untimed), moves the clock past them, and times the pass.
fn bench_sweep(c: &mut Criterion) {
    let n = 1_000_000u64;
    let clock = ManualClock::starting_now();
    let registry = MemoryRegistry::builder()
        .clock(Arc::new(clock.clone()))
        .sweep_interval(None)
        .build()
        .unwrap();
    let value = Bytes::from(vec![1u8; 64]);
    let long = PutOptions::default().ttl(Duration::from_secs(86_400 * 365));
    let short = PutOptions::default().ttl(Duration::from_secs(1));
    for i in 0..n {
        let opts = if i % 10 == 0 { short } else { long };
        registry.put_now(&key(i), value.clone(), opts).unwrap();
    }
    let mut g = c.benchmark_group("ttl_sweep");
    g.sample_size(10);
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("nautilus", "1M-10pct"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                for i in (0..n).step_by(10) {
                    registry.put_now(&key(i), value.clone(), short).unwrap();
                }
                clock.advance(Duration::from_secs(2));
                let start = Instant::now();
                let swept = registry.sweep_expired();
                total += start.elapsed();
                assert_eq!(swept as u64, n / 10);
            }
            total
        })
    });
    g.finish();
}

/// The median, least and greatest of `ratios`.
fn spread(mut ratios: Vec<f64>) -> serde_json::Value {
    ratios.sort_by(f64::total_cmp);
    serde_json::json!({
        "median": ratios[ratios.len() / 2],
        "min": ratios[0],
        "max": ratios[ratios.len() - 1],
        "rounds": ratios.len(),
    })
}

/// The target cells (get hit and put, every size and thread count) again, in short
/// rounds of nautilus, quick_cache and moka back to back, rotating which goes first:
/// on this VM throughput drifts over minutes, and criterion measures one library
/// after the other. Per cell, the median over rounds of quick_cache / nautilus and
/// nautilus / moka.
fn interleaved() -> serde_json::Value {
    let rounds = if quick() { 5 } else { 21 };
    let mask = SAMPLE - 1;
    let mut out = serde_json::Map::new();
    for n in sizes() {
        let f = Fixture::new(n);
        for threads in [1usize, 2] {
            for group in ["get_hit", "put"] {
                // About 50-150 ms per side per round here.
                let iters: u64 = if group == "get_hit" { 400_000 } else { 200_000 };
                let sides: [&(dyn Fn(usize) + Sync); 3] = if group == "get_hit" {
                    [
                        &|i| {
                            black_box(f.nautilus.get_now(&f.keys[i & mask]).unwrap());
                        },
                        &|i| {
                            black_box(f.qc.get(f.keys[i & mask].as_str()));
                        },
                        &|i| {
                            black_box(f.moka.get(f.keys[i & mask].as_str()));
                        },
                    ]
                } else {
                    [
                        &|i| {
                            black_box(
                                f.nautilus
                                    .put_now(
                                        &f.keys[i & mask],
                                        f.value.clone(),
                                        PutOptions::default(),
                                    )
                                    .unwrap(),
                            );
                        },
                        &|i| f.qc.insert(f.keys[i & mask].clone(), f.value.clone()),
                        &|i| f.moka.insert(f.keys[i & mask].clone(), f.value.clone()),
                    ]
                };
                let (mut vs_qc, mut vs_moka) = (Vec::new(), Vec::new());
                for round in 0..rounds {
                    let mut secs = [0.0f64; 3];
                    for k in 0..3 {
                        let side = (round + k) % 3;
                        secs[side] = timed(iters, threads, sides[side]).as_secs_f64();
                    }
                    // Throughput ratios: time of the other side over time of ours.
                    vs_qc.push(secs[0] / secs[1]);
                    vs_moka.push(secs[2] / secs[0]);
                }
                let (vs_qc, vs_moka) = (spread(vs_qc), spread(vs_moka));
                let cell = format!("{group}/{}", f.label(threads));
                println!(
                    "{cell}: interleaved medians over {rounds} rounds: quick_cache / nautilus {:.2}x, nautilus / moka {:.2}x",
                    vs_qc["median"].as_f64().unwrap_or(f64::NAN),
                    vs_moka["median"].as_f64().unwrap_or(f64::NAN),
                );
                out.insert(
                    cell,
                    serde_json::json!({ "quick_cache_over_nautilus": vs_qc, "nautilus_over_moka": vs_moka }),
                );
            }
        }
    }
    serde_json::Value::Object(out)
}

criterion_group! {
    name = memory;
    config = config();
    targets = bench_reads, bench_sweep
}

fn main() {
    memory();
    Criterion::default().configure_from_args().final_summary();
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench -- --list` and criterion's test mode run nothing else.
    if !args.iter().any(|a| a == "--list" || a == "--test") {
        let ratios = interleaved();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion");
        let _ = std::fs::create_dir_all(&dir);
        std::fs::write(dir.join("memory-interleaved.json"), ratios.to_string()).unwrap();
    }
}
