//! Reads through the router. A key's one node answers it; a key moving between two
//! nodes is read from both and the newer copy kept; both without waiting where the
//! nodes answer so.
//!
//! Replicated reads: the first up replica (or `read_quorum` of them), merged with what
//! stand-ins hold for it; a miss confirmed by the next up replica (a node that came
//! back empty must not answer a false "not found"); stale replicas that answered
//! brought up to the newest copy (read repair). With every replica down, a read
//! answers only from what stand-ins took during the outage, else `Unavailable`.

use futures_util::future::join_all;
use nautilus_core::{Entry, Result, Timestamp};

use crate::deadline::NodeRegistry;
use crate::replica::all_down;
use crate::router::{ShardedRegistry, newest};
use crate::state::{Node, Route, State};

/// What a caller sees of an answer: nothing for a tombstone. (Nodes do not answer
/// expired records.)
fn visible(e: Option<Entry>) -> Option<Entry> {
    e.filter(|e| !e.is_tombstone())
}

/// The error of a read whose answers are no answer for want of `missing` (down, or
/// failing): the replicas that answered are as `why` says.
fn unconfirmed(state: &State, missing: usize, why: &str) -> nautilus_core::Error {
    nautilus_core::Error::Unavailable {
        node: state.nodes[missing].id.clone(),
        source: format!("the node is down, and the replicas that answered {why}").into(),
    }
}

impl ShardedRegistry {
    /// The read of a key that may be on two nodes: the old owner first, then the new
    /// one (a move imports before it deletes), the newer answer.
    pub(crate) async fn read(state: &State, key: &str, route: Route) -> Result<Option<Entry>> {
        match route {
            Route::To(n) => {
                let node = &state.nodes[n];
                node.answer(node.registry.get_entry(key).await)
            }
            Route::Moving { from, to } => {
                let (a, b) = (&state.nodes[from], &state.nodes[to]);
                let old = a.read_uncounted(key).await?;
                let new = b.read_uncounted(key).await?;
                let found = newest(old, new);
                a.tally.counted(found.is_some());
                Ok(found)
            }
        }
    }

    /// A read answered without waiting, as `read` gives it from the node: the one
    /// copy's node, or the first replica when it holds the key and is up with nothing
    /// to hand back (anything else takes the awaited path). A key moving between two
    /// nodes is read whole from both and the newer copy kept, then `pick`ed.
    #[inline(always)]
    pub(crate) fn read_ready<T>(
        &self,
        key: &str,
        read: impl Fn(&NodeRegistry, &str) -> Option<Result<Option<T>>>,
        pick: impl FnOnce(Entry) -> T,
    ) -> Option<Result<Option<T>>> {
        let state = self.inner.state.load();
        if !state.uniform_limits
            && let Err(e) = state.limits.check_key(key)
        {
            return Some(Err(e));
        }
        match state.route(key) {
            Err(e) => Some(Err(e)),
            Ok(Route::To(n)) => {
                let node = &state.nodes[n];
                if self.single(&state, n) {
                    return read(&node.registry, key).map(|r| node.answer(r));
                }
                // Replicated: a hit on the first replica, up and with nothing to hand
                // back, is the answer; anything else takes the awaited path.
                if self.inner.config.replicas > 1
                    && self.inner.config.read_quorum == 1
                    && node.is_clean()
                {
                    return match read(&node.registry, key)? {
                        Ok(Some(found)) => {
                            node.health.call_ok();
                            Some(Ok(Some(found)))
                        }
                        // Confirmed by the next replica at once, or the awaited path
                        // reads again, and counts that read.
                        Ok(None) => {
                            node.health.call_ok();
                            if self.miss_confirmed_ready(&state, key) {
                                return Some(Ok(None));
                            }
                            node.tally.uncounted(false);
                            None
                        }
                        Err(_) => None,
                    };
                }
                None
            }
            // Replicated: the awaited path reads the new replicas, then the one
            // losing the key.
            Ok(Route::Moving { .. }) if self.inner.config.replicas > 1 => None,
            Ok(Route::Moving { from, to }) => {
                let (a, b) = (&state.nodes[from], &state.nodes[to]);
                // Not ready: read again on the awaited path, and counted there.
                let old = a.read_ready_uncounted(key)?;
                let new = b.read_ready_uncounted(key)?;
                Some(match (old, new) {
                    (Ok(old), Ok(new)) => {
                        let found = newest(old, new);
                        a.tally.counted(found.is_some());
                        Ok(found.map(pick))
                    }
                    (Err(e), _) => Err(a.error(e)),
                    (_, Err(e)) => Err(b.error(e)),
                })
            }
        }
    }
    /// Whether the second replica of `key` confirms, without waiting, the miss its
    /// first replica just answered without waiting: both clean (up, nothing to hand
    /// back, not waiting on a repair), no records moving. This is the confirmation
    /// the awaited path would make of a miss (see `get_replicated_uncounted`),
    /// without its future or its second read of the first replica: an R=2 miss over
    /// memory nodes cost 4-5x an R=1 miss (from outside, 530 against 113 ns at 100k
    /// records). Anything else (a hit there, whose first replica is stale and gets
    /// repaired, an error, a node that has to wait) is for the awaited path. The
    /// second replica's read is not the caller's: uncounted.
    pub(crate) fn miss_confirmed_ready(&self, state: &State, key: &str) -> bool {
        if state.moving.is_some() || self.inner.config.read_quorum != 1 {
            return false;
        }
        let prefs = state
            .current
            .preference_inline(key, self.inner.config.replicas);
        let Some(&next) = prefs.get(1) else {
            return false;
        };
        let node = &state.nodes[next];
        if !node.is_clean() {
            return false;
        }
        match node.read_ready_uncounted(key) {
            Some(Ok(None)) => {
                node.health.call_ok();
                true
            }
            _ => false,
        }
    }

