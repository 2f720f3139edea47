//! Replicated writes made without waiting: with in-process nodes, a put through an
//! R>1 router is a `put_ready` on the first replica and an `import_ready` into each
//! other, with no future, as the awaited path in [`crate::replica`] would do it with
//! futures. It is taken only over nodes that claim
//! [`nautilus_core::Capabilities::answers_ready`]: a node whose answers sometimes wait
//! (a remote store, a router) could leave a write on its coordinator alone. Anything
//! the awaited path would do more (a node down, a hand-back pending, an `Absent`
//! condition, a coordinator that came back empty) hands the value back, nothing done,
//! and the caller awaits.

use nautilus_core::{Bytes, Condition, Entry, Error, Expiry, PutOptions, Result, Version};

use futures_util::FutureExt;

use crate::refused::{self, Resolved};
use crate::router::ShardedRegistry;
use crate::state::{Node, State};

impl ShardedRegistry {
    /// A replicated put made without waiting, when the awaited path would do nothing
    /// but a put on the first replica and an import into each other: every replica up
    /// with nothing to hand back, no `Absent` condition (it must hold on every
    /// replica), and nodes that claim to answer without waiting. Otherwise the value
    /// is handed back, nothing done, for [`Self::put_replicated`].
    pub(crate) fn put_replicated_ready(
        &self,
        state: &State,
        key: &str,
        value: Bytes,
        options: PutOptions,
    ) -> std::result::Result<Result<Version>, Bytes> {
        // A key whose replicas change moves first: the awaited path does that.
        if matches!(options.condition, Condition::Absent) || state.moving.is_some() {
            return Err(value);
        }
        let prefs = state
            .current
            .preference_inline(key, self.inner.config.replicas);
        let Some((&c, others)) = prefs.split_first() else {
            return Err(value);
        };
        // Up, with nothing to hand back and no write in flight through a stand-in
        // for it (see `crate::hints::InFlight`). This path does not register as
        // coordinating: its nodes answer without waiting, so no call of theirs
        // times out and marks one down while a write is deciding on it.
        let clear = |n: usize| {
            let node = &state.nodes[n];
            node.ready
                && !node.health.is_down_ordered()
                && !node.unverified()
                && node.hints.len() == 0
                && !node.hints.standing_in()
        };
        if !clear(c) || !others.iter().all(|&n| clear(n)) {
            return Err(value);
        }
        // As on the awaited path, a TTL becomes the instant every copy expires at,
        // after the record's limits are checked: the same error for a put that
        // breaks both (the coordinator checks them otherwise).
        let mut sent = options;
        if let Expiry::After(_) = options.expiry {
            if let Err(e) = state.limits.check_record(key, value.len()) {
                return Ok(Err(e));
            }
            sent.expiry = match options.expiry.resolve(self.inner.clock.now()) {
                Ok(Some(t)) => Expiry::At(t),
                Ok(None) => Expiry::Never,
                Err(e) => return Ok(Err(e)),
            };
        }
        let expires_at = match sent.expiry {
            Expiry::At(t) => Some(t),
            _ => None,
        };
        let node = &state.nodes[c];
        // Decided again after a replica refused the write for a copy the coordinator
        // had not seen, as on the awaited path (see `crate::refused`).
        let mut tie = None;
        for _ in 0..refused::MAX_REDECISIONS {
            let version = match (node.registry.put_ready(key, value.clone(), sent), tie) {
                // Decided again over itself, the write found a later one: it was
                // applied, then superseded through the coordinator.
                (Ok(Err(Error::Conflict { .. })), Some(ours)) => return Ok(Ok(ours)),
                // Nothing of this write stands after these: the awaited path primes a
                // coordinator that came back empty, or lets its clock decide an
                // instant already past on it.
                (
                    Err(_)
                    | Ok(Err(Error::Conflict { actual: None, .. }))
                    | Ok(Err(Error::InvalidArgument { .. })),
                    _,
                ) => return Err(value),
                (Ok(answer), _) => match node.answer(answer) {
                    Ok(version) => version,
                    Err(e) => return Ok(Err(e)),
                },
            };
            superseded_now(node, key, version);
            let mut acks = 1;
            let mut errors = Vec::new();
            let mut again = None;
            for &n in others {
                let entry = || Entry::new(value.clone(), version, expires_at);
                match copy(node, &state.nodes[n], key, version, entry) {
                    Resolved::Counts => acks += 1,
                    Resolved::Failed(e) => errors.push(e),
                    Resolved::Again(tie) => refused::merge(&mut again, tie),
                }
            }
            match again {
                None => return Ok(self.quorum(acks, errors, version)),
                // A tie: the condition held when the write was decided; decided
                // again, it replaces itself.
                Some(Some(ours)) => {
                    tie = Some(ours);
                    if !matches!(options.condition, Condition::Always) {
                        sent.condition = Condition::Version(ours);
                    }
                }
                Some(None) => {
                    tie = None;
                    sent.condition = options.condition;
                }
            }
        }
        Ok(Err(refused::kept_refused(key)))
    }
}

