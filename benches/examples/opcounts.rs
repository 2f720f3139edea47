//! The work one operation does, counted by callgrind: instructions, loads, stores and
//! simulated cache misses per operation, for `cargo xtask bench --counts`.
//!
//! Timings on this VM move up to 3x from round to round and day to day; these counts
//! do not. Each operation runs `iters` times inside a function of its own whose name
//! starts with `measured_`, and callgrind counts inside those functions only
//! (`--toggle-collect`), so filling the registry costs nothing in the counts. The
//! counts of one build are the same on every run, up to the few probes that
//! quick_cache's randomly seeded default hasher adds or saves on the raw side.
//!
//! Usage: `opcounts <op> <records> <iters>`; `opcounts --list` prints the operations.
//! The keys and 64-byte values are the memory bench's.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use nautilus_benches::{indices, key, ready};
use nautilus_core::{DynRegistry, PutItem, PutOptions, RegistryExt};
use nautilus_memory::MemoryRegistry;

type Qc = quick_cache::sync::Cache<String, Bytes>;
type Moka = moka::sync::Cache<String, Bytes>;

/// The operations, each with what it is counted against (its baseline) and what one
/// operation is: `(name, baseline, unit)`.
const OPS: [(&str, &str, &str); 13] = [
    ("quick_cache-get", "", "get"),
    ("moka-get", "", "get"),
    ("nautilus-get_now", "quick_cache-get", "get"),
    ("nautilus-dyn-get", "quick_cache-get", "get"),
    ("quick_cache-insert", "", "put"),
    ("nautilus-put_now", "quick_cache-insert", "put"),
    ("nautilus-dyn-put", "quick_cache-insert", "put"),
    ("nautilus-dyn-put_ttl", "nautilus-dyn-put", "put"),
    ("nautilus-dyn-put_opts", "nautilus-dyn-put", "put"),
    ("nautilus-dyn-get_many", "nautilus-get_now", "key"),
    ("nautilus-dyn-put_many", "nautilus-put_now", "key"),
    ("quick_cache-iter", "", "record"),
    ("nautilus-dyn-scan", "quick_cache-iter", "record"),
];

/// Keys in a batch.
const BATCH: usize = 100;
/// Distinct keys the single-key operations cycle through.
const SAMPLE: usize = 1 << 16;

/// A value as the memory bench stores it: a reference to one the caller also held, so
/// it is already shared and a read's clone only adds to its count (a `Bytes` made
/// from a `Vec` and never cloned allocates on its first clone). The clone is the
/// point, so clippy's redundant-clone lint is off here.
#[allow(clippy::redundant_clone)]
fn value_of(i: u64) -> Bytes {
    let held = Bytes::from(vec![(i % 251) as u8; 64]);
    held.clone()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--list") {
        for (op, baseline, unit) in OPS {
            println!("{op}\t{baseline}\t{unit}");
        }
        return;
    }
    let [op, n, iters] = &args[..] else {
        eprintln!("usage: opcounts <op> <records> <iters> | opcounts --list");
        std::process::exit(2);
    };
    if !OPS.iter().any(|(name, ..)| name == op) {
        eprintln!("no operation {op:?}; `opcounts --list` prints them");
        std::process::exit(2);
    }
    let n: u64 = n.parse().expect("records: a number");
    let iters: usize = iters.parse().expect("iters: a number");
    let keys: Vec<String> = indices(n, SAMPLE, 1).into_iter().map(key).collect();
    let units = match op.as_str() {
        "quick_cache-get" | "quick_cache-insert" | "quick_cache-iter" => {
            let qc = Qc::new((n * 2) as usize);
            for i in 0..n {
                qc.insert(key(i), value_of(i));
            }
            match op.as_str() {
                "quick_cache-get" => measured_qc_get(&qc, &keys, iters),
                "quick_cache-insert" => measured_qc_insert(&qc, &keys, iters),
                _ => measured_qc_iter(&qc, iters),
            }
        }
        "moka-get" => {
            let moka = Moka::new(n * 2);
            for i in 0..n {
                moka.insert(key(i), value_of(i));
            }
            moka.run_pending_tasks();
            measured_moka_get(&moka, &keys, iters)
        }
        nautilus => {
            let reg = MemoryRegistry::builder()
                .max_records(n * 2)
                .build()
                .unwrap();
            for i in 0..n {
                reg.put_now(&key(i), value_of(i), PutOptions::default())
                    .unwrap();
            }
            let dyn_reg: DynRegistry = Arc::new(reg.clone());
            let batches: Vec<Vec<&str>> = keys
                .chunks(BATCH)
                .map(|c| c.iter().map(String::as_str).collect())
                .collect();
            match nautilus {
                "nautilus-get_now" => measured_get_now(&reg, &keys, iters),
                "nautilus-dyn-get" => measured_dyn_get(&dyn_reg, &keys, iters),
                "nautilus-put_now" => measured_put_now(&reg, &keys, iters),
                "nautilus-dyn-put" => measured_dyn_put(&dyn_reg, &keys, iters, None),
                "nautilus-dyn-put_ttl" => measured_dyn_put(
                    &dyn_reg,
                    &keys,
                    iters,
                    Some(std::time::Duration::from_secs(3600)),
                ),
                "nautilus-dyn-put_opts" => measured_dyn_put_opts(&dyn_reg, &keys, iters),
                "nautilus-dyn-get_many" => measured_dyn_get_many(&dyn_reg, &batches, iters),
                "nautilus-dyn-put_many" => measured_dyn_put_many(&dyn_reg, &batches, iters),
                _ => measured_dyn_scan(&dyn_reg, iters),
            }
        }
    };
    // The driver divides the counts by this.
    println!("units: {units}");
}

