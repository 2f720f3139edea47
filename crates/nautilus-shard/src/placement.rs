//! Which node owns a key: a fixed table of slots, each placed by weighted rendezvous
//! hashing.
//!
//! # The function
//! 1. A key goes to one of [`SLOTS`] = 2^20 slots: the top [`SLOT_BITS`] bits of
//!    `xxh3_64_with_seed(key, KEY_SEED)` ([`slot_of`]).
//! 2. Every node scores every slot: `score = fmix64(node_seed ^ fmix64(slot + GOLDEN))`,
//!    with `node_seed = xxh3_64_with_seed(id, NODE_SEED)`, `fmix64` murmur3's 64-bit
//!    finalizer and `GOLDEN = 0x9e3779b97f4a7c15`.
//! 3. Nodes are ranked per slot. With equal weights the highest score comes first.
//!    With unequal weights the highest `ln(u) / weight` comes first, where
//!    `u = ((score >> 12) + 0.5) / 2^52` (weighted rendezvous hashing: node `i` wins
//!    with probability `w_i / sum(w)`); equal keys are ordered by score. Equal
//!    ranks, which only a collision of node seeds can produce, go to the smaller id
//!    (byte order), so the order is total.
//! 4. The ranking of a slot is its preference list; its head owns the slot.
//!
//! Nothing else enters: not the order in which nodes are given, not the platform, not
//! the Rust release. The seeds, `GOLDEN`, `SLOT_BITS`, the formula and the logarithm's
//! algorithm are frozen forever: changing any of them moves keys between nodes in
//! every deployment, and the golden vectors in the tests fail.
//!
//! # Why this shape
//! - **Rendezvous rather than a ring.** Adding a node moves only the slots it now
//!   wins; removing one moves only its slots; changing a weight moves slots only to or
//!   from that node, and the rest of every preference list keeps its order. Weights
//!   are honoured in exact proportion without virtual nodes. A ring gets the same
//!   only approximately, with many points per node.
//! - **Fixed slots.** Ranking N nodes per key costs O(N); ranking them once per slot
//!   and keeping the winner in a table makes a lookup one hash and one load, whatever
//!   N. Slots are also the unit a migration enumerates ([`moved_slots`]). 2^20 slots
//!   keep the table at 2 MiB and the imbalance that slot granularity adds small (at
//!   64 nodes a node holds about 16 384 slots, a standard deviation near 0.8 %).
//! - **Deterministic floats.** Weighted ranks need a logarithm; `f64::ln` comes from
//!   the platform's libm and its last bit varies, so this crate computes it with
//!   `+ - * /` only, which IEEE 754 rounds identically everywhere (`src/ln.rs`). `u`
//!   takes 52 bits of the score, not 53, so that `k + 0.5` is exact: with 53 bits the
//!   top score rounds to `u = 1`, whose logarithm 0 ties every such node. Equal
//!   weights compare raw scores, which is the same order (the logarithm never
//!   decreases, and equal keys fall back to the score), so making one weight differ
//!   still moves keys only to or from that node.
//!
//! # Costs
//! Building a [`Placement`] is cheap: O(N log N) plus a 2 MiB table of slot owners
//! that fills lazily. The first lookup of a slot ranks all N nodes, O(N), and stores
//! the winner; every later lookup of a key in that slot is a hash and a load.
//! [`Placement::precompute`] fills the whole table at once, O(2^20 · N). Filling it in
//! the constructor was the first design, but at 1024 nodes that takes 2 to 5 s, and
//! a membership change should not stall on it: the caller decides when to pay, for
//! example on a blocking thread before switching over. Since every entry is a pure
//! function of the nodes, when it is computed changes nothing.
//!
//! Weighted ranks need the logarithm, but most comparisons are settled by bounds
//! from the score alone: with `a = 1 - u`, `-(a + a^2/2 + 2a^3/3) <= ln u <= -(a +
//! a^2/2)` for `a <= 1/2`, widened by 2^-40 against rounding (in the bounds and in
//! `ln`, both below 2^-49), so a comparison decided on bounds is decided exactly
//! as on ranks. The logarithm then runs about once per slot. A preference list of n
//! nodes ranks every node of its slot: O(N · n), with no table.
//!
//! Measured (criterion, `benches/benches/placement.rs`, on a shared 2-core VM whose
//! other core was busy), for 8 / 64 / 1024 nodes:
//!
//! | | 8 | 64 | 1024 |
//! |---|---|---|---|
//! | `node_of`, hash included, table filled | 10 ns | 14 ns | 19 ns |
//! | `preference(key, 3)`, equal weights | 0.14 µs | 0.39 µs | 2.2 µs |
//! | `preference(key, 3)`, weights 1 to 4 | 0.35 µs | 1.1 µs | 6.2 µs |
//! | `new` | 38 µs | 46 µs | 97 µs |
//! | `new` + `precompute`, equal weights | 28 ms | 0.14 s | 2.0 s |
//! | `new` + `precompute`, weights 1 to 4 | 0.14 s | 0.37 s | 5.2 s |
//!
//! A slot's first lookup costs about a millionth of the last two rows (2 to 5 µs at
//! 1024 nodes).

