//! The background health checker: each interval it pings every node (bounded by the
//! check timeout) and marks nodes up or down; to each node that is up with writes
//! stand-ins took for it, it hands them back in a task of its own (one per node at a
//! time), so a long backlog or a slow node never delays the checks. A round in which
//! a node failed without going down is followed at once by another, so that a dead
//! node is confirmed in a few timeouts rather than a few intervals: a node that stops
//! answering is down within one interval plus `failure_threshold` timeouts of its
//! death (with the defaults, 500 ms + 2 × 200 ms, under two intervals).

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Weak};

use futures_util::FutureExt;
use futures_util::future::join_all;
use nautilus_core::Error;

use crate::router::{Inner, ShardedRegistry};
use crate::state::Node;

/// Hand-backs per node per round, so that a long outage's backlog never delays the
/// next round of checks by much.
const HANDBACKS_PER_ROUND: usize = 4096;

/// Starts the checker; it stops once the router is dropped.
pub(crate) fn spawn(rt: &tokio::runtime::Handle, router: &ShardedRegistry) {
    let weak: Weak<Inner> = Arc::downgrade(&router.inner);
    let interval = router.inner.config.health.interval;
    rt.spawn(async move {
        let mut recheck = false;
        loop {
            if recheck {
                // Another round at once, but never a busy loop.
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(interval).await;
            }
            let Some(inner) = weak.upgrade() else { return };
            // A node that panics (in a hand-back's import, say) must not end the
            // checking of every node: the round is over, the next one comes.
            recheck = AssertUnwindSafe(round(&ShardedRegistry { inner }, Handbacks::Spawn))
                .catch_unwind()
                .await
                .unwrap_or(true);
        }
    });
}

/// How a round hands back what stand-ins hold for the nodes that are up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handbacks {
    /// Before the round ends (a check run by hand).
    Wait,
    /// In a task of their own per node, one at a time, so that a long backlog or a
    /// slow node never delays the next round's checks of every node.
    Spawn,
}

/// One round: every node checked at once, then hand-backs to the nodes that are up.
/// Whether a check failed and left its node up (worth checking again at once: the
/// failures in a row that mark it down take no extra interval each).
pub(crate) async fn round(router: &ShardedRegistry, handbacks: Handbacks) -> bool {
    let state = router.inner.state.load_full();
    let timeout = router.inner.config.health.timeout;
    // Without a timer (a runtime built without one, calling `check_health`) a ping
    // is bounded only by the node's own timeouts, instead of panicking.
    let timers = router.inner.monitor.timers.enabled();
    let failed = join_all(state.nodes.iter().map(|n| async move {
        let ping = AssertUnwindSafe(n.registry.ping()).catch_unwind();
        let answer = if timers {
            tokio::time::timeout(timeout, ping).await
        } else {
            Ok(ping.await)
        };
        let answer = match answer {
            Ok(Ok(answer)) => Ok(answer),
            // A ping that panics is a failed check, not the end of the checker.
            Ok(Err(_)) => Ok(Err(Error::Backend {
                backend: "router",
                source: format!("node {} panicked when pinged", n.id).into(),
            })),
            Err(elapsed) => Err(elapsed),
        };
        let failed = match answer {
            Ok(Ok(())) => {
                // A node coming back gets its hand-backs below, in this same round;
                // reads merge the pending ones meanwhile.
                let came_up = n.health.check_ok(&n.id) == crate::health::Transition::CameUp;
                // A store that restarted between two checks (empty, or from an old
                // snapshot) behind a connection that never failed: a return too.
                let restarted = n.health.restarted(&n.id, n.registry.incarnation(), came_up);
                // Or a call noticed the new process before this check did.
                if came_up || restarted || n.health.take_return() {
                    router.repair_returned();
                }
                false
            }
            Ok(Err(e)) => {
                n.health.failed(&n.id, &e);
                true
            }
            Err(_) => {
                let e = Error::Timeout {
                    op: "health check",
                    after: timeout,
                };
                n.health.failed(&n.id, &e);
                true
            }
        };
        if n.is_up() && n.hints.len() > 0 {
            match handbacks {
                Handbacks::Wait => {
                    router.hand_back(n, HANDBACKS_PER_ROUND).await;
                }
                Handbacks::Spawn if n.hints.claim() => {
                    /// Releases the claim however the task ends (a node may panic).
                    struct Release(Arc<Node>);
                    impl Drop for Release {
                        fn drop(&mut self) {
                            self.0.hints.release();
                        }
                    }
                    let claim = Release(Arc::clone(n));
                    let router = router.clone();
                    tokio::spawn(async move {
                        router.hand_back(&claim.0, HANDBACKS_PER_ROUND).await;
                    });
                }
                Handbacks::Spawn => {}
            }
        }
        failed && n.is_up()
    }))
    .await;
    failed.into_iter().any(|f| f)
}
