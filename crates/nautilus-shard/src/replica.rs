//! Replicated operations: a key's first R nodes hold it; nodes that are down are
//! skipped, and the next up nodes of the preference list stand in for them.
//!
//! - A **write** is applied by the first up replica (the coordinator), with the
//!   caller's condition and that node's version clock; the other replicas and the
//!   stand-ins receive the same record at the same version through `import`. It is
//!   acknowledged once W nodes have it; a stand-in counts because the router keeps a
//!   hand-back of what it took and imports it into the replica when it returns.
//! - A **delete** leaves a tombstone at the delete's version on every node that gets
//!   it, kept for the router's tombstone grace, so no stale copy comes back.
//! - A **read**: see [`crate::reads`].
//! - A replica that refuses a write's copy for a newer one: see [`crate::refused`].
//! - A write whose coordinator has a pending hand-back for the key hands it back
//!   first, so the coordinator's clock has seen the newer version.
//!
//! This module holds what every replicated write shares (its targets, the
//! coordinator's decision, the spread to the other nodes, the quorum); the writes
//! themselves (put, delete, touch, import) are in [`ops`].

use std::sync::Arc;

use futures_util::future::join_all;
use nautilus_core::{Entry, Error, Result, Version};

use crate::hints::InFlight;
use crate::refused::{self, Decided, Resolved};
use crate::router::ShardedRegistry;
use crate::state::{Node, State};

mod ops;

/// How far ahead of the router's clock a write a stand-in coordinates is versioned:
/// past any version the down replica issued before it went down (in the same
/// millisecond its counter may be ahead of the stand-in's), unless its clock ran more
/// than this ahead of the router's. Kept short: it is also how much later a write
/// through another router, which still sees the replica up, must come to win over
/// this one.
const STANDIN_LEAD: std::time::Duration = std::time::Duration::from_millis(10);

/// How long, in call timeouts, a write waits at either gate of [`InFlight`] before
/// it answers `Unavailable`: the write it waits for makes at most a few calls, each
/// bounded by the call timeout.
const GATE_WAIT_CALLS: u32 = 4;

/// What spreading a write answered.
struct Spread {
    acks: usize,
    errors: Vec<Error>,
    /// Whether a replica refused a fresh write for a copy the coordinator had not
    /// seen (`Some(Some(v))`: a tie, the write at version `v` to replace itself).
    again: Option<Option<Version>>,
}

/// One copy that does not count.
enum Uncounted {
    Failed(Error),
    /// Refused for a copy the coordinator had not seen, which it has taken now
    /// (see [`Resolved::Again`]).
    Again(Option<Version>),
}

/// Where the copies of a write go, inline for the usual replica counts.
pub(crate) type Targets = smallvec::SmallVec<[Target; crate::placement::INLINE_PREFERENCE]>;

/// Where one copy of a write goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target {
    pub(crate) node: usize,
    /// The down replica this node stands in for, if it is a stand-in.
    pub(crate) standin_for: Option<usize>,
}

/// The nodes a write of `key` goes to: its replicas that are up, and a stand-in for
/// each one that is down (while up nodes remain).
pub(crate) fn targets(state: &State, replicas: usize, key: &str) -> Result<Targets> {
    let prefs = state.current.preference_inline(key, replicas);
    if prefs.is_empty() {
        return Err(crate::state::no_nodes());
    }
    if prefs.iter().all(|&n| state.nodes[n].is_up()) {
        return Ok(prefs
            .iter()
            .map(|&node| Target {
                node,
                standin_for: None,
            })
            .collect());
    }
    let all = state
        .current
        .preference_inline(key, state.current.members().len());
    let mut spare = all
        .iter()
        .skip(replicas)
        .copied()
        .filter(|&n| state.nodes[n].is_up());
    let mut out = Targets::new();
    for &r in &all[..replicas.min(all.len())] {
        if state.nodes[r].is_up() {
            out.push(Target {
                node: r,
                standin_for: None,
            });
        } else if let Some(s) = spare.next() {
            out.push(Target {
                node: s,
                standin_for: Some(r),
            });
        }
    }
    if out.is_empty() {
        return Err(all_down(state, &all[..replicas.min(all.len())]));
    }
    Ok(out)
}

/// `Unavailable` naming the nodes that are down.
pub(crate) fn all_down(state: &State, nodes: &[usize]) -> Error {
    let names: Vec<&str> = nodes.iter().map(|&n| state.nodes[n].id.as_str()).collect();
    Error::Unavailable {
        node: names.join(","),
        source: "every replica of the key is down".into(),
    }
}

