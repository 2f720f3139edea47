//! A scan's pages and the opaque cursor that resumes one.

use serde::{Deserialize, Serialize};

use crate::Entry;
use crate::error::{Error, Result};

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

#[cfg(test)]
mod tests {
    use super::*;

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
