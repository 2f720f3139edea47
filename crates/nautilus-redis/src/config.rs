//! Connection settings: one name per setting, the same as a field, a builder setter
//! and a serde key; checked in one place ([`RedisConfig::validate`]); passwords hidden
//! from `Debug`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::keys::Namespace;

/// How to reach Redis and how to behave when it misbehaves.
///
/// The URL picks the deployment: `redis://` (standalone), `rediss://` (TLS, feature
/// `tls`), `redis-cluster://host:port?node=host2:port2` (Redis Cluster), or
/// `redis-sentinel://host:port/0?sentinelServiceName=name` (Sentinel). Credentials go
/// in the URL (`redis://user:pass@host`, or `redis://:pass@host` for `requirepass`)
/// and are passed to fred as-is.
///
/// With `rediss://` the server's certificate is checked against the system's roots,
/// or against `tls_ca_file` for a private CA; `tls_cert_file` and `tls_key_file` give
/// the client certificate a server with `tls-auth-clients yes` asks for.
///
/// Each field has a setter of the same name, and the same name in the serde form,
/// where durations are written as humantime text (`"2s"`, `"500ms"`, `"1m 30s"`) and
/// an unknown key is an error (so a misspelt or outdated key is not silently
/// ignored). Durations count in whole milliseconds. Nothing is checked by the setters:
/// [`RedisConfig::validate`] says what is wrong, and
/// [`RedisRegistry::connect`](crate::RedisRegistry::connect) refuses what it refuses.
///
/// ```
/// use std::time::Duration;
/// use nautilus_redis::RedisConfig;
///
/// let config: RedisConfig = serde_json::from_str(
///     r#"{ "url": "redis://cache:6379", "command_timeout": "500ms", "wait_for_replicas": 1 }"#,
/// )?;
/// let built = RedisConfig::new("redis://cache:6379")
///     .command_timeout(Duration::from_millis(500))
///     .wait_for_replicas(1);
/// assert_eq!(config.command_timeout, built.command_timeout);
/// assert!(RedisConfig::new("redis://cache:6379").pool_size(0).validate().is_err());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisConfig {
    /// Where Redis is.
    pub url: String,
    /// Prefix of every key, so several registries share one Redis safely. Must not
    /// be empty or contain `{` or `}` (Cluster hash tags) or `:` (a namespace `app:x`
    /// would share the keys `x:...` of a namespace `app`).
    pub namespace: String,
    /// Connections in the pool (at least 1).
    pub pool_size: usize,
    /// The longest a command may take (at least 1 ms).
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// The longest the first connection may take (at least 1 ms).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Reconnect attempts after a connection drops (0: forever).
    pub reconnect_max_attempts: u32,
    /// The longest wait between reconnect attempts (at least the first wait, 50 ms;
    /// at most `u32::MAX` ms).
    #[serde(with = "humantime_serde")]
    pub reconnect_max_delay: Duration,
    /// How long a delete's tombstone lives (at least 2 ms): it keeps versions
    /// increasing when a record is written again right after its delete.
    #[serde(with = "humantime_serde")]
    pub tombstone_ttl: Duration,
    /// Longest key, in bytes.
    pub max_key_bytes: usize,
    /// Largest value, in bytes (refused before it is sent).
    pub max_value_bytes: usize,
    /// PEM file of the certificate authorities to trust for `rediss://` instead of
    /// the system's (feature `tls`).
    pub tls_ca_file: Option<PathBuf>,
    /// PEM file of the client certificate chain, for servers that verify clients
    /// (feature `tls`; needs `tls_key_file`).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key (feature `tls`).
    pub tls_key_file: Option<PathBuf>,
    /// Batches concurrent gets into `MGET` on a single server (default on; ignored on
    /// Cluster). A get is sent on its own while fewer than two are in flight; beyond
    /// that, gets queue and go out together, one `MGET` per batch, two batches at a
    /// time. Each get still answers for its own key, within the command timeout.
    pub coalesce_reads: bool,
    /// Batches concurrent puts and imports into one call of the multi-record write
    /// script on a single server (default on; ignored on Cluster). As for reads, a
    /// write is sent on its own while fewer than two are in flight; beyond that,
    /// writes of values up to 16 KiB queue and go out together. Each put is still checked and versioned on
    /// its own, in the order it joined the batch, and answers for itself within the
    /// command timeout.
    pub coalesce_writes: bool,
    /// Replicas every record write must reach before it is acknowledged (default 0:
    /// none). After each put, delete, TTL change, import or `clear` (each batch of
    /// them) the registry sends `WAIT` on the same connection; if fewer replicas
    /// acknowledge within three quarters of the command timeout, the write fails with
    /// [`Error::Timeout`](nautilus_core::Error::Timeout): it is applied on the primary
    /// but not known to be replicated. Standalone Redis and Sentinel only. With
    /// Sentinel, this is what keeps an acknowledged write through a failover.
    pub wait_for_replicas: u32,
    /// Reads records of layout 1, the layout written before records carried their
    /// value's length and check (default off: they are `Corrupt`). Layout 1 carries
    /// no check, so a damaged layout-1 record reads as a record, wrong value and all,
    /// and a layout-2 record whose layout byte and one more byte were changed reads
    /// as a layout-1 record holding a value never written. Turn it on only for a
    /// namespace written before layout 2, until its records are written again (see
    /// the crate's README, "How records are stored").
    pub read_layout_1: bool,
}

