//! Which server process answers: the `run_id` of `INFO server`, as the client reads
//! it (on connecting, after each reconnection, at each ping, after a refused
//! conditional write), kept twice: hashed, as the registry's
//! [`incarnation`](nautilus_core::Registry::incarnation), which follows every reading;
//! and as the fence of conditional writes (see [`crate::scripts`]), which moves only on
//! a refusal. Beside it, the reconnections whose process is being read: a read answered
//! after one of them waits for that reading, so that the registry's incarnation tells
//! the new process before the answer it gave is handed back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use fred::prelude::Server;
use tokio::sync::Notify;
use tokio::sync::broadcast::Receiver;

/// How long a `run_id` is (Redis's `CONFIG_RUN_ID_SIZE`).
const RUN_ID_LEN: usize = 40;

/// The server process as the client last read it.
#[derive(Debug, Default)]
pub(crate) struct Identity {
    /// A hash of the last `run_id` read (0: none, or the server does not tell it).
    seen: AtomicU64,
    /// The `run_id` conditional writes are fenced with: the first one read, then the
    /// one a refusal found. Never moved by a ping or a reconnection, so that a
    /// restart refuses the first conditional write after it even when the client
    /// learned of it first: the refusal is how a router above hears of it in time,
    /// on that very write.
    fence: Mutex<Option<Arc<str>>>,
    /// Reconnections of the pool's connections seen so far.
    reconnections: AtomicU64,
    /// How many of them were followed by a reading of `INFO server` (or gave up on
    /// one): every answer from then on is from the process the incarnation tells.
    identified: AtomicU64,
    /// Woken when `identified` moves.
    settled: Notify,
    /// One receiver of each connection's reconnection announcements, beside the
    /// watcher's own, that only the watcher drains, after counting the
    /// reconnection: the client announces a reconnection before it sends what it
    /// queued, so a read answered after one finds it here or counted, whether or not
    /// the watcher has run yet.
    announced: RwLock<Vec<Receiver<Server>>>,
}

impl Identity {
    /// Takes in a reading of `INFO server` (`None`: the server refused INFO), made
    /// after a conditional write was refused (`refused`) or not. A server that tells
    /// no `run_id` is untracked from then on (no incarnation); its fence goes only
    /// with a refusal, so that the first conditional write after such a restart is
    /// refused too.
    pub(crate) fn read(&self, info: Option<&str>, refused: bool) {
        let id = info.and_then(run_id);
        let mut fence = self.fence.lock().unwrap_or_else(PoisonError::into_inner);
        match id {
            Some(id) => {
                self.seen.store(fnv(id), Ordering::Relaxed);
                if fence.is_none() || (refused && fence.as_deref() != Some(id)) {
                    *fence = Some(Arc::from(id));
                }
            }
            None => {
                self.seen.store(0, Ordering::Relaxed);
                if refused {
                    *fence = None;
                }
            }
        }
    }

    /// Forgets which process answers (a reading after a reconnection failed): no
    /// incarnation until the next reading. The fence stays: it moves only on a
    /// refusal.
    pub(crate) fn forget(&self) {
        self.seen.store(0, Ordering::Relaxed);
    }

    /// The last `run_id` read, hashed; `None` if none was.
    pub(crate) fn incarnation(&self) -> Option<u64> {
        Some(self.seen.load(Ordering::Relaxed)).filter(|&id| id != 0)
    }

    /// Keeps a receiver of a connection's reconnection announcements (see
    /// [`Identity::reconnected`]): called for each connection of the pool, in order.
    pub(crate) fn announced_on(&self, announcements: Receiver<Server>) {
        self.announced
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(announcements);
    }

    /// The pool's `connection`-th connection reconnected: the ticket
    /// [`Identity::identified_through`] takes once the process answering it was read.
    /// Counted before its announcement is taken off, so that a read finds one or
    /// the other.
    pub(crate) fn reconnected(&self, connection: usize) -> u64 {
        let ticket = self.reconnections.fetch_add(1, Ordering::AcqRel) + 1;
        if let Some(rx) = self
            .announced
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(connection)
        {
            // Every announcement made so far is this reading's to cover.
            while !matches!(
                rx.try_recv(),
                Err(tokio::sync::broadcast::error::TryRecvError::Empty
                    | tokio::sync::broadcast::error::TryRecvError::Closed)
            ) {}
        }
        ticket
    }

    /// The reconnections up to `ticket` were followed by a reading (or the reading
    /// gave up): reads waiting on them go on.
    pub(crate) fn identified_through(&self, ticket: u64) {
        self.identified.fetch_max(ticket, Ordering::AcqRel);
        self.settled.notify_waiters();
    }

    /// Whether every reconnection seen was followed by a reading.
    #[inline]
    fn is_settled(&self) -> bool {
        self.identified.load(Ordering::Acquire) >= self.reconnections.load(Ordering::Acquire)
            && self
                .announced
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .all(Receiver::is_empty)
    }

