//! Writes that failed after their coordinator applied them: the copies the write
//! quorum needed did not take, so the caller got an error, yet the coordinator holds
//! the record. Such a write is indeterminate: it may stand, or a later one may replace
//! it.
//!
//! The router remembers, per coordinator node, the version each such write took
//! there, for one case: the coordinator then went down, a later write of the key was
//! acknowledged through the other replicas and a stand-in, and, when the node
//! returns, it would refuse that write's hand-back because its failed copy carries a
//! version as high or higher (the same millisecond, or its clock ahead). The
//! acknowledged write is then the one that stands: the hand-back is imported just
//! above the failed version, and reads of the node merged with the hint answer the
//! hint over the failed copy (see [`crate::checker::hand_back_one`] and
//! [`crate::reads`]). Without this, reads answered the failed write and the
//! acknowledged one was lost.
//!
//! Kept in the router's memory, as hand-backs are; bounded, and forgotten once a
//! later write through the node succeeds or the hand-back resolves the key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use nautilus_core::Version;
use parking_lot::Mutex;

/// The most failed writes remembered per node; past it, more are not recorded.
const MAX: usize = 65_536;

/// One node's writes that failed after it applied them: key -> the version it holds.
#[derive(Debug, Default)]
pub(crate) struct FailedWrites {
    len: AtomicUsize,
    map: Mutex<HashMap<String, Version>>,
}

impl FailedWrites {
    /// Remembers that the node applied `key` at `version` for a write that failed.
    pub(crate) fn note(&self, key: &str, version: Version) {
        let mut map = self.map.lock();
        if map.len() >= MAX && !map.contains_key(key) {
            return;
        }
        let at = map.entry(key.to_owned()).or_insert(version);
        if version > *at {
            *at = version;
        }
        self.len.store(map.len(), Ordering::Relaxed);
    }

    /// The version of `key`'s failed write on the node, if one is remembered.
    #[inline]
    pub(crate) fn at(&self, key: &str) -> Option<Version> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.map.lock().get(key).copied()
    }

    /// Forgets `key`'s failed write if it is not newer than `version` (a write the
    /// node took since, or the hand-back that resolved it).
    #[inline]
    pub(crate) fn forget(&self, key: &str, version: Version) {
        if self.len.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut map = self.map.lock();
        if map.get(key).is_some_and(|&v| v <= version) {
            map.remove(key);
            self.len.store(map.len(), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_failed_write_is_kept_until_a_write_as_new_passes_it() {
        let f = FailedWrites::default();
        assert_eq!(f.at("k"), None);
        f.note("k", Version::from_raw(5));
        f.note("k", Version::from_raw(3));
        assert_eq!(f.at("k"), Some(Version::from_raw(5)));
        f.forget("k", Version::from_raw(4));
        assert_eq!(f.at("k"), Some(Version::from_raw(5)));
        f.forget("k", Version::from_raw(5));
        assert_eq!(f.at("k"), None);
        assert_eq!(f.at("other"), None);
    }

    #[test]
    fn past_the_bound_new_keys_are_not_recorded() {
        let f = FailedWrites::default();
        for i in 0..MAX {
            f.note(&format!("k{i}"), Version::from_raw(1));
        }
        f.note("one more", Version::from_raw(1));
        assert_eq!(f.at("one more"), None);
        f.note("k0", Version::from_raw(2));
        assert_eq!(f.at("k0"), Some(Version::from_raw(2)));
    }
}
