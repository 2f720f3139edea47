//! The conformance checks of promises that are easy to half-keep: expired and
//! oversized imports, cursors a backend never wrote, and the counters.

#![allow(clippy::panic)] // assertions are the point of a check

use bytes::Bytes;

use super::Harness;
use super::answered::Answered;
use super::checks::{held, v};
use super::tombstones::assert_absent;
use crate::error::Error;
use crate::ext::RegistryExt;
use crate::{Condition, Cursor, Entry, PutItem, PutOptions, Timestamp, Version};

/// An import of a record that has already expired takes the key's place as a delete
/// would (an older live record goes, the answer is `true`) and stores nothing: no
/// read, scan, count or stats sees it, on an absent key either.
pub async fn expired_imports_store_nothing(h: &Harness) {
    let r = &h.registry;
    let past = Some(Timestamp::from_millis(
        h.now().as_millis().saturating_sub(1_000),
    ));
    r.put("ex/other", v("o")).await.answered();
    let bytes_before = r.stats().await.answered().bytes;

    let big = Bytes::from(vec![b'e'; r.limits().max_value_bytes.min(64 * 1024)]);
    let on_absent = Entry::new(big, Version::from_raw(5), past);
    assert!(
        r.import("ex/new", on_absent).await.answered(),
        "an expired import on an absent key must answer true"
    );
    assert_absent(h, "ex/new", "ex/", 1, "an expired import").await;
    let bytes_after = r.stats().await.answered().bytes;
    assert!(
        bytes_after <= bytes_before,
        "an expired import takes room: {bytes_before} -> {bytes_after} bytes"
    );

    let live = r.put("ex/live", v("l")).await.answered();
    let newer = Entry::new(v("gone"), Version::from_raw(live.as_raw() + 1), past);
    assert!(
        r.import("ex/live", newer).await.answered(),
        "an expired import newer than the record must answer true"
    );
    assert_absent(
        h,
        "ex/live",
        "ex/",
        1,
        "a record replaced by a newer expired import",
    )
    .await;

    let kept = r.put("ex/kept", v("k")).await.answered();
    let older = Entry::new(v("gone"), Version::from_raw(kept.as_raw() - 1), past);
    assert!(
        !r.import("ex/kept", older).await.answered(),
        "an expired import older than the record was applied"
    );
    let entry = r.get_entry("ex/kept").await.answered();
    assert_eq!(
        entry.map(|e| e.version),
        Some(kept),
        "an older expired import removed the record"
    );
    assert_eq!(r.count().await.answered(), 2);

    // Older than a tombstone the key still has, an expired copy is not applied either.
    let grace = crate::DeleteOptions::default().tombstone(std::time::Duration::from_secs(3600));
    let put = r.put("ex/deleted", v("d")).await.answered();
    let deleted = r.delete_opts("ex/deleted", grace).await.answered();
    let deleted = deleted.expect("a delete of a live record returns its version");
    assert!(
        deleted > put,
        "a delete's version must be above the record's"
    );
    let behind = Entry::new(v("gone"), Version::from_raw(deleted.as_raw() - 1), past);
    assert!(
        !r.import("ex/deleted", behind).await.answered(),
        "an expired import older than the key's tombstone answered applied"
    );
    assert_eq!(r.count().await.answered(), 2);
}

/// An import past `max_value_bytes` is `TooLarge`, as a put is, and stores or removes
/// nothing.
pub async fn oversized_imports_are_refused(h: &Harness) {
    let r = &h.registry;
    let limit = r.limits().max_value_bytes;
    let huge = Bytes::from(vec![3u8; limit + 1]);
    let small = r.put("big/k", v("small")).await.answered();
    let attempts = [
        ("big/k", Version::from_raw(small.as_raw() + 1)),
        ("big/new", Version::from_raw(5)),
    ];
    for (key, version) in attempts {
        match r.import(key, Entry::new(huge.clone(), version, None)).await {
            Err(Error::TooLarge { size, limit: l, .. }) => {
                assert_eq!((size, l), (limit as u64 + 1, limit as u64));
            }
            other => panic!(
                "an import of {} bytes into {key}: expected TooLarge, got {other:?}",
                limit + 1
            ),
        }
    }
    let entry = r.get_entry("big/k").await.answered().answered();
    assert_eq!(
        (entry.value, entry.version),
        (v("small"), small),
        "a refused import changed the record"
    );
    assert_absent(h, "big/new", "big/", 1, "a refused oversized import").await;
}

