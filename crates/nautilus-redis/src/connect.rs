//! Connecting: the configuration checked, fred's pool built from it and connected, the
//! scripts loaded and the server's clock read, all before the first command, so that a
//! bad URL, refused credentials or a server that does not answer fail here.

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::{ClientLike, Config, Pool, ReconnectPolicy};
use nautilus_core::{Error, Limits, Result, VersionClock};

use crate::batch::Batcher;
use crate::client::Client;
use crate::clock::ServerClock;
use crate::config::{RECONNECT_MIN_DELAY, RedisConfig, redact};
use crate::error::refused_by_config;
use crate::keys::Namespace;
use crate::registry::{Inner, RedisRegistry};

impl RedisRegistry {
    /// Connects, loads the scripts, and checks the server answers. A configuration
    /// that [`RedisConfig::validate`] refuses, a malformed URL, a host that does not
    /// resolve or a server that does not answer within `connect_timeout` is an error
    /// here, not at the first command.
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        config.validate()?;
        let ns = Namespace::new(&config.namespace)?.with_layout_1(config.read_layout_1);
        let url = redact(&config.url);
        let fred_config = fred_config(&config, &url)?;
        let cluster = fred_config.server.is_clustered();
        if cluster && config.wait_for_replicas > 0 {
            return Err(Error::invalid_argument(
                "waiting for replicas is offered on standalone Redis and Sentinel, not on \
                 Cluster (a write's WAIT would have to reach its key's primary on the same \
                 connection)",
            ));
        }
        let (timeout, connect_timeout) = (config.command_timeout, config.connect_timeout);
        let pool = pool(&config, fred_config, cluster, &url)?;
        connect_pool(&pool, &url, connect_timeout).await?;
        // The replicas get three quarters of the command timeout, so that the `WAIT`
        // answers before the command times out.
        let replicas = (config.wait_for_replicas > 0).then(|| {
            (
                config.wait_for_replicas,
                (timeout * 3 / 4).max(Duration::from_millis(1)),
            )
        });
        let client = Arc::new(Client::new(pool, url, timeout, cluster, replicas));
        client.load_scripts().await?;
        // The process answering, before the first ping: a restart between now and
        // then is a change, and the fence of conditional writes is set from here.
        // Untracked if the server does not tell it; a transient failure is the
        // next ping's to retry.
        let _ = client.identify(false, None).await;
        Client::watch_reconnections(&client);
        let clock = Arc::new(ServerClock::default());
        clock.calibrate(&client).await?;
        ServerClock::keep_calibrated(Arc::downgrade(&clock), Arc::downgrade(&client));
        let single = !cluster;
        let batcher = Batcher::start(
            &client,
            &ns,
            config.coalesce_reads && single,
            config.coalesce_writes && single,
        );
        Ok(RedisRegistry {
            inner: Arc::new(Inner {
                client,
                ns,
                limits: Limits::default()
                    .with_max_key_bytes(config.max_key_bytes)
                    .with_max_value_bytes(config.max_value_bytes),
                tombstone_ms: millis(config.tombstone_ttl),
                clock,
                versions: VersionClock::new(),
                batcher,
                counters: Default::default(),
            }),
        })
    }
}

/// Whole milliseconds (the configuration keeps them within `u64`).
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// fred's configuration from the URL and the TLS files.
fn fred_config(config: &RedisConfig, url: &str) -> Result<Config> {
    let mut fred_config = Config::from_url(&config.url)
        .map_err(|e| Error::invalid_argument(format!("invalid Redis URL {url}: {e}")))?;
    crate::tls::apply(config, &mut fred_config)?;
    Ok(fred_config)
}

/// fred's pool, not yet connected.
fn pool(config: &RedisConfig, fred_config: Config, cluster: bool, url: &str) -> Result<Pool> {
    let (timeout, connect_timeout) = (config.command_timeout, config.connect_timeout);
    let mut builder = fred::types::Builder::from_config(fred_config);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = connect_timeout;
            c.internal_command_timeout = timeout;
            // A command whose connection closes while it is in flight may have run:
            // fred would send it again after reconnecting, and a write sent twice
            // reports a conflict with itself (a put-if-absent, a compare-and-swap). It
            // fails instead, transiently, outcome unknown. Not on Cluster: there fred
            // spends the same attempts on following MOVED and ASK redirections, which
            // a single attempt would fail.
            c.max_command_attempts = if cluster { 3 } else { 1 };
        })
        .with_performance_config(|p| {
            p.default_command_timeout = timeout;
        })
        .set_policy(ReconnectPolicy::new_exponential(
            config.reconnect_max_attempts,
            u32::try_from(millis(RECONNECT_MIN_DELAY)).unwrap_or(u32::MAX),
            u32::try_from(millis(config.reconnect_max_delay)).unwrap_or(u32::MAX),
            2,
        ));
    builder
        .build_pool(config.pool_size)
        .map_err(|e| Error::invalid_argument(format!("Redis configuration {url}: {e}")))
}

/// Connects every connection of the pool within the connect timeout.
async fn connect_pool(pool: &Pool, url: &str, connect_timeout: Duration) -> Result<()> {
    let e = match tokio::time::timeout(connect_timeout, pool.init()).await {
        Ok(Ok(_handle)) => return Ok(()),
        Ok(Err(e)) => e,
        Err(_) => {
            let _ = pool.quit().await;
            return Err(Error::Timeout {
                op: "connect",
                after: connect_timeout,
            });
        }
    };
    let _ = pool.quit().await;
    // Refused credentials or TLS are the configuration's fault: retrying will not
    // help, so they are not `Unavailable`.
    Err(if refused_by_config(&e) {
        Error::invalid_argument(format!(
            "Redis at {url} refused the connection's credentials or TLS: {}",
            e.details()
        ))
    } else {
        Error::Unavailable {
            node: url.to_owned(),
            source: Box::new(e),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_invalid_configuration_is_refused_before_connecting() {
        // Nothing listens on port 1: only the configuration can be refused here.
        for config in [
            RedisConfig::new("redis://127.0.0.1:1").pool_size(0),
            RedisConfig::new("redis://127.0.0.1:1").command_timeout(Duration::ZERO),
            RedisConfig::new("redis://127.0.0.1:1").namespace(""),
            RedisConfig::new("http://127.0.0.1:1"),
        ] {
            match RedisRegistry::connect(config.clone()).await {
                Err(Error::InvalidArgument { .. }) => {}
                other => panic!("{config:?}: {other:?}"),
            }
        }
    }
}
