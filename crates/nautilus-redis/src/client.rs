//! The client: fred's connection pool and every command sent through it. Script calls
//! by SHA, sent again once loaded after `NOSCRIPT`; pipelines that end in `WAIT` when
//! writes wait for replicas; reads (`GET`, `MGET` with its misses checked); `SCAN`
//! pages, primary by primary on Cluster; and the few plain commands. The ping and the
//! reading of which server process answers are in [`liveness`].

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use bytes::Bytes;
use fred::clients::Pipeline;
use fred::prelude::{
    ClientLike, ClusterInterface, Error as FredError, HashesInterface, KeysInterface, Pool, Server,
    ServerInterface,
};
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand, FromValue, Value};
use nautilus_core::{Error, Result};

use crate::error::{self, Context, bad_reply, fred_bad_reply, is_no_script, is_wrong_type};
use crate::identity::Identity;
use crate::keys::KeyBatch;
use crate::scripts::Scripts;

mod liveness;

/// A script call: its KEYS and ARGV.
pub(crate) type Call = (Vec<String>, Vec<Value>);

/// A read's raw answer: the stored bytes, none, or an error already mapped.
pub(crate) type Raw = Result<Option<Bytes>>;

/// The registry's connection to Redis.
#[derive(Debug)]
pub(crate) struct Client {
    pool: Pool,
    /// The URL, without its password: how errors name the server.
    url: String,
    timeout: Duration,
    cluster: bool,
    /// Every write waits (`WAIT`) for this many replicas, this long on the server.
    replicas: Option<(u32, Duration)>,
    pub(crate) scripts: Scripts,
    /// A reconnection forced after a ping timed out is under way.
    reconnecting: Arc<AtomicBool>,
    /// Which server process answers (not tracked on Cluster).
    identity: Identity,
}

impl Client {
    pub(crate) fn new(
        pool: Pool,
        url: String,
        timeout: Duration,
        cluster: bool,
        replicas: Option<(u32, Duration)>,
    ) -> Self {
        Client {
            pool,
            url,
            timeout,
            cluster,
            replicas,
            scripts: Scripts::new(timeout),
            reconnecting: Arc::default(),
            identity: Identity::default(),
        }
    }

