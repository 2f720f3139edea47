//! `ShardedRegistry`: the router as a `Registry`. Each operation takes the state in
//! force, routes by key and forwards to the owning node; keys that are moving go
//! through the migration's protocol (`migrate`).

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use futures_util::future::join_all;
use nautilus_core::{Capacity, Clock, DynRegistry, Entry, Error, Result, Stats};
use parking_lot::Mutex;

use crate::builder::{Config, Monitor, ShardedRegistryBuilder};
use crate::capacity::split;
use crate::health::{HealthEvent, NodeHealth};
use crate::state::{Layout, Node, Route, State};

/// A consistent-hash router over any registries, itself a
/// [`Registry`](nautilus_core::Registry).
///
/// Cloning is cheap and shares the router. See the crate docs for placement,
/// migrations and what a scan promises while records move.
#[derive(Clone)]
pub struct ShardedRegistry {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) state: ArcSwap<State>,
    pub(crate) config: Config,
    pub(crate) monitor: Monitor,
    /// The global capacity set by the caller, if any.
    pub(crate) capacity: Mutex<Option<Capacity>>,
    /// Serialises membership changes and capacity changes.
    pub(crate) changing: tokio::sync::Mutex<()>,
    /// The last migration started.
    pub(crate) migration: Mutex<Option<Arc<crate::migrate::Shared>>>,
    /// The router's clock: replicated TTLs, tombstones' collection, hand-backs.
    pub(crate) clock: Arc<dyn Clock>,
    /// Versions of the writes stand-ins coordinate (see `replica::put_on_standin`).
    pub(crate) versions: nautilus_core::VersionClock,
    /// The key of this router's scan cursors (see `scan::seal`).
    pub(crate) scan_key: u64,
    /// Repairs after nodes came back (see `repair::repair_returned`).
    pub(crate) returns: crate::repair::Returns,
}

impl fmt::Debug for ShardedRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.load();
        f.debug_struct("ShardedRegistry")
            .field(
                "nodes",
                &state.nodes.iter().map(|n| &n.id).collect::<Vec<_>>(),
            )
            .field("migrating", &state.moving.is_some())
            .finish_non_exhaustive()
    }
}

/// One node's statistics, as [`ShardedRegistry::node_stats`] gives them.
#[derive(Debug)]
#[non_exhaustive]
pub struct NodeStats {
    /// The node's id.
    pub id: String,
    /// Its weight.
    pub weight: u32,
    /// Its statistics, or why it could not give them.
    pub stats: Result<Stats>,
}

impl ShardedRegistry {
    /// A builder: `ShardedRegistry::builder().node("a", a).node_weighted("b", b, 2).build()?`.
    pub fn builder() -> ShardedRegistryBuilder {
        ShardedRegistryBuilder::default()
    }

    /// The member nodes' ids and weights, in id order.
    #[must_use]
    pub fn nodes(&self) -> Vec<(String, u32)> {
        let state = self.inner.state.load();
        let mut out: Vec<(String, u32)> = state
            .current
            .members()
            .iter()
            .map(|&i| (state.nodes[i].id.clone(), state.nodes[i].weight))
            .collect();
        out.sort();
        out
    }

    /// The id of the node that owns `key` under the placement in force (the node it
    /// moves to, during a migration).
    #[must_use]
    pub fn node_of(&self, key: &str) -> Option<String> {
        let state = self.inner.state.load();
        state.current.owner(key).map(|i| state.nodes[i].id.clone())
    }

    /// Every node's health: up or down, failures, transitions, pending hand-backs.
    #[must_use]
    pub fn health(&self) -> Vec<NodeHealth> {
        let state = self.inner.state.load();
        state
            .nodes
            .iter()
            .map(|n| n.health.report(&n.id, n.hints.len()))
            .collect()
    }

    /// A stream of health transitions (a node going down or coming back), from now
    /// on. A receiver that falls more than 256 events behind skips the oldest.
    #[must_use]
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<HealthEvent> {
        self.inner.monitor.events.subscribe()
    }

    /// Checks every node now (what the background checker does each interval):
    /// pings them, marks them up or down, and hands back what stand-ins hold for
    /// nodes that are up.
    pub async fn check_health(&self) {
        let _ = crate::checker::round(self, crate::checker::Handbacks::Wait).await;
    }

    /// The replication settings: (replicas, write quorum, read quorum).
    #[must_use]
    pub fn replication(&self) -> (usize, usize, usize) {
        let c = &self.inner.config;
        (c.replicas, c.write_quorum, c.read_quorum)
    }

