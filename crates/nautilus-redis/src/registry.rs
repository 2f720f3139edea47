//! The Redis registry.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fred::prelude::{
    ClientLike, ClusterInterface, Config, Error as FredError, ErrorKind, HashesInterface,
    KeysInterface, Pool, ReconnectPolicy, Server,
};
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand, FromValue, Key, Value};
use nautilus_core::{
    Capabilities, Capacity, Condition, Cursor, DeleteOptions, Entry, Error, Expiry, Limits, Page,
    PutItem, PutOptions, Registry, Result, Stats, Timestamp, Version, VersionClock, async_trait,
};

use tokio::sync::oneshot;

use crate::coalesce::{Coalescer, Raw, Route};
use crate::codec::{Stored, decode, encode_record, halves, join};
use crate::config::{RedisConfig, redact};
use crate::scripts::Scripts;

const BACKEND: &str = "redis";

/// Coalesced gets and puts (see [`crate::coalesce`]): beyond this many of a kind in
/// flight, they queue for a batch (`MGET`, or one call of the multi-record put
/// script), ...
const COALESCE_DIRECT: usize = 2;
/// ... of which this many are in flight at a time (measured on 2 cores at 64 tasks:
/// 2 did best; 1 left the connection idle between batches, 4 made them smaller) ...
const COALESCE_BATCHES: usize = 2;
/// ... each carrying at most this many keys (or records, for puts).
const COALESCE_MAX_KEYS: usize = 128;
/// Puts of larger values are always sent on their own: batching pays off for small
/// records, and keeps a batch of puts within 2 MiB.
const COALESCE_MAX_VALUE: usize = 16 * 1024;
/// A batch of `put_many` goes out as calls of the multi-record put script of at most
/// this many records ...
const PUT_CHUNK_RECORDS: usize = 128;
/// ... and about this many bytes (a record larger than that is a call of its own).
const PUT_CHUNK_BYTES: usize = 512 * 1024;

/// A put ready to send: its full key and its script arguments (see
/// [`RedisRegistry::put_args`]).
struct PutCall {
    key: String,
    args: Vec<Value>,
}

/// A put's outcome as the put script answers it: a code byte and 8 bytes (see
/// `PUT_ONE` in the scripts).
type PutOutcome = [u8; PUT_OUTCOME];
const PUT_OUTCOME: usize = 9;
/// The outcome of one put from its script call.
type PutRaw = Result<PutOutcome>;

/// The full keys of a batch read, written once into one buffer: fred takes each key as
/// a slice of it, with no allocation or copy per key.
struct KeyBatch {
    buf: Bytes,
    /// Where each full key ends in `buf` (it starts where the one before ends).
    ends: Vec<usize>,
    prefix: usize,
}

impl KeyBatch {
    /// The full keys of `names` under `prefix`.
    fn new<'a>(prefix: &str, names: impl ExactSizeIterator<Item = &'a str> + Clone) -> Self {
        let bytes = names.clone().map(|n| prefix.len() + n.len()).sum();
        let mut buf = BytesMut::with_capacity(bytes);
        let mut ends = Vec::with_capacity(names.len());
        for name in names {
            buf.extend_from_slice(prefix.as_bytes());
            buf.extend_from_slice(name.as_bytes());
            ends.push(buf.len());
        }
        KeyBatch {
            buf: buf.freeze(),
            ends,
            prefix: prefix.len(),
        }
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn span(&self, i: usize) -> (usize, usize) {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        (start, self.ends[i])
    }

    /// Key `i`, as fred takes it.
    fn key(&self, i: usize) -> Key {
        let (start, end) = self.span(i);
        Key::from(self.buf.slice(start..end))
    }

    fn keys(&self) -> Vec<Key> {
        (0..self.len()).map(|i| self.key(i)).collect()
    }

    /// Key `i` as the caller named it (without the namespace), for errors.
    fn name(&self, i: usize) -> &str {
        let (start, end) = self.span(i);
        // Written from `&str`s, so always UTF-8.
        std::str::from_utf8(&self.buf[start + self.prefix..end]).unwrap_or_default()
    }
}

/// A registry on Redis (standalone, Sentinel or Cluster), through a fred connection
/// pool. Cloning is cheap and shares the pool.
#[derive(Clone)]
pub struct RedisRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// `namespace:`; every key of this registry starts with it.
    prefix: String,
    /// The namespace's meta hash (its record limit) and index of live records, on a
    /// single server only: on Cluster they would sit in other slots than the records.
    /// `#` cannot clash with record keys, which all start with `namespace:`.
    meta_key: String,
    index_key: String,
    url: String,
    limits: Limits,
    scripts: Scripts,
    cluster: bool,
    timeout: Duration,
    tombstone_ms: u64,
    /// Hands out the candidate versions of puts, on the server's clock as estimated
    /// through `clock_offset`.
    versions: VersionClock,
    /// The server's clock minus ours, in milliseconds, from `TIME` (see
    /// [`RedisRegistry::calibrate`]).
    clock_offset: AtomicI64,
    /// Concurrent gets batched into `MGET` (single servers, unless turned off).
    reads: Option<Coalescer<String, Raw>>,
    /// Concurrent puts batched into one multi-record script call (likewise).
    writes: Option<Coalescer<PutCall, PutRaw>>,
    /// Every write waits (`WAIT`) for this many replicas, this long on the server.
    replicas: Option<(u32, Duration)>,
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    updates: AtomicU64,
    deletes: AtomicU64,
}

impl fmt::Debug for RedisRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRegistry")
            .field("url", &self.inner.url)
            .field("prefix", &self.inner.prefix)
            .field("cluster", &self.inner.cluster)
            .finish_non_exhaustive()
    }
}

/// Maps a fred error at the edge of this crate: fred's type never leaves it.
fn map_err(url: &str, op: &'static str, timeout: Duration, e: FredError) -> Error {
    match e.kind() {
        ErrorKind::Timeout => Error::Timeout { op, after: timeout },
        ErrorKind::IO | ErrorKind::Canceled | ErrorKind::Routing | ErrorKind::Cluster => {
            Error::Unavailable {
                node: url.to_owned(),
                source: Box::new(e),
            }
        }
        // fred reports a command it had no connection for (mid-reconnect), or one
        // whose connection closed while it was in flight, as unknown, in these words.
        ErrorKind::Unknown
            if e.details().starts_with("Failed to route command")
                || e.details().starts_with("Too many failed write attempts") =>
        {
            Error::Unavailable {
                node: url.to_owned(),
                source: Box::new(e),
            }
        }
        _ => Error::Backend {
            backend: BACKEND,
            source: Box::new(e),
        },
    }
}

/// Whether the server refused the connection's credentials or its TLS handshake
/// failed: the configuration's fault, which retrying will not mend.
fn refused_by_config(e: &FredError) -> bool {
    #[cfg(feature = "tls")]
    {
        // rustls's verdicts reach fred as IO errors; their text is all there is.
        let details = e.details();
        if matches!(e.kind(), ErrorKind::Tls)
            || [
                "InvalidCertificate",
                "AlertReceived",
                "received fatal alert",
            ]
            .iter()
            .any(|m| details.contains(m))
        {
            return true;
        }
    }
    matches!(e.kind(), ErrorKind::Auth)
        || ["WRONGPASS", "NOAUTH", "NOPERM"]
            .iter()
            .any(|code| e.details().starts_with(code))
}

