//! What Redis does wrong, and what the registry does about it: garbage under the
//! namespace, bad URLs, dead and restarted servers, racing clients.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, KeysInterface};
use nautilus_core::{Bytes, Error, Expiry, Registry, RegistryExt};
use nautilus_redis::{RedisConfig, RedisRegistry};

/// Every page of a full scan in pages of `limit`: the keys returned, and the keys
/// listed as skipped (sorted).
async fn scan_all(registry: &RedisRegistry, limit: usize) -> (Vec<String>, Vec<String>) {
    let (mut keys, mut skipped, mut cursor) = (Vec::new(), Vec::new(), None);
    loop {
        let page = registry.scan("", cursor.as_ref(), limit).await.unwrap();
        keys.extend(page.records.into_iter().map(|(k, _)| k));
        skipped.extend(page.skipped);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    skipped.sort();
    (keys, skipped)
}

#[tokio::test]
async fn garbage_in_the_namespace_is_a_corrupt_record_skipped_by_scans_and_left_alone() {
    let url = common::url("NAUTILUS_REDIS_URL");
    let ns = common::fresh_namespace();
    let registry = common::connect(&url, &ns).await;
    let raw = common::raw_client(&url).await;
    let _: () = raw
        .set(format!("{ns}:intruder"), "not ours", None, None, false)
        .await
        .unwrap();
    // Foreign bytes that begin with the record tag ('N') were counted as a record.
    let _: () = raw
        .set(
            format!("{ns}:lookalike"),
            "Not a record, though it starts like one",
            None,
            None,
            false,
        )
        .await
        .unwrap();
    registry.put("fine", "ok").await.unwrap();
    // A key of another Redis type under the namespace.
    common::plant_hash(&raw, &ns, "hashy").await;
    let hashy =
        |r: &Result<_, Error>| matches!(r, Err(Error::Corrupt { key, .. }) if key == "hashy");
    assert!(hashy(&registry.get("hashy").await.map(|_| ())));
    // Not a record of ours: not counted, and counting does not fail on it.
    assert_eq!(registry.count().await.unwrap(), 1);
    assert!(hashy(&registry.put("hashy", "x").await.map(|_| ())));
    let batch = registry.get_many(&["fine", "hashy"]).await;
    assert!(batch[0].as_ref().is_ok_and(Option::is_some));
    assert!(
        matches!(&batch[1], Err(Error::Corrupt { key, .. }) if key == "hashy"),
        "{:?}",
        batch[1]
    );

    let is_corrupt =
        |r: &Result<_, Error>| matches!(r, Err(Error::Corrupt { key, .. }) if key == "intruder");
    assert!(is_corrupt(&registry.get("intruder").await.map(|_| ())));
    assert!(is_corrupt(&registry.put("intruder", "x").await.map(|_| ())));
    assert!(is_corrupt(&registry.delete("intruder").await.map(|_| ())));
    assert!(is_corrupt(
        &registry.touch("intruder", Expiry::Never).await.map(|_| ())
    ));
    let batch = registry.get_many(&["fine", "intruder"]).await;
    assert!(
        batch[0].as_ref().unwrap().is_some(),
        "one bad key failed the batch"
    );
    assert!(
        matches!(&batch[1], Err(Error::Corrupt { key, .. }) if key == "intruder"),
        "{:?}",
        batch[1]
    );
    // A scan pages past both, lists them as skipped, and returns the record.
    let (keys, skipped) = scan_all(&registry, 10).await;
    assert_eq!(keys, ["fine"]);
    assert_eq!(skipped, ["hashy", "intruder", "lookalike"]);
    let mut scanner = registry.scanner("").page_size(1);
    let mut seen = Vec::new();
    while let Some((key, _)) = scanner.next().await.unwrap() {
        seen.push(key);
    }
    assert_eq!((seen, scanner.skipped()), (vec!["fine".to_owned()], 3));
    // Nothing was overwritten.
    let left: String = raw.get(format!("{ns}:intruder")).await.unwrap();
    assert_eq!(left, "not ours");
    registry.clear().await.unwrap();
    let _ = raw.quit().await;
}

#[tokio::test]
async fn records_under_keys_no_put_could_write_are_skipped_not_walls() {
    let url = common::url("NAUTILUS_REDIS_URL");
    let ns = common::fresh_namespace();
    let registry = common::connect(&url, &ns).await;
    let raw = common::raw_client(&url).await;
    registry.put("fine", "ok").await.unwrap();
    // A well-formed record, copied under names no put of the registry writes: bytes
    // that are not UTF-8, the namespace prefix alone (an empty key), a key past the
    // registry's key limit.
    let record: Bytes = raw.get(format!("{ns}:fine")).await.unwrap();
    let too_long = "k".repeat(registry.limits().max_key_bytes + 1);
    let mut not_utf8 = format!("{ns}:").into_bytes();
    not_utf8.extend_from_slice(b"\xff\xfebin");
    for name in [
        not_utf8,
        format!("{ns}:").into_bytes(),
        format!("{ns}:{too_long}").into_bytes(),
    ] {
        let _: () = raw
            .set(Bytes::from(name), record.clone(), None, None, false)
            .await
            .unwrap();
    }
    // Before, one key that is not UTF-8 failed every scan and count ("Could not
    // convert to string"), and with them a router's repairs and migrations.
    assert_eq!(registry.count().await.unwrap(), 1);
    let (keys, skipped) = scan_all(&registry, 2).await;
    assert_eq!(keys, ["fine"]);
    assert_eq!(skipped, ["", too_long.as_str(), "\u{fffd}\u{fffd}bin"]);
    registry.clear().await.unwrap();
    assert_eq!(registry.count().await.unwrap(), 0);
    let _ = raw.quit().await;
}

#[tokio::test]
async fn a_record_at_the_last_possible_version_is_foreign_data_not_a_version_to_wrap() {
    let url = common::url("NAUTILUS_REDIS_URL");
    let ns = common::fresh_namespace();
    let registry = common::connect(&url, &ns).await;
    let raw = common::raw_client(&url).await;
    for (key, tag) in [("max_record", b'N'), ("max_tombstone", b'T')] {
        let stored = common::plant_record(&raw, &ns, key, tag, u64::MAX, b"x").await;
        let corrupt = |r: Result<(), Error>| matches!(r, Err(Error::Corrupt { .. }));
        assert!(corrupt(registry.put(key, "new").await.map(drop)), "{key}");
        assert!(corrupt(registry.get(key).await.map(drop)), "{key}");
        assert!(corrupt(registry.delete(key).await.map(drop)), "{key}");
        let left: Vec<u8> = raw.get(format!("{ns}:{key}")).await.unwrap();
        assert_eq!(left, stored, "{key} was overwritten");
        // An import replaces it (it holds no version): a router's repair heals it.
        let entry =
            nautilus_core::Entry::new("imported", nautilus_core::Version::from_raw(9), None);
        assert!(registry.import(key, entry.clone()).await.unwrap(), "{key}");
        assert_eq!(registry.get_entry(key).await.unwrap(), Some(entry), "{key}");
    }
    registry.clear().await.unwrap();
    let _ = raw.quit().await;
}

/// A record whose value was cut by hand (`SET` of its first bytes, header intact), or
/// had a byte of it changed (`SETRANGE`), as a partial copy or a hand edit leaves it.
/// Before layout 2 carried the value's length and check, the cut one read as a valid,
/// shorter record. Now reads, batches and scans answer both as corrupt, `count` leaves
/// the cut one out, a touch refuses it, and an import of the record at its own version
/// (what a router's heal or repair sends) replaces each; a put or a delete writes over
/// a cut one. A record written in layout 1 is still read, counted and touched.
#[tokio::test]
async fn a_record_cut_or_changed_inside_its_value_is_corrupt_and_an_import_replaces_it() {
    let url = common::url("NAUTILUS_REDIS_URL");
    let ns = common::fresh_namespace();
    let registry = common::connect(&url, &ns).await;
    let raw = common::raw_client(&url).await;
    let value = "a value long enough to be cut short";
    registry.put("fine", "ok").await.unwrap();
    let mut good = Vec::new();
    for key in ["cut", "changed", "cut_then_put", "cut_then_deleted"] {
        registry.put(key, value).await.unwrap();
        good.push(registry.get_entry(key).await.unwrap().unwrap());
    }
    for key in ["cut", "cut_then_put", "cut_then_deleted"] {
        let full = format!("{ns}:{key}");
        let stored: Vec<u8> = raw.get(&full).await.unwrap();
        let cut = &stored[..stored.len() - 7];
        let _: () = raw.set(&full, cut, None, None, false).await.unwrap();
    }
    let full = format!("{ns}:changed");
    let len: u32 = raw.strlen(&full).await.unwrap();
    let _: u32 = raw.setrange(&full, len - 1, "X").await.unwrap();
    let old = common::plant_record(&raw, &ns, "layout1", b'N', 5 << 16, b"from before").await;

    let corrupt = |r: &Result<(), Error>| matches!(r, Err(Error::Corrupt { .. }));
    for key in ["cut", "changed"] {
        assert!(corrupt(&registry.get(key).await.map(drop)), "{key}");
        let batch = registry.get_many(&["fine", key]).await;
        assert!(batch[0].as_ref().is_ok_and(Option::is_some), "{key}");
        assert!(
            matches!(&batch[1], Err(Error::Corrupt { .. })),
            "{key}: {:?}",
            batch[1]
        );
    }
    let (keys, skipped) = scan_all(&registry, 10).await;
    let mut keys = keys;
    keys.sort();
    assert_eq!(keys, ["fine", "layout1"]);
    assert_eq!(
        skipped,
        ["changed", "cut", "cut_then_deleted", "cut_then_put"]
    );
    // The header alone tells a cut value (its length); a byte changed in place is
    // found by reads of the value only.
    assert_eq!(registry.count().await.unwrap(), 3);
    assert!(corrupt(
        &registry.touch("cut", Expiry::Never).await.map(drop)
    ));
    assert_eq!(
        registry.get("layout1").await.unwrap().as_deref(),
        Some(&b"from before"[..])
    );
    assert!(
        registry
            .touch("layout1", Expiry::Never)
            .await
            .unwrap()
            .is_some()
    );
    let touched: Vec<u8> = raw.get(format!("{ns}:layout1")).await.unwrap();
    assert_eq!((touched[1], &touched[18..]), (old[1], &old[18..]));
    assert_eq!(
        registry.get("layout1").await.unwrap().as_deref(),
        Some(&b"from before"[..])
    );

    // Imports of the records as they were, at their own versions, replace them.
    for (key, entry) in ["cut", "changed"].into_iter().zip(good.iter().cloned()) {
        assert!(registry.import(key, entry.clone()).await.unwrap(), "{key}");
        assert_eq!(
            registry.get_entry(key).await.unwrap().as_ref(),
            Some(&entry),
            "{key}"
        );
        // And, whole again, an import at the same version changes nothing.
        assert!(!registry.import(key, entry).await.unwrap(), "{key}");
    }
    let put = registry.put("cut_then_put", "rewritten").await.unwrap();
    assert!(put > good[2].version);
    assert_eq!(
        registry.get("cut_then_put").await.unwrap().as_deref(),
        Some(&b"rewritten"[..])
    );
    assert!(registry.delete("cut_then_deleted").await.unwrap());
    assert_eq!(registry.get("cut_then_deleted").await.unwrap(), None);
    assert_eq!(registry.count().await.unwrap(), 5);
    let (_, skipped) = scan_all(&registry, 10).await;
    assert!(skipped.is_empty(), "{skipped:?}");
    registry.clear().await.unwrap();
    let _ = raw.quit().await;
}

/// A record in the backend's own layout, dated far ahead (forged, or written by a
/// machine whose clock was years off): writes over it are refused as corrupt and leave
/// it as it is, instead of taking a version past it that this client's clock would then
/// carry to every later write of every key.
#[tokio::test]
async fn a_record_dated_years_ahead_is_refused_and_does_not_carry_the_clock_away() {
    let url = common::url("NAUTILUS_REDIS_URL");
    let ns = common::fresh_namespace();
    let registry = common::connect(&url, &ns).await;
    let raw = common::raw_client(&url).await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let ten_years = 10 * 366 * 86_400_000u64;
    for (healed, (key, version)) in [
        ("years_ahead", (now_ms + ten_years) << 16),
        ("last_but_one", u64::MAX - 1),
    ]
    .into_iter()
    .enumerate()
    {
        let stored = common::plant_record(&raw, &ns, key, b'N', version, b"forged").await;
        let corrupt = |r: Result<(), Error>| matches!(r, Err(Error::Corrupt { .. }));
        assert!(corrupt(registry.put(key, "new").await.map(drop)), "{key}");
        assert!(
            corrupt(
                registry
                    .touch(key, nautilus_core::Expiry::Never)
                    .await
                    .map(drop)
            ),
            "{key}"
        );
        assert!(corrupt(registry.delete(key).await.map(drop)), "{key}");
        let left: Vec<u8> = raw.get(format!("{ns}:{key}")).await.unwrap();
        assert_eq!(left, stored, "{key} was overwritten");
        // Other keys are written at versions of this day, not of the forged one's.
        for i in 0..20 {
            let other = format!("clean{i}");
            let v = registry.put(&other, "v").await.unwrap();
            assert!(
                v.millis() < now_ms + 86_400_000,
                "{other} was written at {v} after {key}"
            );
            assert_eq!(
                registry.get(&other).await.unwrap().as_deref(),
                Some(&b"v"[..])
            );
        }
        // No write of ours is dated so far ahead: it reads as corrupt, is neither
        // counted nor scanned, and an import replaces it (a router heals it so).
        assert!(corrupt(registry.get(key).await.map(drop)), "{key}");
        assert_eq!(registry.count().await.unwrap(), 20 + healed as u64, "{key}");
        let (keys, skipped) = scan_all(&registry, 10).await;
        assert!(!keys.iter().any(|k| k == key), "{key}");
        assert!(skipped.iter().any(|k| k == key), "{key}: {skipped:?}");
        let entry =
            nautilus_core::Entry::new("imported", nautilus_core::Version::from_raw(9), None);
        assert!(registry.import(key, entry.clone()).await.unwrap(), "{key}");
        assert_eq!(registry.get_entry(key).await.unwrap(), Some(entry), "{key}");
    }
    // Within the horizon, a record is taken and the client's clock follows it; a
    // second one that far again is past the server's horizon, however far the
    // client's clock went.
    let within = 300 * 86_400_000u64;
    common::plant_record(&raw, &ns, "ahead", b'N', (now_ms + within) << 16, b"a").await;
    let carried = registry.put("ahead", "taken").await.unwrap();
    assert!(carried.millis() >= now_ms + within);
    let beyond = common::plant_record(
        &raw,
        &ns,
        "further",
        b'N',
        (now_ms + 2 * within) << 16,
        b"b",
    )
    .await;
    assert!(matches!(
        registry.put("further", "new").await,
        Err(Error::Corrupt { .. })
    ));
    let left: Vec<u8> = raw.get(format!("{ns}:further")).await.unwrap();
    assert_eq!(
        left, beyond,
        "a forgery past the server's horizon was written over"
    );
    registry.clear().await.unwrap();
    let _ = raw.quit().await;
}

/// A batch read that misses a key while a put of it lands answers the miss or the
/// new record, never `Corrupt`: a batch's misses are told from keys of another Redis
/// type by reading them again, and a record written in between is read as one.
/// (Checked with `EXISTS`, such a key looked like another type: 728 of 20,000 calls
/// in the outside attempt.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_read_racing_a_put_of_a_missed_key_never_answers_corrupt() {
    let url = common::url("NAUTILUS_REDIS_URL");
    let ns = common::fresh_namespace();
    let registry = std::sync::Arc::new(common::connect(&url, &ns).await);
    let mut wrong = Vec::new();
    for i in 0..3_000 {
        let key = format!("race{i}");
        let writer = {
            let (registry, key) = (std::sync::Arc::clone(&registry), key.clone());
            tokio::spawn(async move { registry.put(&key, "v").await.map(drop) })
        };
        let read = registry.get_many(&[&key, "never-written"]).await;
        writer.await.unwrap().unwrap();
        for r in read {
            match r {
                Ok(None) => {}
                Ok(Some(e)) if e.value == "v" => {}
                other => wrong.push(format!("{key}: {other:?}")),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    );
    registry.clear().await.unwrap();
}

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
