//! Node health: each node is up or down. A node goes down after a run of failed
//! health checks or transient errors (`failure_threshold` in a row) and up again at
//! its first answered check. Calls skip nodes known to be down; every transition is
//! counted, timed and sent to the router's event subscribers.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

/// Whether the router sends calls to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeState {
    /// Answering: calls go to it.
    Up,
    /// Failed its last checks or calls: skipped until it answers a check again.
    Down,
}

/// A change of a node's state, as [`ShardedRegistry::events`](crate::ShardedRegistry::events)
/// sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthEvent {
    /// The node's id.
    pub node: String,
    /// Its new state.
    pub state: NodeState,
    /// When it changed.
    pub at: SystemTime,
    /// Why: the last error for a node going down, "answered" for one coming back.
    pub reason: String,
}

/// One node's health, as [`ShardedRegistry::health`](crate::ShardedRegistry::health)
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeHealth {
    /// The node's id.
    pub node: String,
    /// Up or down.
    pub state: NodeState,
    /// Failures in a row (checks or transient call errors) since it last answered.
    pub consecutive_failures: u32,
    /// Every failure counted since the router started.
    pub failures: u64,
    /// How many times it changed state.
    pub transitions: u64,
    /// When it last changed state (the router's start if never).
    pub since: SystemTime,
    /// Writes taken by stand-ins on its behalf, waiting to be handed back.
    pub pending_handbacks: usize,
    /// It came back from down and no repair has covered it since: it may have come
    /// back empty or from an old snapshot, so with several replicas its answers are
    /// checked against another replica (see the crate docs, "A node that comes
    /// back"). With one replica nothing else can be asked; a repair clears it.
    pub unverified: bool,
    /// Whether the node tells which lifetime of its store answers
    /// ([`Registry::incarnation`](nautilus_core::Registry::incarnation)), as of its
    /// last answered check: only then is a store that restarted between two checks,
    /// without failing a call, seen as back. False for in-process nodes (they cannot
    /// restart behind the router), and for a Redis server that refuses `INFO`.
    pub restarts_tracked: bool,
}

/// How nodes are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HealthConfig {
    /// Time between two checks of a node.
    pub(crate) interval: Duration,
    /// How long a check may take before it counts as failed.
    pub(crate) timeout: Duration,
    /// Failures in a row that mark a node down.
    pub(crate) failure_threshold: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(200),
            failure_threshold: 2,
        }
    }
}

/// A node's live health record, shared by every state the router swaps in.
pub(crate) struct Health {
    down: AtomicBool,
    /// Came back from down, not yet covered by a repair.
    unverified: AtomicBool,
    /// Of an unverified node: it may have lost records (a new process answers, or it
    /// came back without telling which), not merely missed the writes of its outage,
    /// which stand-ins hold.
    lost: AtomicBool,
    /// The incarnation when the node last went down: a return as that same process
    /// kept its records (one seen by a call while it was down did not).
    down_incarnation: AtomicU64,
    /// The node's [`incarnation`](nautilus_core::Registry::incarnation) at the last
    /// answered check (0: none seen).
    incarnation: AtomicU64,
    /// A restart noticed by a call rather than a check (see
    /// [`Health::restart_seen_by_call`]), whose repair the next check starts.
    returned: AtomicBool,
    consecutive: AtomicU32,
    failures: AtomicU64,
    /// When the last call or check failed, in ms after `born` plus one (0: never).
    last_failure: AtomicU64,
    born: std::time::Instant,
    transitions: AtomicU64,
    since: Mutex<SystemTime>,
    threshold: u32,
    events: tokio::sync::broadcast::Sender<HealthEvent>,
}

impl fmt::Debug for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Health")
            .field("down", &self.is_down())
            .field("consecutive", &self.consecutive.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What a report changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    None,
    WentDown,
    CameUp,
}

impl Health {
    pub(crate) fn new(
        threshold: u32,
        events: tokio::sync::broadcast::Sender<HealthEvent>,
    ) -> Arc<Self> {
        Arc::new(Health {
            events,
            down: AtomicBool::new(false),
            unverified: AtomicBool::new(false),
            lost: AtomicBool::new(false),
            down_incarnation: AtomicU64::new(0),
            incarnation: AtomicU64::new(0),
            returned: AtomicBool::new(false),
            consecutive: AtomicU32::new(0),
            failures: AtomicU64::new(0),
            last_failure: AtomicU64::new(0),
            born: std::time::Instant::now(),
            transitions: AtomicU64::new(0),
            since: Mutex::new(SystemTime::now()),
            threshold: threshold.max(1),
        })
    }

