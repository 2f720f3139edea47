//! Read-path counters striped by thread, so two cores reading never fight over one
//! cache line, and a read adds to its count without a locked instruction.
//!
//! Each thread owns one stripe index while it runs (handed back when it exits, for the
//! next thread to take), so a stripe it owns has one writer: a plain load and store
//! adds to it. A locked `fetch_add` is a full barrier on x86: at a million records,
//! where a read waits on memory, it kept the next read's loads from starting early
//! (raw quick_cache's read measured 5% slower with one added, 1% with a load and a
//! store). Threads past [`OWNED`] at once share one more stripe, with `fetch_add`.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

/// Stripes a thread can own.
const OWNED: usize = 32;
/// The stripe threads past [`OWNED`] share.
const SHARED: usize = OWNED;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe {
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct ReadCounters {
    /// A fixed count, so that indexing by [`stripe_index`] (always at most
    /// [`SHARED`]) needs no bounds check on the read path.
    stripes: Box<[Stripe; OWNED + 1]>,
}

impl Default for ReadCounters {
    fn default() -> Self {
        ReadCounters {
            stripes: Box::new(std::array::from_fn(|_| Stripe::default())),
        }
    }
}

/// Indices below [`OWNED`] no running thread owns.
static FREE: Mutex<Vec<usize>> = Mutex::new(Vec::new());
/// The next index never handed out.
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A thread's stripe index, handed back when the thread exits. The hand-back and the
/// next taking go through [`FREE`]'s lock, so the next owner sees every count the
/// last one stored.
struct Owner(usize);

impl Owner {
    fn take() -> Owner {
        if let Some(i) = FREE.lock().pop() {
            return Owner(i);
        }
        // Past OWNED, a thread shares the last stripe; the counter stops there.
        let i = NEXT
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < OWNED).then_some(n + 1)
            })
            .unwrap_or(SHARED);
        Owner(i)
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        if self.0 < OWNED {
            // Anything this thread still reads while it exits counts on the shared
            // stripe: the next owner may already be adding to this one.
            let _ = INDEX.try_with(|c| c.set(SHARED));
            FREE.lock().push(self.0);
        }
    }
}

thread_local! {
    static OWNER: Owner = Owner::take();
    /// The owned index, read without the destructor's bookkeeping.
    static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's stripe: its own, or [`SHARED`] (also while the thread exits).
#[inline]
fn stripe_index() -> usize {
    let i = INDEX.with(Cell::get);
    if i <= SHARED {
        return i;
    }
    first_index()
}

#[cold]
fn first_index() -> usize {
    match OWNER.try_with(|o| o.0) {
        Ok(i) => {
            let _ = INDEX.try_with(|c| c.set(i));
            i
        }
        // The thread is exiting and its owner is gone (maybe handed on already):
        // the shared stripe, without remembering it.
        Err(_) => SHARED,
    }
}

/// Adds `n` to `counter`: a load and a store on a stripe this thread owns.
#[inline]
fn bump(counter: &AtomicU64, index: usize, n: u64) {
    if index < OWNED {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    } else {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

impl ReadCounters {
    #[inline]
    pub(crate) fn hit(&self) {
        let i = stripe_index();
        bump(&self.stripes[i].hits, i, 1);
    }

    #[inline]
    pub(crate) fn miss(&self) {
        let i = stripe_index();
        bump(&self.stripes[i].misses, i, 1);
    }

    /// Counts a batch's reads with one update per counter.
    #[inline]
    pub(crate) fn add(&self, hits: u64, misses: u64) {
        let i = stripe_index();
        let stripe = &self.stripes[i];
        if hits > 0 {
            bump(&stripe.hits, i, hits);
        }
        if misses > 0 {
            bump(&stripe.misses, i, misses);
        }
    }

    pub(crate) fn totals(&self) -> (u64, u64) {
        self.stripes.iter().fold((0, 0), |(h, m), s| {
            (
                h.wrapping_add(s.hits.load(Ordering::Relaxed)),
                m.wrapping_add(s.misses.load(Ordering::Relaxed)),
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

    #[test]
    fn more_threads_than_stripes_lose_no_count() {
        let c = ReadCounters::default();
        let threads = 2 * OWNED + 3;
        let start = std::sync::Barrier::new(threads);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    // Every thread holds its stripe at once.
                    start.wait();
                    for _ in 0..2000 {
                        c.hit();
                    }
                    c.add(0, 7);
                });
            }
        });
        assert_eq!(c.totals(), (threads as u64 * 2000, threads as u64 * 7));
    }

    #[test]
    fn a_stripe_handed_on_by_an_exiting_thread_keeps_its_counts() {
        let c = ReadCounters::default();
        // Threads one after the other: each takes a stripe an earlier one handed back.
        for _ in 0..3 * OWNED {
            std::thread::scope(|s| {
                s.spawn(|| {
                    for _ in 0..100 {
                        c.miss();
                    }
                });
            });
        }
        assert_eq!(c.totals(), (0, 3 * OWNED as u64 * 100));
    }
}
