//! How a node ranks in a slot: every node's score for the slot, and for weighted
//! placements `ln(u) / weight` with bounds that settle most comparisons without a
//! logarithm. The owner is the best rank; a preference list the best few.

use super::{DIRECT, GOLDEN, LANES, Placement, TWO_POW_M52, ln};

/// murmur3's 64-bit finalizer: a bijection that mixes every input bit into every
/// output bit.
pub(super) const fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// The position a [`Placement::rank_key`] holds (its low half, reversed).
fn position_of(key: u128) -> usize {
    // Positions fit in the low 64 bits by construction.
    !(key as u64) as usize
}

/// The slot's half of every node's score.
pub(super) const fn slot_hash(slot: u32) -> u64 {
    fmix64((slot as u64).wrapping_add(GOLDEN))
}

/// A score as a fraction strictly inside (0, 1): 52 bits plus one half, exact.
pub(super) fn unit(score: u64) -> f64 {
    // Below 2^52: exact, and the signed conversion is one instruction.
    ((score >> 12) as i64 as f64 + 0.5) * TWO_POW_M52
}

/// A node's rank in one slot. Higher ranks come first.
#[derive(Clone, Copy, Default)]
pub(super) struct Rank {
    /// `ln(u) / weight` for weighted placements, 0 for equal weights. Never NaN.
    pub(super) key: f64,
    /// The raw score.
    pub(super) score: u64,
}

impl Rank {
    /// Strictly better. Equal ranks keep the node met first, which is the smaller id
    /// because nodes are ranked in id order.
    fn beats(self, other: Rank) -> bool {
        self.key > other.key || (self.key == other.key && self.score > other.score)
    }
}

/// A node being ranked in a weighted slot: bounds on its rank, equal once settled.
#[derive(Clone, Copy)]
struct Candidate {
    pos: usize,
    score: u64,
    lo: f64,
    hi: f64,
}

impl From<Candidate> for Rank {
    /// Only for a settled candidate.
    fn from(c: Candidate) -> Rank {
        Rank {
            key: c.hi,
            score: c.score,
        }
    }
}

impl Placement {
    /// The position (in id order) of the highest raw score. Needs a node.
    #[inline]
    pub(super) fn first_equal(&self, h: u64) -> usize {
        if self.seeds.len() <= DIRECT {
            // Few nodes (as many as the router ranks at every lookup): a running max
            // of rank keys is a compare and conditional moves; comparing scores and
            // positions apart branched on random data: 1.26 mispredicted branches per
            // routed get at 4 nodes, 0.07 this way.
            let best = (0..self.seeds.len())
                .map(|pos| self.rank_key(h, pos))
                .fold(0, u128::max);
            return position_of(best);
        }
        // Many nodes: lanes of running maxima side by side, so that comparisons do
        // not wait on each other.
        let mut chunks = self.seeds.chunks_exact(LANES);
        let (mut best, mut best_score) = match chunks.next() {
            Some(first) => {
                // Lane l sees positions l, l + LANES, ...; each keeps its first maximum.
                let mut pos: [usize; LANES] = std::array::from_fn(|l| l);
                let mut score: [u64; LANES] = std::array::from_fn(|l| fmix64(first[l] ^ h));
                for (c, chunk) in chunks.by_ref().enumerate() {
                    for l in 0..LANES {
                        let s = fmix64(chunk[l] ^ h);
                        if s > score[l] {
                            (score[l], pos[l]) = (s, (c + 1) * LANES + l);
                        }
                    }
                }
                let (mut best, mut best_score) = (pos[0], score[0]);
                for l in 1..LANES {
                    if score[l] > best_score || (score[l] == best_score && pos[l] < best) {
                        (best, best_score) = (pos[l], score[l]);
                    }
                }
                (best, best_score)
            }
            None => (0, fmix64(self.seeds[0] ^ h)),
        };
        // The rest come after every lane's positions, so they win only strictly.
        let done = self.seeds.len() - chunks.remainder().len();
        for (j, &seed) in self.seeds.iter().enumerate().skip(done.max(1)) {
            let score = fmix64(seed ^ h);
            if score > best_score {
                (best, best_score) = (j, score);
            }
        }
        best
    }

    /// The position (in id order) of the best weighted rank. Needs a node.
    ///
    /// Most comparisons are settled by bounds on the two ranks computed from the scores
    /// alone; the logarithm runs only when the bounds overlap, which after the first
    /// few nodes is rare, since the winner's `u` is close to 1 where the bounds are tight.
    pub(super) fn first_weighted(&self, h: u64) -> usize {
        let mut best = self.candidate(0, fmix64(self.seeds[0] ^ h));
        for j in 1..self.seeds.len() {
            let score = fmix64(self.seeds[j] ^ h);
            let (a, hi) = self.upper_bound(j, score);
            if hi < best.lo {
                continue;
            }
            let mut next = Candidate {
                pos: j,
                score,
                lo: self.lower_bound(j, a),
                hi,
            };
            if next.lo <= best.hi {
                self.settle(&mut best);
                self.settle(&mut next);
                if !(Rank::from(next).beats(Rank::from(best))) {
                    continue;
                }
            }
            best = next;
        }
        best.pos
    }

