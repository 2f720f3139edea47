//! Read-path counters striped by thread, so two cores reading never fight over one
//! cache line.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const STRIPES: usize = 32;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe {
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct ReadCounters {
    /// A fixed count, so that indexing by `stripe_index() % STRIPES` needs no bounds
    /// check on the read path.
    stripes: Box<[Stripe; STRIPES]>,
}

impl Default for ReadCounters {
    fn default() -> Self {
        ReadCounters {
            stripes: Box::new(std::array::from_fn(|_| Stripe::default())),
        }
    }
}

#[inline]
fn stripe_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    INDEX.with(|i| {
        let mut v = i.get();
        if v == usize::MAX {
            v = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
            i.set(v);
        }
        v
    })
}

impl ReadCounters {
    #[inline]
    pub(crate) fn hit(&self) {
        self.stripes[stripe_index()]
            .hits
            .fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn miss(&self) {
        self.stripes[stripe_index()]
            .misses
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a batch's reads with one update per counter.
    #[inline]
    pub(crate) fn add(&self, hits: u64, misses: u64) {
        let stripe = &self.stripes[stripe_index()];
        if hits > 0 {
            stripe.hits.fetch_add(hits, Ordering::Relaxed);
        }
        if misses > 0 {
            stripe.misses.fetch_add(misses, Ordering::Relaxed);
        }
    }

    pub(crate) fn totals(&self) -> (u64, u64) {
        self.stripes.iter().fold((0, 0), |(h, m), s| {
            (
                h + s.hits.load(Ordering::Relaxed),
                m + s.misses.load(Ordering::Relaxed),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_every_thread_add_up() {
        let c = ReadCounters::default();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        c.hit();
                        c.miss();
                    }
                    c.add(10, 0);
                });
            }
        });
        assert_eq!(c.totals(), (4 * 1010, 4000));
    }
}
