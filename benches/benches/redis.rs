//! The Redis registry side by side with raw fred issuing the equivalent commands
//! against the same server, in one process: GET vs `get_entry`, SET PX vs a versioned
//! put with TTL, MGET vs `get_many`. Each criterion iteration is one operation (one
//! batch for batches); concurrent scenarios split iterations over tasks and report
//! wall time, so throughput is the aggregate.
//!
//! After criterion, every scenario runs again interleaved: short rounds of nautilus and
//! fred back to back, alternating which goes first, and the median of the per-round
//! ratios is written to `target/criterion/redis-interleaved.json`. On a shared 2-core
//! VM, where the server competes with the client and throughput drifts by 2x over
//! minutes, the interleaved ratio is the one that compares like with like.

#![allow(missing_docs, clippy::unwrap_used)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
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
    Fut: Future<Output = ()> + Send,
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

type Op = Arc<dyn Fn(usize) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// One scenario: a criterion group and parameter, and the two sides' single operation.
struct Scenario {
    group: &'static str,
    tasks: usize,
    elements: u64,
    nautilus: Op,
    fred: Op,
}

impl Scenario {
    fn label(&self) -> String {
        format!("c{}", self.tasks)
    }
}

fn op<F, Fut>(f: F) -> Op
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move |i| Box::pin(f(i)))
}

fn scenarios(f: &Fixture) -> Vec<Scenario> {
    let mut out = Vec::new();
    for tasks in [1usize, 64] {
        let (reg, keys) = (f.registry.clone(), f.keys.clone());
        let (pool, raw) = (f.fred.clone(), f.raw_keys.clone());
        out.push(Scenario {
            group: "redis_get",
            tasks,
            elements: 1,
            nautilus: op(move |i| {
                let (reg, keys) = (reg.clone(), keys.clone());
                async move {
                    reg.get_entry(&keys[i % KEYS]).await.unwrap();
                }
            }),
            fred: op(move |i| {
                let (pool, raw) = (pool.clone(), raw.clone());
                async move {
                    let _: Option<Bytes> = pool.get(raw[i % KEYS].as_str()).await.unwrap();
                }
            }),
        });
        let (reg, keys, value) = (f.registry.clone(), f.keys.clone(), f.value.clone());
        let (pool, raw, raw_value) = (f.fred.clone(), f.raw_keys.clone(), f.value.clone());
        out.push(Scenario {
            group: "redis_put_ttl",
            tasks,
            elements: 1,
            nautilus: op(move |i| {
                let (reg, keys, value) = (reg.clone(), keys.clone(), value.clone());
                async move {
                    let opts = PutOptions::default().ttl(Duration::from_secs(3600));
                    reg.put_opts(&keys[i % KEYS], value, opts).await.unwrap();
                }
            }),
            fred: op(move |i| {
                let (pool, raw, value) = (pool.clone(), raw.clone(), raw_value.clone());
                async move {
                    let px = Some(Expiration::PX(3_600_000));
                    let _: () = pool
                        .set(raw[i % KEYS].as_str(), value, px, None, false)
                        .await
                        .unwrap();
                }
            }),
        });
    }
    let (reg, keys) = (f.registry.clone(), f.keys.clone());
    let (pool, raw) = (f.fred.clone(), f.raw_keys.clone());
    out.push(Scenario {
        group: "redis_get_batch_100",
        tasks: 1,
        elements: 100,
        nautilus: op(move |i| {
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
        }),
        fred: op(move |i| {
            let (pool, raw) = (pool.clone(), raw.clone());
            async move {
                let start = (i * 100) % (KEYS - 100);
                let batch: Vec<&str> = raw[start..start + 100].iter().map(String::as_str).collect();
                let _: Vec<Option<Bytes>> = pool.mget(batch).await.unwrap();
            }
        }),
    });
    out
}

fn bench(c: &mut Criterion, f: &Fixture, scenarios: &[Scenario]) {
    for s in scenarios {
        let mut g = c.benchmark_group(s.group);
        g.throughput(Throughput::Elements(s.elements));
        for (name, side) in [("nautilus", &s.nautilus), ("fred", &s.fred)] {
            g.bench_function(BenchmarkId::new(name, s.label()), |b| {
                b.iter_custom(|iters| {
                    let side = side.clone();
                    run(f, iters, s.tasks, move |i| side(i))
                })
            });
        }
        g.finish();
    }
}

/// Rounds of nautilus and fred back to back, alternating which goes first; the median
/// of the per-round throughput ratios (nautilus / fred) per scenario.
fn interleaved(f: &Fixture, scenarios: &[Scenario]) -> serde_json::Value {
    let quick = std::env::var_os("NAUTILUS_BENCH_QUICK").is_some();
    let rounds = if quick { 5 } else { 21 };
    let mut out = serde_json::Map::new();
    for s in scenarios {
        // About 100-300 ms per side per round on this machine.
        let ops = match (s.tasks, s.elements) {
            (1, 1) => 2_000,
            (1, _) => 200,
            _ => 20_000,
        };
        let mut ratios = Vec::with_capacity(rounds);
        for round in 0..rounds {
            let time = |side: &Op| {
                let side = side.clone();
                run(f, ops, s.tasks, move |i| side(i))
            };
            let (n, fr) = if round % 2 == 0 {
                let n = time(&s.nautilus);
                (n, time(&s.fred))
            } else {
                let fr = time(&s.fred);
                (time(&s.nautilus), fr)
            };
            ratios.push(fr.as_secs_f64() / n.as_secs_f64());
        }
        ratios.sort_by(f64::total_cmp);
        let median = ratios[ratios.len() / 2];
        println!(
            "{}/{}: nautilus / fred, median of {rounds} interleaved rounds: {median:.2}x (range {:.2}-{:.2})",
            s.group,
            s.label(),
            ratios[0],
            ratios[ratios.len() - 1]
        );
        out.insert(
            format!("{}/{}", s.group, s.label()),
            serde_json::json!({ "median": median, "min": ratios[0], "max": ratios[ratios.len() - 1], "rounds": rounds }),
        );
    }
    serde_json::Value::Object(out)
}

fn main() {
    let f = fixture();
    let scenarios = scenarios(&f);
    let mut c = config();
    bench(&mut c, &f, &scenarios);
    c.final_summary();
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench -- --list` and criterion's test mode run nothing else.
    if !args.iter().any(|a| a == "--list" || a == "--test") {
        let ratios = interleaved(&f, &scenarios);
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion");
        let _ = std::fs::create_dir_all(&dir);
        std::fs::write(dir.join("redis-interleaved.json"), ratios.to_string()).unwrap();
    }
    f.rt.block_on(async {
        let _ = f.registry.clear().await;
    });
}
