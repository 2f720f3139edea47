//! The record model: values with a version and an optional expiry, and the option
//! structs operations take.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::key::BatchKey;

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

/// Options of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PutOptions {
    /// When the record expires.
    pub expiry: Expiry,
    /// What must hold for the write to be applied.
    pub condition: Condition,
}

impl PutOptions {
    /// Sets the expiry to a TTL.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.expiry = Expiry::After(ttl);
        self
    }

    /// Sets the expiry.
    #[must_use]
    pub fn expiry(mut self, expiry: Expiry) -> Self {
        self.expiry = expiry;
        self
    }

    /// Sets the condition.
    #[must_use]
    pub fn condition(mut self, condition: Condition) -> Self {
        self.condition = condition;
        self
    }
}

/// Options of a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DeleteOptions {
    /// What must hold for the delete to be applied. `Absent` deletes nothing: it
    /// answers `Ok(None)` when there is no live record and [`Error::Conflict`] when
    /// there is one.
    pub condition: Condition,
    /// Leave a tombstone carrying the delete's version for at least this long, so
    /// that [`Registry::import`](crate::Registry::import) refuses any older copy of
    /// the record meanwhile (the shard router sets it on replicated deletes). A
    /// backend that keeps tombstones of its own keeps the longer of the two.
    pub tombstone: Option<Duration>,
}

impl DeleteOptions {
    /// Sets the condition.
    #[must_use]
    pub fn condition(mut self, condition: Condition) -> Self {
        self.condition = condition;
        self
    }

    /// Leaves a tombstone for at least `grace` (see [`DeleteOptions::tombstone`]).
    #[must_use]
    pub fn tombstone(mut self, grace: Duration) -> Self {
        self.tombstone = Some(grace);
        self
    }
}

/// One write of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PutItem {
    /// The key: held in place up to 24 bytes (see [`BatchKey`]); reads as a `&str`.
    pub key: BatchKey,
    /// The value.
    pub value: Bytes,
    /// Expiry and condition.
    pub options: PutOptions,
}

impl PutItem {
    /// An unconditional write without expiry.
    #[must_use]
    pub fn new(key: impl Into<BatchKey>, value: impl Into<Bytes>) -> Self {
        PutItem {
            key: key.into(),
            value: value.into(),
            options: PutOptions::default(),
        }
    }

    /// The same write with these options.
    #[must_use]
    pub fn with_options(mut self, options: PutOptions) -> Self {
        self.options = options;
        self
    }
}

/// An opaque scan position defined by the backend that returned it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cursor(String);

impl Cursor {
    /// Wraps a backend's cursor text. Only the backend that produced it can read it.
    #[must_use]
    pub fn new(raw: impl Into<String>) -> Self {
        Cursor(raw.into())
    }

    /// The cursor's text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One page of a prefix scan.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Page {
    /// Live records whose keys start with the prefix. May hold fewer than asked, even
    /// none, while `next` is still `Some`.
    pub records: Vec<(String, Entry)>,
    /// Where to continue; `None` when the scan is complete.
    pub next: Option<Cursor>,
    /// Keys under the prefix whose data is not a record of this registry: foreign
    /// bytes or another type that a backend found in its namespace (a get of one is
    /// [`Error::Corrupt`](crate::Error::Corrupt)). They are left untouched and not
    /// returned, so that a scan can page past them; they are listed here so that
    /// the caller can see them.
    pub skipped: Vec<String>,
}

impl Page {
    /// A page of records and the cursor to continue from.
    #[must_use]
    pub fn new(records: Vec<(String, Entry)>, next: Option<Cursor>) -> Self {
        Page {
            records,
            next,
            skipped: Vec::new(),
        }
    }

    /// The same page, listing `keys` as skipped (see [`Page::skipped`]).
    #[must_use]
    pub fn with_skipped(mut self, keys: Vec<String>) -> Self {
        self.skipped = keys;
        self
    }

    /// Refuses a page size of zero with the [`Error::InvalidArgument`] every backend's
    /// [`Registry::scan`](crate::Registry::scan) answers it with; a backend calls it
    /// first thing in `scan`.
    ///
    /// ```
    /// use nautilus_core::{Error, Page};
    ///
    /// assert!(Page::check_limit(1).is_ok());
    /// assert!(matches!(Page::check_limit(0), Err(Error::InvalidArgument { .. })));
    /// ```
    pub fn check_limit(limit: usize) -> Result<()> {
        if limit == 0 {
            return Err(Error::invalid_argument(
                "a scan page must ask for at least one record",
            ));
        }
        Ok(())
    }
}

/// A registry's limits on how much it holds. `None` means unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Capacity {
    /// The most live records.
    pub max_records: Option<u64>,
    /// The most bytes of keys plus values.
    pub max_bytes: Option<u64>,
}

