//! The record model: values with a version and an optional expiry, and the
//! conditions writes put on them.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A record's version: a hybrid logical clock value.
///
/// The high 48 bits are Unix milliseconds, the low 16 bits a counter, so versions
/// compare meaningfully across nodes and keep increasing across delete-and-recreate.
/// Every successful write returns a version strictly greater than the one it replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Version(u64);

impl Version {
    /// Bits of the version that hold the logical counter.
    pub const COUNTER_BITS: u32 = 16;

    /// How far ahead of the importing node's clock an imported version may say it
    /// was made: a year (366 days). Clocks of the nodes of one deployment agree within
    /// far less; a version further ahead is corrupt or forged, and taking it would
    /// move the node's version clock there, and with it every later write, up to the
    /// top of the range where versions stop increasing. An import past it is refused
    /// ([`Limits::check_import`](crate::Limits::check_import)).
    pub const MAX_AHEAD: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 3600);

    /// A version from its raw `u64` form (as stored by a backend).
    #[must_use]
    pub const fn from_raw(raw: u64) -> Self {
        Version(raw)
    }

    /// The raw `u64` form, for storage.
    #[must_use]
    pub const fn as_raw(self) -> u64 {
        self.0
    }

    /// The wall-clock millisecond part.
    #[must_use]
    pub const fn millis(self) -> u64 {
        self.0 >> Self::COUNTER_BITS
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}",
            self.millis(),
            self.0 & ((1 << Self::COUNTER_BITS) - 1)
        )
    }
}

/// A point in time as Unix milliseconds: the same instant on every node and process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// A timestamp from Unix milliseconds.
    #[must_use]
    pub const fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    /// Unix milliseconds.
    #[must_use]
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// The system clock's current time.
    #[must_use]
    pub fn now() -> Self {
        Timestamp::from(SystemTime::now())
    }

    /// This time plus `d`, saturating.
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        // In u64 arithmetic, saturating as the u128 millisecond count would: every
        // write reads the clock.
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map(|d| {
                d.as_secs()
                    .saturating_mul(1000)
                    .saturating_add(u64::from(d.subsec_millis()))
            })
            .unwrap_or(0);
        Timestamp(ms)
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> Self {
        UNIX_EPOCH + Duration::from_millis(t.0)
    }
}

/// When a record stops existing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Expiry {
    /// The record never expires.
    #[default]
    Never,
    /// The record expires this long after the write (rounded up to whole milliseconds).
    After(Duration),
    /// The record expires at this instant.
    At(Timestamp),
}

impl Expiry {
    /// Resolves the expiry against the backend's clock, once, into an absolute time.
    ///
    /// A zero TTL or an instant that is not in the future is refused: a write that is
    /// gone before it returns is almost always a caller's bug (Redis refuses `PX 0` too).
    pub fn resolve(self, now: Timestamp) -> Result<Option<Timestamp>> {
        match self {
            Expiry::Never => Ok(None),
            Expiry::After(d) => {
                if d.is_zero() {
                    return Err(Error::invalid_argument("a TTL must be longer than zero"));
                }
                // Round sub-millisecond TTLs up rather than to an instant already past.
                let ms = u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
                Ok(Some(Timestamp(now.0.saturating_add(ms))))
            }
            Expiry::At(t) => {
                if t <= now {
                    return Err(Error::invalid_argument(format!(
                        "expiry {} ms is not after now ({} ms)",
                        t.0, now.0
                    )));
                }
                Ok(Some(t))
            }
        }
    }
}

/// A stored record: its value and metadata. Cheap to clone: the value is [`Bytes`].
///
/// An entry is either a live record or a **tombstone**: the trace of a delete, carrying
/// the delete's version, which [`Registry::import`](crate::Registry::import) uses so
/// that no older copy of the record (from a replica or a migration that missed the
/// delete) comes back. Tombstones are never returned by reads, scans or counts; they
/// only travel through `import`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Entry {
    /// The value (empty for a tombstone).
    pub value: Bytes,
    /// The version the last write gave it (for a tombstone, the delete's).
    pub version: Version,
    /// When it expires, if ever. For a tombstone: when it may be collected (`None`:
    /// after the backend's own grace period).
    pub expires_at: Option<Timestamp>,
    /// Whether this is a tombstone rather than a live record.
    #[serde(default)]
    pub tombstone: bool,
}

impl Entry {
    /// A record with the given value and metadata (for [`Registry::import`](crate::Registry::import)).
    #[must_use]
    pub fn new(value: impl Into<Bytes>, version: Version, expires_at: Option<Timestamp>) -> Self {
        Entry {
            value: value.into(),
            version,
            expires_at,
            tombstone: false,
        }
    }

    /// The tombstone of a delete made at `version`, to be kept until `collect_at`
    /// (`None`: the importing backend's own grace period).
    ///
    /// ```
    /// use nautilus_core::{Entry, Version};
    ///
    /// let t = Entry::tombstone(Version::from_raw(7), None);
    /// assert!(t.is_tombstone() && t.value.is_empty());
    /// ```
    #[must_use]
    pub fn tombstone(version: Version, collect_at: Option<Timestamp>) -> Self {
        Entry {
            value: Bytes::new(),
            version,
            expires_at: collect_at,
            tombstone: true,
        }
    }

    /// Whether this is a live record at `now`: not a tombstone, not expired.
    #[must_use]
    pub fn is_live_at(&self, now: Timestamp) -> bool {
        !self.tombstone && !self.is_expired_at(now)
    }

    /// Whether this entry is a tombstone (see [`Entry`]).
    #[must_use]
    pub fn is_tombstone(&self) -> bool {
        self.tombstone
    }

    /// Whether the record has expired at `now`. An expired record does not exist.
    #[must_use]
    pub fn is_expired_at(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// The condition a write or delete must meet to be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Condition {
    /// Always apply.
    #[default]
    Always,
    /// Apply only if no live record exists (put-if-absent).
    Absent,
    /// Apply only if the live record has exactly this version (compare-and-swap).
    Version(Version),
}

impl Condition {
    /// Checks the condition against what is stored (`None`: no live record). On a miss
    /// the error is the [`Error::Conflict`] a backend returns.
    pub fn check(self, key: &str, stored: Option<Version>) -> Result<()> {
        let ok = match self {
            Condition::Always => true,
            Condition::Absent => stored.is_none(),
            Condition::Version(v) => stored == Some(v),
        };
        if ok {
            Ok(())
        } else {
            Err(Error::Conflict {
                key: key.to_owned(),
                expected: match self {
                    Condition::Version(v) => Some(v),
                    _ => None,
                },
                actual: stored,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_times_become_milliseconds_saturating_at_both_ends() {
        let at = |d: Duration| Timestamp::from(UNIX_EPOCH + d).as_millis();
        assert_eq!(at(Duration::new(1234, 567_890_123)), 1_234_567);
        assert_eq!(at(Duration::from_millis(999)), 999);
        assert_eq!(at(Duration::ZERO), 0);
        assert_eq!(at(Duration::from_secs(u64::MAX / 1000 + 1)), u64::MAX);
        let before = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(Timestamp::from(before).as_millis(), 0);
        let now = Timestamp::now().as_millis();
        assert!(now > 1_700_000_000_000, "{now}");
    }
}
