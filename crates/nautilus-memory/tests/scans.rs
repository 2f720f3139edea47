//! Scans of the memory registry: cursors refused, scans resumed without their
//! snapshot, many scans at once, and values scans hold or drop.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nautilus_core::{Bytes, Error, Registry, RegistryExt};
use nautilus_memory::MemoryRegistry;

mod common;

use common::manual;

#[tokio::test]
async fn a_corrupt_or_foreign_cursor_is_an_invalid_argument() {
    let r = MemoryRegistry::new();
    for bad in ["", "x", "999999/a", "-1/"] {
        let cursor = nautilus_core::Cursor::new(bad);
        assert!(
            matches!(
                r.scan("", Some(&cursor), 10).await,
                Err(Error::InvalidArgument { .. })
            ),
            "{bad:?}"
        );
    }
}

/// Puts `keys`, each with a small value.
async fn put_all(r: &MemoryRegistry, keys: &[String]) {
    for k in keys {
        r.put(k, Bytes::from_static(b"v")).await.unwrap();
    }
}

/// Scans `k/` in pages of 7, calling `between` after each page with the round and the
/// page's records; how many times each key came back. Fails after `rounds` pages.
async fn scan_in_pages(
    r: &MemoryRegistry,
    rounds: usize,
    unfinished: &str,
    mut between: impl AsyncFnMut(usize, &[(String, nautilus_core::Entry)]),
) -> std::collections::BTreeMap<String, usize> {
    let mut seen: std::collections::BTreeMap<String, usize> = Default::default();
    let mut cursor = None;
    for round in 0.. {
        assert!(round < rounds, "{unfinished}");
        let page = r.scan("k/", cursor.as_ref(), 7).await.unwrap();
        for (k, _) in &page.records {
            *seen.entry(k.clone()).or_default() += 1;
        }
        between(round, &page.records).await;
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    seen
}

/// Every one of `keys` came back exactly once.
fn assert_each_once(seen: &std::collections::BTreeMap<String, usize>, keys: &[String]) {
    for k in keys {
        assert_eq!(
            seen.get(k),
            Some(&1),
            "{k} came back {:?} times",
            seen.get(k)
        );
    }
}

/// A scan whose snapshot was dropped (more concurrent scans than the registry keeps)
/// resumes from its cursor alone: every record present for the whole scan comes back
/// exactly once, short keys (stored inline) and long ones alike, while records are
/// rewritten, added and deleted between pages.
#[tokio::test]
async fn a_scan_resumed_without_its_snapshot_returns_each_record_once() {
    let r = MemoryRegistry::builder().shards(4).build().unwrap();
    let keys: Vec<String> = (0..600)
        .map(|i| {
            if i % 2 == 0 {
                format!("k/{i:04}")
            } else {
                format!("k/a-key-longer-than-the-inline-limit-{i:04}")
            }
        })
        .collect();
    put_all(&r, &keys).await;
    let seen = scan_in_pages(&r, 10_000, "the scan did not finish", async |round, _| {
        // More scans than the registry keeps snapshots for push this one's out.
        evict_scan_snapshots(&r).await;
        r.put(&keys[(round * 37) % keys.len()], Bytes::from_static(b"w"))
            .await
            .unwrap();
        r.put(&format!("k/churn-{round}"), Bytes::from_static(b"c"))
            .await
            .unwrap();
        if round > 0 {
            r.delete(&format!("k/churn-{}", round - 1)).await.unwrap();
        }
    })
    .await;
    assert_each_once(&seen, &keys);
    assert!(seen.values().all(|&n| n == 1), "a record came back twice");
}

/// A scan resumed without its snapshot in a large shard goes on from snapshots of
/// the next part of the shard, one after the other, and still returns every record
/// present throughout exactly once, while records are rewritten and added.
#[tokio::test]
async fn a_resumed_scan_goes_through_its_shard_in_parts() {
    let r = MemoryRegistry::builder().shards(1).build().unwrap();
    let keys: Vec<String> = (0..2_000).map(|i| format!("k/{i:05}")).collect();
    put_all(&r, &keys).await;
    let seen = scan_in_pages(&r, 10_000, "the scan did not finish", async |round, _| {
        if round == 3 || round == 150 {
            evict_scan_snapshots(&r).await;
        }
        r.put(&keys[(round * 41) % keys.len()], Bytes::from_static(b"w"))
            .await
            .unwrap();
        r.put(&format!("k/new-{round}"), Bytes::from_static(b"n"))
            .await
            .unwrap();
    })
    .await;
    assert_each_once(&seen, &keys);
    assert!(seen.values().all(|&n| n == 1), "a record came back twice");
}

/// A scan resumed without its snapshot may ask for the largest page there is: it gets
/// the rest of the records, not an overflow.
#[tokio::test]
async fn a_resumed_scan_may_ask_for_the_largest_page() {
    let r = MemoryRegistry::builder().shards(1).build().unwrap();
    let keys: Vec<String> = (0..600).map(|i| format!("k/{i:04}")).collect();
    put_all(&r, &keys).await;
    let first = r.scan("k/", None, 7).await.unwrap();
    evict_scan_snapshots(&r).await;
    let rest = r.scan("k/", first.next.as_ref(), usize::MAX).await.unwrap();
    assert_eq!(first.records.len() + rest.records.len(), keys.len());
}

/// Many scans paged in turn, more than the registry keeps whole snapshots for, each
/// return every record once.
#[tokio::test]
async fn many_scans_paged_in_turn_each_return_every_record_once() {
    let r = MemoryRegistry::builder().shards(2).build().unwrap();
    let keys: Vec<String> = (0..1_500).map(|i| format!("k/{i:05}")).collect();
    put_all(&r, &keys).await;
    let mut scans: Vec<(
        Option<nautilus_core::Cursor>,
        std::collections::BTreeMap<String, usize>,
        bool,
    )> = (0..60).map(|_| (None, Default::default(), false)).collect();
    for _ in 0..2_000 {
        if scans.iter().all(|s| s.2) {
            break;
        }
        for (cursor, seen, done) in scans.iter_mut().filter(|s| !s.2) {
            let page = r.scan("k/", cursor.as_ref(), 50).await.unwrap();
            for (k, _) in &page.records {
                *seen.entry(k.clone()).or_default() += 1;
            }
            *cursor = page.next;
            *done = cursor.is_none();
        }
    }
    for (_, seen, done) in &scans {
        assert!(done, "a scan did not finish");
        assert_each_once(seen, &keys);
    }
}

/// Pushes a scan's snapshot out of the registry, as more concurrent scans than it
/// keeps snapshots for do.
async fn evict_scan_snapshots(r: &MemoryRegistry) {
    for _ in 0..40 {
        r.scan("", None, 1).await.unwrap();
    }
}

/// A record deleted and written again after a scan returned it arrives anew, but a
/// scan resumed without its snapshot does not return it a second time.
#[tokio::test]
async fn a_record_written_again_after_a_resumed_scan_returned_it_is_not_returned_twice() {
    let r = MemoryRegistry::builder().shards(2).build().unwrap();
    let keys: Vec<String> = (0..300).map(|i| format!("k/{i:04}")).collect();
    put_all(&r, &keys).await;
    let seen = scan_in_pages(&r, 1_000, "the scan did not finish", async |_, records| {
        for (k, _) in records {
            r.delete(k).await.unwrap();
            r.put(k, Bytes::from_static(b"again")).await.unwrap();
        }
        evict_scan_snapshots(&r).await;
    })
    .await;
    assert_each_once(&seen, &keys);
}

/// A scan resumed without its snapshot after every page, while records keep arriving
/// faster than its pages go, still ends, and returns every record present throughout.
#[tokio::test]
async fn a_resumed_scan_ends_while_records_keep_arriving() {
    let r = MemoryRegistry::builder().shards(2).build().unwrap();
    let keys: Vec<String> = (0..300).map(|i| format!("k/{i:04}")).collect();
    put_all(&r, &keys).await;
    let mut added = 0;
    // 300 records in pages of 7, with 20 new ones per page: without a bound on what a
    // resumed scan takes in, it would never reach the end.
    let seen = scan_in_pages(
        &r,
        100,
        "the scan did not finish under steady writes",
        async |_, _| {
            for _ in 0..20 {
                r.put(&format!("k/new-{added}"), Bytes::from_static(b"n"))
                    .await
                    .unwrap();
                added += 1;
            }
            evict_scan_snapshots(&r).await;
        },
    )
    .await;
    assert_each_once(&seen, &keys);
    assert!(seen.values().all(|n| *n == 1), "a record came back twice");
}

/// Two calls with the same cursor at once (a retried page) both get that page: one
/// cannot take the records the other was about to serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_cursor_used_twice_at_once_gets_the_same_page() {
    let r = MemoryRegistry::builder().shards(1).build().unwrap();
    for i in 0..2_000 {
        r.put(&format!("k/{i:05}"), Bytes::from_static(b"v"))
            .await
            .unwrap();
    }
    let handle = tokio::runtime::Handle::current();
    let mut cursor = r.scan("", None, 5).await.unwrap().next;
    for _ in 0..300 {
        let Some(c) = cursor.take() else { break };
        let barrier = std::sync::Barrier::new(2);
        let pages: Vec<_> = std::thread::scope(|s| {
            let calls: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        handle.block_on(r.scan("", Some(&c), 5)).unwrap()
                    })
                })
                .collect();
            calls.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let keys: Vec<Vec<&String>> = pages
            .iter()
            .map(|p| p.records.iter().map(|(k, _)| k).collect())
            .collect();
        assert_eq!(keys[0], keys[1], "one cursor served two different pages");
        cursor = pages[0].next.clone();
    }
}

