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
//! - A **read** asks the first up replica (or `read_quorum` of them), merged with
//!   what stand-ins hold for it; a miss is confirmed by the next up replica (a node
//!   that came back empty must not answer a false "not found"); stale replicas that
//!   answered are brought up to the newest copy. With every replica down, a read
//!   answers only from what stand-ins took during the outage, else `Unavailable`.
//! - A write whose coordinator has a pending hand-back for the key hands it back
//!   first, so the coordinator's clock has seen the newer version.

use std::sync::Arc;

use futures_util::future::join_all;
use nautilus_core::{
    Bytes, Condition, DeleteOptions, Entry, Error, Expiry, PutOptions, Result, Timestamp, Version,
};

use crate::router::{ShardedRegistry, newest};
use crate::state::{Node, State};

/// How far ahead of the router's clock a write a stand-in coordinates is versioned:
/// past any version the down replica issued before it went down (in the same
/// millisecond its counter may be ahead of the stand-in's), unless its clock ran more
/// than this ahead of the router's. Kept short: it is also how much later a write
/// through another router, which still sees the replica up, must come to win over
/// this one.
const STANDIN_LEAD: std::time::Duration = std::time::Duration::from_millis(10);

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

/// What a caller sees of an answer: nothing for a tombstone. (Nodes do not answer
/// expired records.)
fn visible(e: Option<Entry>) -> Option<Entry> {
    e.filter(|e| !e.is_tombstone())
}

impl ShardedRegistry {
    /// Where a write of `key` goes and which of those nodes coordinates it: the
    /// first real replica, else the first stand-in, which may coordinate only writes
    /// it can check (`checked`: conditional writes, deletes and touches) if it took
    /// the key during this outage. A hand-back pending for the key on the
    /// coordinator goes first, so that its version clock has seen that write.
    async fn coordinate(
        &self,
        state: &State,
        key: &str,
        checked: bool,
    ) -> Result<(Targets, usize)> {
        let targets = targets(state, self.inner.config.replicas, key)?;
        let c = match targets.iter().position(|t| t.standin_for.is_none()) {
            Some(i) => i,
            None => {
                let holds = targets[0]
                    .standin_for
                    .is_some_and(|r| state.nodes[r].hints.contains(key));
                if checked && !holds {
                    let replicas: Vec<usize> =
                        targets.iter().filter_map(|t| t.standin_for).collect();
                    return Err(all_down(state, &replicas));
                }
                0
            }
        };
        let node = &state.nodes[targets[c].node];
        if let Some(hint) = node.hints.hint(key) {
            crate::checker::hand_back_one(node, key, hint).await?;
        }
        Ok((targets, c))
    }

    /// Brings the coordinator up to the newest live copy the other replicas hold, so
    /// that a condition or a delete decided on it sees the record even if it came
    /// back empty. Whether it found one (the caller then tries again).
    async fn prime(&self, state: &State, key: &str, targets: &[Target], c: usize) -> Result<bool> {
        let now = self.inner.clock.now();
        let others = targets
            .iter()
            .enumerate()
            .filter(|&(i, t)| i != c && t.standin_for.is_none());
        let mut found = None;
        for (_, t) in others {
            if let Ok(e) = Self::read_one(&state.nodes[t.node], key, now).await {
                found = newest(found, e);
            }
        }
        match found.filter(|e| !e.is_tombstone()) {
            Some(e) => {
                let node = &state.nodes[targets[c].node];
                Ok(node.answer(node.registry.import(key, e).await)?)
            }
            None => Ok(false),
        }
    }

