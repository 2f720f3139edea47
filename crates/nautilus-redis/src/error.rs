//! Error mapping: fred's errors become core's here, in one mapper, so fred's type never
//! leaves the crate; and the few error texts of Redis and fred that decide anything are
//! recognised here only.

use std::time::Duration;

use fred::prelude::{Error as FredError, ErrorKind};
use nautilus_core::Error;

pub(crate) const BACKEND: &str = "redis";

/// What an error happened to: enough to word core's error.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    /// The server, as the registry names it (URL without password).
    pub(crate) node: &'a str,
    /// The operation, for timeouts.
    pub(crate) op: &'static str,
    /// The command timeout.
    pub(crate) timeout: Duration,
    /// The record read, if the command read one: a key of another Redis type under
    /// the namespace is then a corrupt record of that key.
    pub(crate) key: Option<&'a str>,
}

/// The one mapping of a fred error to core's.
pub(crate) fn map(cx: Context<'_>, e: FredError) -> Error {
    if let Some(key) = cx.key
        && is_wrong_type(&e)
    {
        return wrong_type(key);
    }
    match e.kind() {
        ErrorKind::Timeout => Error::Timeout {
            op: cx.op,
            after: cx.timeout,
        },
        ErrorKind::IO | ErrorKind::Canceled | ErrorKind::Routing | ErrorKind::Cluster => {
            unavailable(cx.node, e)
        }
        // fred reports a command it had no connection for (mid-reconnect), or one
        // whose connection closed while it was in flight, as unknown, in these words.
        ErrorKind::Unknown
            if e.details().starts_with("Failed to route command")
                || e.details().starts_with("Too many failed write attempts") =>
        {
            unavailable(cx.node, e)
        }
        _ => Error::Backend {
            backend: BACKEND,
            source: Box::new(e),
        },
    }
}

fn unavailable(node: &str, e: FredError) -> Error {
    Error::Unavailable {
        node: node.to_owned(),
        source: Box::new(e),
    }
}

/// A key of another Redis type under the namespace.
pub(crate) fn wrong_type(key: &str) -> Error {
    Error::corrupt(key, "holds a Redis type other than a string")
}

/// Redis refused a command because its key holds another type.
pub(crate) fn is_wrong_type(e: &FredError) -> bool {
    e.details().starts_with("WRONGTYPE")
}

/// Redis does not have the script (a restart or failover emptied its cache).
pub(crate) fn is_no_script(e: &FredError) -> bool {
    e.details().starts_with("NOSCRIPT")
}

/// An answer of Redis this crate cannot read.
pub(crate) fn bad_reply(what: impl Into<String>) -> Error {
    Error::Backend {
        backend: BACKEND,
        source: what.into().into(),
    }
}

/// The same, as fred's error, for answers that travel as fred's results.
pub(crate) fn fred_bad_reply(what: impl Into<String>) -> FredError {
    FredError::new(ErrorKind::Unknown, what.into())
}

/// Whether the server refused the connection's credentials or its TLS handshake
/// failed: the configuration's fault, which retrying will not mend.
pub(crate) fn refused_by_config(e: &FredError) -> bool {
    #[cfg(feature = "tls")]
    {
        // rustls's verdicts reach fred as IO errors; their text is all there is.
        let details = e.details();
        if matches!(e.kind(), ErrorKind::Tls)
            || [
                "InvalidCertificate",
                "AlertReceived",
                "received fatal alert",
            ]
            .iter()
            .any(|m| details.contains(m))
        {
            return true;
        }
    }
    matches!(e.kind(), ErrorKind::Auth)
        || ["WRONGPASS", "NOAUTH", "NOPERM"]
            .iter()
            .any(|code| e.details().starts_with(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx(key: Option<&str>) -> Context<'_> {
        Context {
            node: "redis://127.0.0.1:1",
            op: "get",
            timeout: Duration::from_millis(5),
            key,
        }
    }

    #[test]
    fn fred_errors_map_to_what_a_caller_acts_on() {
        let timeout = map(cx(None), FredError::new(ErrorKind::Timeout, "slow"));
        assert!(matches!(timeout, Error::Timeout { op: "get", .. }));
        for kind in [ErrorKind::IO, ErrorKind::Canceled, ErrorKind::Routing] {
            let e = map(cx(None), FredError::new(kind, "gone"));
            assert!(matches!(e, Error::Unavailable { .. }) && e.is_transient());
        }
        let unrouted = FredError::new(ErrorKind::Unknown, "Failed to route command.");
        assert!(map(cx(None), unrouted).is_transient());
        let wrong = || FredError::new(ErrorKind::InvalidArgument, "WRONGTYPE Operation");
        assert!(matches!(map(cx(Some("k")), wrong()), Error::Corrupt { key, .. } if key == "k"));
        assert!(matches!(map(cx(None), wrong()), Error::Backend { .. }));
        assert!(refused_by_config(&FredError::new(
            ErrorKind::Unknown,
            "WRONGPASS invalid username-password pair"
        )));
        assert!(!refused_by_config(&FredError::new(
            ErrorKind::IO,
            "refused"
        )));
    }
}
