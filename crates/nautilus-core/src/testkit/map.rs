//! A small, obviously-correct reference backend: a `BTreeMap` behind a mutex.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;

use crate::batch;
use crate::clock::{Clock, SystemClock};
use crate::error::{CapacityLimit, Error, Result};
use crate::limits::Limits;
use crate::registry::Registry;
use crate::version::VersionClock;
use crate::{
    Capabilities, Capacity, Cursor, DeleteOptions, Entry, Expiry, Page, PutItem, PutOptions, Stats,
    Version,
};

/// How long an imported tombstone without a collection time is kept.
const TOMBSTONE_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// A reference [`Registry`] on a `BTreeMap`: simple enough to be read as a
/// specification, complete enough to pass the conformance suite.
///
/// It refuses new records beyond its capacity (like the Redis backend) rather than
/// evicting. Use it in tests and examples, or as a template for a new backend; use
/// `nautilus-memory` for anything fast.
#[derive(Debug)]
pub struct MapRegistry {
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
    versions: VersionClock,
    limits: Limits,
}

#[derive(Debug, Default)]
struct State {
    map: BTreeMap<String, Entry>,
    capacity: Capacity,
    stats: Stats,
}

impl Default for MapRegistry {
    fn default() -> Self {
        MapRegistry::with_clock(Arc::new(SystemClock))
    }
}

impl MapRegistry {
    /// An empty registry reading time from `clock`.
    #[must_use]
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        MapRegistry {
            state: Mutex::new(State::default()),
            clock,
            versions: VersionClock::new(),
            limits: Limits::default(),
        }
    }

    /// Sets the size limits.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-written (every
        // mutation is one map call), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live<'a>(state: &'a State, key: &str, now: crate::Timestamp) -> Option<&'a Entry> {
        state.map.get(key).filter(|e| e.is_live_at(now))
    }

    fn bytes(state: &State, now: crate::Timestamp) -> u64 {
        state
            .map
            .iter()
            .filter(|(_, e)| e.is_live_at(now))
            .map(|(k, e)| (k.len() + e.value.len()) as u64)
            .sum()
    }

    /// Refuses a live record of `value_len` bytes under `key` that would take the
    /// registry past its capacity (puts and imports alike).
    fn check_room(state: &State, key: &str, value_len: usize, now: crate::Timestamp) -> Result<()> {
        let old = Self::live(state, key, now);
        if let (None, Some(max)) = (old, state.capacity.max_records) {
            let live = state.map.values().filter(|e| e.is_live_at(now)).count() as u64;
            if live >= max {
                return Err(Error::CapacityExceeded {
                    limit: CapacityLimit::Records,
                    max,
                });
            }
        }
        if let Some(max) = state.capacity.max_bytes {
            let old = old.map_or(0, |e| (key.len() + e.value.len()) as u64);
            let after = Self::bytes(state, now) - old + (key.len() + value_len) as u64;
            if after > max {
                return Err(Error::CapacityExceeded {
                    limit: CapacityLimit::Bytes,
                    max,
                });
            }
        }
        Ok(())
    }

    /// The core of [`Registry::import`].
    fn import_sync(&self, key: &str, entry: Entry) -> Result<bool> {
        let now = self.clock.now();
        self.limits.check_import(key, &entry, now)?;
        self.versions.observe(entry.version);
        let mut state = self.lock();
        // A tombstone counts until it is collected; an expired record does not.
        let stored = state
            .map
            .get(key)
            .filter(|e| !e.is_expired_at(now))
            .map(|e| e.version);
        let newer = stored.is_none_or(|v| entry.version > v);
        if !newer {
            return Ok(false);
        }
        if entry.is_expired_at(now) {
            state.map.remove(key);
        } else if entry.is_tombstone() {
            let until = entry
                .expires_at
                .unwrap_or(now.saturating_add(TOMBSTONE_GRACE));
            state
                .map
                .insert(key.to_owned(), Entry::tombstone(entry.version, Some(until)));
        } else {
            Self::check_room(&state, key, entry.value.len(), now)?;
            state.map.insert(key.to_owned(), entry);
        }
        Ok(true)
    }

    fn put_sync(&self, key: &str, value: Bytes, options: PutOptions) -> Result<Version> {
        self.limits.check_record(key, value.len())?;
        let now = self.clock.now();
        let expires_at = options.expiry.resolve(now)?;
        let mut state = self.lock();
        let current = Self::live(&state, key, now).map(|e| e.version);
        options.condition.check(key, current)?;
        Self::check_room(&state, key, value.len(), now)?;
        // The floor is the stored version even if expired, so versions never go back.
        let floor = state.map.get(key).map(|e| e.version);
        let version = self.versions.next(now, floor);
        if current.is_some() {
            state.stats.updates += 1;
        } else {
            state.stats.inserts += 1;
        }
        state
            .map
            .insert(key.to_owned(), Entry::new(value, version, expires_at));
        Ok(version)
    }

    fn delete_sync(&self, key: &str, options: DeleteOptions) -> Result<Option<Version>> {
        self.limits.check_key(key)?;
        let now = self.clock.now();
        let mut state = self.lock();
        let current = Self::live(&state, key, now).map(|e| e.version);
        options.condition.check(key, current)?;
        let Some(removed) = current else {
            return Ok(None);
        };
        state.stats.deletes += 1;
        let version = self.versions.next(now, Some(removed));
        match options.tombstone {
            Some(grace) => {
                let until = now.saturating_add(grace);
                state
                    .map
                    .insert(key.to_owned(), Entry::tombstone(version, Some(until)));
            }
            None => {
                state.map.remove(key);
            }
        }
        Ok(Some(version))
    }

    fn get_sync(&self, key: &str) -> Result<Option<Entry>> {
        self.limits.check_key(key)?;
        let now = self.clock.now();
        let mut state = self.lock();
        let found = Self::live(&state, key, now).cloned();
        if found.is_some() {
            state.stats.hits += 1;
        } else {
            state.stats.misses += 1;
        }
        Ok(found)
    }
}