    pub(crate) fn cluster(&self) -> bool {
        self.cluster
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `op`'s error (see [`error::map`]).
    pub(crate) fn err(&self, op: &'static str, e: FredError) -> Error {
        error::map(self.context(op, None), e)
    }

    /// A read's error: a key of another type under the namespace is corrupt.
    pub(crate) fn read_err(&self, key: &str, e: FredError) -> Error {
        error::map(self.context("get", Some(key)), e)
    }

    fn context<'a>(&'a self, op: &'static str, key: Option<&'a str>) -> Context<'a> {
        Context {
            node: &self.url,
            op,
            timeout: self.timeout,
            key,
        }
    }

    /// Loads every script (at connect).
    pub(crate) async fn load_scripts(&self) -> Result<()> {
        for script in self.scripts.all() {
            script
                .load(self.pool.next())
                .await
                .map_err(|e| self.err("script load", e))?;
        }
        Ok(())
    }

    /// One script call; through a pipeline (and so followed by `WAIT`) when writes
    /// wait for replicas.
    pub(crate) async fn eval(
        &self,
        op: &'static str,
        script: &Script,
        call: Call,
    ) -> Result<Bytes> {
        self.eval_fred(script, call)
            .await
            .map_err(|e| self.err(op, e))
    }

    /// [`Client::eval`], fred's error unmapped (for batches that answer it to many).
    pub(crate) async fn eval_fred(
        &self,
        script: &Script,
        (keys, args): Call,
    ) -> std::result::Result<Bytes, FredError> {
        if self.replicas.is_none() {
            return script
                .evalsha_with_reload(self.pool.next(), keys, args)
                .await;
        }
        self.eval_many_fred(script, vec![(keys, args)])
            .await
            .pop()
            .unwrap_or_else(|| Err(fred_bad_reply("missing reply")))
    }

    /// Runs one script for many calls in one pipeline (one round trip per node; on
    /// Cluster fred sends each call to its key's node, so nothing is CROSSSLOT). One
    /// answer per call, in order.
    pub(crate) async fn eval_many(
        &self,
        op: &'static str,
        script: &Script,
        calls: Vec<Call>,
    ) -> Vec<Result<Bytes>> {
        self.eval_many_fred(script, calls)
            .await
            .into_iter()
            .map(|reply| reply.map_err(|e| self.err(op, e)))
            .collect()
    }

    /// [`Client::eval_many`], fred's errors unmapped. With
    /// [`RedisConfig::wait_for_replicas`](crate::RedisConfig::wait_for_replicas) the
    /// pipeline ends with `WAIT` on the same connection as the writes (see
    /// [`Client::finish`]). Calls that fail with NOSCRIPT (the server restarted or
    /// failed over) are sent again once the script is loaded.
    pub(crate) async fn eval_many_fred(
        &self,
        script: &Script,
        calls: Vec<Call>,
    ) -> Vec<std::result::Result<Bytes, FredError>> {
        let client = self.pool.next();
        let mut results: Vec<Option<std::result::Result<Bytes, FredError>>> =
            (0..calls.len()).map(|_| None).collect();
        let mut pending: Vec<(usize, Call)> = calls.into_iter().enumerate().collect();
        for round in 0..2 {
            if pending.is_empty() {
                break;
            }
            if round == 1
                && let Err(e) = script.load(client).await
            {
                for (i, _) in pending.drain(..) {
                    results[i] = Some(Err(e.clone()));
                }
                break;
            }
            let pipeline = client.pipeline();
            let mut sent = Vec::new();
            for (i, call) in pending.drain(..) {
                match pipeline
                    .custom::<(), Value>(evalsha(), evalsha_args(script, &call))
                    .await
                {
                    Ok(()) => sent.push((i, call)),
                    Err(e) => results[i] = Some(Err(e)),
                }
            }
            let replies = self.finish(&pipeline, sent.len()).await;
            for ((i, call), reply) in sent.into_iter().zip(replies) {
                results[i] = match reply {
                    Err(e) if is_no_script(&e) => {
                        pending.push((i, call));
                        continue;
                    }
                    reply => Some(reply.and_then(Bytes::from_value)),
                };
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(fred_bad_reply("missing pipeline reply"))))
            .collect()
    }

    /// Sends a pipeline of `sent` writes, followed by `WAIT` when writes wait for
    /// replicas: one answer per write. If the replicas do not acknowledge them in time,
    /// every write that succeeded answers the error that says so (applied on the
    /// primary, not known to be replicated).
    async fn finish(
        &self,
        pipeline: &Pipeline<fred::clients::Client>,
        sent: usize,
    ) -> Vec<std::result::Result<Value, FredError>> {
        let wait = self.replicas.filter(|_| sent > 0);
        let mut failed = None;
        if let Some((n, after)) = wait {
            let cmd = CustomCommand::new_static("WAIT", ClusterHash::Random, false);
            let args = vec![Value::from(i64::from(n)), Value::from(millis(after))];
            failed = pipeline.custom::<(), Value>(cmd, args).await.err();
        }
        let mut replies = pipeline.try_all::<Value>().await;
        if let Some((n, _)) = wait
            && failed.is_none()
        {
            failed = match replies.pop() {
                Some(Ok(Value::Integer(acked))) if acked >= i64::from(n) => None,
                Some(Ok(acked)) => Some(FredError::new(
                    fred::prelude::ErrorKind::Timeout,
                    format!("the write was acknowledged by {acked:?} of {n} replicas"),
                )),
                Some(Err(e)) => Some(e),
                None => Some(fred_bad_reply("missing WAIT reply")),
            };
        }
        if let Some(e) = failed {
            for reply in replies.iter_mut().filter(|r| r.is_ok()) {
                *reply = Err(e.clone());
            }
        }
        replies
    }

    /// One `GET` of the record `full`, named `key` in errors.
    pub(crate) async fn get(&self, key: &str, full: String) -> Raw {
        let raw = self
            .pool
            .get(full)
            .await
            .map_err(|e| self.read_err(key, e))?;
        self.settled().await?;
        Ok(raw)
    }

    /// After a read is answered: every reconnection seen so far was followed by a
    /// reading of which process answers (see [`Identity::settle`]), within the
    /// command timeout; else the answer is not handed back, and the read fails,
    /// transiently.
    async fn settled(&self) -> Result<()> {
        if self.identity.settle(self.timeout).await {
            return Ok(());
        }
        Err(self.unsettled())
    }

    fn unsettled(&self) -> Error {
        Error::Unavailable {
            node: self.url.clone(),
            source: "a connection reconnected during the read, and which server process \
                     answered it could not be read"
                .into(),
        }
    }

    /// Reads many full keys in one round trip: one MGET on a single server; on Cluster
    /// a pipeline of GETs, which fred sends to each key's node at once (an MGET across
    /// slots would be CROSSSLOT).
    pub(crate) async fn get_many(&self, keys: &KeyBatch) -> Vec<Raw> {
        if keys.len() == 0 {
            return Vec::new();
        }
        if self.cluster {
            return self.get_each(keys).await;
        }
        let raws = self.mget(keys).await;
        match self.settled().await {
            Ok(()) => raws,
            Err(_) => raws.into_iter().map(|_| Err(self.unsettled())).collect(),
        }
    }

    /// One MGET of `keys` on a single server, its misses checked.
    async fn mget(&self, keys: &KeyBatch) -> Vec<Raw> {
        match self
            .pool
            .next()
            .mget::<Vec<Option<Bytes>>, _>(keys.keys())
            .await
        {
            Ok(values) if values.len() == keys.len() => self.check_misses(keys, values).await,
            Ok(values) => {
                let what = format!("MGET returned {} values", values.len());
                (0..keys.len())
                    .map(|_| Err(bad_reply(what.clone())))
                    .collect()
            }
            // A key of another type fails the whole MGET: one GET each, so only that
            // key reports it.
            Err(e) if is_wrong_type(&e) => self.get_each(keys).await,
            Err(e) => (0..keys.len())
                .map(|_| Err(self.err("get", e.clone())))
                .collect(),
        }
    }

    /// MGET answers nil for a key of another type; tell those from real misses (one
    /// more round trip, only for batches that missed): each missed key is read again
    /// with GET, which answers `WRONGTYPE` for another type. (Not `EXISTS`: a put that
    /// lands between the two commands would make a string the library wrote look
    /// like another type; read again, it is simply the newer answer.)
    async fn check_misses(&self, keys: &KeyBatch, values: Vec<Option<Bytes>>) -> Vec<Raw> {
        let missed: Vec<usize> = (0..values.len()).filter(|&i| values[i].is_none()).collect();
        let mut out: Vec<Raw> = values.into_iter().map(Ok).collect();
        if missed.is_empty() {
            return out;
        }
        let pipeline = self.pool.next().pipeline();
        let mut queued = Vec::with_capacity(missed.len());
        for &i in &missed {
            match pipeline.get::<(), _>(keys.key(i)).await {
                Ok(()) => queued.push(i),
                Err(e) => out[i] = Err(self.err("get", e)),
            }
        }
        for (&i, again) in queued.iter().zip(pipeline.try_all::<Option<Bytes>>().await) {
            out[i] = again.map_err(|e| self.read_err(keys.name(i), e));
        }
        out
    }

    async fn get_each(&self, keys: &KeyBatch) -> Vec<Raw> {
        let pipeline = self.pool.next().pipeline();
        for i in 0..keys.len() {
            if let Err(e) = pipeline.get::<(), _>(keys.key(i)).await {
                return (0..keys.len())
                    .map(|_| Err(self.err("get", e.clone())))
                    .collect();
            }
        }
        pipeline
            .try_all::<Option<Bytes>>()
            .await
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.map_err(|e| self.read_err(keys.name(i), e)))
            .collect()
    }

    /// The primaries to walk: one `None` for a single server, each primary (in a
    /// stable order) for Cluster.
    pub(crate) fn primaries(&self) -> Vec<Option<Server>> {
        if !self.cluster {
            return vec![None];
        }
        let mut nodes = self
            .pool
            .next()
            .cached_cluster_state()
            .map(|s| s.unique_primary_nodes())
            .unwrap_or_default();
        nodes.sort_by_key(|s| s.to_string());
        nodes.into_iter().map(Some).collect()
    }

    /// One `SCAN cursor MATCH pattern COUNT count` on `node` (through
    /// `with_cluster_node` on Cluster: fred would otherwise route by a `{tag}` in the
    /// pattern): the next cursor (0: done) and the keys, as [`Listed`].
    pub(crate) async fn scan_page(
        &self,
        node: Option<&Server>,
        cursor: u64,
        pattern: &str,
        count: u32,
    ) -> Result<(u64, Listed)> {
        let client = self.pool.next();
        let (cursor, pattern) = (cursor.to_string(), pattern.to_owned());
        // Bytes, not `String`s: one key that is not UTF-8 (written by something else)
        // failed the whole reply, and with it every scan, count, repair and migration.
        let (next, keys): (String, Vec<bytes::Bytes>) = match node {
            Some(server) => {
                client
                    .with_cluster_node(server.clone())
                    .scan_page(cursor, pattern, Some(count), None)
                    .await
            }
            None => client.scan_page(cursor, pattern, Some(count), None).await,
        }
        .map_err(|e| self.err("scan", e))?;
        // As a read: the caller knows which process listed these keys.
        self.settled().await?;
        let next = next
            .parse()
            .map_err(|_| bad_reply(format!("SCAN answered the cursor {next:?}")))?;
        Ok((next, Listed::of(keys)))
    }

    /// The number of keys on `node` (`DBSIZE`).
    pub(crate) async fn dbsize(&self, node: Option<&Server>) -> Result<u64> {
        let client = self.pool.next();
        match node {
            Some(server) => client.with_cluster_node(server.clone()).dbsize().await,
            None => client.dbsize().await,
        }
        .map_err(|e| self.err("stats", e))
    }

    /// The first [`HEADER_2`](crate::codec::HEADER_2) bytes of each key's string (fewer
    /// for a shorter one) and the string's length (`GETRANGE` and `STRLEN`, in one
    /// pipeline): `None` for a key gone since it was listed, or of another Redis type.
    pub(crate) async fn headers(
        &self,
        op: &'static str,
        keys: &[String],
    ) -> Result<Vec<Option<(Bytes, u64)>>> {
        let pipeline = self.pool.next().pipeline();
        let last = crate::codec::HEADER_2 - 1;
        for k in keys {
            pipeline
                .getrange::<(), _>(k.as_str(), 0, last)
                .await
                .map_err(|e| self.err(op, e))?;
            pipeline
                .strlen::<(), _>(k.as_str())
                .await
                .map_err(|e| self.err(op, e))?;
        }
        let mut answers = pipeline.try_all::<Value>().await.into_iter();
        let mut headers = Vec::with_capacity(keys.len());
        while let Some(header) = answers.next() {
            let Some(len) = answers.next() else {
                return Err(bad_reply("GETRANGE without its STRLEN in a pipeline"));
            };
            headers.push(match (header, len) {
                (Err(e), _) | (_, Err(e)) if is_wrong_type(&e) => None,
                (Err(e), _) | (_, Err(e)) => return Err(self.err(op, e)),
                (Ok(Value::Null), _) => None,
                (Ok(header), Ok(len)) => {
                    let header = header
                        .into_bytes()
                        .ok_or_else(|| bad_reply("GETRANGE answered something else than bytes"))?;
                    let len = len
                        .as_u64()
                        .ok_or_else(|| bad_reply("STRLEN answered something else than a number"))?;
                    Some((header, len))
                }
            });
        }
        Ok(headers)
    }

    /// Unlinks `keys`, one command each (keys of one page may sit in different
    /// slots), in one pipeline followed by `WAIT` when writes wait for replicas.
    pub(crate) async fn unlink(&self, op: &'static str, keys: &[String]) -> Result<()> {
        let pipeline = self.pool.next().pipeline();
        for k in keys {
            pipeline
                .unlink::<(), _>(k.as_str())
                .await
                .map_err(|e| self.err(op, e))?;
        }
        for r in self.finish(&pipeline, keys.len()).await {
            r.map_err(|e| self.err(op, e))?;
        }
        Ok(())
    }

    /// Deletes one key (a namespace's index).
    pub(crate) async fn del(&self, op: &'static str, key: &str) -> Result<()> {
        let _: i64 = self.pool.del(key).await.map_err(|e| self.err(op, e))?;
        Ok(())
    }

    /// A number in a hash, if it is there.
    pub(crate) async fn hget(
        &self,
        op: &'static str,
        hash: &str,
        field: &str,
    ) -> Result<Option<u64>> {
        self.pool
            .hget(hash, field)
            .await
            .map_err(|e| self.err(op, e))
    }

    /// Sets a number in a hash, or removes it (`None`).
    pub(crate) async fn hset(
        &self,
        op: &'static str,
        hash: &str,
        field: &str,
        value: Option<u64>,
    ) -> Result<()> {
        let _: i64 = match value {
            Some(v) => self.pool.hset(hash, (field, v.to_string())).await,
            None => self.pool.hdel(hash, field).await,
        }
        .map_err(|e| self.err(op, e))?;
        Ok(())
    }

    /// The members of a sorted set scored above `min` (`ZCOUNT key (min +inf`).
    pub(crate) async fn count_above(&self, op: &'static str, key: &str, min: u64) -> Result<u64> {
        let cmd = CustomCommand::new_static("ZCOUNT", ClusterHash::FirstKey, false);
        let args = vec![key.to_owned(), format!("({min}"), "+inf".to_owned()];
        self.pool
            .next()
            .custom(cmd, args)
            .await
            .map_err(|e| self.err(op, e))
    }

    /// `TIME`: the server's seconds and microseconds.
    pub(crate) async fn time(&self) -> Result<Vec<String>> {
        let cmd = CustomCommand::new_static("TIME", ClusterHash::Random, false);
        self.pool
            .next()
            .custom(cmd, Vec::<Value>::new())
            .await
            .map_err(|e| self.err("time", e))
    }

    pub(crate) async fn quit(&self) -> Result<()> {
        self.pool.quit().await.map_err(|e| self.err("quit", e))
    }
}

