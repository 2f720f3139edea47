//! The conformance checks of capacity: limits readable and changeable at run time,
//! enforced as the capabilities say (by evicting or by refusing), on puts and imports,
//! and refusals that name the limit a caller can raise.

#![allow(clippy::panic)] // assertions are the point of a check

use bytes::Bytes;

use super::Harness;
use super::answered::Answered;
use super::checks::v;
use super::tombstones::assert_absent;
use crate::error::{CapacityLimit, Error};
use crate::ext::RegistryExt;
use crate::{Capacity, Entry, PutItem, Version};

/// Limits are readable and changeable at run time, and enforced the way the backend's
/// capabilities say: by evicting, or by refusing new records.
pub async fn capacity_is_enforced(h: &Harness) {
    let r = &h.registry;
    let caps = r.capabilities();
    if !caps.max_records {
        assert!(r.set_capacity(Capacity::records(10)).await.is_err());
        return;
    }
    assert!(matches!(
        r.set_capacity(Capacity::records(0)).await,
        Err(Error::InvalidArgument { .. })
    ));
    r.set_capacity(Capacity::records(20)).await.answered();
    assert_eq!(r.capacity().await.answered().max_records, Some(20));
    let stats_before = r.stats().await.answered();
    let mut refused = 0;
    for i in 0..60 {
        match r.put(&format!("cap/{i}"), v("x")).await {
            Ok(_) => {}
            Err(Error::CapacityExceeded { .. }) => refused += 1,
            Err(e) => panic!("unexpected error at record {i}: {e}"),
        }
    }
    let count = r.count().await.answered();
    assert!(count <= 20, "{count} records held under a limit of 20");
    if caps.evicts {
        assert_eq!(refused, 0, "an evicting backend refused writes");
        let stats = r.stats().await.answered();
        assert_eq!(
            stats.expirations, stats_before.expirations,
            "records without an expiry, evicted to make room, were counted as expired: \
             {stats_before:?} -> {stats:?}"
        );
        assert!(
            count >= 10,
            "eviction removed far more than needed: {count} left"
        );
    } else {
        assert_eq!(
            refused, 40,
            "a refusing backend must refuse exactly the excess"
        );
        assert_eq!(count, 20);
        // Updates of existing records are not new records.
        r.put("cap/0", v("updated")).await.answered();
        // Expired records do not count against the limit.
        r.delete("cap/1").await.answered();
        r.put_with_ttl("cap/ttl", v("x"), h.ttl_unit())
            .await
            .answered();
        assert!(matches!(
            r.put("cap/new", v("x")).await,
            Err(Error::CapacityExceeded { .. })
        ));
        h.advance(h.ttl_unit()).await;
        r.put("cap/new", v("x"))
            .await
            .expect("an expired record must not count against the limit");
    }
    // Lowering the limit at run time.
    r.set_capacity(Capacity::records(5)).await.answered();
    if caps.evicts {
        assert!(
            r.count().await.answered() <= 5,
            "lowering the limit did not evict"
        );
        // Below the old limit, an evicting backend still takes every write.
        for i in 0..30 {
            let key = format!("cap/low/{i}");
            if let Err(e) = r.put(&key, v("x")).await {
                panic!("an evicting backend refused {key} under a limit of 5: {e}");
            }
        }
        let count = r.count().await.answered();
        assert!(
            (1..=5).contains(&count),
            "{count} records held under a limit of 5"
        );
    } else {
        assert!(matches!(
            r.put("cap/more", v("x")).await,
            Err(Error::CapacityExceeded { .. })
        ));
    }
    r.set_capacity(Capacity::unbounded()).await.answered();
    assert_eq!(
        r.capacity().await.answered().max_records,
        None,
        "capacity() still tells a record limit after it was lifted"
    );
    for i in 0..40 {
        r.put(&format!("cap/unbounded/{i}"), v("x"))
            .await
            .answered();
    }
    assert!(r.count().await.answered() >= 40);
}

/// A byte limit is enforced as the capabilities say: a refusing backend answers a
/// write past it with `CapacityExceeded` and stores nothing; an evicting one keeps
/// the bytes of its live records within it. A backend that claims no byte limit
/// refuses to set one.
pub async fn byte_limits_are_enforced(h: &Harness) {
    let r = &h.registry;
    let caps = r.capabilities();
    const LIMIT: u64 = 1 << 20;
    let capacity = Capacity::unbounded().with_max_bytes(Some(LIMIT));
    if !caps.max_bytes {
        assert!(
            r.set_capacity(capacity).await.is_err(),
            "a backend that claims no byte limit accepted one"
        );
        return;
    }
    assert!(
        matches!(
            r.set_capacity(Capacity::unbounded().with_max_bytes(Some(0)))
                .await,
            Err(Error::InvalidArgument { .. })
        ),
        "a byte limit of zero must be refused, as a record limit of zero is"
    );
    r.set_capacity(capacity).await.answered();
    assert_eq!(r.capacity().await.answered().max_bytes, Some(LIMIT));
    let value = Bytes::from(vec![b'b'; 1000]);
    let size = |k: &str| (k.len() + value.len()) as u64;
    let (mut stored, mut refused) = (Vec::new(), 0);
    for i in 0..1200 {
        let key = format!("by/{i:04}");
        match r.put(&key, value.clone()).await {
            Ok(_) => stored.push(key),
            Err(Error::CapacityExceeded { .. }) => {
                refused += 1;
                assert_eq!(
                    r.get(&key).await.answered(),
                    None,
                    "a refused write was stored"
                );
            }
            Err(e) => panic!("unexpected error at record {i}: {e}"),
        }
    }
    let stats = r.stats().await.answered();
    assert!(
        stats.bytes <= LIMIT,
        "{} bytes held under a limit of {LIMIT}",
        stats.bytes
    );
    let count = r.count().await.answered();
    let held = count * size("by/0000");
    assert!(
        held <= LIMIT,
        "{count} records of {} bytes held under a limit of {LIMIT}",
        size("by/0000")
    );
    if caps.evicts {
        assert_eq!(refused, 0, "an evicting backend refused writes");
        assert!(count > 0, "eviction removed everything");
    } else {
        assert!(
            refused > 0,
            "a backend that refuses past its byte limit never refused ({} bytes written)",
            1200 * size("by/0000")
        );
        assert_eq!(count, stored.len() as u64);
        let first = &stored[0];
        r.put(first, value.clone())
            .await
            .expect("a rewrite of the same size needs no room");
        r.delete(&stored[1]).await.answered();
        r.put("by/room", value.clone())
            .await
            .expect("a delete makes room");
    }
}

