//! The router's view of its nodes at one moment: the node list, the placement in
//! force and, while records move, the placement they move from. Immutable; a
//! membership change swaps in a new one.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use nautilus_core::{Condition, DeleteOptions, DynRegistry, Entry, Error, Limits, Result, Version};

use crate::deadline::NodeRegistry;
use crate::health::Health;
use crate::hints::Hints;
use crate::placement::Placement;

/// One node: its id, weight and registry, and (shared by every state the router
/// swaps in, so that they outlive membership changes) its health and the writes
/// stand-ins hold for it.
pub(crate) struct Node {
    pub(crate) id: String,
    pub(crate) weight: u32,
    pub(crate) registry: NodeRegistry,
    pub(crate) health: Arc<Health>,
    pub(crate) hints: Arc<Hints>,
    /// Whether the node claims [`nautilus_core::Capabilities::answers_ready`]: the
    /// router's replicated puts then copy to it without a future.
    pub(crate) ready: bool,
    /// How the node's counts differ from what callers did through the router (see
    /// [`Tally`]).
    pub(crate) tally: Arc<Tally>,
}

/// What turns a node's counts into the router's: the reads the router made of the
/// node on its own account (a replica asked to confirm a miss, both nodes of a
/// moving key, a write's checks, repair) are taken off, and the answer a caller got
/// from such a read is put on; so are the copies it removed (a record that moved,
/// a stand-in's copy handed back). A read answered by one node alone, the common
/// case, needs neither: the node counted it as the caller saw it. Only paths that
/// already wait or ask several nodes touch it. (Copies the router makes are imports,
/// which nodes do not count as writes.)
#[derive(Debug, Default)]
pub(crate) struct Tally {
    hits: AtomicI64,
    misses: AtomicI64,
    deletes: AtomicI64,
}

impl Tally {
    /// A read of the node that stands for no read of a caller's: `found` is what the
    /// node answered (it counted a hit if so, else a miss).
    pub(crate) fn uncounted(&self, found: bool) {
        self.add(found, -1);
    }

    /// A caller's read answered from other reads of the router's: `found` is what
    /// the caller got.
    pub(crate) fn counted(&self, found: bool) {
        self.add(found, 1);
    }

    /// A copy the router removed on its own account.
    pub(crate) fn uncounted_delete(&self) {
        self.deletes.fetch_sub(1, Ordering::Relaxed);
    }

