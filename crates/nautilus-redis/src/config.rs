//! Connection settings: serde-friendly, with passwords hidden from `Debug`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct RedisConfig {
    /// Where Redis is.
    pub url: String,
    /// Prefix of every key, so several registries share one Redis safely. Must not
    /// be empty or contain `{` or `}` (Cluster hash tags).
    pub namespace: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// The longest a command may take, in milliseconds.
    pub command_timeout_ms: u64,
    /// The longest the first connection may take, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Reconnect attempts after a connection drops (0: forever).
    pub reconnect_max_attempts: u32,
    /// The longest wait between reconnect attempts, in milliseconds.
    pub reconnect_max_delay_ms: u32,
    /// How long a delete's tombstone lives, in milliseconds (it keeps versions
    /// increasing when a record is written again right after its delete).
    pub tombstone_ms: u64,
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
    /// Batches concurrent puts into one call of the multi-record put script on a
    /// single server (default on; ignored on Cluster). As for reads, a put is sent on
    /// its own while fewer than two are in flight; beyond that, puts of values up to
    /// 16 KiB queue and go out together. Each put is still checked and versioned on
    /// its own, in the order it joined the batch, and answers for itself within the
    /// command timeout.
    pub coalesce_writes: bool,
    /// Replicas every record write must reach before it is acknowledged (default 0:
    /// none). After each put, delete, TTL change, import or `clear` (each batch of
    /// them) the registry sends `WAIT` on the same connection; if fewer replicas acknowledge within three quarters of the command
    /// timeout, the write fails with [`Error::Timeout`](nautilus_core::Error::Timeout):
    /// it is applied on the primary but not known to be replicated. Standalone Redis
    /// and Sentinel only.
    pub wait_replicas: u32,
}

impl Default for RedisConfig {
    fn default() -> Self {
        let limits = nautilus_core::Limits::default();
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            namespace: "nautilus".into(),
            pool_size: 4,
            command_timeout_ms: 2_000,
            connect_timeout_ms: 2_000,
            reconnect_max_attempts: 0,
            reconnect_max_delay_ms: 2_000,
            tombstone_ms: 1_000,
            max_key_bytes: limits.max_key_bytes,
            max_value_bytes: limits.max_value_bytes,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            coalesce_reads: true,
            coalesce_writes: true,
            wait_replicas: 0,
        }
    }
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

    /// Sets the command timeout.
    #[must_use]
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Sets the first connection's timeout.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Sets the pool size.
    #[must_use]
    pub fn pool_size(mut self, n: usize) -> Self {
        self.pool_size = n.max(1);
        self
    }

    /// Turns the batching of concurrent gets into `MGET` on or off (see
    /// [`RedisConfig::coalesce_reads`](#structfield.coalesce_reads)).
    #[must_use]
    pub fn coalesce_reads(mut self, on: bool) -> Self {
        self.coalesce_reads = on;
        self
    }

    /// Makes every write wait for `n` replicas before it is acknowledged (see
    /// [`RedisConfig::wait_replicas`](#structfield.wait_replicas)). With Sentinel,
    /// this is what keeps an acknowledged write through a failover.
    #[must_use]
    pub fn wait_for_replicas(mut self, n: u32) -> Self {
        self.wait_replicas = n;
        self
    }

    /// Turns the batching of concurrent puts into one script call on or off (see
    /// [`RedisConfig::coalesce_writes`](#structfield.coalesce_writes)).
    #[must_use]
    pub fn coalesce_writes(mut self, on: bool) -> Self {
        self.coalesce_writes = on;
        self
    }

    /// Trusts the certificate authorities in this PEM file for `rediss://`.
    #[must_use]
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca_file = Some(path.into());
        self
    }

    /// Presents this client certificate (PEM chain and key) to the server.
    #[must_use]
    pub fn tls_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls_cert_file = Some(cert.into());
        self.tls_key_file = Some(key.into());
        self
    }

    /// Sets the largest value accepted.
    #[must_use]
    pub fn max_value_bytes(mut self, n: usize) -> Self {
        self.max_value_bytes = n;
        self
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
            .field("command_timeout_ms", &self.command_timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("reconnect_max_attempts", &self.reconnect_max_attempts)
            .field("tombstone_ms", &self.tombstone_ms)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("coalesce_reads", &self.coalesce_reads)
            .field("coalesce_writes", &self.coalesce_writes)
            .field("wait_replicas", &self.wait_replicas)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password() {
        let c = RedisConfig::new("redis://app:s3cret@cache.internal:6379/0");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("app:***@cache.internal"), "{shown}");
    }
}