use std::fmt;
use std::sync::atomic::{AtomicU16, Ordering};

use nautilus_core::{Error, Result};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::ln::ln;

mod rank;
use rank::{Rank, slot_hash};

/// How many bits of a key's hash choose its slot. Frozen.
pub const SLOT_BITS: u32 = 20;
/// The number of slots, `2^SLOT_BITS`. Every slot number is below it.
pub const SLOTS: u32 = 1 << SLOT_BITS;
/// The xxh3 seed of key hashes (`"nautilus"` in ASCII). Frozen forever: changing it
/// moves nearly every key.
pub const KEY_SEED: u64 = 0x6e61_7574_696c_7573;
/// The xxh3 seed of node-id hashes (`"node-ids"` in ASCII). Frozen forever.
pub const NODE_SEED: u64 = 0x6e6f_6465_2d69_6473;
/// The most nodes a placement holds (the table stores node indices as `u16`, with
/// `u16::MAX` marking a slot not computed yet).
pub const MAX_NODES: usize = u16::MAX as usize;

/// Added to a slot number before mixing (2^64 / golden ratio). Frozen.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
/// 2^-52, turning a 52-bit integer into a fraction.
const TWO_POW_M52: f64 = 1.0 / 4_503_599_627_370_496.0;
/// The relative margin by which [`Placement`]'s bounds on a weighted rank are
/// widened: 2^-40, against rounding in the bounds and in `ln` that stays below
/// 2^-49 (the tests check `ln` to 1e-15), so a decision taken on bounds is always
/// the decision the exact ranks would take.
const MARGIN: f64 = 1.0 / 1_099_511_627_776.0;
/// Equal-weight builds keep this many running maxima side by side, so comparisons do
/// not wait on each other.
const LANES: usize = 4;
/// A table entry not computed yet; no node has this index.
const UNSET: u16 = u16::MAX;
/// Table entries per chunk. Chunks are arrays initialised by a constant, which stays
/// fast in unoptimised builds, where building 2^20 atomics one by one took 40 ms.
const CHUNK: usize = 1024;
/// Preference lists up to this length rank on the stack.
const INLINE: usize = 8;
/// Preference lists up to this length are returned without allocating.
pub(crate) const INLINE_PREFERENCE: usize = 4;

/// A preference list, inline up to [`INLINE_PREFERENCE`] nodes.
pub(crate) type Preference = smallvec::SmallVec<[usize; INLINE_PREFERENCE]>;

/// The slot of a key: the top [`SLOT_BITS`] bits of its xxh3 hash seeded with
/// [`KEY_SEED`].
#[must_use]
pub fn slot_of(key: &str) -> u32 {
    // The shift leaves SLOT_BITS bits, which fit in a u32.
    (xxh3_64_with_seed(key.as_bytes(), KEY_SEED) >> (64 - SLOT_BITS)) as u32
}

/// Up to this many nodes of equal weight, owners are computed at each lookup
/// rather than read from the table.
const DIRECT: usize = 8;

