//! The `Registry` trait for the router: check, route, forward, name the failing node.

use std::sync::Arc;

use futures_util::future::join_all;
use nautilus_core::{
    Bytes, Capabilities, Capacity, Cursor, DeleteOptions, Entry, Error, Expiry, Limits, Page,
    PutItem, PutOptions, Registry, Result, Stats, Version, async_trait,
};

use crate::batches::{answers, keyed_groups};
use crate::deadline::NodeRegistry;
use crate::migrate::move_key;
use crate::router::{ShardedRegistry, in_key_order, split_batch, stats_of};
use crate::state::{Route, State, no_nodes};

/// How much less far ahead of its clock than [`nautilus_core::Version::MAX_AHEAD`]
/// the router takes an imported version: a day.
const IMPORT_MARGIN_MS: u64 = 86_400_000;

impl ShardedRegistry {
    /// The one node a write of `key` goes to (after moving the key there if it
    /// moves), or `None` when the key takes the replicated path.
    async fn writer(&self, state: &State, key: &str) -> Result<Option<usize>> {
        if self.inner.config.replicas > 1 {
            if let Some(m) = &state.moving {
                // Every write waits for the operations of the state before the
                // change: a weight change can make another node coordinate a key
                // whose replicas stay the same (from outside: two swaps from one
                // version both won, in 6 of 6 runs flipping a weight).
                m.drained().await;
                self.move_replicated(state, m, key).await?;
            }
            return Ok(None);
        }
        match state.route(key)? {
            Route::To(n) => Ok(self.single(state, n).then_some(n)),
            Route::Moving { from, to } => {
                if let Some(m) = &state.moving {
                    move_key(self, state, m, key, from, to).await?;
                }
                Ok(Some(to))
            }
        }
    }

    /// The time imports are checked at: a day behind the router's clock, so a day
    /// stricter than the nodes. A write after an import at their horizon gets a
    /// version past it (a millisecond per 65,536 writes), which its replicas, taking
    /// it by import, would refuse.
    fn import_clock(&self) -> nautilus_core::Timestamp {
        let now = self.inner.clock.now();
        nautilus_core::Timestamp::from_millis(now.as_millis().saturating_sub(IMPORT_MARGIN_MS))
    }

    fn state(&self) -> Arc<State> {
        self.inner.state.load_full()
    }

    /// Whether a key owned by node `n` takes the single-copy path: one replica, and
    /// that node up with nothing to hand back. Otherwise the replicated path serves
    /// it (replication, or R=1 failover through stand-ins).
    #[inline]
    pub(crate) fn single(&self, state: &State, n: usize) -> bool {
        let node = &state.nodes[n];
        self.inner.config.replicas == 1 && node.is_up() && node.hints.len() == 0
    }
}

/// `op` on every node at once; the first failure, named, or every answer.
async fn every_node<'s, T, F>(
    state: &'s State,
    op: impl Fn(&'s NodeRegistry) -> F,
) -> Result<Vec<T>>
where
    F: std::future::Future<Output = Result<T>> + 's,
{
    every_node_of(state, 0..state.nodes.len(), op).await
}

/// `op` on the nodes `of` at once; the first failure, named, or every answer.
async fn every_node_of<'s, T, F>(
    state: &'s State,
    of: impl IntoIterator<Item = usize>,
    op: impl Fn(&'s NodeRegistry) -> F,
) -> Result<Vec<T>>
where
    F: std::future::Future<Output = Result<T>> + 's,
{
    if state.nodes.is_empty() {
        return Err(no_nodes());
    }
    // A node known to be down answers at once: calls never wait on it.
    if let Some(n) = state.nodes.iter().find(|n| !n.is_up()) {
        return Err(Error::Unavailable {
            node: n.id.clone(),
            source: "the node is down".into(),
        });
    }
    let answers = join_all(of.into_iter().filter_map(|i| state.nodes.get(i)).map(|n| {
        let f = op(&n.registry);
        async move { f.await.map_err(|e| n.error(e)) }
    }))
    .await;
    answers.into_iter().collect()
}

