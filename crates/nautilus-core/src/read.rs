//! The future behind [`RegistryExt`](crate::RegistryExt)'s reads: it answers from
//! [`Registry::get_ready`] (or [`Registry::get_value_ready`] for a value) on its first
//! poll and boxes nothing unless the backend has to wait.
//!
//! Written out by hand rather than as an `async` block: an in-process read is a few
//! tens of nanoseconds, and the generated state machine (a resume state, a slot for
//! the boxed future that is never created, the answer moved through both) measured
//! up to 2x that when called through a closure.
//!
//! At a million records a read waits on memory, and the processor overlaps those waits
//! across successive reads only while the stores between them fit in its store buffer:
//! on the benchmark machine, about 64 per read. Raw quick_cache's get makes 38. Every
//! move of the answer through the stack counts, so the ready path returns the
//! backend's answer as it came, with no other answer merged into it.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::Entry;
use crate::error::Result;
use crate::registry::Registry;

type Waiting<'a> = Pin<Box<dyn Future<Output = Result<Option<Entry>>> + Send + 'a>>;

/// What a read answers, and where it asks a backend that answers at once.
pub(crate) trait Pick: Unpin {
    /// The answer for a live record.
    type Out;
    /// The answer without waiting, if the backend has it.
    fn ready<R: Registry + ?Sized>(registry: &R, key: &str) -> Option<Result<Option<Self::Out>>>;
    /// The answer from the record a waiting read found.
    fn pick(entry: Entry) -> Self::Out;
}

/// The whole record.
pub(crate) struct Whole;

impl Pick for Whole {
    type Out = Entry;
    #[inline]
    fn ready<R: Registry + ?Sized>(registry: &R, key: &str) -> Option<Result<Option<Entry>>> {
        registry.get_ready(key)
    }
    #[inline]
    fn pick(entry: Entry) -> Entry {
        entry
    }
}

/// The value alone, through [`Registry::get_value_ready`]: a backend that answers at
/// once hands back four words instead of the whole entry.
pub(crate) struct Value;

impl Pick for Value {
    type Out = Bytes;
    #[inline]
    fn ready<R: Registry + ?Sized>(registry: &R, key: &str) -> Option<Result<Option<Bytes>>> {
        registry.get_value_ready(key)
    }
    #[inline]
    fn pick(entry: Entry) -> Bytes {
        entry.value
    }
}

/// Reads `key` and answers what `P` picks from the live record.
pub(crate) struct Read<'a, R: ?Sized, P> {
    registry: &'a R,
    key: &'a str,
    waiting: Option<Waiting<'a>>,
    pick: PhantomData<P>,
}

impl<'a, R: Registry + ?Sized, P: Pick> Read<'a, R, P> {
    #[inline]
    pub(crate) fn new(registry: &'a R, key: &'a str) -> Self {
        Read {
            registry,
            key,
            waiting: None,
            pick: PhantomData,
        }
    }
}

impl<'a, R: Registry + ?Sized, P: Pick> Future for Read<'a, R, P> {
    type Output = Result<Option<P::Out>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(waiting) = &mut this.waiting else {
            if let Some(answer) = P::ready(this.registry, this.key) {
                return Poll::Ready(answer);
            }
            // The backend has to wait: its read is polled on the next poll, which
            // the wake asks for at once. Polling it here would merge its answer
            // with the one above: 75 stores per in-process read instead of 64, and
            // at a million records 1.65x raw quick_cache's time instead of 1.1x.
            // The cost to a remote read is one reschedule of its task.
            this.waiting = Some(this.registry.get_entry(this.key));
            cx.waker().wake_by_ref();
            return Poll::Pending;
        };
        let answer = std::task::ready!(poll_waiting::<P>(waiting, cx));
        // Answered: a later poll reads again instead of resuming a finished
        // `async fn` (which panics).
        this.waiting = None;
        Poll::Ready(answer)
    }
}

/// Polls a read the backend had to wait for.
#[inline(never)]
fn poll_waiting<P: Pick>(
    waiting: &mut Waiting<'_>,
    cx: &mut Context<'_>,
) -> Poll<Result<Option<P::Out>>> {
    match waiting.as_mut().poll(cx) {
        Poll::Ready(answer) => Poll::Ready(answer.map(|entry| entry.map(P::pick))),
        Poll::Pending => Poll::Pending,
    }
}
