//! The conformance checks of tombstones: deletes that keep older copies out, imported
//! tombstones, and their collection.

#![allow(clippy::panic)] // assertions are the point of a check

use std::time::Duration;

use super::Harness;
use super::answered::Answered;
use super::checks::{held, ready_else_awaited, same_refusal, v};
use crate::ext::RegistryExt;
use crate::{DeleteOptions, Entry, Version};

/// A grace no check outlives: tombstones made with it refuse imports throughout.
fn long_grace(h: &Harness) -> Duration {
    if h.manual_time() {
        Duration::from_secs(3600)
    } else {
        Duration::from_secs(30)
    }
}

/// The keys a full scan of `prefix` returns, in small pages.
pub(super) async fn scan_keys(h: &Harness, prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor = None;
    for _ in 0..100_000 {
        let page = h.registry.scan(prefix, cursor.as_ref(), 3).await.answered();
        keys.extend(page.records.into_iter().map(|(k, _)| k));
        match page.next {
            Some(c) => cursor = Some(c),
            None => return keys,
        }
    }
    panic!("a scan of {prefix:?} did not finish");
}

/// `key` holds no live record for any reader: get, get_many, scans of `prefix` and of
/// everything; and the registry holds exactly `live` records by count and stats.
pub(super) async fn assert_absent(h: &Harness, key: &str, prefix: &str, live: u64, what: &str) {
    let r = &h.registry;
    assert_eq!(
        r.get_entry(key).await.answered(),
        None,
        "{what}: get found it"
    );
    let many = r.get_many(&[key]).await;
    assert_eq!(
        many[0].as_ref().answered(),
        &None,
        "{what}: get_many found it"
    );
    for p in [prefix, ""] {
        assert!(
            !scan_keys(h, p).await.iter().any(|k| k == key),
            "{what}: a scan of {p:?} listed it"
        );
    }
    assert_eq!(r.count().await.answered(), live, "{what}: count");
    assert_eq!(
        r.stats().await.answered().records,
        live,
        "{what}: stats.records"
    );
}

/// A delete with a tombstone answers a version above the deleted record's; until the
/// tombstone is collected no copy at or below it is imported, it is never read,
/// listed or counted, and the key written again gets a version above it.
pub async fn tombstone_deletes_refuse_older_imports_and_stay_invisible(h: &Harness) {
    let r = &h.registry;
    let grace = DeleteOptions::default().tombstone(long_grace(h));
    r.put("ts/other", v("o")).await.answered();
    let v1 = r.put("ts/k", v("1")).await.answered();
    let v2 = r.put("ts/k", v("2")).await.answered();
    let deleted = r
        .delete_opts("ts/k", grace)
        .await
        .answered()
        .expect("a delete of a live record answers its version");
    assert!(
        deleted > v2,
        "the delete's version {deleted} is not above the record's {v2}"
    );
    assert_absent(h, "ts/k", "ts/", 1, "a tombstone").await;
    for (what, version) in [
        ("an older", v1),
        ("the deleted", v2),
        ("the delete's", deleted),
    ] {
        assert!(
            !r.import("ts/k", Entry::new(v("stale"), version, None))
                .await
                .answered(),
            "{what} version was imported over a tombstone"
        );
        assert_absent(h, "ts/k", "ts/", 1, "a tombstone after a refused import").await;
    }
    // Kept for the grace asked, not for less: still refusing well into it.
    let into = if h.manual_time() {
        long_grace(h) / 2
    } else {
        Duration::from_millis(1_500)
    };
    h.advance(into).await;
    assert!(
        !r.import("ts/k", Entry::new(v("stale"), v2, None))
            .await
            .answered(),
        "a tombstone asked for {:?} was gone {into:?} after the delete",
        long_grace(h)
    );
    assert_absent(h, "ts/k", "ts/", 1, "a tombstone well into its grace").await;
    assert_eq!(
        r.delete_opts("ts/k", grace).await.answered(),
        None,
        "a tombstone was deleted as if it were a record"
    );
    let again = r.put("ts/k", v("3")).await.answered();
    assert!(
        again > deleted,
        "a write after a delete got {again}, not above the delete's {deleted}"
    );
    assert_eq!(r.get("ts/k").await.answered(), Some(v("3")));
    assert_eq!(r.count().await.answered(), 2);

    // A tombstone is no record: put-if-absent goes through, above it.
    let p = r.put("ts/p", v("1")).await.answered();
    let deleted = r.delete_opts("ts/p", grace).await.answered().answered();
    assert!(deleted > p);
    let written = r
        .put_if_absent("ts/p", v("2"), crate::Expiry::Never)
        .await
        .expect("a tombstone must not block put-if-absent");
    assert!(
        written > deleted,
        "{written} is not above the tombstone's {deleted}"
    );
}