/// Imports count against the record limit as puts do: a refusing backend answers
/// the import of a new record past it with `CapacityExceeded` and stores nothing, but
/// takes a newer copy of a record it holds, and a tombstone, which makes room; an
/// evicting one stays within the limit.
pub async fn imports_count_against_the_capacity(h: &Harness) {
    let r = &h.registry;
    let caps = r.capabilities();
    if !caps.max_records {
        return;
    }
    const MAX: u64 = 20;
    r.set_capacity(Capacity::records(MAX)).await.answered();
    let mut held = Vec::new();
    for i in 0..MAX {
        held.push(r.put(&format!("ic/{i:02}"), v("x")).await.answered());
    }
    let fresh = Entry::new(v("new"), Version::from_raw(5), None);
    if caps.evicts {
        for i in 0..MAX {
            r.import(&format!("ic/new{i:02}"), fresh.clone())
                .await
                .answered();
        }
        let count = r.count().await.answered();
        assert!(count <= MAX, "{count} records held under a limit of {MAX}");
        return;
    }
    match r.import("ic/new", fresh.clone()).await {
        Err(Error::CapacityExceeded { .. }) => {}
        other => panic!(
            "an import of a new record past the limit: expected CapacityExceeded, got {other:?}"
        ),
    }
    assert_absent(h, "ic/new", "ic/", MAX, "an import refused for capacity").await;
    let newer = Entry::new(v("y"), Version::from_raw(held[0].as_raw() + 1), None);
    assert!(
        r.import("ic/00", newer).await.answered(),
        "a newer copy of a held record is no new record"
    );
    let tomb = Entry::tombstone(Version::from_raw(held[1].as_raw() + 1), None);
    assert!(
        r.import("ic/01", tomb).await.answered(),
        "a tombstone takes no room"
    );
    assert!(
        r.import("ic/new", fresh).await.answered(),
        "an import was refused although a tombstone made room"
    );
}

/// A refusing backend's `CapacityExceeded` names the limit that was reached and its
/// value as `capacity()` reports it, for a put, a batch put and an import alike, so
/// that a caller can tell which limit to raise and from what.
pub async fn capacity_errors_name_the_limit(h: &Harness) {
    let r = &h.registry;
    let caps = r.capabilities();
    if caps.evicts {
        return;
    }
    if caps.max_records {
        r.set_capacity(Capacity::records(3)).await.answered();
        let max = r.capacity().await.answered().max_records;
        let max = max.expect("a record limit was just set");
        for i in 0..max {
            r.put(&format!("cn/{i}"), v("x")).await.answered();
        }
        assert_refusals_name(h, "cn/new", v("x"), CapacityLimit::Records, max).await;
        r.set_capacity(Capacity::unbounded()).await.answered();
        r.clear().await.answered();
    }
    if caps.max_bytes {
        // Records of 4 + 40 bytes: two fit under 100 bytes, a third does not.
        let capacity = Capacity::unbounded().with_max_bytes(Some(100));
        r.set_capacity(capacity).await.answered();
        let max = r.capacity().await.answered().max_bytes;
        let max = max.expect("a byte limit was just set");
        let value = Bytes::from(vec![b'b'; 40]);
        for key in ["cb/0", "cb/1"] {
            r.put(key, value.clone()).await.answered();
        }
        assert_refusals_name(h, "cb/2", value, CapacityLimit::Bytes, max).await;
        r.set_capacity(Capacity::unbounded()).await.answered();
    }
}

/// A put, a batch put and an import of a new record under `key` are each refused
/// with `CapacityExceeded { limit, max }`, and store nothing.
async fn assert_refusals_name(
    h: &Harness,
    key: &str,
    value: Bytes,
    limit: CapacityLimit,
    max: u64,
) {
    let r = &h.registry;
    let before = r.count().await.answered();
    let batch = r.put_many(vec![PutItem::new(key, value.clone())]).await;
    let fresh = Entry::new(value.clone(), Version::from_raw(5), None);
    let refusals = [
        ("a put", r.put(key, value).await.map(drop)),
        ("a batch put", batch.into_iter().next().answered().map(drop)),
        ("an import", r.import(key, fresh).await.map(drop)),
    ];
    for (what, res) in refusals {
        match res {
            Err(Error::CapacityExceeded {
                limit: said,
                max: said_max,
            }) => assert_eq!(
                (said, said_max),
                (limit, max),
                "{what} past the limit of {max} {limit} was refused as past {said_max} {said}"
            ),
            other => panic!(
                "{what} past the limit of {max} {limit}: expected CapacityExceeded, got {other:?}"
            ),
        }
    }
    assert_absent(h, key, "c", before, "a write refused for capacity").await;
}