/// Marks the cursors this registry writes, so that any other text is refused.
const CURSOR_TAG: &str = "map1:";

fn encode_cursor(last_key: &str) -> Cursor {
    Cursor::new(format!("{CURSOR_TAG}{last_key}"))
}

/// The last key a scan of `prefix` passed: it is under the prefix, so a cursor of a
/// scan of another prefix is refused unless its key happens to be under this one
/// (then the scan continues from it, still under `prefix` only).
fn decode_cursor<'c>(cursor: &'c Cursor, prefix: &str) -> Result<&'c str> {
    cursor
        .as_str()
        .strip_prefix(CURSOR_TAG)
        .filter(|key| key.starts_with(prefix))
        .ok_or_else(|| {
            Error::invalid_argument("not a cursor of this registry's scan of this prefix")
        })
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Registry for MapRegistry {
    fn capabilities(&self) -> Capabilities {
        Capabilities::new("map")
            .with_answers_ready(true)
            .with_max_records(true)
            .with_max_bytes(true)
            .with_evicts(false)
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    async fn get_entry(&self, key: &str) -> Result<Option<Entry>> {
        self.get_sync(key)
    }

    fn get_ready(&self, key: &str) -> Option<Result<Option<Entry>>> {
        Some(self.get_sync(key))
    }

    fn get_value_ready(&self, key: &str) -> Option<Result<Option<Bytes>>> {
        Some(
            self.get_sync(key)
                .map(|entry| entry.map(|entry| entry.value)),
        )
    }

    async fn put_opts(&self, key: &str, value: Bytes, options: PutOptions) -> Result<Version> {
        self.put_sync(key, value, options)
    }

    fn put_ready(
        &self,
        key: &str,
        value: Bytes,
        options: PutOptions,
    ) -> std::result::Result<Result<Version>, Bytes> {
        Ok(self.put_sync(key, value, options))
    }

    async fn delete_opts(&self, key: &str, options: DeleteOptions) -> Result<Option<Version>> {
        self.delete_sync(key, options)
    }

    async fn touch(&self, key: &str, expiry: Expiry) -> Result<Option<Version>> {
        self.limits.check_key(key)?;
        let now = self.clock.now();
        let expires_at = expiry.resolve(now)?;
        let mut state = self.lock();
        let Some(old) = Self::live(&state, key, now).map(|e| e.version) else {
            return Ok(None);
        };
        let version = self.versions.next(now, Some(old));
        if let Some(entry) = state.map.get_mut(key) {
            entry.version = version;
            entry.expires_at = expires_at;
        }
        Ok(Some(version))
    }

    async fn import(&self, key: &str, entry: Entry) -> Result<bool> {
        self.import_sync(key, entry)
    }

    fn import_ready(&self, key: &str, entry: Entry) -> std::result::Result<Result<bool>, Entry> {
        Ok(self.import_sync(key, entry))
    }

    async fn get_many(&self, keys: &[&str]) -> Vec<Result<Option<Entry>>> {
        batch::get_each(self, keys).await
    }

    async fn put_many(&self, items: Vec<PutItem>) -> Vec<Result<Version>> {
        batch::put_each(self, items).await
    }

    async fn delete_many(&self, keys: &[&str]) -> Vec<Result<bool>> {
        batch::delete_each(self, keys).await
    }

    async fn scan(&self, prefix: &str, cursor: Option<&Cursor>, limit: usize) -> Result<Page> {
        Page::check_limit(limit)?;
        // The cursor is the last key passed: keys are ordered, so each stable key is
        // returned exactly once.
        let lower = match cursor {
            Some(c) => Bound::Excluded(decode_cursor(c, prefix)?.to_owned()),
            None => Bound::Included(prefix.to_owned()),
        };
        let now = self.clock.now();
        let state = self.lock();
        let mut records = Vec::new();
        let mut last = None;
        for (key, entry) in state.map.range((lower, Bound::Unbounded)) {
            if !key.starts_with(prefix) {
                break;
            }
            if records.len() == limit {
                return Ok(Page::new(records, last.map(|k: String| encode_cursor(&k))));
            }
            last = Some(key.clone());
            if entry.is_live_at(now) {
                records.push((key.clone(), entry.clone()));
            }
        }
        Ok(Page::new(records, None))
    }

    async fn count(&self) -> Result<u64> {
        let now = self.clock.now();
        Ok(self
            .lock()
            .map
            .values()
            .filter(|e| e.is_live_at(now))
            .count() as u64)
    }

    async fn clear(&self) -> Result<()> {
        self.lock().map.clear();
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    fn incarnation(&self) -> Option<u64> {
        None
    }

    async fn stats(&self) -> Result<Stats> {
        let now = self.clock.now();
        let state = self.lock();
        let mut stats = state.stats;
        stats.records = state.map.values().filter(|e| e.is_live_at(now)).count() as u64;
        stats.bytes = Self::bytes(&state, now);
        Ok(stats)
    }

    async fn capacity(&self) -> Result<Capacity> {
        Ok(self.lock().capacity)
    }

    async fn set_capacity(&self, capacity: Capacity) -> Result<()> {
        self.lock().capacity = capacity.validate()?;
        Ok(())
    }
}
