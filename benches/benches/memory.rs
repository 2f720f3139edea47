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

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use nautilus_benches::{on_threads, quick, ready};
use nautilus_core::{DynRegistry, ManualClock, PutItem, PutOptions, Registry, RegistryExt};
use nautilus_memory::MemoryRegistry;

type Qc = quick_cache::sync::Cache<String, Bytes>;
type Moka = moka::sync::Cache<String, Bytes>;

/// Drives a future that completes without waiting (the memory registry's always do).
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
    moka_ttl: Moka,
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
        // moka's own expiry: a time-to-live policy on the whole cache.
        let moka_ttl = Moka::builder()
            .max_capacity(n * 2)
            .time_to_live(Duration::from_secs(3600))
            .build();
        // Distinct values, as real data has: one shared value would make every read
        // fight over the same reference count. Each library is filled in a pass of its
        // own, as a process holding only one of them would be: filling them record by
        // record interleaves their allocations, and whichever came first in each
        // record read up to 1.7x slower than when filled alone (heap layout, not
        // code). Each stores a reference to a value the caller also held, as an
        // application's values are.
        let value_of = |i: u64| Bytes::from(vec![(i % 251) as u8; 64]);
        for i in 0..n {
            let v = value_of(i);
            nautilus
                .put_now(&key(i), v.clone(), PutOptions::default())
                .unwrap();
        }
        for i in 0..n {
            let v = value_of(i);
            qc.insert(key(i), v.clone());
        }
        for i in 0..n {
            let v = value_of(i);
            moka.insert(key(i), v.clone());
        }
        for i in 0..n {
            let v = value_of(i);
            moka_ttl.insert(key(i), v.clone());
        }
        moka.run_pending_tasks();
        moka_ttl.run_pending_tasks();
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
            moka_ttl,
        }
    }

    /// The sampled keys in batches of 100.
    fn batches(&self) -> Vec<Vec<&str>> {
        self.keys
            .chunks(100)
            .map(|c| c.iter().map(String::as_str).collect())
            .collect()
    }

    /// One write per key of `batch`, as `put_many` takes them.
    fn put_items(&self, batch: &[&str]) -> Vec<PutItem> {
        batch
            .iter()
            .map(|k| PutItem::new(*k, self.value.clone()))
            .collect()
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

fn config() -> Criterion {
    nautilus_benches::in_process()
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
                    on_threads(iters, threads, |i| {
                        black_box(ready(f.dyn_reg.get(&f.keys[i & mask])).unwrap());
                    })
                })
            });
            g.bench_function(BenchmarkId::new("nautilus", &label), |b| {
                b.iter_custom(|iters| {
                    on_threads(iters, threads, |i| {
                        black_box(f.nautilus.get_now(&f.keys[i & mask]).unwrap());
                    })
                })
            });
            g.bench_function(BenchmarkId::new("quick_cache", &label), |b| {
                b.iter_custom(|iters| {
                    on_threads(iters, threads, |i| {
                        black_box(f.qc.get(f.keys[i & mask].as_str()));
                    })
                })
            });
            g.bench_function(BenchmarkId::new("moka", &label), |b| {
                b.iter_custom(|iters| {
                    on_threads(iters, threads, |i| {
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
                        on_threads(iters, 1, |i| {
                            black_box(f.nautilus.get_now(&f.miss_keys[i & mask]).unwrap());
                        })
                    })
                });
                g.bench_function(BenchmarkId::new("quick_cache", &label), |b| {
                    b.iter_custom(|iters| {
                        on_threads(iters, 1, |i| {
                            black_box(f.qc.get(f.miss_keys[i & mask].as_str()));
                        })
                    })
                });
                g.bench_function(BenchmarkId::new("moka", &label), |b| {
                    b.iter_custom(|iters| {
                        on_threads(iters, 1, |i| {
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
                on_threads(iters, threads, |i| {
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
                on_threads(iters, threads, |i| {
                    black_box(ready(f.dyn_reg.put(&f.keys[i & mask], f.value.clone())).unwrap());
                })
            })
        });
        g.bench_function(BenchmarkId::new("quick_cache", &label), |b| {
            b.iter_custom(|iters| {
                on_threads(iters, threads, |i| {
                    f.qc.insert(f.keys[i & mask].clone(), f.value.clone());
                })
            })
        });
        g.bench_function(BenchmarkId::new("moka", &label), |b| {
            b.iter_custom(|iters| {
                on_threads(iters, threads, |i| {
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
            on_threads(iters, 1, |i| {
                black_box(
                    f.nautilus
                        .put_now(&f.keys[i & mask], f.value.clone(), ttl)
                        .unwrap(),
                );
            })
        })
    });
    g.bench_function(BenchmarkId::new("nautilus-dyn", &label), |b| {
        b.iter_custom(|iters| {
            on_threads(iters, 1, |i| {
                black_box(
                    ready(f.dyn_reg.put_opts(&f.keys[i & mask], f.value.clone(), ttl)).unwrap(),
                );
            })
        })
    });
    g.bench_function(BenchmarkId::new("moka", &label), |b| {
        b.iter_custom(|iters| {
            on_threads(iters, 1, |i| {
                f.moka_ttl.insert(f.keys[i & mask].clone(), f.value.clone());
            })
        })
    });
    // quick_cache has no TTL: the raw baseline stores the expiry next to the value.
    let qc_ttl: quick_cache::sync::Cache<String, (Bytes, u64)> =
        quick_cache::sync::Cache::new((f.n * 2) as usize);
    g.bench_function(BenchmarkId::new("quick_cache", &label), |b| {
        b.iter_custom(|iters| {
            on_threads(iters, 1, |i| {
                let expires = nautilus_core::Timestamp::now().as_millis() + 3_600_000;
                qc_ttl.insert(f.keys[i & mask].clone(), (f.value.clone(), expires));
            })
        })
    });
    g.finish();

    let batches = f.batches();
    let nb = batches.len();
    let mut g = c.benchmark_group("get_batch_100");
    g.throughput(Throughput::Elements(100));
    g.bench_function(BenchmarkId::new("nautilus-dyn", &label), |b| {
        b.iter_custom(|iters| {
            on_threads(iters, 1, |i| {
                black_box(ready(f.dyn_reg.get_many(&batches[i % nb])));
            })
        })
    });
    g.bench_function(BenchmarkId::new("nautilus", &label), |b| {
        b.iter_custom(|iters| {
            on_threads(iters, 1, |i| {
                for k in &batches[i % nb] {
                    black_box(f.nautilus.get_now(k).unwrap());
                }
            })
        })
    });
    g.bench_function(BenchmarkId::new("quick_cache", &label), |b| {
        b.iter_custom(|iters| {
            on_threads(iters, 1, |i| {
                let out: Vec<_> = batches[i % nb].iter().map(|k| f.qc.get(*k)).collect();
                black_box(out);
            })
        })
    });
    g.finish();

    let mut g = c.benchmark_group("put_batch_100");
    g.throughput(Throughput::Elements(100));
    g.bench_function(BenchmarkId::new("nautilus-dyn", &label), |b| {
        b.iter_custom(|iters| {
            on_threads(iters, 1, |i| {
                black_box(ready(f.dyn_reg.put_many(f.put_items(&batches[i % nb]))));
            })
        })
    });
    g.bench_function(BenchmarkId::new("nautilus", &label), |b| {
        b.iter_custom(|iters| {
            on_threads(iters, 1, |i| {
                for k in &batches[i % nb] {
                    black_box(
                        f.nautilus
                            .put_now(k, f.value.clone(), PutOptions::default())
                            .unwrap(),
                    );
                }
            })
        })
    });
    g.finish();

    let label = f.label(2);
    let mut g = c.benchmark_group("mixed_90_10");
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("nautilus", &label), |b| {
        b.iter_custom(|iters| {
            on_threads(iters, 2, |i| {
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
            on_threads(iters, 2, |i| {
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
            on_threads(iters, 2, |i| {
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

/// The median, least and greatest of `ratios`, and the verdict on the median.
fn spread(mut ratios: Vec<f64>, target: Target) -> serde_json::Value {
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    let (text, met) = match target {
        Target::AtMost(t) => (format!("≤{t}x"), Some(median <= t)),
        Target::AtLeast(t) => (format!("≥{t}x"), Some(median >= t)),
        Target::None => (String::new(), None),
    };
    serde_json::json!({
        "median": median,
        "min": ratios[0],
        "max": ratios[ratios.len() - 1],
        "rounds": ratios.len(),
        "target": text,
        "met": met,
    })
}

#[derive(Clone, Copy)]
enum Target {
    AtMost(f64),
    AtLeast(f64),
    None,
}

/// Times every side once per round, rotating which goes first; seconds per side. A
/// first round, not counted, warms every side up (the first reads after a fill ran
/// up to 1.5x slower, whichever side went first).
fn rounds_of(rounds: usize, sides: &[&dyn Fn() -> Duration]) -> Vec<Vec<f64>> {
    for side in sides {
        side();
    }
    (0..rounds)
        .map(|round| {
            let mut secs = vec![0.0; sides.len()];
            for k in 0..sides.len() {
                let side = (round + k) % sides.len();
                secs[side] = sides[side]().as_secs_f64();
            }
            secs
        })
        .collect()
}

/// One interleaved cell: the named ratios `secs[a] / secs[b]` over the rounds.
fn cell(secs: &[Vec<f64>], ratios: &[(&str, usize, usize, Target)]) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for &(name, a, b, target) in ratios {
        let values = secs.iter().map(|s| s[a] / s[b]).collect();
        out.insert(name.into(), spread(values, target));
    }
    let medians: Vec<f64> = (0..secs[0].len())
        .map(|side| {
            let mut v: Vec<f64> = secs.iter().map(|s| s[side]).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect();
    out.insert("median_secs_per_side".into(), serde_json::json!(medians));
    serde_json::Value::Object(out)
}

/// A full scan of the registry through `Arc<dyn Registry>`, pages of 256.
fn scan_all(reg: &DynRegistry) -> usize {
    ready(async {
        let mut scanner = reg.scanner("").page_size(256);
        let mut n = 0;
        while let Some(item) = scanner.next().await.unwrap() {
            black_box(&item);
            n += 1;
        }
        n
    })
}

/// The target cells again, in short rounds of every side back to back, rotating which
/// goes first: on this VM throughput drifts over minutes, and criterion measures one
/// library after the other. Each ratio is time over time for the same work, as a
/// median over rounds, with its target and verdict.
///
/// Each size runs in a fresh process of this bench: a heap that earlier fixtures filled
/// and freed places whichever library is filled first in its holes, and that alone
/// made it read up to 1.7x slower.
fn interleaved() -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for n in sizes() {
        let exe = std::env::current_exe().expect("the bench's own executable");
        let child = std::process::Command::new(exe)
            .env(SIZE_VAR, n.to_string())
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("running the interleaved cells in a fresh process");
        assert!(
            child.status.success(),
            "the interleaved cells at {n} failed"
        );
        for line in String::from_utf8_lossy(&child.stdout).lines() {
            match line.strip_prefix(RESULT) {
                Some(json) => {
                    let cells: serde_json::Map<String, serde_json::Value> =
                        serde_json::from_str(json).expect("the cells a child wrote");
                    out.extend(cells);
                }
                None => println!("{line}"),
            }
        }
    }
    serde_json::Value::Object(out)
}

/// Set in the child that measures the interleaved cells at one size.
const SIZE_VAR: &str = "NAUTILUS_BENCH_INTERLEAVED_SIZE";
/// How the child's result line starts.
const RESULT: &str = "interleaved-result: ";

/// The interleaved cells at `n` records, in this (fresh) process.
fn interleaved_at(n: u64) -> serde_json::Value {
    let rounds = if quick() { 5 } else { 21 };
    let mask = SAMPLE - 1;
    let mut out = serde_json::Map::new();
    let mut put = |name: String, v: serde_json::Value| {
        println!("{name}: {v}");
        out.insert(name, v);
    };
    {
        let f = Fixture::new(n);
        let ttl = PutOptions::default().ttl(Duration::from_secs(3600));
        for threads in [1usize, 2] {
            let label = f.label(threads);
            let get: [&dyn Fn() -> Duration; 4] = [
                &|| {
                    on_threads(400_000, threads, |i| {
                        black_box(ready(f.dyn_reg.get(&f.keys[i & mask])).unwrap());
                    })
                },
                &|| {
                    on_threads(400_000, threads, |i| {
                        black_box(f.qc.get(f.keys[i & mask].as_str()));
                    })
                },
                &|| {
                    on_threads(400_000, threads, |i| {
                        black_box(f.moka.get(f.keys[i & mask].as_str()));
                    })
                },
                &|| {
                    on_threads(400_000, threads, |i| {
                        black_box(f.nautilus.get_now(&f.keys[i & mask]).unwrap());
                    })
                },
            ];
            let secs = rounds_of(rounds, &get);
            put(
                format!("get_hit/{label}"),
                cell(
                    &secs,
                    &[
                        ("quick_cache_over_nautilus", 0, 1, Target::AtMost(1.25)),
                        ("nautilus_over_moka", 2, 0, Target::AtLeast(2.0)),
                        ("awaited_over_get_now", 0, 3, Target::None),
                    ],
                ),
            );
            let puts: [&dyn Fn() -> Duration; 3] = [
                &|| {
                    on_threads(200_000, threads, |i| {
                        black_box(
                            ready(f.dyn_reg.put(&f.keys[i & mask], f.value.clone())).unwrap(),
                        );
                    })
                },
                &|| {
                    on_threads(200_000, threads, |i| {
                        f.qc.insert(f.keys[i & mask].clone(), f.value.clone())
                    })
                },
                &|| {
                    on_threads(200_000, threads, |i| {
                        f.moka.insert(f.keys[i & mask].clone(), f.value.clone())
                    })
                },
            ];
            let secs = rounds_of(rounds, &puts);
            put(
                format!("put/{label}"),
                cell(
                    &secs,
                    &[
                        ("quick_cache_over_nautilus", 0, 1, Target::AtMost(1.5)),
                        ("nautilus_over_moka", 2, 0, Target::None),
                    ],
                ),
            );
        }
        let label = f.label(1);
        let ttl_puts: [&dyn Fn() -> Duration; 3] = [
            &|| {
                on_threads(200_000, 1, |i| {
                    black_box(
                        ready(f.dyn_reg.put_opts(&f.keys[i & mask], f.value.clone(), ttl)).unwrap(),
                    );
                })
            },
            &|| {
                on_threads(200_000, 1, |i| {
                    black_box(ready(f.dyn_reg.put(&f.keys[i & mask], f.value.clone())).unwrap());
                })
            },
            &|| {
                on_threads(200_000, 1, |i| {
                    f.moka_ttl.insert(f.keys[i & mask].clone(), f.value.clone())
                })
            },
        ];
        let secs = rounds_of(rounds, &ttl_puts);
        put(
            format!("put_ttl/{label}"),
            cell(
                &secs,
                &[
                    ("ttl_over_plain", 0, 1, Target::AtMost(1.3)),
                    ("nautilus_over_moka_ttl", 2, 0, Target::AtLeast(2.0)),
                ],
            ),
        );
        let batches = f.batches();
        let nb = batches.len();
        let gets: [&dyn Fn() -> Duration; 2] = [
            &|| {
                on_threads(4_000, 1, |i| {
                    black_box(ready(f.dyn_reg.get_many(&batches[i % nb])));
                })
            },
            &|| {
                on_threads(4_000, 1, |i| {
                    for k in &batches[i % nb] {
                        black_box(f.nautilus.get_now(k).unwrap());
                    }
                })
            },
        ];
        let secs = rounds_of(rounds, &gets);
        put(
            format!("get_many/{label}"),
            cell(&secs, &[("batch_over_single", 0, 1, Target::AtMost(1.0))]),
        );
        let puts: [&dyn Fn() -> Duration; 2] = [
            &|| {
                on_threads(2_000, 1, |i| {
                    black_box(ready(f.dyn_reg.put_many(f.put_items(&batches[i % nb]))));
                })
            },
            &|| {
                on_threads(2_000, 1, |i| {
                    for k in &batches[i % nb] {
                        black_box(
                            f.nautilus
                                .put_now(k, f.value.clone(), PutOptions::default())
                                .unwrap(),
                        );
                    }
                })
            },
        ];
        let secs = rounds_of(rounds, &puts);
        put(
            format!("put_many/{label}"),
            cell(&secs, &[("batch_over_single", 0, 1, Target::AtMost(1.0))]),
        );
        let scans: [&dyn Fn() -> Duration; 2] = [
            &|| {
                let start = Instant::now();
                assert_eq!(scan_all(&f.dyn_reg) as u64, f.n);
                start.elapsed()
            },
            &|| {
                let start = Instant::now();
                let mut n = 0u64;
                for item in f.qc.iter() {
                    black_box(&item);
                    n += 1;
                }
                assert_eq!(n, f.n);
                start.elapsed()
            },
        ];
        let secs = rounds_of(rounds.min(7), &scans);
        put(
            format!("scan_full/{label}"),
            cell(
                &secs,
                &[("nautilus_over_quick_cache", 0, 1, Target::AtMost(3.0))],
            ),
        );
    }
    serde_json::Value::Object(out)
}

criterion_group! {
    name = memory;
    config = config();
    targets = bench_reads, bench_sweep
}

fn main() {
    if let Some(n) = std::env::var(SIZE_VAR).ok().and_then(|n| n.parse().ok()) {
        println!("{RESULT}{}", interleaved_at(n));
        return;
    }
    memory();
    Criterion::default().configure_from_args().final_summary();
    if nautilus_benches::measuring() {
        nautilus_benches::write_interleaved("memory", &interleaved());
    }
}
