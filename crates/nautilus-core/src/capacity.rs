//! A registry's limits on how much it holds.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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