/// Whether every node answers `f`, and there is at least one.
fn all(state: &State, f: impl Fn(&Capabilities) -> bool) -> bool {
    !state.nodes.is_empty() && state.nodes.iter().all(|n| f(&n.registry.capabilities()))
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Registry for ShardedRegistry {
    fn capabilities(&self) -> Capabilities {
        let state = self.inner.state.load();
        // A global limit is split into shares; only evicting nodes keep the contract's
        // promise for it (a refusing node refuses once its share is full, before the
        // global limit is reached).
        // With several replicas, nodes evict copies independently, so no global
        // limit on distinct records is kept: none is offered.
        let evicts = self.inner.config.replicas == 1 && all(&state, |c| c.evicts);
        Capabilities::new("shard")
            .with_max_records(evicts && all(&state, |c| c.max_records))
            .with_max_bytes(evicts && all(&state, |c| c.max_bytes))
            .with_evicts(evicts)
            .with_persistent(all(&state, |c| c.persistent))
    }

    fn limits(&self) -> Limits {
        self.inner.state.load().limits
    }

    async fn get_entry(&self, key: &str) -> Result<Option<Entry>> {
        let state = self.state();
        state.limits.check_key(key)?;
        if self.inner.config.replicas > 1 {
            return self.get_replicated(&state, key).await;
        }
        match state.route(key)? {
            Route::To(n) if !self.single(&state, n) => self.get_replicated(&state, key).await,
            route => Self::read(&state, key, route).await,
        }
    }

    /// The value alone from the node that answers, so that an awaited `get` moves
    /// four words through the router, not the entry.
    #[inline]
    fn get_value_ready(&self, key: &str) -> Option<Result<Option<Bytes>>> {
        self.read_ready(key, NodeRegistry::get_value_ready, |entry| entry.value)
    }

    #[inline]
    fn get_ready(&self, key: &str) -> Option<Result<Option<Entry>>> {
        self.read_ready(key, NodeRegistry::get_ready, |entry| entry)
    }

    async fn put_opts(&self, key: &str, value: Bytes, options: PutOptions) -> Result<Version> {
        let state = self.state();
        state.limits.check_record(key, value.len())?;
        match self.writer(&state, key).await? {
            Some(n) => {
                let node = &state.nodes[n];
                node.answer(node.registry.put_opts(key, value, options).await)
            }
            None => {
                self.healing(&state, key, || {
                    self.put_replicated(&state, key, value.clone(), options)
                })
                .await
            }
        }
    }

    #[inline]
    fn put_ready(
        &self,
        key: &str,
        value: Bytes,
        options: PutOptions,
    ) -> std::result::Result<Result<Version>, Bytes> {
        let state = self.inner.state.load();
        // As for reads: with every node on the same limits, the node checks them.
        if !state.uniform_limits
            && let Err(e) = state.limits.check_record(key, value.len())
        {
            return Ok(Err(e));
        }
        if self.inner.config.replicas > 1 {
            return self.put_replicated_ready(&state, key, value, options);
        }
        match state.route(key) {
            Err(e) => Ok(Err(e)),
            Ok(Route::To(n)) if self.single(&state, n) => {
                let node = &state.nodes[n];
                node.registry
                    .put_ready(key, value, options)
                    .map(|r| node.answer(r))
            }
            // A moving key moves first and a write through stand-ins may hand back
            // first: both wait.
            Ok(_) => Err(value),
        }
    }

    async fn delete_opts(&self, key: &str, options: DeleteOptions) -> Result<Option<Version>> {
        let state = self.state();
        state.limits.check_key(key)?;
        match self.writer(&state, key).await? {
            Some(n) => {
                let node = &state.nodes[n];
                node.answer(node.registry.delete_opts(key, options).await)
            }
            None => {
                self.healing(&state, key, || self.delete_replicated(&state, key, options))
                    .await
            }
        }
    }

    async fn touch(&self, key: &str, expiry: Expiry) -> Result<Option<Version>> {
        let state = self.state();
        state.limits.check_key(key)?;
        match self.writer(&state, key).await? {
            Some(n) => {
                let node = &state.nodes[n];
                node.answer(node.registry.touch(key, expiry).await)
            }
            None => {
                self.healing(&state, key, || self.touch_replicated(&state, key, expiry))
                    .await
            }
        }
    }

    async fn import(&self, key: &str, entry: Entry) -> Result<bool> {
        let state = self.state();
        state
            .limits
            .check_import(key, &entry, self.import_clock())?;
        match self.writer(&state, key).await? {
            Some(n) => {
                let node = &state.nodes[n];
                node.answer(node.registry.import(key, entry).await)
            }
            None => self.import_replicated(&state, key, entry).await,
        }
    }

    #[inline]
    fn import_ready(&self, key: &str, entry: Entry) -> std::result::Result<Result<bool>, Entry> {
        let state = self.inner.state.load();
        if let Err(e) = state.limits.check_import(key, &entry, self.import_clock()) {
            return Ok(Err(e));
        }
        match state.route(key) {
            Err(e) => Ok(Err(e)),
            Ok(Route::To(n)) if self.single(&state, n) => {
                let node = &state.nodes[n];
                node.registry
                    .import_ready(key, entry)
                    .map(|r| node.answer(r))
            }
            // A moving key moves first and a replicated import spreads: both wait.
            Ok(_) => Err(entry),
        }
    }

    async fn get_many(&self, keys: &[&str]) -> Vec<Result<Option<Entry>>> {
        let state = self.state();
        if self.reads_batchable(&state) {
            return self.get_many_first_replicas(&state, keys).await;
        }
        if !self.batchable(&state) {
            return join_all(keys.iter().map(|k| self.get_entry(k))).await;
        }
        let mut split = split_batch(&state, keys.iter().map(|&k| (k, None)));
        let failed = std::mem::take(&mut split.failed);
        let groups = keyed_groups(&state, &split, keys, |r, subset| async move {
            r.get_many(&subset).await
        });
        let state_ref = &state;
        let singles = split.moving.iter().map(|&(p, from, to)| async move {
            let key = keys[p];
            let r = match state_ref.limits.check_key(key) {
                Ok(()) => Self::read(state_ref, key, Route::Moving { from, to }).await,
                Err(e) => Err(e),
            };
            (p, r)
        });
        answers(keys.len(), groups, join_all(singles), failed).await
    }

    async fn put_many(&self, items: Vec<PutItem>) -> Vec<Result<Version>> {
        let state = self.state();
        if self.writes_ready(&state) {
            // One after the other, each as a single put made without a future (in
            // input order, so a repeated key ends with its later write): a future per
            // item, all joined, cost 3-4x as much per key over memory nodes.
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let PutItem {
                    key,
                    value,
                    options,
                    ..
                } = item;
                out.push(match self.put_ready(&key, value, options) {
                    Ok(answer) => answer,
                    Err(value) => self.put_opts(&key, value, options).await,
                });
            }
            return out;
        }
        if !self.batchable(&state) {
            return in_key_order(
                items,
                |i| i.key.as_str(),
                |i| async move { self.put_opts(&i.key, i.value, i.options).await },
            )
            .await;
        }
        let n = items.len();
        let mut split = split_batch(
            &state,
            items.iter().map(|i| (i.key.as_str(), Some(i.value.len()))),
        );
        let failed = std::mem::take(&mut split.failed);
        let mut items: Vec<Option<PutItem>> = items.into_iter().map(Some).collect();
        let groups: Vec<_> = split
            .per_node
            .iter()
            .map(|(node, positions)| {
                let batch: Vec<PutItem> =
                    positions.iter().filter_map(|&p| items[p].take()).collect();
                (*node, positions.clone(), batch)
            })
            .collect();
        let singles: Vec<_> = split
            .moving
            .iter()
            .filter_map(|&(p, _, _)| items[p].take().map(|i| (p, i)))
            .collect();
        let state_ref = &state;
        let groups = groups.into_iter().map(|(n, positions, batch)| async move {
            let node = &state_ref.nodes[n];
            let answers = node.registry.put_many(batch).await;
            positions
                .into_iter()
                .zip(answers.into_iter().map(|r| r.map_err(|e| node.error(e))))
                .collect::<Vec<_>>()
        });
        let singles = in_key_order(
            singles,
            |(_, item)| item.key.as_str(),
            |(p, item)| async move { (p, self.put_opts(&item.key, item.value, item.options).await) },
        );
        answers(n, groups, singles, failed).await
    }

    async fn delete_many(&self, keys: &[&str]) -> Vec<Result<bool>> {
        let state = self.state();
        if self.writes_ready(&state) {
            // In-process nodes answer at once: one delete after the other, in input
            // order, without a future per key joined.
            let mut out = Vec::with_capacity(keys.len());
            for k in keys {
                let deleted = self.delete_opts(k, DeleteOptions::default()).await;
                out.push(deleted.map(|v| v.is_some()));
            }
            return out;
        }
        if !self.batchable(&state) {
            return in_key_order(
                keys.to_vec(),
                |k| k,
                |k| async move {
                    self.delete_opts(k, DeleteOptions::default())
                        .await
                        .map(|v| v.is_some())
                },
            )
            .await;
        }
        let mut split = split_batch(&state, keys.iter().map(|&k| (k, None)));
        let failed = std::mem::take(&mut split.failed);
        let groups = keyed_groups(&state, &split, keys, |r, subset| async move {
            r.delete_many(&subset).await
        });
        let moving: Vec<(usize, &str)> =
            split.moving.iter().map(|&(p, _, _)| (p, keys[p])).collect();
        let singles = in_key_order(
            moving,
            |&(_, key)| key,
            |(p, key)| async move {
                let deleted = self.delete_opts(key, DeleteOptions::default()).await;
                (p, deleted.map(|v| v.is_some()))
            },
        );
        answers(keys.len(), groups, singles, failed).await
    }

    async fn scan(&self, prefix: &str, cursor: Option<&Cursor>, limit: usize) -> Result<Page> {
        let state = self.state();
        crate::scan::page(self, &state, prefix, cursor, limit).await
    }

    async fn count(&self) -> Result<u64> {
        if self.inner.config.replicas > 1 {
            return self.count_replicated().await;
        }
        let state = self.state();
        // Saturating: a node may answer anything (found from outside: a node counting
        // u64::MAX records panicked the sum).
        let sum = |counts: Vec<u64>| counts.into_iter().fold(0, u64::saturating_add);
        let Some(m) = &state.moving else {
            return Ok(sum(every_node(&state, |r| r.count()).await?));
        };
        // While records move, the nodes they move from are counted first, then the
        // others: a record moved before its source's count reached it is on its new
        // node by the time that one is counted. Counted all at once, a node gaining
        // records could finish before they came while their source's walk had not
        // reached them yet (from outside: 22 of 23 counts of 400k records during an
        // add were 100 to 7,751 short).
        let sources = m.sources();
        let first = every_node_of(&state, sources.iter().copied(), |r| r.count()).await?;
        let rest = (0..state.nodes.len()).filter(|n| !sources.contains(n));
        let then = every_node_of(&state, rest, |r| r.count()).await?;
        Ok(sum(first).saturating_add(sum(then)))
    }

    async fn clear(&self) -> Result<()> {
        let state = self.state();
        every_node(&state, |r| r.clear()).await?;
        for n in &state.nodes {
            n.hints.clear();
        }
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        every_node(&self.state(), |r| r.ping()).await.map(drop)
    }

    /// A router's nodes each have their own; the router tracks them itself.
    fn incarnation(&self) -> Option<u64> {
        None
    }

    async fn stats(&self) -> Result<Stats> {
        let state = self.state();
        if state.nodes.is_empty() {
            return Err(no_nodes());
        }
        let mut total = Stats::default();
        for (s, node) in stats_of(&state.nodes).await.into_iter().zip(&state.nodes) {
            let mut s = s?;
            // What the router did on its own account is not the caller's.
            node.tally.adjust(&mut s);
            // Saturating, as `count`: a node may answer anything.
            for (t, n) in [
                (&mut total.records, s.records),
                (&mut total.bytes, s.bytes),
                (&mut total.hits, s.hits),
                (&mut total.misses, s.misses),
                (&mut total.inserts, s.inserts),
                (&mut total.updates, s.updates),
                (&mut total.deletes, s.deletes),
                (&mut total.evictions, s.evictions),
                (&mut total.expirations, s.expirations),
            ] {
                *t = t.saturating_add(n);
            }
        }
        // Each record is held R times, and evicted or expired on each replica: the
        // router's counts are the distinct ones. (A write is counted once, by the
        // replica that decided it: the others take it by import.)
        let r = self.inner.config.replicas as u64;
        total.records /= r;
        total.bytes /= r;
        total.evictions /= r;
        total.expirations /= r;
        Ok(total)
    }

    async fn capacity(&self) -> Result<Capacity> {
        if let Some(c) = *self.inner.capacity.lock() {
            return Ok(c);
        }
        let state = self.state();
        if state.nodes.is_empty() {
            return Err(no_nodes());
        }
        let caps = join_all(state.current.members().iter().map(|&i| {
            let n = &state.nodes[i];
            async move { n.registry.capacity().await.map_err(|e| n.error(e)) }
        }))
        .await;
        let mut total = Capacity::records(0).with_max_bytes(Some(0));
        for c in caps {
            let c = c?;
            let sum = |(a, b): (u64, u64)| a.saturating_add(b);
            total.max_records = total.max_records.zip(c.max_records).map(sum);
            total.max_bytes = total.max_bytes.zip(c.max_bytes).map(sum);
        }
        Ok(total)
    }

    async fn set_capacity(&self, capacity: Capacity) -> Result<()> {
        let capacity = capacity.validate()?;
        let caps = self.capabilities();
        if (capacity.max_records.is_some() && !caps.max_records)
            || (capacity.max_bytes.is_some() && !caps.max_bytes)
        {
            return Err(Error::NotSupported {
                operation: "a global capacity (every node must enforce and evict)",
                backend: "shard",
            });
        }
        let _change = self.inner.changing.lock().await;
        *self.inner.capacity.lock() = Some(capacity);
        let state = self.state();
        match &state.moving {
            Some(m) => self.apply_capacity(&state, &[&m.old, &state.current]).await,
            None => self.apply_capacity(&state, &[&state.current]).await,
        }
    }
}
