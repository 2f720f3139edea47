//! Fault tolerance over three redis-server processes of the test's own (killed,
//! frozen and restarted here, so never the shared ones): concurrent writers and
//! readers, every acknowledged write recorded and checked afterwards.

#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nautilus_core::{Error, RegistryExt};
use nautilus_redis_servers::Persistence;
use nautilus_shard::{NodeState, ShardedRegistry};

mod common;

use common::own_servers::{KEYS, copies, counter, key, router, servers, value};

/// Runs health rounds until nothing waits to be handed back.
async fn handed_back(router: &ShardedRegistry) {
    for _ in 0..50 {
        router.check_health().await;
        if router.health().iter().all(|h| h.pending_handbacks == 0) {
            return;
        }
    }
    panic!("hand-backs still pending: {:?}", router.health());
}

/// The load: writers put increasing counters, acknowledged ones recorded per key;
/// a reader checks each answer against the acknowledgements made before it and
/// measures the longest time without a successful read.
///
/// A write that failed transiently may or may not have been applied, but never over
/// a later acknowledged one: one cut off inside a frozen server runs when it thaws,
/// and the Redis scripts' fence refuses it over a newer version (see
/// `nautilus_redis`'s scripts), so a read never returns a counter older than one
/// acknowledged before it.
struct Load {
    acked: Arc<Vec<AtomicU64>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(u64, u64)>>,
    gap: Arc<AtomicU64>,
}

impl Load {
    fn start(router: &ShardedRegistry) -> Load {
        let acked: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let gap = Arc::new(AtomicU64::new(0));
        let next = Arc::new(AtomicU64::new(1));
        let mut tasks = Vec::new();
        for w in 0..2u64 {
            let (r, acked, stop, next) =
                (router.clone(), acked.clone(), stop.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let (mut ok, mut failed) = (0, 0);
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    // Half the keys only (the other half is left for repair to
                    // find), each written by one writer, so that acknowledged
                    // counters are in version order per key.
                    let k = (2 * i + w) % (KEYS / 2);
                    let c = next.fetch_add(1, Ordering::Relaxed);
                    match r.put(&key(k), value(c)).await {
                        Ok(_) => {
                            acked[k as usize].fetch_max(c, Ordering::AcqRel);
                            ok += 1;
                        }
                        Err(e) => {
                            assert!(e.is_transient(), "a write failed for good: {e}");
                            failed += 1;
                        }
                    }
                    i += 7;
                }
                (ok, failed)
            }));
        }
        let (r, a, s, g) = (router.clone(), acked.clone(), stop.clone(), gap.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0, 0);
            let mut last = Instant::now();
            let mut i = 0;
            while !s.load(Ordering::Relaxed) {
                let k = (i * 13) % KEYS;
                i += 1;
                let before = a[k as usize].load(Ordering::Acquire);
                match r.get(&key(k)).await {
                    Ok(got) => {
                        let seen = got.map_or(0, |v| counter(&v));
                        assert!(
                            seen >= before,
                            "key {k}: read {seen} after {before} was acknowledged"
                        );
                        let since = last.elapsed().as_millis() as u64;
                        g.fetch_max(since, Ordering::Relaxed);
                        last = Instant::now();
                        ok += 1;
                    }
                    Err(e) => {
                        assert!(e.is_transient(), "a read failed for good: {e}");
                        failed += 1;
                    }
                }
                tokio::task::yield_now().await;
            }
            (ok, failed)
        }));
        Load {
            acked,
            stop,
            tasks,
            gap,
        }
    }

    /// Stops the load: the acknowledgements per key, then (acknowledged writes,
    /// failed writes, reads, failed reads) and the longest read gap in ms.
    async fn stop(self) -> (Acks, [u64; 4], u64) {
        self.stop.store(true, Ordering::Relaxed);
        let mut counts = [0; 4];
        for (n, t) in self.tasks.into_iter().enumerate() {
            let (ok, failed) = t.await.unwrap();
            let base = if n < 2 { 0 } else { 2 };
            counts[base] += ok;
            counts[base + 1] += failed;
        }
        let acks = Acks { acked: self.acked };
        (acks, counts, self.gap.load(Ordering::Relaxed))
    }
}

/// What the writers were told, per key.
struct Acks {
    acked: Arc<Vec<AtomicU64>>,
}

