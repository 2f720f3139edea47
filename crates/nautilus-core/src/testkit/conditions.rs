//! The conformance checks of conditional writes: put-if-absent, compare-and-swap,
//! conditional deletes, and races between them.

#![allow(clippy::panic)] // assertions are the point of a check

use super::answered::Answered;

use std::time::Duration;

use super::checks::{held, ready_else_awaited, same_refusal, v};
use super::{Harness, join_all};
use crate::error::Error;
use crate::ext::RegistryExt;
use bytes::Bytes;

use crate::registry::Registry;
use crate::{Condition, DeleteOptions, Entry, Expiry, PutOptions, Version};

/// Put-if-absent succeeds once; then it is a conflict naming the stored version.
pub async fn put_if_absent_has_one_winner(h: &Harness) {
    let r = &h.registry;
    let first = r
        .put_if_absent("once", v("1"), Expiry::Never)
        .await
        .answered();
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
    assert_eq!(r.get("once").await.answered(), Some(v("1")));
}

/// Compare-and-swap applies only on the named version; a miss reports both versions.
pub async fn compare_and_swap_checks_the_version(h: &Harness) {
    let r = &h.registry;
    let v1 = r.put("cas", v("1")).await.answered();
    let v2 = r
        .compare_and_swap("cas", v1, v("2"), Expiry::Never)
        .await
        .answered();
    assert!(v2 > v1);
    match r.compare_and_swap("cas", v1, v("3"), Expiry::Never).await {
        Err(Error::Conflict {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (Some(v1), Some(v2))),
        other => panic!("expected Conflict on a stale version, got {other:?}"),
    }
    assert_eq!(r.get("cas").await.answered(), Some(v("2")));
    match r
        .compare_and_swap("cas-missing", v1, v("x"), Expiry::Never)
        .await
    {
        Err(Error::Conflict {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (Some(v1), None)),
        other => panic!("expected Conflict on a missing key, got {other:?}"),
    }
    assert_eq!(r.get("cas-missing").await.answered(), None);
}

/// A delete that names a version removes only that version.
pub async fn conditional_delete_checks_the_version(h: &Harness) {
    let r = &h.registry;
    let v1 = r.put("del", v("1")).await.answered();
    let v2 = r.put("del", v("2")).await.answered();
    assert!(matches!(
        r.delete_if_version("del", v1).await,
        Err(Error::Conflict { actual: Some(a), .. }) if a == v2
    ));
    assert!(
        r.exists("del").await.answered(),
        "a refused delete must not delete"
    );
    assert!(r.delete_if_version("del", v2).await.answered());
    assert!(!r.exists("del").await.answered());
    assert!(
        !r.delete("del").await.answered(),
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
    r.put_with_ttl("da/expired", v("x"), unit).await.answered();
    r.put("da/deleted", v("x")).await.answered();
    r.delete("da/deleted").await.answered();
    h.advance(unit).await;
    for key in ["da/never", "da/expired", "da/deleted"] {
        assert_eq!(
            r.delete_opts(key, absent).await.answered(),
            None,
            "an Absent delete of {key}, which holds no live record"
        );
        let with_tombstone = absent.tombstone(Duration::from_secs(3600));
        assert_eq!(
            r.delete_opts(key, with_tombstone).await.answered(),
            None,
            "an Absent delete with a tombstone of {key}, which holds no live record"
        );
    }
    // A key never written has no tombstone of its own: only the delete could leave one.
    let copy = Entry::new(v("copy"), Version::from_raw(5), None);
    assert!(
        r.import("da/never", copy).await.answered(),
        "an Absent delete left a tombstone that refused an import"
    );
    assert!(r.delete("da/never").await.answered());

    let live = r.put("da/live", v("kept")).await.answered();
    let stats = r.stats().await.answered();
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
    assert_eq!(
        held(r, "da/live").await,
        Some((v("kept"), live)),
        "an Absent delete must not delete"
    );
    assert_eq!(
        r.stats().await.answered().deletes,
        stats.deletes,
        "a refused Absent delete was counted as a delete"
    );
    assert_eq!(r.count().await.answered(), 1);
}

/// Many clients racing the same compare-and-swap: exactly one wins, the others get a
/// conflict naming the winner's version.
pub async fn concurrent_compare_and_swap_has_exactly_one_winner(h: &Harness) {
    let r = &h.registry;
    let start = r.put("race", v("start")).await.answered();
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
    assert_eq!(
        r.get_entry("race").await.answered().answered().version,
        winner
    );
}

/// A write made without waiting ([`Registry::put_ready`](crate::Registry::put_ready))
/// answers exactly as the awaited one ([`Registry::put_opts`](crate::Registry::put_opts)):
/// the same refusals (invalid key, oversized value, zero TTL), the same conditions, an
/// expiry and newer versions; and a value handed back means nothing was done. Each step
/// runs through both on two keys in the same state.
pub async fn put_ready_answers_as_put_opts(h: &Harness) {
    let r = &h.registry;
    let too_big = Bytes::from(vec![b'x'; r.limits().max_value_bytes + 1]);
    let ttl = h.ttl_unit() * 100;
    let mut last: [Option<Version>; 2] = [None, None];
    // (what, value, options, whether it must be applied); conditions on the version
    // use each key's own last version.
    type Step = (&'static str, Bytes, fn(Option<Version>) -> PutOptions, bool);
    let steps: [Step; 7] = [
        ("a first put", v("1"), |_| PutOptions::default(), true),
        ("an overwrite", v("2"), |_| PutOptions::default(), true),
        (
            "put if absent on a live record",
            v("3"),
            |_| PutOptions::default().condition(Condition::Absent),
            false,
        ),
        (
            "a stale compare-and-swap",
            v("4"),
            |_| PutOptions::default().condition(Condition::Version(Version::from_raw(1))),
            false,
        ),
        (
            "a compare-and-swap on the live version",
            v("5"),
            |last| PutOptions::default().condition(Condition::Version(last.answered())),
            true,
        ),
        (
            "a zero TTL",
            v("6"),
            |_| PutOptions::default().ttl(Duration::ZERO),
            false,
        ),
        (
            "an oversized value",
            Bytes::new(),
            |_| PutOptions::default(),
            false,
        ),
    ];
    for (what, value, options, applied) in steps {
        let value = if what == "an oversized value" {
            too_big.clone()
        } else {
            value
        };
        let keys = ["pr/await", "pr/ready"];
        let mut answers = Vec::new();
        for (side, key) in keys.iter().enumerate() {
            let opts = options(last[side]);
            let before = r.get_entry(key).await.answered();
            let answer = if side == 0 {
                r.put_opts(key, value.clone(), opts).await
            } else {
                ready_else_awaited(
                    h,
                    (what, "put_ready", "value"),
                    key,
                    &before,
                    value.clone(),
                    |value| r.put_ready(key, value, opts),
                    |value| r.put_opts(key, value, opts),
                )
                .await
            };
            match &answer {
                Ok(version) => {
                    assert!(applied, "{what} was applied through {key}");
                    assert!(
                        last[side].is_none_or(|l| *version > l),
                        "{what} through {key}: version {version:?} not above {:?}",
                        last[side]
                    );
                    last[side] = Some(*version);
                    let now = r.get_entry(key).await.answered().answered();
                    assert_eq!(now.value, value, "{what} through {key}: value");
                }
                Err(_) => {
                    assert!(!applied, "{what} was refused through {key}: {answer:?}");
                    assert_eq!(
                        r.get_entry(key).await.answered(),
                        before,
                        "{what} through {key} was refused but changed the record"
                    );
                }
            }
            answers.push(answer);
        }
        same_refusal(what, ["put_opts", "put_ready"], &answers);
    }
    // An invalid key, and an expiry, the same way.
    let refused = [r.put_opts("", v("x"), PutOptions::default()).await, {
        match r.put_ready("", v("x"), PutOptions::default()) {
            Ok(answer) => answer,
            Err(back) => r.put_opts("", back, PutOptions::default()).await,
        }
    }];
    for answer in refused {
        assert!(
            matches!(answer, Err(Error::InvalidKey { .. })),
            "an empty key: {answer:?}"
        );
    }
    let ttl_opts = PutOptions::default().ttl(ttl);
    r.put_opts("pr/ttl-await", v("t"), ttl_opts)
        .await
        .answered();
    if let Ok(answer) = r.put_ready("pr/ttl-ready", v("t"), ttl_opts) {
        answer.answered();
        for key in ["pr/ttl-await", "pr/ttl-ready"] {
            let entry = r.get_entry(key).await.answered().answered();
            assert!(
                entry.expires_at.is_some(),
                "a put with a TTL through {key} has no expiry"
            );
        }
    }
}
