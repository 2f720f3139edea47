//! The future behind [`RegistryExt`](crate::RegistryExt)'s reads: it answers from
//! [`Registry::get_ready`] on its first poll and boxes nothing unless the backend has
//! to wait.
//!
//! Written out by hand rather than as an `async` block: an in-process read is a few
//! tens of nanoseconds, and the generated state machine (a resume state, a slot for
//! the boxed future that is never created, the answer moved through both) measured
//! up to 2x that when called through a closure.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::error::Result;
use crate::record::Entry;
use crate::registry::Registry;

type Waiting<'a> = Pin<Box<dyn Future<Output = Result<Option<Entry>>> + Send + 'a>>;

/// Reads `key`, then maps the live entry with `M`.
pub(crate) struct Read<'a, R: ?Sized, M> {
    registry: &'a R,
    key: &'a str,
    waiting: Option<Waiting<'a>>,
    map: M,
}

impl<'a, R: Registry + ?Sized, T, M: Fn(Entry) -> T + Unpin> Read<'a, R, M> {
    #[inline]
    pub(crate) fn new(registry: &'a R, key: &'a str, map: M) -> Self {
        Read {
            registry,
            key,
            waiting: None,
            map,
        }
    }
}

impl<'a, R: Registry + ?Sized, T, M: Fn(Entry) -> T + Unpin> Future for Read<'a, R, M> {
    type Output = Result<Option<T>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let answer = match &mut this.waiting {
            Some(waiting) => match waiting.as_mut().poll(cx) {
                Poll::Ready(answer) => answer,
                Poll::Pending => return Poll::Pending,
            },
            None => match this.registry.get_ready(this.key) {
                Some(answer) => answer,
                None => {
                    let mut waiting = this.registry.get_entry(this.key);
                    match waiting.as_mut().poll(cx) {
                        Poll::Ready(answer) => answer,
                        Poll::Pending => {
                            this.waiting = Some(waiting);
                            return Poll::Pending;
                        }
                    }
                }
            },
        };
        Poll::Ready(answer.map(|entry| entry.map(&this.map)))
    }
}