/// `clear` removes tombstones with the records: afterwards an import of a version the
/// tombstone refused is applied, as in a fresh registry.
pub async fn clear_removes_tombstones_too(h: &Harness) {
    let r = &h.registry;
    let old = r.put("tc/k", v("old")).await.answered();
    r.delete_opts("tc/k", DeleteOptions::default().tombstone(long_grace(h)))
        .await
        .answered()
        .expect("a delete of a live record answers its version");
    let copy = || Entry::new(v("old"), old, None);
    assert!(
        !r.import("tc/k", copy()).await.answered(),
        "a tombstone let an older copy in"
    );
    r.clear().await.answered();
    assert!(
        r.import("tc/k", copy()).await.answered(),
        "after clear, an import was refused: clear left the key's tombstone"
    );
    assert_eq!(
        held(r, "tc/k").await,
        Some((v("old"), old)),
        "the import after clear"
    );
}

/// An imported tombstone removes an older live record, then refuses older copies; an
/// older or equal one is refused and the record stays; a newer record wins over it.
pub async fn imported_tombstones_remove_older_records_only(h: &Harness) {
    let r = &h.registry;
    let far = Some(h.now().saturating_add(long_grace(h)));
    let va = r.put("it/a", v("a")).await.answered();
    let ta = Version::from_raw(va.as_raw() + 1);
    assert!(
        r.import("it/a", Entry::tombstone(ta, far)).await.answered(),
        "a tombstone newer than the record was refused"
    );
    assert_absent(
        h,
        "it/a",
        "it/",
        0,
        "a record an imported tombstone removed",
    )
    .await;
    assert!(
        !r.import("it/a", Entry::new(v("a"), va, None))
            .await
            .answered(),
        "the removed record was imported back over its tombstone"
    );
    let after = r.put("it/a", v("again")).await.answered();
    assert!(
        after > ta,
        "a write after an imported tombstone got {after}"
    );

    let vb = r.put("it/b", v("b")).await.answered();
    for (what, raw) in [("an older", vb.as_raw() - 1), ("an equal", vb.as_raw())] {
        assert!(
            !r.import("it/b", Entry::tombstone(Version::from_raw(raw), far))
                .await
                .answered(),
            "{what} tombstone was applied"
        );
        let kept = r.get_entry("it/b").await.answered().map(|e| e.version);
        assert_eq!(kept, Some(vb), "{what} tombstone removed the record");
    }

    // On a key without a record, kept for the backend's own grace (no collection time).
    let tc = Version::from_raw(vb.as_raw() + 1000);
    assert!(
        r.import("it/c", Entry::tombstone(tc, None))
            .await
            .answered(),
        "a tombstone on an absent key was refused"
    );
    assert_absent(h, "it/c", "it/", 2, "an imported tombstone").await;
    let older = Entry::new(v("old"), Version::from_raw(tc.as_raw() - 1), None);
    assert!(
        !r.import("it/c", older).await.answered(),
        "an older record was imported over a tombstone"
    );
    let newer = Entry::new(v("new"), Version::from_raw(tc.as_raw() + 1), None);
    assert!(r.import("it/c", newer.clone()).await.answered());
    assert_eq!(r.get_entry("it/c").await.answered(), Some(newer));
}

/// A tombstone is kept until its collection time, and no longer refuses anything after.
pub async fn collected_tombstones_no_longer_refuse_imports(h: &Harness) {
    let r = &h.registry;
    let v1 = r.put("ct/k", v("1")).await.answered();
    let grace = if h.manual_time() {
        Duration::from_secs(60)
    } else {
        Duration::from_millis(150)
    };
    let collect_at = h.now().saturating_add(grace);
    let tomb = Entry::tombstone(Version::from_raw(v1.as_raw() + 1), Some(collect_at));
    assert!(r.import("ct/k", tomb).await.answered());
    let stale = Entry::new(v("1"), v1, None);
    if h.manual_time() {
        assert!(
            !r.import("ct/k", stale.clone()).await.answered(),
            "an older record was imported before the tombstone's collection time"
        );
    }
    let imported = h
        .wait_until(grace / 2, Duration::from_secs(5).max(grace * 4), || {
            let e = stale.clone();
            async move { r.import("ct/k", e).await.answered() }
        })
        .await;
    assert!(
        imported,
        "a tombstone still refused imports well after its collection time"
    );
    assert_eq!(r.get_entry("ct/k").await.answered(), Some(stale));
}