/// Texts no backend writes as a cursor.
const GARBAGE: [&str; 4] = ["", "not a cursor", "\u{0}\u{7f}\u{2603}", "{}[]:::..."];

/// A cursor the backend never wrote is `InvalidArgument`; a cursor of another
/// prefix's scan is refused the same way or continues a scan of the new prefix,
/// which never returns a key outside it.
pub async fn foreign_cursors_are_refused(h: &Harness) {
    let r = &h.registry;
    for i in 0..20 {
        r.put(&format!("fc/a/{i:02}"), v("a")).await.answered();
        r.put(&format!("fc/b/{i:02}"), v("b")).await.answered();
    }
    for raw in GARBAGE {
        for prefix in ["fc/a/", ""] {
            let res = r.scan(prefix, Some(&Cursor::new(raw)), 5).await;
            assert!(
                matches!(res, Err(Error::InvalidArgument { .. })),
                "a scan of {prefix:?} from the cursor {raw:?} must be InvalidArgument, got {res:?}"
            );
        }
    }
    for (from, to) in [("fc/a/", "fc/b/"), ("", "fc/a/"), ("fc/b/", "fc/")] {
        let first = r.scan(from, None, 3).await.answered();
        let cursor = first
            .next
            .expect("a page of 3 of 20 or more records is not the last");
        let mut cursor = Some(cursor);
        let mut pages = 0;
        while let Some(c) = cursor {
            match r.scan(to, Some(&c), 3).await {
                Err(Error::InvalidArgument { .. }) if pages == 0 => break,
                Err(e) => panic!("a scan of {to:?} from a cursor of {from:?}: {e}"),
                Ok(page) => {
                    for (k, _) in &page.records {
                        assert!(
                            k.starts_with(to),
                            "a scan of {to:?} from a cursor of {from:?} returned {k:?}"
                        );
                    }
                    cursor = page.next;
                }
            }
            pages += 1;
            assert!(
                pages < 10_000,
                "a scan from a foreign cursor did not finish"
            );
        }
    }
}

/// Stats count inserts, updates and deletes, and the hits and misses of batch reads.
pub async fn stats_count_writes_deletes_and_batch_reads(h: &Harness) {
    let r = &h.registry;
    let s0 = r.stats().await.answered();
    r.put("sc/a", v("1")).await.answered();
    let s1 = r.stats().await.answered();
    assert!(
        s1.inserts > s0.inserts,
        "a new record was not counted as an insert: {s0:?} -> {s1:?}"
    );
    assert_eq!(s1.updates, s0.updates, "a new record counted as an update");
    r.put("sc/a", v("2")).await.answered();
    let s2 = r.stats().await.answered();
    assert!(
        s2.updates > s1.updates,
        "an overwrite was not counted as an update: {s1:?} -> {s2:?}"
    );
    assert_eq!(s2.inserts, s1.inserts, "an overwrite counted as an insert");
    r.put("sc/b", v("1")).await.answered();
    assert!(r.delete("sc/b").await.answered());
    let s3 = r.stats().await.answered();
    assert!(
        s3.deletes > s2.deletes,
        "a delete was not counted: {s2:?} -> {s3:?}"
    );
    let before = r.stats().await.answered();
    let got = r.get_many(&["sc/a", "sc/missing", "sc/b"]).await;
    assert!(matches!(got[0], Ok(Some(_))));
    let after = r.stats().await.answered();
    assert!(
        after.hits > before.hits,
        "a batch hit was not counted: {before:?} -> {after:?}"
    );
    assert!(
        after.misses >= before.misses + 2,
        "batch misses were not counted: {before:?} -> {after:?}"
    );
}

