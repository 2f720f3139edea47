//! Key and record size limits, checked in core before any backend is touched.

use crate::error::{Error, Result, key_for_error};
use crate::{Entry, Timestamp, Version};

/// Size limits every backend enforces, through [`Limits::check_key`] and
/// [`Limits::check_record`], before it touches its storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Longest key, in bytes of UTF-8. Default 1 KiB.
    pub max_key_bytes: usize,
    /// Largest value, in bytes. Default 16 MiB.
    pub max_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 1024,
            max_value_bytes: 16 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// Sets the key limit.
    #[must_use]
    pub fn with_max_key_bytes(mut self, n: usize) -> Self {
        self.max_key_bytes = n;
        self
    }

    /// Sets the value limit.
    #[must_use]
    pub fn with_max_value_bytes(mut self, n: usize) -> Self {
        self.max_value_bytes = n;
        self
    }

    /// Checks a key: non-empty and at most `max_key_bytes`. Every other character is
    /// allowed; backends treat keys as data, never as patterns.
    #[inline]
    pub fn check_key(&self, key: &str) -> Result<()> {
        if key.is_empty() || key.len() > self.max_key_bytes {
            return Err(self.key_refused(key));
        }
        Ok(())
    }

    /// Why [`check_key`](Self::check_key) refused `key`: out of line, so that the
    /// check costs a read path two compares.
    #[cold]
    #[inline(never)]
    fn key_refused(&self, key: &str) -> Error {
        if key.is_empty() {
            Error::InvalidKey {
                key: String::new(),
                reason: "a key must not be empty",
            }
        } else {
            Error::InvalidKey {
                key: key_for_error(key),
                reason: "the key is longer than the registry's key limit",
            }
        }
    }

    /// Checks a key and the size of the value to be written under it.
    #[inline]
    pub fn check_record(&self, key: &str, value_len: usize) -> Result<()> {
        self.check_key(key)?;
        if value_len > self.max_value_bytes {
            return Err(Error::TooLarge {
                key: key_for_error(key),
                size: value_len as u64,
                limit: self.max_value_bytes as u64,
            });
        }
        Ok(())
    }

    /// Checks a record to be imported at `now` (the importing node's clock): its key,
    /// the size of its value, and its version, which must not be dated more than
    /// [`Version::MAX_AHEAD`] after `now` ([`Error::InvalidArgument`]).
    #[inline]
    pub fn check_import(&self, key: &str, entry: &Entry, now: Timestamp) -> Result<()> {
        self.check_record(key, entry.value.len())?;
        let horizon = now
            .as_millis()
            .saturating_add(Version::MAX_AHEAD.as_millis() as u64);
        if entry.version.millis() > horizon {
            return Err(Error::invalid_argument(format!(
                "the import of {:?} carries version {}, dated more than {} days after this \
                 node's clock ({} ms): a version from so far ahead is corrupt",
                key_for_error(key),
                entry.version,
                Version::MAX_AHEAD.as_secs() / 86_400,
                now.as_millis()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_long_keys_are_refused_with_their_reason() {
        let limits = Limits::default().with_max_key_bytes(4);
        assert!(matches!(
            limits.check_key(""),
            Err(Error::InvalidKey { .. })
        ));
        assert!(limits.check_key("abcd").is_ok());
        assert!(matches!(
            limits.check_key("abcde"),
            Err(Error::InvalidKey { .. })
        ));
        // Four bytes, two characters: the limit is in bytes.
        assert!(limits.check_key("éé").is_ok());
        assert!(limits.check_key("ééé").is_err());
    }

    #[test]
    fn pattern_characters_are_plain_data() {
        let limits = Limits::default();
        for key in ["a*", "user[1]", "?", "\\", "{slot}", " ", "\n"] {
            assert!(limits.check_key(key).is_ok(), "{key:?}");
        }
    }

    #[test]
    fn oversized_values_report_size_and_limit() {
        let limits = Limits::default().with_max_value_bytes(10);
        match limits.check_record("k", 11) {
            Err(Error::TooLarge { size, limit, .. }) => assert_eq!((size, limit), (11, 10)),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(limits.check_record("k", 10).is_ok());
    }
}
