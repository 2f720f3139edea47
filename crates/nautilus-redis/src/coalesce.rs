//! Concurrent single-key reads coalesced into `MGET`, on a single server (standalone or
//! Sentinel; on Cluster an `MGET` would have to be split by hash slot, which random
//! keys would leave at one key per command).
//!
//! A get goes straight to Redis while fewer than `direct_limit` gets are already in
//! flight, so a caller alone, or a few, pay nothing extra. Beyond that, gets queue for
//! a dispatcher task, which sends whatever has queued as one `MGET` (up to `max_keys`
//! keys), with at most `max_batches` of them in flight. Under load Redis then parses,
//! executes and answers one command per batch instead of one per get, and the client
//! encodes and routes one; that is where the throughput comes from, at the price of
//! one hand-off between tasks for the gets that queue.
//!
//! Nothing can hang on the dispatcher: a queued get waits at most the command timeout,
//! and if the dispatcher is gone (its runtime shut down), the get is sent directly.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use nautilus_core::Result;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// A read's raw answer: the stored bytes, none, or an error already mapped.
pub(crate) type Raw = Result<Option<Bytes>>;

/// One queued get.
struct Waiting {
    key: String,
    reply: oneshot::Sender<Raw>,
}

/// How a get goes out.
pub(crate) enum Route<'a> {
    /// The caller sends the key itself, holding its place among the direct gets (if
    /// it has one) until the answer is in.
    Direct(String, Option<DirectSlot<'a>>),
    /// The answer comes from a batch.
    Queued(oneshot::Receiver<Raw>),
}

/// A place among the direct gets, given back when dropped (also when the get is
/// cancelled).
pub(crate) struct DirectSlot<'a>(&'a AtomicUsize);

impl Drop for DirectSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) struct Coalescer {
    queue: mpsc::UnboundedSender<Waiting>,
    direct: AtomicUsize,
    direct_limit: usize,
}

impl Coalescer {
    /// Starts the dispatcher on the current tokio runtime. `read(keys)` reads a batch
    /// (one answer per key, in order), or returns `None` once the registry is gone,
    /// which stops the dispatcher.
    pub(crate) fn start<F, Fut>(
        direct_limit: usize,
        max_batches: usize,
        max_keys: usize,
        read: F,
    ) -> Self
    where
        F: Fn(Vec<String>) -> Option<Fut> + Send + 'static,
        Fut: Future<Output = Vec<Raw>> + Send + 'static,
    {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(
            rx,
            Arc::new(Semaphore::new(max_batches.max(1))),
            max_keys.max(1),
            read,
        ));
        Coalescer {
            queue,
            direct: AtomicUsize::new(0),
            direct_limit: direct_limit.max(1),
        }
    }

    /// Decides how the get of `key` (the full Redis key) goes out.
    pub(crate) fn route(&self, key: String) -> Route<'_> {
        if self.direct.fetch_add(1, Ordering::Relaxed) < self.direct_limit {
            return Route::Direct(key, Some(DirectSlot(&self.direct)));
        }
        self.direct.fetch_sub(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        match self.queue.send(Waiting { key, reply }) {
            Ok(()) => Route::Queued(rx),
            // The dispatcher is gone: send directly.
            Err(mpsc::error::SendError(w)) => Route::Direct(w.key, None),
        }
    }
}

async fn dispatch<F, Fut>(
    mut rx: mpsc::UnboundedReceiver<Waiting>,
    batches: Arc<Semaphore>,
    max_keys: usize,
    read: F,
) where
    F: Fn(Vec<String>) -> Option<Fut> + Send + 'static,
    Fut: Future<Output = Vec<Raw>> + Send + 'static,
{
    loop {
        let Ok(permit) = batches.clone().acquire_owned().await else {
            return;
        };
        // `None`: every sender is gone with the registry.
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < max_keys {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        // Gets whose callers gave up (timed out, cancelled) need no reading.
        batch.retain(|w| !w.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let (keys, replies): (Vec<String>, Vec<oneshot::Sender<Raw>>) =
            batch.into_iter().map(|w| (w.key, w.reply)).unzip();
        let Some(reading) = read(keys) else {
            return;
        };
        tokio::spawn(async move {
            let answers = reading.await;
            // A missing answer drops its sender: that caller reads directly.
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    fn answer(key: &str) -> Raw {
        Ok(Some(Bytes::from(format!("value of {key}"))))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_gets_share_batches_and_each_gets_its_own_answer() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let reading = Arc::new(AtomicUsize::new(0));
        let most_reading = Arc::new(AtomicUsize::new(0));
        let (seen, now, most) = (sizes.clone(), reading.clone(), most_reading.clone());
        let coalescer = Arc::new(Coalescer::start(2, 1, 16, move |keys: Vec<String>| {
            seen.lock().unwrap().push(keys.len());
            let (now, most) = (now.clone(), most.clone());
            Some(async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                keys.iter().map(|k| answer(k)).collect::<Vec<_>>()
            })
        }));
        // Two gets in flight directly: everything after them queues.
        let first = coalescer.route("direct-1".into());
        let second = coalescer.route("direct-2".into());
        assert!(matches!(first, Route::Direct(_, Some(_))));
        assert!(matches!(second, Route::Direct(_, Some(_))));
        let mut waiting = Vec::new();
        for i in 0..40 {
            let key = format!("key-{i}");
            match coalescer.route(key.clone()) {
                Route::Queued(rx) => waiting.push((key, rx)),
                Route::Direct(..) => panic!("a third get went out directly"),
            }
        }
        for (key, rx) in waiting {
            let got = rx.await.unwrap().unwrap();
            assert_eq!(got, answer(&key).unwrap(), "{key} got another key's answer");
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 40);
        assert!(sizes.iter().all(|&n| n <= 16), "{sizes:?}");
        assert!(sizes.len() < 40, "nothing was batched: {sizes:?}");
        assert_eq!(most_reading.load(Ordering::SeqCst), 1, "batches overlapped");
        // Slots come back when the direct gets end.
        drop((first, second));
        assert!(matches!(
            coalescer.route("after".into()),
            Route::Direct(_, Some(_))
        ));
    }

    #[tokio::test]
    async fn a_batch_without_an_answer_for_a_get_drops_it_rather_than_hang() {
        let coalescer = Coalescer::start(1, 1, 8, |keys: Vec<String>| {
            // One answer short.
            Some(async move { keys.iter().skip(1).map(|k| answer(k)).collect::<Vec<_>>() })
        });
        let _direct = coalescer.route("direct".into());
        let Route::Queued(rx) = coalescer.route("queued".into()) else {
            panic!("the second get did not queue");
        };
        assert!(rx.await.is_err(), "a get without an answer must see it");
    }

    #[test]
    fn with_the_dispatcher_gone_gets_go_out_directly() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let coalescer = runtime.block_on(async {
            Coalescer::start(1, 1, 8, |keys: Vec<String>| {
                Some(async move { keys.iter().map(|k| answer(k)).collect::<Vec<_>>() })
            })
        });
        // Shutting the runtime down drops the dispatcher with its queue.
        drop(runtime);
        let _direct = coalescer.route("direct".into());
        match coalescer.route("next".into()) {
            Route::Direct(key, None) => assert_eq!(key, "next"),
            _ => panic!("a get queued for a dispatcher that is gone"),
        }
    }
}