/// An import made without waiting ([`Registry::import_ready`](crate::Registry::import_ready))
/// answers exactly as the awaited one ([`Registry::import`](crate::Registry::import)): a
/// newer record applied, the same or an older one not, a tombstone that hides the
/// record and refuses older copies, an already-expired record that removes it, and
/// the same refusals (an oversized value, a version dated past
/// [`Version::MAX_AHEAD`], an invalid key); and an entry handed back means nothing
/// was done. Each step runs through both on two keys in the same state.
pub async fn import_ready_answers_as_import(h: &Harness) {
    use crate::error::Error;
    use bytes::Bytes;
    let r = &h.registry;
    // One reading of the clock for every step: read at each, a millisecond that ticked
    // between two steps made "an older copy" newer than the first one (a flaky failure
    // under CPU load).
    let base = h.now().as_millis();
    let at = |ms: u64, n: u64| Version::from_raw(((base + ms) << Version::COUNTER_BITS) + n);
    let expired = crate::Timestamp::from_millis(h.now().as_millis() - 3_600_000);
    let too_big = Bytes::from(vec![b'x'; r.limits().max_value_bytes + 1]);
    let too_far = (Version::MAX_AHEAD + Duration::from_secs(86_400)).as_millis() as u64;
    // (what, entry, the answer both must give: applied, not applied, or refused)
    let steps: Vec<(&str, Entry, Option<bool>)> = vec![
        (
            "a first import",
            Entry::new(v("1"), at(0, 1), None),
            Some(true),
        ),
        (
            "the same copy again",
            Entry::new(v("1"), at(0, 1), None),
            Some(false),
        ),
        (
            "an older copy",
            Entry::new(v("0"), at(0, 0), None),
            Some(false),
        ),
        (
            "a newer copy",
            Entry::new(v("2"), at(0, 2), None),
            Some(true),
        ),
        (
            "an oversized newer copy",
            Entry::new(too_big, at(0, 3), None),
            None,
        ),
        (
            "a copy from too far ahead",
            Entry::new(v("f"), at(too_far, 0), None),
            None,
        ),
        (
            "a newer tombstone",
            Entry::tombstone(at(0, 4), None),
            Some(true),
        ),
        (
            "a copy older than the tombstone",
            Entry::new(v("3"), at(0, 3), None),
            Some(false),
        ),
        (
            "a newer copy after the tombstone",
            Entry::new(v("5"), at(0, 5), None),
            Some(true),
        ),
        (
            "a newer copy already expired",
            Entry::new(v("6"), at(0, 6), Some(expired)),
            Some(true),
        ),
    ];
    for (what, entry, expected) in steps {
        let keys = ["ir/await", "ir/ready"];
        let mut answers = Vec::new();
        for key in keys {
            let before = r.get_entry(key).await.answered();
            let answer = if key == keys[0] {
                r.import(key, entry.clone()).await
            } else {
                ready_else_awaited(
                    h,
                    (what, "import_ready", "entry"),
                    key,
                    &before,
                    entry.clone(),
                    |entry| r.import_ready(key, entry),
                    |entry| r.import(key, entry),
                )
                .await
            };
            let after = r.get_entry(key).await.answered();
            match (expected, &answer) {
                (Some(applied), Ok(a)) => {
                    assert_eq!(*a, applied, "{what} through {key}");
                    let hidden = entry.is_tombstone() || entry.expires_at == Some(expired);
                    if applied && hidden {
                        assert_eq!(after, None, "{what} through {key}: still readable");
                    } else if applied {
                        assert_eq!(
                            after.as_ref().map(|e| (&e.value, e.version)),
                            Some((&entry.value, entry.version)),
                            "{what} through {key}"
                        );
                    } else {
                        assert_eq!(after, before, "{what} through {key} changed the record");
                    }
                }
                (None, Err(_)) => assert_eq!(
                    after, before,
                    "{what} through {key} was refused but changed the record"
                ),
                _ => panic!("{what} through {key}: {answer:?}"),
            }
            answers.push(answer);
        }
        same_refusal(what, ["import", "import_ready"], &answers);
    }
    let entry = Entry::new(v("x"), at(0, 1), None);
    let refused = [r.import("", entry.clone()).await, {
        match r.import_ready("", entry.clone()) {
            Ok(answer) => answer,
            Err(back) => r.import("", back).await,
        }
    }];
    for answer in refused {
        assert!(
            matches!(answer, Err(Error::InvalidKey { .. })),
            "an import under an empty key: {answer:?}"
        );
    }
}
