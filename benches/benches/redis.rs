//! The Redis registry side by side with raw fred issuing the equivalent commands
//! against the same server, in one process: GET vs `get_entry`, SET PX vs a versioned
//! put with TTL, MGET vs `get_many`. Each criterion iteration is one operation (one
//! batch for batches); concurrent scenarios split iterations over tasks and report
//! wall time, so throughput is the aggregate.

#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fred::prelude::{ClientLike, Expiration, KeysInterface, Pool};
use nautilus_core::{PutOptions, Registry};
use nautilus_redis::{RedisConfig, RedisRegistry};

const KEYS: usize = 10_000;
const POOL: usize = 4;

fn url() -> String {
    std::env::var("NAUTILUS_REDIS_URL").unwrap_or_else(|_| {
        panic!("NAUTILUS_REDIS_URL is not set: run `cargo xtask bench`, which starts redis-server")
    })
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    registry: Arc<RedisRegistry>,
    fred: Arc<Pool>,
    keys: Arc<Vec<String>>,
    raw_keys: Arc<Vec<String>>,
    value: Bytes,
}

fn fixture() -> Fixture {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let value = Bytes::from(vec![0x5au8; 64]);
    let (registry, fred) = rt.block_on(async {
        let registry = RedisRegistry::connect(
            RedisConfig::new(url())
                .namespace("bench-nautilus")
                .pool_size(POOL),
        )
        .await
        .unwrap();
        let config = fred::prelude::Config::from_url(&url()).unwrap();
        let fred = fred::prelude::Builder::from_config(config)
            .build_pool(POOL)
            .unwrap();
        fred.init().await.unwrap();
        (registry, fred)
    });
    let keys: Vec<String> = (0..KEYS).map(|i| format!("k{i:06}")).collect();
    let raw_keys: Vec<String> = keys.iter().map(|k| format!("bench-raw:{k}")).collect();
    rt.block_on(async {
        for (k, raw) in keys.iter().zip(&raw_keys) {
            registry
                .put_opts(k, value.clone(), PutOptions::default())
                .await
                .unwrap();
            let _: () = fred
                .set(raw.as_str(), value.clone(), None, None, false)
                .await
                .unwrap();
        }
    });
    Fixture {
        rt,
        registry: Arc::new(registry),
        fred: Arc::new(fred),
        keys: Arc::new(keys),
        raw_keys: Arc::new(raw_keys),
        value,
    }
}

/// Runs `iters` operations over `tasks` concurrent tasks; wall time.
fn run<F, Fut>(f: &Fixture, iters: u64, tasks: usize, op: F) -> Duration
where
    F: Fn(usize) -> Fut + Send + Sync + 'static + Clone,
    Fut: std::future::Future<Output = ()> + Send,
{
    let per = (iters as usize).div_ceil(tasks);
    f.rt.block_on(async move {
        let start = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let op = op.clone();
                tokio::spawn(async move {
                    for i in 0..per {
                        op(t * 7919 + i * 13).await;
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        start.elapsed()
    })
}

fn config() -> Criterion {
    let c = Criterion::default().configure_from_args();
    if std::env::var_os("NAUTILUS_BENCH_QUICK").is_some() {
        c.warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
            .sample_size(10)
    } else {
        c.warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .sample_size(10)
    }
}

fn bench(c: &mut Criterion) {
    let f = fixture();
    for tasks in [1usize, 64] {
        let label = format!("c{tasks}");
        let mut g = c.benchmark_group("redis_get");
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("nautilus", &label), |b| {
            let (reg, keys) = (f.registry.clone(), f.keys.clone());
            b.iter_custom(|iters| {
                let (reg, keys) = (reg.clone(), keys.clone());
                run(&f, iters, tasks, move |i| {
                    let (reg, keys) = (reg.clone(), keys.clone());
                    async move {
                        reg.get_entry(&keys[i % KEYS]).await.unwrap();
                    }
                })
            })
        });
        g.bench_function(BenchmarkId::new("fred", &label), |b| {
            let (pool, keys) = (f.fred.clone(), f.raw_keys.clone());
            b.iter_custom(|iters| {
                let (pool, keys) = (pool.clone(), keys.clone());
                run(&f, iters, tasks, move |i| {
                    let (pool, keys) = (pool.clone(), keys.clone());
                    async move {
                        let _: Option<Bytes> = pool.get(keys[i % KEYS].as_str()).await.unwrap();
                    }
                })
            })
        });
        g.finish();

        let mut g = c.benchmark_group("redis_put_ttl");
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("nautilus", &label), |b| {
            let (reg, keys, value) = (f.registry.clone(), f.keys.clone(), f.value.clone());
            b.iter_custom(|iters| {
                let (reg, keys, value) = (reg.clone(), keys.clone(), value.clone());
                run(&f, iters, tasks, move |i| {
                    let (reg, keys, value) = (reg.clone(), keys.clone(), value.clone());
                    async move {
                        let opts = PutOptions::default().ttl(Duration::from_secs(3600));
                        reg.put_opts(&keys[i % KEYS], value, opts).await.unwrap();
                    }
                })
            })
        });
        g.bench_function(BenchmarkId::new("fred", &label), |b| {
            let (pool, keys, value) = (f.fred.clone(), f.raw_keys.clone(), f.value.clone());
            b.iter_custom(|iters| {
                let (pool, keys, value) = (pool.clone(), keys.clone(), value.clone());
                run(&f, iters, tasks, move |i| {
                    let (pool, keys, value) = (pool.clone(), keys.clone(), value.clone());
                    async move {
                        let _: () = pool
                            .set(
                                keys[i % KEYS].as_str(),
                                value,
                                Some(Expiration::PX(3_600_000)),
                                None,
                                false,
                            )
                            .await
                            .unwrap();
                    }
                })
            })
        });
        g.finish();
    }

    let mut g = c.benchmark_group("redis_get_batch_100");
    g.throughput(Throughput::Elements(100));
    g.bench_function(BenchmarkId::new("nautilus", "c1"), |b| {
        let (reg, keys) = (f.registry.clone(), f.keys.clone());
        b.iter_custom(|iters| {
            let (reg, keys) = (reg.clone(), keys.clone());
            run(&f, iters, 1, move |i| {
                let (reg, keys) = (reg.clone(), keys.clone());
                async move {
                    let start = (i * 100) % (KEYS - 100);
                    let batch: Vec<&str> = keys[start..start + 100]
                        .iter()
                        .map(String::as_str)
                        .collect();
                    let out = reg.get_many(&batch).await;
                    assert!(out.iter().all(Result::is_ok));
                }
            })
        })
    });
    g.bench_function(BenchmarkId::new("fred", "c1"), |b| {
        let (pool, keys) = (f.fred.clone(), f.raw_keys.clone());
        b.iter_custom(|iters| {
            let (pool, keys) = (pool.clone(), keys.clone());
            run(&f, iters, 1, move |i| {
                let (pool, keys) = (pool.clone(), keys.clone());
                async move {
                    let start = (i * 100) % (KEYS - 100);
                    let batch: Vec<&str> = keys[start..start + 100]
                        .iter()
                        .map(String::as_str)
                        .collect();
                    let _: Vec<Option<Bytes>> = pool.mget(batch).await.unwrap();
                }
            })
        })
    });
    g.finish();
    f.rt.block_on(async {
        let _ = f.registry.clear().await;
    });
}

criterion_group! {
    name = redis;
    config = config();
    targets = bench
}
criterion_main!(redis);