    fn add(&self, found: bool, n: i64) {
        let counter = if found { &self.hits } else { &self.misses };
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The node's counts, adjusted (never below zero: a node whose own counters were
    /// reset, by a restart say, counts from there).
    pub(crate) fn adjust(&self, stats: &mut nautilus_core::Stats) {
        let by = |count: u64, adjustment: &AtomicI64| {
            count.saturating_add_signed(adjustment.load(Ordering::Relaxed))
        };
        stats.hits = by(stats.hits, &self.hits);
        stats.misses = by(stats.misses, &self.misses);
        stats.deletes = by(stats.deletes, &self.deletes);
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("weight", &self.weight)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A new node, up, with nothing pending.
    pub(crate) fn new(
        id: String,
        weight: u32,
        registry: DynRegistry,
        health: &crate::builder::Monitor,
    ) -> Self {
        let health_record = health.health();
        // The process its store tells now (a Redis registry reads it on connecting):
        // a restart before the first check is then a change, not the first one seen.
        health_record.restarted(&id, registry.incarnation(), false);
        Node {
            health: health_record,
            ready: registry.capabilities().answers_ready,
            id,
            weight,
            registry: NodeRegistry::new(registry, health.call_timeout, Arc::clone(&health.timers)),
            hints: Arc::new(Hints::default()),
            tally: Arc::default(),
        }
    }

    /// The same node with another weight or registry, keeping its health and hints
    /// (and its read tally, if the registry is the same).
    pub(crate) fn with(&self, weight: u32, registry: DynRegistry) -> Self {
        let tally = if Arc::ptr_eq(self.registry.dyn_registry(), &registry) {
            Arc::clone(&self.tally)
        } else {
            Arc::default()
        };
        Node {
            tally,
            id: self.id.clone(),
            weight,
            ready: registry.capabilities().answers_ready,
            registry: self.registry.replaced(registry),
            health: Arc::clone(&self.health),
            hints: Arc::clone(&self.hints),
        }
    }

    /// Whether calls go to this node.
    #[inline]
    pub(crate) fn is_up(&self) -> bool {
        !self.health.is_down()
    }

    /// Whether the node's own answer stands for its replica: up, nothing a stand-in
    /// holds for it to hand back, not waiting on a repair. What a read answered
    /// without waiting asks of the replicas it reads.
    #[inline]
    pub(crate) fn is_clean(&self) -> bool {
        self.is_up() && self.hints.len() == 0 && !self.unverified()
    }

    /// Whether the node's store restarted since the last check saw it (see
    /// [`crate::health::Health::restart_seen_by_call`]).
    pub(crate) fn restart_seen(&self) -> bool {
        self.health
            .restart_seen_by_call(&self.id, self.registry.incarnation())
    }

    /// Whether the node came back (from down, or as a new process of its store) and
    /// no repair has covered it since: its answer alone is not the answer. A node
    /// whose store tells its process is asked for it here too, so a restart the
    /// store saw first (a Redis client that reconnected) counts from this call on,
    /// not from the next check.
    #[inline]
    pub(crate) fn unverified(&self) -> bool {
        // The store's process first: a restart another call noticed is flagged before
        // it is published, so the flag, read after, is seen.
        (self.health.is_tracked() && self.restart_seen()) || self.health.is_unverified()
    }

    /// Whether the node is unverified and may have lost records (it restarted, or
    /// came back without telling its process): its answer alone is no answer.
    #[inline]
    pub(crate) fn may_have_lost(&self) -> bool {
        self.unverified() && self.health.may_have_lost()
    }

    /// A call's answer, counted for the node's health and its error named.
    #[inline]
    pub(crate) fn answer<T>(&self, r: Result<T>) -> Result<T> {
        match r {
            Ok(v) => {
                self.health.call_ok();
                Ok(v)
            }
            Err(e) => Err(self.error(e)),
        }
    }

    /// A read the router makes of the node on its own account (see [`Tally`]).
    pub(crate) async fn read_uncounted(&self, key: &str) -> Result<Option<Entry>> {
        let held = self.answer(self.registry.get_entry(key).await)?;
        self.tally.uncounted(held.is_some());
        Ok(held)
    }

    /// [`Self::read_uncounted`] without waiting: the node's own answer (errors not
    /// yet named), or `None` if it would have to wait.
    pub(crate) fn read_ready_uncounted(&self, key: &str) -> Option<Result<Option<Entry>>> {
        let answer = self.registry.get_ready(key)?;
        if let Ok(held) = &answer {
            self.tally.uncounted(held.is_some());
        }
        Some(answer)
    }

    /// Removes this node's copy of `key` if it is still at `version` (a copy that
    /// moved, was handed back or is not a replica's): a newer write stays, and so
    /// does the answer "already gone".
    pub(crate) async fn remove_copy(&self, key: &str, version: Version) -> Result<()> {
        let only_this = DeleteOptions::default().condition(Condition::Version(version));
        match self.registry.delete_opts(key, only_this).await {
            Ok(Some(_)) => {
                self.tally.uncounted_delete();
                Ok(())
            }
            Ok(None) | Err(Error::Conflict { .. }) => Ok(()),
            Err(e) => Err(self.error(e)),
        }
    }

    /// A node's failure, named: transient errors become `Unavailable` naming this
    /// node (and count toward marking it down); the others (a refused key, a
    /// conflict, a corrupt record) pass through.
    pub(crate) fn error(&self, e: Error) -> Error {
        if e.is_transient() {
            // A store refusing a call as a new process answered it: not a failure.
            // (Counted, a burst of refused conditional writes after a restart
            // marked the node down, and their retries went to it unrepaired.)
            if !e.is_restart_refusal() {
                self.health.failed(&self.id, &e);
            }
            // A store that restarted fails calls, or refuses them (a Redis server
            // refuses conditional writes fenced against its predecessor).
            self.restart_seen();
            Error::Unavailable {
                node: self.id.clone(),
                source: Box::new(e),
            }
        } else {
            e
        }
    }
}

/// A placement and where each of its node indices lives in the node list.
#[derive(Debug)]
pub(crate) struct Layout {
    pub(crate) placement: Placement,
    /// Placement index -> index into [`State::nodes`].
    pub(crate) to_node: Vec<usize>,
}

impl Layout {
    pub(crate) fn new(nodes: &[Arc<Node>], members: &[usize]) -> Result<Self> {
        let placement = Placement::new(
            members
                .iter()
                .map(|&i| (nodes[i].id.clone(), nodes[i].weight)),
        )?;
        let to_node = (0..placement.len())
            .map(|p| {
                let id = placement.node_id(p).unwrap_or_default();
                nodes.iter().position(|n| n.id == id).unwrap_or(0)
            })
            .collect();
        Ok(Layout { placement, to_node })
    }

    /// The node index owning `key`, `None` without nodes.
    #[inline]
    pub(crate) fn owner(&self, key: &str) -> Option<usize> {
        self.slot_owner(crate::placement::slot_of(key))
    }

    /// The node index owning `slot` (a key's [`slot_of`](crate::placement::slot_of),
    /// the same in every layout), `None` without nodes.
    #[inline]
    pub(crate) fn slot_owner(&self, slot: u32) -> Option<usize> {
        self.placement.slot_owner(slot).map(|p| self.to_node[p])
    }

    /// The member nodes, as indices into the node list.
    pub(crate) fn members(&self) -> &[usize] {
        &self.to_node
    }

    /// Up to `n` distinct nodes for `key`, best first, as indices into the node list.
    pub(crate) fn preference(&self, key: &str, n: usize) -> Vec<usize> {
        self.preference_inline(key, n).into_vec()
    }

    /// [`Self::preference`] without allocating for the usual replica counts.
    pub(crate) fn preference_inline(&self, key: &str, n: usize) -> crate::placement::Preference {
        let mut out = self.placement.preference_inline(key, n);
        for p in &mut out {
            *p = self.to_node[*p];
        }
        out
    }
}

/// Which way a membership change moves records: to one node, or away from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// A node joined or gained weight: records move to it (from any other).
    To(usize),
    /// A node leaves or lost weight: records move from it (to any other).
    From(usize),
}

/// A migration in progress: the placement records move from, and the keys that user
/// operations already moved (the migrator leaves those alone).
pub(crate) struct Moving {
    pub(crate) old: Layout,
    pub(crate) direction: Direction,
    /// The node leaving when the migration ends (a removal), if any.
    pub(crate) leaving: Option<usize>,
    pub(crate) moved: Box<[tokio::sync::Mutex<HashSet<String>>]>,
    /// Set once no operation that started under the state before this migration's
    /// is still running: until then such an operation may still be deciding a
    /// moving key's write on its old nodes, so keys wait to move (see
    /// [`Moving::drained`]).
    drained: std::sync::atomic::AtomicBool,
    drained_notify: tokio::sync::Notify,
}

impl fmt::Debug for Moving {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Moving")
            .field("direction", &self.direction)
            .field("leaving", &self.leaving)
            .finish_non_exhaustive()
    }
}

