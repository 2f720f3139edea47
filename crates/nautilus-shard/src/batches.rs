//! How the router's batches go: split per node where every node is caught up (one
//! call per node), each key's first replica for a replicated read, and the
//! predicates that choose between those and a key-by-key batch.

use futures_util::future::join_all;
use nautilus_core::{Entry, Error, Registry, Result};

use crate::deadline::NodeRegistry;
use crate::router::{Gathered, ShardedRegistry, Split, gather, split_batch};
use crate::state::State;

impl ShardedRegistry {
    /// Whether a batch can be split per node on the single-copy path.
    pub(crate) fn batchable(&self, state: &State) -> bool {
        self.inner.config.replicas == 1 && all_caught_up(state)
    }

    /// Whether a replicated batch write can make each write without a future: every
    /// node in-process (it claims `answers_ready`), up, with nothing to hand back, and
    /// nothing moving.
    pub(crate) fn writes_ready(&self, state: &State) -> bool {
        self.inner.config.replicas > 1
            && state.moving.is_none()
            && all_caught_up(state)
            && state.nodes.iter().all(|n| n.ready)
    }

    /// Whether a replicated batch read can ask each key's first replica, one call per
    /// node: a read quorum of one, every node up with nothing to hand back and none
    /// back unverified, nothing moving.
    pub(crate) fn reads_batchable(&self, state: &State) -> bool {
        self.inner.config.replicas > 1
            && self.inner.config.read_quorum == 1
            && state.moving.is_none()
            && all_caught_up(state)
            && !state.nodes.iter().any(|n| n.unverified())
    }

    /// A replicated `get_many`: each key's first replica is asked in one call per node,
    /// as a single read's first step is; a hit is the answer, and a miss or a node's
    /// error goes through the single read (which confirms a miss on the next replica
    /// and fails over), and is counted there, unless the next replica confirms it
    /// without waiting. Per key, a batch of single reads cost 4.75x the one-copy
    /// batch (found from outside).
    pub(crate) async fn get_many_first_replicas(
        &self,
        state: &State,
        keys: &[&str],
    ) -> Vec<Result<Option<Entry>>> {
        let mut split = split_batch(state, keys.iter().map(|&k| (k, None)));
        let failed = std::mem::take(&mut split.failed);
        let groups = join_all(keyed_groups(state, &split, keys, |r, subset| async move {
            r.get_many(&subset).await
        }))
        .await;
        // Each answer goes to its place at once: a pass through a list of hits
        // first cost a move of every answer more than the one-copy batch.
        let mut out = Gathered::new(keys.len());
        for (p, e) in failed {
            out.put(p, Err(e));
        }
        let mut again = Vec::new();
        for ((n, _), answers) in split.per_node.iter().zip(groups) {
            // Checked after the answers, as a single read's first step is.
            let trusted = !state.nodes[*n].unverified();
            for (p, answer) in answers {
                match answer {
                    Ok(Some(_)) if !trusted => {
                        state.nodes[*n].tally.uncounted(true);
                        again.push(p);
                    }
                    Ok(Some(entry)) => {
                        state.nodes[*n].health.call_ok();
                        out.put(p, Ok(Some(entry)));
                    }
                    // Confirmed by the next replica at once, as a single read's
                    // is (this read counted as the caller's).
                    Ok(None) if trusted && self.miss_confirmed_ready(state, keys[p]) => {
                        state.nodes[*n].health.call_ok();
                        out.put(p, Ok(None));
                    }
                    Ok(None) => {
                        // The single read asks again, and counts that read.
                        state.nodes[*n].tally.uncounted(false);
                        again.push(p);
                    }
                    Err(_) => again.push(p),
                }
            }
        }
        if !again.is_empty() {
            let read = join_all(
                again
                    .into_iter()
                    .map(|p| async move { (p, self.get_entry(keys[p]).await) }),
            )
            .await;
            for (p, r) in read {
                out.put(p, r);
            }
        }
        out.finish()
    }
}

/// Every node up, with nothing to hand back: what a batch needs to go by node.
pub(crate) fn all_caught_up(state: &State) -> bool {
    state.nodes.iter().all(|n| n.is_up() && n.hints.len() == 0)
}

/// One call of `op` per node with that node's keys of the batch, all at once; each
/// answer paired with its input position.
pub(crate) fn keyed_groups<'a, T, F, Fut>(
    state: &'a State,
    split: &'a Split,
    keys: &'a [&'a str],
    op: F,
) -> impl Iterator<Item = impl std::future::Future<Output = Vec<(usize, Result<T>)>> + 'a> + 'a
where
    F: Fn(&'a NodeRegistry, Vec<&'a str>) -> Fut + Copy + 'a,
    Fut: std::future::Future<Output = Vec<Result<T>>> + 'a,
    T: 'a,
{
    split.per_node.iter().map(move |(n, positions)| {
        let node = &state.nodes[*n];
        let subset: Vec<&str> = positions.iter().map(|&p| keys[p]).collect();
        let answers = op(&node.registry, subset);
        async move {
            positions
                .iter()
                .copied()
                .zip(
                    answers
                        .await
                        .into_iter()
                        .map(|r| r.map_err(|e| node.error(e))),
                )
                .collect::<Vec<_>>()
        }
    })
}

/// Runs a split batch's per-node calls and its moving keys' single calls at once,
/// and puts every answer, failures of the split included, back in input order.
pub(crate) async fn answers<T, G>(
    n: usize,
    groups: impl IntoIterator<Item = G>,
    singles: impl std::future::Future<Output = Vec<(usize, Result<T>)>>,
    failed: Vec<(usize, Error)>,
) -> Vec<Result<T>>
where
    G: std::future::Future<Output = Vec<(usize, Result<T>)>>,
{
    let (groups, singles) = futures_util::future::join(join_all(groups), singles).await;
    gather(
        n,
        groups
            .into_iter()
            .flatten()
            .chain(singles)
            .chain(failed.into_iter().map(|(p, e)| (p, Err(e)))),
    )
}