    fn candidate(&self, pos: usize, score: u64) -> Candidate {
        let (a, hi) = self.upper_bound(pos, score);
        let lo = self.lower_bound(pos, a);
        Candidate { pos, score, lo, hi }
    }

    /// `1 - u` and an upper bound on the node's computed rank: ln u <= -(a + a^2/2)
    /// for a = 1 - u in (0, 1), as every term of the series of ln(1 - a) is negative.
    fn upper_bound(&self, pos: usize, score: u64) -> (f64, f64) {
        // Exact for u >= 1/2, within half an ulp below.
        let a = 1.0 - unit(score);
        (a, -(a + 0.5 * a * a) * self.hi_scales[pos])
    }

    /// A lower bound on the node's computed rank: for a <= 1/2 the terms of
    /// ln(1 - a) after the second sum to at most a^3 / (3 (1 - a)) <= 2a^3/3; for
    /// larger `a` (a poor score) none is needed.
    fn lower_bound(&self, pos: usize, a: f64) -> f64 {
        if a <= 0.5 {
            -(a + a * a * (0.5 + a * (2.0 / 3.0))) * self.lo_scales[pos]
        } else {
            f64::NEG_INFINITY
        }
    }

    /// Replaces a candidate's bounds by its exact rank.
    fn settle(&self, c: &mut Candidate) {
        if c.lo != c.hi {
            let key = self.weighted_rank(c.pos, c.score).key;
            (c.lo, c.hi) = (key, key);
        }
    }

    fn weighted_rank(&self, j: usize, score: u64) -> Rank {
        Rank {
            key: ln(unit(score)) / self.weights[j],
            score,
        }
    }

    /// [`Self::top`] for equal weights: the `best.len()` highest scores, ties to the
    /// node met first, as `(score, position)`; returns how many were filled. The same
    /// ranking without the weighted ranks' floating-point keys, which every
    /// replicated write paid for.
    #[inline]
    pub(super) fn top_equal(&self, h: u64, best: &mut [(u64, usize)]) -> usize {
        let n = best.len();
        let mut len = 0;
        for (j, &seed) in self.seeds.iter().enumerate() {
            let score = fmix64(seed ^ h);
            let mut at = if len < n {
                len += 1;
                len - 1
            } else if score > best[n - 1].0 {
                n - 1
            } else {
                continue;
            };
            best[at] = (score, j);
            while at > 0 && best[at].0 > best[at - 1].0 {
                best.swap(at, at - 1);
                at -= 1;
            }
        }
        len
    }

    /// A node's rank in an equal-weight slot as one number: its score above its
    /// position reversed, so that the larger key is the higher score and, among equal
    /// scores, the node met first (the smaller position). Compared with `max` and
    /// `min`, keys rank without branching on random data.
    #[inline]
    fn rank_key(&self, h: u64, pos: usize) -> u128 {
        (u128::from(fmix64(self.seeds[pos] ^ h)) << 64) | u128::from(!(pos as u64))
    }

    /// [`Self::top_equal`] for two places, kept in registers: the list of every
    /// replicated write at R=2. Positions in id order, best first; at least two nodes.
    #[inline]
    pub(super) fn top2_equal(&self, h: u64) -> [usize; 2] {
        let (mut first, mut second) = (0, 0);
        for pos in 0..self.seeds.len() {
            let key = self.rank_key(h, pos);
            second = second.max(key.min(first));
            first = first.max(key);
        }
        [position_of(first), position_of(second)]
    }

    /// Fills `best` with the best ranks of the slot, best first, as (rank, position
    /// in id order); returns how many it holds (`best.len()` unless fewer nodes).
    pub(super) fn top(&self, h: u64, best: &mut [(Rank, usize)]) -> usize {
        let mut len = 0;
        for (j, &seed) in self.seeds.iter().enumerate() {
            let score = fmix64(seed ^ h);
            let full = len == best.len();
            let rank = if self.weighted {
                let worst = best.last().map_or(f64::NEG_INFINITY, |(r, _)| r.key);
                if full && self.upper_bound(j, score).1 < worst {
                    continue;
                }
                self.weighted_rank(j, score)
            } else {
                Rank { key: 0.0, score }
            };
            let mut at = if full {
                match best.last() {
                    Some(&(worst, _)) if rank.beats(worst) => best.len() - 1,
                    _ => continue,
                }
            } else {
                len += 1;
                len - 1
            };
            best[at] = (rank, j);
            while at > 0 && best[at].0.beats(best[at - 1].0) {
                best.swap(at, at - 1);
                at -= 1;
            }
        }
        len
    }
}
