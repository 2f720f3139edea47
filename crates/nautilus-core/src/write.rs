//! The future behind [`RegistryExt`](crate::RegistryExt)'s puts: it writes through
//! [`Registry::put_ready`] on its first poll and boxes nothing unless the backend has
//! to wait. Written out by hand for the reason the read's is (see `read.rs`).
//!
//! Nothing is written before the first poll: a put that is never awaited writes
//! nothing, as with any future.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::{PutOptions, Version};

type Waiting<'a> = Pin<Box<dyn Future<Output = Result<Version>> + Send + 'a>>;

/// Writes `value` under `key` with `options`.
pub(crate) struct Write<'a, R: ?Sized> {
    registry: &'a R,
    key: &'a str,
    /// The value, until the first poll hands it to the backend.
    value: Option<Bytes>,
    options: PutOptions,
    waiting: Option<Waiting<'a>>,
}

impl<'a, R: Registry + ?Sized> Write<'a, R> {
    #[inline]
    pub(crate) fn new(registry: &'a R, key: &'a str, value: Bytes, options: PutOptions) -> Self {
        Write {
            registry,
            key,
            value: Some(value),
            options,
            waiting: None,
        }
    }
}

impl<'a, R: Registry + ?Sized> Future for Write<'a, R> {
    type Output = Result<Version>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(waiting) = &mut this.waiting {
            let answer = std::task::ready!(waiting.as_mut().poll(cx));
            // Finished: a later poll reaches the error below, not a finished
            // `async fn` (which panics when resumed).
            this.waiting = None;
            return Poll::Ready(answer);
        }
        let Some(value) = this.value.take() else {
            return Poll::Ready(Err(Error::invalid_argument(
                "a put was polled again after it completed",
            )));
        };
        match this.registry.put_ready(this.key, value, this.options) {
            Ok(answer) => Poll::Ready(answer),
            Err(value) => {
                let mut waiting = this.registry.put_opts(this.key, value, this.options);
                match waiting.as_mut().poll(cx) {
                    Poll::Ready(answer) => Poll::Ready(answer),
                    Poll::Pending => {
                        this.waiting = Some(waiting);
                        Poll::Pending
                    }
                }
            }
        }
    }
}