/// The owner and preference lists of every key for one set of weighted nodes.
///
/// Built from `(id, weight)` pairs; nodes are referred to by their index in that
/// list, and two placements built from the same pairs in any order place every key
/// on the same ids. A slot's owner is computed at its first lookup (O(N)) or by
/// [`precompute`](Self::precompute), then kept: see the [module docs](self).
/// `Send + Sync`: one placement serves every thread.
pub struct Placement {
    /// As given.
    nodes: Vec<(String, u32)>,
    /// Node indices in id order: the order nodes are ranked in, and the index of ids.
    by_id: Vec<u16>,
    /// Per node, in id order: `xxh3(id, NODE_SEED)`.
    seeds: Vec<u64>,
    /// Per node, in id order: the weight.
    weights: Vec<f64>,
    /// Per node, in id order: `(1 - MARGIN) / weight`, for upper bounds on ranks.
    hi_scales: Vec<f64>,
    /// Per node, in id order: `(1 + MARGIN) / weight`, for lower bounds on ranks.
    lo_scales: Vec<f64>,
    /// Whether weights differ, so ranks are `ln(u) / weight` rather than raw scores.
    weighted: bool,
    /// The owner of each slot (an index into `nodes`) or [`UNSET`]; empty without
    /// nodes. An entry only ever goes from `UNSET` to the one value the placement
    /// defines, so relaxed loads and stores suffice: a thread that sees `UNSET`
    /// computes and stores the same value another thread may be storing.
    table: Box<[[AtomicU16; CHUNK]]>,
}

impl Clone for Placement {
    fn clone(&self) -> Self {
        Placement {
            nodes: self.nodes.clone(),
            by_id: self.by_id.clone(),
            seeds: self.seeds.clone(),
            weights: self.weights.clone(),
            hi_scales: self.hi_scales.clone(),
            lo_scales: self.lo_scales.clone(),
            weighted: self.weighted,
            table: self
                .table
                .iter()
                .map(|chunk| {
                    std::array::from_fn(|i| AtomicU16::new(chunk[i].load(Ordering::Relaxed)))
                })
                .collect(),
        }
    }
}

impl fmt::Debug for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Placement")
            .field("nodes", &self.nodes)
            .field("weighted", &self.weighted)
            .finish_non_exhaustive()
    }
}

impl Placement {
    /// Places keys on the given `(id, weight)` nodes.
    ///
    /// An empty list is allowed: every lookup then answers `None`. Fails with
    /// [`Error::InvalidArgument`] if an id is empty or repeated, a weight is 0, or
    /// there are more than [`MAX_NODES`] nodes. O(N log N); the table of owners fills
    /// lazily.
    ///
    /// ```
    /// use nautilus_shard::Placement;
    ///
    /// let placement = Placement::new([("a", 1), ("b", 1), ("c", 2)])?;
    /// let owner = placement.node_id_of("user:42");
    /// assert!(matches!(owner, Some("a" | "b" | "c")));
    /// assert_eq!(placement.preference("user:42", 2).len(), 2);
    /// # Ok::<(), nautilus_core::Error>(())
    /// ```
    pub fn new<I, S>(nodes: I) -> Result<Self>
    where
        I: IntoIterator<Item = (S, u32)>,
        S: Into<String>,
    {
        let nodes: Vec<(String, u32)> = nodes.into_iter().map(|(id, w)| (id.into(), w)).collect();
        if nodes.len() > MAX_NODES {
            return Err(Error::invalid_argument(format!(
                "{} nodes, more than the {MAX_NODES} a placement holds",
                nodes.len()
            )));
        }
        for (id, weight) in &nodes {
            if id.is_empty() {
                return Err(Error::invalid_argument("a node id is empty"));
            }
            if *weight == 0 {
                return Err(Error::invalid_argument(format!(
                    "node {id:?} has weight 0; weights start at 1"
                )));
            }
        }
        // At most MAX_NODES indices, so each fits in a u16.
        let mut by_id: Vec<u16> = (0..nodes.len()).map(|i| i as u16).collect();
        by_id.sort_unstable_by(|&a, &b| nodes[usize::from(a)].0.cmp(&nodes[usize::from(b)].0));
        if let Some(pair) = by_id
            .windows(2)
            .find(|pair| nodes[usize::from(pair[0])].0 == nodes[usize::from(pair[1])].0)
        {
            return Err(Error::invalid_argument(format!(
                "node id {:?} appears twice",
                nodes[usize::from(pair[0])].0
            )));
        }
        let ordered = || by_id.iter().map(|&i| &nodes[usize::from(i)]);
        let seeds = ordered()
            .map(|(id, _)| xxh3_64_with_seed(id.as_bytes(), NODE_SEED))
            .collect();
        let weights: Vec<f64> = ordered().map(|&(_, w)| f64::from(w)).collect();
        let hi_scales = weights.iter().map(|w| (1.0 - MARGIN) / w).collect();
        let lo_scales = weights.iter().map(|w| (1.0 + MARGIN) / w).collect();
        let weighted = nodes.windows(2).any(|pair| pair[0].1 != pair[1].1);
        let table = if nodes.is_empty() {
            Box::default()
        } else {
            (0..SLOTS as usize / CHUNK)
                .map(|_| [const { AtomicU16::new(UNSET) }; CHUNK])
                .collect()
        };
        Ok(Placement {
            nodes,
            by_id,
            seeds,
            weights,
            hi_scales,
            lo_scales,
            weighted,
            table,
        })
    }