impl Default for RedisConfig {
    fn default() -> Self {
        let limits = nautilus_core::Limits::default();
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            namespace: "nautilus".into(),
            pool_size: 4,
            command_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            reconnect_max_attempts: 0,
            reconnect_max_delay: Duration::from_secs(2),
            tombstone_ttl: Duration::from_secs(1),
            max_key_bytes: limits.max_key_bytes,
            max_value_bytes: limits.max_value_bytes,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            coalesce_reads: true,
            coalesce_writes: true,
            wait_for_replicas: 0,
            read_layout_1: false,
        }
    }
}

/// What is wrong with a [`RedisConfig`]. [`RedisRegistry::connect`](crate::RedisRegistry::connect)
/// refuses it as [`Error::InvalidArgument`](nautilus_core::Error::InvalidArgument),
/// with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The URL is not of a scheme fred takes.
    #[error("invalid Redis URL {url}: expected one of {expected}")]
    Url {
        /// The URL, without its password.
        url: String,
        /// The schemes taken.
        expected: String,
    },
    /// The namespace is empty, holds a Cluster hash tag, or holds a `:` (a namespace
    /// `app:x` would hold the keys `x:...` of a namespace `app`, and `app`'s scans,
    /// counts, deletes and `clear` would reach it).
    #[error(
        "a Redis namespace must be non-empty and free of '{{', '}}' and ':', not {namespace:?}"
    )]
    Namespace {
        /// The namespace refused.
        namespace: String,
    },
    /// A duration outside what its field accepts.
    #[error("{field} must be between {min:?} and {max:?}, not {value:?}")]
    Duration {
        /// The field (and setter, and serde key).
        field: &'static str,
        /// What it was set to.
        value: Duration,
        /// The shortest it accepts.
        min: Duration,
        /// The longest it accepts.
        max: Duration,
    },
    /// A count below what its field accepts.
    #[error("{field} must be at least {min}, not {value}")]
    Count {
        /// The field (and setter, and serde key).
        field: &'static str,
        /// What it was set to.
        value: u64,
        /// The least it accepts.
        min: u64,
    },
}

impl From<ConfigError> for nautilus_core::Error {
    fn from(e: ConfigError) -> Self {
        nautilus_core::Error::invalid_argument(e.to_string())
    }
}

/// The URL schemes fred takes.
const SCHEMES: [&str; 6] = [
    "redis",
    "rediss",
    "redis-cluster",
    "rediss-cluster",
    "redis-sentinel",
    "rediss-sentinel",
];

/// The first wait between reconnect attempts (fred's exponential backoff starts there).
pub(crate) const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);

