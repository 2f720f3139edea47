//! The interleaved cells of the memory bench: short rounds of every side back to back,
//! each size in a fresh process of the bench, and the ratios with their targets and
//! verdicts.

use super::*;

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

/// A registry of `n` records with a TTL on a manual clock, for puts whose new expiry
/// lands in another bucket of the expiry index than the old one: the clock moves
/// 1.1 s before each pass over the sampled keys, as when each key is rewritten a
/// second or more after its last write (a session refreshed, a cache entry filled
/// again). The `put_ttl` side rewrites each key several times a second, so its
/// expiries stay in their buckets. Built after the get cells ran, so their heap is
/// as before.
struct MovingTtl {
    clock: Arc<ManualClock>,
    reg: DynRegistry,
}

impl MovingTtl {
    fn new(n: u64, value: &Bytes, ttl: PutOptions) -> Self {
        let clock = Arc::new(ManualClock::starting_now());
        let reg = MemoryRegistry::builder()
            .max_records(n * 2)
            .clock(clock.clone())
            .build()
            .unwrap();
        for i in 0..n {
            reg.put_now(&key(i), value.clone(), ttl).unwrap();
        }
        MovingTtl {
            clock,
            reg: Arc::new(reg),
        }
    }
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
pub(crate) fn interleaved() -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for n in sizes() {
        out.extend(child_cells(n, false));
        let label = format!("get_hit/{}", Fixture::label_of(n, 1));
        let per_process: Vec<f64> = (0..processes())
            .filter_map(|_| {
                child_cells(n, true)
                    .get(&label)?
                    .get("quick_cache_over_nautilus")?
                    .get("median")?
                    .as_f64()
            })
            .collect();
        if !per_process.is_empty() {
            let mut cell = serde_json::Map::new();
            cell.insert(
                "quick_cache_over_nautilus".into(),
                spread(per_process, Target::AtMost(1.25)),
            );
            let name = format!("get_hit_by_process/{}", Fixture::label_of(n, 1));
            println!("{name}: {}", serde_json::Value::Object(cell.clone()));
            out.insert(name, serde_json::Value::Object(cell));
        }
    }
    serde_json::Value::Object(out)
}

/// How many fresh processes measure the one-thread get cell again: 7, or 3 in a
/// quick run. Each process draws its own address-space layout, and at 1M records
/// raw quick_cache's reads alone moved from about 260 ns to about 390 ns between
/// two draws: one process's ratio is one draw, the median over processes the
/// estimate.
fn processes() -> usize {
    if quick() { 3 } else { 7 }
}

/// The cells a fresh process of this bench measures at `n` records: all of them, or
/// (`get_only`) the one-thread get cell alone.
fn child_cells(n: u64, get_only: bool) -> serde_json::Map<String, serde_json::Value> {
    let exe = std::env::current_exe().expect("the bench's own executable");
    let mut cmd = std::process::Command::new(exe);
    cmd.env(SIZE_VAR, n.to_string());
    if get_only {
        cmd.env(GET_ONLY_VAR, "1");
    }
    let child = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("running the interleaved cells in a fresh process");
    assert!(
        child.status.success(),
        "the interleaved cells at {n} failed"
    );
    let mut out = serde_json::Map::new();
    for line in String::from_utf8_lossy(&child.stdout).lines() {
        match line.strip_prefix(RESULT) {
            Some(json) => {
                let cells: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(json).expect("the cells a child wrote");
                out.extend(cells);
            }
            None if get_only => {}
            None => println!("{line}"),
        }
    }
    out
}

/// Set in a child that measures the one-thread get cell alone.
const GET_ONLY_VAR: &str = "NAUTILUS_BENCH_GET_ONLY";

/// Set in the child that measures the interleaved cells at one size.
pub(crate) const SIZE_VAR: &str = "NAUTILUS_BENCH_INTERLEAVED_SIZE";
/// How the child's result line starts.
pub(crate) const RESULT: &str = "interleaved-result: ";

/// The interleaved cells at `n` records, in this (fresh) process.
pub(crate) fn interleaved_at(n: u64) -> serde_json::Value {
    let get_only = std::env::var_os(GET_ONLY_VAR).is_some();
    // A get-only process is one of several whose medians are taken: fewer rounds each.
    let rounds = if quick() {
        5
    } else if get_only {
        9
    } else {
        21
    };
    let mask = SAMPLE - 1;
    let mut out = serde_json::Map::new();
    let mut put = |name: String, v: serde_json::Value| {
        println!("{name}: {v}");
        out.insert(name, v);
    };
    {
        let f = Fixture::new(n);
        let ttl = PutOptions::default().ttl(Duration::from_secs(3600));
        let thread_counts: &[usize] = if get_only { &[1] } else { &[1, 2] };
        for &threads in thread_counts {
            let label = f.label(threads);
            let get: [&dyn Fn() -> Duration; 7] = [
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
                &|| {
                    let f = &f;
                    awaiting_on_threads(400_000, threads, move |base, count| async move {
                        for i in base..base + count {
                            black_box(f.dyn_reg.get(&f.keys[i & mask]).await.unwrap());
                        }
                    })
                },
                // The floor: raw quick_cache behind a trait object, as side 0 and as
                // side 4 call the registry.
                &|| {
                    on_threads(400_000, threads, |i| {
                        black_box(ready(std::future::ready(f.dyn_qc.get(&f.keys[i & mask]))));
                    })
                },
                &|| {
                    let f = &f;
                    awaiting_on_threads(400_000, threads, move |base, count| async move {
                        for i in base..base + count {
                            black_box(std::future::ready(f.dyn_qc.get(&f.keys[i & mask])).await);
                        }
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
                        ("quick_cache_over_awaited_in_fn", 4, 1, Target::None),
                        ("floor_over_quick_cache", 5, 1, Target::None),
                        ("nautilus_over_floor", 0, 5, Target::None),
                        ("floor_in_fn_over_quick_cache", 6, 1, Target::None),
                        ("awaited_in_fn_over_floor_in_fn", 4, 6, Target::None),
                    ],
                ),
            );
            if get_only {
                continue;
            }
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
        if get_only {
            return serde_json::Value::Object(out);
        }
        let label = f.label(1);
        let moving = MovingTtl::new(f.n, &f.value, ttl);
        let ttl_puts: [&dyn Fn() -> Duration; 4] = [
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
            &|| {
                on_threads(200_000, 1, |i| {
                    if i & mask == 0 {
                        moving.clock.advance(Duration::from_millis(1100));
                    }
                    black_box(
                        ready(moving.reg.put_opts(&f.keys[i & mask], f.value.clone(), ttl))
                            .unwrap(),
                    );
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
                    ("moving_ttl_over_plain", 3, 1, Target::AtMost(1.3)),
                    ("nautilus_moving_over_moka_ttl", 2, 3, Target::AtLeast(2.0)),
                ],
            ),
        );
        drop(moving);
        let batches = f.batches();
        let nb = batches.len();
        let gets: [&dyn Fn() -> Duration; 2] = [
            &|| {
                on_threads(16_000, 1, |i| {
                    black_box(ready(f.dyn_reg.get_many(&batches[i % nb])));
                })
            },
            &|| {
                on_threads(16_000, 1, |i| {
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
                on_threads(8_000, 1, |i| {
                    black_box(ready(f.dyn_reg.put_many(f.put_items(&batches[i % nb]))));
                })
            },
            &|| {
                on_threads(8_000, 1, |i| {
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