/// Every acknowledged write reads back at its counter or a later one: the number of
/// keys that do not.
async fn missing(router: &ShardedRegistry, acks: &Acks) -> usize {
    let mut missing = 0;
    for (k, a) in acks.acked.iter().enumerate() {
        let want = a.load(Ordering::Acquire);
        if want == 0 {
            continue;
        }
        match router.get(&key(k as u64)).await.unwrap() {
            Some(v) if counter(&v) >= want => {}
            got => {
                eprintln!(
                    "key {k}: acknowledged {want}, read {:?}",
                    got.map(|v| counter(&v))
                );
                missing += 1;
            }
        }
    }
    missing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_w2_a_killed_node_loses_no_acknowledged_write_and_a_restarted_empty_one_is_repaired() {
    let mut servers = servers(Persistence::Memory);
    let (router, nodes) = router(&servers, 2).await;
    for k in 0..KEYS {
        router.put(&key(k), value(0)).await.unwrap();
    }
    let mut events = router.events();
    let load = Load::start(&router);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let killed = Instant::now();
    servers[1].stop();
    let to_down = common::until(&router, "n1", NodeState::Down).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (acked, counts, gap) = load.stop().await;
    let lost = missing(&router, &acked).await;
    eprintln!(
        "SIGKILL under load: marked down {} ms after the kill, {} acknowledged writes, {} failed, \
         {} reads, {} failed, longest read gap {gap} ms, {lost} acknowledged writes missing",
        to_down.as_millis(),
        counts[0],
        counts[1],
        counts[2],
        counts[3]
    );
    assert_eq!(lost, 0, "acknowledged writes were lost");
    assert!(counts[0] > 100, "the load wrote too little: {counts:?}");
    assert!(killed.elapsed() > to_down);
    let down = events.recv().await.unwrap();
    assert_eq!((down.node.as_str(), down.state), ("n1", NodeState::Down));

    // Back, empty: hand-back returns the outage's writes, and the repair its return
    // starts the rest. Until then it is unverified: counts and reads come from the
    // other replica where it lacks a record.
    servers[1].restart().unwrap();
    common::until(&router, "n1", NodeState::Up).await;
    assert_eq!(nautilus_core::Registry::count(&router).await.unwrap(), KEYS);
    assert_eq!(missing(&router, &acked).await, 0);
    handed_back(&router).await;
    let start = Instant::now();
    while router.health().iter().any(|h| h.unverified) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{:?}",
            router.health()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let progress = router.repair().unwrap().wait().await.unwrap();
    eprintln!("a repair after the one the return started: {progress:?}");
    assert_eq!(progress.failed, 0, "{progress:?}");
    assert_eq!(nautilus_core::Registry::count(&router).await.unwrap(), KEYS);
    assert_eq!(missing(&router, &acked).await, 0);
    for k in 0..KEYS {
        assert_eq!(
            copies(&nodes, &key(k)).await,
            2,
            "key {k} is not on R nodes"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_a_frozen_node_is_marked_down_and_catches_up_when_thawed() {
    let servers = servers(Persistence::Memory);
    let (router, nodes) = router(&servers, 2).await;
    let load = Load::start(&router);
    tokio::time::sleep(Duration::from_millis(200)).await;
    servers[2].pause();
    let to_down = common::until(&router, "n2", NodeState::Down).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    servers[2].resume();
    common::until(&router, "n2", NodeState::Up).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (acked, counts, gap) = load.stop().await;
    handed_back(&router).await;
    eprintln!(
        "SIGSTOP: marked down after {} ms; {counts:?} (writes ok/failed, reads ok/failed); \
         longest read gap {gap} ms",
        to_down.as_millis()
    );
    assert_eq!(missing(&router, &acked).await, 0);
    // Caught up: every acknowledged write is on both its replicas, none elsewhere.
    for (k, a) in acked.acked.iter().enumerate() {
        if a.load(Ordering::Acquire) > 0 {
            assert_eq!(copies(&nodes, &key(k as u64)).await, 2, "key {k}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_deletes_made_while_a_replica_is_down_never_come_back() {
    // Durable: the node comes back with the records it had, deleted ones included.
    let mut servers = servers(Persistence::Durable);
    let (router, nodes) = router(&servers, 2).await;
    for k in 0..KEYS {
        router.put(&key(k), value(1)).await.unwrap();
    }
    servers[0].stop();
    common::until(&router, "n0", NodeState::Down).await;
    let mut deleted = Vec::new();
    for k in (0..KEYS).step_by(2) {
        assert!(router.delete(&key(k)).await.unwrap(), "key {k}");
        deleted.push(k);
    }
    servers[0].restart().unwrap();
    common::until(&router, "n0", NodeState::Up).await;
    // Before and after the hand-back, and after a repair: never seen again.
    for &k in &deleted {
        assert_eq!(
            router.get(&key(k)).await.unwrap(),
            None,
            "key {k} came back"
        );
    }
    handed_back(&router).await;
    let progress = router.repair().unwrap().wait().await.unwrap();
    assert_eq!(progress.failed, 0, "{progress:?}");
    for &k in &deleted {
        assert_eq!(
            router.get(&key(k)).await.unwrap(),
            None,
            "key {k} came back"
        );
        assert_eq!(copies(&nodes, &key(k)).await, 0, "key {k} is still stored");
    }
    for k in (1..KEYS).step_by(2) {
        assert_eq!(copies(&nodes, &key(k)).await, 2, "key {k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_stand_ins_take_writes_and_reads_are_never_a_false_not_found() {
    let mut servers = servers(Persistence::Durable);
    let (router, _nodes) = router(&servers, 1).await;
    let mine: Vec<u64> = (0..KEYS)
        .filter(|&k| router.node_of(&key(k)).as_deref() == Some("n1"))
        .collect();
    assert!(mine.len() > 50);
    for &k in &mine {
        router.put(&key(k), value(1)).await.unwrap();
    }
    servers[1].stop();
    common::until(&router, "n1", NodeState::Down).await;
    let (written, untouched) = mine.split_at(mine.len() / 2);
    for &k in written {
        router.put(&key(k), value(2)).await.unwrap();
    }
    for &k in written {
        let got = router.get(&key(k)).await.unwrap().map(|v| counter(&v));
        assert_eq!(got, Some(2), "key {k}: a stand-in answers what it took");
    }
    for &k in untouched {
        match router.get(&key(k)).await {
            Err(Error::Unavailable { .. }) => {}
            other => panic!("key {k}: expected Unavailable, got {other:?}"),
        }
    }
    servers[1].restart().unwrap();
    common::until(&router, "n1", NodeState::Up).await;
    handed_back(&router).await;
    for &k in written {
        let got = router.get(&key(k)).await.unwrap().map(|v| counter(&v));
        assert_eq!(
            got,
            Some(2),
            "key {k}: the outage's write is back on its node"
        );
    }
    for &k in untouched {
        let got = router.get(&key(k)).await.unwrap().map(|v| counter(&v));
        assert_eq!(got, Some(1), "key {k}");
    }
}
