//! The options operations take: a write's expiry and condition, a delete's condition
//! and tombstone, a batch's items.

use std::time::Duration;

use bytes::Bytes;

use crate::key::BatchKey;
use crate::{Condition, Expiry};

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
    /// answers `Ok(None)` when there is no live record and [`Error::Conflict`](crate::Error::Conflict) when
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