    #[inline]
    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// [`Health::is_down`] in the single total order of the write gates (see
    /// [`crate::hints::InFlight`]): a write that registered with this node and then
    /// finds it in one state is seen by any write that finds it in the other
    /// afterwards.
    #[inline]
    pub(crate) fn is_down_ordered(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    /// A call answered. Costs one load on the hot path when nothing failed before.
    #[inline]
    pub(crate) fn call_ok(&self) {
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
    }

    /// A call or check of node `id` failed transiently with `why`: down once the
    /// run reaches the threshold.
    pub(crate) fn failed(&self, id: &str, why: &dyn fmt::Display) -> Transition {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let at = self.age_ms().min(u64::MAX - 1);
        self.last_failure.store(at + 1, Ordering::Relaxed);
        let run = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        if run >= self.threshold && !self.down.swap(true, Ordering::SeqCst) {
            self.down_incarnation
                .store(self.incarnation.load(Ordering::SeqCst), Ordering::SeqCst);
            self.changed(id, NodeState::Down, why.to_string());
            return Transition::WentDown;
        }
        Transition::None
    }

    /// Milliseconds since this node's health was made (saturating).
    fn age_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a call or check failed within the last `window`.
    pub(crate) fn failed_within(&self, window: std::time::Duration) -> bool {
        match self.last_failure.load(Ordering::Relaxed) {
            0 => false,
            at => {
                let window = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
                self.age_ms().saturating_sub(at - 1) <= window
            }
        }
    }

    /// A health check of node `id` answered: up again if it was down. Only checks
    /// bring a node back (calls are not sent to a down node).
    pub(crate) fn check_ok(&self, id: &str) -> Transition {
        self.consecutive.store(0, Ordering::Relaxed);
        if self.down.load(Ordering::SeqCst) {
            // Before it is up: no read may take it for a node that kept its data,
            // nor, until its process is compared (`restarted`), for one that kept
            // what it had.
            self.lost.store(true, Ordering::SeqCst);
            self.unverified.store(true, Ordering::SeqCst);
        }
        if self.down.swap(false, Ordering::SeqCst) {
            self.changed(id, NodeState::Up, "answered".into());
            return Transition::CameUp;
        }
        Transition::None
    }

    /// A check of node `id` answered with the node's `incarnation`: whether it
    /// changed since the last one (the store restarted behind a connection that
    /// never failed). A change counts as the node coming back: unverified, a
    /// transition, an event; unless the check already brought it back (`came_up`),
    /// which is that return.
    pub(crate) fn restarted(&self, id: &str, incarnation: Option<u64>, came_up: bool) -> bool {
        let now = incarnation.filter(|&i| i != 0);
        let to = now.unwrap_or(0);
        let before = self.incarnation.load(Ordering::SeqCst);
        let went_down_as = self.down_incarnation.load(Ordering::SeqCst);
        if came_up && went_down_as != 0 && Some(went_down_as) == now {
            // Back from down as the process that went down: it kept what it had.
            // (Compared with the last one seen, a new process a call saw while the
            // node was down passed for the same: found from outside, its empty
            // answers were served alone while its partner was down.)
            self.lost.store(false, Ordering::SeqCst);
        }
        // A store that told its process and tells none now may be another process
        // (a server restarted with INFO forbidden): a return too.
        if came_up || before == 0 || Some(before) == now {
            self.incarnation.store(to, Ordering::SeqCst);
            return false;
        }
        // Flagged before the new incarnation is published: a call that finds it
        // published already (so sees no change of its own) must find the node
        // unverified. (Published first, a read racing the call that noticed the
        // restart took the new process's answer, an old snapshot's, for the node's
        // own: 1 stale read in 600 across a restart, under CI's load.)
        self.lost.store(true, Ordering::SeqCst);
        self.unverified.store(true, Ordering::SeqCst);
        // The call that moves the incarnation reports the return, once.
        if self
            .incarnation
            .compare_exchange(before, to, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return false;
        }
        let reason = match now {
            Some(_) => "restarted: a new process answers",
            None => "restarted: its process is not told any more",
        };
        self.changed(id, NodeState::Up, reason.into());
        true
    }

    /// A call found the node's store at `incarnation` (its current
    /// [`Registry::incarnation`](nautilus_core::Registry::incarnation)): if that is
    /// not the one the checks last saw, the store restarted since, and the node is a
    /// return from now on, as [`Health::restarted`] makes it, without waiting for the
    /// next check: a conditional write must not be decided on an old snapshot in
    /// between. Two loads when nothing changed.
    pub(crate) fn restart_seen_by_call(&self, id: &str, incarnation: Option<u64>) -> bool {
        // Acquire: a restart published by another call comes with its flags (see
        // `restarted`).
        if incarnation.unwrap_or(0) == self.incarnation.load(Ordering::Acquire) {
            return false;
        }
        let noticed = self.restarted(id, incarnation, false);
        if noticed {
            self.returned.store(true, Ordering::SeqCst);
        }
        noticed
    }

    /// Whether a call noticed a restart since the last time this was asked (the
    /// checker asks, and starts the repair).
    pub(crate) fn take_return(&self) -> bool {
        self.returned.load(Ordering::Relaxed) && self.returned.swap(false, Ordering::SeqCst)
    }

    /// Whether the node's store told its incarnation the last time it was asked.
    #[inline]
    pub(crate) fn is_tracked(&self) -> bool {
        self.incarnation.load(Ordering::Relaxed) != 0
    }

    /// Whether the node came back from down and no repair has covered it since.
    #[inline]
    pub(crate) fn is_unverified(&self) -> bool {
        self.unverified.load(Ordering::Relaxed)
    }

    /// Whether the node is unverified and may have lost records (see
    /// [`Health::is_unverified`]): it restarted, or came back from down without
    /// telling its process. Its answer alone is then no answer.
    #[inline]
    pub(crate) fn may_have_lost(&self) -> bool {
        self.is_unverified() && self.lost.load(Ordering::Relaxed)
    }

    /// How many times the node changed state: a repair clears
    /// [`Health::is_unverified`] only if this did not change while it ran.
    pub(crate) fn transitions(&self) -> u64 {
        self.transitions.load(Ordering::SeqCst)
    }

    /// A repair that started when the node had made `transitions` covered it: it is
    /// verified, unless it went down (or came back) since.
    pub(crate) fn verified(&self, transitions: u64) {
        if self.transitions() == transitions && !self.is_down_ordered() {
            self.unverified.store(false, Ordering::SeqCst);
            self.lost.store(false, Ordering::SeqCst);
        }
    }

    fn changed(&self, id: &str, state: NodeState, reason: String) {
        self.transitions.fetch_add(1, Ordering::Relaxed);
        let at = SystemTime::now();
        *self.since.lock() = at;
        // Nobody listening is fine.
        let _ = self.events.send(HealthEvent {
            node: id.to_owned(),
            state,
            at,
            reason,
        });
    }

    pub(crate) fn report(&self, node: &str, pending_handbacks: usize) -> NodeHealth {
        NodeHealth {
            node: node.to_owned(),
            state: if self.is_down() {
                NodeState::Down
            } else {
                NodeState::Up
            },
            consecutive_failures: self.consecutive.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            transitions: self.transitions.load(Ordering::Relaxed),
            since: *self.since.lock(),
            pending_handbacks,
            unverified: self.is_unverified(),
            restarts_tracked: self.is_tracked(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_after_the_threshold_and_up_at_the_first_answered_check() {
        let (tx, mut rx) = tokio::sync::broadcast::channel(8);
        let h = Health::new(3, tx);
        assert_eq!(h.failed("a", &"refused"), Transition::None);
        assert_eq!(h.failed("a", &"refused"), Transition::None);
        assert!(!h.is_down());
        assert_eq!(h.failed("a", &"refused"), Transition::WentDown);
        assert!(h.is_down());
        assert_eq!(
            h.failed("a", &"refused"),
            Transition::None,
            "one transition per outage"
        );
        assert!(!h.is_unverified());
        assert_eq!(h.check_ok("a"), Transition::CameUp);
        assert!(!h.is_down());
        assert!(
            h.is_unverified(),
            "back from down: unverified until a repair"
        );
        let t = h.transitions();
        h.failed("a", &"x");
        h.failed("a", &"x");
        h.failed("a", &"x");
        h.check_ok("a");
        h.verified(t);
        assert!(h.is_unverified(), "down again since the repair started");
        h.verified(h.transitions());
        assert!(!h.is_unverified());
        let r = h.report("a", 0);
        assert_eq!((r.failures, r.transitions), (7, 4));
        let down = rx.try_recv().map(|e| (e.state, e.reason));
        assert_eq!(down.ok(), Some((NodeState::Down, "refused".to_owned())));
        assert_eq!(rx.try_recv().map(|e| e.state).ok(), Some(NodeState::Up));
    }

    #[test]
    fn a_call_that_meets_a_new_process_makes_a_return_the_next_check_repairs() {
        let (tx, mut rx) = tokio::sync::broadcast::channel(8);
        let h = Health::new(2, tx);
        assert!(
            !h.restart_seen_by_call("a", Some(9)),
            "nothing to compare with"
        );
        assert!(
            !h.restarted("a", Some(9), false),
            "the check sees it as known"
        );
        // A call that sees the same process notices nothing; another, a return.
        assert!(!h.restart_seen_by_call("a", Some(9)));
        assert!(!h.take_return());
        assert!(!h.is_unverified());
        assert!(h.restart_seen_by_call("a", Some(11)));
        assert!(h.is_unverified() && !h.is_down());
        assert!(h.take_return());
        assert!(!h.take_return(), "taken once");
        assert!(
            !h.restarted("a", Some(11), false),
            "the check sees it as known"
        );
        let e = rx.try_recv().unwrap();
        assert_eq!(
            (e.state, e.reason.starts_with("restarted")),
            (NodeState::Up, true)
        );
        assert!(h.report("a", 0).restarts_tracked);
        // A store that stops telling its process may be another one: a return, once.
        h.verified(h.transitions());
        assert!(h.restart_seen_by_call("a", None));
        assert!(h.is_unverified() && h.take_return());
        assert!(!h.report("a", 0).restarts_tracked);
        assert!(!h.restart_seen_by_call("a", None));
        assert!(!h.restarted("a", None, false));
        assert!(
            !h.restarted("a", Some(12), false),
            "tracked again: the first seen"
        );
    }

    #[test]
    fn a_new_incarnation_is_a_return() {
        let (tx, mut rx) = tokio::sync::broadcast::channel(8);
        let h = Health::new(2, tx);
        assert!(!h.restarted("a", None, false));
        assert!(!h.report("a", 0).restarts_tracked);
        assert!(!h.restarted("a", Some(7), false), "the first one seen");
        assert!(h.report("a", 0).restarts_tracked);
        assert!(!h.restarted("a", Some(7), false));
        let t = h.transitions();
        assert!(h.restarted("a", Some(9), false));
        assert!(h.is_unverified() && !h.is_down());
        assert_eq!(
            h.transitions(),
            t + 1,
            "a repair under way cannot verify it"
        );
        let e = rx.try_recv().unwrap();
        assert_eq!(
            (e.state, e.reason.starts_with("restarted")),
            (NodeState::Up, true)
        );
    }

    #[test]
    fn only_a_return_that_may_have_lost_records_is_suspect() {
        let (tx, _rx) = tokio::sync::broadcast::channel(8);
        let down = |h: &Health| {
            h.failed("a", &"x");
            h.failed("a", &"x");
        };
        // Back from down as the same process: unverified, but it kept its records.
        let h = Health::new(2, tx.clone());
        assert!(!h.restarted("a", Some(7), false));
        down(&h);
        assert_eq!(h.check_ok("a"), Transition::CameUp);
        assert!(h.may_have_lost(), "suspect until its process is compared");
        assert!(!h.restarted("a", Some(7), true));
        assert!(h.is_unverified() && !h.may_have_lost());
        // As another process, or telling none: suspect until a repair.
        for after in [Some(8), None] {
            let h = Health::new(2, tx.clone());
            h.restarted("a", Some(7), false);
            down(&h);
            h.check_ok("a");
            h.restarted("a", after, true);
            assert!(h.may_have_lost(), "{after:?}");
            h.verified(h.transitions());
            assert!(!h.is_unverified() && !h.may_have_lost());
        }
        // A new process seen by a call while it was down, then back as that one.
        let h = Health::new(2, tx.clone());
        h.restarted("a", Some(7), false);
        down(&h);
        assert!(h.restart_seen_by_call("a", Some(8)));
        h.check_ok("a");
        h.restarted("a", Some(8), true);
        assert!(h.may_have_lost(), "not the process that went down");
        // Untracked (an in-process node behind a link): it cannot tell.
        let h = Health::new(2, tx.clone());
        down(&h);
        h.check_ok("a");
        h.restarted("a", None, true);
        assert!(h.may_have_lost());
        // Restarted between two checks: suspect at once.
        let h = Health::new(2, tx);
        h.restarted("a", Some(7), false);
        assert!(h.restart_seen_by_call("a", Some(9)));
        assert!(h.may_have_lost());
    }

    #[test]
    fn an_answered_call_breaks_the_run() {
        let (tx, _rx) = tokio::sync::broadcast::channel(8);
        let h = Health::new(2, tx);
        h.failed("a", &"x");
        h.call_ok();
        assert_eq!(h.failed("a", &"x"), Transition::None);
        assert!(!h.is_down());
    }
}