    /// Computes the owner of every slot now rather than at each slot's first lookup:
    /// O(2^20 · N), 2 s (equal weights) to 5 s (unequal) at 1024 nodes, see the
    /// [module docs](self). Afterwards every lookup is a hash and a load. Idempotent,
    /// and safe to run while other threads look keys up.
    pub fn precompute(&self) {
        for slot in 0..SLOTS {
            let _ = self.slot_owner(slot);
        }
    }

    /// Ranks the nodes of `slot` (below `SLOTS`; needs a node) and stores the winner.
    #[cold]
    fn compute_owner(&self, slot: u32, entry: &AtomicU16) -> usize {
        let h = slot_hash(slot);
        let first = if self.weighted {
            self.first_weighted(h)
        } else {
            self.first_equal(h)
        };
        let owner = self.by_id[first];
        entry.store(owner, Ordering::Relaxed);
        usize::from(owner)
    }

    /// The number of nodes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes (every lookup answers `None`).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The `(id, weight)` pairs, in the order given; indices elsewhere refer to it.
    #[must_use]
    pub fn nodes(&self) -> &[(String, u32)] {
        &self.nodes
    }

    /// The id of the node at `index`.
    #[must_use]
    pub fn node_id(&self, index: usize) -> Option<&str> {
        self.nodes.get(index).map(|(id, _)| id.as_str())
    }