impl ShardedRegistry {
    /// Where a write of `key` goes and which of those nodes coordinates it: the
    /// first real replica, else the first stand-in, which may coordinate only writes
    /// it can check (`checked`: conditional writes, deletes and touches) if it took
    /// the key during this outage. A hand-back pending for the key on the
    /// coordinator goes first, so that its version clock has seen that write.
    ///
    /// The write stays registered with its coordinator and with the replicas it
    /// takes stand-ins for until the [`InFlight`] returned is dropped, after its
    /// hand-backs are recorded. A replica back up coordinates once no write that
    /// stood in for it is in flight, and a replica coordinating in place of a down
    /// one once no write that one coordinates is (see [`InFlight`]); either answers
    /// `Unavailable` after [`GATE_WAIT_CALLS`] call timeouts.
    async fn coordinate(
        &self,
        state: &State,
        key: &str,
        checked: bool,
    ) -> Result<(Targets, usize, InFlight)> {
        let mut waiting_since = None;
        loop {
            let targets = targets(state, self.inner.config.replicas, key)?;
            let mut inflight = InFlight::stand_in(
                targets
                    .iter()
                    .filter_map(|t| t.standin_for)
                    .map(|r| &state.nodes[r].hints),
            );
            let replica_back = targets.iter().any(|t| {
                t.standin_for
                    .is_some_and(|r| !state.nodes[r].health.is_down_ordered())
            });
            let c = match targets.iter().position(|t| t.standin_for.is_none()) {
                Some(i) => i,
                None => {
                    let holds = targets[0]
                        .standin_for
                        .is_some_and(|r| state.nodes[r].hints.contains(key));
                    if checked && !holds && !replica_back {
                        let replicas: Vec<usize> =
                            targets.iter().filter_map(|t| t.standin_for).collect();
                        return Err(all_down(state, &replicas));
                    }
                    0
                }
            };
            let node = &state.nodes[targets[c].node];
            inflight.coordinate(&node.hints);
            let real = targets[c].standin_for.is_none();
            // A replica marked up since the targets were chosen takes its own copy
            // now, and a coordinator marked down since, its own stand-in; a
            // coordinator back up waits for the writes that stood in for it, and one
            // in place of a replica that went down, for the writes that replica is
            // still deciding.
            let wait = replica_back
                || real && node.health.is_down_ordered()
                || real && node.hints.standing_in()
                || targets[..c].iter().any(|t| {
                    t.standin_for.is_some_and(|r| {
                        let r = &state.nodes[r];
                        r.health.is_down_ordered() && r.hints.coordinating()
                    })
                });
            if wait {
                drop(inflight);
                let since = *waiting_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > self.inner.config.call_timeout * GATE_WAIT_CALLS {
                    return Err(Error::Unavailable {
                        node: node.id.clone(),
                        source: "writes of its keys decided while a replica changed state \
                                 are still in flight"
                            .into(),
                    });
                }
                self.inner
                    .monitor
                    .timers
                    .pause(std::time::Duration::from_millis(1))
                    .await;
                continue;
            }
            if let Some(hint) = node.hints.hint(key) {
                self.hand_back_one(state, node, key, hint).await?;
            }
            return Ok((targets, c, inflight));
        }
    }