    /// Every node's statistics, one entry per node (a failing node gives its error).
    pub async fn node_stats(&self) -> Vec<NodeStats> {
        let state = self.inner.state.load_full();
        let all = stats_of(&state.nodes).await;
        state
            .nodes
            .iter()
            .zip(all)
            .map(|(n, stats)| NodeStats {
                id: n.id.clone(),
                weight: n.weight,
                stats,
            })
            .collect()
    }

    /// Replaces the registry behind node `id` (a reconnect, a new client) without
    /// moving any key. Refuses an unknown id.
    pub fn replace_node(&self, id: &str, registry: DynRegistry) -> Result<()> {
        let _ = self.inner.changing.try_lock().map_err(|_| {
            Error::invalid_argument("a membership change is in progress; replace the node after it")
        })?;
        let state = self.inner.state.load_full();
        let i = state
            .index_of(id)
            .ok_or_else(|| Error::invalid_argument(format!("no node {id:?}")))?;
        let mut nodes = state.nodes.clone();
        nodes[i] = Arc::new(nodes[i].with(nodes[i].weight, registry));
        let current = Layout::new(&nodes, state.current.members())?;
        self.inner.state.store(Arc::new(State::new(
            state.epoch + 1,
            nodes,
            current,
            state.moving.clone(),
        )));
        Ok(())
    }

    /// Sets each member node's share of the global capacity (by weight), taking for
    /// each node the larger of its shares under `layouts`.
    pub(crate) async fn apply_capacity(&self, state: &State, layouts: &[&Layout]) -> Result<()> {
        let Some(capacity) = *self.inner.capacity.lock() else {
            return Ok(());
        };
        let mut shares: Vec<Capacity> = vec![Capacity::unbounded(); state.nodes.len()];
        let mut seen = vec![false; state.nodes.len()];
        for layout in layouts {
            let members = layout.members();
            let weights: Vec<u32> = members.iter().map(|&i| state.nodes[i].weight).collect();
            let records = capacity.max_records.map(|t| split(t, &weights));
            let bytes = capacity.max_bytes.map(|t| split(t, &weights));
            for (k, &i) in members.iter().enumerate() {
                let r = records.as_ref().map(|s| s[k].max(1));
                let b = bytes.as_ref().map(|s| s[k].max(1));
                let c = &mut shares[i];
                if seen[i] {
                    c.max_records = max_opt(c.max_records, r);
                    c.max_bytes = max_opt(c.max_bytes, b);
                } else {
                    *c = Capacity::unbounded().with_max_records(r).with_max_bytes(b);
                    seen[i] = true;
                }
            }
        }
        let results = join_all(
            state
                .nodes
                .iter()
                .zip(shares)
                .zip(seen)
                .filter(|(_, seen)| *seen)
                .map(|((n, c), _)| async move {
                    n.registry.set_capacity(c).await.map_err(|e| n.error(e))
                }),
        )
        .await;
        results.into_iter().collect()
    }
}

fn max_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        _ => None,
    }
}

