//! The counters a registry keeps.

use serde::{Deserialize, Serialize};

/// Counters a registry keeps. Backends that do not track a counter leave it at zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Stats {
    /// Live records (an estimate where exact counting is costly).
    pub records: u64,
    /// Bytes of keys plus values held: a record adds at least its key's and value's
    /// length, and removing it gives back what it added.
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
    /// Live records removed to make room.
    pub evictions: u64,
    /// Records removed once expired, whatever removed them (never a live one).
    pub expirations: u64,
}