    /// The index of the node named `id`, in O(log N).
    #[must_use]
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.by_id
            .binary_search_by(|&i| self.nodes[usize::from(i)].0.as_str().cmp(id))
            .ok()
            .map(|pos| usize::from(self.by_id[pos]))
    }

    /// Whether weights differ (ranks then use the deterministic logarithm).
    #[must_use]
    pub fn is_weighted(&self) -> bool {
        self.weighted
    }

    /// The index of the node that owns `key`; `None` without nodes. A hash and a load,
    /// once the key's slot is known ([`precompute`](Self::precompute)); O(N) the
    /// first time.
    #[must_use]
    #[inline]
    pub fn node_of(&self, key: &str) -> Option<usize> {
        self.slot_owner(slot_of(key))
    }

    /// The id of the node that owns `key`; `None` without nodes.
    #[must_use]
    pub fn node_id_of(&self, key: &str) -> Option<&str> {
        self.node_of(key).and_then(|i| self.node_id(i))
    }

    /// The index of the node that owns `slot`; `None` without nodes or if `slot` is
    /// not below [`SLOTS`].
    #[must_use]
    #[inline]
    pub fn slot_owner(&self, slot: u32) -> Option<usize> {
        // A few equal nodes are ranked faster than the table is read: at 2^20 slots
        // it is 2 MiB, and a random lookup misses the cache. Same answer either way.
        if !self.weighted && self.seeds.len() <= DIRECT && slot < SLOTS && !self.seeds.is_empty() {
            return Some(usize::from(self.by_id[self.first_equal(slot_hash(slot))]));
        }
        let slot_index = slot as usize;
        let entry = &self.table.get(slot_index / CHUNK)?[slot_index % CHUNK];
        match entry.load(Ordering::Relaxed) {
            UNSET => Some(self.compute_owner(slot, entry)),
            owner => Some(usize::from(owner)),
        }
    }

    /// Up to `n` distinct nodes for `key`, best first: its replicas, then the nodes
    /// that stand in for them. The first is [`node_of`](Self::node_of). O(N · n).
    #[must_use]
    pub fn preference(&self, key: &str, n: usize) -> Vec<usize> {
        self.slot_preference(slot_of(key), n)
    }

    /// [`preference`](Self::preference) into `out` (cleared first), which keeps its
    /// allocation between calls; lists of up to 8 nodes allocate nothing else.
    pub fn preference_into(&self, key: &str, n: usize, out: &mut Vec<usize>) {
        self.slot_preference_into(slot_of(key), n, out);
    }

    /// Up to `n` distinct nodes for `slot`, best first (empty if `slot` is not below
    /// [`SLOTS`]).
    #[must_use]
    pub fn slot_preference(&self, slot: u32, n: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(n.min(self.nodes.len()));
        self.slot_preference_into(slot, n, &mut out);
        out
    }

    /// [`slot_preference`](Self::slot_preference) into `out` (cleared first).
    pub fn slot_preference_into(&self, slot: u32, n: usize, out: &mut Vec<usize>) {
        out.clear();
        self.extend_preference(slot, n, out);
    }

    /// [`preference`](Self::preference) without allocating for up to
    /// [`INLINE_PREFERENCE`] nodes: the router's path for every replicated write.
    pub(crate) fn preference_inline(&self, key: &str, n: usize) -> Preference {
        let slot = slot_of(key);
        // Two places among equal nodes (every write at R=2): ranked in registers and
        // handed over as an array; other lists as `extend_preference` ranks them.
        if !self.weighted && n == 2 && self.nodes.len() >= 2 {
            let [a, b] = self.top2_equal(slot_hash(slot));
            let nodes = [usize::from(self.by_id[a]), usize::from(self.by_id[b]), 0, 0];
            return Preference::from_buf_and_len(nodes, 2);
        }
        let mut out = Preference::new();
        self.extend_preference(slot, n, &mut out);
        out
    }

    fn extend_preference(&self, slot: u32, n: usize, out: &mut impl Extend<usize>) {
        let n = n.min(self.nodes.len());
        if n == 0 || slot >= SLOTS {
            return;
        }
        if n == 1 {
            out.extend(self.slot_owner(slot));
            return;
        }
        if !self.weighted && n <= INLINE {
            let mut best = [(0, 0); INLINE];
            let len = self.top_equal(slot_hash(slot), &mut best[..n]);
            out.extend(best[..len].iter().map(|&(_, j)| usize::from(self.by_id[j])));
            return;
        }
        let mut inline = [(Rank::default(), 0); INLINE];
        let mut heap = Vec::new();
        let best = if n <= INLINE {
            &mut inline[..n]
        } else {
            heap.resize(n, (Rank::default(), 0));
            &mut heap[..]
        };
        let len = self.top(slot_hash(slot), best);
        out.extend(best[..len].iter().map(|&(_, j)| usize::from(self.by_id[j])));
    }
}

/// The slots whose owner (compared by id) differs between `old` and `new`, in
/// increasing order: the slots a migration from `old` to `new` moves.
pub fn moved_slots<'a>(old: &'a Placement, new: &'a Placement) -> impl Iterator<Item = u32> + 'a {
    // Old index -> new index of the same id, so the scan compares integers.
    let to_new: Vec<Option<usize>> = old.nodes.iter().map(|(id, _)| new.index_of(id)).collect();
    (0..SLOTS).filter(move |&slot| {
        let before = old
            .slot_owner(slot)
            .and_then(|i| to_new.get(i).copied().flatten());
        before != new.slot_owner(slot) || (before.is_none() && !old.is_empty())
    })
}

/// Whether `key`'s owner (compared by id) differs between `old` and `new`.
#[must_use]
pub fn owner_changed(old: &Placement, new: &Placement, key: &str) -> bool {
    old.node_id_of(key) != new.node_id_of(key)
}

#[cfg(test)]
mod tests;