/// One copy of the record `entry` makes, which `coordinator` wrote, to a node that
/// claims to answer without waiting; a refusal resolved as on the awaited path. The
/// record is made for the import, which keeps it, and made again only for a refusal:
/// each copy of its shared value is a locked instruction on the value's count.
fn copy(
    coordinator: &Node,
    node: &Node,
    key: &str,
    version: Version,
    entry: impl Fn() -> Entry,
) -> Resolved {
    let applied = match node.registry.import_ready(key, entry()) {
        Ok(answer) => node.answer(answer),
        Err(_) => Err(breach(&node.id)),
    };
    let resolved = match applied {
        Ok(true) => Resolved::Counts,
        Err(e) => Resolved::Failed(e),
        Ok(false) => {
            let calls = Ready {
                replica: node,
                coordinator,
                key,
            };
            // Every call answers at once: so does the future, at its first poll.
            refused::resolve(&entry(), &calls)
                .now_or_never()
                .unwrap_or_else(|| Resolved::Failed(breach(&node.id)))
        }
    };
    if matches!(resolved, Resolved::Counts) {
        superseded_now(node, key, version);
    }
    resolved
}

/// [`refused::Calls`] made without waiting, on nodes that claim to answer so.
struct Ready<'a> {
    replica: &'a Node,
    coordinator: &'a Node,
    key: &'a str,
}

impl refused::Calls for Ready<'_> {
    async fn held(&self) -> Result<Option<Entry>> {
        let node = self.replica;
        match node.read_ready_uncounted(self.key) {
            Some(answer) => node.answer(answer),
            None => Err(breach(&node.id)),
        }
    }

    async fn rewrite(&self, entry: &Entry) -> Result<Version> {
        let node = self.replica;
        let options = refused::rewrite_options(entry);
        match node
            .registry
            .put_ready(self.key, entry.value.clone(), options)
        {
            Ok(answer) => node.answer(answer),
            Err(_) => Err(breach(&node.id)),
        }
    }

    async fn adopt(&self, entry: Entry) -> Result<bool> {
        let node = self.coordinator;
        match node.registry.import_ready(self.key, entry) {
            Ok(answer) => node.answer(answer),
            Err(_) => Err(breach(&node.id)),
        }
    }

    async fn holds(&self) -> Result<Option<Version>> {
        let node = self.coordinator;
        match node.read_ready_uncounted(self.key) {
            Some(answer) => node.answer(answer).map(|e| e.map(|e| e.version)),
            None => Err(breach(&node.id)),
        }
    }
}

/// A node that claims to answer without waiting handed back: the copy fails, as
/// after a timeout.
fn breach(node: &str) -> Error {
    Error::Unavailable {
        node: node.to_owned(),
        source: "the node claims answers_ready but had to wait; the write may have \
                 reached the first replica only"
            .into(),
    }
}

/// What `ShardedRegistry::superseded` does, without waiting: the stand-in's copy is removed in a
/// task of the router's runtime (without one it is left to repair, as when a removal
/// fails).
fn superseded_now(node: &Node, key: &str, version: Version) {
    if let Some(hint) = node.hints.supersede(key, version)
        && let Ok(runtime) = tokio::runtime::Handle::try_current()
    {
        let key = key.to_owned();
        runtime.spawn(async move { hint.remove_standin_copy(&key).await });
    }
}