    /// Sends `entry` to every target but the coordinator, records the hand-backs of
    /// stand-ins (the coordinator's too), and counts the nodes that have it. For a
    /// `fresh` write (one the coordinator just versioned), a replica that refuses it
    /// is asked what it holds instead (see [`crate::refused`]); a newer live copy is
    /// answered for the caller to decide the write again over, and a live record
    /// refused for a delete the coordinator has not seen is written again on that
    /// replica.
    async fn spread(
        &self,
        state: &State,
        key: &str,
        entry: &Entry,
        targets: &[Target],
        coordinator: usize,
        fresh: bool,
    ) -> Spread {
        let max = self.inner.config.max_handbacks;
        let one = |i: usize, t: Target| async move {
            let node = &state.nodes[t.node];
            let r = if i == coordinator {
                Ok(true)
            } else {
                node.answer(node.registry.import(key, entry.clone()).await)
            };
            if r.is_ok() && t.standin_for.is_none() {
                Self::superseded(node, key, entry.version).await;
            }
            match (r, t.standin_for) {
                (Ok(false), None) if fresh => {
                    let calls = refused::Awaited {
                        replica: node,
                        coordinator: &state.nodes[targets[coordinator].node],
                        key,
                    };
                    match refused::resolve(entry, &calls).await {
                        Resolved::Counts => Ok(()),
                        Resolved::Failed(e) => Err(Uncounted::Failed(e)),
                        Resolved::Again(tie) => Err(Uncounted::Again(tie)),
                    }
                }
                (Ok(_), None) => Ok(()),
                (Ok(_), Some(down)) => {
                    let owner = &state.nodes[down];
                    if owner
                        .hints
                        .record(key, entry.clone(), Arc::clone(node), max)
                    {
                        Ok(())
                    } else {
                        Err(Uncounted::Failed(Error::Unavailable {
                            node: owner.id.clone(),
                            source: "too many writes are waiting to be handed back to it".into(),
                        }))
                    }
                }
                (Err(e), _) => Err(Uncounted::Failed(e)),
            }
        };
        let mut out = Spread {
            acks: 0,
            errors: Vec::new(),
            again: None,
        };
        let mut count = |a: std::result::Result<(), Uncounted>| match a {
            Ok(()) => out.acks += 1,
            Err(Uncounted::Failed(e)) => out.errors.push(e),
            Err(Uncounted::Again(tie)) => refused::merge(&mut out.again, tie),
        };
        match targets {
            // Two copies, the common case: the coordinator already has its copy (unless
            // it is a stand-in with a hand-back to record), so only the other is sent.
            [a, b] => {
                let (x, y) = match coordinator {
                    0 if a.standin_for.is_none() => (Ok(()), one(1, *b).await),
                    1 if b.standin_for.is_none() => (one(0, *a).await, Ok(())),
                    _ => futures_util::future::join(one(0, *a), one(1, *b)).await,
                };
                count(x);
                count(y);
            }
            _ => {
                for a in join_all(targets.iter().enumerate().map(|(i, t)| one(i, *t))).await {
                    count(a);
                }
            }
        }
        out
    }

    /// Spreads `entry` (see [`Self::spread`]) and answers `ok` once the write quorum
    /// has it, else the first error.
    pub(crate) async fn replicate<T>(
        &self,
        state: &State,
        key: &str,
        entry: &Entry,
        targets: &[Target],
        coordinator: usize,
        ok: T,
    ) -> Result<T> {
        let spread = self
            .spread(state, key, entry, targets, coordinator, false)
            .await;
        self.quorum(spread.acks, spread.errors, ok)
    }

    /// [`Self::replicate`] for a write the coordinator just versioned: `Again` if a
    /// replica holds a newer copy (see [`crate::refused`]).
    async fn replicate_write<T>(
        &self,
        state: &State,
        key: &str,
        entry: &Entry,
        targets: &[Target],
        coordinator: usize,
        ok: T,
    ) -> Result<Decided<T>> {
        let spread = self
            .spread(state, key, entry, targets, coordinator, true)
            .await;
        if let Some(tie) = spread.again {
            return Ok(Decided::Again { tie, ok });
        }
        self.quorum(spread.acks, spread.errors, ok)
            .map(Decided::Done)
    }

    /// How long a delete's tombstones are kept: the longer of `asked` (the caller's
    /// grace, or what is left of it) and the router's `tombstone_grace`, as a backend
    /// that keeps tombstones of its own keeps the longer of the two.
    pub(crate) fn tombstone_grace(&self, asked: std::time::Duration) -> std::time::Duration {
        self.inner.config.tombstone_grace.max(asked)
    }

    /// Acknowledged if `acks` reach the write quorum, else the first error.
    pub(crate) fn quorum<T>(&self, acks: usize, errors: Vec<Error>, ok: T) -> Result<T> {
        if acks >= self.inner.config.write_quorum {
            return Ok(ok);
        }
        Err(errors
            .into_iter()
            .next()
            .unwrap_or_else(|| Error::Unavailable {
                node: "router".into(),
                source: format!(
                    "{acks} of the {} nodes a write needs have it",
                    self.inner.config.write_quorum
                )
                .into(),
            }))
    }

    /// A write at `version` reached `node` itself: the hint a stand-in holds for it
    /// there, if older, is forgotten (a read would otherwise prefer it to a tombstone
    /// or an expired record the node holds, which it cannot see), and the stand-in's
    /// copy removed, as its hand-back would have.
    pub(crate) async fn superseded(node: &Node, key: &str, version: Version) {
        if let Some(hint) = node.hints.supersede(key, version) {
            hint.remove_standin_copy(key).await;
        }
    }
}
