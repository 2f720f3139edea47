//! Versions and expiries that a put takes from the client's estimate of the server's
//! clock: they still only go up per key, whatever another writer stored, and the
//! expiry a reader sees is the instant Redis enforces.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use fred::prelude::ClientLike;
use nautilus_core::{
    Bytes, Condition, Entry, Error, Expiry, PutItem, PutOptions, Registry, RegistryExt, Timestamp,
    Version,
};

/// A version an hour ahead of now: what a node whose clock runs fast would write.
fn from_the_future() -> Version {
    let hour_ahead = Timestamp::now().as_millis() + 3_600_000;
    Version::from_raw((hour_ahead << Version::COUNTER_BITS) | 7)
}

#[tokio::test]
async fn a_put_over_a_version_from_a_fast_clock_still_goes_up() {
    let registry = common::registry("NAUTILUS_REDIS_URL").await;
    let ahead = from_the_future();
    assert!(
        registry
            .import("k", Entry::new(Bytes::from_static(b"old"), ahead, None))
            .await
            .unwrap()
    );
    // The client's candidate (now) is below the stored version: the server writes
    // the next version after it instead, and says which.
    let v1 = registry.put("k", "new").await.unwrap();
    assert_eq!(v1.as_raw(), ahead.as_raw() + 1);
    let entry = registry.get_entry("k").await.unwrap().unwrap();
    assert_eq!((entry.version, &entry.value[..]), (v1, &b"new"[..]));
    // The client remembers it: its next version is above it without a bump.
    let v2 = registry.put("other", "x").await.unwrap();
    assert!(v2 > v1);
    // Compare-and-swap works with the bumped version, and conflicts name it.
    let v3 = registry
        .compare_and_swap("k", v1, "cas", Expiry::Never)
        .await
        .unwrap();
    assert!(v3 > v1);
    match registry
        .compare_and_swap("k", v1, "stale", Expiry::Never)
        .await
    {
        Err(Error::Conflict {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (Some(v1), Some(v3))),
        other => panic!("{other:?}"),
    }
    // The same in a batch.
    let ahead = from_the_future();
    registry
        .import("b", Entry::new(Bytes::from_static(b"old"), ahead, None))
        .await
        .unwrap();
    let results = registry
        .put_many(vec![
            PutItem::new("b", "new"),
            PutItem::new("", "bad key"),
            PutItem::new("c", "fresh")
                .with_options(PutOptions::default().condition(Condition::Absent)),
        ])
        .await;
    assert!(results[0].as_ref().unwrap() > &ahead);
    assert!(matches!(results[1], Err(Error::InvalidKey { .. })));
    assert!(results[2].is_ok());
    registry.clear().await.unwrap();
}

#[tokio::test]
async fn two_writers_alternating_on_one_key_never_repeat_or_lower_a_version() {
    let (a, b) = common::two_clients("NAUTILUS_REDIS_URL").await;
    let mut last = Version::from_raw(0);
    for i in 0..300 {
        let writer = if i % 2 == 0 { &a } else { &b };
        let v = writer.put("shared", format!("{i}")).await.unwrap();
        assert!(v > last, "write {i}: {v:?} after {last:?}");
        last = v;
    }
    let (ra, rb) = tokio::join!(a.put("shared", "a"), b.put("shared", "b"));
    assert_ne!(ra.unwrap(), rb.unwrap());
    a.clear().await.unwrap();
}

#[tokio::test]
async fn the_expiry_a_reader_sees_is_the_instant_redis_enforces() {
    let url = common::url("NAUTILUS_REDIS_URL");
    let ns = common::fresh_namespace();
    let registry = common::connect(&url, &ns).await;
    let raw = common::raw_client(&url).await;
    registry
        .put_with_ttl("t", "x", Duration::from_secs(60))
        .await
        .unwrap();
    let at = Timestamp::from_millis(Timestamp::now().as_millis() + 120_000);
    registry
        .put_opts(
            "at",
            Bytes::from_static(b"y"),
            PutOptions::default().expiry(Expiry::At(at)),
        )
        .await
        .unwrap();
    let pexpiretime = fred::types::CustomCommand::new_static(
        "PEXPIRETIME",
        fred::types::ClusterHash::FirstKey,
        false,
    );
    let time =
        fred::types::CustomCommand::new_static("TIME", fred::types::ClusterHash::Random, false);
    let server_now: Vec<String> = raw.custom(time, Vec::<String>::new()).await.unwrap();
    let server_now = server_now[0].parse::<u64>().unwrap() * 1000;
    for (key, expected) in [("t", None), ("at", Some(at.as_millis()))] {
        let entry = registry.get_entry(key).await.unwrap().unwrap();
        let seen = entry.expires_at.unwrap().as_millis();
        let enforced: u64 = raw
            .custom(pexpiretime.clone(), vec![format!("{ns}:{key}")])
            .await
            .unwrap();
        assert_eq!(seen, enforced, "{key}");
        if let Some(at) = expected {
            assert_eq!(seen, at);
        } else {
            // 60 s from now on the server's clock (second resolution here, plus slack).
            assert!(
                seen.abs_diff(server_now + 60_000) <= 2_000,
                "{seen} vs {server_now}"
            );
        }
    }
    // An absolute expiry already past is refused, and nothing is written.
    let past = Timestamp::from_millis(Timestamp::now().as_millis() - 1_000);
    assert!(matches!(
        registry
            .put_opts(
                "past",
                Bytes::from_static(b"z"),
                PutOptions::default().expiry(Expiry::At(past)),
            )
            .await,
        Err(Error::InvalidArgument { .. })
    ));
    assert!(registry.get("past").await.unwrap().is_none());
    // A TTL beyond what Redis can store is refused up front, not sent.
    assert!(matches!(
        registry
            .put_with_ttl("forever-ish", "z", Duration::MAX)
            .await,
        Err(Error::InvalidArgument { .. })
    ));
    assert!(registry.get("forever-ish").await.unwrap().is_none());
    let before = registry.get_entry("t").await.unwrap().unwrap();
    assert!(matches!(
        registry.touch("t", Expiry::After(Duration::MAX)).await,
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(registry.get_entry("t").await.unwrap().unwrap(), before);
    registry.clear().await.unwrap();
}

#[tokio::test]
async fn a_record_whose_ttl_was_removed_behind_our_back_still_expires_at_its_header() {
    use fred::prelude::KeysInterface;
    let url = common::url("NAUTILUS_REDIS_URL");
    let ns = common::fresh_namespace();
    let registry = common::connect(&url, &ns).await;
    let raw = common::raw_client(&url).await;
    registry
        .put_with_ttl("p", "x", Duration::from_millis(300))
        .await
        .unwrap();
    // Someone runs PERSIST on it: Redis will keep the key for good.
    let persisted: bool = raw.persist(format!("{ns}:p")).await.unwrap();
    assert!(persisted);
    assert!(registry.get("p").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Past the expiry its header carries, it is gone for reads, batches and scans.
    assert_eq!(registry.get("p").await.unwrap(), None);
    assert!(matches!(registry.get_many(&["p"]).await[0], Ok(None)));
    let page = registry.scan("", None, 10).await.unwrap();
    assert!(page.records.is_empty(), "{:?}", page.records);
    registry.clear().await.unwrap();
}
