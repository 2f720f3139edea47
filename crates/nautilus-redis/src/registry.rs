//! The [`Registry`] trait on Redis: each method checks its arguments, makes one call
//! (of the client, the batcher, the namespace walk or the capacity), and maps the
//! outcome to its answer and counters. Connecting is in `connect.rs`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use fred::types::Value;
use fred::types::scripts::Script;
use nautilus_core::{
    Capabilities, Capacity, Condition, Cursor, DeleteOptions, Entry, Error, Expiry, Limits, Page,
    PutItem, PutOptions, Registry, Result, Stats, Timestamp, Version, VersionClock, async_trait,
};

use crate::args::{self, RecordCall, Write};
use crate::batch::{self, Batcher, COALESCE_MAX_VALUE};
use crate::capacity;
use crate::client::Client;
use crate::clock::ServerClock;
use crate::codec::{far_ahead, live_entry};
use crate::error::{BACKEND, bad_reply};
use crate::keys::{KeyBatch, Namespace};
use crate::namespace;
use crate::outcome::{self, Done, Outcome};

/// A registry on Redis (standalone, Sentinel or Cluster), through a fred connection
/// pool. Cloning is cheap and shares the pool.
#[derive(Clone)]
pub struct RedisRegistry {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) client: Arc<Client>,
    pub(crate) ns: Namespace,
    pub(crate) limits: Limits,
    pub(crate) tombstone_ms: u64,
    /// The server's clock, on which puts take candidate versions and resolve expiries.
    pub(crate) clock: Arc<ServerClock>,
    /// Hands out the candidate versions of puts.
    pub(crate) versions: VersionClock,
    pub(crate) batcher: Batcher,
    pub(crate) counters: Counters,
}

/// What [`Registry::stats`] counts, for this client.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    updates: AtomicU64,
    deletes: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl fmt::Debug for RedisRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRegistry")
            .field("url", &self.inner.client.url())
            .field("prefix", &self.inner.ns.prefix())
            .field("cluster", &self.inner.client.cluster())
            .finish_non_exhaustive()
    }
}

impl RedisRegistry {
    /// Closes the connections.
    pub async fn close(&self) -> Result<()> {
        self.inner.client.quit().await
    }

    fn client(&self) -> &Client {
        &self.inner.client
    }

    /// A read's answer from the stored bytes, counted as a hit or a miss.
    fn read(&self, key: &str, raw: Option<Bytes>) -> Result<Option<Entry>> {
        let found = live_entry(key, raw, self.inner.clock.now(), self.inner.ns.layout_1())?;
        let c = &self.inner.counters;
        add(if found.is_some() { &c.hits } else { &c.misses }, 1);
        Ok(found)
    }

    /// A put of `value` under `key`, ready to send, and its candidate version: taken
    /// from this client's clock on the estimate of the server's, on which the expiry
    /// is resolved too.
    fn put_call(
        &self,
        key: &str,
        value: &[u8],
        options: PutOptions,
    ) -> Result<(RecordCall, Version)> {
        self.inner.limits.check_record(key, value.len())?;
        let now = self.inner.clock.now();
        let expires_at = args::expires_at(options.expiry, now)?;
        let version = self.candidate(now);
        let fence = self.fence(options.condition);
        let args = args::put(
            key,
            value,
            version,
            expires_at,
            options.condition,
            now,
            fence.as_deref(),
        );
        let call = RecordCall {
            kind: Write::Put,
            key: self.inner.ns.full(key),
            args,
        };
        Ok((call, version))
    }

    /// A write's candidate version at `now` on the estimate of the server's clock,
    /// from this client's clock (see [`crate::scripts`]: a write's version says when
    /// it was sent).
    fn candidate(&self, now: Timestamp) -> Version {
        self.inner.versions.next(now, None)
    }

    /// A put's answer from its outcome, counted as an insert or an update.
    fn put_done(
        &self,
        key: &str,
        options: PutOptions,
        candidate: Version,
        outcome: &Outcome,
    ) -> Result<Version> {
        let (version, replaced) = match outcome::decode(key, options.condition, outcome)? {
            Done::Written { replaced } => (candidate, replaced),
            Done::WrittenAt { version, replaced } => (self.observed(version)?, replaced),
            Done::Deleted { .. } | Done::Unchanged => {
                return Err(bad_reply("a put that wrote nothing"));
            }
        };
        let c = &self.inner.counters;
        add(if replaced { &c.updates } else { &c.inserts }, 1);
        Ok(version)
    }

