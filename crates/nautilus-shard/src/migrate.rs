//! Online resharding: membership changes, the migration that moves exactly the
//! records whose node changed, and the protocol that keeps user operations on a
//! moving key correct while it runs.
//!
//! # The protocol
//! A change swaps in a state holding both placements, then waits until every
//! operation that started under the old state has finished (a grace period), so from
//! then on nothing writes a moving key on its old node. For a moving key (old owner
//! A, new owner B):
//! - a **write** (put, delete, touch, import) first moves the key, under the lock of
//!   its stripe: read A; if A holds it, import it into B (B's version clock observes
//!   its version, so the write that follows is newer) and delete it from A; then mark
//!   it moved. The write itself goes to B.
//! - a **read** asks A, then B, and answers with the newer. A move imports into B
//!   before it deletes from A, so a record absent from A is already on B.
//! - the **migrator** walks the source nodes page by page; for a page it takes the
//!   locks of its keys' stripes, skips keys already moved by a user operation,
//!   imports the rest into their new nodes (all at once) and deletes them from the
//!   source with one batch. A moving copy therefore never overwrites a write made
//!   during the migration (it is either skipped, or `import` refuses it as older),
//!   and a delete made during it is never undone: the key was marked moved before the
//!   delete ran on B, and A no longer holds it.
//!
//! With several replicas the same lock and the same walk move a key's copies from
//! its old replica set to its new one; see [`crate::replica_move`]. A move's import
//! refused for the tombstone of a removal is waited out ([`crate::landing`]).
//!
//! Cancelled, the migration stops after its page; the router keeps serving in the
//! migrating state, and [`ShardedRegistry::resume_migration`] walks the sources again
//! (moving is idempotent) and finishes it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use nautilus_core::{DynRegistry, Entry, Error, Result};

use crate::join::join_ready;
use crate::replica_move::ReplicaMove;
use crate::router::ShardedRegistry;
use crate::state::{Direction, Layout, Moving, Node, State};

mod handle;
pub(crate) use handle::Shared;
pub use handle::{MigrationHandle, Progress};

/// Records asked for per page of a source node.
const PAGE: usize = 512;

fn invalid(reason: impl Into<String>) -> Error {
    Error::invalid_argument(reason)
}

fn runtime() -> Result<tokio::runtime::Handle> {
    tokio::runtime::Handle::try_current().map_err(|_| {
        invalid("a membership change runs its migration on a tokio runtime; call it from one")
    })
}

impl ShardedRegistry {
    /// Adds node `id` of `weight` and starts moving to it the records it now owns
    /// (about `weight / total weight` of them, all from the other nodes).
    pub async fn add_node(
        &self,
        id: impl Into<String>,
        registry: DynRegistry,
        weight: u32,
    ) -> Result<MigrationHandle> {
        let id = id.into();
        let rt = runtime()?;
        let _change = self.inner.changing.lock().await;
        let old = self.settled()?;
        if old.index_of(&id).is_some() {
            return Err(invalid(format!("node {id:?} is already a member")));
        }
        let mut nodes = old.nodes.clone();
        nodes.push(Arc::new(Node::new(
            id,
            weight,
            registry,
            &self.inner.monitor,
        )));
        let new = nodes.len() - 1;
        let mut members = old.current.members().to_vec();
        members.push(new);
        let from = Layout::new(&nodes, old.current.members())?;
        let to = Layout::new(&nodes, &members)?;
        let moving = Moving::new(from, Direction::To(new), None);
        self.begin(rt, old, nodes, to, moving).await
    }

    /// Removes node `id` once its records have moved to the others. Refuses an
    /// unknown id and the last node.
    pub async fn remove_node(&self, id: &str) -> Result<MigrationHandle> {
        let rt = runtime()?;
        let _change = self.inner.changing.lock().await;
        let old = self.settled()?;
        let leaving = old
            .index_of(id)
            .ok_or_else(|| invalid(format!("no node {id:?}")))?;
        let members: Vec<usize> = old
            .current
            .members()
            .iter()
            .copied()
            .filter(|&n| n != leaving)
            .collect();
        if members.is_empty() {
            return Err(invalid(
                "the last node cannot be removed: its records would have nowhere to go",
            ));
        }
        let nodes = old.nodes.clone();
        let from = Layout::new(&nodes, old.current.members())?;
        let to = Layout::new(&nodes, &members)?;
        let moving = Moving::new(from, Direction::From(leaving), Some(leaving));
        self.begin(rt, old, nodes, to, moving).await
    }