    /// Sends `entry` to every target but the coordinator, records the hand-backs of
    /// stand-ins (the coordinator's too), and counts the nodes that have it.
    async fn spread(
        &self,
        state: &State,
        key: &str,
        entry: &Entry,
        targets: &[Target],
        coordinator: usize,
    ) -> (usize, Vec<Error>) {
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
                (Ok(_), None) => Ok(()),
                (Ok(_), Some(down)) => {
                    let owner = &state.nodes[down];
                    if owner
                        .hints
                        .record(key, entry.clone(), Arc::clone(node), max)
                    {
                        Ok(())
                    } else {
                        Err(Error::Unavailable {
                            node: owner.id.clone(),
                            source: "too many writes are waiting to be handed back to it".into(),
                        })
                    }
                }
                (Err(e), _) => Err(e),
            }
        };
        let mut acks = 0;
        let mut errors = Vec::new();
        let mut count = |a: Result<()>| match a {
            Ok(()) => acks += 1,
            Err(e) => errors.push(e),
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
        (acks, errors)
    }

    /// Spreads `entry` (see [`Self::spread`]) and answers `ok` once the write quorum
    /// has it, else the first error.
    async fn replicate<T>(
        &self,
        state: &State,
        key: &str,
        entry: &Entry,
        targets: &[Target],
        coordinator: usize,
        ok: T,
    ) -> Result<T> {
        let (acks, errors) = self.spread(state, key, entry, targets, coordinator).await;
        self.quorum(acks, errors, ok)
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

    pub(crate) async fn put_replicated(
        &self,
        state: &State,
        key: &str,
        value: Bytes,
        options: PutOptions,
    ) -> Result<Version> {
        let checked = !matches!(options.condition, Condition::Always);
        let (targets, c) = self.coordinate(state, key, checked).await?;
        let node = &state.nodes[targets[c].node];
        if matches!(options.condition, Condition::Absent) {
            // "Absent" must hold on every replica, not only on a coordinator that
            // came back empty.
            self.prime(state, key, &targets, c).await?;
        }
        // A TTL becomes the instant every copy expires at, on the router's clock:
        // the copies need that instant, and asking the coordinator for the one it
        // resolved would cost another round trip.
        let mut sent = options;
        if let Expiry::After(_) = options.expiry {
            sent.expiry = match options.expiry.resolve(self.inner.clock.now())? {
                Some(t) => Expiry::At(t),
                None => Expiry::Never,
            };
        }
        if targets[c].standin_for.is_some()
            && matches!(options.condition, Condition::Always)
            && let Some(version) = self
                .put_on_standin(state, key, &value, sent, &targets, c)
                .await?
        {
            return Ok(version);
        }
        let put = |options| node.registry.put_opts(key, value.clone(), options);
        // An in-process coordinator writes without a boxed future.
        let mut version = match node.registry.put_ready(key, value.clone(), sent) {
            Ok(answer) => node.answer(answer),
            Err(value) => node.answer(node.registry.put_opts(key, value, sent).await),
        };
        if matches!(version, Err(Error::InvalidArgument { .. })) && sent != options {
            // The instant is already past on the coordinator's clock (a TTL of a
            // few milliseconds, a node ahead of the router): its own clock decides.
            sent = options;
            version = node.answer(put(sent).await);
        }
        let version = match version {
            Err(Error::Conflict { actual: None, .. })
                if self.prime(state, key, &targets, c).await? =>
            {
                node.answer(put(sent).await)?
            }
            other => other?,
        };
        let entry = match sent.expiry {
            Expiry::Never => Entry::new(value, version, None),
            Expiry::At(t) => Entry::new(value, version, Some(t)),
            // The coordinator resolved the TTL on its own clock: the copies take the
            // same instant from it (or a newer write, which is as good to spread).
            _ => match node.answer(node.registry.get_entry(key).await)? {
                Some(e) => e,
                None => return Ok(version),
            },
        };
        self.replicate(state, key, &entry, &targets, c, version)
            .await
    }

    /// An unconditional write coordinated by a stand-in (every replica of the key is
    /// down), versioned on the router's clock [`STANDIN_LEAD`] ahead instead of on
    /// the stand-in's. The stand-in's clock never saw the replica's versions: in the same
    /// millisecond as the replica's last write, or a little behind its clock, it gave
    /// the write a version the replica then held as new, refused the hand-back, and
    /// the acknowledged write was lost. `None` if the stand-in holds a newer copy
    /// already (another router's): its own clock decides then.
    async fn put_on_standin(
        &self,
        state: &State,
        key: &str,
        value: &Bytes,
        sent: PutOptions,
        targets: &[Target],
        c: usize,
    ) -> Result<Option<Version>> {
        let expires_at = match sent.expiry {
            Expiry::At(t) => Some(t),
            _ => None,
        };
        let ahead = self.inner.clock.now().saturating_add(STANDIN_LEAD);
        let version = self.inner.versions.next(ahead, None);
        let entry = Entry::new(value.clone(), version, expires_at);
        let node = &state.nodes[targets[c].node];
        if !node.answer(node.registry.import(key, entry.clone()).await)? {
            return Ok(None);
        }
        self.replicate(state, key, &entry, targets, c, version)
            .await
            .map(Some)
    }

    pub(crate) async fn delete_replicated(
        &self,
        state: &State,
        key: &str,
        options: DeleteOptions,
    ) -> Result<Option<Version>> {
        let (targets, c) = self.coordinate(state, key, true).await?;
        let node = &state.nodes[targets[c].node];
        let grace = self.inner.config.tombstone_grace;
        let delete = || node.registry.delete_opts(key, options.tombstone(grace));
        let mut deleted = node.answer(delete().await);
        if matches!(
            deleted,
            Ok(None) | Err(Error::Conflict { actual: None, .. })
        ) && self.prime(state, key, &targets, c).await?
        {
            deleted = node.answer(delete().await);
        }
        let Some(version) = deleted? else {
            return Ok(None);
        };
        let tombstone =
            Entry::tombstone(version, Some(self.inner.clock.now().saturating_add(grace)));
        self.replicate(state, key, &tombstone, &targets, c, Some(version))
            .await
    }

    pub(crate) async fn touch_replicated(
        &self,
        state: &State,
        key: &str,
        expiry: Expiry,
    ) -> Result<Option<Version>> {
        let (targets, c) = self.coordinate(state, key, true).await?;
        let node = &state.nodes[targets[c].node];
        let mut touched = node.answer(node.registry.touch(key, expiry).await)?;
        if touched.is_none() && self.prime(state, key, &targets, c).await? {
            touched = node.answer(node.registry.touch(key, expiry).await)?;
        }
        let Some(version) = touched else {
            return Ok(None);
        };
        // The touched record as the coordinator holds it (or newer, if written since:
        // importing the newer copy is as good).
        let Some(entry) = node.answer(node.registry.get_entry(key).await)? else {
            return Ok(Some(version));
        };
        self.replicate(state, key, &entry, &targets, c, Some(version))
            .await
    }

    pub(crate) async fn import_replicated(
        &self,
        state: &State,
        key: &str,
        entry: Entry,
    ) -> Result<bool> {
        let targets = targets(state, self.inner.config.replicas, key)?;
        let node = &state.nodes[targets[0].node];
        let applied = node.answer(node.registry.import(key, entry.clone()).await)?;
        // A stand-in's hand-back, the first target's too, is recorded by `spread`.
        self.replicate(state, key, &entry, &targets, 0, applied)
            .await
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

    /// One replica's answer, merged with what stand-ins hold for it. The hint is
    /// taken before the node is read: a hand-back that imports it and forgets it in
    /// between would otherwise leave the read with the node's older copy and no hint.
    /// A hint that has expired by `now` (the router's clock, which dated it) still
    /// hides older copies: it stands as a tombstone at its version.
    async fn read_one(node: &Node, key: &str, now: Timestamp) -> Result<Option<Entry>> {
        let hint = node.hints.hint(key).map(|h| h.entry);
        let stored = node.answer(node.registry.get_entry(key).await)?;
        Ok(match hint {
            Some(hint) if !hint.is_tombstone() && !hint.is_live_at(now) => {
                newest(stored, Some(Entry::tombstone(hint.version, None)))
            }
            Some(hint) => newest(stored, Some(hint)),
            None => stored,
        })
    }

    pub(crate) async fn get_replicated(&self, state: &State, key: &str) -> Result<Option<Entry>> {
        // Hints are the router's, dated on its clock.
        let now = self.inner.clock.now();
        let owner = state
            .current
            .owner(key)
            .ok_or_else(crate::state::no_nodes)?;
        // The common case first: one replica asked, the first, and it has the record.
        let mut first = None;
        if self.inner.config.read_quorum == 1 && state.nodes[owner].is_up() {
            match Self::read_one(&state.nodes[owner], key, now).await {
                Ok(Some(e)) if !e.is_tombstone() => return Ok(Some(e)),
                other => first = Some(other),
            }
        }
        let r = self.inner.config.replicas;
        let replicas = state.current.preference(key, r);
        let up: Vec<usize> = replicas
            .iter()
            .copied()
            .filter(|&n| state.nodes[n].is_up() && !(first.is_some() && n == owner))
            .collect();
        if up.is_empty() && first.is_none() {
            // Only what stand-ins took during the outage can be answered.
            let held = replicas
                .iter()
                .filter_map(|&n| state.nodes[n].hints.hint(key).map(|h| h.entry))
                .fold(None, |acc, e| newest(acc, Some(e)));
            return match held {
                Some(e) => Ok(Some(e).filter(|e| e.is_live_at(now))),
                None => Err(all_down(state, &replicas)),
            };
        }
        let mut asked: Vec<(usize, Option<Entry>)> = Vec::with_capacity(r + 1);
        let mut last_error = None;
        match first {
            Some(Ok(e)) => asked.push((owner, e)),
            Some(Err(e)) => last_error = Some(e),
            None => {}
        }
        let want = self.inner.config.read_quorum.min(up.len() + asked.len());
        let mut next = 0;
        // Ask `want` replicas at once, replacing any that fails by the next one up.
        while asked.len() < want && next < up.len() {
            let batch: Vec<usize> = up[next..]
                .iter()
                .copied()
                .take(want - asked.len())
                .collect();
            next += batch.len();
            let answers = join_all(
                batch
                    .iter()
                    .map(|&n| Self::read_one(&state.nodes[n], key, now)),
            )
            .await;
            for (n, a) in batch.into_iter().zip(answers) {
                match a {
                    Ok(e) => asked.push((n, e)),
                    Err(e) => last_error = Some(e),
                }
            }
        }
        // A miss is confirmed by one more replica: a node that came back empty
        // must not answer a false "not found".
        if r > 1 && asked.iter().all(|(_, e)| e.is_none()) {
            while next < up.len() {
                let n = up[next];
                next += 1;
                match Self::read_one(&state.nodes[n], key, now).await {
                    Ok(e) => {
                        asked.push((n, e));
                        break;
                    }
                    Err(e) => last_error = Some(e),
                }
            }
        }
        if asked.is_empty() {
            return Err(last_error.unwrap_or_else(|| all_down(state, &replicas)));
        }
        let newest = asked
            .iter()
            .fold(None, |acc, (_, e)| newest(acc, e.clone()));
        if let Some(best) = &newest {
            // Read repair: replicas that answered an older copy, or none, get it.
            let stale = asked
                .iter()
                .filter(|(_, e)| e.as_ref().is_none_or(|e| e.version < best.version));
            join_all(stale.map(|(n, _)| {
                let node = &state.nodes[*n];
                async move {
                    if node
                        .answer(node.registry.import(key, best.clone()).await)
                        .is_ok()
                    {
                        Self::superseded(node, key, best.version).await;
                    }
                }
            }))
            .await;
        }
        Ok(visible(newest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(v: u64, tombstone: bool) -> Entry {
        if tombstone {
            Entry::tombstone(Version::from_raw(v), None)
        } else {
            Entry::new(Bytes::from_static(b"v"), Version::from_raw(v), None)
        }
    }

    #[test]
    fn the_newest_wins_and_a_newer_delete_hides_the_record() {
        assert_eq!(
            newest(Some(e(1, false)), Some(e(2, false))),
            Some(e(2, false))
        );
        assert_eq!(newest(Some(e(3, false)), None), Some(e(3, false)));
        let deleted = newest(Some(e(3, false)), Some(e(4, true)));
        assert_eq!(visible(deleted), None);
        let rewritten = newest(Some(e(5, false)), Some(e(4, true)));
        assert_eq!(visible(rewritten), Some(e(5, false)));
    }
}
