//! The one error type of the contract.

use std::fmt;
use std::time::Duration;

use crate::Version;

/// A boxed error kept as the `source` of an [`Error`], so that a client library's own
/// error type never appears in the public API.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The source of an [`Error::Unavailable`] for a call a store refused because it
/// answered as another process than the one its client knew (it restarted, perhaps
/// empty or from an old snapshot), so that nothing is decided on what it reloaded.
/// The node is alive and the call was not applied: a router above does not count
/// it toward marking the node down, and decides again once it has caught the key up
/// ([`Error::is_restart_refusal`]).
///
/// ```
/// use nautilus_core::{Error, Restarted};
///
/// let e = Error::Unavailable {
///     node: "redis://10.0.0.7:6379".into(),
///     source: Box::new(Restarted::new("another run_id answers")),
/// };
/// assert!(e.is_transient() && e.is_restart_refusal());
/// ```
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Restarted(String);

impl Restarted {
    /// A refusal, with what the store found.
    pub fn new(why: impl Into<String>) -> Self {
        Restarted(why.into())
    }
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every way a registry operation can fail.
///
/// Each variant carries the facts a caller acts on. [`Error::is_transient`] tells retry
/// layers and the shard router which failures are worth another attempt.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key is empty or longer than the registry's key limit. Nothing was touched.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The offending key (cut to 128 bytes for very long keys).
        key: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The value (or key plus value) is larger than the registry accepts. Nothing was touched.
    #[error("record {key:?} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// The key of the refused record.
        key: String,
        /// The size that was refused, in bytes.
        size: u64,
        /// The limit it exceeds, in bytes.
        limit: u64,
    },
    /// A conditional write or delete found another version than the one it required.
    #[error("version conflict on {key:?}: expected {expected:?}, found {actual:?}")]
    Conflict {
        /// The key.
        key: String,
        /// What the caller required: `None` means "no live record" (put-if-absent),
        /// `Some(v)` means "exactly version v" (compare-and-swap).
        expected: Option<Version>,
        /// What is stored: `None` means no live record.
        actual: Option<Version>,
    },
    /// The registry refuses a new record because it is full. Nothing was touched.
    ///
    /// `limit` and `max` are the limit as [`Registry::capacity`](crate::Registry::capacity)
    /// reports it, so a caller can tell which limit to raise and from what.
    #[error("capacity exceeded: at most {max} {limit}")]
    CapacityExceeded {
        /// Which limit was reached.
        limit: CapacityLimit,
        /// Its value: the most records, or the most bytes of keys plus values.
        max: u64,
    },
    /// Bytes found in the store are not a record this library wrote, or a typed value
    /// could not be decoded. The stored data is left as it is.
    #[error("corrupt record {key:?}: {source}")]
    Corrupt {
        /// The key whose data is corrupt.
        key: String,
        /// What was wrong with it.
        #[source]
        source: BoxError,
    },
    /// A value could not be encoded by the codec (before anything was written).
    #[error("could not encode a value: {source}")]
    Encode {
        /// The codec's error.
        #[source]
        source: BoxError,
    },
    /// The backend (or one node of it) cannot be reached. Transient.
    #[error("backend {node} is unavailable: {source}")]
    Unavailable {
        /// Which node or server, as the backend names it.
        node: String,
        /// The underlying failure.
        #[source]
        source: BoxError,
    },
    /// The operation did not finish in time. Transient; the write may or may not have
    /// been applied.
    #[error("{op} timed out after {after:?}")]
    Timeout {
        /// The operation that timed out.
        op: &'static str,
        /// The configured timeout.
        after: Duration,
    },
    /// The backend does not support this operation.
    #[error("{operation} is not supported by the {backend} backend")]
    NotSupported {
        /// The operation.
        operation: &'static str,
        /// The backend's name.
        backend: &'static str,
    },
    /// An argument other than the key is out of range (a zero TTL, a zero page size, a
    /// cursor from another registry, a zero capacity).
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What was wrong.
        reason: String,
    },
    /// The backend reported an error that fits no other variant.
    #[error("{backend} backend error: {source}")]
    Backend {
        /// The backend's name.
        backend: &'static str,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// Whether the same call may succeed if retried (a timeout, an unreachable node).
    ///
    /// Permanent errors (an invalid key, a conflict, a record too large, corrupt data)
    /// fail the same way on every attempt, so retry layers must not retry them.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::Timeout { .. })
    }

    /// Whether this is an [`Error::Unavailable`] whose source, at any depth of
    /// `Unavailable` wrapping, is a [`Restarted`] refusal: the node answered, as a
    /// new process, and applied nothing.
    #[must_use]
    pub fn is_restart_refusal(&self) -> bool {
        let mut e: &Error = self;
        loop {
            let Error::Unavailable { source, .. } = e else {
                return false;
            };
            if source.downcast_ref::<Restarted>().is_some() {
                return true;
            }
            match source.downcast_ref::<Error>() {
                Some(inner) => e = inner,
                None => return false,
            }
        }
    }

    /// Shorthand for an [`Error::InvalidArgument`].
    pub fn invalid_argument(reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            reason: reason.into(),
        }
    }

    /// Shorthand for an [`Error::Corrupt`].
    pub fn corrupt(key: &str, source: impl Into<BoxError>) -> Self {
        Error::Corrupt {
            key: key.to_owned(),
            source: source.into(),
        }
    }
}

