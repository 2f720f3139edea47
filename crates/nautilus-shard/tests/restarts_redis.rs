//! Redis servers restarted under a router, from three redis-server processes of the
//! test's own: a restart between two health checks is a return, and a server back
//! from an old snapshot never lets a stale compare-and-swap win, a read answer an old
//! value, or a scan skip or invent a record.

#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use nautilus_core::{DynRegistry, Error, Expiry, Registry, RegistryExt};
use nautilus_redis::{RedisConfig, RedisRegistry};
use nautilus_redis_servers::{Persistence, Server};
use nautilus_shard::{NodeState, ShardedRegistry, ShardedRegistryBuilder};

mod common;

use common::own_servers::{KEYS, built, copies, counter, key, servers, value};

/// An R=2 router's builder checking every `interval` that marks no node down on
/// failures alone (only a new process tells a restart) and repairs nothing on a
/// return by itself.
fn restarts_only(interval: Duration) -> ShardedRegistryBuilder {
    ShardedRegistry::builder()
        .replicas(2)
        .health_interval(interval)
        .health_timeout(Duration::from_millis(300))
        .failure_threshold(1_000)
        .repair_on_return(false)
}

/// A server restarted empty faster than the router notices any failure (no traffic,
/// the client reconnects between two checks): its new `run_id` makes it a return.
/// Before, nothing failed, so it was never unverified: scans and `count` missed the
/// records it is first replica of for good (13,629 of 20,300 from outside).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_a_server_restarted_between_two_checks_is_a_return() {
    // Never down on failures alone: only the new process tells.
    let (mut servers, router, nodes) = written_at_1().await;
    // Every node's process seen by a check.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(router.health().iter().all(|h| h.restarts_tracked));
    restart_seen(&mut servers, &router, 1).await;
    assert_eq!(router.health()[1].state, NodeState::Up);
    assert_eq!(nautilus_core::Registry::count(&router).await.unwrap(), KEYS);
    for k in 0..KEYS {
        assert_eq!(
            router.get(&key(k)).await.unwrap(),
            Some(value(1).into()),
            "key {k}"
        );
    }
    let p = router.repair().unwrap().wait().await.unwrap();
    assert!(p.repaired > 0 && p.failed == 0, "{p:?}");
    assert!(!router.health()[1].unverified);
    for k in 0..KEYS {
        assert_eq!(copies(&nodes, &key(k)).await, 2, "key {k}");
    }
}

/// Three servers without persistence under a `restarts_only` router checking every
/// 100 ms, every key written at counter 1.
async fn written_at_1() -> (Vec<Server>, ShardedRegistry, Vec<DynRegistry>) {
    let servers = servers(Persistence::Memory);
    let b = restarts_only(Duration::from_millis(100));
    let (router, nodes) = built(&servers, b).await;
    for k in 0..KEYS {
        router.put(&key(k), value(1)).await.unwrap();
    }
    (servers, router, nodes)
}