impl Capacity {
    /// No limit.
    #[must_use]
    pub fn unbounded() -> Self {
        Capacity::default()
    }

    /// At most `n` records.
    #[must_use]
    pub fn records(n: u64) -> Self {
        Capacity {
            max_records: Some(n),
            max_bytes: None,
        }
    }

    /// Sets the record limit.
    #[must_use]
    pub fn with_max_records(mut self, n: Option<u64>) -> Self {
        self.max_records = n;
        self
    }

    /// Sets the byte limit.
    #[must_use]
    pub fn with_max_bytes(mut self, n: Option<u64>) -> Self {
        self.max_bytes = n;
        self
    }

    /// Refuses zero limits, which would make a registry that can hold nothing.
    pub fn validate(self) -> Result<Self> {
        if self.max_records == Some(0) || self.max_bytes == Some(0) {
            return Err(Error::invalid_argument(
                "a capacity limit must be at least 1",
            ));
        }
        Ok(self)
    }
}

/// What a backend supports, so callers, the testkit and the router adapt instead of
/// guessing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Capabilities {
    /// Short backend name (`"memory"`, `"redis"`).
    pub backend: &'static str,
    /// A record limit is enforced.
    pub max_records: bool,
    /// A byte limit is enforced.
    pub max_bytes: bool,
    /// When full, old records are evicted (`true`) rather than new ones refused with
    /// [`Error::CapacityExceeded`] (`false`).
    pub evicts: bool,
    /// Data survives the process (and is visible to other processes).
    pub persistent: bool,
    /// The synchronous methods always answer: [`Registry::get_ready`] never answers
    /// `None`, and [`Registry::put_ready`] and [`Registry::import_ready`] never hand
    /// back (an in-process store). The router makes replicated writes over such nodes
    /// without a future; a node that claims it and hands back fails that write's copy.
    ///
    /// [`Registry::get_ready`]: crate::Registry::get_ready
    /// [`Registry::put_ready`]: crate::Registry::put_ready
    /// [`Registry::import_ready`]: crate::Registry::import_ready
    pub answers_ready: bool,
}

impl Capabilities {
    /// Capabilities of a backend with this name and nothing else.
    #[must_use]
    pub fn new(backend: &'static str) -> Self {
        Capabilities {
            backend,
            ..Capabilities::default()
        }
    }

    /// Sets whether a record limit is enforced ([`Capabilities::max_records`]).
    #[must_use]
    pub fn with_max_records(mut self, max_records: bool) -> Self {
        self.max_records = max_records;
        self
    }

    /// Sets whether a byte limit is enforced ([`Capabilities::max_bytes`]).
    #[must_use]
    pub fn with_max_bytes(mut self, max_bytes: bool) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Sets whether a full registry evicts rather than refuses
    /// ([`Capabilities::evicts`]).
    #[must_use]
    pub fn with_evicts(mut self, evicts: bool) -> Self {
        self.evicts = evicts;
        self
    }

    /// Sets persistence.
    #[must_use]
    pub fn with_persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    /// Sets whether the synchronous methods always answer
    /// ([`Capabilities::answers_ready`]).
    #[must_use]
    pub fn with_answers_ready(mut self, answers_ready: bool) -> Self {
        self.answers_ready = answers_ready;
        self
    }
}

/// Counters a registry keeps. Backends that do not track a counter leave it at zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Stats {
    /// Live records (an estimate where exact counting is costly).
    pub records: u64,
    /// Bytes of keys plus values held.
    pub bytes: u64,
    /// Reads that found a live record.
    pub hits: u64,
    /// Reads that found nothing (or an expired record).
    pub misses: u64,
    /// Writes that created a record.
    pub inserts: u64,
    /// Writes that replaced a record.
    pub updates: u64,
    /// Deletes that removed a record.
    pub deletes: u64,
    /// Records removed to make room.
    pub evictions: u64,
    /// Records removed because they expired.
    pub expirations: u64,
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

    #[test]
    fn capability_setters_set_one_field_each() {
        let caps = Capabilities::new("x")
            .with_max_records(true)
            .with_evicts(true);
        assert!(caps.max_records && caps.evicts);
        assert!(!caps.max_bytes && !caps.persistent);
        let caps = caps.with_max_records(false).with_max_bytes(true);
        assert!(!caps.max_records && caps.max_bytes && caps.evicts);
    }

    #[test]
    fn a_page_of_zero_records_is_an_invalid_argument() {
        match Page::check_limit(0) {
            Err(Error::InvalidArgument { reason }) => {
                assert_eq!(reason, "a scan page must ask for at least one record");
            }
            other => panic!("{other:?}"),
        }
        assert!(Page::check_limit(usize::MAX).is_ok());
    }
}