macro_rules! setters {
    ($($(#[$doc:meta])* $field:ident: $ty:ty,)*) => {$(
        $(#[$doc])*
        #[must_use]
        pub fn $field(mut self, $field: $ty) -> Self {
            self.$field = $field;
            self
        }
    )*};
}

impl RedisConfig {
    /// Defaults with this URL.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            ..RedisConfig::default()
        }
    }

    /// Sets the namespace.
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    setters! {
        /// Sets the pool size.
        pool_size: usize,
        /// Sets the command timeout.
        command_timeout: Duration,
        /// Sets the first connection's timeout.
        connect_timeout: Duration,
        /// Sets the reconnect attempts after a connection drops (0: forever).
        reconnect_max_attempts: u32,
        /// Sets the longest wait between reconnect attempts.
        reconnect_max_delay: Duration,
        /// Sets how long a delete's tombstone lives.
        tombstone_ttl: Duration,
        /// Sets the longest key accepted.
        max_key_bytes: usize,
        /// Sets the largest value accepted.
        max_value_bytes: usize,
        /// Turns the batching of concurrent gets into `MGET` on or off (see
        /// [`RedisConfig::coalesce_reads`](#structfield.coalesce_reads)).
        coalesce_reads: bool,
        /// Turns the batching of concurrent puts into one script call on or off (see
        /// [`RedisConfig::coalesce_writes`](#structfield.coalesce_writes)).
        coalesce_writes: bool,
        /// Makes every write wait for this many replicas before it is acknowledged
        /// (see [`RedisConfig::wait_for_replicas`](#structfield.wait_for_replicas)).
        wait_for_replicas: u32,
        /// Reads records of layout 1 as records (see
        /// [`RedisConfig::read_layout_1`](#structfield.read_layout_1)).
        read_layout_1: bool,
    }

    /// Trusts the certificate authorities in this PEM file for `rediss://`.
    #[must_use]
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca_file = Some(path.into());
        self
    }

    /// Presents this client certificate chain (PEM) to the server; it needs
    /// [`RedisConfig::tls_key_file`].
    #[must_use]
    pub fn tls_cert_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_cert_file = Some(path.into());
        self
    }

    /// The private key (PEM) of [`RedisConfig::tls_cert_file`].
    #[must_use]
    pub fn tls_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_key_file = Some(path.into());
        self
    }

    /// Presents this client certificate (PEM chain and key) to the server: both
    /// [`RedisConfig::tls_cert_file`] and [`RedisConfig::tls_key_file`].
    #[must_use]
    pub fn tls_client_cert(self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls_cert_file(cert).tls_key_file(key)
    }

    /// Checks every setting that can be checked without connecting: the URL's scheme,
    /// the namespace, the pool size and the durations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.url.split_once("://") {
            Some((scheme, _)) if SCHEMES.contains(&scheme) => {}
            _ => {
                return Err(ConfigError::Url {
                    url: redact(&self.url),
                    expected: format!("{}://", SCHEMES.join("://, ")),
                });
            }
        }
        Namespace::new(&self.namespace)?;
        if self.pool_size == 0 {
            return Err(ConfigError::Count {
                field: "pool_size",
                value: 0,
                min: 1,
            });
        }
        let ms = Duration::from_millis;
        let u32_ms = ms(u64::from(u32::MAX));
        for (field, value, min, max) in [
            (
                "command_timeout",
                self.command_timeout,
                ms(1),
                Duration::MAX,
            ),
            (
                "connect_timeout",
                self.connect_timeout,
                ms(1),
                Duration::MAX,
            ),
            (
                "reconnect_max_delay",
                self.reconnect_max_delay,
                RECONNECT_MIN_DELAY,
                u32_ms,
            ),
            ("tombstone_ttl", self.tombstone_ttl, ms(2), ms(1 << 53)),
        ] {
            if value < min || value > max {
                return Err(ConfigError::Duration {
                    field,
                    value,
                    min,
                    max,
                });
            }
        }
        Ok(())
    }
}