/// Restarts `servers[n]` (empty, or from its snapshot) and waits until the router's
/// checks see the new process: the node is unverified.
async fn restart_seen(servers: &mut [Server], router: &ShardedRegistry, n: usize) {
    servers[n].restart().unwrap();
    let start = Instant::now();
    while !router.health()[n].unverified {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the restart went unnoticed: {:?}",
            router.health()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Three servers under an R=2 router that never checks on its own (only calls can
/// tell a restart), checked once by hand if `checked`; the router and its nodes.
async fn unchecked_router(
    servers: &[Server],
    checked: bool,
) -> (ShardedRegistry, Vec<DynRegistry>) {
    let b = restarts_only(Duration::from_secs(3600));
    let (router, nodes) = built(servers, b).await;
    if checked {
        router.check_health().await;
    }
    assert!(router.health().iter().all(|h| h.restarts_tracked));
    (router, nodes)
}

/// Every key written at counter 1, snapshotted on `servers[1]`, written again at 2,
/// then that server killed and restarted from its snapshot: the versions of 1.
async fn restarted_from_an_old_snapshot(
    servers: &mut [Server],
    router: &ShardedRegistry,
    nodes: &[DynRegistry],
) -> Vec<nautilus_core::Version> {
    let mut old = Vec::new();
    for k in 0..KEYS {
        old.push(router.put(&key(k), value(1)).await.unwrap());
    }
    servers[1].cli(&["SAVE"]).expect("SAVE");
    for k in 0..KEYS {
        router.put(&key(k), value(2)).await.unwrap();
    }
    servers[1].restart().unwrap();
    let mut stale = 0;
    for k in 0..KEYS {
        if let Ok(Some(v)) = nodes[1].get(&key(k)).await {
            stale += usize::from(counter(&v) == 1);
        }
    }
    assert!(stale > 100, "the snapshot holds the old values ({stale})");
    assert!(!router.health()[1].unverified, "no check saw the restart");
    old
}

/// A server restarted from an old snapshot between two checks, or before the first
/// one, with no call failing: compare-and-swaps from the versions it holds,
/// superseded since, never win. Before, every one it coordinated did (100 of 100
/// from outside), and its old value stood on both replicas; before the first check,
/// 30 of 100 still did (from outside) until the registry read its server's process
/// on connecting and the router took it at build. The Redis scripts' restart fence
/// refuses them (or the client saw the new process first); the router sees the new
/// process, catches the key up and decides again: a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_compare_and_swaps_never_win_on_a_server_restarted_from_an_old_snapshot() {
    for checked in [true, false] {
        let mut servers = servers(Persistence::Memory);
        let (router, nodes) = unchecked_router(&servers, checked).await;
        stale_swaps_lose(&mut servers, &router, &nodes).await;
    }
}

/// The old-snapshot restart of `servers[1]`, then a compare-and-swap of every key
/// from its superseded version: none wins, reads answer the newest value, and a
/// repair restores every copy.
async fn stale_swaps_lose(servers: &mut [Server], router: &ShardedRegistry, nodes: &[DynRegistry]) {
    let old = restarted_from_an_old_snapshot(servers, router, nodes).await;
    let (mut won, mut conflicts, mut transient) = (Vec::new(), 0, 0);
    for k in 0..KEYS {
        let swap = router
            .compare_and_swap(&key(k), old[k as usize], value(3), Expiry::Never)
            .await;
        match swap {
            Ok(_) => won.push(k),
            Err(Error::Conflict { .. }) => conflicts += 1,
            // The first call after the restart may meet the dropped connection.
            Err(e) if e.is_transient() => transient += 1,
            Err(e) => panic!("key {k}: {e:?}"),
        }
    }
    eprintln!(
        "{conflicts} conflicts, {transient} transient, {} won",
        won.len()
    );
    assert!(won.is_empty(), "superseded versions won: {won:?}");
    assert!(transient <= 2, "{transient} transient failures");
    assert!(
        router.health()[1].unverified,
        "the calls saw the new process"
    );
    for k in 0..KEYS {
        let v = router.get(&key(k)).await.unwrap().unwrap();
        assert_eq!(counter(&v), 2, "key {k}");
    }
    // The next check starts the repair the call noticed the need for.
    router.check_health().await;
    let p = router.repair().unwrap().wait().await.unwrap();
    assert_eq!(p.failed, 0, "{p:?}");
    for k in 0..KEYS {
        assert_eq!(copies(nodes, &key(k)).await, 2, "key {k}");
    }
}

/// The same restart, with reads: the Redis client reads the new process's `run_id`
/// as soon as it reconnects, and from then on the router asks the other replica too
/// and answers the newest copy, without waiting for its next check (here, never).
/// Before, every read of a key whose first replica was that server answered the
/// snapshot's value until a check came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_reads_answer_no_old_snapshot_once_the_client_reconnected() {
    let mut servers = servers(Persistence::Memory);
    let (router, nodes) = unchecked_router(&servers, true).await;
    let before = nodes[1].incarnation();
    restarted_from_an_old_snapshot(&mut servers, &router, &nodes).await;
    let start = Instant::now();
    while nodes[1].incarnation() == before {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the client never saw the new process"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut stale = Vec::new();
    for k in 0..KEYS {
        let v = router.get(&key(k)).await.unwrap().unwrap();
        if counter(&v) != 2 {
            stale.push(k);
        }
    }
    assert!(stale.is_empty(), "{} stale reads: {stale:?}", stale.len());
    assert!(router.health()[1].unverified);
}

/// A read sent while the first replica's server is down, queued by the Redis client
/// until it reconnects, and answered by the new process restarted from an old
/// snapshot: the router never answers that old copy. The client reads which process
/// answers before it hands back a read whose connection reconnected under it, and the
/// router, seeing the new process after the answer, asks the other replica too.
/// Before, each such read answered the snapshot's value (one per restart from
/// outside; here, every read of a key whose first replica was that server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_a_read_queued_across_a_restart_answers_no_old_snapshot() {
    let mut servers = servers(Persistence::Memory);
    // Reconnection tried every 50 ms, and reads that outlive the restart.
    let b = restarts_only(Duration::from_secs(3600));
    let mut nodes = Vec::new();
    let mut b = b;
    for (i, s) in servers.iter().enumerate() {
        let config = RedisConfig::new(s.url())
            .namespace("faults")
            .pool_size(2)
            .command_timeout(Duration::from_secs(5))
            .reconnect_max_delay(Duration::from_millis(50));
        let n: DynRegistry = Arc::new(RedisRegistry::connect(config).await.unwrap());
        nodes.push(Arc::clone(&n));
        b = b.node(format!("n{i}"), n);
    }
    let router = b.build().unwrap();
    router.check_health().await;
    for k in 0..KEYS {
        router.put(&key(k), value(1)).await.unwrap();
    }
    servers[1].cli(&["SAVE"]).expect("SAVE");
    for k in 0..KEYS {
        router.put(&key(k), value(2)).await.unwrap();
    }
    servers[1].stop();
    // The client sees its connections close and starts reconnecting.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reads = tokio::spawn({
        let router = router.clone();
        async move {
            let mut answers = Vec::new();
            for k in 0..KEYS {
                let router = router.clone();
                answers.push(tokio::spawn(async move { router.get(&key(k)).await }));
            }
            let mut out = Vec::new();
            for a in answers {
                out.push(a.await.unwrap());
            }
            out
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    tokio::task::block_in_place(|| servers[1].restart().unwrap());
    let answers = reads.await.unwrap();
    let (mut stale, mut newest, mut transient) = (Vec::new(), 0, 0);
    for (k, answer) in answers.into_iter().enumerate() {
        match answer {
            Ok(Some(v)) if counter(&v) == 2 => newest += 1,
            Ok(other) => stale.push((k, other.map(|v| counter(&v)))),
            Err(e) if e.is_transient() => transient += 1,
            Err(e) => panic!("key {k}: {e:?}"),
        }
    }
    eprintln!(
        "{newest} newest, {transient} transient, {} stale",
        stale.len()
    );
    assert!(stale.is_empty(), "{} stale reads: {stale:?}", stale.len());
    assert!(newest as u64 > KEYS / 2, "{transient} transient failures");
    assert!(
        router.health()[1].unverified,
        "the reads saw the new process"
    );
}

/// Compare-and-swaps from superseded versions, all sent at once right after a server
/// restarted from an old snapshot, with health checks on: none wins, and none fails.
/// The server refuses each as its new process; those refusals do not count toward
/// marking it down (before, they did: the burst marked it down, the retries after
/// the catch-up went to it unrepaired, and 447 of 450 swaps won from outside, their
/// stale values kept by the repair), and each is decided again on the caught-up key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_concurrent_compare_and_swaps_after_an_old_snapshot_restart_never_win() {
    let mut servers = servers(Persistence::Memory);
    let b = ShardedRegistry::builder()
        .replicas(2)
        .health_interval(Duration::from_millis(250))
        .health_timeout(Duration::from_millis(200))
        .failure_threshold(2);
    let (router, _nodes) = built(&servers, b).await;
    let keys: Vec<String> = (0..KEYS)
        .map(key)
        .filter(|k| router.node_of(k).as_deref() == Some("n1"))
        .collect();
    let mut old = Vec::new();
    for k in &keys {
        old.push(router.put(k, value(1)).await.unwrap());
    }
    servers[1].cli(&["SAVE"]).expect("SAVE");
    for k in &keys {
        router.put(k, value(2)).await.unwrap();
    }
    servers[1].restart().unwrap();
    let swaps: Vec<_> = keys
        .iter()
        .zip(&old)
        .map(|(k, &v)| {
            let (router, k) = (router.clone(), k.clone());
            tokio::spawn(async move {
                router
                    .compare_and_swap(&k, v, value(3), Expiry::Never)
                    .await
            })
        })
        .collect();
    let (mut won, mut conflicts, mut transient) = (0, 0, 0);
    for swap in swaps {
        match swap.await.unwrap() {
            Ok(_) => won += 1,
            Err(Error::Conflict { .. }) => conflicts += 1,
            Err(e) if e.is_transient() => transient += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    eprintln!(
        "{} keys: {won} won, {conflicts} conflicts, {transient} transient",
        keys.len()
    );
    assert_eq!(won, 0, "superseded versions won");
    assert!(transient <= 2, "{transient} transient failures");
    for k in &keys {
        assert_eq!(counter(&router.get(k).await.unwrap().unwrap()), 2, "{k}");
    }
}

/// Scans and `count` across a server's restart from an old snapshot, which no check
/// has seen: a scan that started before it answers every live record once at its
/// newest value, or fails with `Unavailable` (the node restarted under it), never
/// the snapshot's stale values, its deleted records, or too few; started again it
/// answers them all. Before, the restarted node's pages were taken as they came
/// (from outside: stale values, deleted records and missing ones in 9 of 10 scans).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_scans_across_an_old_snapshot_restart_answer_right_or_fail() {
    use std::collections::BTreeMap;
    let mut servers = servers(Persistence::Memory);
    let (router, _nodes) = unchecked_router(&servers, true).await;
    for k in 0..KEYS {
        router.put(&key(k), value(1)).await.unwrap();
    }
    servers[1].cli(&["SAVE"]).expect("SAVE");
    let mut expected = BTreeMap::new();
    for k in 0..KEYS {
        if k % 4 == 0 {
            router.delete(&key(k)).await.unwrap();
        } else {
            router.put(&key(k), value(2)).await.unwrap();
            expected.insert(key(k), 2);
        }
    }
    for k in KEYS..KEYS + 50 {
        router.put(&key(k), value(2)).await.unwrap();
        expected.insert(key(k), 2);
    }
    // The rest of a scan whose first page came before the restart, then whole scans.
    let r = &router;
    let scan = |mut cursor: Option<nautilus_core::Cursor>, mut seen: BTreeMap<String, u64>| async move {
        loop {
            let page = r.scan("", cursor.as_ref(), 20).await?;
            for (k, e) in page.records {
                assert!(
                    seen.insert(k.clone(), counter(&e.value)).is_none(),
                    "{k} twice"
                );
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok::<_, Error>(seen),
            }
        }
    };
    let first = router.scan("", None, 20).await.unwrap();
    let seen: BTreeMap<String, u64> = first
        .records
        .iter()
        .map(|(k, e)| (k.clone(), counter(&e.value)))
        .collect();
    servers[1].restart().unwrap();
    // The client reconnects and reads the new process; no check runs.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut answered = Vec::new();
    match scan(first.next, seen).await {
        Ok(seen) => answered.push(seen),
        Err(e) => {
            eprintln!("the scan across the restart failed: {e}");
            assert!(e.is_transient(), "{e:?}");
        }
    }
    for _ in 0..3 {
        if let Ok(seen) = scan(None, BTreeMap::new()).await {
            answered.push(seen);
        }
    }
    assert!(answered.len() >= 3, "{} scans answered", answered.len());
    for seen in &answered {
        let stale: Vec<_> = seen
            .iter()
            .filter(|(k, v)| expected.get(*k) != Some(*v))
            .collect();
        assert!(stale.is_empty(), "stale or deleted: {stale:?}");
        assert_eq!(seen.len(), expected.len(), "missing records");
    }
    assert_eq!(router.count().await.unwrap(), expected.len() as u64);
}

/// A server restarted empty while the other replica of some of its keys holds junk
/// there (bytes set by hand): a live key and a deleted one. No copy of them can be
/// read but the restarted node's (nothing), and none will come, so a repair clears
/// the junk with nothing failed and verifies the node, and both keys are written
/// again. Before, every repair counted the junk failed, the node stayed unverified
/// for good (reads of its keys failed once its partner went down), and writes of
/// the live key failed as corrupt for good (found from outside).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_junk_on_the_partner_of_a_server_restarted_empty_is_cleared_by_a_repair() {
    let (mut servers, router, nodes) = written_at_1().await;
    // Two keys of n1 and, for each, the other node holding it.
    let mut junked = Vec::new();
    for k in 0..KEYS {
        if junked.len() == 2 {
            break;
        }
        if nodes[1].get(&key(k)).await.unwrap().is_none() {
            continue;
        }
        for p in [0, 2] {
            if nodes[p].get(&key(k)).await.unwrap().is_some() {
                junked.push((key(k), p));
            }
        }
    }
    assert_eq!(junked.len(), 2);
    assert!(router.delete(&junked[1].0).await.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(router.health().iter().all(|h| h.restarts_tracked));
    for (k, p) in &junked {
        servers[*p]
            .cli(&["SET", &format!("faults:{k}"), "junk"])
            .unwrap();
    }
    restart_seen(&mut servers, &router, 1).await;
    let p = router.repair().unwrap().wait().await.unwrap();
    assert_eq!(p.failed, 0, "{p:?}");
    assert!(!router.health()[1].unverified, "{p:?}");
    for (k, p) in &junked {
        assert!(nodes[*p].get(k).await.is_ok(), "{k}: the junk stayed");
        router.put(k, value(2)).await.unwrap();
        assert_eq!(router.get(k).await.unwrap(), Some(value(2).into()), "{k}");
    }
    for k in (0..KEYS)
        .map(key)
        .filter(|k| junked.iter().all(|(j, _)| j != k))
    {
        assert_eq!(router.get(&k).await.unwrap(), Some(value(1).into()), "{k}");
        assert_eq!(copies(&nodes, &k).await, 2, "{k}");
    }
}
