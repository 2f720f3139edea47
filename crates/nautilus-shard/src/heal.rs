//! Corrupt copies: a replica whose copy of a key holds bytes its store did not write
//! (junk set by hand, a key of another type) answers reads of it with `Corrupt`, and
//! its own writes of the key refuse it. With several replicas the router heals such a
//! copy instead of passing the error on: `import` replaces what holds no version.
//!
//! Reads do it as part of their read repair (see [`crate::reads`]); a write that its
//! coordinator refused as corrupt heals the key and is made again (see
//! [`ShardedRegistry::healing`]); a repair heals the keys each node lists as skipped
//! (see [`crate::repair`]).

use nautilus_core::{Entry, Error, Result, Version};

use crate::router::ShardedRegistry;
use crate::state::State;

/// The lowest version: a tombstone at it replaces a corrupt copy where no replica
/// holds anything, and refuses no write (every version a write takes is above it).
const FLOOR: Version = Version::from_raw(1);

impl ShardedRegistry {
    /// Heals the corrupt copies of `key` on its replicas that are up: a read through
    /// the router imports the newest copy another replica holds over them, and where
    /// none holds one (the key deleted, or never written) they are replaced by a
    /// tombstone at [`FLOOR`]. Whether the key's replicas were all reached and none is
    /// corrupt now; not if one is down (what it holds is unknown) or kept its copy.
    pub(crate) async fn heal(&self, state: &State, key: &str) -> bool {
        if self.get_replicated_uncounted(state, key).await.is_err() {
            return false;
        }
        let replicas = state.current.preference(key, self.inner.config.replicas);
        let mut healed = true;
        for n in replicas {
            let node = &state.nodes[n];
            if !node.is_up() {
                healed = false;
                continue;
            }
            match node.read_uncounted(key).await {
                Ok(_) => {}
                Err(Error::Corrupt { .. }) => {
                    let clear = Entry::tombstone(FLOOR, None);
                    healed &= matches!(
                        node.answer(node.registry.import(key, clear).await),
                        Ok(true)
                    );
                }
                Err(_) => healed = false,
            }
        }
        healed
    }

    /// `write`, made again once if a replica refused it as corrupt and [`Self::heal`]
    /// healed the key. With one replica a corrupt record has no other copy: the
    /// error stands, as the backend answers it.
    pub(crate) async fn healing<T, F, Fut>(
        &self,
        state: &State,
        key: &str,
        mut write: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        match write().await {
            Err(e @ Error::Corrupt { .. }) => {
                if self.inner.config.replicas > 1 && self.heal(state, key).await {
                    write().await
                } else {
                    Err(e)
                }
            }
            other => other,
        }
    }
}
