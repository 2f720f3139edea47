//! Room lent between shards. The limit is split into one share per shard; a limit
//! set at run time below the shard count, or a record larger than its shard's share,
//! would leave a write with no room in its shard although the registry as a whole
//! has it. Such a write borrows the room from the other shards (spare room first,
//! then room their records hold, which they evict), so that an evicting registry
//! takes every write within its limit and the shares still add up to the limit.

use nautilus_core::{Error, Result};

use crate::key::HKey;
use crate::registry::MemoryRegistry;
use crate::shard::Shard;

/// quick_cache's hot section after its capacity goes from `before` (0: new) with a
/// hot section of `hot` to `capacity`: 97% of a new capacity; else the section keeps
/// its ratio to the capacity, rounded down, so it shrinks a little with every change
/// and far with changes through tiny capacities. At least one, at most the capacity.
/// (quick_cache 0.7's `CacheShard::new` and `set_capacity`, to the float.)
pub(crate) fn hot_after(before: u64, hot: u64, capacity: u64) -> u64 {
    let ratio = if before == 0 {
        0.97
    } else {
        hot as f64 / before as f64
    };
    ((capacity as f64 * ratio) as u64).clamp(capacity.min(1), capacity)
}

/// The smallest share at which `shard` admits a record of `charge`, at most `total`.
fn share_for(shard: &Shard, charge: u64, total: u64) -> Option<u64> {
    let mut share = charge;
    while shard.admits_at(share) < charge {
        if share >= total {
            return None;
        }
        // Steps of a 64th: quick sized, and close to the least.
        share = share.saturating_add(1 + share / 64).min(total);
    }
    Some(share)
}

/// Whether a shard of `share` holds so few records of `charge` that quick_cache
/// could turn a new one away (see [`MemoryRegistry::make_room`]): a share of 64 or
/// less, or a record of more than a sixteenth of it.
#[inline]
pub(crate) fn few_fit(share: u64, charge: u64) -> bool {
    share <= 64 || charge.saturating_mul(16) > share
}

impl MemoryRegistry {
    /// Evicts records of a shard that holds few records of `charge` (see [`few_fit`])
    /// until a new one fits beside them. quick_cache admits a new key into a full
    /// shard only by evicting its coldest entry, which in a shard of a few entries is
    /// the new key itself once the others were read: a put answered Ok,
    /// and its record was gone (from outside: under `max_records(1)`, 39 of 40 puts,
    /// the first record staying for good). Counted and notified as evictions.
    #[cold]
    pub(crate) fn make_room(&self, shard: &Shard, incoming: &HKey, charge: u64, now: u64) {
        let capacity = shard.capacity();
        let mut tries = capacity + 1;
        while tries > 0 && shard.cache.weight().saturating_add(charge) > capacity {
            tries -= 1;
            let Some(victim) = shard.cache.iter().map(|(k, _)| k).find(|k| k != incoming) else {
                return;
            };
            // Unfiled with the removal, under the cache's lock (see `removed`).
            if let Some((k, slot)) = shard.cache.remove_if(&victim, |s| {
                shard.state.unfile(&victim, s);
                true
            }) {
                shard.state.evicted(&k, &slot, now);
            }
        }
    }

    /// Makes `shard`'s share large enough to admit a record of `charge` (see
    /// [`Shard::admits`]) with room taken from the others; the share it has then.
    /// `TooLarge` if the whole limit would not admit it. Serialized with changes of
    /// the limit, which set every share anew.
    #[cold]
    pub(crate) fn borrow_room(&self, shard: &Shard, key: &str, charge: u64) -> Result<u64> {
        let _limits = self.inner.capacity.lock();
        let mut have = shard.capacity();
        if have > 0 && shard.admits() >= charge {
            return Ok(have);
        }
        let shards = &self.inner.shards;
        let total = shards
            .iter()
            .fold(0u64, |sum, s| sum.saturating_add(s.capacity()));
        let Some(need) = share_for(shard, charge.max(1), total) else {
            return Err(Error::TooLarge {
                key: key.to_owned(),
                size: charge,
                limit: shard.admits_at(total),
            });
        };
        // Starting after this shard, so that borrowers spread what they take.
        let at = shards
            .iter()
            .position(|s| std::ptr::eq(s, shard))
            .unwrap_or(0);
        let others = || {
            shards[at + 1..]
                .iter()
                .chain(&shards[..at])
                .filter(|s| !std::ptr::eq(*s, shard))
        };
        // Spare room first: taking it evicts nothing.
        for spare_only in [true, false] {
            for other in others() {
                if have >= need {
                    break;
                }
                let share = other.capacity();
                let free = if spare_only {
                    share.saturating_sub(other.cache.weight())
                } else {
                    share
                };
                let take = free.min(need - have);
                if take > 0 {
                    other.set_capacity(share - take);
                    have += take;
                }
            }
        }
        shard.set_capacity(have);
        Ok(have)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mirrored_hot_section_follows_quick_caches_rounding() {
        // quick_cache's hot section through capacity changes: 97% of a new one,
        // then the ratio, rounded down (2, then 3: a half, then a third).
        assert_eq!(hot_after(0, 0, 100), 97);
        assert_eq!(hot_after(0, 0, 2), 1);
        assert_eq!(hot_after(2, 1, 3), 1);
        assert_eq!(hot_after(3, 1, 300), 100);
        assert_eq!(hot_after(300, 100, 0), 0);
        assert_eq!(hot_after(0, 0, 1), 1);
    }
}