    /// One replica's answer, merged with what stand-ins hold for it. The hint is
    /// taken before the node is read: a hand-back that imports it and forgets it in
    /// between would otherwise leave the read with the node's older copy and no hint.
    /// A hint that has expired by `now` (the router's clock, which dated it) still
    /// hides older copies: it stands as a tombstone at its version.
    pub(crate) async fn read_one(node: &Node, key: &str, now: Timestamp) -> Result<Option<Entry>> {
        let hint = node.hints.hint(key).map(|h| h.entry);
        let stored = node.read_uncounted(key).await?;
        Ok(match hint {
            Some(hint) if !hint.is_tombstone() && !hint.is_live_at(now) => {
                newest(stored, Some(Entry::tombstone(hint.version, None)))
            }
            Some(hint) => newest(stored, Some(hint)),
            None => stored,
        })
    }

    /// A read of a replicated key, counted as one read: the reads of the nodes it
    /// makes are not (see [`crate::state::Tally`]).
    pub(crate) async fn get_replicated(&self, state: &State, key: &str) -> Result<Option<Entry>> {
        let answer = self.get_replicated_uncounted(state, key).await;
        if let (Ok(found), Some(owner)) = (&answer, state.current.owner(key)) {
            state.nodes[owner].tally.counted(found.is_some());
        }
        answer
    }

