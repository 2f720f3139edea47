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
use nautilus_benches::{awaiting_on_threads, indices, key, on_threads, quick, ready};
use nautilus_core::{DynRegistry, ManualClock, PutItem, PutOptions, Registry, RegistryExt};
use nautilus_memory::MemoryRegistry;

#[path = "memory/interleaved.rs"]
mod interleaved;
use interleaved::{RESULT, SIZE_VAR, interleaved, interleaved_at};

type Qc = quick_cache::sync::Cache<String, Bytes>;

/// Raw quick_cache's get behind a trait object of one method answering a bare
/// `Option<Bytes>`: the least any backend pays for being called through
/// `Arc<dyn ...>`, against which the registry's dynamic, awaited get is set (the
/// floor cells of the interleaved get).
trait DirectGet: Send + Sync {
    fn get(&self, key: &str) -> Option<Bytes>;
}

/// The fixture's quick_cache, shared with the direct cells.
struct SharedQc(Arc<Qc>);

impl DirectGet for SharedQc {
    fn get(&self, key: &str) -> Option<Bytes> {
        self.0.get(key)
    }
}
type Moka = moka::sync::Cache<String, Bytes>;

struct Fixture {
    n: u64,
    keys: Vec<String>,
    miss_keys: Vec<String>,
    value: Bytes,
    nautilus: MemoryRegistry,
    dyn_reg: DynRegistry,
    qc: Arc<Qc>,
    /// The same cache as `qc`, behind a trait object.
    dyn_qc: Arc<dyn DirectGet>,
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
        let qc = Arc::new(Qc::new((n * 2) as usize));
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
        let dyn_qc: Arc<dyn DirectGet> = Arc::new(SharedQc(Arc::clone(&qc)));
        Fixture {
            n,
            keys,
            miss_keys,
            value,
            nautilus,
            dyn_reg,
            qc,
            dyn_qc,
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
        Self::label_of(self.n, threads)
    }

    /// A cell's label: `n` records (`100k`, `1M`) and the thread count.
    fn label_of(n: u64, threads: usize) -> String {
        let size = if n >= 1_000_000 {
            format!("{}M", n / 1_000_000)
        } else {
            format!("{}k", n / 1_000)
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
