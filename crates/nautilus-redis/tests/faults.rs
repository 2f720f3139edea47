//! What Redis servers and their clients do wrong, and what the registry does about
//! it: bad URLs, dead and restarted servers, dropped connections, racing clients.
//! (Bytes under the namespace that no write of ours made: `tests/corrupt_data.rs`.)

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::ClientLike;
use nautilus_core::{Bytes, Error, Expiry, Registry, RegistryExt};
use nautilus_redis::{RedisConfig, RedisRegistry};

#[tokio::test]
async fn a_malformed_url_or_an_unknown_host_fails_at_construction() {
    // Port 1: never a Redis, so nothing here can reach a real server.
    for url in [
        "not a url",
        "http://127.0.0.1:1",
        "redis://127.0.0.1:notaport",
        "",
    ] {
        let started = Instant::now();
        let result = RedisRegistry::connect(RedisConfig::new(url)).await;
        assert!(
            matches!(result, Err(Error::InvalidArgument { .. })),
            "{url:?}: {result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    let started = Instant::now();
    let result = RedisRegistry::connect(
        RedisConfig::new("redis://no-such-host.invalid:1")
            .connect_timeout(Duration::from_millis(1_500)),
    )
    .await;
    match result {
        Err(Error::Unavailable { .. } | Error::Timeout { .. }) => {}
        other => panic!("an unresolvable host gave {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    // Nothing listens on port 1: refused, promptly.
    let result = RedisRegistry::connect(RedisConfig::new("redis://127.0.0.1:1")).await;
    assert!(matches!(
        result,
        Err(Error::Unavailable { .. } | Error::Timeout { .. })
    ));
}

/// A durable server of the test's own, and a registry on it (500 ms timeout).
async fn durable_server() -> (nautilus_redis_servers::Server, RedisRegistry) {
    let port = common::free_port();
    let server = common::durable(port, &[]);
    let registry = RedisRegistry::connect(
        RedisConfig::new(format!("redis://127.0.0.1:{port}"))
            .namespace(common::fresh_namespace())
            .command_timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap();
    (server, registry)
}

#[tokio::test]
async fn a_dead_server_is_unavailable_within_the_timeout_and_a_restarted_one_recovers() {
    let (mut server, registry) = durable_server().await;
    // Acknowledged writes before the failure.
    let acked = common::write_acked(&registry, 200).await;

    server.stop();
    let started = Instant::now();
    let err = registry
        .get("acked/1")
        .await
        .expect_err("a dead server answered");
    assert!(
        err.is_transient(),
        "a dead server must be a transient error: {err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the error took {:?}",
        started.elapsed()
    );
    assert!(
        registry
            .put("during", "x")
            .await
            .unwrap_err()
            .is_transient()
    );

    server.restart().unwrap();
    // The registry reconnects by itself; the script cache is empty after the restart,
    // so the writes also prove the scripts are reloaded.
    common::until_recovered(&registry, Duration::from_secs(15)).await;
    common::assert_kept(&registry, &acked).await;
    let batch: Vec<&str> = acked.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        registry
            .get_many(&batch)
            .await
            .iter()
            .all(|r| r.as_ref().is_ok_and(Option::is_some))
    );
    registry.close().await.unwrap();
}

#[tokio::test]
async fn a_compare_and_swap_race_between_two_clients_has_one_winner() {
    let (a, b) = common::two_clients("NAUTILUS_REDIS_URL").await;
    for round in 0..50 {
        let key = format!("race/{round}");
        let start = a.put(&key, "start").await.unwrap();
        let (ra, rb) = tokio::join!(
            a.compare_and_swap(&key, start, "a", Expiry::Never),
            b.compare_and_swap(&key, start, "b", Expiry::Never)
        );
        let winners = usize::from(ra.is_ok()) + usize::from(rb.is_ok());
        assert_eq!(winners, 1, "round {round}: {ra:?} / {rb:?}");
        let winner = ra.as_ref().or(rb.as_ref()).copied().unwrap();
        let loser = ra.err().or(rb.err()).unwrap();
        assert!(matches!(loser, Error::Conflict { actual: Some(v), .. } if v == winner));
    }
    a.clear().await.unwrap();
}

#[tokio::test]
async fn a_ttl_runs_on_the_servers_clock() {
    let registry = common::registry("NAUTILUS_REDIS_URL").await;
    registry
        .put_with_ttl("brief", "x", Duration::from_millis(300))
        .await
        .unwrap();
    let entry = registry.get_entry("brief").await.unwrap().unwrap();
    let expires = entry.expires_at.unwrap().as_millis();
    assert!(expires.abs_diff(entry.version.millis() + 300) <= 1);
    let deadline = Instant::now() + Duration::from_secs(3);
    while registry.get("brief").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "Redis did not expire the record");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(Instant::now() + Duration::from_secs(3) - deadline >= Duration::from_millis(250));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_cut_off_by_a_dropped_connection_is_never_sent_twice() {
    // Connections are killed while conditional writes are in flight. A write whose
    // connection drops may or may not have been applied (a transient error), but it
    // must not be sent again: a put-if-absent sent twice would report a conflict with
    // the caller's own record, and a compare-and-swap a conflict with its own write.
    // A server of its own: the kills hit every client of the server.
    let port = common::free_port();
    let _server = common::durable(port, &[]);
    let url = format!("redis://127.0.0.1:{port}");
    let ns = common::fresh_namespace();
    let registry = std::sync::Arc::new(common::connect(&url, &ns).await);
    let killer = common::raw_client(&url).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killing = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let kill = fred::types::CustomCommand::new_static(
                "CLIENT",
                fred::types::ClusterHash::Random,
                false,
            );
            let mut kills = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let args = vec!["KILL", "TYPE", "normal", "SKIPME", "yes"];
                let _: Result<i64, _> = killer.custom(kill.clone(), args).await;
                kills += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            kills
        })
    };
    let (mut applied, mut failed) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut i = 0;
    while Instant::now() < deadline {
        let writes: Vec<_> = (0..32)
            .map(|j| {
                let registry = registry.clone();
                let key = format!("once/{i}/{j}");
                tokio::spawn(async move {
                    let mine = format!("{key} by its only writer");
                    let outcome = registry
                        .put_if_absent(&key, mine.clone(), Expiry::Never)
                        .await;
                    (key, mine, outcome)
                })
            })
            .collect();
        for w in writes {
            let (key, mine, outcome) = w.await.unwrap();
            match outcome {
                Ok(_) => applied += 1,
                Err(Error::Conflict { .. }) => {
                    let stored = registry.get(&key).await;
                    panic!("{key}: a conflict with nobody; stored: {stored:?} (mine: {mine})");
                }
                Err(e) => {
                    assert!(e.is_transient(), "{key}: {e:?}");
                    failed += 1;
                }
            }
        }
        i += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let kills = killing.await.unwrap();
    eprintln!("{applied} applied, {failed} cut off, {kills} kills");
    assert!(applied > 0, "no write got through");
}

/// A server's incarnation is its process, read on connecting: the same across pings,
/// another after a restart, even one the client's reconnection hid (no call failed).
/// A server that refuses INFO still answers its pings, untracked.
#[tokio::test]
async fn a_restarted_server_has_a_new_incarnation_and_one_without_info_none() {
    let (mut server, registry) = durable_server().await;
    let first = registry.incarnation();
    assert!(first.is_some(), "read on connecting");
    registry.ping().await.unwrap();
    registry.ping().await.unwrap();
    assert_eq!(registry.incarnation(), first);
    server.restart().unwrap();
    let start = Instant::now();
    while registry.ping().await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(registry.incarnation().is_some());
    assert_ne!(registry.incarnation(), first, "a restarted server is new");

    let port = common::free_port();
    let _no_info = common::durable(port, &["--rename-command", "INFO", ""]);
    let registry = RedisRegistry::connect(
        RedisConfig::new(format!("redis://127.0.0.1:{port}")).namespace(common::fresh_namespace()),
    )
    .await
    .unwrap();
    registry.ping().await.unwrap();
    assert_eq!(registry.incarnation(), None);
}

/// A conditional write sent to a server that restarted since the client's last ping
/// (no call failed: the client reconnected) is refused, transient and unwritten, even
/// when the client already saw the new process on reconnecting, and the client knows
/// the new process when the caller sees the error, without a ping: a router above then
/// sees the restart on that failure. Decided there, a compare-and-swap would have been
/// compared with whatever the new process loaded (an old snapshot: a superseded
/// version won). Unconditional writes are not fenced.
#[tokio::test]
async fn a_conditional_write_to_a_server_restarted_since_the_last_ping_is_refused() {
    let (mut server, registry) = durable_server().await;
    registry.ping().await.unwrap();
    let v1 = registry.put("k", "v1").await.unwrap();
    let d1 = registry.put("d", "doomed").await.unwrap();

    // Restarted; reached again by reads only, which leave the client's view as the
    // last ping left it.
    let restart = |server: &mut nautilus_redis_servers::Server| server.restart().unwrap();
    let reached = |registry: &RedisRegistry| {
        let registry = registry.clone();
        async move {
            let start = Instant::now();
            while registry.get("k").await.is_err() {
                assert!(start.elapsed() < Duration::from_secs(10));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let before = registry.incarnation();
    assert!(before.is_some());
    restart(&mut server);
    reached(&registry).await;
    let refused = registry
        .compare_and_swap("k", v1, "v2", Expiry::Never)
        .await;
    assert!(
        matches!(&refused, Err(e @ Error::Unavailable { .. }) if e.is_transient()),
        "{refused:?}"
    );
    let after = registry.incarnation();
    assert!(
        after.is_some() && after != before,
        "seen by the refusal at the latest"
    );
    assert_eq!(
        registry.get("k").await.unwrap(),
        Some("v1".into()),
        "unwritten"
    );
    // Fenced against the process it now knows: through.
    registry
        .compare_and_swap("k", v1, "v2", Expiry::Never)
        .await
        .unwrap();

    restart(&mut server);
    reached(&registry).await;
    let refused = registry.delete_if_version("d", d1).await;
    assert!(
        matches!(refused, Err(Error::Unavailable { .. })),
        "{refused:?}"
    );
    assert!(registry.get("d").await.unwrap().is_some(), "not deleted");
    assert!(registry.delete_if_version("d", d1).await.unwrap());

    restart(&mut server);
    reached(&registry).await;
    let refused = registry.put_if_absent("new", "x", Expiry::Never).await;
    assert!(
        matches!(refused, Err(Error::Unavailable { .. })),
        "{refused:?}"
    );
    assert_eq!(registry.get("new").await.unwrap(), None);
    // Unconditional writes and deletes go through.
    restart(&mut server);
    reached(&registry).await;
    registry.put("k", "v3").await.unwrap();
    assert!(registry.delete("k").await.unwrap());
}

/// A server that stops answering INFO after the registry took its fence (an ACL
/// changed, a restart with INFO renamed) cannot check conditional writes any more:
/// the first one is refused (even after a ping saw no `run_id`), the registry drops
/// the fence, and the next goes through, untracked. Before, every conditional write
/// failed for good with the script's error.
#[tokio::test]
async fn a_server_that_stops_answering_info_is_untracked_not_refusing_conditional_writes() {
    let (server, registry) = durable_server().await;
    let v1 = registry.put("k", "v1").await.unwrap();
    assert!(registry.incarnation().is_some());
    server
        .cli(&["ACL", "SETUSER", "default", "-info"])
        .expect("ACL SETUSER");
    // A ping finds no run_id: untracked, but the fence stays for the refusal.
    registry.ping().await.unwrap();
    assert_eq!(registry.incarnation(), None, "untracked");
    let refused = registry
        .compare_and_swap("k", v1, "v2", Expiry::Never)
        .await;
    assert!(
        matches!(refused, Err(Error::Unavailable { .. })),
        "{refused:?}"
    );
    assert_eq!(registry.incarnation(), None, "untracked");
    let v2 = registry
        .compare_and_swap("k", v1, "v2", Expiry::Never)
        .await
        .unwrap();
    assert!(registry.delete_if_version("k", v2).await.unwrap());
    registry
        .put_if_absent("k", "v3", Expiry::Never)
        .await
        .unwrap();
    registry.ping().await.unwrap();
    assert_eq!(registry.incarnation(), None);
}

/// A read sent while the server is down waits in the client's queue and is answered by
/// the restarted process once the client reconnects. It is handed back only once the
/// registry's incarnation tells that process, so a router comparing incarnations
/// after the answer knows where it came from (a process restarted from an old
/// snapshot answers its old copy). Before, the incarnation moved a round trip later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_queued_across_a_restart_returns_once_the_new_process_is_known() {
    let port = common::free_port();
    let mut server = common::durable(port, &[]);
    let registry = Arc::new(
        RedisRegistry::connect(
            RedisConfig::new(format!("redis://127.0.0.1:{port}"))
                .namespace(common::fresh_namespace())
                .command_timeout(Duration::from_secs(5))
                .reconnect_max_delay(Duration::from_millis(50))
                // Each read its own command, answered before the reading of INFO.
                .coalesce_reads(false),
        )
        .await
        .unwrap(),
    );
    registry.put("k", Bytes::from_static(b"v")).await.unwrap();
    let first = registry.incarnation();
    assert!(first.is_some());
    server.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let singles: Vec<_> = (0..32)
        .map(|_| {
            let r = Arc::clone(&registry);
            tokio::spawn(async move { (r.get("k").await, r.incarnation()) })
        })
        .collect();
    let batch = tokio::spawn({
        let r = Arc::clone(&registry);
        async move { (r.get_many(&["k", "absent"]).await, r.incarnation()) }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    tokio::task::block_in_place(|| server.restart().unwrap());
    for single in singles {
        let (read, seen) = single.await.unwrap();
        assert_eq!(read.unwrap().as_deref(), Some(&b"v"[..]), "kept by the AOF");
        assert!(
            seen.is_some() && seen != first,
            "answered by the new process"
        );
    }
    let (reads, seen) = batch.await.unwrap();
    assert!(reads[0].as_ref().unwrap().is_some() && reads[1].as_ref().unwrap().is_none());
    assert!(
        seen.is_some() && seen != first,
        "answered by the new process"
    );
}