    pub(crate) async fn get_replicated_uncounted(
        &self,
        state: &State,
        key: &str,
    ) -> Result<Option<Entry>> {
        // Hints are the router's, dated on its clock.
        let now = self.inner.clock.now();
        let owner = state
            .current
            .owner(key)
            .ok_or_else(crate::state::no_nodes)?;
        // The common case first: one replica asked, the first, and it has the record.
        let mut first = None;
        // A node back from down may have come back empty or from an old snapshot:
        // until a repair covers it, its answer alone is not the answer.
        if self.inner.config.read_quorum == 1
            && state.nodes[owner].is_up()
            && !state.nodes[owner].unverified()
        {
            match Self::read_one(&state.nodes[owner], key, now).await {
                // Checked again after the answer: a read the store queued while it
                // reconnected may have been answered by a new process (a Redis
                // restarted from an old snapshot), which its store then tells.
                Ok(Some(e)) if !e.is_tombstone() && !state.nodes[owner].unverified() => {
                    return Ok(Some(e));
                }
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
        // While records move, the replica losing the key is asked after the others:
        // it may hold the only copy of a write at W < R, and confirms a miss when they
        // cannot. It is never repaired (see `crate::replica_move`).
        let mut up = up;
        if let Some(m) = &state.moving
            && let Some(mv) = crate::replica_move::ReplicaMove::of(state, m, key, r)
        {
            up.extend(
                mv.losing
                    .iter()
                    .copied()
                    .filter(|&n| state.nodes[n].is_up()),
            );
        }
        let mut asked: Vec<(usize, Option<Entry>)> = Vec::with_capacity(r + 1);
        let mut last_error = None;
        // Replicas whose copy is corrupt (bytes their store did not write): healed
        // from the newest copy below, as stale ones are.
        let mut corrupt = Vec::new();
        let mut failed = |n: usize, e: nautilus_core::Error| {
            if matches!(e, nautilus_core::Error::Corrupt { .. }) {
                corrupt.push(n);
            }
            last_error = Some(e);
        };
        match first {
            Some(Ok(e)) => asked.push((owner, e)),
            Some(Err(e)) => failed(owner, e),
            None => {}
        }
        let want = self.inner.config.read_quorum.min(up.len() + asked.len());
        let mut next = 0;
        let verified = |asked: &[(usize, Option<Entry>)]| {
            asked.iter().any(|(n, _)| !state.nodes[*n].unverified())
        };
        // Ask `want` replicas at once, replacing any that fails by the next one up,
        // and more while only unverified nodes answered.
        while (asked.len() < want || !verified(&asked)) && next < up.len() {
            let batch: Vec<usize> = up[next..]
                .iter()
                .copied()
                .take(want.saturating_sub(asked.len()).max(1))
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
                    Err(e) => failed(n, e),
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
                    Err(e) => failed(n, e),
                }
            }
        }
        if asked.is_empty() {
            // A corrupt copy is no answer while a replica that may hold the record
            // is down: the read is unavailable, not the record corrupt.
            if !corrupt.is_empty()
                && let Some(&down) = replicas.iter().find(|&&n| !state.nodes[n].is_up())
            {
                return Err(unconfirmed(state, down, "hold a corrupt copy"));
            }
            return Err(last_error.unwrap_or_else(|| all_down(state, &replicas)));
        }
        // Only replicas that may have lost records answered (back empty or from an
        // old snapshot, not yet repaired), and another could not be asked: their
        // answer may be a stale copy or a false "not found".
        if r > 1
            && asked.iter().all(|(n, _)| state.nodes[*n].may_have_lost())
            && let Some(&missing) = replicas
                .iter()
                .find(|&&n| !asked.iter().any(|(a, _)| *a == n))
        {
            return Err(last_error.unwrap_or_else(|| {
                unconfirmed(
                    state,
                    missing,
                    "came back without their records (not yet repaired)",
                )
            }));
        }
        let Some(best) = asked
            .iter()
            .fold(None, |acc, (_, e)| newest(acc, e.clone()))
        else {
            return Ok(None);
        };
        // Read repair: replicas that answered an older copy, none, or a corrupt one
        // (which an import replaces) get it.
        let stale = asked
            .iter()
            .filter(|(n, e)| {
                replicas.contains(n) && e.as_ref().is_none_or(|e| e.version < best.version)
            })
            .map(|(n, _)| (*n, false))
            .chain(
                corrupt
                    .iter()
                    .filter(|n| replicas.contains(n))
                    .map(|&n| (n, true)),
            );
        let refused: Vec<usize> = join_all(stale.map(|(n, corrupt)| {
            let node = &state.nodes[n];
            let best = &best;
            async move {
                match node.answer(node.registry.import(key, best.clone()).await) {
                    Ok(true) => {
                        Self::superseded(node, key, best.version).await;
                        None
                    }
                    // A corrupt copy that refused: one dated far ahead (forged),
                    // which no read sees; left to its store's operator.
                    Ok(false) if corrupt => None,
                    Ok(false) => Some(n),
                    Err(_) => None,
                }
            }
        }))
        .await
        .into_iter()
        .flatten()
        .collect();
        if refused.is_empty() || best.is_tombstone() {
            return Ok(visible(Some(best)));
        }
        // A replica that showed nothing refused the copy: it holds something as new or
        // newer. Asked again, it shows a write that landed since (a read overlapping
        // it may answer it), which may be `best` itself: the copy of the write the
        // other replica answered, landed between the two reads; showing nothing
        // still, it holds a delete (or an expired record), which reads cannot see.
        // That is the newest state: a delete that failed after reaching it alone, and
        // which a later delete found nothing to do for, must not let the copy the
        // down replica kept come back (outside test: 20 of 20 such keys read back).
        let again = join_all(
            refused
                .iter()
                .map(|&n| Self::read_one(&state.nodes[n], key, now)),
        )
        .await;
        let landed = again
            .into_iter()
            .filter_map(|a| a.ok().flatten())
            .fold(None, |acc, e| newest(acc, Some(e)))
            .filter(|e| e.version >= best.version && !e.is_tombstone());
        if let Some(landed) = landed {
            return Ok(Some(landed));
        }
        self.bury_refused(state, key, &best, &asked).await;
        Ok(None)
    }

    /// Carries a delete that reads cannot see to the replicas that answered `best`
    /// (see [`Self::tombstone_above`]).
    async fn bury_refused(
        &self,
        state: &State,
        key: &str,
        best: &Entry,
        asked: &[(usize, Option<Entry>)],
    ) {
        let tombstone = self.tombstone_above(best);
        let holders = asked
            .iter()
            .filter(|(_, e)| e.as_ref().is_some_and(|e| e.version == best.version));
        join_all(holders.map(|(n, _)| {
            let node = &state.nodes[*n];
            let tombstone = tombstone.clone();
            async move {
                // Best effort: a copy left is found by the next read or by repair.
                let _ = node.answer(node.registry.import(key, tombstone).await);
            }
        }))
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nautilus_core::{Bytes, Version};

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
