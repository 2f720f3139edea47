//! The conformance checks of tombstones: deletes that keep older copies out, imported
//! tombstones, and their collection.

#![allow(clippy::unwrap_used, clippy::panic)] // assertions are the point of a check

use std::time::Duration;

use super::Harness;
use super::checks::v;
use crate::ext::RegistryExt;
use crate::record::{DeleteOptions, Entry, Version};

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
        let page = h.registry.scan(prefix, cursor.as_ref(), 3).await.unwrap();
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
        r.get_entry(key).await.unwrap(),
        None,
        "{what}: get found it"
    );
    let many = r.get_many(&[key]).await;
    assert_eq!(
        many[0].as_ref().unwrap(),
        &None,
        "{what}: get_many found it"
    );
    for p in [prefix, ""] {
        assert!(
            !scan_keys(h, p).await.iter().any(|k| k == key),
            "{what}: a scan of {p:?} listed it"
        );
    }
    assert_eq!(r.count().await.unwrap(), live, "{what}: count");
    assert_eq!(
        r.stats().await.unwrap().records,
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
    r.put("ts/other", v("o")).await.unwrap();
    let v1 = r.put("ts/k", v("1")).await.unwrap();
    let v2 = r.put("ts/k", v("2")).await.unwrap();
    let deleted = r
        .delete_opts("ts/k", grace)
        .await
        .unwrap()
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
                .unwrap(),
            "{what} version was imported over a tombstone"
        );
        assert_absent(h, "ts/k", "ts/", 1, "a tombstone after a refused import").await;
    }
    assert_eq!(
        r.delete_opts("ts/k", grace).await.unwrap(),
        None,
        "a tombstone was deleted as if it were a record"
    );
    let again = r.put("ts/k", v("3")).await.unwrap();
    assert!(
        again > deleted,
        "a write after a delete got {again}, not above the delete's {deleted}"
    );
    assert_eq!(r.get("ts/k").await.unwrap(), Some(v("3")));
    assert_eq!(r.count().await.unwrap(), 2);

    // A tombstone is no record: put-if-absent goes through, above it.
    let p = r.put("ts/p", v("1")).await.unwrap();
    let deleted = r.delete_opts("ts/p", grace).await.unwrap().unwrap();
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

/// An imported tombstone removes an older live record, then refuses older copies; an
/// older or equal one is refused and the record stays; a newer record wins over it.
pub async fn imported_tombstones_remove_older_records_only(h: &Harness) {
    let r = &h.registry;
    let far = Some(h.now().saturating_add(long_grace(h)));
    let va = r.put("it/a", v("a")).await.unwrap();
    let ta = Version::from_raw(va.as_raw() + 1);
    assert!(
        r.import("it/a", Entry::tombstone(ta, far)).await.unwrap(),
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
            .unwrap(),
        "the removed record was imported back over its tombstone"
    );
    let after = r.put("it/a", v("again")).await.unwrap();
    assert!(
        after > ta,
        "a write after an imported tombstone got {after}"
    );

    let vb = r.put("it/b", v("b")).await.unwrap();
    for (what, raw) in [("an older", vb.as_raw() - 1), ("an equal", vb.as_raw())] {
        assert!(
            !r.import("it/b", Entry::tombstone(Version::from_raw(raw), far))
                .await
                .unwrap(),
            "{what} tombstone was applied"
        );
        let kept = r.get_entry("it/b").await.unwrap().map(|e| e.version);
        assert_eq!(kept, Some(vb), "{what} tombstone removed the record");
    }

    // On a key without a record, kept for the backend's own grace (no collection time).
    let tc = Version::from_raw(vb.as_raw() + 1000);
    assert!(
        r.import("it/c", Entry::tombstone(tc, None)).await.unwrap(),
        "a tombstone on an absent key was refused"
    );
    assert_absent(h, "it/c", "it/", 2, "an imported tombstone").await;
    let older = Entry::new(v("old"), Version::from_raw(tc.as_raw() - 1), None);
    assert!(
        !r.import("it/c", older).await.unwrap(),
        "an older record was imported over a tombstone"
    );
    let newer = Entry::new(v("new"), Version::from_raw(tc.as_raw() + 1), None);
    assert!(r.import("it/c", newer.clone()).await.unwrap());
    assert_eq!(r.get_entry("it/c").await.unwrap(), Some(newer));
}

/// A tombstone is kept until its collection time, and no longer refuses anything after.
pub async fn collected_tombstones_no_longer_refuse_imports(h: &Harness) {
    let r = &h.registry;
    let v1 = r.put("ct/k", v("1")).await.unwrap();
    let grace = if h.manual_time() {
        Duration::from_secs(60)
    } else {
        Duration::from_millis(150)
    };
    let collect_at = h.now().saturating_add(grace);
    let tomb = Entry::tombstone(Version::from_raw(v1.as_raw() + 1), Some(collect_at));
    assert!(r.import("ct/k", tomb).await.unwrap());
    let stale = Entry::new(v("1"), v1, None);
    if h.manual_time() {
        assert!(
            !r.import("ct/k", stale.clone()).await.unwrap(),
            "an older record was imported before the tombstone's collection time"
        );
    }
    let imported = h
        .wait_until(grace / 2, Duration::from_secs(5).max(grace * 4), || {
            let e = stale.clone();
            async move { r.import("ct/k", e).await.unwrap() }
        })
        .await;
    assert!(
        imported,
        "a tombstone still refused imports well after its collection time"
    );
    assert_eq!(r.get_entry("ct/k").await.unwrap(), Some(stale));
}
