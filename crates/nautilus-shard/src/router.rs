//! `ShardedRegistry`: the router as a `Registry`. Each operation takes the state in
//! force, routes by key and forwards to the owning node; keys that are moving go
//! through the migration's protocol (`migrate`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::future::join_all;
use nautilus_core::{Capacity, Clock, DynRegistry, Entry, Error, Result, Stats, SystemClock};
use parking_lot::Mutex;

use crate::capacity::split;
use crate::health::{Health, HealthConfig, HealthEvent, NodeHealth};
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

/// How the router replicates and fails over (see the builder's setters).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    pub(crate) replicas: usize,
    pub(crate) write_quorum: usize,
    pub(crate) read_quorum: usize,
    pub(crate) tombstone_grace: Duration,
    pub(crate) max_handbacks: usize,
    pub(crate) health: HealthConfig,
    pub(crate) check_health: bool,
    pub(crate) call_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            replicas: 1,
            write_quorum: 0,
            read_quorum: 1,
            tombstone_grace: Duration::from_secs(600),
            max_handbacks: 1_000_000,
            health: HealthConfig::default(),
            check_health: true,
            call_timeout: Duration::from_secs(5),
        }
    }
}

/// Hands every node its health record, wired to the router's event channel.
pub(crate) struct Monitor {
    pub(crate) events: tokio::sync::broadcast::Sender<HealthEvent>,
    threshold: u32,
    /// How long a call to a node may take (see [`ShardedRegistryBuilder::call_timeout`]).
    pub(crate) call_timeout: Duration,
    /// Whether the runtime has a timer, asked once for the router.
    pub(crate) timers: Arc<crate::deadline::Timers>,
}

impl Monitor {
    pub(crate) fn health(&self) -> Arc<Health> {
        Health::new(self.threshold, self.events.clone())
    }
}

/// Builds a [`ShardedRegistry`] from its nodes.
#[must_use]
#[derive(Default)]
pub struct ShardedRegistryBuilder {
    nodes: Vec<(String, u32, DynRegistry)>,
    config: Config,
    clock: Option<Arc<dyn Clock>>,
}

