//! The conformance checks of scans: paging, exactly-once under concurrent writes.

#![allow(clippy::panic)] // assertions are the point of a check

use std::collections::BTreeMap;

use super::Harness;
use super::answered::Answered;
use super::checks::v;
use crate::error::Error;
use crate::ext::RegistryExt;
use crate::{Entry, PutItem, PutOptions};

async fn scan_all(h: &Harness, prefix: &str, limit: usize) -> Vec<(String, Entry)> {
    let mut out = Vec::new();
    let mut cursor = None;
    for _ in 0..1_000_000 {
        let page = h
            .registry
            .scan(prefix, cursor.as_ref(), limit)
            .await
            .answered();
        assert!(page.records.len() <= limit, "a page held more than asked");
        // Skipped keys are keys not returned.
        for k in &page.skipped {
            assert!(
                !page.records.iter().any(|(r, _)| r == k),
                "{k} was both returned and listed as skipped"
            );
        }
        out.extend(page.records);
        match page.next {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
    panic!("scan did not finish");
}

/// A scan of hundreds of pages returns every record exactly once: a backend whose
/// cursor goes wrong only after many pages fails here.
pub async fn long_scans_return_each_record_once(h: &Harness) {
    let r = &h.registry;
    // In batches of 100: a slow backend's batch has a deadline too.
    for start in (0..2_000).step_by(100) {
        let items: Vec<_> = (start..start + 100)
            .map(|i| PutItem::new(format!("ls/{i:05}"), v("x")))
            .collect();
        for res in r.put_many(items).await {
            res.answered();
        }
    }
    let mut keys: Vec<_> = scan_all(h, "ls/", 3)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(n, keys.len(), "a record was returned twice");
    assert_eq!(keys.len(), 2_000, "records were missed");
}

/// Paged scans return every matching record exactly once and nothing else.
pub async fn scan_returns_each_record_exactly_once_in_pages(h: &Harness) {
    let r = &h.registry;
    // A third of them with an expiry no check outlives.
    let ttl = PutOptions::default().ttl(h.ttl_unit() * 100);
    let items: Vec<_> = (0..300)
        .map(|i| {
            let item = PutItem::new(format!("p/{i:04}"), v(&i.to_string()));
            if i % 3 == 0 {
                item.with_options(ttl)
            } else {
                item
            }
        })
        .chain((0..50).map(|i| PutItem::new(format!("q/{i}"), v("other"))))
        .chain([PutItem::new("p", v("no slash"))])
        .collect();
    for res in r.put_many(items).await {
        res.answered();
    }
    let found = scan_all(h, "p/", 7).await;
    let mut keys: Vec<_> = found.iter().map(|(k, _)| k.clone()).collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(n, keys.len(), "a record was returned twice");
    let expected: Vec<_> = (0..300).map(|i| format!("p/{i:04}")).collect();
    assert_eq!(keys, expected);
    for (k, e) in &found {
        let i: usize = k[2..].parse().answered();
        assert_eq!(
            e.value,
            v(&i.to_string()),
            "scan returned a wrong value for {k}"
        );
    }
    // Each listed record is the record a read returns: value, version and expiry.
    for (k, e) in found.iter().step_by(5) {
        let read = r.get_entry(k).await.answered().expect("listed, so live");
        assert_eq!(
            (&e.version, &e.expires_at),
            (&read.version, &read.expires_at),
            "scan listed {k} at another version or expiry than a read returns"
        );
    }
    assert_eq!(scan_all(h, "", 1000).await.len(), 351);
    assert!(scan_all(h, "nothing-here/", 10).await.is_empty());
    assert!(matches!(
        r.scan("p/", None, 0).await,
        Err(Error::InvalidArgument { .. })
    ));
}

/// Records present for a whole scan are returned exactly once, even while other
/// records are written and deleted between pages.
pub async fn scan_is_stable_under_concurrent_writes(h: &Harness) {
    let r = &h.registry;
    let stable: Vec<_> = (0..200).map(|i| format!("s/{i:03}")).collect();
    for k in &stable {
        r.put(k, v("stable")).await.answered();
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut cursor = None;
    let mut round = 0;
    loop {
        let page = r.scan("s/", cursor.as_ref(), 9).await.answered();
        for (k, _) in page.records {
            *seen.entry(k).or_default() += 1;
        }
        // Churn: new keys, deleted churn keys, rewrites of stable keys.
        for j in 0..5 {
            r.put(&format!("s/churn-{round}-{j}"), v("c"))
                .await
                .answered();
        }
        if round > 0 {
            r.delete(&format!("s/churn-{}-0", round - 1))
                .await
                .answered();
        }
        r.put(&stable[(round * 37) % stable.len()], v("rewritten"))
            .await
            .answered();
        round += 1;
        assert!(round < 10_000, "scan did not finish under churn");
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    for k in &stable {
        assert_eq!(
            seen.get(k),
            Some(&1),
            "stable record {k} returned {:?} times",
            seen.get(k)
        );
    }
    assert!(
        seen.values().all(|&n| n == 1),
        "a record was returned twice"
    );
}
