//! Batching: concurrent single gets, puts and imports coalesced (see
//! [`crate::coalesce`]) into `MGET` and calls of the multi-record write script on a
//! single server; batch puts cut into such calls, all in one pipeline; and the answers
//! of a batch put back in place around the items refused before anything was sent.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use fred::prelude::Error as FredError;
use fred::types::scripts::Script;
use nautilus_core::{Error, Result};
use tokio::sync::oneshot;

use crate::args::{RecordCall, Write};
use crate::client::{Call, Client, Raw};
use crate::coalesce::{Coalescer, Route};
use crate::error::bad_reply;
use crate::keys::{KeyBatch, Namespace};
use crate::outcome::{self, Outcome};

/// Coalesced gets and writes: beyond this many of a kind (gets, or puts and imports
/// together) in flight, they queue for a batch (`MGET`, or one call of the
/// multi-record write script), ...
const COALESCE_DIRECT: usize = 2;
/// ... of which this many are in flight at a time (measured on 2 cores at 64 tasks:
/// 2 did best; 1 left the connection idle between batches, 4 made them smaller) ...
const COALESCE_BATCHES: usize = 2;
/// ... each carrying at most this many keys (or records, for puts).
const COALESCE_MAX_KEYS: usize = 128;
/// Puts of larger values are always sent on their own: batching pays off for small
/// records, and keeps a batch of puts within 2 MiB.
pub(crate) const COALESCE_MAX_VALUE: usize = 16 * 1024;
/// A batch of `put_many` goes out as calls of the multi-record write script of at most
/// this many records ...
const PUT_CHUNK_RECORDS: usize = 128;
/// ... and about this many bytes (a record larger than that is a call of its own).
const PUT_CHUNK_BYTES: usize = 512 * 1024;

/// A put's outcome, or the error that kept it from one.
pub(crate) type PutRaw = Result<Outcome>;

/// The coalescers of single gets, and of single puts and imports (single servers,
/// unless turned off).
///
/// Puts and imports share one: a replicated write is a put on one node and an import
/// on another, so a node sees both kinds, and one queue keeps its batches as large as
/// the writes in flight (two queues halved them; at 64 tasks over three servers, an R=2
/// put cost 2.4x an R=1 put, and a single queue of writes at half the depth cost 1.3x).
pub(crate) struct Batcher {
    reads: Option<Coalescer<String, Raw>>,
    writes: Option<Coalescer<RecordCall, PutRaw>>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("reads", &self.reads.is_some())
            .field("writes", &self.writes.is_some())
            .finish()
    }
}

impl Batcher {
    /// Starts the coalescers asked for, on the current runtime; their batches run for
    /// as long as `client` lives.
    pub(crate) fn start(client: &Arc<Client>, ns: &Namespace, reads: bool, writes: bool) -> Self {
        let prefix = ns.prefix().len();
        let ns = Arc::new(ns.clone());
        Batcher {
            reads: reads.then(|| {
                coalescer(client, move |client, keys: Vec<String>| async move {
                    client.get_many(&KeyBatch::of_full(prefix, &keys)).await
                })
            }),
            writes: writes.then(|| writes_coalescer(client, &ns)),
        }
    }

    /// One get of the record `full` (named `key`): sent on its own, or queued for a
    /// batch.
    pub(crate) async fn get(
        &self,
        client: &Client,
        ns: &Namespace,
        key: &str,
        full: String,
    ) -> Raw {
        let route = match &self.reads {
            Some(reads) => reads.route(full),
            None => Route::Direct(full, None),
        };
        match route {
            Route::Direct(full, _place) => client.get(key, full).await,
            Route::Queued(answer, _place) => match queued(client, "get", answer).await? {
                Some(raw) => raw,
                // The dispatcher dropped this get with its runtime: read it directly
                // (the one path on which a key gets its full form twice).
                None => client.get(key, ns.full(key)).await,
            },
        }
    }

    /// One put or import: sent on its own, or queued for a batch if its value is
    /// small.
    pub(crate) async fn write(
        &self,
        client: &Client,
        ns: &Namespace,
        call: RecordCall,
        small: bool,
    ) -> PutRaw {
        let kind = call.kind;
        let route = match &self.writes {
            Some(c) if small => c.route(call),
            _ => Route::Direct(call, None),
        };
        match route {
            Route::Direct(call, _place) => {
                let keys = ns.script_keys(call.key, client.cluster());
                let script = client.scripts.one(kind);
                outcome::outcome(&client.eval(kind.op(), script, (keys, call.args)).await?)
            }
            Route::Queued(answer, _place) => match queued(client, kind.op(), answer).await? {
                Some(outcome) => outcome,
                // Whether it was sent is not known, so it is not sent again.
                None => Err(Error::Unavailable {
                    node: client.url().to_owned(),
                    source: format!(
                        "the batch carrying this {} was dropped before it answered; \
                         it may or may not have been applied",
                        kind.op()
                    )
                    .into(),
                }),
            },
        }
    }
}