/// Which limit of a [`Capacity`](crate::Capacity) an [`Error::CapacityExceeded`]
/// reached. Displays as `records` or `bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CapacityLimit {
    /// [`Capacity::max_records`](crate::Capacity::max_records): the most live records.
    Records,
    /// [`Capacity::max_bytes`](crate::Capacity::max_bytes): the most bytes of keys plus
    /// values of live records.
    Bytes,
}

impl fmt::Display for CapacityLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CapacityLimit::Records => "records",
            CapacityLimit::Bytes => "bytes",
        })
    }
}

/// Cuts a key for an error message so that a refused megabyte-long key does not turn
/// into a megabyte-long error.
pub(crate) fn key_for_error(key: &str) -> String {
    const MAX: usize = 128;
    if key.len() <= MAX {
        return key.to_owned();
    }
    let mut end = MAX;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &key[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_refusal_is_told_through_any_depth_of_unavailable() {
        let refusal = || Error::Unavailable {
            node: "redis".into(),
            source: Box::new(Restarted::new("another run_id answers")),
        };
        assert!(refusal().is_restart_refusal());
        // A router names its node around the backend's error.
        let named = Error::Unavailable {
            node: "n1".into(),
            source: Box::new(refusal()),
        };
        assert!(named.is_restart_refusal());
        let plain = Error::Unavailable {
            node: "n1".into(),
            source: "connection refused".into(),
        };
        assert!(!plain.is_restart_refusal());
        let timeout = Error::Timeout {
            op: "get",
            after: Duration::from_secs(1),
        };
        assert!(!timeout.is_restart_refusal());
    }

    #[test]
    fn transient_is_only_unavailable_and_timeout() {
        let timeout = Error::Timeout {
            op: "get",
            after: Duration::from_millis(5),
        };
        assert!(timeout.is_transient());
        let unavailable = Error::Unavailable {
            node: "a".into(),
            source: "refused".into(),
        };
        assert!(unavailable.is_transient());
        let conflict = Error::Conflict {
            key: "k".into(),
            expected: None,
            actual: Some(Version::from_raw(3)),
        };
        assert!(!conflict.is_transient());
        assert!(!Error::invalid_argument("zero ttl").is_transient());
    }

    #[test]
    fn capacity_errors_read_as_the_limit_they_name() {
        let records = Error::CapacityExceeded {
            limit: CapacityLimit::Records,
            max: 1000,
        };
        assert_eq!(
            records.to_string(),
            "capacity exceeded: at most 1000 records"
        );
        let bytes = Error::CapacityExceeded {
            limit: CapacityLimit::Bytes,
            max: 1 << 20,
        };
        assert_eq!(
            bytes.to_string(),
            "capacity exceeded: at most 1048576 bytes"
        );
        assert!(!bytes.is_transient());
    }

    #[test]
    fn long_keys_are_cut_on_a_char_boundary() {
        let key = "é".repeat(200);
        let cut = key_for_error(&key);
        assert!(cut.len() <= 128 + '…'.len_utf8());
        assert!(cut.ends_with('…'));
    }
}
