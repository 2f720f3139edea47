//! The conformance check that a batch of writes keeps every rule a single write
//! keeps: versions that go up, TTLs that expire, zero TTLs, past instants and
//! invalid keys refused.

#![allow(clippy::panic)] // assertions are the point of a check

use std::time::Duration;

use super::Harness;
use super::answered::Answered;
use super::checks::{held, v};
use crate::error::Error;
use crate::ext::RegistryExt;
use crate::{Expiry, PutItem, PutOptions};

/// A batch's writes follow the rules of single writes, each item on its own: an
/// overwrite returns a version above the one it replaced (and reads return it), an
/// item with a TTL expires, and one with a zero TTL is refused alone.
pub async fn batched_writes_keep_the_rules_of_single_writes(h: &Harness) {
    let r = &h.registry;
    let unit = h.ttl_unit();
    let before = r.put("bw/over", v("old")).await.answered();
    let items = vec![
        PutItem::new("bw/over", v("new")),
        PutItem::new("bw/short", v("s")).with_options(PutOptions::default().ttl(unit)),
        PutItem::new("bw/zero", v("z")).with_options(PutOptions::default().ttl(Duration::ZERO)),
        PutItem::new("bw/kept", v("k")),
    ];
    let results = r.put_many(items).await;
    assert_eq!(results.len(), 4, "{results:?}");
    let over = *results[0].as_ref().answered();
    assert!(
        over > before,
        "a batch's overwrite returned {over:?}, not above the replaced {before:?}"
    );
    let read = r
        .get_entry("bw/over")
        .await
        .answered()
        .expect("just written");
    assert_eq!((read.value, read.version), (v("new"), over));
    assert!(results[1].is_ok() && results[3].is_ok(), "{results:?}");
    assert!(
        matches!(results[2], Err(Error::InvalidArgument { .. })),
        "a zero TTL in a batch: {:?}",
        results[2]
    );
    assert_eq!(r.get("bw/zero").await.answered(), None);
    let short = r
        .get_entry("bw/short")
        .await
        .answered()
        .expect("live before its TTL");
    assert!(
        short.expires_at.is_some(),
        "a batch's item with a TTL was stored without an expiry"
    );
    let expiry = PutOptions::default().expiry(Expiry::After(Duration::ZERO));
    let past = PutOptions::default().expiry(Expiry::At(crate::Timestamp::from_millis(1)));
    let too_long = "k".repeat(r.limits().max_key_bytes + 1);
    let refused = r
        .put_many(vec![
            PutItem::new("bw/zero", v("z")).with_options(expiry),
            PutItem::new("bw/past", v("p")).with_options(past),
            PutItem::new(too_long.as_str(), v("l")),
        ])
        .await;
    assert!(
        matches!(
            refused[..],
            [
                Err(Error::InvalidArgument { .. }),
                Err(Error::InvalidArgument { .. }),
                Err(Error::InvalidKey { .. }),
            ]
        ),
        "a zero TTL, an instant in the past and a key past the limit in a batch: \
         {refused:?}"
    );
    assert_eq!(r.get("bw/past").await.answered(), None);
    h.advance(unit).await;
    assert_eq!(
        r.get("bw/short").await.answered(),
        None,
        "a batch's item outlived its TTL"
    );
    assert_eq!(r.get("bw/kept").await.answered(), Some(v("k")));
    // A key twice in one batch: the items are written in input order, so the later
    // one stands, at the higher version.
    let twice = r
        .put_many(vec![
            PutItem::new("bw/twice", v("first")),
            PutItem::new("bw/twice", v("second")),
        ])
        .await;
    let (first, second) = match &twice[..] {
        [Ok(first), Ok(second)] => (*first, *second),
        other => panic!("a key twice in a batch: {other:?}"),
    };
    assert!(
        second > first,
        "a batch's later item of a key got {second:?}, not above the earlier {first:?}"
    );
    assert_eq!(
        held(r, "bw/twice").await,
        Some((v("second"), second)),
        "a key twice in a batch did not end with its later item"
    );
}
