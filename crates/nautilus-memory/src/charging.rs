//! How records are charged against the capacity, and how a limit is split over shards.

use nautilus_core::Capacity;

/// Capacity weights are "unbounded" at this value per shard: far above anything a
/// process can hold, far below where sums could overflow.
pub(crate) const UNBOUNDED: u64 = 1 << 60;

/// Bits a record's charge is kept in (see [`crate::shard::Slot`]).
pub(crate) const CHARGE_BITS: u32 = 48;

/// The heaviest charge a record is kept at: 256 TiB, more than any record in memory
/// weighs. A floor above it (a byte limit over 256 TiB a record) charges every
/// record the floor, which is counting records: [`Charging::for_capacity`] counts
/// them instead.
pub(crate) const MAX_CHARGE: u64 = (1 << CHARGE_BITS) - 1;

/// How records are charged against the capacity; fixed per write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Charging {
    by_bytes: bool,
    /// With a byte limit, the least a record is charged: `max_bytes / max_records`
    /// when both limits are set, so that bytes within the limit imply records within it.
    floor: u64,
}

impl Charging {
    pub(crate) fn for_capacity(c: Capacity) -> Self {
        match (c.max_records, c.max_bytes) {
            (_, None) => Charging {
                by_bytes: false,
                floor: 1,
            },
            (None, Some(_)) => Charging {
                by_bytes: true,
                floor: 1,
            },
            (Some(n), Some(b)) => {
                // With one record, a floor of the whole limit would make every record
                // as heavy as the limit, which no shard admits (see `crate::room`):
                // just over half of it keeps a second record out all the same.
                let floor = if n == 1 {
                    (b / 2 + 1).min(b)
                } else {
                    b.div_ceil(n)
                };
                if floor > MAX_CHARGE {
                    // Every record weighs the floor: the byte limit binds at the
                    // record limit.
                    return Charging {
                        by_bytes: false,
                        floor: 1,
                    };
                }
                Charging {
                    by_bytes: true,
                    floor: floor.max(1),
                }
            }
        }
    }

    /// The weight of a record of `size` bytes (key plus value).
    #[inline]
    pub(crate) fn charge(self, size: u64) -> u64 {
        if self.by_bytes {
            size.max(self.floor)
        } else {
            1
        }
    }

    /// Total weight the whole registry may hold.
    pub(crate) fn total(self, c: Capacity) -> Option<u64> {
        if self.by_bytes {
            c.max_bytes
        } else {
            c.max_records
        }
    }

    /// Packed into one word, so that writers read the rule with one atomic load:
    /// bit 63 = by bytes, low bits = floor.
    pub(crate) fn pack(self) -> u64 {
        (u64::from(self.by_bytes) << 63) | (self.floor & !(1 << 63))
    }

    pub(crate) fn unpack(v: u64) -> Self {
        Charging {
            by_bytes: v >> 63 == 1,
            floor: v & !(1 << 63),
        }
    }
}

/// Shard `i`'s part of `total` over `n` shards, so the parts add up to exactly `total`.
pub(crate) fn share(total: Option<u64>, n: usize, i: usize) -> u64 {
    match total {
        None => UNBOUNDED,
        Some(t) => {
            let n = n as u64;
            t / n + u64::from((i as u64) < t % n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_floor_past_the_largest_charge_counts_records() {
        let c = Capacity::records(4).with_max_bytes(Some(u64::MAX));
        let charging = Charging::for_capacity(c);
        assert_eq!(charging.charge(1 << 20), 1);
        assert_eq!(charging.total(c), Some(4));
        let within = Capacity::records(4).with_max_bytes(Some(4 << 40));
        assert_eq!(Charging::for_capacity(within).charge(1), 1 << 40);
    }

    #[test]
    fn records_only_charges_one_per_record() {
        let c = Charging::for_capacity(Capacity::records(10));
        assert_eq!(c.charge(1), 1);
        assert_eq!(c.charge(1 << 20), 1);
        assert_eq!(c.total(Capacity::records(10)), Some(10));
    }

    #[test]
    fn both_limits_charge_at_least_the_byte_share_of_a_record() {
        let cap = Capacity::records(10).with_max_bytes(Some(1000));
        let c = Charging::for_capacity(cap);
        assert_eq!(c.charge(1), 100, "small records pay the floor");
        assert_eq!(c.charge(500), 500);
        assert_eq!(c.total(cap), Some(1000));
    }

    #[test]
    fn unbounded_shards_get_the_unbounded_weight() {
        assert_eq!(share(None, 8, 3), UNBOUNDED);
    }

    proptest! {
        #[test]
        fn shares_add_up_to_the_total_and_differ_by_at_most_one(t in 0u64..1 << 40, n in 1usize..300) {
            let parts: Vec<u64> = (0..n).map(|i| share(Some(t), n, i)).collect();
            prop_assert_eq!(parts.iter().sum::<u64>(), t);
            let (lo, hi) = (parts.iter().min().copied(), parts.iter().max().copied());
            prop_assert!(hi.unwrap_or(0) - lo.unwrap_or(0) <= 1);
        }

        #[test]
        fn packing_round_trips(records in proptest::option::of(1u64..1 << 40), bytes in proptest::option::of(1u64..1 << 50)) {
            let c = Charging::for_capacity(Capacity::unbounded().with_max_records(records).with_max_bytes(bytes));
            prop_assert_eq!(Charging::unpack(c.pack()), c);
        }

        #[test]
        fn a_record_within_the_bytes_is_within_the_records(n in 1u64..10_000, b in 1u64..1 << 30, sizes in proptest::collection::vec(0u64..4096, 1..200)) {
            // Any set of records whose charges fit the byte limit has at most n records.
            let c = Charging::for_capacity(Capacity::records(n).with_max_bytes(Some(b)));
            let mut used = 0u64;
            let mut count = 0u64;
            for s in sizes {
                let charge = c.charge(s);
                if used + charge > b { break; }
                used += charge;
                count += 1;
            }
            prop_assert!(count <= n);
        }
    }
}