/// Stripes of the moved-keys set: a user write and the migrator contend only on keys
/// of the same stripe.
pub(crate) const STRIPES: usize = 256;

impl Moving {
    pub(crate) fn new(old: Layout, direction: Direction, leaving: Option<usize>) -> Self {
        Moving {
            old,
            direction,
            leaving,
            moved: (0..STRIPES)
                .map(|_| tokio::sync::Mutex::new(HashSet::new()))
                .collect(),
            drained: std::sync::atomic::AtomicBool::new(false),
            drained_notify: tokio::sync::Notify::new(),
        }
    }

    /// No operation of the state before this migration's runs any more: keys may
    /// move.
    pub(crate) fn set_drained(&self) {
        self.drained
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.drained_notify.notify_waiters();
    }

    /// Waits until [`Moving::set_drained`]. A write that moved a key while a write
    /// of the state before was still deciding it on the key's old nodes had two
    /// coordinators at once: a compare-and-swap answered `Conflict` yet was
    /// applied, and its old coordinator kept a copy it no longer owned (found from
    /// outside at R=2 and R=3, in 4 of 5 runs of five membership changes).
    pub(crate) async fn drained(&self) {
        loop {
            // Registered before the check: a `notify_waiters` in between wakes it.
            let notified = self.drained_notify.notified();
            if self.drained.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }

    pub(crate) fn stripe(key: &str) -> usize {
        (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % STRIPES as u64) as usize
    }

    /// Locks the stripes of `keys` (in stripe order, so that two lockers of several
    /// stripes never deadlock), for the migrator's moves of a page.
    pub(crate) async fn lock<'a>(&self, keys: impl Iterator<Item = &'a str>) -> Stripes<'_> {
        let mut stripes: Vec<usize> = keys.map(Moving::stripe).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for &s in &stripes {
            guards.push(self.moved[s].lock().await);
        }
        Stripes { stripes, guards }
    }

    /// The source nodes: those the migrator walks.
    pub(crate) fn sources(&self) -> Vec<usize> {
        match self.direction {
            Direction::To(target) => self
                .old
                .members()
                .iter()
                .copied()
                .filter(|&n| n != target)
                .collect(),
            Direction::From(source) => vec![source],
        }
    }
}