    /// Changes node `id`'s weight and moves the records that change node (only to it
    /// when it grows, only from it when it shrinks).
    pub async fn set_weight(&self, id: &str, weight: u32) -> Result<MigrationHandle> {
        let rt = runtime()?;
        let _change = self.inner.changing.lock().await;
        let old = self.settled()?;
        let i = old
            .index_of(id)
            .ok_or_else(|| invalid(format!("no node {id:?}")))?;
        if weight == 0 {
            return Err(invalid(
                "a node's weight must be at least 1; remove it instead",
            ));
        }
        let was = old.nodes[i].weight;
        if weight == was {
            return Ok(MigrationHandle::finished());
        }
        let mut nodes = old.nodes.clone();
        nodes[i] = Arc::new(nodes[i].with(weight, Arc::clone(nodes[i].registry.dyn_registry())));
        let from = Layout::new(&old.nodes, old.current.members())?;
        let to = Layout::new(&nodes, old.current.members())?;
        let direction = if weight > was {
            Direction::To(i)
        } else {
            Direction::From(i)
        };
        self.begin(rt, old, nodes, to, Moving::new(from, direction, None))
            .await
    }

    /// The migration running now, or a new run of an unfinished one (after a
    /// cancellation or a failure); a finished handle when nothing is moving.
    pub async fn resume_migration(&self) -> Result<MigrationHandle> {
        let rt = runtime()?;
        let _change = self.inner.changing.lock().await;
        if let Some(running) = self.running() {
            return Ok(running);
        }
        if self.inner.state.load().moving.is_none() {
            return Ok(MigrationHandle::finished());
        }
        Ok(self.spawn(&rt))
    }

    /// Whether records are moving (a migration started and not finished).
    #[must_use]
    pub fn is_migrating(&self) -> bool {
        self.inner.state.load().moving.is_some()
    }

    fn running(&self) -> Option<MigrationHandle> {
        let m = self.inner.migration.lock();
        m.as_ref()
            .filter(|s| !s.task.is_done())
            .map(|s| MigrationHandle {
                shared: Arc::clone(s),
            })
    }

    /// The state, if no migration is unfinished and the router can move records:
    /// every node up, with no hand-back pending.
    fn settled(&self) -> Result<Arc<State>> {
        let state = self.inner.state.load_full();
        let unverified = |n: &Node| self.inner.config.replicas > 1 && n.unverified();
        if let Some(n) = state
            .nodes
            .iter()
            .find(|n| !n.is_up() || n.hints.len() > 0 || unverified(n))
        {
            return Err(Error::Unavailable {
                node: n.id.clone(),
                source: "a node is down, has writes to hand back, or came back and awaits its repair \
                         (see health(); run repair() if the automatic one failed); change the nodes once \
                         it is up and caught up"
                    .into(),
            });
        }
        if state.moving.is_some() {
            return Err(invalid(
                "a migration is unfinished: wait for it, or resume it, before changing the nodes again",
            ));
        }
        if self.inner.returns.repairs.load(Ordering::SeqCst) > 0 {
            // Keys would wait to move until its walk ended.
            return Err(Error::Unavailable {
                node: "router".into(),
                source: "a repair is running; change the nodes once it has finished".into(),
            });
        }
        Ok(state)
    }

    async fn begin(
        &self,
        rt: tokio::runtime::Handle,
        old: Arc<State>,
        nodes: Vec<Arc<Node>>,
        to: Layout,
        moving: Moving,
    ) -> Result<MigrationHandle> {
        let next = State::new(old.epoch + 1, nodes, to, Some(Arc::new(moving)));
        // Nodes that gain hold their larger share before any record moves.
        if let Some(m) = &next.moving {
            self.apply_capacity(&next, &[&m.old, &next.current]).await?;
        }
        let moving = next.moving.clone();
        self.inner.state.store(Arc::new(next));
        // In a task of its own: keys move only once it is done, even if the caller
        // stops waiting.
        let timers = Arc::clone(&self.inner.monitor.timers);
        let drain = rt.spawn(async move {
            grace(old, &timers).await;
            if let Some(m) = moving {
                m.set_drained();
            }
        });
        let _ = drain.await;
        Ok(self.spawn(&rt))
    }

    fn spawn(&self, rt: &tokio::runtime::Handle) -> MigrationHandle {
        let shared = Arc::new(Shared::default());
        *self.inner.migration.lock() = Some(Arc::clone(&shared));
        let router = self.clone();
        let task = Arc::clone(&shared);
        rt.spawn(async move {
            let outcome = run(&router, &task).await;
            task.task.finish(outcome);
        });
        MigrationHandle { shared }
    }