/// Escapes glob characters so a key prefix matches itself only in `SCAN MATCH`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Milliseconds the scripts can add and compare exactly: Lua numbers are doubles,
/// exact up to 2^53 (a date some 285,000 years away).
fn within_lua(ms: u64) -> Result<u64> {
    if ms <= 1 << 53 {
        Ok(ms)
    } else {
        Err(Error::invalid_argument(
            "the expiry is too far in the future for Redis scripts (over 2^53 ms)",
        ))
    }
}

/// Expiry as the scripts take it: (ttl ms, expire-at ms), at most one non-zero.
fn expiry_args(expiry: Expiry) -> Result<(u64, u64)> {
    let (ttl, at) = expiry_parts(expiry)?;
    Ok((within_lua(ttl)?, within_lua(at)?))
}

fn expiry_parts(expiry: Expiry) -> Result<(u64, u64)> {
    match expiry {
        Expiry::Never => Ok((0, 0)),
        Expiry::After(d) if d.is_zero() => {
            Err(Error::invalid_argument("a TTL must be longer than zero"))
        }
        Expiry::After(d) => Ok((
            u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX),
            0,
        )),
        Expiry::At(t) if t.as_millis() == 0 => Err(Error::invalid_argument(
            "an expiry instant must be after the epoch",
        )),
        Expiry::At(t) => Ok((0, t.as_millis())),
        _ => Err(Error::invalid_argument("unsupported expiry")),
    }
}

/// The conflict a script reported, worded by core's own check of the condition
/// (`actual`: the live version the script saw, if any).
fn conflict(key: &str, condition: Condition, actual: Option<Version>) -> Error {
    match condition.check(key, actual) {
        Err(e) => e,
        Ok(()) => bad_reply("a script reported a conflict its condition does not have"),
    }
}

/// The error a script's reply code stands for (-1 corrupt, -2 expiry not in the
/// future, -3 capacity, with the limit as `detail`), if it stands for one.
fn code_error(key: &str, code: i64, detail: Option<i64>) -> Option<Error> {
    match code {
        -1 => Some(Error::corrupt(key, "not a Nautilus record")),
        -2 => Some(not_in_future()),
        -3 => Some(Error::CapacityExceeded {
            limit: format!("{} records", detail.unwrap_or(0)),
        }),
        _ => None,
    }
}

fn not_in_future() -> Error {
    Error::invalid_argument("the expiry is not in the future")
}

/// The bytes an argument puts on the wire, roughly (for sizing batches).
fn value_len(v: &Value) -> usize {
    match v {
        Value::Bytes(b) => b.len(),
        Value::String(s) => s.len(),
        _ => 8,
    }
}

/// A coalescer whose batches `run` on the registry, for as long as it lives.
fn coalescer<Q, A, F, Fut>(weak: &Weak<Inner>, run: F) -> Coalescer<Q, A>
where
    Q: Send + 'static,
    A: Send + 'static,
    F: Fn(RedisRegistry, Vec<Q>) -> Fut + Send + 'static,
    Fut: Future<Output = Vec<A>> + Send + 'static,
{
    let weak = weak.clone();
    Coalescer::start(
        COALESCE_DIRECT,
        COALESCE_BATCHES,
        COALESCE_MAX_KEYS,
        move |batch| {
            let inner = weak.upgrade()?;
            Some(run(RedisRegistry { inner }, batch))
        },
    )
}

/// The outcome of one put in the put script's reply.
fn put_outcome(reply: &[u8]) -> PutRaw {
    PutOutcome::try_from(reply)
        .map_err(|_| bad_reply("a put script answered an outcome of the wrong length"))
}

/// The outcomes of `n` puts in a put script's reply; all of them errors if the reply
/// is not `n` outcomes long.
fn put_outcomes(reply: &[u8], n: usize) -> Vec<PutRaw> {
    if reply.len() == n * PUT_OUTCOME {
        reply.chunks_exact(PUT_OUTCOME).map(put_outcome).collect()
    } else {
        (0..n).map(|_| put_outcome(reply)).collect()
    }
}

/// Answers each item in order: an item already failed keeps its error, the others
/// are answered by `run`, which gets them in order and gives one answer each.
async fn answer_in_place<T, R, Fut>(
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

/// `WAIT n ms`, the command that ends a pipeline of writes that wait for replicas.
fn wait_command(n: u32, after: Duration) -> (CustomCommand, Vec<Value>) {
    let cmd = CustomCommand::new_static("WAIT", ClusterHash::Random, false);
    (
        cmd,
        vec![Value::from(i64::from(n)), Value::from(millis(after))],
    )
}

/// What `WAIT n`'s answer (the last of its pipeline's) says of the writes before it:
/// nothing if `n` replicas acknowledged them, else the error they all get.
fn unreplicated(
    n: u32,
    answer: Option<std::result::Result<Value, FredError>>,
) -> Option<FredError> {
    match answer {
        Some(Ok(Value::Integer(acked))) if acked >= i64::from(n) => None,
        Some(Ok(acked)) => Some(FredError::new(
            ErrorKind::Timeout,
            format!("the write was acknowledged by {acked:?} of {n} replicas"),
        )),
        Some(Err(e)) => Some(e),
        None => Some(FredError::new(ErrorKind::Unknown, "missing WAIT reply")),
    }
}

/// The live record in a read's stored bytes, if any.
fn live_entry(key: &str, raw: Option<Bytes>) -> Result<Option<Entry>> {
    Ok(match raw {
        None => None,
        Some(raw) => match decode(key, raw)? {
            Stored::Record(e) => Some(e),
            Stored::Tombstone => None,
        },
    })
}

/// Whole milliseconds, saturating.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn bad_reply(what: &'static str) -> Error {
    Error::Backend {
        backend: BACKEND,
        source: what.into(),
    }
}

/// A script reply, or the error its code stands for (see [`code_error`]). Every
/// integer write reply passes here once; after it, `reply[0]` exists.
fn checked(key: &str, reply: Vec<i64>) -> Result<Vec<i64>> {
    match reply.first() {
        None => Err(bad_reply("empty script reply")),
        Some(&code) => match code_error(key, code, reply.get(1).copied()) {
            Some(e) => Err(e),
            None => Ok(reply),
        },
    }
}

/// How often the estimate of the server's clock is refreshed.
const CALIBRATE_EVERY: Duration = Duration::from_secs(30);