#[inline(never)]
fn measured_qc_get(qc: &Qc, keys: &[String], iters: usize) -> usize {
    for i in 0..iters {
        black_box(qc.get(keys[i % SAMPLE].as_str()));
    }
    iters
}

#[inline(never)]
fn measured_moka_get(moka: &Moka, keys: &[String], iters: usize) -> usize {
    for i in 0..iters {
        black_box(moka.get(keys[i % SAMPLE].as_str()));
    }
    iters
}

#[inline(never)]
fn measured_qc_insert(qc: &Qc, keys: &[String], iters: usize) -> usize {
    let value = value_of(7);
    for i in 0..iters {
        qc.insert(keys[i % SAMPLE].clone(), value.clone());
    }
    iters
}

#[inline(never)]
fn measured_qc_iter(qc: &Qc, passes: usize) -> usize {
    let mut records = 0;
    for _ in 0..passes {
        for item in qc.iter() {
            black_box(&item);
            records += 1;
        }
    }
    records
}

#[inline(never)]
fn measured_get_now(reg: &MemoryRegistry, keys: &[String], iters: usize) -> usize {
    for i in 0..iters {
        black_box(reg.get_now(&keys[i % SAMPLE]).unwrap());
    }
    iters
}

#[inline(never)]
fn measured_dyn_get(reg: &DynRegistry, keys: &[String], iters: usize) -> usize {
    ready(async {
        for i in 0..iters {
            black_box(reg.get(&keys[i % SAMPLE]).await.unwrap());
        }
    });
    iters
}

#[inline(never)]
fn measured_put_now(reg: &MemoryRegistry, keys: &[String], iters: usize) -> usize {
    let value = value_of(7);
    for i in 0..iters {
        black_box(
            reg.put_now(&keys[i % SAMPLE], value.clone(), PutOptions::default())
                .unwrap(),
        );
    }
    iters
}

/// The extension trait's puts (`put`, `put_with_ttl`): unboxed futures, answered on
/// their first poll.
#[inline(never)]
fn measured_dyn_put(
    reg: &DynRegistry,
    keys: &[String],
    iters: usize,
    ttl: Option<std::time::Duration>,
) -> usize {
    let value = value_of(7);
    ready(async {
        for i in 0..iters {
            let key = &keys[i % SAMPLE];
            let version = match ttl {
                Some(ttl) => reg.put_with_ttl(key, value.clone(), ttl).await,
                None => reg.put(key, value.clone()).await,
            };
            black_box(version.unwrap());
        }
    });
    iters
}

/// The trait's own `put_opts`: its future is boxed, as every object-safe async
/// method's is.
#[inline(never)]
fn measured_dyn_put_opts(reg: &DynRegistry, keys: &[String], iters: usize) -> usize {
    let value = value_of(7);
    ready(async {
        for i in 0..iters {
            black_box(
                reg.put_opts(&keys[i % SAMPLE], value.clone(), PutOptions::default())
                    .await
                    .unwrap(),
            );
        }
    });
    iters
}

#[inline(never)]
fn measured_dyn_get_many(reg: &DynRegistry, batches: &[Vec<&str>], iters: usize) -> usize {
    let n = iters.div_ceil(BATCH);
    ready(async {
        for i in 0..n {
            black_box(reg.get_many(&batches[i % batches.len()]).await);
        }
    });
    n * BATCH
}

#[inline(never)]
fn measured_dyn_put_many(reg: &DynRegistry, batches: &[Vec<&str>], iters: usize) -> usize {
    let n = iters.div_ceil(BATCH);
    let value = value_of(7);
    ready(async {
        for i in 0..n {
            let items: Vec<PutItem> = batches[i % batches.len()]
                .iter()
                .map(|k| PutItem::new(*k, value.clone()))
                .collect();
            black_box(reg.put_many(items).await);
        }
    });
    n * BATCH
}

#[inline(never)]
fn measured_dyn_scan(reg: &DynRegistry, passes: usize) -> usize {
    ready(async {
        let mut records = 0;
        for _ in 0..passes {
            let mut scanner = reg.scanner("").page_size(256);
            while let Some(item) = scanner.next().await.unwrap() {
                black_box(&item);
                records += 1;
            }
        }
        records
    })
}
