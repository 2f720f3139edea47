//! Anti-entropy repair: walks every node page by page and brings each record's
//! replicas up to its newest copy, for a node that came back empty (a Redis without
//! persistence, a restarted process) and for a router that restarted and lost its
//! pending hand-backs.
//!
//! For each page of a node's records, every other replica of those keys is read with
//! one batch per node; a replica that lacks a record or holds an older one gets it
//! through `import`, a node holding an older copy gets the newer one, and a copy
//! that a replica refuses because it holds a newer tombstone is deleted where it
//! was found. Copies on nodes that are not among a key's replicas (a stand-in's
//! leftovers) are handed to the replicas, then removed. Replicas holding different
//! records at one version are settled: the larger record is written again above the
//! tie (only over that version) and copied to the others. Every step is an
//! only-if-newer import or a version-conditional write or delete, so a repair can
//! run alongside traffic, be cancelled, and run again with the same result.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::future::join_all;
use nautilus_core::{Condition, Entry, Error, Expiry, PutOptions, Result};

use crate::router::ShardedRegistry;
use crate::state::State;
use crate::task::Task;

/// Records read per page of a node.
const PAGE: usize = 512;

/// What a repair has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RepairProgress {
    /// Nodes walked to the end.
    pub nodes_done: u64,
    /// Records read from the nodes.
    pub scanned: u64,
    /// Copies written or removed to bring replicas up to date.
    pub repaired: u64,
    /// Copies that could not be repaired (a node error); running the repair again
    /// retries them.
    pub failed: u64,
    /// The repair is over: finished, cancelled or failed.
    pub done: bool,
    /// It stopped because it was cancelled.
    pub cancelled: bool,
}

#[derive(Debug, Default)]
struct Shared {
    nodes_done: AtomicU64,
    scanned: AtomicU64,
    repaired: AtomicU64,
    failed: AtomicU64,
    task: Task,
}

/// A running (or finished) repair: watch it, wait for it, cancel it.
#[derive(Debug, Clone)]
pub struct RepairHandle {
    shared: Arc<Shared>,
}

impl RepairHandle {
    /// What it has done so far.
    #[must_use]
    pub fn progress(&self) -> RepairProgress {
        let s = &self.shared;
        RepairProgress {
            nodes_done: s.nodes_done.load(Ordering::Relaxed),
            scanned: s.scanned.load(Ordering::Relaxed),
            repaired: s.repaired.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            done: s.task.is_done(),
            cancelled: s.task.is_cancelled(),
        }
    }

    /// Asks it to stop after the page it is on.
    pub fn cancel(&self) {
        self.shared.task.cancel();
    }

    /// Waits until it is over: the final progress, or the error that stopped it (a
    /// node that could not be walked).
    pub async fn wait(&self) -> Result<RepairProgress> {
        self.shared.task.wait().await?;
        Ok(self.progress())
    }
}

/// How many times a repair that nodes coming back started is tried again after it
/// failed to verify them.
const MAX_RETRIES: u32 = 8;

/// The repairs that nodes coming back start: one at a time, and one more after it
/// when a node came back while it ran (that one cannot verify it).
#[derive(Debug, Default)]
pub(crate) struct Returns {
    wanted: std::sync::atomic::AtomicBool,
    running: std::sync::atomic::AtomicBool,
    /// Repairs running, of any origin: a membership change waits for every
    /// operation of the state before it, a repair's walk included, so it is
    /// refused while one runs instead.
    pub(crate) repairs: std::sync::atomic::AtomicUsize,
}