/// The coalescer of record writes: each batch is one call of the multi-record script.
fn writes_coalescer(client: &Arc<Client>, ns: &Arc<Namespace>) -> Coalescer<RecordCall, PutRaw> {
    let ns = Arc::clone(ns);
    coalescer(client, move |client, calls: Vec<RecordCall>| {
        // Built in the batch's own task: the dispatcher, which gathers the next batch
        // meanwhile, does nothing per record.
        let ns = ns.clone();
        async move {
            // Each record's error names its own operation, a put or an import.
            let kinds: Vec<Write> = calls.iter().map(|c| c.kind).collect();
            let call = many_call(&ns, calls);
            let reply = client.eval_fred(&client.scripts.write_many, call).await;
            many_outcomes(&client, kinds.into_iter(), reply)
        }
    })
}

/// A coalescer whose batches `run` on the client, for as long as it lives.
fn coalescer<Q, A, F, Fut>(client: &Arc<Client>, run: F) -> Coalescer<Q, A>
where
    Q: Send + 'static,
    A: Send + 'static,
    F: Fn(Arc<Client>, Vec<Q>) -> Fut + Send + 'static,
    Fut: Future<Output = Vec<A>> + Send + 'static,
{
    let weak = Arc::downgrade(client);
    Coalescer::start(
        COALESCE_DIRECT,
        COALESCE_BATCHES,
        COALESCE_MAX_KEYS,
        move |batch| Some(run(weak.upgrade()?, batch)),
    )
}

/// A queued operation's answer from its batch, waited for at most the command
/// timeout; `None` if the batch was dropped without answering it.
async fn queued<A>(
    client: &Client,
    op: &'static str,
    answer: oneshot::Receiver<A>,
) -> Result<Option<A>> {
    match tokio::time::timeout(client.timeout(), answer).await {
        Ok(answer) => Ok(answer.ok()),
        Err(_) => Err(Error::Timeout {
            op,
            after: client.timeout(),
        }),
    }
}

/// Many puts: on a single server, calls of the multi-record write script of up to
/// [`PUT_CHUNK_RECORDS`] records and about [`PUT_CHUNK_BYTES`], all in one pipeline;
/// on Cluster, one put script call per record in one pipeline. One answer per put, in
/// order; a put already refused keeps its error.
pub(crate) async fn put_many(
    client: &Client,
    ns: &Namespace,
    calls: Vec<Result<RecordCall>>,
) -> Vec<PutRaw> {
    if client.cluster() {
        let calls = calls
            .into_iter()
            .map(|c| c.map(|c| (ns.script_keys(c.key, true), c.args)))
            .collect();
        return run_many(client, "put", &client.scripts.put, calls)
            .await
            .into_iter()
            .map(|reply| outcome::outcome(&reply?))
            .collect();
    }
    answer_in_place(calls, |calls| async move {
        let sizes = chunk_sizes(
            calls.iter().map(RecordCall::size),
            PUT_CHUNK_RECORDS,
            PUT_CHUNK_BYTES,
        );
        let mut calls = calls.into_iter();
        let script_calls = sizes
            .iter()
            .map(|&n| many_call(ns, calls.by_ref().take(n)))
            .collect();
        let answers = client
            .eval_many_fred(&client.scripts.write_many, script_calls)
            .await;
        sizes
            .into_iter()
            .zip(answers)
            .flat_map(|(n, answer)| many_outcomes(client, (0..n).map(|_| Write::Put), answer))
            .collect()
    })
    .await
}

/// Runs one script per call in one pipeline; calls already failed are answered as
/// they are.
pub(crate) async fn run_many(
    client: &Client,
    op: &'static str,
    script: &Script,
    calls: Vec<Result<Call>>,
) -> Vec<Result<Bytes>> {
    answer_in_place(calls, |calls| client.eval_many(op, script, calls)).await
}

