//! The conformance checks of conditional writes: put-if-absent, compare-and-swap,
//! conditional deletes, and races between them.

#![allow(clippy::unwrap_used, clippy::panic)] // assertions are the point of a check

use std::time::Duration;

use super::checks::v;
use super::{Harness, join_all};
use crate::error::Error;
use crate::ext::RegistryExt;
use crate::record::{Condition, DeleteOptions, Entry, Expiry, Version};

/// Put-if-absent succeeds once; then it is a conflict naming the stored version.
pub async fn put_if_absent_has_one_winner(h: &Harness) {
    let r = &h.registry;
    let first = r
        .put_if_absent("once", v("1"), Expiry::Never)
        .await
        .unwrap();
    match r.put_if_absent("once", v("2"), Expiry::Never).await {
        Err(Error::Conflict {
            key,
            expected,
            actual,
        }) => {
            assert_eq!(key, "once");
            assert_eq!(expected, None);
            assert_eq!(actual, Some(first));
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(r.get("once").await.unwrap(), Some(v("1")));
}

/// Compare-and-swap applies only on the named version; a miss reports both versions.
pub async fn compare_and_swap_checks_the_version(h: &Harness) {
    let r = &h.registry;
    let v1 = r.put("cas", v("1")).await.unwrap();
    let v2 = r
        .compare_and_swap("cas", v1, v("2"), Expiry::Never)
        .await
        .unwrap();
    assert!(v2 > v1);
    match r.compare_and_swap("cas", v1, v("3"), Expiry::Never).await {
        Err(Error::Conflict {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (Some(v1), Some(v2))),
        other => panic!("expected Conflict on a stale version, got {other:?}"),
    }
    assert_eq!(r.get("cas").await.unwrap(), Some(v("2")));
    match r
        .compare_and_swap("cas-missing", v1, v("x"), Expiry::Never)
        .await
    {
        Err(Error::Conflict {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (Some(v1), None)),
        other => panic!("expected Conflict on a missing key, got {other:?}"),
    }
    assert_eq!(r.get("cas-missing").await.unwrap(), None);
}

/// A delete that names a version removes only that version.
pub async fn conditional_delete_checks_the_version(h: &Harness) {
    let r = &h.registry;
    let v1 = r.put("del", v("1")).await.unwrap();
    let v2 = r.put("del", v("2")).await.unwrap();
    assert!(matches!(
        r.delete_if_version("del", v1).await,
        Err(Error::Conflict { actual: Some(a), .. }) if a == v2
    ));
    assert!(
        r.exists("del").await.unwrap(),
        "a refused delete must not delete"
    );
    assert!(r.delete_if_version("del", v2).await.unwrap());
    assert!(!r.exists("del").await.unwrap());
    assert!(
        !r.delete("del").await.unwrap(),
        "deleting twice removes nothing"
    );
    assert!(matches!(
        r.delete_opts(
            "del",
            DeleteOptions::default().condition(Condition::Version(v2))
        )
        .await,
        Err(Error::Conflict { actual: None, .. })
    ));
}

/// A delete under `Condition::Absent` deletes nothing: `Ok(None)` when there is no
/// live record (none ever, an expired one, a deleted one), leaving no tombstone even
/// when asked for one; `Conflict` naming the live version when there is one, which
/// stays as it was.
pub async fn absent_delete_deletes_nothing(h: &Harness) {
    let r = &h.registry;
    let absent = DeleteOptions::default().condition(Condition::Absent);
    let unit = h.ttl_unit();
    r.put_with_ttl("da/expired", v("x"), unit).await.unwrap();
    r.put("da/deleted", v("x")).await.unwrap();
    r.delete("da/deleted").await.unwrap();
    h.advance(unit).await;
    for key in ["da/never", "da/expired", "da/deleted"] {
        assert_eq!(
            r.delete_opts(key, absent).await.unwrap(),
            None,
            "an Absent delete of {key}, which holds no live record"
        );
        let with_tombstone = absent.tombstone(Duration::from_secs(3600));
        assert_eq!(
            r.delete_opts(key, with_tombstone).await.unwrap(),
            None,
            "an Absent delete with a tombstone of {key}, which holds no live record"
        );
    }
    // A key never written has no tombstone of its own: only the delete could leave one.
    let copy = Entry::new(v("copy"), Version::from_raw(5), None);
    assert!(
        r.import("da/never", copy).await.unwrap(),
        "an Absent delete left a tombstone that refused an import"
    );
    assert!(r.delete("da/never").await.unwrap());

    let live = r.put("da/live", v("kept")).await.unwrap();
    let stats = r.stats().await.unwrap();
    match r.delete_opts("da/live", absent).await {
        Err(Error::Conflict {
            key,
            expected,
            actual,
        }) => assert_eq!(
            (key.as_str(), expected, actual),
            ("da/live", None, Some(live))
        ),
        other => panic!("an Absent delete of a live record: expected Conflict, got {other:?}"),
    }
    let entry = r.get_entry("da/live").await.unwrap();
    assert_eq!(
        entry.map(|e| (e.value, e.version)),
        Some((v("kept"), live)),
        "an Absent delete must not delete"
    );
    assert_eq!(
        r.stats().await.unwrap().deletes,
        stats.deletes,
        "a refused Absent delete was counted as a delete"
    );
    assert_eq!(r.count().await.unwrap(), 1);
}

/// Many clients racing the same compare-and-swap: exactly one wins, the others get a
/// conflict naming the winner's version.
pub async fn concurrent_compare_and_swap_has_exactly_one_winner(h: &Harness) {
    let r = &h.registry;
    let start = r.put("race", v("start")).await.unwrap();
    let attempts = (0..16)
        .map(|i| {
            let r = r.clone();
            async move {
                r.compare_and_swap("race", start, v(&format!("w{i}")), Expiry::Never)
                    .await
            }
        })
        .collect();
    let results = join_all(attempts).await;
    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let winner = *winners[0];
    for res in &results {
        if let Err(e) = res {
            assert!(
                matches!(e, Error::Conflict { actual: Some(a), .. } if *a == winner),
                "loser got {e:?}"
            );
        }
    }
    assert_eq!(r.get_entry("race").await.unwrap().unwrap().version, winner);
}