impl ShardedRegistry {
    /// A node came back from down: with several replicas and
    /// [`repair_on_return`](crate::ShardedRegistryBuilder::repair_on_return), a repair
    /// runs (after the one running, if any) to verify it.
    pub(crate) fn repair_returned(&self) {
        let inner = &self.inner;
        if inner.config.replicas < 2 || !inner.config.repair_on_return {
            return;
        }
        let returns = &inner.returns;
        returns.wanted.store(true, Ordering::SeqCst);
        if returns.running.swap(true, Ordering::SeqCst) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            returns.running.store(false, Ordering::SeqCst);
            return;
        };
        let router = self.clone();
        rt.spawn(async move {
            let returns = &router.inner.returns;
            let mut retries = 0u32;
            loop {
                if !returns.wanted.swap(false, Ordering::SeqCst) {
                    returns.running.store(false, Ordering::SeqCst);
                    // A node that came back between the two stores finds it running.
                    if returns.wanted.load(Ordering::SeqCst)
                        && !returns.running.swap(true, Ordering::SeqCst)
                    {
                        continue;
                    }
                    return;
                }
                // A failed repair (a node down, a migration running) leaves the node
                // unverified: reads keep asking a second replica for its keys.
                if let Ok(handle) = router.repair() {
                    let _ = handle.wait().await;
                }
                // One that failed while every node was up (a call failed, a node
                // went down and came back) is tried again, a little later each
                // time: else the node stayed unverified, and membership changes
                // refused, until the caller ran one (found from outside). A node
                // still down gets a repair when it comes back.
                let state = router.inner.state.load_full();
                if state.moving.is_none()
                    && state.nodes.iter().all(|n| n.is_up())
                    && state.nodes.iter().any(|n| n.unverified())
                    && retries < MAX_RETRIES
                {
                    retries += 1;
                    let pause = router.inner.config.health.interval * (1 << retries.min(5));
                    router.inner.monitor.timers.pause(pause).await;
                    returns.wanted.store(true, Ordering::SeqCst);
                }
            }
        });
    }

    /// Starts a repair of every record on every node that is up (see the module
    /// docs of `repair`): each record ends on its R replicas at its newest version,
    /// or deleted everywhere if a replica holds a newer tombstone.
    pub fn repair(&self) -> Result<RepairHandle> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::invalid_argument("a repair runs on a tokio runtime; call it from one")
        })?;
        let shared = Arc::new(Shared::default());
        let handle = RepairHandle {
            shared: Arc::clone(&shared),
        };
        let router = self.clone();
        // Each node's health changes so far: a repair that walked every node while
        // none went down or came back verifies the nodes that came back before it.
        let state = self.inner.state.load_full();
        let marks: Vec<u64> = state.nodes.iter().map(|n| n.health.transitions()).collect();
        let all_up = state.nodes.iter().all(|n| n.is_up());
        /// Counts the repair as running until its task ends, however it ends.
        struct Running(ShardedRegistry);
        impl Drop for Running {
            fn drop(&mut self) {
                self.0.inner.returns.repairs.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.inner.returns.repairs.fetch_add(1, Ordering::SeqCst);
        let running = Running(self.clone());
        rt.clone().spawn(async move {
            let _running = running;
            let outcome = router.walk_all(&rt, &shared).await;
            let clean = matches!(outcome, Ok(true)) && shared.failed.load(Ordering::SeqCst) == 0;
            let steady = state
                .nodes
                .iter()
                .zip(&marks)
                .all(|(n, &t)| n.health.transitions() == t);
            if clean && all_up && steady {
                for (n, &t) in state.nodes.iter().zip(&marks) {
                    n.health.verified(t);
                }
            }
            // Over before its waiters hear of it: a change they make next is not
            // refused for it.
            drop(_running);
            shared.task.finish(outcome);
        });
        Ok(handle)
    }

    /// Walks every node that is up, each in a task of its own (nodes are repaired in
    /// parallel); `Ok(false)` when cancelled, else the first node error.
    async fn walk_all(&self, rt: &tokio::runtime::Handle, shared: &Arc<Shared>) -> Result<bool> {
        let state = self.inner.state.load_full();
        if state.moving.is_some() {
            return Err(Error::invalid_argument(
                "a migration is unfinished: finish it before repairing",
            ));
        }
        let walks: Vec<_> = state
            .current
            .members()
            .iter()
            .copied()
            .filter(|&n| state.nodes[n].is_up())
            .map(|n| {
                let (router, state, shared) =
                    (self.clone(), Arc::clone(&state), Arc::clone(shared));
                rt.spawn(async move { router.walk(&state, n, &shared).await })
            })
            .collect();
        let mut outcome = Ok(true);
        for walk in walks {
            let done = walk.await.unwrap_or_else(|e| {
                Err(Error::Backend {
                    backend: "shard",
                    source: format!("a repair walk stopped: {e}").into(),
                })
            });
            outcome = match (outcome, done) {
                (Err(e), _) | (Ok(_), Err(e)) => Err(e),
                (Ok(a), Ok(b)) => Ok(a && b),
            };
        }
        outcome
    }

    /// Walks node `n` page by page; `Ok(false)` when cancelled.
    async fn walk(&self, state: &State, n: usize, shared: &Shared) -> Result<bool> {
        let node = &state.nodes[n];
        let mut cursor = None;
        loop {
            if shared.task.cancel_requested() {
                return Ok(false);
            }
            let page = node.answer(node.registry.scan("", cursor.as_ref(), PAGE).await)?;
            let page = crate::scan::advancing(node, cursor.as_ref(), page)?;
            shared
                .scanned
                .fetch_add(page.records.len() as u64, Ordering::Relaxed);
            self.repair_page(state, n, page.records, shared).await;
            self.heal_skipped(state, n, page.skipped, shared).await;
            // Memory nodes answer without yielding: let cancellation and other tasks in.
            tokio::task::yield_now().await;
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        shared.nodes_done.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Heals the keys node `from` listed as skipped (its copies corrupt, see
    /// [`crate::heal`]) where it is one of their replicas. The other replicas' walks
    /// would give it their record, if they hold one; a deleted key's copy is healed
    /// only here. (Before, such a copy stayed, and every write of the key through
    /// the router was refused as corrupt.) With one replica there is no other copy:
    /// the error stands, as the backend answers it. Where `from` is no replica of a
    /// key, its corrupt copy is cleared (see [`ShardedRegistry::clear_foreign`]).
    async fn heal_skipped(
        &self,
        state: &State,
        from: usize,
        skipped: Vec<String>,
        shared: &Shared,
    ) {
        let r = self.inner.config.replicas;
        for key in skipped {
            if state.limits.check_key(&key).is_err() {
                continue;
            }
            let healed = if state.current.preference(&key, r).contains(&from) {
                if r < 2 {
                    continue;
                }
                self.heal(state, &key).await
            } else {
                match self.clear_foreign(state, from, &key).await {
                    Some(cleared) => cleared,
                    None => continue,
                }
            };
            let counter = if healed {
                &shared.repaired
            } else {
                &shared.failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Brings the replicas of one page of node `from`'s records up to date.
    async fn repair_page(
        &self,
        state: &State,
        from: usize,
        records: Vec<(String, Entry)>,
        shared: &Shared,
    ) {
        let r = self.inner.config.replicas;
        // Which other replicas to compare with, and whether `from` is a replica.
        let mut per_node: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut foreign = Vec::new();
        // Whether every replica holds this copy or a newer one, once the steps ran:
        // not if one of them is down (it has not been compared).
        let mut held = vec![true; records.len()];
        let mut is_foreign = vec![false; records.len()];
        // A copy a write of `from`'s outage supersedes (a stand-in holds it for
        // `from`, to hand back) is left to that hand-back: compared now, a delete of
        // the outage whose tombstones the other replicas have collected since (an
        // outage longer than the grace) would have the old copy given back to them
        // (found from outside: 205 of 206 such deletes undone when a node came back
        // and its repair ran before its hand-backs).
        let superseded: Vec<bool> = records
            .iter()
            .map(|(key, entry)| {
                state.nodes[from]
                    .hints
                    .hint(key)
                    .is_some_and(|h| h.entry.version >= entry.version)
            })
            .collect();
        for (i, (key, _)) in records.iter().enumerate() {
            if superseded[i] {
                held[i] = false;
                continue;
            }
            let replicas = state.current.preference(key, r);
            if !replicas.contains(&from) {
                foreign.push(i);
                is_foreign[i] = true;
            }
            for n in replicas {
                if n == from {
                    continue;
                }
                if state.nodes[n].is_up() {
                    per_node.entry(n).or_default().push(i);
                } else {
                    held[i] = false;
                }
            }
        }
        let reads = join_all(per_node.iter().map(|(&n, positions)| {
            let node = &state.nodes[n];
            let keys: Vec<&str> = positions.iter().map(|&p| records[p].0.as_str()).collect();
            async move { (n, positions, node.registry.get_many(&keys).await) }
        }))
        .await;
        let mut steps = Vec::new();
        for (n, positions, answers) in reads {
            // A batch answered short (a broken node) compares nothing: those records
            // count as failed and no copy of them is removed.
            if answers.len() != positions.len() {
                for &p in positions {
                    held[p] = false;
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            for (&p, answer) in positions.iter().zip(answers) {
                let (key, entry) = &records[p];
                // The repair's own reads: not a caller's (see `Tally`).
                if let Ok(found) = &answer {
                    state.nodes[n].tally.uncounted(found.is_some());
                }
                let give = |to: usize| {
                    let give = Give {
                        from,
                        to,
                        from_is_replica: !is_foreign[p],
                    };
                    (p, Op::Give(give, key, entry.clone()))
                };
                match answer {
                    // A corrupt copy (bytes its store did not write) holds no version:
                    // an import of this one replaces it. (Counted failed before, and
                    // every later repair failed on it too.)
                    Err(Error::Corrupt { .. }) => steps.push(give(n)),
                    Err(_) => {
                        held[p] = false;
                        shared.failed.fetch_add(1, Ordering::Relaxed);
                    }
                    // The same version with another record (two failed writes whose
                    // hand-backs were lost, or a copy damaged in place): imports
                    // refuse equal versions, so the larger record (by value, then the
                    // later expiry, never expiring the latest: any fixed rule
                    // converges) is written again above it and copied to the
                    // replicas. The later expiry, because one write has one: copies
                    // that differ only there were changed behind the router's back,
                    // and keeping the one that lasts longest loses no record early.
                    // (Before, any expiry beat none: one set by hand on one replica
                    // was copied to both, and the record expired on both, found from
                    // outside.)
                    Ok(Some(theirs)) if theirs.version == entry.version => {
                        if !is_foreign[p]
                            && (theirs.value != entry.value
                                || theirs.expires_at != entry.expires_at)
                        {
                            let lasts =
                                |e: &Entry| e.expires_at.map_or(u64::MAX, |t| t.as_millis());
                            let winner =
                                if (&theirs.value, lasts(&theirs)) > (&entry.value, lasts(entry)) {
                                    theirs
                                } else {
                                    entry.clone()
                                };
                            steps.push((p, Op::Settle(key, winner)));
                        }
                    }
                    // A replica behind the others catches up; a node that is not a
                    // replica does not (its copy is removed below, at the version
                    // read: brought up to date first, it would stay).
                    Ok(Some(theirs)) if theirs.version > entry.version => {
                        if !is_foreign[p] {
                            steps.push((p, Op::Import(from, key, theirs)));
                        }
                    }
                    Ok(_) => steps.push(give(n)),
                }
            }
        }
        let done = join_all(
            steps
                .into_iter()
                .map(|(p, op)| async move { (p, Self::apply(state, r, op).await) }),
        )
        .await;
        for (p, result) in done {
            if result.is_ok() {
                shared.repaired.fetch_add(1, Ordering::Relaxed);
            } else {
                held[p] = false;
                shared.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        let src = &state.nodes[from];
        let removed = join_all(foreign.into_iter().filter(|&p| held[p]).map(|p| {
            let (key, entry) = &records[p];
            async move { src.remove_copy(key, entry.version).await }
        }))
        .await;
        for r in removed {
            let counter = if r.is_ok() {
                &shared.repaired
            } else {
                &shared.failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One repair step (`r`: the replicas).
    async fn apply(state: &State, r: usize, op: Op<'_>) -> Result<()> {
        match op {
            Op::Settle(key, winner) => {
                let replicas = state.current.preference(key, r);
                let Some(&c) = replicas.iter().find(|&&n| state.nodes[n].is_up()) else {
                    return Ok(());
                };
                let node = &state.nodes[c];
                let expiry = winner.expires_at.map_or(Expiry::Never, Expiry::At);
                let only_the_tie = PutOptions::default()
                    .expiry(expiry)
                    .condition(Condition::Version(winner.version));
                let version = match node
                    .registry
                    .put_opts(key, winner.value.clone(), only_the_tie)
                    .await
                {
                    Ok(v) => v,
                    // Written since (a later write settles it), or expired.
                    Err(Error::Conflict { .. } | Error::InvalidArgument { .. }) => return Ok(()),
                    Err(e) => return Err(node.error(e)),
                };
                let settled = Entry::new(winner.value, version, winner.expires_at);
                for n in replicas.into_iter().filter(|&n| n != c) {
                    let other = &state.nodes[n];
                    if other.is_up() {
                        other
                            .answer(other.registry.import(key, settled.clone()).await)
                            .map(drop)?;
                    }
                }
                Ok(())
            }
            Op::Import(to, key, entry) => {
                let node = &state.nodes[to];
                node.answer(node.registry.import(key, entry).await)
                    .map(drop)
            }
            Op::Give(give, key, entry) => {
                let Give {
                    from,
                    to,
                    from_is_replica,
                } = give;
                let node = &state.nodes[to];
                if node.answer(node.registry.import(key, entry.clone()).await)? {
                    let source = &state.nodes[from];
                    match source.read_uncounted(key).await? {
                        // Deleted on `from`, a replica, since it was read (a hand-back
                        // of a delete of its outage landed): the copy given is taken
                        // back. A node that is not a replica loses its copy without
                        // any delete (a stand-in's, once handed back): taken back
                        // then, the copy the hand-back had just brought went too,
                        // and the replica's tombstone of its removal hid the record
                        // (a read of an acknowledged write answered "not found" in
                        // a CI run of the SIGSTOP fault test).
                        None if from_is_replica => node.remove_copy(key, entry.version).await?,
                        None => {}
                        // Written since: the replica gets the newer copy too. Taking
                        // the copy back instead left the replica a tombstone newer
                        // than that write (a Redis delete keeps one), which refused
                        // the write's own copy; reads then answered "not found", and
                        // the next repair took the refusal for a delete and removed
                        // the write's last copy (acknowledged writes read back as
                        // missing in 3 of 30 runs of the fault tests under load).
                        Some(newer) if newer.version > entry.version => {
                            node.answer(node.registry.import(key, newer).await)?;
                        }
                        Some(_) => {}
                    }
                    return Ok(());
                }
                // Refused: the replica holds this version or a newer one by now (a
                // parallel walk, a write), or a newer tombstone. Only a tombstone,
                // seen as no live record at all, means this copy was deleted, and
                // only if the replica refuses the copy again and still holds nothing
                // live: what it held when it refused may have been a corrupt copy a
                // parallel walk's heal was replacing (dropped, then the record
                // imported), which is no delete. (Taken for one, the last good copy
                // was removed: found from outside, a layout byte changed on a second
                // replica lost the record in 4 of 21 trials.)
                if node.read_uncounted(key).await?.is_some()
                    || node.answer(node.registry.import(key, entry.clone()).await)?
                    || node.read_uncounted(key).await?.is_some()
                {
                    return Ok(());
                }
                state.nodes[from].remove_copy(key, entry.version).await?;
                Ok(())
            }
        }
    }
}

/// A repair step.
enum Op<'a> {
    /// Write the larger of two records at one version again above it, on the key's
    /// first up replica (only over that version), and copy it to the others.
    Settle(&'a str, Entry),
    /// Import a newer copy into a node that holds an older one.
    Import(usize, &'a str, Entry),
    /// Give `from`'s copy to a replica that lacks it or holds an older one.
    Give(Give, &'a str, Entry),
}

/// Where a [`Op::Give`] copy goes from and to.
struct Give {
    from: usize,
    to: usize,
    /// Whether `from` is one of the key's replicas: only then does its copy vanishing
    /// mean a delete.
    from_is_replica: bool,
}
