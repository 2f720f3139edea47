//! The conformance checks of the counters of what a registry holds and loses:
//! `bytes`, `evictions` and `expirations`, for backends that count them.

#![allow(clippy::panic)] // assertions are the point of a check

use bytes::Bytes;

use super::Harness;
use super::answered::Answered;
use super::checks::v;
use crate::ext::RegistryExt;

/// Where the backend counts `bytes`: a record adds at least its key's and value's
/// length, a smaller value gives some back, and deleting the record gives back all it
/// took.
pub async fn bytes_follow_the_records_held(h: &Harness) {
    let r = &h.registry;
    let key = "sb/key";
    let size = r.limits().max_value_bytes.min(1000);
    let before = r.stats().await.answered().bytes;
    r.put(key, Bytes::from(vec![7u8; size])).await.answered();
    let held = r.stats().await.answered().bytes;
    if before == 0 && held == 0 {
        return; // not counted: allowed
    }
    let least = before + (key.len() + size) as u64;
    assert!(
        held >= least,
        "a record of {} bytes of key and value took bytes from {before} to {held}",
        key.len() + size
    );
    r.put(key, v("s")).await.answered();
    let smaller = r.stats().await.answered().bytes;
    assert!(
        smaller < held && smaller > before,
        "a value of {size} bytes replaced by one of 1 took bytes from {held} to {smaller} \
         (from {before} before the record)"
    );
    r.delete(key).await.answered();
    assert_eq!(
        r.stats().await.answered().bytes,
        before,
        "deleting the record did not give back the bytes it took"
    );
}

/// A record removed because it expired is never an eviction: with room to spare,
/// records that expire, are read and counted leave `evictions` as it was, and add at
/// most one expiration each.
pub async fn expired_records_are_not_evictions(h: &Harness) {
    let r = &h.registry;
    let unit = h.ttl_unit();
    let before = r.stats().await.answered();
    let keys: Vec<String> = (0..10).map(|i| format!("ev/{i}")).collect();
    for key in &keys {
        r.put_with_ttl(key, v("x"), unit).await.answered();
    }
    h.advance(unit).await;
    for key in &keys {
        assert_eq!(r.get(key).await.answered(), None, "{key} outlived its TTL");
    }
    assert_eq!(r.count().await.answered(), 0);
    let after = r.stats().await.answered();
    assert_eq!(
        after.evictions, before.evictions,
        "records that expired were counted as evicted: {before:?} -> {after:?}"
    );
    assert!(
        after.expirations <= before.expirations + keys.len() as u64,
        "{} records expired, counted {} times: {before:?} -> {after:?}",
        keys.len(),
        after.expirations - before.expirations
    );
}