    /// A version a write answered, which this client's version clock then stays above;
    /// refused if dated past the horizon ([`Version::MAX_AHEAD`] after the server's
    /// clock), which the scripts never write at: a reply altered on its way (found from
    /// outside: one flipped bit in a delete's reply carried the clock centuries ahead,
    /// and every later write of the process took a version its reads answer as
    /// corrupt, or a router's imports refuse).
    fn observed(&self, version: Version) -> Result<Version> {
        if far_ahead(version, self.inner.clock.now()) {
            return Err(bad_reply(format!(
                "a write answered version {version}, dated more than {} days after the \
                 server's clock",
                Version::MAX_AHEAD.as_secs() / 86_400
            )));
        }
        self.inner.versions.observe(version);
        Ok(version)
    }

    /// What a write under `condition` sends for the server to check that it is the
    /// process the client knows (see [`crate::scripts`]): conditional writes only,
    /// so that plain ones never take the fence's lock.
    fn fence(&self, condition: Condition) -> Option<Arc<str>> {
        match condition {
            Condition::Always => None,
            _ => self.client().fence(),
        }
    }

    /// The error of a conditional write the server refused for being another process
    /// than the one the client knew (see [`crate::scripts`]), after reading which
    /// process answers now: a router above sees the restart on this failure, not at
    /// its next health check.
    async fn restarted(&self) -> Error {
        let _ = self.client().identify(true, None).await;
        outcome::restarted(self.client().url())
    }

    /// A delete's answer from its outcome, counted if it deleted.
    fn delete_done(
        &self,
        key: &str,
        condition: Condition,
        outcome: Result<Outcome>,
    ) -> Result<Option<Version>> {
        match outcome::decode(key, condition, &outcome?)? {
            Done::Deleted { version } => {
                let version = self.observed(version)?;
                add(&self.inner.counters.deletes, 1);
                Ok(Some(version))
            }
            Done::Unchanged => Ok(None),
            _ => Err(bad_reply("a delete that wrote")),
        }
    }

    /// One import of `entry` (whose limits are checked): whether it was applied.
    async fn import_once(&self, key: &str, entry: Entry) -> Result<bool> {
        let small = entry.value.len() <= COALESCE_MAX_VALUE;
        let call = RecordCall {
            kind: Write::Import,
            key: self.inner.ns.full(key),
            args: args::import(key, entry, self.inner.clock.now(), self.inner.tombstone_ms)?,
        };
        let outcome = self
            .inner
            .batcher
            .write(self.client(), &self.inner.ns, call, small)
            .await?;
        // Not counted as a write: an import copies a record between nodes.
        match outcome::decode(key, Condition::Always, &outcome)? {
            Done::Written { .. } => Ok(true),
            _ => Ok(false),
        }
    }

    /// Runs a write script for the record `key` with `args`: its outcome.
    async fn write(
        &self,
        op: &'static str,
        script: &Script,
        key: &str,
        args: Vec<Value>,
    ) -> Result<Outcome> {
        let keys = self
            .inner
            .ns
            .script_keys(self.inner.ns.full(key), self.client().cluster());
        outcome::outcome(&self.client().eval(op, script, (keys, args)).await?)
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
            .with_max_records(!self.client().cluster())
    }

    fn limits(&self) -> Limits {
        self.inner.limits
    }

    async fn get_entry(&self, key: &str) -> Result<Option<Entry>> {
        self.inner.limits.check_key(key)?;
        let full = self.inner.ns.full(key);
        let raw = self
            .inner
            .batcher
            .get(self.client(), &self.inner.ns, key, full)
            .await?;
        self.read(key, raw)
    }

    fn get_ready(&self, _key: &str) -> Option<Result<Option<Entry>>> {
        None
    }

    fn get_value_ready(&self, _key: &str) -> Option<Result<Option<Bytes>>> {
        None
    }

