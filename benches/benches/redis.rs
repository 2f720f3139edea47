//! The Redis registry side by side with raw fred issuing the equivalent commands
//! against the same server, in one process: GET vs `get_entry`, SET PX vs a versioned
//! put with TTL, MGET vs `get_many`. Each criterion iteration is one operation (one
//! batch for batches); concurrent scenarios split iterations over tasks and report
//! wall time, so throughput is the aggregate.
//!
//! After criterion, every scenario runs again interleaved (see the crate's helpers):
//! short rounds of nautilus and fred back to back, alternating which goes first, and
//! the median of the per-round ratios is written to
//! `target/criterion/redis-interleaved.json`.

#![allow(missing_docs, clippy::unwrap_used)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use fred::prelude::{ClientLike, Expiration, KeysInterface, Pool};
use nautilus_benches::{Spread, Timing, interleave};
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
    nautilus_benches::on_tasks(&f.rt, iters, tasks, op)
}

fn config() -> Criterion {
    nautilus_benches::criterion(
        Timing {
            warm_up: Duration::from_secs(1),
            measurement: Duration::from_secs(3),
            samples: 10,
        },
        Timing {
            warm_up: Duration::from_millis(300),
            measurement: Duration::from_secs(1),
            samples: 10,
        },
    )
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
    let rounds = nautilus_benches::rounds();
    let mut out = serde_json::Map::new();
    for s in scenarios {
        // About 100-300 ms per side per round on this machine.
        let ops = match (s.tasks, s.elements) {
            (1, 1) => 2_000,
            (1, _) => 200,
            _ => 20_000,
        };
        let sides = [&s.nautilus, &s.fred];
        let times = interleave::<2>(rounds, |side| {
            let side = sides[side].clone();
            run(f, ops, s.tasks, move |i| side(i))
        });
        let spread = Spread::of(times.iter().map(|[n, fr]| fr / n).collect());
        println!(
            "{}/{}: nautilus / fred, median of {rounds} interleaved rounds: {:.2}x (range {:.2}-{:.2})",
            s.group,
            s.label(),
            spread.median,
            spread.min,
            spread.max
        );
        out.insert(format!("{}/{}", s.group, s.label()), spread.to_json());
    }
    serde_json::Value::Object(out)
}

fn main() {
    let f = fixture();
    let scenarios = scenarios(&f);
    let mut c = config();
    bench(&mut c, &f, &scenarios);
    c.final_summary();
    if nautilus_benches::measuring() {
        nautilus_benches::write_interleaved("redis", &interleaved(&f, &scenarios));
    }
    f.rt.block_on(async {
        let _ = f.registry.clear().await;
    });
}