/// Stats count each operation once, exactly: a new record one insert, an overwrite
/// one update, a delete of a live record one delete (of nothing, none), each key of
/// a batch one hit or one miss, as single calls do. A backend that keeps several
/// copies, or reads several to answer one, still counts what its caller did.
pub async fn stats_count_each_operation_exactly(h: &Harness) {
    let r = &h.registry;
    // Signed, so that a counter that went down reads as such.
    let delta = |a: &crate::Stats, b: &crate::Stats| {
        let d = |x: u64, y: u64| i128::from(y) - i128::from(x);
        [
            d(a.inserts, b.inserts),
            d(a.updates, b.updates),
            d(a.deletes, b.deletes),
            d(a.hits, b.hits),
            d(a.misses, b.misses),
        ]
    };
    // inserts, updates, deletes, hits, misses
    let s0 = r.stats().await.answered();
    r.put("ex/a", v("1")).await.answered();
    let s1 = r.stats().await.answered();
    assert_eq!(
        delta(&s0, &s1),
        [1, 0, 0, 0, 0],
        "a new record: {s0:?} -> {s1:?}"
    );
    r.put("ex/a", v("2")).await.answered();
    let s2 = r.stats().await.answered();
    assert_eq!(
        delta(&s1, &s2),
        [0, 1, 0, 0, 0],
        "an overwrite: {s1:?} -> {s2:?}"
    );
    assert!(r.delete("ex/a").await.answered());
    assert!(!r.delete("ex/a").await.answered());
    let s3 = r.stats().await.answered();
    assert_eq!(
        delta(&s2, &s3),
        [0, 0, 1, 0, 0],
        "two deletes, one of a record: {s2:?} -> {s3:?}"
    );
    r.put("ex/b", v("b")).await.answered();
    let s4 = r.stats().await.answered();
    assert!(r.get("ex/b").await.answered().is_some());
    assert!(r.get("ex/missing").await.answered().is_none());
    let s5 = r.stats().await.answered();
    assert_eq!(
        delta(&s4, &s5),
        [0, 0, 0, 1, 1],
        "a hit and a miss: {s4:?} -> {s5:?}"
    );
    let items = (0..40)
        .map(|i| PutItem::new(format!("ex/many/{i}"), v("m")))
        .chain([PutItem::new("ex/b", v("b2"))])
        .collect();
    assert!(r.put_many(items).await.iter().all(Result::is_ok));
    let s6 = r.stats().await.answered();
    assert_eq!(
        delta(&s5, &s6),
        [40, 1, 0, 0, 0],
        "a batch of writes: {s5:?} -> {s6:?}"
    );
    // 40 hits (one key twice), 3 misses, in a batch longer than any run a backend
    // might handle keys in.
    let mut keys: Vec<String> = (0..38).map(|i| format!("ex/many/{i}")).collect();
    keys.insert(17, "ex/gone".into());
    keys.push("ex/many/3".into());
    keys.push("ex/nothing/1".into());
    keys.push("ex/b".into());
    keys.push("ex/nothing/2".into());
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    assert!(r.get_many(&refs).await.iter().all(Result::is_ok));
    let s7 = r.stats().await.answered();
    assert_eq!(
        delta(&s6, &s7),
        [0, 0, 0, 40, 3],
        "a batch of reads: {s6:?} -> {s7:?}"
    );
    let gone: Vec<String> = (0..5).map(|i| format!("ex/many/{i}")).collect();
    let mut refs: Vec<&str> = gone.iter().map(String::as_str).collect();
    refs.push("ex/nothing/1");
    assert_eq!(
        r.delete_many(&refs)
            .await
            .iter()
            .filter(|d| matches!(d, Ok(true)))
            .count(),
        5
    );
    let s8 = r.stats().await.answered();
    assert_eq!(
        delta(&s7, &s8),
        [0, 0, 5, 0, 0],
        "a batch of deletes: {s7:?} -> {s8:?}"
    );
    // Imports copy records between nodes: not a write of the user's, new or not.
    let ahead = r.put("ex/imported", v("i")).await.answered();
    let s9 = r.stats().await.answered();
    for (key, version) in [("ex/imported", ahead.as_raw() + 1), ("ex/copied", 5)] {
        let copy = Entry::new(v("c"), Version::from_raw(version), None);
        assert!(r.import(key, copy).await.answered());
    }
    let s10 = r.stats().await.answered();
    assert_eq!(
        delta(&s9, &s10),
        [0; 5],
        "two imports (one over a record, one of a new key): {s9:?} -> {s10:?}"
    );
    // Refused writes and invalid keys: nothing was written, deleted or read.
    let absent = PutOptions {
        condition: Condition::Absent,
        ..PutOptions::default()
    };
    let refused = r.put_opts("ex/imported", v("x"), absent).await;
    assert!(
        matches!(refused, Err(Error::Conflict { .. })),
        "{refused:?}"
    );
    assert!(r.get("").await.is_err());
    assert!(r.get_entry("").await.is_err());
    assert!(r.get_many(&[""]).await[0].is_err());
    let s11 = r.stats().await.answered();
    assert_eq!(
        delta(&s10, &s11),
        [0; 5],
        "a put refused by its condition, and reads of an invalid key: {s10:?} -> {s11:?}"
    );
    // A delete under a version condition that removes the record is one delete, and
    // its version is above the record's; reads answered without waiting count as
    // reads.
    let version = r.put("ex/versioned", v("v")).await.answered();
    let s12 = r.stats().await.answered();
    let only_this = crate::DeleteOptions::default().condition(Condition::Version(version));
    let deleted = r.delete_opts("ex/versioned", only_this).await.answered();
    assert!(
        deleted.is_some_and(|d| d > version),
        "a versioned delete answered {deleted:?} for a record at {version:?}"
    );
    let hit = i128::from(r.get_ready("ex/b").is_some());
    let miss = i128::from(r.get_ready("ex/nothing/1").is_some());
    let s13 = r.stats().await.answered();
    assert_eq!(
        delta(&s12, &s13),
        [0, 0, 1, hit, miss],
        "a versioned delete, and reads without waiting ({hit} hit, {miss} miss): \
         {s12:?} -> {s13:?}"
    );
    // A write over an expired record creates one: an insert, not an update.
    r.put_with_ttl("ex/expiring", v("t"), h.ttl_unit())
        .await
        .answered();
    h.advance(h.ttl_unit()).await;
    let s14 = r.stats().await.answered();
    r.put("ex/expiring", v("again")).await.answered();
    let s15 = r.stats().await.answered();
    assert_eq!(
        delta(&s14, &s15)[..2],
        [1, 0],
        "a write over an expired record: {s14:?} -> {s15:?}"
    );
}