/// The KEYS and ARGV of one call of a multi-record script (single servers).
fn many_call(ns: &Namespace, calls: impl IntoIterator<Item = RecordCall>) -> Call {
    let mut keys = vec![ns.meta().to_owned(), ns.index().to_owned()];
    let mut args = Vec::new();
    for call in calls {
        keys.push(call.key);
        args.push(call.kind.tag());
        args.extend(call.args);
    }
    (keys, args)
}

/// The outcomes of the records of one call of the multi-record script, of these
/// kinds in order; if the call failed, each record's error names its kind.
fn many_outcomes(
    client: &Client,
    kinds: impl ExactSizeIterator<Item = Write>,
    reply: std::result::Result<Bytes, FredError>,
) -> Vec<PutRaw> {
    match reply {
        Ok(reply) => outcome::outcomes(&reply, kinds.len()),
        Err(e) => kinds.map(|k| Err(client.err(k.op(), e.clone()))).collect(),
    }
}

/// How many records, of these sizes, each call of the multi-record write script takes,
/// in order: at most `max_records`, and at most `max_bytes` unless a record alone is
/// larger.
fn chunk_sizes(
    sizes: impl IntoIterator<Item = usize>,
    max_records: usize,
    max_bytes: usize,
) -> Vec<usize> {
    let mut chunks: Vec<usize> = Vec::new();
    let mut bytes = 0;
    for size in sizes {
        match chunks.last_mut() {
            Some(n) if *n < max_records && bytes + size <= max_bytes => {
                *n += 1;
                bytes += size;
            }
            _ => {
                chunks.push(1);
                bytes = size;
            }
        }
    }
    chunks
}

/// Answers each item in order: an item already failed keeps its error, the others
/// are answered by `run`, which gets them in order and gives one answer each.
pub(crate) async fn answer_in_place<T, R, Fut>(
    items: Vec<Result<T>>,
    run: impl FnOnce(Vec<T>) -> Fut,
) -> Vec<Result<R>>
where
    Fut: Future<Output = Vec<Result<R>>>,
{
    let mut answers: Vec<Option<Result<R>>> = Vec::with_capacity(items.len());
    let mut at = Vec::new();
    let mut todo = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match item {
            Ok(item) => {
                answers.push(None);
                at.push(i);
                todo.push(item);
            }
            Err(e) => answers.push(Some(Err(e))),
        }
    }
    for (i, answer) in at.into_iter().zip(run(todo).await) {
        answers[i] = Some(answer);
    }
    answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(bad_reply("missing batch reply"))))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn chunks_keep_to_their_records_and_bytes() {
        assert_eq!(chunk_sizes([], 3, 10), Vec::<usize>::new());
        assert_eq!(chunk_sizes([1; 7], 3, 10), [3, 3, 1]);
        assert_eq!(chunk_sizes([4, 4, 4, 20, 1], 10, 10), [2, 1, 1, 1]);
    }

    #[tokio::test]
    async fn answers_go_back_in_place_around_refused_items() {
        let items = vec![Ok(1), Err(Error::invalid_argument("no")), Ok(3)];
        let out = answer_in_place(items, |todo: Vec<i32>| async move {
            todo.into_iter().map(|i| Ok(i * 10)).collect()
        })
        .await;
        assert_eq!(out[0].as_ref().unwrap(), &10);
        assert!(out[1].is_err());
        assert_eq!(out[2].as_ref().unwrap(), &30);
        // One answer short: the item left over fails rather than vanish.
        let out = answer_in_place(vec![Ok(1), Ok(2)], |_| async { vec![Ok(0)] }).await;
        assert!(out[0].is_ok() && out[1].is_err());
    }

    proptest! {
        #[test]
        fn chunks_take_every_record_once_greedily(
            sizes in proptest::collection::vec(0usize..300, 0..60),
            max_records in 1usize..10,
            max_bytes in 1usize..600,
        ) {
            let chunks = chunk_sizes(sizes.iter().copied(), max_records, max_bytes);
            prop_assert_eq!(chunks.iter().sum::<usize>(), sizes.len());
            let mut at = 0;
            let bytes = |from: usize, n: usize| sizes[from..from + n].iter().sum::<usize>();
            for (i, &n) in chunks.iter().enumerate() {
                prop_assert!(n >= 1 && n <= max_records);
                prop_assert!(n == 1 || bytes(at, n) <= max_bytes);
                // Greedy: the next record did not fit.
                if i + 1 < chunks.len() {
                    prop_assert!(n == max_records || bytes(at, n + 1) > max_bytes);
                }
                at += n;
            }
        }
    }
}
