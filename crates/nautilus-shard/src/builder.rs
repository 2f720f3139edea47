//! Building a router: its settings, their checks, and the health wiring every node
//! gets.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use nautilus_core::{Clock, DynRegistry, Error, Result, SystemClock};
use parking_lot::Mutex;

use crate::health::{Health, HealthConfig, HealthEvent};
use crate::router::{Inner, ShardedRegistry};
use crate::state::{Layout, Node, State};

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
    pub(crate) repair_on_return: bool,
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
            repair_on_return: true,
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
    ///
    /// Below R, a write is acknowledged with copies missing: a replica whose copy
    /// failed (while up: no stand-in takes it) holds an older record until a repair
    /// or a later write. If the nodes that have it then go down, reads answer that
    /// older record, even with a read quorum of R, a delete can come back, and a
    /// compare-and-swap checked on it can lose an increment. Use W below R only for
    /// data that tolerates it.
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
    ///
    /// The grace also bounds how old a snapshot a node may be restarted from: a
    /// Redis restarted from a snapshot that predates a delete, more than the grace
    /// after that delete, brings the deleted record back, since its tombstones are
    /// collected and nothing is left to tell the old copy from a write (Cassandra's
    /// `gc_grace_seconds` has the same rule). Set the grace above the age of any
    /// snapshot you would restore a node from.
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
    /// [`Error::Timeout`], which counts toward marking
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

    /// Whether a node that comes back from down starts a [repair](ShardedRegistry::repair)
    /// (default true; only with several replicas). Until a repair that walked every
    /// node while all were up covers it, the node is unverified: it may have come
    /// back empty or from an old snapshot, so reads of its keys ask another replica
    /// too and scans take its records from other replicas. Off, that lasts until
    /// the caller runs a repair.
    pub fn repair_on_return(mut self, on: bool) -> Self {
        self.config.repair_on_return = on;
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
                versions: nautilus_core::VersionClock::new(),
                scan_key: scan_key(),
                returns: crate::repair::Returns::default(),
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

/// A key distinct per router in this process (the counter) and, very likely, from
/// routers of other processes (the time): it seals scan cursors, not a placement, so
/// it need not be reproducible.
fn scan_key() -> u64 {
    static ROUTERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let n = ROUTERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut seed = [0u8; 16];
    seed[..8].copy_from_slice(&nanos.to_le_bytes());
    seed[8..].copy_from_slice(&n.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&seed)
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
