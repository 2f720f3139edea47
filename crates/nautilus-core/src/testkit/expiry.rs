//! The conformance checks of expiry: TTLs and instants, what an expired record is
//! (nothing), and touch.

#![allow(clippy::panic)] // assertions are the point of a check

use std::time::Duration;

use super::Harness;
use super::answered::Answered;
use super::checks::v;
use crate::error::Error;
use crate::ext::RegistryExt;
use crate::{Expiry, PutOptions, Timestamp};

/// A zero TTL, or an expiry that is not in the future, is an invalid argument.
pub async fn zero_ttl_is_refused(h: &Harness) {
    let r = &h.registry;
    assert!(matches!(
        r.put_with_ttl("z", v("x"), Duration::ZERO).await,
        Err(Error::InvalidArgument { .. })
    ));
    let past = Expiry::At(Timestamp::from_millis(1));
    assert!(matches!(
        r.put_opts("z", v("x"), PutOptions::default().expiry(past))
            .await,
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(r.get("z").await.answered(), None);
}

/// A record with a TTL is readable until it expires and gone after.
pub async fn ttl_expires_records(h: &Harness) {
    let r = &h.registry;
    let unit = h.ttl_unit();
    r.put_with_ttl("short", v("s"), unit).await.answered();
    r.put("forever", v("f")).await.answered();
    let entry = r
        .get_entry("short")
        .await
        .answered()
        .expect("live before its TTL");
    let expires = entry
        .expires_at
        .expect("a TTL write has an expiry")
        .as_millis();
    let version_ms = entry.version.millis();
    let unit_ms = unit.as_millis() as u64;
    assert!(
        expires >= version_ms + unit_ms - 50 && expires <= version_ms + unit_ms + 2_000,
        "expiry {expires} is not about {unit_ms} ms after the write ({version_ms})"
    );
    h.advance(unit).await;
    assert_eq!(
        r.get("short").await.answered(),
        None,
        "expired record was returned"
    );
    assert_eq!(r.get("forever").await.answered(), Some(v("f")));
}

/// Expired records are not scanned, not counted, and do not block put-if-absent.
pub async fn expired_records_are_not_listed_counted_or_in_the_way(h: &Harness) {
    let r = &h.registry;
    let unit = h.ttl_unit();
    let mut versions = Vec::new();
    for i in 0..10 {
        versions.push(
            r.put_with_ttl(&format!("e/{i}"), v("x"), unit)
                .await
                .answered(),
        );
    }
    r.put("e/live", v("y")).await.answered();
    assert_eq!(r.count().await.answered(), 11);
    h.advance(unit).await;
    assert_eq!(
        r.count().await.answered(),
        1,
        "expired records were counted"
    );
    assert_eq!(
        r.stats().await.answered().records,
        1,
        "expired records were counted in stats"
    );
    let page = r.scan("e/", None, 100).await.answered();
    let mut keys: Vec<_> = page.records.into_iter().map(|(k, _)| k).collect();
    let mut cursor = page.next;
    while let Some(c) = cursor {
        let p = r.scan("e/", Some(&c), 100).await.answered();
        keys.extend(p.records.into_iter().map(|(k, _)| k));
        cursor = p.next;
    }
    assert_eq!(
        keys,
        vec!["e/live".to_owned()],
        "expired records were listed"
    );
    r.put_if_absent("e/3", v("again"), Expiry::Never)
        .await
        .expect("an expired record must not block put-if-absent");
    let got = r.get_many(&["e/1", "e/3"]).await;
    assert_eq!(got[0].as_ref().answered(), &None);
    assert_eq!(
        got[1].as_ref().answered().as_ref().answered().value,
        v("again")
    );
    assert!(
        !r.delete("e/2").await.answered(),
        "deleting an expired record removes nothing"
    );
    assert_eq!(r.touch("e/4", Expiry::Never).await.answered(), None);
    // An expired record's version names nothing: a swap from it is a conflict with
    // no live record, and brings nothing back.
    let swapped = r
        .compare_and_swap("e/5", versions[5], v("back"), Expiry::Never)
        .await;
    assert!(
        matches!(swapped, Err(Error::Conflict { actual: None, .. })),
        "a swap from an expired record's version: {swapped:?}"
    );
    assert_eq!(r.get("e/5").await.answered(), None);
}

/// Touch sets or removes a TTL, bumps the version and leaves the value.
pub async fn touch_changes_expiry_without_rewriting(h: &Harness) {
    let r = &h.registry;
    let unit = h.ttl_unit();
    let v1 = r.put_with_ttl("t", v("value"), unit).await.answered();
    let v2 = r
        .touch("t", Expiry::Never)
        .await
        .answered()
        .expect("live record");
    assert!(v2 > v1, "touch must give a newer version");
    let e = r.get_entry("t").await.answered().answered();
    assert_eq!(
        (e.value.clone(), e.version, e.expires_at),
        (v("value"), v2, None)
    );
    h.advance(unit).await;
    assert_eq!(
        r.get("t").await.answered(),
        Some(v("value")),
        "TTL removal did not stick"
    );
    let v3 = r
        .touch("t", Expiry::After(unit))
        .await
        .answered()
        .answered();
    assert!(v3 > v2);
    assert!(
        r.get_entry("t")
            .await
            .answered()
            .answered()
            .expires_at
            .is_some()
    );
    h.advance(unit).await;
    assert_eq!(
        r.get("t").await.answered(),
        None,
        "a touched TTL did not expire"
    );
    assert_eq!(r.touch("never", Expiry::Never).await.answered(), None);
    assert!(matches!(
        r.touch("t2", Expiry::After(Duration::ZERO)).await,
        Err(Error::InvalidArgument { .. }) | Ok(None)
    ));
    // A zero TTL on a live record is refused, as a put's is, and changes nothing.
    r.put_opts("t3", v("v"), PutOptions::default().ttl(unit * 100))
        .await
        .answered();
    let before = r.get_entry("t3").await.answered();
    assert!(
        matches!(
            r.touch("t3", Expiry::After(Duration::ZERO)).await,
            Err(Error::InvalidArgument { .. })
        ),
        "touch with a zero TTL was not refused"
    );
    assert!(
        matches!(
            r.touch("t3", Expiry::At(Timestamp::from_millis(1))).await,
            Err(Error::InvalidArgument { .. })
        ),
        "touch with an instant in the past was not refused"
    );
    assert_eq!(
        r.get_entry("t3").await.answered(),
        before,
        "a refused touch changed the record"
    );
}