/// fred's pipelines take no EVALSHA: it goes as a custom command routed by its first
/// key (argument 2: `EVALSHA sha numkeys key args..`).
fn evalsha() -> CustomCommand {
    CustomCommand::new_static("EVALSHA", ClusterHash::Offset(2), false)
}

fn evalsha_args(script: &Script, (keys, args): &Call) -> Vec<Value> {
    let mut full = Vec::with_capacity(keys.len() + args.len() + 2);
    full.push(Value::String(script.sha1().clone()));
    full.push(Value::Integer(keys.len() as i64));
    full.extend(keys.iter().map(|k| Value::from(k.as_str())));
    full.extend(args.iter().cloned());
    full
}

/// Whole milliseconds, saturating.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// At most 64 characters of a server's unexpected answer, for an error message.
fn truncated(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// What one `SCAN` listed: the keys, and apart from them, as lossy text, the keys
/// that are not UTF-8. Every key this crate writes is a `str`, so those are never
/// records of a registry: walks pass them by, and scans list them as skipped.
#[derive(Debug, Default)]
pub(crate) struct Listed {
    pub(crate) keys: Vec<String>,
    pub(crate) foreign: Vec<String>,
}

impl Listed {
    fn of(raw: Vec<bytes::Bytes>) -> Self {
        let mut listed = Listed {
            keys: Vec::with_capacity(raw.len()),
            foreign: Vec::new(),
        };
        for key in raw {
            match String::from_utf8(key.to_vec()) {
                Ok(key) => listed.keys.push(key),
                Err(e) => listed
                    .foreign
                    .push(String::from_utf8_lossy(e.as_bytes()).into_owned()),
            }
        }
        listed
    }
}