    /// Swaps in the state without the old placement, once every record moved; then
    /// starts a repair (with several replicas) if a walk met failures (`troubled`)
    /// or a node came back during the migration.
    async fn finish(&self, troubled: bool) -> Result<()> {
        let _change = self.inner.changing.lock().await;
        let old = self.inner.state.load_full();
        let Some(m) = &old.moving else {
            return Ok(());
        };
        // A node that came back during the migration could not be repaired then;
        // nor could the records of a leaving node that came back empty, which
        // never reached the node gaining them.
        let repair = troubled || old.nodes.iter().any(|n| n.unverified());
        let mut nodes = old.nodes.clone();
        let mut members = old.current.members().to_vec();
        if let Some(leaving) = m.leaving {
            nodes.remove(leaving);
            members = members
                .into_iter()
                .map(|i| if i > leaving { i - 1 } else { i })
                .collect();
        }
        let current = Layout::new(&nodes, &members)?;
        let next = State::new(old.epoch + 1, nodes, current, None);
        self.inner.state.store(Arc::new(next));
        grace(old, &self.inner.monitor.timers).await;
        let state = self.inner.state.load_full();
        if repair {
            self.repair_returned();
        }
        self.apply_capacity(&state, &[&state.current]).await
    }
}

/// Waits until no operation holds `old` any more (the swap counted every reader's
/// guard into its reference count).
async fn grace(old: Arc<State>, timers: &crate::deadline::Timers) {
    // Yields at first (in-process nodes finish at once), then sleeps a millisecond
    // at a time: an operation parked on a hung node must not keep a core busy.
    let mut spins = 0u32;
    while Arc::strong_count(&old) > 1 {
        if spins < 64 {
            spins += 1;
            tokio::task::yield_now().await;
        } else {
            timers.pause(std::time::Duration::from_millis(1)).await;
        }
    }
}

/// How many walks over the sources a migration makes before it gives up on records
/// it could not move.
const MAX_PASSES: u32 = 5;

/// The pause before walking again after failed moves, times the walk's number.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Walks the sources until a walk moves every record it meets, then drops the old
/// placement; `Ok(false)` when cancelled. A record whose import or delete failed is
/// still on its old node, where only the old placement finds it: dropping that
/// placement then would hide it from every read.
async fn run(router: &ShardedRegistry, shared: &Shared) -> Result<bool> {
    for pass in 1..=MAX_PASSES {
        shared.next_walk();
        if !walk(router, shared).await? {
            return Ok(false);
        }
        if shared.failed.load(Ordering::Relaxed) == 0 {
            // A walk that met failures may have left copies short (a losing node
            // that came back empty has nothing left to walk): repair at the end.
            router
                .finish(shared.retried.load(Ordering::Relaxed) > 0)
                .await?;
            return Ok(true);
        }
        if pass < MAX_PASSES {
            router.inner.monitor.timers.pause(RETRY_PAUSE * pass).await;
        }
    }
    let last = shared.last_failure.lock().clone().unwrap_or_default();
    Err(Error::Backend {
        backend: "shard",
        source: format!(
            "records could not be moved in {MAX_PASSES} walks (last failure: {last}); \
             they stay readable on their old nodes and resume_migration tries again"
        )
        .into(),
    })
}

