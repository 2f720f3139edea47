//! The hybrid logical clock that hands out [`Version`]s.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Timestamp, Version};

/// Hands out strictly increasing versions: wall-clock milliseconds in the high bits, a
/// counter in the low bits.
///
/// A version from [`VersionClock::next`] is greater than every version this clock has
/// issued or [observed](VersionClock::observe), and greater than the floor it is given
/// (the version being replaced). So versions keep increasing across delete-and-recreate
/// and after importing records from a node whose clock runs ahead.
///
/// ```
/// use nautilus_core::{Timestamp, Version, VersionClock};
///
/// let clock = VersionClock::new();
/// let a = clock.next(Timestamp::from_millis(1_000), None);
/// let b = clock.next(Timestamp::from_millis(1_000), None);
/// assert!(b > a);
/// // A clock that went backwards still never goes back.
/// let c = clock.next(Timestamp::from_millis(10), None);
/// assert!(c > b);
/// // The floor wins when it is ahead of the wall clock.
/// let floor = Version::from_raw(u64::MAX >> 8);
/// assert!(clock.next(Timestamp::from_millis(1_000), Some(floor)) > floor);
/// ```
#[derive(Debug, Default)]
pub struct VersionClock {
    last: AtomicU64,
}

impl VersionClock {
    /// A clock that has issued nothing yet.
    #[must_use]
    pub fn new() -> Self {
        VersionClock::default()
    }

    /// A new version for a write at `now`, greater than `floor` and than every version
    /// issued or observed before.
    #[inline]
    pub fn next(&self, now: Timestamp, floor: Option<Version>) -> Version {
        let wall = now.as_millis() << Version::COUNTER_BITS;
        let floor = floor.map_or(0, Version::as_raw);
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let candidate = wall
                .max(last.saturating_add(1))
                .max(floor.saturating_add(1));
            match self.last.compare_exchange_weak(
                last,
                candidate,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Version::from_raw(candidate),
                Err(seen) => last = seen,
            }
        }
    }

    /// Records a version seen from elsewhere (an import), so later versions exceed it.
    #[inline]
    pub fn observe(&self, seen: Version) {
        self.last.fetch_max(seen.as_raw(), Ordering::Relaxed);
    }
}
