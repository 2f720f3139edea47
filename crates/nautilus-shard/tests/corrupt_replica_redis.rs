//! A replica whose copy of records is corrupt (bytes its store did not write, put there
//! by hand as `redis-cli` would, or a key of another Redis type), over redis-server
//! processes of the test's own, at R=2: reads answer the good copy and heal the bad
//! one, scans and counts report every record once, in pages no longer than asked,
//! and a repair heals every such copy and finishes clean.

#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use nautilus_core::{Bytes, DynRegistry, Registry, RegistryExt};
use nautilus_redis::{RedisConfig, RedisRegistry};
use nautilus_redis_servers::{Persistence, Server, free_port};
use nautilus_shard::ShardedRegistry;

mod common;

const NS: &str = "corrupt";

struct Setup {
    servers: Vec<Server>,
    router: ShardedRegistry,
    nodes: Vec<DynRegistry>,
    /// Keys and their first replica (a node index), eight on each node.
    bad: Vec<(usize, String)>,
    /// Every key written, with its value.
    all: BTreeMap<String, Bytes>,
}

async fn setup() -> Setup {
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

impl Setup {
    /// Overwrites the first replica's copy of each key of `bad` with junk: a string
    /// for most, a hash (another Redis type) for every third.
    async fn corrupt_first_copies(&self) {
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

    /// The first replicas' own copies, read from them alone: each must be the good
    /// record again.
    async fn assert_healed(&self) {
        for (n, k) in &self.bad {
            let copy = self.nodes[*n].get(k).await;
            assert_eq!(
                copy.as_ref().ok().cloned().flatten().as_ref(),
                self.all.get(k),
                "{k}: n{n}'s copy was not healed: {copy:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_reads_answer_the_good_copy_and_heal_the_corrupt_one() {
    let s = setup().await;
    s.corrupt_first_copies().await;
    for (_, k) in &s.bad {
        let got = s.router.get(k).await.unwrap();
        assert_eq!(got.as_ref(), s.all.get(k), "{k}");
    }
    s.assert_healed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_scans_and_counts_report_a_record_whose_first_copy_is_corrupt() {
    let s = setup().await;
    s.corrupt_first_copies().await;
    // Before, both left out every record whose first replica held junk.
    assert_eq!(s.router.count().await.unwrap(), s.all.len() as u64);
    s.corrupt_first_copies().await;
    for page_size in [1, 5, 1000] {
        let mut seen = BTreeMap::new();
        let mut cursor = None;
        loop {
            let page = s.router.scan("", cursor.as_ref(), page_size).await.unwrap();
            assert!(
                page.records.len() <= page_size,
                "a page of {} records for a limit of {page_size}",
                page.records.len()
            );
            for (k, e) in page.records {
                assert!(seen.insert(k.clone(), e.value).is_none(), "{k} twice");
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, s.all, "page size {page_size}");
        s.corrupt_first_copies().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_repair_heals_corrupt_copies_and_finishes_clean() {
    let s = setup().await;
    s.corrupt_first_copies().await;
    let progress = s.router.repair().unwrap().wait().await.unwrap();
    // Before, each corrupt copy counted as failed, in this repair and every later one.
    assert_eq!(progress.failed, 0, "{progress:?}");
    assert!(progress.repaired >= s.bad.len() as u64, "{progress:?}");
    s.assert_healed().await;
    let again = s.router.repair().unwrap().wait().await.unwrap();
    assert_eq!((again.failed, again.repaired), (0, 0), "{again:?}");
}