/// Stripes of the moved-keys set, locked.
pub(crate) struct Stripes<'m> {
    stripes: Vec<usize>,
    guards: Vec<tokio::sync::MutexGuard<'m, HashSet<String>>>,
}

impl Stripes<'_> {
    /// Whether a user operation moved `key` (of a locked stripe) already.
    pub(crate) fn moved(&self, key: &str) -> bool {
        self.stripes
            .binary_search(&Moving::stripe(key))
            .is_ok_and(|g| self.guards[g].contains(key))
    }
}

/// Where a key's operations go.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Route {
    /// To this node alone.
    To(usize),
    /// The key moves from one node to another and may still be on the first.
    Moving { from: usize, to: usize },
}

/// Everything an operation needs, swapped whole on a membership change.
#[derive(Debug)]
pub(crate) struct State {
    /// Bumped by every swap; scan cursors carry it.
    pub(crate) epoch: u64,
    /// Every node the router talks to, members and (during a removal) the leaving one.
    pub(crate) nodes: Vec<Arc<Node>>,
    pub(crate) current: Layout,
    pub(crate) moving: Option<Arc<Moving>>,
    /// The strictest key and value limits over the nodes.
    pub(crate) limits: Limits,
    /// Whether every node has those same limits, so that each node's own check is
    /// the router's and reads need not check twice.
    pub(crate) uniform_limits: bool,
}

impl State {
    pub(crate) fn new(
        epoch: u64,
        nodes: Vec<Arc<Node>>,
        current: Layout,
        moving: Option<Arc<Moving>>,
    ) -> Self {
        let limits = strictest(&nodes);
        let uniform_limits = nodes.iter().all(|n| n.registry.limits() == limits);
        State {
            epoch,
            nodes,
            current,
            moving,
            limits,
            uniform_limits,
        }
    }

    /// The route of `key`; `Unavailable` when the router has no nodes.
    #[inline]
    pub(crate) fn route(&self, key: &str) -> Result<Route> {
        // Both placements from the key's one hash.
        let slot = crate::placement::slot_of(key);
        let to = self.current.slot_owner(slot).ok_or_else(no_nodes)?;
        if let Some(m) = &self.moving
            && let Some(from) = m.old.slot_owner(slot)
            && from != to
        {
            return Ok(Route::Moving { from, to });
        }
        Ok(Route::To(to))
    }

    pub(crate) fn index_of(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// The order a scan visits nodes in: sources before targets, so a record moving
    /// during the scan is met at least once.
    pub(crate) fn scan_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = self.current.members().to_vec();
        order.sort_unstable_by(|&a, &b| self.nodes[a].id.cmp(&self.nodes[b].id));
        if let Some(m) = &self.moving {
            match m.direction {
                Direction::To(t) => {
                    order.retain(|&n| n != t);
                    order.push(t);
                }
                Direction::From(s) => {
                    order.retain(|&n| n != s);
                    order.insert(0, s);
                }
            }
        }
        order
    }

    /// Whether node `node` reports `key` in a scan: it owns it now, or owned it and
    /// may still hold it while it moves.
    pub(crate) fn reports(&self, node: usize, key: &str) -> bool {
        self.current.owner(key) == Some(node)
            || self
                .moving
                .as_ref()
                .is_some_and(|m| m.old.owner(key) == Some(node))
    }
}

/// The error every operation of a router without nodes answers.
pub(crate) fn no_nodes() -> Error {
    Error::Unavailable {
        node: "router".into(),
        source: "the router has no nodes".into(),
    }
}

fn strictest(nodes: &[Arc<Node>]) -> Limits {
    let mut limits = Limits::default();
    if let Some(first) = nodes.first() {
        limits = first.registry.limits();
    }
    for n in nodes {
        let l = n.registry.limits();
        limits.max_key_bytes = limits.max_key_bytes.min(l.max_key_bytes);
        limits.max_value_bytes = limits.max_value_bytes.min(l.max_value_bytes);
    }
    limits
}
