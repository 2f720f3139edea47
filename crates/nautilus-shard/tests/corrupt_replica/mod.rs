//! The setting of the corrupt-replica tests: three redis-server processes of the
//! test's own behind an R=2 router, keys written through it, and the helpers that
//! damage copies by hand and check what a repair leaves.

use std::collections::BTreeMap;
use std::sync::Arc;

use nautilus_core::{Bytes, DynRegistry, RegistryExt};
use nautilus_redis::{RedisConfig, RedisRegistry};
use nautilus_redis_servers::{Persistence, Server, free_port};
use nautilus_shard::ShardedRegistry;

use crate::common;

pub(crate) const NS: &str = "corrupt";

pub(crate) struct Setup {
    pub(crate) servers: Vec<Server>,
    pub(crate) router: ShardedRegistry,
    pub(crate) nodes: Vec<DynRegistry>,
    /// Keys and their first replica (a node index), eight on each node.
    pub(crate) bad: Vec<(usize, String)>,
    /// Every key written, with its value.
    pub(crate) all: BTreeMap<String, Bytes>,
}

pub(crate) async fn setup() -> Setup {
    nautilus_redis_servers::require().expect("redis-server is needed");
    let servers: Vec<Server> = (0..3)
        .map(|_| Server::start(free_port().unwrap(), Persistence::Memory, &[]).unwrap())
        .collect();
    let mut b = ShardedRegistry::builder()
        .replicas(2)
        .background_health_checks(false);
    let mut nodes = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        let config = RedisConfig::new(s.url()).namespace(NS);
        let n: DynRegistry = Arc::new(RedisRegistry::connect(config).await.unwrap());
        nodes.push(Arc::clone(&n));
        b = b.node(format!("n{i}"), n);
    }
    let router = b.build().unwrap();
    let bad: Vec<(usize, String)> = (0..3)
        .flat_map(|n| {
            common::keys_on(&router, &format!("n{n}"), &format!("bad{n}-"), 8)
                .into_iter()
                .map(move |k| (n, k))
        })
        .collect();
    let mut all = BTreeMap::new();
    let others = (0..40).map(|i| format!("other{i}"));
    for k in bad.iter().map(|(_, k)| k.clone()).chain(others) {
        let value = Bytes::from(format!("good {k}"));
        router.put(&k, value.clone()).await.unwrap();
        all.insert(k, value);
    }
    Setup {
        servers,
        router,
        nodes,
        bad,
        all,
    }
}

/// Repairs until a pass reports nothing failed (at most 5), the copies each pass
/// repaired summed: a copy a pass could not repair (a call that timed out under the
/// test suite's load) is retried by the next, as a repair promises. A copy that
/// fails every pass fails the test.
pub(crate) async fn repair_clean(router: &ShardedRegistry) -> nautilus_shard::RepairProgress {
    let mut repaired = 0;
    let mut last = None;
    for _ in 0..5 {
        let mut progress = router.repair().unwrap().wait().await.unwrap();
        repaired += progress.repaired;
        if progress.failed == 0 {
            progress.repaired = repaired;
            return progress;
        }
        last = Some(progress);
    }
    panic!("every repair failed some copies: {last:?}");
}

impl Setup {
    /// Overwrites the first replica's copy of each key of `bad` with junk: a string
    /// for most, a hash (another Redis type) for every third.
    pub(crate) async fn corrupt_first_copies(&self) {
        for (i, (n, k)) in self.bad.iter().enumerate() {
            let full = format!("{NS}:{k}");
            if i % 3 == 2 {
                self.servers[*n].cli(&["DEL", &full]).unwrap();
                self.servers[*n].cli(&["HSET", &full, "f", "junk"]).unwrap();
            } else {
                self.servers[*n].cli(&["SET", &full, "junk"]).unwrap();
            }
            // The node itself now answers it as corrupt.
            let direct = self.nodes[*n].get(k).await;
            assert!(
                matches!(direct, Err(nautilus_core::Error::Corrupt { .. })),
                "{k}: {direct:?}"
            );
        }
    }

    /// A repair restores every damaged copy with none failed (as `repair_clean`
    /// retries), the copies read back whole, and a second repair finds nothing to do.
    pub(crate) async fn assert_repairs_clean(&self) {
        let progress = repair_clean(&self.router).await;
        assert_eq!(progress.failed, 0, "{progress:?}");
        assert!(progress.repaired >= self.bad.len() as u64, "{progress:?}");
        self.assert_healed().await;
        let again = repair_clean(&self.router).await;
        assert_eq!(again.repaired, 0, "{again:?}");
    }

    /// The first replicas' own copies, read from them alone: each must be the good
    /// record again.
    pub(crate) async fn assert_healed(&self) {
        for (n, k) in &self.bad {
            let copy = self.nodes[*n].get(k).await;
            assert_eq!(
                copy.as_ref().ok().cloned().flatten().as_ref(),
                self.all.get(k),
                "{k}: n{n}'s copy was not healed: {copy:?}"
            );
        }
    }

    /// The node other than the first that holds `key`'s copy, read directly.
    pub(crate) async fn second_replica(&self, key: &str, first: usize) -> usize {
        for n in (0..3).filter(|&n| n != first) {
            if self.nodes[n].get(key).await.unwrap().is_some() {
                return n;
            }
        }
        panic!("{key} has no second copy");
    }

    /// Damages the first replica's copy of the `i`th key of `bad` by `damage(server,
    /// key, i)`: each node then answers its copy as corrupt, or as expired where
    /// `expired(i)`.
    pub(crate) async fn damage_first(
        &self,
        damage: fn(&Server, &str, usize),
        expired: fn(usize) -> bool,
    ) {
        for (i, (n, k)) in self.bad.iter().enumerate() {
            damage(&self.servers[*n], k, i);
            let direct = self.nodes[*n].get(k).await;
            assert!(
                if expired(i) {
                    matches!(direct, Ok(None))
                } else {
                    matches!(direct, Err(nautilus_core::Error::Corrupt { .. }))
                },
                "{k}: {direct:?}"
            );
        }
    }
}