impl fmt::Debug for ShardedRegistryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardedRegistryBuilder")
            .field(
                "nodes",
                &self
                    .nodes
                    .iter()
                    .map(|(id, w, _)| (id, w))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl ShardedRegistryBuilder {
    /// Adds a node of weight 1.
    pub fn node(self, id: impl Into<String>, registry: DynRegistry) -> Self {
        self.node_weighted(id, registry, 1)
    }

    /// Adds a node holding a share of the keys in proportion to `weight`.
    pub fn node_weighted(
        mut self,
        id: impl Into<String>,
        registry: DynRegistry,
        weight: u32,
    ) -> Self {
        self.nodes.push((id.into(), weight, registry));
        self
    }

    /// How many nodes hold each record (R, default 1): the first R nodes of the
    /// key's preference list. Between 1 and the number of nodes.
    pub fn replicas(mut self, r: usize) -> Self {
        self.config.replicas = r;
        self
    }

    /// How many nodes must have a write before it is acknowledged (W, 1..=R; the
    /// default is R, so that with R=2 one node dying loses no acknowledged write). A
    /// stand-in taking a write for a down replica counts: it hands the write back.
    pub fn write_quorum(mut self, w: usize) -> Self {
        self.config.write_quorum = w;
        self
    }

    /// How many replicas a read asks (1..=R, default 1). With more than one, the
    /// read answers the newest copy and brings the stale ones up to it.
    pub fn read_quorum(mut self, q: usize) -> Self {
        self.config.read_quorum = q;
        self
    }

    /// How long replicated deletes keep their tombstones (default 10 minutes). A
    /// node away for longer must be repaired with
    /// [`ShardedRegistry::repair`] before it serves again if the router that saw
    /// the delete restarted meanwhile; otherwise the router's hand-back delivers
    /// the delete.
    pub fn tombstone_grace(mut self, grace: Duration) -> Self {
        self.config.tombstone_grace = grace;
        self
    }

    /// Time between two health checks of a node (default 500 ms).
    pub fn health_interval(mut self, interval: Duration) -> Self {
        self.config.health.interval = interval;
        self
    }

    /// How long a health check may take before it fails (default 200 ms). A node
    /// that stops answering is down within one interval plus `failure_threshold`
    /// timeouts: a failed check is followed by the next one at once.
    pub fn health_timeout(mut self, timeout: Duration) -> Self {
        self.config.health.timeout = timeout;
        self
    }

    /// Failures in a row (health checks or transient call errors) that mark a node
    /// down (default 2).
    pub fn failure_threshold(mut self, n: u32) -> Self {
        self.config.health.failure_threshold = n;
        self
    }

    /// Whether the router pings its nodes in the background (default true; needs
    /// a tokio runtime with its timer when [`build`](Self::build) runs). Without
    /// it, nodes go down on call errors and come back only through
    /// [`ShardedRegistry::check_health`].
    pub fn background_health_checks(mut self, on: bool) -> Self {
        self.config.check_health = on;
        self
    }

    /// How long one call to a node may take before it fails with
    /// [`Error::Timeout`](nautilus_core::Error::Timeout), which counts toward marking
    /// the node down (default 5 s). It bounds nodes that hang: a Redis node's own
    /// command timeout (2 s by default) answers first. Only calls still waiting after
    /// their first poll arm a timer, so in-process nodes pay nothing for it; it needs
    /// the tokio runtime's timer, and without one calls are unbounded.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.config.call_timeout = timeout;
        self
    }

    /// The clock the router reads (default the system's): it turns a replicated
    /// write's TTL into the instant every replica expires the record at, and dates
    /// tombstones and hand-backs. Give it the clock the nodes read, where that is
    /// not the system's (tests with a `ManualClock`).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The most writes stand-ins may hold for one down node (default 1,000,000);
    /// past it, writes of that node's keys fail `Unavailable` instead of being
    /// taken without a way to hand them back.
    pub fn max_handbacks(mut self, n: usize) -> Self {
        self.config.max_handbacks = n;
        self
    }

    /// The router. Refuses duplicate ids, empty ids, zero weights, replica or quorum
    /// counts out of range, a zero health interval, health timeout, failure threshold
    /// or tombstone grace with [`Error::InvalidArgument`], and so does a build inside
    /// a tokio runtime without its timer while background health checks are on (the
    /// runtime prints its panic message once when asked). A router with no
    /// nodes is allowed (R=1 only): every operation answers `Unavailable` until a
    /// node is added.
    pub fn build(self) -> Result<ShardedRegistry> {
        let mut config = self.config;
        if config.write_quorum == 0 {
            config.write_quorum = config.replicas;
        }
        let r = config.replicas;
        if r == 0 || (r > 1 && r > self.nodes.len()) {
            return Err(Error::invalid_argument(format!(
                "replicas must be between 1 and the number of nodes ({}), not {r}",
                self.nodes.len()
            )));
        }
        if config.write_quorum > r || config.read_quorum == 0 || config.read_quorum > r {
            return Err(Error::invalid_argument(format!(
                "write and read quorums must be between 1 and the replicas ({r}), not {} and {}",
                config.write_quorum, config.read_quorum
            )));
        }
        if config.health.interval.is_zero() || config.health.timeout.is_zero() {
            return Err(Error::invalid_argument(
                "the health interval and timeout must be longer than zero",
            ));
        }
        if config.call_timeout.is_zero() {
            return Err(Error::invalid_argument(
                "the call timeout must be longer than zero",
            ));
        }
        if config.health.failure_threshold == 0 {
            return Err(Error::invalid_argument(
                "the failure threshold must be at least 1 (failures in a row that mark a node down)",
            ));
        }
        if config.tombstone_grace.is_zero() {
            return Err(Error::invalid_argument(
                "the tombstone grace must be longer than zero (a replicated delete needs its \
                 tombstone until every replica has it)",
            ));
        }
        let (events, _) = tokio::sync::broadcast::channel(256);
        let monitor = Monitor {
            events,
            threshold: config.health.failure_threshold,
            call_timeout: config.call_timeout,
            timers: Arc::default(),
        };
        let nodes: Vec<Arc<Node>> = self
            .nodes
            .into_iter()
            .map(|(id, weight, registry)| Arc::new(Node::new(id, weight, registry, &monitor)))
            .collect();
        let members: Vec<usize> = (0..nodes.len()).collect();
        let current = Layout::new(&nodes, &members)?;
        let router = ShardedRegistry {
            inner: Arc::new(Inner {
                state: ArcSwap::from_pointee(State::new(0, nodes, current, None)),
                config,
                monitor,
                capacity: Mutex::new(None),
                changing: tokio::sync::Mutex::new(()),
                migration: Mutex::new(None),
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
            }),
        };
        if config.check_health
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            if !router.inner.monitor.timers.enabled() {
                return Err(Error::invalid_argument(
                    "background health checks need the tokio runtime's timer: build the \
                     runtime with enable_time() or enable_all(), or turn them off with \
                     background_health_checks(false)",
                ));
            }
            crate::checker::spawn(&rt, &router);
        }
        Ok(router)
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
        join_all(state.nodes.iter().map(|n| async move {
            NodeStats {
                id: n.id.clone(),
                weight: n.weight,
                stats: n.answer(n.registry.stats().await),
            }
        }))
        .await
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

pub(crate) fn split_batch<'k>(state: &State, keys: impl Iterator<Item = &'k str>) -> Split {
    let mut per_node: Vec<Vec<usize>> = vec![Vec::new(); state.nodes.len()];
    let mut moving = Vec::new();
    let mut failed = Vec::new();
    for (pos, key) in keys.enumerate() {
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

/// Puts per-position answers back in input order.
pub(crate) fn gather<T>(
    n: usize,
    answers: impl IntoIterator<Item = (usize, Result<T>)>,
) -> Vec<Result<T>> {
    let mut out: Vec<Option<Result<T>>> = (0..n).map(|_| None).collect();
    for (pos, r) in answers {
        if let Some(slot) = out.get_mut(pos) {
            *slot = Some(r);
        }
    }
    out.into_iter()
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::time::Duration;

    use nautilus_core::testkit::MapRegistry;
    use nautilus_core::{DynRegistry, Error, RegistryExt};

    use super::*;

    fn three() -> ShardedRegistryBuilder {
        let node = || -> DynRegistry { Arc::new(MapRegistry::default()) };
        ShardedRegistry::builder()
            .node("a", node())
            .node("b", node())
            .node("c", node())
            .background_health_checks(false)
    }

    #[test]
    fn settings_out_of_range_are_refused_with_what_was_wrong() {
        let refused: [(&str, ShardedRegistryBuilder); 9] = [
            ("replicas", three().replicas(0)),
            ("replicas", three().replicas(4)),
            ("quorums", three().replicas(2).write_quorum(3)),
            ("quorums", three().replicas(2).read_quorum(0)),
            ("quorums", three().replicas(2).read_quorum(3)),
            ("health interval", three().health_interval(Duration::ZERO)),
            ("health interval", three().health_timeout(Duration::ZERO)),
            ("failure threshold", three().failure_threshold(0)),
            ("tombstone grace", three().tombstone_grace(Duration::ZERO)),
        ];
        for (what, builder) in refused {
            match builder.build() {
                Err(Error::InvalidArgument { reason }) => {
                    assert!(reason.contains(what), "{reason}")
                }
                Err(other) => panic!("{what}: {other:?}"),
                Ok(_) => panic!("{what}: built"),
            }
        }
        // The defaults: every copy acknowledged, any one read.
        let router = three().replicas(2).build().unwrap();
        assert_eq!(router.replication(), (2, 2, 1));
    }

    #[test]
    fn a_runtime_without_a_timer_is_refused_not_a_panic_later() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            match three().background_health_checks(true).build() {
                Err(Error::InvalidArgument { reason }) => {
                    assert!(reason.contains("enable_time"), "{reason}")
                }
                other => panic!("built in a runtime without a timer: {other:?}"),
            }
            // Without background checks it builds, and a check by hand pings
            // without a timer instead of panicking.
            let router = three().build().unwrap();
            router.put("k", "v").await.unwrap();
            router.check_health().await;
            assert!(
                router
                    .health()
                    .iter()
                    .all(|h| h.state == crate::NodeState::Up)
            );
            assert_eq!(router.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
        });
    }

    #[tokio::test]
    async fn the_longest_durations_work_without_overflow() {
        let router = three()
            .replicas(2)
            .write_quorum(1)
            .health_interval(Duration::MAX)
            .health_timeout(Duration::MAX)
            .tombstone_grace(Duration::MAX)
            .failure_threshold(u32::MAX)
            .max_handbacks(0)
            .background_health_checks(true)
            .build()
            .unwrap();
        router.put("k", "v").await.unwrap();
        assert!(router.delete("k").await.unwrap());
        assert_eq!(router.get("k").await.unwrap(), None);
        router.check_health().await;
        assert!(
            router
                .health()
                .iter()
                .all(|h| h.state == crate::NodeState::Up)
        );
    }
}
