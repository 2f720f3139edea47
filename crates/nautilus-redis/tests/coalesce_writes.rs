//! Concurrent puts and imports on a single server go out together as calls of the
//! multi-record write script: every caller must still get its own error (a conflict,
//! a corrupt record, a full namespace) and its own version, in chunks and in order,
//! the newest import of a key winning.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use fred::prelude::{ClientLike, KeysInterface};
use nautilus_core::{Capacity, Error, Expiry, PutItem, Registry, RegistryExt, Version};
use nautilus_redis::{RedisConfig, RedisRegistry};

/// The calls of one command Redis has run, from `INFO commandstats`.
async fn calls(raw: &fred::prelude::Client, command: &str) -> u64 {
    let info: String = raw
        .info(Some(fred::types::InfoKind::CommandStats))
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// A server of the test's own, so that its command counts are the test's alone, with
/// a registry on it and a foreign string planted in the registry's namespace as
/// `intruder`.
async fn counted_server() -> (
    common::Server,
    String,
    Arc<RedisRegistry>,
    fred::prelude::Client,
) {
    let port = common::free_port();
    let server = common::durable(port, &[]);
    let url = format!("redis://127.0.0.1:{port}");
    let ns = common::fresh_namespace();
    let registry = Arc::new(common::connect(&url, &ns).await);
    let raw = common::raw_client(&url).await;
    let _: () = raw
        .set(format!("{ns}:intruder"), "not ours", None, None, false)
        .await
        .unwrap();
    (server, ns, registry, raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_are_batched_and_each_gets_its_own_outcome() {
    let (_server, ns, registry, raw) = counted_server().await;
    common::plant_hash(&raw, &ns, "hashy").await;
    for c in 0..4 {
        registry.put(&format!("counter/{c}"), "0").await.unwrap();
    }
    let evalsha_before = calls(&raw, "evalsha").await;

    const TASKS: usize = 64;
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let registry = registry.clone();
            tokio::spawn(async move {
                let mut puts = 0u64;
                // Its own key, written over and over: versions only go up.
                let mine = format!("mine/{t}");
                let mut last = None;
                for i in 0..30 {
                    let v = registry.put(&mine, format!("{t}/{i}")).await.unwrap();
                    assert!(last < Some(v), "{mine}: {v:?} after {last:?}");
                    last = Some(v);
                    puts += 1;
                }
                // Eight keys every task races to create: one winner each.
                let mut won = Vec::new();
                for s in 0..8 {
                    let key = format!("shared/{s}");
                    match registry
                        .put_if_absent(&key, format!("{t}"), Expiry::Never)
                        .await
                    {
                        Ok(v) => {
                            won.push((s, v));
                            puts += 1;
                        }
                        Err(Error::Conflict { actual, .. }) => assert!(actual.is_some()),
                        Err(e) => panic!("{key}: {e:?}"),
                    }
                }
                // Counters incremented by compare-and-swap: no increment is lost.
                let counter = format!("counter/{}", t % 4);
                for _ in 0..10 {
                    loop {
                        let e = registry.get_entry(&counter).await.unwrap().unwrap();
                        let n: u64 = std::str::from_utf8(&e.value).unwrap().parse().unwrap();
                        match registry
                            .compare_and_swap(
                                &counter,
                                e.version,
                                format!("{}", n + 1),
                                Expiry::Never,
                            )
                            .await
                        {
                            Ok(v) => {
                                assert!(v > e.version);
                                puts += 1;
                                break;
                            }
                            Err(Error::Conflict { .. }) => continue,
                            Err(e) => panic!("{counter}: {e:?}"),
                        }
                    }
                }
                // Garbage in the namespace is refused in the batch, for that key only.
                for key in ["intruder", "hashy"] {
                    match registry.put(key, "mine now").await {
                        Err(Error::Corrupt { key: k, .. }) => assert_eq!(k, key),
                        other => panic!("{key}: {other:?}"),
                    }
                }
                (t, last, won, puts)
            })
        })
        .collect();
    let mut winners = vec![Vec::new(); 8];
    let mut puts = 0;
    for task in tasks {
        let (t, last, won, n) = task.await.unwrap();
        puts += n;
        let entry = registry
            .get_entry(&format!("mine/{t}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(Some(entry.version), last);
        assert_eq!(entry.value, Bytes::from(format!("{t}/29")));
        for (s, v) in won {
            winners[s].push((t, v));
        }
    }
    for (s, won) in winners.iter().enumerate() {
        assert_eq!(won.len(), 1, "shared/{s} had winners {won:?}");
        let entry = registry
            .get_entry(&format!("shared/{s}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (entry.value, entry.version),
            (Bytes::from(won[0].0.to_string()), won[0].1)
        );
    }
    for c in 0..4 {
        let value = registry
            .get(&format!("counter/{c}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(value, Bytes::from("160"), "counter/{c} lost increments");
    }
    let intruder: String = raw.get(format!("{ns}:intruder")).await.unwrap();
    assert_eq!(intruder, "not ours");
    // The puts went out in batches: fewer script calls than puts.
    let scripts = calls(&raw, "evalsha").await - evalsha_before;
    let attempted = puts + TASKS as u64 * (8 + 2);
    assert!(
        scripts < attempted / 2,
        "{scripts} script calls for {attempted} puts: they were not batched"
    );
    eprintln!("{attempted} puts ({puts} applied) in {scripts} script calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_limit_holds_for_puts_that_arrive_together() {
    let url = common::url("NAUTILUS_REDIS_URL");
    let registry = Arc::new(common::connect(&url, &common::fresh_namespace()).await);
    registry.set_capacity(Capacity::records(50)).await.unwrap();
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let registry = registry.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for i in 0..2 {
                    outcomes.push(registry.put(&format!("k/{t}/{i}"), "v").await);
                }
                outcomes
            })
        })
        .collect();
    let (mut stored, mut refused) = (0, 0);
    for task in tasks {
        for outcome in task.await.unwrap() {
            match outcome {
                Ok(_) => stored += 1,
                Err(Error::CapacityExceeded { .. }) => refused += 1,
                Err(e) => panic!("{e:?}"),
            }
        }
    }
    assert_eq!((stored, refused), (50, 78));
    assert_eq!(registry.count().await.unwrap(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_put_many_goes_out_in_chunks_and_answers_each_item_in_order() {
    let url = common::url("NAUTILUS_REDIS_URL");
    let ns = common::fresh_namespace();
    let registry = RedisRegistry::connect(
        RedisConfig::new(&url)
            .namespace(&ns)
            .max_value_bytes(300 * 1024),
    )
    .await
    .unwrap();
    let raw = common::raw_client(&url).await;
    let _: () = raw
        .set(format!("{ns}:item/77"), "not ours", None, None, false)
        .await
        .unwrap();
    let before = registry.put("item/5", "older").await.unwrap();
    // 300 items: more records than one script call takes, six values of 200 KiB
    // (more bytes than one takes), invalid and oversized items, a key given twice.
    let mut items = Vec::new();
    for i in 0..300 {
        let value = if i % 50 == 10 {
            Bytes::from(vec![b'a' + (i % 26) as u8; 200 * 1024])
        } else {
            Bytes::from(format!("value {i}"))
        };
        items.push(PutItem::new(format!("item/{i}"), value));
    }
    items[20] = PutItem::new("", "an empty key");
    items[30] = PutItem::new("item/30", vec![0u8; 400 * 1024]);
    items.push(PutItem::new("item/3", "written twice"));
    let n = items.len();
    let outcomes = registry.put_many(items.clone()).await;
    assert_eq!(outcomes.len(), n);
    let mut versions: Vec<Option<Version>> = vec![None; n];
    for (i, outcome) in outcomes.into_iter().enumerate() {
        match (i, outcome) {
            (20, Err(Error::InvalidKey { .. })) | (30, Err(Error::TooLarge { .. })) => {}
            (77, Err(Error::Corrupt { key, .. })) => assert_eq!(key, "item/77"),
            (20 | 30 | 77, other) => panic!("item {i}: {other:?}"),
            (_, Ok(v)) => versions[i] = Some(v),
            (_, Err(e)) => panic!("item {i}: {e:?}"),
        }
    }
    assert!(versions[5] > Some(before));
    assert!(
        versions[300] > versions[3],
        "the second write of item/3 came first"
    );
    // Every applied item reads back with its value and version (item/3: the second).
    for (i, item) in items.iter().enumerate().take(300) {
        let Some(version) = versions[if i == 3 { 300 } else { i }] else {
            continue;
        };
        let expected = if i == 3 {
            &items[300].value
        } else {
            &item.value
        };
        let entry = registry.get_entry(&item.key).await.unwrap().unwrap();
        assert_eq!(
            (&entry.value, entry.version),
            (expected, version),
            "item {i}"
        );
    }
    let intruder: String = raw.get(format!("{ns}:item/77")).await.unwrap();
    assert_eq!(intruder, "not ours");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_imports_are_batched_and_the_newest_of_each_key_wins() {
    let (_server, ns, registry, raw) = counted_server().await;
    const TASKS: u64 = 64;
    const KEYS: u64 = 16;
    const ROUNDS: u64 = 40;
    let base = 1u64 << 50;
    for t in 0..TASKS {
        let _: () = raw
            .set(format!("{ns}:junk/{t}"), "not ours", None, None, false)
            .await
            .unwrap();
    }
    let evalsha_before = calls(&raw, "evalsha").await;
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let registry = registry.clone();
            tokio::spawn(async move {
                let mut applied = 0u64;
                for r in 0..ROUNDS {
                    let k = (t + r) % KEYS;
                    let v = base + r * TASKS + t;
                    let entry = nautilus_core::Entry::new(
                        v.to_le_bytes().to_vec(),
                        Version::from_raw(v),
                        None,
                    );
                    if registry.import(&format!("imp/{k}"), entry).await.unwrap() {
                        applied += 1;
                    }
                    // A tombstone older than what every key holds by now is refused.
                    if r == ROUNDS - 1 {
                        let old = nautilus_core::Entry::tombstone(Version::from_raw(base), None);
                        assert!(!registry.import(&format!("imp/{k}"), old).await.unwrap());
                    }
                }
                // Foreign data holds no version: an import replaces it, batched with
                // the others or not, and they keep their own answers.
                let healed = nautilus_core::Entry::new(vec![1], Version::from_raw(base), None);
                assert!(registry.import(&format!("junk/{t}"), healed).await.unwrap());
                applied
            })
        })
        .collect();
    let mut applied = 0;
    for t in tasks {
        applied += t.await.unwrap();
    }
    let scripts = calls(&raw, "evalsha").await - evalsha_before;
    let attempted = TASKS * (ROUNDS + 2);
    eprintln!("{attempted} imports ({applied} applied) in {scripts} script calls");
    assert!(
        scripts < attempted / 2,
        "{scripts} script calls for {attempted} imports: they were not batched"
    );
    // Each key holds the highest version any task sent it.
    for k in 0..KEYS {
        let highest = (0..TASKS)
            .flat_map(|t| {
                (0..ROUNDS)
                    .filter(move |r| (t + r) % KEYS == k)
                    .map(move |r| base + r * TASKS + t)
            })
            .max()
            .unwrap();
        let got = registry
            .get_entry(&format!("imp/{k}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.version, Version::from_raw(highest), "key {k}");
        assert_eq!(&got.value[..], &highest.to_le_bytes());
    }
    for t in 0..TASKS {
        let healed = registry.get_entry(&format!("junk/{t}")).await.unwrap();
        assert_eq!(healed.map(|e| e.version), Some(Version::from_raw(base)));
    }
    let intruder: String = raw.get(format!("{ns}:intruder")).await.unwrap();
    assert_eq!(intruder, "not ours");
}

/// What a replicated write sends a node: puts of some keys and imports of others (the
/// copies of records another node took first), together. They share batches, and
/// each keeps its own answer: a put its version, an import whether it was newer, a
/// conditional put the import it races with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_and_imports_share_batches_and_each_answers_for_itself() {
    let (_server, _ns, registry, raw) = counted_server().await;
    const TASKS: u64 = 64;
    const ROUNDS: u64 = 25;
    let evalsha_before = calls(&raw, "evalsha").await;
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let registry = registry.clone();
            tokio::spawn(async move {
                let mut last = None;
                for r in 0..ROUNDS {
                    // The put a primary takes, then the copy a replica takes.
                    let value = format!("{t}/{r}");
                    let v = registry
                        .put(&format!("put/{t}"), value.clone())
                        .await
                        .unwrap();
                    assert!(last < Some(v), "put/{t}: {v:?} after {last:?}");
                    last = Some(v);
                    let copy = nautilus_core::Entry::new(value.into_bytes(), v, None);
                    assert!(
                        registry
                            .import(&format!("copy/{t}"), copy.clone())
                            .await
                            .unwrap()
                    );
                    // The same copy again, or one older, is not newer.
                    assert!(!registry.import(&format!("copy/{t}"), copy).await.unwrap());
                    // An import of what this task's put holds, at an older version.
                    let stale =
                        nautilus_core::Entry::new(&b"stale"[..], Version::from_raw(1), None);
                    assert!(!registry.import(&format!("put/{t}"), stale).await.unwrap());
                    // An import creates a key a put-if-absent then finds taken.
                    let fresh = format!("fresh/{t}/{r}");
                    let made = nautilus_core::Entry::new(&b"imported"[..], v, None);
                    assert!(registry.import(&fresh, made).await.unwrap());
                    match registry.put_if_absent(&fresh, "put", Expiry::Never).await {
                        Err(Error::Conflict { actual, .. }) => assert_eq!(actual, Some(v)),
                        other => panic!("{fresh}: {other:?}"),
                    }
                }
                last
            })
        })
        .collect();
    let mut lasts = Vec::new();
    for (t, task) in tasks.into_iter().enumerate() {
        lasts.push((t, task.await.unwrap().unwrap()));
    }
    let scripts = calls(&raw, "evalsha").await - evalsha_before;
    let attempted = TASKS * ROUNDS * 5;
    eprintln!("{attempted} puts and imports in {scripts} script calls");
    assert!(
        scripts < attempted / 2,
        "{scripts} script calls for {attempted} writes: they were not batched"
    );
    for (t, v) in lasts {
        let put = registry
            .get_entry(&format!("put/{t}"))
            .await
            .unwrap()
            .unwrap();
        let copy = registry
            .get_entry(&format!("copy/{t}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((put.version, copy.version), (v, v), "task {t}");
        assert_eq!(put.value, copy.value, "task {t}");
        assert_eq!(&put.value[..], format!("{t}/{}", ROUNDS - 1).as_bytes());
    }
}

/// An import whose expiry the scripts cannot take (past 2^53 ms) is refused before it
/// is sent, as a put's is, and alone: the writes queued beside it are applied and
/// answer for themselves. Sent, it failed the whole call, and with it writes that
/// were applied anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_beyond_the_scripts_range_is_refused_alone() {
    let (_server, _ns, registry, _raw) = counted_server().await;
    let version = registry.put("seed", "v").await.unwrap();
    let far = Some(nautilus_core::Timestamp::from_millis(u64::MAX));
    let tasks: Vec<_> = (0..64u64)
        .map(|t| {
            let registry = registry.clone();
            tokio::spawn(async move {
                match t {
                    62 => {
                        let entry = nautilus_core::Entry::new(&b"w"[..], version, far);
                        (t, registry.import("far", entry).await.map(|_| ()))
                    }
                    63 => {
                        let entry = nautilus_core::Entry::tombstone(version, far);
                        (t, registry.import("far-tomb", entry).await.map(|_| ()))
                    }
                    _ => (t, registry.put(&format!("good/{t}"), "v").await.map(|_| ())),
                }
            })
        })
        .collect();
    for task in tasks {
        let (t, result) = task.await.unwrap();
        if t >= 62 {
            assert!(
                matches!(result, Err(Error::InvalidArgument { .. })),
                "import {t}: {result:?}"
            );
        } else {
            result.unwrap();
            assert!(registry.get(&format!("good/{t}")).await.unwrap().is_some());
        }
    }
    assert!(registry.get_entry("far").await.unwrap().is_none());
    // At the edge of the range, an import is taken.
    let edge = Some(nautilus_core::Timestamp::from_millis(1 << 53));
    let entry = nautilus_core::Entry::new(&b"w"[..], version, edge);
    assert!(registry.import("edge", entry).await.unwrap());
}