/// A batch longer than any run a backend might process keys in answers each key in
/// its place: live and missing keys, a key twice, keys refused for their length or
/// emptiness among them, as single calls would.
pub async fn long_batches_answer_every_key_in_place(h: &Harness) {
    let r = &h.registry;
    let too_long = "k".repeat(r.limits().max_key_bytes + 1);
    let mut keys: Vec<String> = Vec::new();
    for i in 0..70 {
        keys.push(match i % 9 {
            2 => String::new(),
            4 => too_long.clone(),
            6 => format!("lb/missing/{i}"),
            8 => "lb/7".to_owned(),
            _ => format!("lb/{i}"),
        });
    }
    for k in keys
        .iter()
        .filter(|k| k.starts_with("lb/") && !k.starts_with("lb/missing"))
    {
        r.put(k, Bytes::from(k.clone())).await.answered();
    }
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let got = r.get_many(&refs).await;
    assert_eq!(got.len(), keys.len());
    for (k, answer) in keys.iter().zip(&got) {
        match answer {
            Ok(Some(e)) => assert_eq!(e.value, k.as_bytes(), "key {k:?} answered another's value"),
            Ok(None) => assert!(
                k.starts_with("lb/missing/"),
                "key {k:?} answered as missing"
            ),
            Err(Error::InvalidKey { .. }) => {
                assert!(
                    k.is_empty() || k.len() > r.limits().max_key_bytes,
                    "key {k:?} refused"
                );
            }
            Err(e) => panic!("key {k:?}: {e}"),
        }
    }
    let deleted = r.delete_many(&refs).await;
    assert_eq!(deleted.len(), keys.len());
    for (k, answer) in keys.iter().zip(&deleted) {
        match answer {
            // A key met twice is deleted by the first.
            Ok(true) => assert!(k.starts_with("lb/") && !k.starts_with("lb/missing")),
            Ok(false) => assert!(
                k.starts_with("lb/missing/") || k == "lb/7",
                "{k:?} not deleted"
            ),
            Err(Error::InvalidKey { .. }) => {
                assert!(k.is_empty() || k.len() > r.limits().max_key_bytes)
            }
            Err(e) => panic!("key {k:?}: {e}"),
        }
    }
}

