//! Concurrent single-key operations coalesced into one command, on a single server
//! (standalone or Sentinel; on Cluster a multi-key command would have to be split by
//! hash slot, which random keys would leave at one key per command): gets into `MGET`,
//! puts and imports into one call of the multi-record write script.
//!
//! An operation goes straight to Redis while fewer than `direct_limit` of its kind are
//! in flight (sent directly or queued), so a caller alone, or a few, pay nothing extra.
//! Beyond that, operations queue for a dispatcher task, which sends whatever has
//! queued as one command (up to `max_items`), with at most `max_batches` of them in
//! flight. Under load Redis then parses, executes and answers one command per batch
//! instead of one per operation (for scripts, it also starts one script instead of
//! many), and the client encodes and routes one; that is where the throughput comes
//! from, at the price of one hand-off between tasks for the operations that queue.
//!
//! Counting queued operations as in flight matters: counting only direct ones let two
//! operations at a time bypass the batches under load, each paying a whole command
//! (for puts, a whole script), and measured at a third of all puts. Before a batch is
//! taken from the queue, the dispatcher yields once, so that callers just woken by the
//! previous batch's answers queue their next operation first: otherwise batches
//! alternate between large and nearly empty.
//!
//! Nothing can hang on the dispatcher: a queued operation waits at most the command
//! timeout, and if the dispatcher is gone (its runtime shut down), the operation is
//! sent directly. An operation whose caller gave up before its batch went out is left
//! out of the batch.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Semaphore, mpsc, oneshot};

/// One queued operation.
struct Waiting<Q, A> {
    request: Q,
    reply: oneshot::Sender<A>,
}

/// How an operation goes out. Either way the operation holds its place among those in
/// flight until its answer is in.
pub(crate) enum Route<'a, Q, A> {
    /// The caller sends the request itself (holding no place when the coalescer is
    /// not in use).
    Direct(Q, Option<InFlight<'a>>),
    /// The answer comes from a batch.
    Queued(oneshot::Receiver<A>, InFlight<'a>),
}

/// A place among the operations in flight, given back when dropped (also when the
/// operation is cancelled).
pub(crate) struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Batches concurrent requests of type `Q` answered by `A`.
pub(crate) struct Coalescer<Q, A> {
    queue: mpsc::UnboundedSender<Waiting<Q, A>>,
    /// Operations in flight, direct or queued.
    in_flight: AtomicUsize,
    direct_limit: usize,
}

impl<Q: Send + 'static, A: Send + 'static> Coalescer<Q, A> {
    /// Starts the dispatcher on the current tokio runtime. `run(requests)` answers a
    /// batch (one answer per request, in order), or returns `None` once the registry
    /// is gone, which stops the dispatcher.
    pub(crate) fn start<F, Fut>(
        direct_limit: usize,
        max_batches: usize,
        max_items: usize,
        run: F,
    ) -> Self
    where
        F: Fn(Vec<Q>) -> Option<Fut> + Send + 'static,
        Fut: Future<Output = Vec<A>> + Send + 'static,
    {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(
            rx,
            Arc::new(Semaphore::new(max_batches.max(1))),
            max_items.max(1),
            run,
        ));
        Coalescer {
            queue,
            in_flight: AtomicUsize::new(0),
            direct_limit: direct_limit.max(1),
        }
    }

    /// Decides how `request` goes out.
    pub(crate) fn route(&self, request: Q) -> Route<'_, Q, A> {
        let ahead = self.in_flight.fetch_add(1, Ordering::Relaxed);
        let place = InFlight(&self.in_flight);
        if ahead < self.direct_limit {
            return Route::Direct(request, Some(place));
        }
        let (reply, rx) = oneshot::channel();
        match self.queue.send(Waiting { request, reply }) {
            Ok(()) => Route::Queued(rx, place),
            // The dispatcher is gone: send directly.
            Err(mpsc::error::SendError(w)) => Route::Direct(w.request, Some(place)),
        }
    }
}

async fn dispatch<Q, A, F, Fut>(
    mut rx: mpsc::UnboundedReceiver<Waiting<Q, A>>,
    batches: Arc<Semaphore>,
    max_items: usize,
    run: F,
) where
    Q: Send + 'static,
    A: Send + 'static,
    F: Fn(Vec<Q>) -> Option<Fut> + Send + 'static,
    Fut: Future<Output = Vec<A>> + Send + 'static,
{
    loop {
        let Ok(permit) = batches.clone().acquire_owned().await else {
            return;
        };
        // `None`: every sender is gone with the registry.
        let Some(first) = rx.recv().await else {
            return;
        };
        // Let the callers just woken by the last batch's answers queue their next
        // operation first, so that batches do not alternate between large and tiny.
        tokio::task::yield_now().await;
        let mut batch = vec![first];
        while batch.len() < max_items {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        // Operations whose callers gave up (timed out, cancelled) are not sent.
        batch.retain(|w| !w.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let (requests, replies): (Vec<Q>, Vec<oneshot::Sender<A>>) =
            batch.into_iter().map(|w| (w.request, w.reply)).unzip();
        let Some(running) = run(requests) else {
            return;
        };
        tokio::spawn(async move {
            let answers = running.await;
            // A missing answer drops its sender: that caller sees its batch gone.
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

    use bytes::Bytes;

    use super::*;
    use crate::client::Raw;

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
        assert!(matches!(first, Route::Direct(..)));
        assert!(matches!(second, Route::Direct(..)));
        let mut waiting = Vec::new();
        for i in 0..40 {
            let key = format!("key-{i}");
            match coalescer.route(key.clone()) {
                Route::Queued(rx, place) => waiting.push((key, rx, place)),
                Route::Direct(..) => panic!("a third get went out directly"),
            }
        }
        // The direct gets end, but forty queued ones are still in flight: the next
        // get queues behind them rather than go out on its own.
        drop((first, second));
        match coalescer.route("key-40".into()) {
            Route::Queued(rx, place) => waiting.push(("key-40".into(), rx, place)),
            Route::Direct(..) => panic!("a get went out directly beside forty in flight"),
        }
        for (key, rx, place) in waiting {
            let got = rx.await.unwrap().unwrap();
            assert_eq!(got, answer(&key).unwrap(), "{key} got another key's answer");
            drop(place);
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 41);
        assert!(sizes.iter().all(|&n| n <= 16), "{sizes:?}");
        assert!(sizes.len() < 41, "nothing was batched: {sizes:?}");
        assert_eq!(most_reading.load(Ordering::SeqCst), 1, "batches overlapped");
        // Places come back when the answers are in: alone again, a get goes out on
        // its own.
        assert!(matches!(coalescer.route("after".into()), Route::Direct(..)));
    }

    #[tokio::test]
    async fn a_batch_without_an_answer_for_a_get_drops_it_rather_than_hang() {
        let coalescer = Coalescer::start(1, 1, 8, |keys: Vec<String>| {
            // One answer short.
            Some(async move { keys.iter().skip(1).map(|k| answer(k)).collect::<Vec<_>>() })
        });
        let _direct = coalescer.route("direct".into());
        let Route::Queued(rx, _place) = coalescer.route("queued".into()) else {
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
            Route::Direct(key, _place) => assert_eq!(key, "next"),
            _ => panic!("a get queued for a dispatcher that is gone"),
        }
    }
}