impl RedisRegistry {
    /// Connects, loads the scripts, and checks the server answers. A malformed URL, a
    /// host that does not resolve or a server that does not answer within
    /// `connect_timeout_ms` is an error here, not at the first command.
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        let namespace = config.namespace.clone();
        if namespace.is_empty() || namespace.contains(['{', '}']) {
            return Err(Error::invalid_argument(
                "a Redis namespace must be non-empty and free of '{' and '}'",
            ));
        }
        let url = redact(&config.url);
        const SCHEMES: [&str; 6] = [
            "redis",
            "rediss",
            "redis-cluster",
            "rediss-cluster",
            "redis-sentinel",
            "rediss-sentinel",
        ];
        match config.url.split_once("://") {
            Some((scheme, _)) if SCHEMES.contains(&scheme) => {}
            _ => {
                return Err(Error::invalid_argument(format!(
                    "invalid Redis URL {url}: expected one of {}:// ",
                    SCHEMES.join("://, ")
                )));
            }
        }
        let mut fred_config = Config::from_url(&config.url)
            .map_err(|e| Error::invalid_argument(format!("invalid Redis URL {url}: {e}")))?;
        crate::tls::apply(&config, &mut fred_config)?;
        let cluster = fred_config.server.is_clustered();
        if cluster && config.wait_replicas > 0 {
            return Err(Error::invalid_argument(
                "waiting for replicas is offered on standalone Redis and Sentinel, not on \
                 Cluster (a write's WAIT would have to reach its key's primary on the same \
                 connection)",
            ));
        }
        let timeout = Duration::from_millis(config.command_timeout_ms.max(1));
        let connect_timeout = Duration::from_millis(config.connect_timeout_ms.max(1));
        let mut builder = fred::types::Builder::from_config(fred_config);
        builder
            .with_connection_config(|c| {
                c.connection_timeout = connect_timeout;
                c.internal_command_timeout = timeout;
                // A command whose connection closes while it is in flight may have
                // run: fred would send it again after reconnecting, and a write sent
                // twice reports a conflict with itself (a put-if-absent, a
                // compare-and-swap). It fails instead, transiently, outcome unknown.
                // Not on Cluster: there fred spends the same attempts on following
                // MOVED and ASK redirections, which a single attempt would fail.
                c.max_command_attempts = if cluster { 3 } else { 1 };
            })
            .with_performance_config(|p| {
                p.default_command_timeout = timeout;
            })
            .set_policy(ReconnectPolicy::new_exponential(
                config.reconnect_max_attempts,
                50,
                config.reconnect_max_delay_ms.max(50),
                2,
            ));
        let pool = builder
            .build_pool(config.pool_size.max(1))
            .map_err(|e| Error::invalid_argument(format!("Redis configuration {url}: {e}")))?;
        match tokio::time::timeout(connect_timeout, pool.init()).await {
            Ok(Ok(_handle)) => {}
            Ok(Err(e)) => {
                let _ = pool.quit().await;
                // Refused credentials or TLS are the configuration's fault: retrying
                // will not help, so they are not `Unavailable`.
                return Err(if refused_by_config(&e) {
                    Error::invalid_argument(format!(
                        "Redis at {url} refused the connection's credentials or TLS: {}",
                        e.details()
                    ))
                } else {
                    Error::Unavailable {
                        node: url.clone(),
                        source: Box::new(e),
                    }
                });
            }
            Err(_) => {
                let _ = pool.quit().await;
                return Err(Error::Timeout {
                    op: "connect",
                    after: connect_timeout,
                });
            }
        }
        let registry = RedisRegistry {
            inner: Arc::new_cyclic(|weak: &Weak<Inner>| Inner {
                pool,
                prefix: format!("{namespace}:"),
                meta_key: format!("{namespace}#meta"),
                index_key: format!("{namespace}#index"),
                url,
                limits: Limits::default()
                    .with_max_key_bytes(config.max_key_bytes)
                    .with_max_value_bytes(config.max_value_bytes),
                scripts: Scripts::new(),
                cluster,
                timeout,
                tombstone_ms: config.tombstone_ms.max(2),
                versions: VersionClock::new(),
                clock_offset: AtomicI64::new(0),
                reads: (config.coalesce_reads && !cluster)
                    .then(|| coalescer(weak, RedisRegistry::get_batch)),
                writes: (config.coalesce_writes && !cluster)
                    .then(|| coalescer(weak, RedisRegistry::put_batch)),
                // The replicas get three quarters of the command timeout, so that the
                // `WAIT` answers before the command times out.
                replicas: (config.wait_replicas > 0).then(|| {
                    (
                        config.wait_replicas,
                        (timeout * 3 / 4).max(Duration::from_millis(1)),
                    )
                }),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                inserts: AtomicU64::new(0),
                updates: AtomicU64::new(0),
                deletes: AtomicU64::new(0),
            }),
        };
        for script in registry.inner.scripts.all() {
            script
                .load(registry.inner.pool.next())
                .await
                .map_err(|e| registry.err("script load", e))?;
        }
        registry.calibrate().await?;
        let weak = Arc::downgrade(&registry.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(CALIBRATE_EVERY).await;
                let Some(inner) = weak.upgrade() else { break };
                // A failure keeps the last estimate; the next round tries again.
                let _ = RedisRegistry { inner }.calibrate().await;
            }
        });
        Ok(registry)
    }

    /// Estimates the server's clock from `TIME`, halfway through the round trip.
    /// Puts take their candidate version and resolve TTLs on that estimate, so an
    /// expiry means the same instant to Redis, which enforces it, and to readers of
    /// the record's header. (On Cluster: the clock of whichever primary answers.)
    async fn calibrate(&self) -> Result<()> {
        let before = Timestamp::now().as_millis();
        let cmd = CustomCommand::new_static("TIME", ClusterHash::Random, false);
        let time: Vec<String> = self
            .inner
            .pool
            .next()
            .custom(cmd, Vec::<Value>::new())
            .await
            .map_err(|e| self.err("time", e))?;
        let after = Timestamp::now().as_millis();
        // The server's answer is checked, never trusted to fit: no overflow, no panic.
        let server = match time.as_slice() {
            [secs, micros] => secs
                .parse::<u64>()
                .ok()
                .zip(micros.parse::<u64>().ok())
                .and_then(|(s, us)| s.checked_mul(1000)?.checked_add(us / 1000))
                .and_then(|ms| i64::try_from(ms).ok()),
            _ => None,
        }
        .ok_or_else(|| bad_reply("TIME did not answer seconds and microseconds"))?;
        let local = before + (after.saturating_sub(before)) / 2;
        let offset = server.saturating_sub(i64::try_from(local).unwrap_or(i64::MAX));
        self.inner.clock_offset.store(offset, Ordering::Relaxed);
        Ok(())
    }

    /// Now on the server's clock, as estimated.
    fn server_now(&self) -> u64 {
        let local = Timestamp::now().as_millis();
        local.saturating_add_signed(self.inner.clock_offset.load(Ordering::Relaxed))
    }

    /// Closes the connections.
    pub async fn close(&self) -> Result<()> {
        self.inner
            .pool
            .quit()
            .await
            .map_err(|e| self.err("quit", e))
    }

    /// A read error: a key of another type under our namespace is a corrupt record.
    fn read_err(&self, key: &str, e: FredError) -> Error {
        if e.details().starts_with("WRONGTYPE") {
            Error::corrupt(key, "holds a Redis type other than a string")
        } else {
            self.err("get", e)
        }
    }

    fn err(&self, op: &'static str, e: FredError) -> Error {
        map_err(&self.inner.url, op, self.inner.timeout, e)
    }

    /// The KEYS of a write script: the record, plus the meta hash and the index on a
    /// single server (where the record limit is enforced).
    fn script_keys(&self, key: &str) -> Vec<String> {
        self.script_keys_full(self.full_key(key))
    }

    /// [`Self::script_keys`] from the record's full key.
    fn script_keys_full(&self, full: String) -> Vec<String> {
        if self.inner.cluster {
            vec![full]
        } else {
            vec![
                full,
                self.inner.meta_key.clone(),
                self.inner.index_key.clone(),
            ]
        }
    }

    fn full_key(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.inner.prefix.len() + key.len());
        k.push_str(&self.inner.prefix);
        k.push_str(key);
        k
    }

    /// Runs a script with raw KEYS (reloading it after NOSCRIPT); the reply unchecked.
    async fn eval<R: FromValue>(
        &self,
        op: &'static str,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<R> {
        self.eval_raw(script, keys, args)
            .await
            .map_err(|e| self.err(op, e))
    }

    /// Runs a write script for one record; its error replies already turned into
    /// errors (see [`checked`]).
    async fn call(
        &self,
        op: &'static str,
        script: &Script,
        key: &str,
        args: Vec<Value>,
    ) -> Result<Vec<i64>> {
        let reply = self.eval(op, script, self.script_keys(key), args).await?;
        checked(key, reply)
    }

    /// A queued operation's answer from its batch, waited for at most the command
    /// timeout; `None` if the batch was dropped without answering it.
    async fn queued<A>(&self, op: &'static str, answer: oneshot::Receiver<A>) -> Result<Option<A>> {
        match tokio::time::timeout(self.inner.timeout, answer).await {
            Ok(answer) => Ok(answer.ok()),
            Err(_) => Err(Error::Timeout {
                op,
                after: self.inner.timeout,
            }),
        }
    }

    /// One `GET`.
    async fn get_direct(&self, key: &str, full: String) -> Result<Option<Bytes>> {
        self.inner
            .pool
            .get(full)
            .await
            .map_err(|e| self.read_err(key, e))
    }

    /// One put on its own: one call of the put script.
    async fn put_direct(&self, call: PutCall) -> PutRaw {
        let keys = self.script_keys_full(call.key);
        let reply: Bytes = self
            .eval("put", &self.inner.scripts.put, keys, call.args)
            .await?;
        put_outcome(&reply)
    }

    /// The KEYS and ARGV of one call of the multi-record put script (single servers).
    fn put_many_call(&self, calls: impl IntoIterator<Item = PutCall>) -> (Vec<String>, Vec<Value>) {
        let mut keys = vec![self.inner.meta_key.clone(), self.inner.index_key.clone()];
        let mut args = Vec::new();
        for call in calls {
            keys.push(call.key);
            args.extend(call.args);
        }
        (keys, args)
    }

    /// The outcomes of `n` puts from the multi-record put script's reply.
    fn put_many_replies(
        n: usize,
        reply: std::result::Result<Bytes, FredError>,
        err: impl Fn(FredError) -> Error,
    ) -> Vec<PutRaw> {
        match reply {
            Ok(reply) => put_outcomes(&reply, n),
            Err(e) => (0..n).map(|_| Err(err(e.clone()))).collect(),
        }
    }

    /// Coalesced gets (see [`crate::coalesce`]): one read of their full keys.
    async fn get_batch(self, keys: Vec<String>) -> Vec<Raw> {
        let prefix = self.inner.prefix.len();
        let names = keys.iter().map(|k| k.get(prefix..).unwrap_or_default());
        let batch = KeyBatch::new(&self.inner.prefix, names);
        self.get_raw_many(&batch).await
    }

    /// Coalesced puts (see [`crate::coalesce`]): one call of the multi-record put
    /// script for them all, one reply each.
    async fn put_batch(self, calls: Vec<PutCall>) -> Vec<PutRaw> {
        let n = calls.len();
        let (keys, args) = self.put_many_call(calls);
        let reply = self
            .eval_raw(&self.inner.scripts.put_many, keys, args)
            .await;
        Self::put_many_replies(n, reply, |e| self.err("put", e))
    }

    /// A batch of puts on a single server: calls of the multi-record put script of
    /// up to [`PUT_CHUNK_RECORDS`] records and about [`PUT_CHUNK_BYTES`], all in one
    /// pipeline (one round trip); one answer per put, in order.
    async fn put_chunked(&self, calls: Vec<PutCall>) -> Vec<PutRaw> {
        let mut chunks: Vec<Vec<PutCall>> = Vec::new();
        let mut bytes = 0;
        for call in calls {
            let size = call.key.len() + call.args.iter().map(value_len).sum::<usize>();
            match chunks.last_mut() {
                Some(chunk)
                    if chunk.len() < PUT_CHUNK_RECORDS && bytes + size <= PUT_CHUNK_BYTES =>
                {
                    chunk.push(call);
                    bytes += size;
                }
                _ => {
                    chunks.push(vec![call]);
                    bytes = size;
                }
            }
        }
        let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
        let script_calls = chunks.into_iter().map(|c| self.put_many_call(c)).collect();
        let answers = self
            .pipeline_scripts::<Bytes>(&self.inner.scripts.put_many, script_calls)
            .await;
        sizes
            .into_iter()
            .zip(answers)
            .flat_map(|(n, answer)| Self::put_many_replies(n, answer, |e| self.err("put", e)))
            .collect()
    }

    /// A read's result from the stored bytes, counted as a hit or a miss.
    fn read(&self, key: &str, raw: Option<Bytes>) -> Result<Option<Entry>> {
        let found = live_entry(key, raw)?;
        let counter = if found.is_some() {
            &self.inner.hits
        } else {
            &self.inner.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(found)
    }

    /// A put's arguments: the record as stored (header with a candidate version from
    /// this client's clock, then the value), its expiry, its condition and now; and the
    /// candidate version.
    fn put_args(&self, value: &[u8], options: PutOptions) -> Result<(Vec<Value>, Version)> {
        let now = self.server_now();
        let expires_at = options
            .expiry
            .resolve(Timestamp::from_millis(now))?
            .map_or(0, Timestamp::as_millis);
        within_lua(expires_at)?;
        let version = self.inner.versions.next(Timestamp::from_millis(now), None);
        let stored = encode_record(version, expires_at, value);
        let condition = match options.condition {
            Condition::Absent => Value::from_static_str("N"),
            Condition::Version(v) => {
                Value::Bytes(Bytes::copy_from_slice(&v.as_raw().to_be_bytes()))
            }
            _ => Value::from_static_str(""),
        };
        let args = vec![
            Value::Bytes(stored.into()),
            Value::from(expires_at.to_string()),
            condition,
            Value::from(now.to_string()),
        ];
        Ok((args, version))
    }

    /// A put's result from its outcome (see `PUT_ONE` in the scripts).
    fn put_reply(
        &self,
        key: &str,
        options: PutOptions,
        candidate: Version,
        outcome: &PutOutcome,
    ) -> Result<Version> {
        let mut payload = [0u8; 8];
        payload.copy_from_slice(&outcome[1..]);
        let payload = u64::from_be_bytes(payload);
        let (version, counter) = match outcome[0] {
            b'1' => (candidate, &self.inner.inserts),
            b'2' => (candidate, &self.inner.updates),
            code @ (b'I' | b'R') => {
                let bumped = Version::from_raw(payload);
                self.inner.versions.observe(bumped);
                let counter = if code == b'R' {
                    &self.inner.updates
                } else {
                    &self.inner.inserts
                };
                (bumped, counter)
            }
            b'c' => {
                return Err(conflict(
                    key,
                    options.condition,
                    Some(Version::from_raw(payload)),
                ));
            }
            b'n' => return Err(conflict(key, options.condition, None)),
            b'x' => return Err(Error::corrupt(key, "not a Nautilus record")),
            b'L' => {
                return Err(Error::CapacityExceeded {
                    limit: format!("{payload} records"),
                });
            }
            _ => return Err(bad_reply("unknown put outcome")),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(version)
    }

    async fn delete_one(&self, key: &str, options: DeleteOptions) -> Result<bool> {
        self.inner.limits.check_key(key)?;
        if matches!(options.condition, Condition::Absent) {
            // "Delete only if absent" deletes nothing: no record, or a conflict.
            return match self.get_entry(key).await? {
                None => Ok(false),
                Some(e) => Err(Error::Conflict {
                    key: key.to_owned(),
                    expected: None,
                    actual: Some(e.version),
                }),
            };
        }
        let args = Self::delete_args(options.condition, &self.inner);
        let reply = self
            .call("delete", &self.inner.scripts.delete, key, args)
            .await?;
        self.delete_reply(key, options, &reply)
    }

    fn delete_args(condition: Condition, inner: &Inner) -> Vec<Value> {
        let (cond, (hi, lo)) = match condition {
            Condition::Version(v) => ("V", halves(v.as_raw())),
            _ => ("A", (0, 0)),
        };
        vec![
            Value::from(cond),
            Value::from(hi.to_string()),
            Value::from(lo.to_string()),
            Value::from(inner.tombstone_ms.to_string()),
        ]
    }

    /// A delete's outcome from its checked reply.
    fn delete_reply(&self, key: &str, options: DeleteOptions, reply: &[i64]) -> Result<bool> {
        match reply[0] {
            1 => {
                self.inner.deletes.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            2 => Ok(false),
            _ => Err(conflict(
                key,
                options.condition,
                (reply.len() >= 3).then(|| Version::from_raw(join(reply[1], reply[2]))),
            )),
        }
    }

    /// Runs one script for many keys in one pipeline (one round trip per node; on
    /// Cluster fred sends each call to its key's node, so nothing is CROSSSLOT).
    /// Calls already failed are answered as they are.
    async fn run_many<R: FromValue>(
        &self,
        op: &'static str,
        script: &Script,
        calls: Vec<Result<(Vec<String>, Vec<Value>)>>,
    ) -> Vec<Result<R>> {
        answer_in_place(calls, |calls| async move {
            self.pipeline_scripts(script, calls)
                .await
                .into_iter()
                .map(|reply| reply.map_err(|e| self.err(op, e)))
                .collect()
        })
        .await
    }

    /// Calls a script once per `(KEYS, ARGV)` in one pipeline; one answer per call, in
    /// order. With [`RedisConfig::wait_for_replicas`], the pipeline ends with `WAIT`,
    /// on the same connection as the writes: a call answers only once the replicas
    /// acknowledged it, and fails with a timeout otherwise (applied on the primary,
    /// not known to be replicated). Calls that fail with NOSCRIPT (the server
    /// restarted or failed over) are sent again once the script is loaded.
    async fn pipeline_scripts<R: FromValue>(
        &self,
        script: &Script,
        calls: Vec<(Vec<String>, Vec<Value>)>,
    ) -> Vec<std::result::Result<R, FredError>> {
        let client = self.inner.pool.next();
        let mut results: Vec<Option<std::result::Result<R, FredError>>> =
            (0..calls.len()).map(|_| None).collect();
        let mut pending: Vec<(usize, Vec<String>, Vec<Value>)> = calls
            .into_iter()
            .enumerate()
            .map(|(i, (keys, args))| (i, keys, args))
            .collect();
        for round in 0..2 {
            if pending.is_empty() {
                break;
            }
            if round == 1
                && let Err(e) = script.load(client).await
            {
                for (i, ..) in pending.drain(..) {
                    results[i] = Some(Err(e.clone()));
                }
                break;
            }
            let pipeline = client.pipeline();
            let mut sent = Vec::new();
            for (i, keys, args) in pending.drain(..) {
                // fred's pipelines take no EVALSHA: send it as a custom command routed
                // by its first key (argument 2: `EVALSHA sha numkeys key args..`).
                let cmd = CustomCommand::new_static("EVALSHA", ClusterHash::Offset(2), false);
                let mut full = Vec::with_capacity(keys.len() + args.len() + 2);
                full.push(Value::String(script.sha1().clone()));
                full.push(Value::Integer(keys.len() as i64));
                full.extend(keys.iter().map(|k| Value::from(k.as_str())));
                full.extend(args.iter().cloned());
                match pipeline.custom::<(), Value>(cmd, full).await {
                    Ok(()) => sent.push((i, keys, args)),
                    Err(e) => results[i] = Some(Err(e)),
                }
            }
            let wait = self.inner.replicas.filter(|_| !sent.is_empty());
            let mut failed = None;
            if let Some((n, after)) = wait {
                let (cmd, args) = wait_command(n, after);
                failed = pipeline.custom::<(), Value>(cmd, args).await.err();
            }
            let mut replies = pipeline.try_all::<Value>().await;
            if let Some((n, _)) = wait
                && failed.is_none()
            {
                failed = unreplicated(n, replies.pop());
            }
            for ((i, keys, args), reply) in sent.into_iter().zip(replies) {
                results[i] = match reply {
                    Err(e) if e.details().starts_with("NOSCRIPT") => {
                        pending.push((i, keys, args));
                        continue;
                    }
                    Err(e) => Some(Err(e)),
                    Ok(_) if failed.is_some() => failed.clone().map(Err),
                    Ok(value) => Some(R::from_value(value)),
                };
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(FredError::new(ErrorKind::Unknown, "missing pipeline reply"))
                })
            })
            .collect()
    }

    /// One script call, through [`Self::pipeline_scripts`] (and so followed by `WAIT`)
    /// when writes wait for replicas.
    async fn eval_raw<R: FromValue>(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> std::result::Result<R, FredError> {
        if self.inner.replicas.is_none() {
            return script
                .evalsha_with_reload(self.inner.pool.next(), keys, args)
                .await;
        }
        self.pipeline_scripts(script, vec![(keys, args)])
            .await
            .pop()
            .unwrap_or_else(|| Err(FredError::new(ErrorKind::Unknown, "missing reply")))
    }

    /// Empties the namespace's index of live records (single servers only).
    async fn drop_index(&self, op: &'static str) -> Result<()> {
        let _: i64 = self
            .inner
            .pool
            .del(self.inner.index_key.as_str())
            .await
            .map_err(|e| self.err(op, e))?;
        Ok(())
    }

    /// A walk over every key of the namespace.
    fn walk(&self) -> Walk {
        Walk {
            nodes: self.scan_nodes(),
            node: 0,
            cursor: "0".to_owned(),
            pattern: format!("{}*", glob_escape(&self.inner.prefix)),
        }
    }

    /// The next non-empty page of a walk (SCAN, primary after primary), or `None`
    /// when every primary has been walked.
    async fn next_page(&self, walk: &mut Walk) -> Result<Option<Vec<String>>> {
        while walk.node < walk.nodes.len() {
            let (next, keys) = self
                .scan_keys(
                    walk.nodes[walk.node].as_ref(),
                    &walk.cursor,
                    &walk.pattern,
                    1000,
                )
                .await?;
            if next == "0" {
                walk.node += 1;
                walk.cursor = "0".to_owned();
            } else {
                walk.cursor = next;
            }
            if !keys.is_empty() {
                return Ok(Some(keys));
            }
        }
        Ok(None)
    }

    /// The primaries to scan: one `None` for a single server, each primary for Cluster.
    fn scan_nodes(&self) -> Vec<Option<Server>> {
        if !self.inner.cluster {
            return vec![None];
        }
        let mut nodes = self
            .inner
            .pool
            .next()
            .cached_cluster_state()
            .map(|s| s.unique_primary_nodes())
            .unwrap_or_default();
        nodes.sort_by_key(|s| s.to_string());
        nodes.into_iter().map(Some).collect()
    }

    async fn scan_keys(
        &self,
        node: Option<&Server>,
        cursor: &str,
        pattern: &str,
        count: u32,
    ) -> Result<(String, Vec<String>)> {
        let client = self.inner.pool.next();
        let reply: (String, Vec<String>) = match node {
            Some(server) => {
                client
                    .with_cluster_node(server.clone())
                    .scan_page(cursor.to_owned(), pattern.to_owned(), Some(count), None)
                    .await
            }
            None => {
                client
                    .scan_page(cursor.to_owned(), pattern.to_owned(), Some(count), None)
                    .await
            }
        }
        .map_err(|e| self.err("scan", e))?;
        Ok(reply)
    }

    /// Reads many full keys in one round trip: one MGET on a single server; on Cluster
    /// a pipeline of GETs, which fred sends to each key's node at once (an MGET across
    /// slots would be CROSSSLOT).
    async fn get_raw_many(&self, keys: &KeyBatch) -> Vec<Result<Option<Bytes>>> {
        if keys.len() == 0 {
            return Vec::new();
        }
        if !self.inner.cluster {
            return match self
                .inner
                .pool
                .next()
                .mget::<Vec<Option<Bytes>>, _>(keys.keys())
                .await
            {
                Ok(values) if values.len() == keys.len() => self.check_misses(keys, values).await,
                Ok(values) => (0..keys.len())
                    .map(|_| {
                        Err(Error::Backend {
                            backend: BACKEND,
                            source: format!("MGET returned {} values", values.len()).into(),
                        })
                    })
                    .collect(),
                // A key of another type fails the whole MGET: fall back to one GET each
                // so only that key reports it.
                Err(e) if e.details().starts_with("WRONGTYPE") => self.get_raw_each(keys).await,
                Err(e) => (0..keys.len())
                    .map(|_| Err(self.err("get", e.clone())))
                    .collect(),
            };
        }
        self.get_raw_each(keys).await
    }

    /// MGET answers nil for a key of another type; tell those from real misses (one
    /// more round trip, only for batches that missed).
    async fn check_misses(
        &self,
        keys: &KeyBatch,
        values: Vec<Option<Bytes>>,
    ) -> Vec<Result<Option<Bytes>>> {
        let missed: Vec<usize> = (0..values.len()).filter(|&i| values[i].is_none()).collect();
        let mut out: Vec<Result<Option<Bytes>>> = values.into_iter().map(Ok).collect();
        if missed.is_empty() {
            return out;
        }
        let pipeline = self.inner.pool.next().pipeline();
        for &i in &missed {
            if let Err(e) = pipeline.exists::<(), _>(keys.key(i)).await {
                out[i] = Err(self.err("get", e));
            }
        }
        for (&i, exists) in missed.iter().zip(pipeline.try_all::<i64>().await) {
            match exists {
                Ok(1) => {
                    out[i] = Err(Error::corrupt(
                        keys.name(i),
                        "holds a Redis type other than a string",
                    ));
                }
                Ok(_) => {}
                Err(e) => out[i] = Err(self.err("get", e)),
            }
        }
        out
    }

    async fn get_raw_each(&self, keys: &KeyBatch) -> Vec<Result<Option<Bytes>>> {
        let pipeline = self.inner.pool.next().pipeline();
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
}

/// Where a walk over the whole namespace is (see [`RedisRegistry::walk`]).
struct Walk {
    nodes: Vec<Option<Server>>,
    node: usize,
    cursor: String,
    pattern: String,
}

/// A scan position: which primary, its SCAN cursor, and keys already listed by SCAN
/// but not yet returned (SCAN may return more keys than a page holds).
struct ScanPos {
    node: usize,
    cursor: String,
    pending: Vec<String>,
}

impl ScanPos {
    fn encode(&self) -> Cursor {
        let mut s = format!("{}:{}:", self.node, self.cursor);
        for k in &self.pending {
            s.push_str(&format!("{}:{k}", k.len()));
        }
        Cursor::new(s)
    }

    fn decode(c: &Cursor) -> Result<Self> {
        let bad = || Error::invalid_argument("not a Redis registry cursor");
        let (node, rest) = c.as_str().split_once(':').ok_or_else(bad)?;
        let (cursor, mut rest) = rest.split_once(':').ok_or_else(bad)?;
        let node = node.parse().map_err(|_| bad())?;
        if cursor != "done" && cursor.parse::<u64>().is_err() {
            return Err(bad());
        }
        let mut pending = Vec::new();
        while !rest.is_empty() {
            let (len, tail) = rest.split_once(':').ok_or_else(bad)?;
            let len: usize = len.parse().map_err(|_| bad())?;
            let key = tail.get(..len).ok_or_else(bad)?;
            pending.push(key.to_owned());
            rest = &tail[len..];
        }
        Ok(ScanPos {
            node,
            cursor: cursor.to_owned(),
            pending,
        })
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Registry for RedisRegistry {
    fn capabilities(&self) -> Capabilities {
        // A record limit needs the namespace's index in the same slot as every record:
        // single servers only.
        Capabilities::new(BACKEND)
            .with_persistent(true)
            .with_limits(!self.inner.cluster, false, false)
    }

    fn limits(&self) -> Limits {
        self.inner.limits
    }

    async fn get_entry(&self, key: &str) -> Result<Option<Entry>> {
        self.inner.limits.check_key(key)?;
        let full = self.full_key(key);
        let route = match self.inner.reads.as_ref() {
            Some(reads) => reads.route(full),
            None => Route::Direct(full, None),
        };
        let raw = match route {
            Route::Direct(full, _place) => self.get_direct(key, full).await?,
            Route::Queued(answer, _place) => match self.queued("get", answer).await? {
                Some(raw) => raw?,
                // The dispatcher dropped this get (its runtime is gone): read directly.
                None => self.get_direct(key, self.full_key(key)).await?,
            },
        };
        self.read(key, raw)
    }

    fn get_ready(&self, _key: &str) -> Option<Result<Option<Entry>>> {
        None
    }

    async fn put_opts(&self, key: &str, value: Bytes, options: PutOptions) -> Result<Version> {
        self.inner.limits.check_record(key, value.len())?;
        let (args, candidate) = self.put_args(&value, options)?;
        let call = PutCall {
            key: self.full_key(key),
            args,
        };
        let route = match self.inner.writes.as_ref() {
            Some(writes) if value.len() <= COALESCE_MAX_VALUE => writes.route(call),
            _ => Route::Direct(call, None),
        };
        let reply = match route {
            Route::Direct(call, _place) => self.put_direct(call).await?,
            Route::Queued(answer, _place) => match self.queued("put", answer).await? {
                Some(reply) => reply?,
                // Its batch was dropped (the runtime is shutting down); whether it was
                // sent is not known, so it is not sent again.
                None => {
                    return Err(Error::Unavailable {
                        node: self.inner.url.clone(),
                        source: "the batch carrying this put was dropped before it \
                                 answered; the put may or may not have been applied"
                            .into(),
                    });
                }
            },
        };
        self.put_reply(key, options, candidate, &reply)
    }

    async fn delete_opts(&self, key: &str, options: DeleteOptions) -> Result<bool> {
        self.delete_one(key, options).await
    }

    async fn touch(&self, key: &str, expiry: Expiry) -> Result<Option<Version>> {
        self.inner.limits.check_key(key)?;
        let (ttl, at) = expiry_args(expiry)?;
        let args = vec![Value::from(ttl.to_string()), Value::from(at.to_string())];
        let reply = self
            .call("touch", &self.inner.scripts.touch, key, args)
            .await?;
        match reply.as_slice() {
            [1, hi, lo, ..] => Ok(Some(Version::from_raw(join(*hi, *lo)))),
            _ => Ok(None),
        }
    }

    async fn import(&self, key: &str, entry: Entry) -> Result<bool> {
        self.inner.limits.check_record(key, entry.value.len())?;
        let (hi, lo) = halves(entry.version.as_raw());
        let exp = entry.expires_at.map_or(0, Timestamp::as_millis);
        let args = vec![
            Value::Bytes(entry.value),
            Value::from(hi.to_string()),
            Value::from(lo.to_string()),
            Value::from(exp.to_string()),
        ];
        let reply = self
            .call("import", &self.inner.scripts.import, key, args)
            .await?;
        Ok(reply[0] == 1)
    }

    async fn get_many(&self, keys: &[&str]) -> Vec<Result<Option<Entry>>> {
        let checked = keys
            .iter()
            .map(|&k| self.inner.limits.check_key(k).map(|()| k))
            .collect();
        answer_in_place(checked, |valid: Vec<&str>| async move {
            let batch = KeyBatch::new(&self.inner.prefix, valid.iter().copied());
            let raws = self.get_raw_many(&batch).await;
            let found: Vec<_> = valid
                .iter()
                .zip(raws)
                .map(|(key, raw)| raw.and_then(|r| live_entry(key, r)))
                .collect();
            let hits = found.iter().filter(|r| matches!(r, Ok(Some(_)))).count();
            let misses = found.iter().filter(|r| matches!(r, Ok(None))).count();
            self.inner.hits.fetch_add(hits as u64, Ordering::Relaxed);
            self.inner
                .misses
                .fetch_add(misses as u64, Ordering::Relaxed);
            found
        })
        .await
    }

    async fn put_many(&self, items: Vec<PutItem>) -> Vec<Result<Version>> {
        // One candidate per item, in order (none for an item refused before sending).
        let mut candidates = Vec::with_capacity(items.len());
        let calls: Vec<Result<PutCall>> = items
            .iter()
            .map(|item| {
                let prepared = self
                    .inner
                    .limits
                    .check_record(&item.key, item.value.len())
                    .and_then(|()| self.put_args(&item.value, item.options));
                candidates.push(prepared.as_ref().ok().map(|(_, c)| *c));
                prepared.map(|(args, _)| PutCall {
                    key: self.full_key(&item.key),
                    args,
                })
            })
            .collect();
        let replies = if self.inner.cluster {
            let calls = calls
                .into_iter()
                .map(|c| c.map(|c| (self.script_keys_full(c.key), c.args)))
                .collect();
            self.run_many::<Bytes>("put", &self.inner.scripts.put, calls)
                .await
                .into_iter()
                .map(|reply| reply.and_then(|r| put_outcome(&r)))
                .collect()
        } else {
            answer_in_place(calls, |calls| self.put_chunked(calls)).await
        };
        items
            .iter()
            .zip(replies.into_iter().zip(candidates))
            .map(|(item, (reply, candidate))| {
                let reply = reply?;
                let candidate = candidate.ok_or_else(|| bad_reply("a reply to a call not sent"))?;
                self.put_reply(&item.key, item.options, candidate, &reply)
            })
            .collect()
    }

    async fn delete_many(&self, keys: &[&str]) -> Vec<Result<bool>> {
        let calls = keys
            .iter()
            .map(|k| {
                self.inner.limits.check_key(k).map(|()| {
                    (
                        self.script_keys(k),
                        Self::delete_args(Condition::Always, &self.inner),
                    )
                })
            })
            .collect();
        let replies = self
            .run_many("delete", &self.inner.scripts.delete, calls)
            .await;
        keys.iter()
            .zip(replies)
            .map(|(k, reply)| self.delete_reply(k, DeleteOptions::default(), &checked(k, reply?)?))
            .collect()
    }

    async fn scan(&self, prefix: &str, cursor: Option<&Cursor>, limit: usize) -> Result<Page> {
        if limit == 0 {
            return Err(Error::invalid_argument(
                "a scan page must ask for at least one record",
            ));
        }
        let nodes = self.scan_nodes();
        let mut pos = match cursor {
            Some(c) => ScanPos::decode(c)?,
            None => ScanPos {
                node: 0,
                cursor: "0".into(),
                pending: Vec::new(),
            },
        };
        if pos.node >= nodes.len() {
            return Err(Error::invalid_argument("cursor from another deployment"));
        }
        let pattern = format!("{}*", glob_escape(&self.full_key(prefix)));
        // SCAN's COUNT is how much of the keyspace one call visits, not how many keys
        // match: on a server shared with other namespaces, keep scanning (a bounded
        // number of calls) rather than hand back a run of empty pages.
        let count = u32::try_from((limit * 4).clamp(100, 1000)).unwrap_or(1000);
        let mut calls = 0;
        while pos.pending.is_empty() && pos.node < nodes.len() && calls < 16 {
            if pos.cursor == "done" {
                pos.node += 1;
                pos.cursor = "0".into();
                continue;
            }
            let (next, keys) = self
                .scan_keys(nodes[pos.node].as_ref(), &pos.cursor, &pattern, count)
                .await?;
            calls += 1;
            pos.pending = keys;
            if next == "0" {
                // This primary is done once its pending keys are returned.
                pos.cursor = "0".into();
                if pos.pending.is_empty() {
                    pos.node += 1;
                } else {
                    pos.cursor = "done".into();
                }
            } else {
                pos.cursor = next;
            }
        }
        let take = pos.pending.len().min(limit);
        let prefix = self.inner.prefix.len();
        let names = pos.pending[..take]
            .iter()
            .map(|full| full.get(prefix..).unwrap_or_default());
        let batch = KeyBatch::new(&self.inner.prefix, names);
        pos.pending.drain(..take);
        let raws = self.get_raw_many(&batch).await;
        let mut records = Vec::with_capacity(batch.len());
        let mut skipped = Vec::new();
        for (i, raw) in raws.into_iter().enumerate() {
            let key = batch.name(i);
            match raw.and_then(|raw| live_entry(key, raw)) {
                Ok(Some(entry)) => records.push((key.to_owned(), entry)),
                Ok(None) => {}
                // Not a record of ours: listed, left alone, and no obstacle to paging.
                Err(Error::Corrupt { .. }) => skipped.push(key.to_owned()),
                Err(e) => return Err(e),
            }
        }
        if pos.pending.is_empty() && pos.cursor == "done" {
            pos.node += 1;
            pos.cursor = "0".into();
        }
        let next = (pos.node < nodes.len()).then(|| pos.encode());
        Ok(Page::new(records, next).with_skipped(skipped))
    }

    async fn count(&self) -> Result<u64> {
        let mut n = 0;
        let mut walk = self.walk();
        while let Some(keys) = self.next_page(&mut walk).await? {
            // Only the tag byte: a tombstone is not a record.
            let pipeline = self.inner.pool.next().pipeline();
            for k in &keys {
                pipeline
                    .getrange::<(), _>(k.as_str(), 0, 0)
                    .await
                    .map_err(|e| self.err("count", e))?;
            }
            for tag in pipeline.try_all::<Option<Bytes>>().await {
                match tag {
                    Ok(tag) if tag.as_deref() == Some(b"N") => n += 1,
                    Ok(_) => {}
                    // A key of another type under the namespace is not a record of ours.
                    Err(e) if e.details().starts_with("WRONGTYPE") => {}
                    Err(e) => return Err(self.err("count", e)),
                }
            }
        }
        Ok(n)
    }

    async fn clear(&self) -> Result<()> {
        let mut walk = self.walk();
        while let Some(keys) = self.next_page(&mut walk).await? {
            // One key per command: keys of one page may sit in different slots.
            let pipeline = self.inner.pool.next().pipeline();
            for k in &keys {
                pipeline
                    .unlink::<(), _>(k.as_str())
                    .await
                    .map_err(|e| self.err("clear", e))?;
            }
            if let Some((n, after)) = self.inner.replicas {
                let (cmd, args) = wait_command(n, after);
                pipeline
                    .custom::<(), Value>(cmd, args)
                    .await
                    .map_err(|e| self.err("clear", e))?;
            }
            let mut replies = pipeline.try_all::<Value>().await;
            if let Some((n, _)) = self.inner.replicas
                && let Some(e) = unreplicated(n, replies.pop())
            {
                return Err(self.err("clear", e));
            }
            for r in replies {
                r.map_err(|e| self.err("clear", e))?;
            }
        }
        if !self.inner.cluster {
            // The limit stays; the index of live records is now empty.
            self.drop_index("clear").await?;
        }
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        let _: String = self
            .inner
            .pool
            .next()
            .ping(None)
            .await
            .map_err(|e| self.err("ping", e))?;
        Ok(())
    }

    async fn stats(&self) -> Result<Stats> {
        let mut stats = Stats::default();
        stats.records = self.count().await?;
        stats.hits = self.inner.hits.load(Ordering::Relaxed);
        stats.misses = self.inner.misses.load(Ordering::Relaxed);
        stats.inserts = self.inner.inserts.load(Ordering::Relaxed);
        stats.updates = self.inner.updates.load(Ordering::Relaxed);
        stats.deletes = self.inner.deletes.load(Ordering::Relaxed);
        Ok(stats)
    }

    async fn capacity(&self) -> Result<Capacity> {
        if self.inner.cluster {
            return Ok(Capacity::unbounded());
        }
        let max: Option<u64> = self
            .inner
            .pool
            .hget(self.inner.meta_key.as_str(), "max_records")
            .await
            .map_err(|e| self.err("capacity", e))?;
        Ok(Capacity::unbounded().with_max_records(max))
    }

    async fn set_capacity(&self, capacity: Capacity) -> Result<()> {
        let capacity = capacity.validate()?;
        if capacity.max_bytes.is_some() || (self.inner.cluster && capacity.max_records.is_some()) {
            return Err(Error::NotSupported {
                operation: if capacity.max_bytes.is_some() {
                    "byte limits"
                } else {
                    "record limits on Redis Cluster"
                },
                backend: BACKEND,
            });
        }
        if self.inner.cluster {
            return Ok(());
        }
        let pool = &self.inner.pool;
        let Some(max) = capacity.max_records else {
            let _: i64 = pool
                .hdel(self.inner.meta_key.as_str(), "max_records")
                .await
                .map_err(|e| self.err("set_capacity", e))?;
            return self.drop_index("set_capacity").await;
        };
        // Publish the limit first (from now on every write keeps the index), then
        // rebuild the index from the records: writes racing the rebuild index
        // themselves, and the rebuild adds only records that are live.
        let _: i64 = pool
            .hset(
                self.inner.meta_key.as_str(),
                ("max_records", max.to_string()),
            )
            .await
            .map_err(|e| self.err("set_capacity", e))?;
        self.drop_index("set_capacity").await?;
        let mut walk = self.walk();
        while let Some(keys) = self.next_page(&mut walk).await? {
            let calls = keys
                .into_iter()
                .map(|k| Ok((vec![k, self.inner.index_key.clone()], Vec::new())))
                .collect();
            for r in self
                .run_many::<Vec<i64>>("set_capacity", &self.inner.scripts.index, calls)
                .await
            {
                r?;
            }
        }
        Ok(())
    }
}
