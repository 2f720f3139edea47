//! Whether the server answers, and which process answers: the ping of health checks
//! (which replaces dead connections), the reading of the server's `run_id` into the
//! client's [`Identity`](crate::identity::Identity) (on connecting, at each ping,
//! after each reconnection of a connection of the pool, after a refused conditional
//! write), and what the registry reads of it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use fred::prelude::{ClientLike, EventInterface};
use nautilus_core::{Error, Result};

use super::{Client, truncated};

impl Client {
    /// A check that the server answers as Redis does: `PONG`, nothing else (a
    /// server that answers `OK` to everything is not healthy).
    ///
    /// Off Cluster, a ping that times out replaces the pool's connections (in a
    /// task, one such reconnection at a time): a connection that went dead without
    /// closing (a half-open TCP connection, a peer that stopped answering) would
    /// otherwise time out every command sent on it for good. Commands in flight on
    /// the old connections fail as `Unavailable` (a command is sent once off
    /// Cluster, never again on the new connection); against a server that is merely
    /// slow or frozen, the new connections wait as the old ones did. On Cluster,
    /// where fred sends a command again after a reconnection, and keeps a
    /// connection per node, this is left to fred.
    ///
    /// A ping dropped before it answered counts as timed out: a caller's own timeout
    /// is often shorter than the command timeout (the router's health check: 200 ms
    /// against 2 s by default), and the connections were then never replaced (found
    /// from outside).
    pub(crate) async fn ping(&self) -> Result<()> {
        /// Replaces the connections when dropped armed: the ping timed out, or its
        /// caller gave up on it first.
        struct Unanswered<'a>(Option<&'a Client>);
        impl Drop for Unanswered<'_> {
            fn drop(&mut self) {
                if let Some(client) = self.0 {
                    client.reconnect();
                }
            }
        }
        let mut unanswered = Unanswered((!self.cluster).then_some(self));
        let reply: String = match self.pool.next().ping(None).await {
            Ok(reply) => reply,
            Err(e) => {
                let e = self.err("ping", e);
                if !matches!(e, Error::Timeout { .. }) {
                    unanswered.0 = None;
                }
                return Err(e);
            }
        };
        unanswered.0 = None;
        if reply != "PONG" {
            return Err(Error::Backend {
                backend: "redis",
                source: format!("PING answered {:?}, not PONG", truncated(&reply)).into(),
            });
        }
        // The process answering: a server restarted (empty, or from an old snapshot)
        // between two pings may never have failed a call.
        match self.identify(false, None).await {
            Ok(()) => {}
            // A server that does not answer fails its check; one that refuses INFO
            // (renamed or forbidden by an ACL) is only not tracked.
            Err(e) if e.is_transient() => return Err(e),
            Err(_) => {}
        }
        Ok(())
    }

    /// Reads which process answers (`INFO server`'s `run_id`) into the client's
    /// [`Identity`](crate::identity::Identity), after a conditional write was refused (`refused`) or not.
    /// Asked on the pool's `connection`-th connection (one that just reconnected:
    /// another may still be waiting out its reconnection delay), or on the next one.
    /// Nothing on Cluster, whose nodes have no one `run_id`: there the client tells
    /// no incarnation and fences nothing.
    pub(crate) async fn identify(&self, refused: bool, connection: Option<usize>) -> Result<()> {
        if self.cluster {
            return Ok(());
        }
        let via = connection
            .and_then(|i| self.pool.clients().get(i))
            .unwrap_or_else(|| self.pool.next());
        let info: Result<String> = via
            .info(Some(fred::types::InfoKind::Server))
            .await
            .map_err(|e| self.err("info", e));
        match &info {
            Ok(text) => self.identity.read(Some(text), refused),
            // Nothing learned: the next reading will tell.
            Err(e) if e.is_transient() => {}
            // INFO refused (renamed, or forbidden by an ACL).
            Err(_) => self.identity.read(None, refused),
        }
        info.map(drop)
    }

    /// Reads which process answers after every reconnection of a connection of the
    /// pool, in a task per connection (off Cluster): a server that restarted is
    /// then a new incarnation within a round trip of the client reconnecting, not
    /// at the next ping. Each task ends with the pool, or with the client.
    pub(crate) fn watch_reconnections(client: &Arc<Client>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if client.cluster {
            return;
        }
        for (index, connection) in client.pool.clients().iter().enumerate() {
            let mut reconnected = connection.reconnect_rx();
            client.identity.announced_on(connection.reconnect_rx());
            let client = Arc::downgrade(client);
            rt.spawn(async move {
                use tokio::sync::broadcast::error::RecvError;
                loop {
                    match reconnected.recv().await {
                        Ok(_) | Err(RecvError::Lagged(_)) => {
                            let Some(client) = client.upgrade() else {
                                return;
                            };
                            // Reads answered from now on wait for this reading.
                            let ticket = client.identity.reconnected(index);
                            // The reads waiting go on after a second try, or their
                            // timeout. Read twice in vain, the process answering is
                            // unknown: the registry tells no incarnation until the
                            // next reading (a ping's), so that a router above trusts
                            // no answer of a process it may not know (it may be a
                            // restart from an old snapshot).
                            let mut read = false;
                            for _ in 0..2 {
                                match client.identify(false, Some(index)).await {
                                    Err(e) if e.is_transient() => {}
                                    _ => {
                                        read = true;
                                        break;
                                    }
                                }
                            }
                            if !read {
                                client.identity.forget();
                            }
                            client.identity.identified_through(ticket);
                        }
                        Err(RecvError::Closed) => return,
                    }
                }
            });
        }
    }

    /// The server process as last read (see [`Identity::incarnation`](crate::identity::Identity::incarnation)).
    pub(crate) fn incarnation(&self) -> Option<u64> {
        self.identity.incarnation()
    }

    /// What a conditional write sends for the server to check (see
    /// [`Identity::fence`](crate::identity::Identity::fence)): `None` before any
    /// `run_id` was read, which on Cluster is never.
    pub(crate) fn fence(&self) -> Option<Arc<str>> {
        self.identity.fence()
    }

    /// Replaces every connection of the pool, unless a replacement is under way.
    fn reconnect(&self) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.reconnecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let (pool, reconnecting) = (self.pool.clone(), Arc::clone(&self.reconnecting));
        // Bounded, so a server that never answers does not keep the pool alive.
        let bound = self.timeout.saturating_mul(10);
        rt.spawn(async move {
            let _ = tokio::time::timeout(bound, pool.force_reconnection()).await;
            reconnecting.store(false, Ordering::Release);
        });
    }
}