/// The URL with any password replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact(&self.url))
            .field("namespace", &self.namespace)
            .field("pool_size", &self.pool_size)
            .field("command_timeout", &self.command_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("reconnect_max_attempts", &self.reconnect_max_attempts)
            .field("reconnect_max_delay", &self.reconnect_max_delay)
            .field("tombstone_ttl", &self.tombstone_ttl)
            .field("max_key_bytes", &self.max_key_bytes)
            .field("max_value_bytes", &self.max_value_bytes)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("coalesce_reads", &self.coalesce_reads)
            .field("coalesce_writes", &self.coalesce_writes)
            .field("wait_for_replicas", &self.wait_for_replicas)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_serde_form_uses_the_builders_names() {
        let built = RedisConfig::new("redis-sentinel://s:26379/0?sentinelServiceName=m")
            .namespace("app")
            .pool_size(2)
            .command_timeout(Duration::from_millis(750))
            .connect_timeout(Duration::from_secs(3))
            .reconnect_max_attempts(5)
            .reconnect_max_delay(Duration::from_secs(1))
            .tombstone_ttl(Duration::from_millis(1500))
            .wait_for_replicas(1)
            .coalesce_writes(false);
        let json = serde_json::to_value(&built).unwrap();
        assert_eq!(json["command_timeout"], "750ms");
        assert_eq!(json["tombstone_ttl"], "1s 500ms");
        assert_eq!(json["wait_for_replicas"], 1);
        let read: RedisConfig = serde_json::from_value(json).unwrap();
        assert_eq!(read, built);
        let partial: RedisConfig =
            serde_json::from_str(r#"{ "connect_timeout": "1m 30s" }"#).unwrap();
        assert_eq!(partial.connect_timeout, Duration::from_secs(90));
        assert_eq!(
            partial.command_timeout,
            RedisConfig::default().command_timeout
        );
        // A key of the old form, or a misspelt one, is not silently ignored.
        for stale in [
            r#"{ "command_timeout_ms": 500 }"#,
            r#"{ "wait_replicas": 1 }"#,
        ] {
            assert!(
                serde_json::from_str::<RedisConfig>(stale).is_err(),
                "{stale}"
            );
        }
        assert!(serde_json::from_str::<RedisConfig>(r#"{ "command_timeout": 500 }"#).is_err());
    }

    #[test]
    fn invalid_values_are_refused_by_name_not_raised() {
        let ok = RedisConfig::default();
        assert_eq!(ok.validate(), Ok(()));
        let field = |c: RedisConfig| match c.validate() {
            Err(ConfigError::Duration { field, .. } | ConfigError::Count { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(ok.clone().pool_size(0)), "pool_size");
        assert_eq!(
            field(ok.clone().command_timeout(Duration::ZERO)),
            "command_timeout"
        );
        assert_eq!(
            field(ok.clone().connect_timeout(Duration::from_micros(999))),
            "connect_timeout"
        );
        assert_eq!(
            field(ok.clone().reconnect_max_delay(Duration::from_millis(49))),
            "reconnect_max_delay"
        );
        assert_eq!(
            field(ok.clone().reconnect_max_delay(Duration::from_secs(1 << 32))),
            "reconnect_max_delay"
        );
        assert_eq!(
            field(ok.clone().tombstone_ttl(Duration::from_millis(1))),
            "tombstone_ttl"
        );
        assert!(matches!(
            RedisConfig::new("http://u:pw@h").validate(),
            Err(ConfigError::Url { url, .. }) if !url.contains("pw")
        ));
        for refused in ["a{b}", "", "app:x"] {
            assert!(
                matches!(
                    ok.clone().namespace(refused).validate(),
                    Err(ConfigError::Namespace { .. })
                ),
                "{refused:?}"
            );
        }
        let core: nautilus_core::Error = ConfigError::Count {
            field: "pool_size",
            value: 0,
            min: 1,
        }
        .into();
        assert!(
            matches!(core, nautilus_core::Error::InvalidArgument { reason } if reason.contains("pool_size"))
        );
    }

    #[test]
    fn debug_hides_the_password() {
        let c = RedisConfig::new("redis://app:s3cret@cache.internal:6379/0");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("app:***@cache.internal"), "{shown}");
    }
}