/// The newer of two answers for a key that may be on two nodes (tombstones
/// included: the newest may be a delete).
pub(crate) fn newest(a: Option<Entry>, b: Option<Entry>) -> Option<Entry> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.version >= a.version { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// A batch split by route: positions going to one node, grouped per node (one call
/// each, all nodes at once), and positions of moving keys, which go one by one
/// through the migration protocol.
pub(crate) struct Split {
    pub(crate) per_node: Vec<(usize, Vec<usize>)>,
    pub(crate) moving: Vec<(usize, usize, usize)>,
    pub(crate) failed: Vec<(usize, Error)>,
}

/// Splits a batch by node. Each input is a key and, for a write, its value's length.
/// With nodes on different limits, the router's own (the strictest) are checked here,
/// as single-key calls check them: a node with wider limits must not take a key or
/// value the router refuses, nor answer for it.
pub(crate) fn split_batch<'k>(
    state: &State,
    keys: impl Iterator<Item = (&'k str, Option<usize>)>,
) -> Split {
    let mut per_node: Vec<Vec<usize>> = vec![Vec::new(); state.nodes.len()];
    let mut moving = Vec::new();
    let mut failed = Vec::new();
    for (pos, (key, value_len)) in keys.enumerate() {
        if !state.uniform_limits {
            let checked = match value_len {
                Some(len) => state.limits.check_record(key, len),
                None => state.limits.check_key(key),
            };
            if let Err(e) = checked {
                failed.push((pos, e));
                continue;
            }
        }
        match state.route(key) {
            Err(e) => failed.push((pos, e)),
            Ok(Route::To(node)) => per_node[node].push(pos),
            Ok(Route::Moving { from, to }) => moving.push((pos, from, to)),
        }
    }
    Split {
        per_node: per_node
            .into_iter()
            .enumerate()
            .filter(|(_, p)| !p.is_empty())
            .collect(),
        moving,
        failed,
    }
}

/// Runs `op` on every item at once, except that an item repeating an earlier item's
/// key waits for it: a batch that writes one key twice leaves the later write, as
/// separate calls made in order would (and as every backend's own batch does).
pub(crate) async fn in_key_order<I, T, Fut>(
    items: Vec<I>,
    key: impl Fn(&I) -> &str,
    op: impl Fn(I) -> Fut,
) -> Vec<T>
where
    Fut: std::future::Future<Output = T>,
{
    // Each item's wave: how many earlier items share its key.
    let waves: Vec<usize> = {
        let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        items
            .iter()
            .map(|item| {
                let count = seen.entry(key(item)).or_insert(0);
                *count += 1;
                *count - 1
            })
            .collect()
    };
    let depth = waves.iter().max().map_or(0, |&w| w + 1);
    if depth <= 1 {
        return join_all(items.into_iter().map(op)).await;
    }
    let n = items.len();
    // Positions by wave, in one pass: filtering every position per wave made a batch
    // repeating one key k times cost n·k (found from outside: 37 µs an item at 64k
    // items of one key, 1.5 µs for distinct keys).
    let mut by_wave: Vec<Vec<usize>> = vec![Vec::new(); depth];
    for (p, &wave) in waves.iter().enumerate() {
        by_wave[wave].push(p);
    }
    let mut items: Vec<Option<I>> = items.into_iter().map(Some).collect();
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    for positions in by_wave {
        let answers = join_all(positions.iter().filter_map(|&p| items[p].take()).map(&op)).await;
        for (p, answer) in positions.into_iter().zip(answers) {
            out[p] = Some(answer);
        }
    }
    // Every position was in exactly one wave.
    out.into_iter().flatten().collect()
}

/// Puts per-position answers back in input order.
pub(crate) fn gather<T>(
    n: usize,
    answers: impl IntoIterator<Item = (usize, Result<T>)>,
) -> Vec<Result<T>> {
    let mut out = Gathered::new(n);
    for (pos, r) in answers {
        out.put(pos, r);
    }
    out.finish()
}

/// A batch's answers, put in input order as they come.
pub(crate) struct Gathered<T>(Vec<Option<Result<T>>>);

impl<T> Gathered<T> {
    pub(crate) fn new(n: usize) -> Self {
        Gathered((0..n).map(|_| None).collect())
    }

    /// The answer at input position `pos`.
    #[inline]
    pub(crate) fn put(&mut self, pos: usize, r: Result<T>) {
        if let Some(slot) = self.0.get_mut(pos) {
            *slot = Some(r);
        }
    }

    /// Every answer, in input order; a position never answered is an error.
    pub(crate) fn finish(self) -> Vec<Result<T>> {
        self.0
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(Error::Backend {
                        backend: "shard",
                        source: "a node answered a batch with fewer results than keys".into(),
                    })
                })
            })
            .collect()
    }
}

/// Each of `nodes`' statistics, asked all at once, in their order.
pub(crate) async fn stats_of(nodes: &[Arc<Node>]) -> Vec<Result<Stats>> {
    join_all(
        nodes
            .iter()
            .map(|n| async move { n.answer(n.registry.stats().await) }),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_key_order_answers_in_input_order_and_runs_a_repeated_key_in_order() {
        use futures_util::FutureExt;
        // Keys: a, b, a, c, a, b; each op records when it ran.
        let keys = ["a", "b", "a", "c", "a", "b"];
        let items: Vec<(usize, &str)> = keys.iter().copied().enumerate().collect();
        let ran = parking_lot::Mutex::new(Vec::new());
        let out = in_key_order(
            items,
            |item| item.1,
            |item| {
                ran.lock().push(item.0);
                async move { item.0 * 10 }
            },
        )
        .now_or_never()
        .unwrap_or_default();
        assert_eq!(out, vec![0, 10, 20, 30, 40, 50]);
        let ran = ran.into_inner();
        let at = |p: usize| ran.iter().position(|&r| r == p);
        // Each repeat of a key runs after the one before it.
        assert!(at(0) < at(2) && at(2) < at(4), "{ran:?}");
        assert!(at(1) < at(5), "{ran:?}");
        assert_eq!(ran.len(), 6);
    }
}