    /// A write to Redis always waits: the value goes back to the caller, who awaits
    /// `put_opts`.
    fn put_ready(
        &self,
        _key: &str,
        value: Bytes,
        _options: PutOptions,
    ) -> std::result::Result<Result<Version>, Bytes> {
        Err(value)
    }

    /// An import into Redis always waits: the entry goes back to the caller, who
    /// awaits `import`.
    fn import_ready(&self, _key: &str, entry: Entry) -> std::result::Result<Result<bool>, Entry> {
        Err(entry)
    }

    async fn put_opts(&self, key: &str, value: Bytes, options: PutOptions) -> Result<Version> {
        let (call, candidate) = self.put_call(key, &value, options)?;
        let small = value.len() <= COALESCE_MAX_VALUE;
        let outcome = self
            .inner
            .batcher
            .write(self.client(), &self.inner.ns, call, small)
            .await?;
        if outcome::is_restarted(&outcome) {
            return Err(self.restarted().await);
        }
        self.put_done(key, options, candidate, &outcome)
    }

    async fn delete_opts(&self, key: &str, options: DeleteOptions) -> Result<Option<Version>> {
        self.inner.limits.check_key(key)?;
        if matches!(options.condition, Condition::Absent) {
            // "Delete only if absent" deletes nothing: no record, or a conflict.
            return match self.get_entry(key).await? {
                None => Ok(None),
                Some(e) => Err(Error::Conflict {
                    key: key.to_owned(),
                    expected: None,
                    actual: Some(e.version),
                }),
            };
        }
        let asked = options.tombstone.map_or(0, crate::connect::millis);
        let tombstone_ms = self.inner.tombstone_ms.max(asked);
        let candidate = self.candidate(self.inner.clock.now());
        let fence = self.fence(options.condition);
        let args = args::delete(
            key,
            options.condition,
            tombstone_ms,
            candidate,
            fence.as_deref(),
        );
        let scripts = &self.client().scripts;
        let outcome = self.write("delete", &scripts.delete, key, args).await;
        if outcome.as_ref().is_ok_and(outcome::is_restarted) {
            return Err(self.restarted().await);
        }
        self.delete_done(key, options.condition, outcome)
    }

    async fn touch(&self, key: &str, expiry: Expiry) -> Result<Option<Version>> {
        self.inner.limits.check_key(key)?;
        let now = self.inner.clock.now();
        let expires_at = args::expires_at(expiry, now)?;
        let args = args::touch(expires_at, self.candidate(now));
        let scripts = &self.client().scripts;
        let outcome = self.write("touch", &scripts.touch, key, args).await?;
        match outcome::decode(key, Condition::Always, &outcome)? {
            Done::WrittenAt { version, .. } => Ok(Some(self.observed(version)?)),
            Done::Unchanged => Ok(None),
            _ => Err(bad_reply("a touch that did not answer a version")),
        }
    }

    async fn import(&self, key: &str, entry: Entry) -> Result<bool> {
        self.inner
            .limits
            .check_import(key, &entry, self.inner.clock.now())?;
        if self.import_once(key, entry.clone()).await? {
            return Ok(true);
        }
        // Nothing changed: over a copy this client reads as corrupt, which the script
        // cannot tell (see `crate::damaged`), the copy goes and the import is made again.
        if self.drop_if_corrupt(key).await? {
            return self.import_once(key, entry).await;
        }
        Ok(false)
    }

    async fn get_many(&self, keys: &[&str]) -> Vec<Result<Option<Entry>>> {
        let checked = keys
            .iter()
            .map(|&k| self.inner.limits.check_key(k).map(|()| k))
            .collect();
        batch::answer_in_place(checked, |valid: Vec<&str>| async move {
            let batch = KeyBatch::new(self.inner.ns.prefix(), valid.iter().copied());
            let raws = self.client().get_many(&batch).await;
            let now = self.inner.clock.now();
            let found: Vec<_> = valid
                .iter()
                .zip(raws)
                .map(|(key, raw)| {
                    raw.and_then(|r| live_entry(key, r, now, self.inner.ns.layout_1()))
                })
                .collect();
            let hits = found.iter().filter(|r| matches!(r, Ok(Some(_)))).count();
            let misses = found.iter().filter(|r| matches!(r, Ok(None))).count();
            add(&self.inner.counters.hits, hits as u64);
            add(&self.inner.counters.misses, misses as u64);
            found
        })
        .await
    }