/// An import whose version is dated more than [`Version::MAX_AHEAD`] after the
/// node's clock is refused with `InvalidArgument` and changes nothing, a tombstone's
/// too (taking it would carry the node's version clock, and every later write, to
/// the top of the range where versions stop increasing). One dated an hour ahead is
/// taken, and the writes after it, to that key and to others, still get strictly
/// greater versions.
pub async fn imports_from_far_ahead_are_refused(h: &Harness) {
    let r = &h.registry;
    let written = r.put("ver/held", v("h")).await.answered();
    let ahead = |d: std::time::Duration| {
        Version::from_raw((h.now().as_millis() + d.as_millis() as u64) << Version::COUNTER_BITS)
    };
    let too_far = ahead(Version::MAX_AHEAD + std::time::Duration::from_secs(86_400));
    let absurd = [
        ("ver/held", Entry::new(v("x"), too_far, None)),
        (
            "ver/held",
            Entry::tombstone(Version::from_raw(u64::MAX), None),
        ),
        (
            "ver/absent",
            Entry::new(v("x"), Version::from_raw(u64::MAX), None),
        ),
    ];
    for (key, entry) in absurd {
        let version = entry.version;
        match r.import(key, entry).await {
            Err(Error::InvalidArgument { .. }) => {}
            other => panic!("an import of version {version:?} into {key}: {other:?}"),
        }
    }
    assert_eq!(
        held(r, "ver/held").await,
        Some((v("h"), written)),
        "a refused import changed the record"
    );
    assert_eq!(r.get_entry("ver/absent").await.answered(), None);
    assert_eq!(r.count().await.answered(), 1, "a refused import was stored");

    let hour = ahead(std::time::Duration::from_secs(3600));
    assert!(
        r.import("ver/top", Entry::new(v("t"), hour, None))
            .await
            .answered(),
        "an import dated an hour ahead was refused"
    );
    let next = r.put("ver/top", v("n")).await.answered();
    let after = r.put("ver/top", v("m")).await.answered();
    assert!(
        hour < next && next < after,
        "writes after an import from an hour ahead: {next:?} then {after:?}"
    );
    let other = r.put("ver/other", v("o")).await.answered();
    let again = r.put("ver/other", v("p")).await.answered();
    assert!(
        other < again,
        "another key's versions: {other:?} then {again:?}"
    );
}