/// Walks every source node; `Ok(false)` when cancelled.
async fn walk(router: &ShardedRegistry, shared: &Shared) -> Result<bool> {
    let state = router.inner.state.load_full();
    let Some(m) = state.moving.clone() else {
        return Ok(true);
    };
    let replicas = router.inner.config.replicas;
    for src in m.sources() {
        let node = &state.nodes[src];
        let mut cursor = None;
        loop {
            if shared.task.cancel_requested() {
                return Ok(false);
            }
            let page = node
                .registry
                .scan("", cursor.as_ref(), PAGE)
                .await
                .map_err(|e| node.error(e))?;
            let page = crate::scan::advancing(node, cursor.as_ref(), page)?;
            shared
                .scanned
                .fetch_add(page.records.len() as u64, Ordering::Relaxed);
            if replicas > 1 {
                move_replicated_page(router, &state, &m, src, page.records, shared).await;
                tokio::task::yield_now().await;
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
                continue;
            }
            // A record moves if the new placement gives it another node and the old
            // one gave it this node (anything else here is a stray copy, which repair
            // handles). Most stay, so the new owner is asked first, and both owners
            // come from the key's one hash.
            let mut moving: Vec<(String, Entry, usize)> = Vec::with_capacity(page.records.len());
            for (k, e) in page.records {
                let slot = crate::placement::slot_of(&k);
                if let Some(to) = state.current.slot_owner(slot)
                    && to != src
                    && m.old.slot_owner(slot) == Some(src)
                {
                    moving.push((k, e, to));
                }
            }
            if !moving.is_empty() {
                move_page(router, &state, &m, node, moving, shared).await;
            }
            // Memory nodes answer without waiting, and a page with nothing to move
            // takes no lock (whose cooperative budget would give other tasks a turn):
            // without this, a walk over such pages would hold a current-thread runtime.
            tokio::task::yield_now().await;
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    Ok(true)
}

/// Moves the keys of a page of `source` whose replicas change and that the walk
/// moves from there (see [`ReplicaMove::walked_from`]).
async fn move_replicated_page(
    router: &ShardedRegistry,
    state: &State,
    m: &Moving,
    source: usize,
    records: Vec<(String, Entry)>,
    shared: &Shared,
) {
    let replicas = router.inner.config.replicas;
    let keys: Vec<(String, ReplicaMove)> = records
        .into_iter()
        .filter_map(|(k, _)| {
            let mv = ReplicaMove::of(state, m, &k, replicas)?;
            mv.walked_from(source).then_some((k, mv))
        })
        .collect();
    if keys.is_empty() {
        return;
    }
    for answer in router.move_page_replicated(state, m, keys).await {
        match answer {
            Some(Ok(())) => {
                shared.moved.fetch_add(1, Ordering::Relaxed);
            }
            Some(Err(e)) => shared.fail(&e),
            None => {}
        }
    }
}

/// Moves one page's records under the locks of their stripes.
async fn move_page(
    router: &ShardedRegistry,
    state: &State,
    m: &Moving,
    source: &Node,
    records: Vec<(String, Entry, usize)>,
    shared: &Shared,
) {
    let guards = m.lock(records.iter().map(|r| r.0.as_str())).await;
    // Keys moved by a user operation since the page was read are skipped.
    let (keys, copies): (Vec<String>, Vec<(Entry, usize)>) = records
        .into_iter()
        .filter(|(k, _, _)| !guards.moved(k))
        .map(|(k, e, to)| (k, (e, to)))
        .unzip();
    let imported = join_ready(
        keys.iter()
            .zip(&copies)
            .map(|(k, (e, to))| state.nodes[*to].registry.import(k, e.clone())),
    )
    .await;
    let mut done = Vec::with_capacity(keys.len());
    for ((r, k), (e, to)) in imported.into_iter().zip(&keys).zip(&copies) {
        let node = &state.nodes[*to];
        let landed = match r {
            Ok(true) => Ok(()),
            // Refused: the new node holds the record or a newer one, unless what it
            // holds is the tombstone of its own removal of the key (see `landing`).
            Ok(false) => {
                let inner = &router.inner;
                crate::landing::refused(node, k, e, &*inner.clock, &inner.monitor.timers).await
            }
            Err(e) => Err(e),
        };
        match landed {
            Ok(()) => done.push(k.as_str()),
            Err(e) => shared.fail(&e),
        }
    }
    if done.is_empty() {
        return;
    }
    let deleted = source.registry.delete_many(&done).await;
    for r in deleted {
        match r {
            Ok(removed) => {
                if removed {
                    // The old copy of a record that moved: not a delete of a caller's.
                    source.tally.uncounted_delete();
                }
                shared.moved.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => shared.fail(&e),
        }
    }
    drop(guards);
}

/// Moves `key` from `from` to `to` if no operation moved it yet (the write path of
/// the protocol). Returns once the key is on `to` only.
pub(crate) async fn move_key(
    router: &ShardedRegistry,
    state: &State,
    m: &Moving,
    key: &str,
    from: usize,
    to: usize,
) -> Result<()> {
    m.drained().await;
    let mut moved = m.moved[Moving::stripe(key)].lock().await;
    if moved.contains(key) {
        return Ok(());
    }
    let (a, b) = (&state.nodes[from], &state.nodes[to]);
    if let Some(entry) = a.read_uncounted(key).await? {
        let inner = &router.inner;
        crate::landing::land(b, key, &entry, &*inner.clock, &inner.monitor.timers).await?;
        a.remove_copy(key, entry.version).await?;
    }
    moved.insert(key.to_owned());
    Ok(())
}