    async fn put_many(&self, items: Vec<PutItem>) -> Vec<Result<Version>> {
        // One candidate per item, in order (none for an item refused before sending).
        let mut candidates = Vec::with_capacity(items.len());
        let calls = items
            .iter()
            .map(|item| {
                let prepared = self.put_call(&item.key, &item.value, item.options);
                candidates.push(prepared.as_ref().ok().map(|(_, c)| *c));
                prepared.map(|(call, _)| call)
            })
            .collect();
        let outcomes = batch::put_many(self.client(), &self.inner.ns, calls).await;
        let restarted = outcomes
            .iter()
            .any(|o| o.as_ref().is_ok_and(outcome::is_restarted));
        if restarted {
            // Read once for the batch; each refused write answers the error.
            let _ = self.client().identify(true, None).await;
        }
        items
            .iter()
            .zip(outcomes.into_iter().zip(candidates))
            .map(|(item, (outcome, candidate))| {
                let outcome = outcome?;
                if outcome::is_restarted(&outcome) {
                    return Err(outcome::restarted(self.client().url()));
                }
                let candidate = candidate.ok_or_else(|| bad_reply("a reply to a call not sent"))?;
                self.put_done(&item.key, item.options, candidate, &outcome)
            })
            .collect()
    }

    async fn delete_many(&self, keys: &[&str]) -> Vec<Result<bool>> {
        let cluster = self.client().cluster();
        let now = self.inner.clock.now();
        let calls = keys
            .iter()
            .map(|k| {
                self.inner.limits.check_key(k).map(|()| {
                    (
                        self.inner.ns.script_keys(self.inner.ns.full(k), cluster),
                        args::delete(
                            k,
                            Condition::Always,
                            self.inner.tombstone_ms,
                            self.candidate(now),
                            None,
                        ),
                    )
                })
            })
            .collect();
        let scripts = &self.client().scripts;
        let replies = batch::run_many(self.client(), "delete", &scripts.delete, calls).await;
        keys.iter()
            .zip(replies)
            .map(|(k, reply)| {
                let outcome = reply.and_then(|r| outcome::outcome(&r));
                self.delete_done(k, Condition::Always, outcome)
                    .map(|v| v.is_some())
            })
            .collect()
    }

    async fn scan(&self, prefix: &str, cursor: Option<&Cursor>, limit: usize) -> Result<Page> {
        Page::check_limit(limit)?;
        namespace::scan(
            self.client(),
            &self.inner.ns,
            &self.inner.limits,
            prefix,
            cursor,
            limit,
            self.inner.clock.now(),
        )
        .await
    }

    async fn count(&self) -> Result<u64> {
        let now = self.inner.clock.now();
        namespace::count(self.client(), &self.inner.ns, &self.inner.limits, now).await
    }

    async fn clear(&self) -> Result<()> {
        namespace::clear(self.client(), &self.inner.ns).await
    }

    async fn ping(&self) -> Result<()> {
        self.client().ping().await
    }

    /// The server process's `run_id`, hashed, as last read: on connecting, after
    /// each reconnection, at each ping (not tracked on Cluster). It changes when the
    /// server restarted, even if no call failed.
    fn incarnation(&self) -> Option<u64> {
        self.client().incarnation()
    }

    async fn stats(&self) -> Result<Stats> {
        let c = &self.inner.counters;
        let mut stats = Stats::default();
        stats.records =
            namespace::estimate(self.client(), &self.inner.ns, self.inner.clock.now()).await?;
        stats.hits = c.hits.load(Ordering::Relaxed);
        stats.misses = c.misses.load(Ordering::Relaxed);
        stats.inserts = c.inserts.load(Ordering::Relaxed);
        stats.updates = c.updates.load(Ordering::Relaxed);
        stats.deletes = c.deletes.load(Ordering::Relaxed);
        Ok(stats)
    }

    async fn capacity(&self) -> Result<Capacity> {
        capacity::get(self.client(), &self.inner.ns).await
    }

    async fn set_capacity(&self, capacity: Capacity) -> Result<()> {
        capacity::set(self.client(), &self.inner.ns, capacity).await
    }
}
