//! Concurrent gets on a single server go out together as `MGET`: every caller must
//! still get its own key's answer or its own error, and calls queued on a frozen
//! server, reads and writes, never wait past the timeout. (Concurrent puts and
//! imports batched into the multi-record write script: `tests/coalesce_writes.rs`.)

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::prelude::KeysInterface;
use nautilus_core::{Error, Registry, RegistryExt, Version};
use nautilus_redis::{RedisConfig, RedisRegistry};

#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Value(Bytes),
    Missing,
    Corrupt,
}

fn check(key: &str, expect: &Expect, got: &Result<Option<nautilus_core::Entry>, Error>) {
    match (expect, got) {
        (Expect::Value(v), Ok(Some(e))) => assert_eq!(&e.value, v, "{key}"),
        (Expect::Missing, Ok(None)) => {}
        (Expect::Corrupt, Err(Error::Corrupt { key: k, .. })) => assert_eq!(k, key),
        _ => panic!("{key}: expected {expect:?}, got {got:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_gets_each_get_their_own_record_miss_or_error() {
    let url = common::url("NAUTILUS_REDIS_URL");
    let ns = common::fresh_namespace();
    let registry = Arc::new(
        RedisRegistry::connect(RedisConfig::new(&url).namespace(&ns))
            .await
            .unwrap(),
    );
    let raw = common::raw_client(&url).await;
    let mut expected = Vec::new();
    for i in 0..200 {
        let key = format!("k{i}");
        let value = Bytes::from(format!("value {i} {}", "x".repeat(i)));
        registry
            .put_opts(&key, value.clone(), Default::default())
            .await
            .unwrap();
        expected.push((key, Expect::Value(value)));
    }
    for i in 0..20 {
        expected.push((format!("never-written-{i}"), Expect::Missing));
    }
    // Garbage under the namespace: a foreign string, and a key of another type (which
    // makes MGET answer nil for it and a GET fail).
    let _: () = raw
        .set(format!("{ns}:intruder"), "not ours", None, None, false)
        .await
        .unwrap();
    expected.push(("intruder".into(), Expect::Corrupt));
    common::plant_hash(&raw, &ns, "hashy").await;
    expected.push(("hashy".into(), Expect::Corrupt));
    registry.put("deleted", "gone soon").await.unwrap();
    registry
        .delete_opts("deleted", Default::default())
        .await
        .unwrap();
    expected.push(("deleted".into(), Expect::Missing));

    let expected = Arc::new(expected);
    let before = registry.stats().await.unwrap();
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let (registry, expected) = (registry.clone(), expected.clone());
            tokio::spawn(async move {
                for i in 0..100 {
                    let (key, expect) = &expected[(t * 37 + i * 11) % expected.len()];
                    check(key, expect, &registry.get_entry(key).await);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // Every read was counted once, hit or miss (errors are neither).
    let after = registry.stats().await.unwrap();
    let reads = (after.hits + after.misses) - (before.hits + before.misses);
    let n = expected.len();
    let errors = (0..64usize)
        .flat_map(|t| (0..100usize).map(move |i| (t * 37 + i * 11) % n))
        .filter(|&i| expected[i].1 == Expect::Corrupt)
        .count() as u64;
    assert_eq!(reads, 6400 - errors);
}

/// A server of the test's own, to freeze, and a registry on it with a 400 ms timeout.
async fn freezable() -> (common::Server, Arc<RedisRegistry>) {
    let port = common::free_port();
    let server = common::durable(port, &[]);
    let registry = RedisRegistry::connect(
        RedisConfig::new(format!("redis://127.0.0.1:{port}"))
            .namespace(common::fresh_namespace())
            .command_timeout(Duration::from_millis(400)),
    )
    .await
    .unwrap();
    (server, Arc::new(registry))
}

/// Fifty concurrent calls `op(i)` on a frozen server: every one fails transiently, and
/// all within two timeouts (a queued call waits for its batch, bounded by its own
/// timeout, while the batch's command has the same bound).
async fn all_fail_promptly<T, Fut>(op: impl Fn(usize) -> Fut)
where
    T: std::fmt::Debug + Send + 'static,
    Fut: std::future::Future<Output = Result<T, Error>> + Send + 'static,
{
    let started = Instant::now();
    let calls: Vec<_> = (0..50).map(|i| tokio::spawn(op(i))).collect();
    for call in calls {
        let err = call.await.unwrap().expect_err("a frozen server answered");
        assert!(err.is_transient(), "{err:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the calls took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_queued_on_a_frozen_server_time_out_and_recover_when_it_thaws() {
    let (server, registry) = freezable().await;
    registry.put("k", "v").await.unwrap();

    server.pause();
    let frozen = registry.clone();
    all_fail_promptly(move |_| {
        let registry = frozen.clone();
        async move { registry.get_entry("k").await }
    })
    .await;

    server.resume();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let gets: Vec<_> = (0..50)
            .map(|_| {
                let registry = registry.clone();
                tokio::spawn(async move { registry.get_entry("k").await })
            })
            .collect();
        let mut ok = 0;
        for g in gets {
            if let Ok(Some(e)) = g.await.unwrap() {
                assert_eq!(&e.value, &Bytes::from_static(b"v"));
                ok += 1;
            }
        }
        if ok == 50 {
            break;
        }
        assert!(Instant::now() < deadline, "gets did not recover: {ok}/50");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_queued_on_a_frozen_server_time_out_and_acknowledged_ones_are_kept() {
    let (server, registry) = freezable().await;
    let acked = common::write_acked(&registry, 20).await;

    server.pause();
    let frozen = registry.clone();
    // Puts and imports queue together; a timeout names the caller's own operation.
    all_fail_promptly(move |i| {
        let registry = frozen.clone();
        async move {
            let key = format!("frozen/{i}");
            let (op, result) = if i % 2 == 0 {
                ("put", registry.put(&key, "v").await.map(|_| ()))
            } else {
                let copy = nautilus_core::Entry::new(&b"v"[..], Version::from_raw(1 << 40), None);
                ("import", registry.import(&key, copy).await.map(|_| ()))
            };
            if let Err(Error::Timeout { op: named, .. }) = &result {
                assert_eq!(*named, op, "{key}");
            }
            result
        }
    })
    .await;

    server.resume();
    common::until_recovered(&registry, Duration::from_secs(15)).await;
    // Concurrent puts (batched) work again, and nothing acknowledged was lost.
    let puts: Vec<_> = (0..50)
        .map(|i| {
            let registry = registry.clone();
            tokio::spawn(async move { (i, registry.put(&format!("after/{i}"), "v").await) })
        })
        .collect();
    let mut after = Vec::new();
    for p in puts {
        let (i, v) = p.await.unwrap();
        after.push((format!("after/{i}"), v.unwrap()));
    }
    common::assert_kept(&registry, &acked).await;
    common::assert_kept(&registry, &after).await;
}