/// Values whose owner counts how many are alive.
static ALIVE: AtomicUsize = AtomicUsize::new(0);

struct Counted(Vec<u8>);

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        ALIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A scan abandoned after its first page does not keep the values of records deleted
/// since alive for longer than the idle time of a scan's snapshot.
#[tokio::test]
async fn an_abandoned_scan_does_not_keep_deleted_values_alive() {
    let (clock, builder) = manual();
    let r = builder.shards(1).build().unwrap();
    for i in 0..1_000 {
        ALIVE.fetch_add(1, Ordering::SeqCst);
        r.put(
            &format!("k/{i:04}"),
            Bytes::from_owner(Counted(vec![1; 100])),
        )
        .await
        .unwrap();
    }
    // The first page only: the shard's snapshot now shares every value.
    let page = r.scan("", None, 10).await.unwrap();
    assert!(page.next.is_some());
    drop(page);
    let keys: Vec<String> = (0..1_000).map(|i| format!("k/{i:04}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    r.delete_many(&refs).await;
    assert_eq!(r.count().await.unwrap(), 0);
    assert!(
        ALIVE.load(Ordering::SeqCst) > 900,
        "the snapshot was expected to hold them"
    );
    clock.advance(Duration::from_secs(31));
    r.sweep_expired();
    assert_eq!(
        ALIVE.load(Ordering::SeqCst),
        0,
        "values of deleted records outlived an abandoned scan"
    );
}

thread_local! {
    static SCANNING_FROM_DROP: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A value whose owner scans the registry when it is dropped.
struct Rescans(MemoryRegistry);

impl AsRef<[u8]> for Rescans {
    fn as_ref(&self) -> &[u8] {
        b"v"
    }
}

impl Drop for Rescans {
    fn drop(&mut self) {
        let page = poll_once(self.0.scan("", None, 1)).expect("the memory scan is ready");
        assert!(page.is_ok());
        SCANNING_FROM_DROP.with(|n| n.set(n.get() + 1));
    }
}

fn poll_once<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    match f
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// A scan that drops the last reference to a value (its snapshot pushed out by newer
/// scans) while the value's owner scans the registry: no panic, no deadlock.
#[test]
fn a_value_dropped_during_a_scan_may_scan_the_registry() {
    let r = MemoryRegistry::builder()
        .shards(1)
        .sweep_interval(None)
        .build()
        .unwrap();
    poll_once(r.put("b", Bytes::from_static(b"x")))
        .unwrap()
        .unwrap();
    poll_once(r.put("a", Bytes::from_owner(Rescans(r.clone()))))
        .unwrap()
        .unwrap();
    // Its snapshot shares "a"'s value; then "a" goes from the registry.
    poll_once(r.scan("", None, 1)).unwrap().unwrap();
    poll_once(r.delete("a")).unwrap().unwrap();
    for k in ["c", "d"] {
        poll_once(r.put(k, Bytes::from_static(b"x")))
            .unwrap()
            .unwrap();
    }
    // Newer scans, each paused after its first page, push that snapshot out, and the
    // one that does drops "a"'s value.
    for _ in 0..40 {
        poll_once(r.scan("", None, 1)).unwrap().unwrap();
    }
    assert_eq!(SCANNING_FROM_DROP.with(std::cell::Cell::get), 1);
}

/// A cursor is refused by any registry but the one that wrote it, even one with the
/// same shard count, instead of resuming somewhere in its records.
#[tokio::test]
async fn a_cursor_from_another_registry_is_refused() {
    let a = MemoryRegistry::builder().shards(4).build().unwrap();
    let b = MemoryRegistry::builder().shards(4).build().unwrap();
    for i in 0..100 {
        a.put(&format!("k{i}"), Bytes::from_static(b"v"))
            .await
            .unwrap();
        b.put(&format!("k{i}"), Bytes::from_static(b"v"))
            .await
            .unwrap();
    }
    let cursor = a.scan("", None, 10).await.unwrap().next.unwrap();
    assert!(matches!(
        b.scan("", Some(&cursor), 10).await,
        Err(Error::InvalidArgument { .. })
    ));
    assert!(a.scan("", Some(&cursor), 10).await.is_ok());
}