    /// Waits, at most `bound`, until every reconnection seen so far was followed by a
    /// reading of which process answers; whether they all were. Called after a read
    /// is answered: the answer may come from a process the incarnation does not tell
    /// yet (a read queued while the client reconnected is sent to whichever process
    /// it reached), and a router above trusts an answer only from the process it
    /// knows. One comparison when nothing reconnected.
    pub(crate) async fn settle(&self, bound: Duration) -> bool {
        if self.is_settled() {
            return true;
        }
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let notified = self.settled.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.is_settled() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.is_settled();
            }
        }
    }

    /// The `run_id` a conditional write sends for the server to check.
    pub(crate) fn fence(&self) -> Option<Arc<str>> {
        self.fence
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The `run_id` line of `INFO server`, if there is one and it reads as Redis writes
/// it (40 hex digits: the fence the scripts compare).
fn run_id(info: &str) -> Option<&str> {
    let id = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("run_id:"))?
        .trim();
    (id.len() == RUN_ID_LEN && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// A hash (FNV-1a, never 0) of a `run_id`: the incarnation.
fn fnv(id: &str) -> u64 {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str) -> String {
        format!("# Server\r\nredis_version:7.0.15\r\nrun_id:{id}\r\ntcp_port:6379\r\n")
    }

    #[test]
    fn only_a_run_id_as_redis_writes_it_is_read() {
        let a = "a".repeat(40);
        assert_eq!(run_id(&info(&a)), Some(a.as_str()));
        for bad in ["", "abc", &"g".repeat(40), &"a".repeat(41)] {
            assert_eq!(run_id(&info(bad)), None, "{bad:?}");
        }
        assert_eq!(run_id("# Server\r\nredis_version:7.0.15\r\n"), None);
    }

    #[test]
    fn the_incarnation_follows_every_reading_and_the_fence_only_refusals() {
        let (a, b) = ("a".repeat(40), "b".repeat(40));
        let id = Identity::default();
        assert_eq!((id.incarnation(), id.fence()), (None, None));
        id.read(Some(&info(&a)), false);
        let first = id.incarnation();
        assert!(first.is_some());
        assert_eq!(
            id.fence().as_deref(),
            Some(a.as_str()),
            "the first one read"
        );
        // A ping or a reconnection reads another process: the fence stays.
        id.read(Some(&info(&b)), false);
        assert!(id.incarnation().is_some() && id.incarnation() != first);
        assert_eq!(id.fence().as_deref(), Some(a.as_str()));
        // A refusal moves it.
        id.read(Some(&info(&b)), true);
        assert_eq!(id.fence().as_deref(), Some(b.as_str()));
        // INFO refused: untracked at once, unfenced only after a refusal.
        id.read(None, false);
        assert_eq!(id.incarnation(), None);
        assert_eq!(id.fence().as_deref(), Some(b.as_str()));
        id.read(None, true);
        assert_eq!(id.fence(), None);
        // Tracked again: the first one read is the fence.
        id.read(Some(&info(&a)), false);
        assert_eq!(id.fence().as_deref(), Some(a.as_str()));
        // A reading after a reconnection failed: no incarnation until the next one.
        id.forget();
        assert_eq!(id.incarnation(), None);
        assert_eq!(id.fence().as_deref(), Some(a.as_str()));
        id.read(Some(&info(&b)), false);
        assert!(id.incarnation().is_some());
    }

    #[tokio::test]
    async fn a_read_after_a_reconnection_waits_for_its_reading_at_most_its_bound() {
        let id = Arc::new(Identity::default());
        let bound = Duration::from_millis(50);
        assert!(id.settle(bound).await, "nothing reconnected");
        let first = id.reconnected(0);
        let second = id.reconnected(0);
        // Unread: the bound passes, and the read is told so.
        let start = tokio::time::Instant::now();
        assert!(!id.settle(bound).await);
        assert!(start.elapsed() >= bound);
        // Read up to the first only: still waiting.
        id.identified_through(first);
        assert!(!id.settle(bound).await);
        // Read up to the second while a read waits: it goes on at once.
        let waiting = tokio::spawn({
            let id = Arc::clone(&id);
            async move { id.settle(Duration::from_secs(60)).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        id.identified_through(second);
        assert!(waiting.await.unwrap());
        assert!(id.settle(bound).await);
        // A late ticket does not move it back.
        id.identified_through(first);
        assert!(id.settle(bound).await);
    }

    #[tokio::test]
    async fn a_reconnection_announced_but_not_yet_counted_is_waited_for() {
        let id = Identity::default();
        let bound = Duration::from_millis(50);
        let (tx, rx) = tokio::sync::broadcast::channel(4);
        id.announced_on(rx);
        assert!(id.settle(bound).await);
        // The client announced a reconnection; its watcher has not run yet.
        tx.send(Server::new("127.0.0.1", 6379)).unwrap();
        assert!(!id.settle(bound).await, "announced: a read waits");
        let ticket = id.reconnected(0);
        assert!(!id.settle(bound).await, "counted, not yet read");
        id.identified_through(ticket);
        assert!(id.settle(bound).await);
    }
}
