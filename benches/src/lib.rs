//! Criterion benchmarks of Nautilus; see `benches/`. Run with `cargo xtask bench`.
//!
//! What the benches share: criterion's configuration and the quick mode
//! (`NAUTILUS_BENCH_QUICK=1`), timed runs of an operation over threads or tokio tasks,
//! and the interleaved comparison: short rounds of each side back to back, rotating
//! which goes first, summarised per scenario by the median of the per-round ratios and
//! written where `cargo xtask bench` reads it. On a shared 2-core VM, where throughput
//! drifts by 2x over minutes, the interleaved ratio is the one that compares like with
//! like.

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::Criterion;

/// The answer of a future that never waits (an in-process registry's), polled once
/// on the spot: the awaited path without a runtime in the measurement.
///
/// Inlined, as an `.await` in the caller's own future is: called out of line, the
/// future is moved into this function's frame and its answer out of it, and at a
/// million records those stores alone took an awaited memory get from 1.2x raw
/// quick_cache's time to 2.3x (see docs/benchmarks.md on stores per read).
///
/// # Panics
/// If the future is not ready at once: the bench measured the wrong thing.
#[inline(always)]
pub fn ready<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let waker = std::task::Waker::noop();
    match f.as_mut().poll(&mut std::task::Context::from_waker(waker)) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("an in-process registry's future had to wait"),
    }
}

/// The key of record `i`, as every bench names its records.
#[must_use]
pub fn key(i: u64) -> String {
    format!("user:{i:010}")
}

/// `count` indices below `n` in a fixed pseudo-random order (splitmix64 from `seed`),
/// the same in every run and every process: the keys a bench samples.
#[must_use]
pub fn indices(n: u64, count: usize, seed: u64) -> Vec<u64> {
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

/// Whether this is a quick run (`NAUTILUS_BENCH_QUICK` set): fewer, shorter samples.
#[must_use]
pub fn quick() -> bool {
    std::env::var_os("NAUTILUS_BENCH_QUICK").is_some()
}

/// How long criterion warms up and measures each benchmark, and how many samples.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Warm-up time.
    pub warm_up: Duration,
    /// Measurement time.
    pub measurement: Duration,
    /// Samples.
    pub samples: usize,
}

/// Criterion configured from the command line, with `full` timing, or `quick`'s in a
/// quick run.
#[must_use]
pub fn criterion(full: Timing, quick: Timing) -> Criterion {
    let t = if self::quick() { quick } else { full };
    Criterion::default()
        .configure_from_args()
        .warm_up_time(t.warm_up)
        .measurement_time(t.measurement)
        .sample_size(t.samples)
}

/// Criterion timed for in-process operations (a fraction of a microsecond each): 1 s
/// of warm-up, 2 s of 20 samples; 0.3 s, 0.7 s and 10 in a quick run.
#[must_use]
pub fn in_process() -> Criterion {
    criterion(
        Timing {
            warm_up: Duration::from_secs(1),
            measurement: Duration::from_secs(2),
            samples: 20,
        },
        Timing {
            warm_up: Duration::from_millis(300),
            measurement: Duration::from_millis(700),
            samples: 10,
        },
    )
}

/// Rounds of an interleaved comparison: 21, or 5 in a quick run.
#[must_use]
pub fn rounds() -> usize {
    if quick() { 5 } else { 21 }
}

/// Runs `op(i)` `iters` times split over `threads` threads (thread `t` passes
/// `t * 7919 + i`); the wall time.
pub fn on_threads<F: Fn(usize) + Sync>(iters: u64, threads: usize, op: F) -> Duration {
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

/// Runs `iters` operations split over `threads` threads, each thread's share as one
/// future, `run(base, count)` (thread `t` passes `base = t * 7919`), polled once by
/// [`ready`]: an application's reads, `.await`s in a loop of an async fn its executor
/// polls, without the executor in the measurement. The futures must not wait.
///
/// # Panics
/// If a future `run` makes has to wait.
pub fn awaiting_on_threads<F, Fut>(iters: u64, threads: usize, run: F) -> Duration
where
    F: Fn(usize, usize) -> Fut + Sync,
    Fut: Future<Output = ()>,
{
    let per = (iters as usize).div_ceil(threads);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let run = &run;
            s.spawn(move || ready(run(t * 7919, per)));
        }
    });
    start.elapsed()
}

/// Runs `op(i)` `iters` times split over `tasks` tokio tasks on `rt` (task `t` passes
/// `t * 7919 + i * 13`); the wall time, so throughput is the aggregate.
pub fn on_tasks<F, Fut>(rt: &tokio::runtime::Runtime, iters: u64, tasks: usize, op: F) -> Duration
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + Send,
{
    let per = (iters as usize).div_ceil(tasks);
    rt.block_on(async move {
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
            h.await.expect("a benchmark task panicked");
        }
        start.elapsed()
    })
}

/// `rounds` rounds of `N` sides, each timed by `time(side)`, rotating which side goes
/// first (in round `r`, side `(r + k) % N` goes `k`-th): per round, each side's time in
/// seconds.
pub fn interleave<const N: usize>(
    rounds: usize,
    mut time: impl FnMut(usize) -> Duration,
) -> Vec<[f64; N]> {
    (0..rounds)
        .map(|round| {
            let mut secs = [0.0; N];
            for k in 0..N {
                let side = (round + k) % N;
                secs[side] = time(side).as_secs_f64();
            }
            secs
        })
        .collect()
}

/// The median, least and greatest of per-round ratios.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// The median (the upper one of an even count).
    pub median: f64,
    /// The least.
    pub min: f64,
    /// The greatest.
    pub max: f64,
    /// How many rounds.
    pub rounds: usize,
}

impl Spread {
    /// The spread of `ratios` (at least one).
    #[must_use]
    pub fn of(mut ratios: Vec<f64>) -> Self {
        ratios.sort_by(f64::total_cmp);
        Spread {
            median: ratios[ratios.len() / 2],
            min: ratios[0],
            max: ratios[ratios.len() - 1],
            rounds: ratios.len(),
        }
    }

    /// As `cargo xtask bench` reads it.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "median": self.median,
            "min": self.min,
            "max": self.max,
            "rounds": self.rounds,
        })
    }
}

/// Whether the bench was asked for its measurements (not `--list`, not criterion's
/// `--test` mode), and so should run its interleaved comparison too.
#[must_use]
pub fn measuring() -> bool {
    !std::env::args().any(|a| a == "--list" || a == "--test")
}

/// Writes an interleaved comparison to `target/criterion/{name}-interleaved.json`,
/// where `cargo xtask bench` reads it.
pub fn write_interleaved(name: &str, results: &serde_json::Value) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/criterion");
    let _ = std::fs::create_dir_all(&dir);
    std::fs::write(
        dir.join(format!("{name}-interleaved.json")),
        results.to_string(),
    )
    .expect("writing the interleaved results under target/criterion");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_take_turns_going_first_and_spreads_sum_them_up() {
        let mut order = Vec::new();
        let times = interleave::<3>(3, |side| {
            order.push(side);
            Duration::from_secs(side as u64 + 1)
        });
        assert_eq!(order, [0, 1, 2, 1, 2, 0, 2, 0, 1]);
        assert!(times.iter().all(|t| *t == [1.0, 2.0, 3.0]));
        let s = Spread::of(vec![3.0, 1.0, 2.0, 5.0]);
        assert_eq!((s.median, s.min, s.max, s.rounds), (3.0, 1.0, 5.0, 4));
    }
}
