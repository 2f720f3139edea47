//! Behaviour specific to the memory registry: eviction, the sweep, notifications.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nautilus_core::{
    Bytes, Capacity, Error, ManualClock, PutOptions, Registry, RegistryExt, Timestamp,
};
use nautilus_memory::{MemoryRegistry, RemovalCause};

fn manual() -> (ManualClock, nautilus_memory::MemoryRegistryBuilder) {
    let clock = ManualClock::starting_now();
    let builder = MemoryRegistry::builder()
        .clock(Arc::new(clock.clone()))
        .sweep_interval(None);
    (clock, builder)
}

#[tokio::test]
async fn record_limit_evicts_to_stay_within() {
    let (_, b) = manual();
    let r = b.max_records(100).build().unwrap();
    for i in 0..1_000 {
        r.put(&format!("k{i}"), vec![0u8; 10]).await.unwrap();
    }
    let count = r.count().await.unwrap();
    assert!(
        (90..=100).contains(&count),
        "{count} records under a limit of 100"
    );
    let stats = r.stats().await.unwrap();
    assert_eq!(stats.evictions, 1_000 - count);
    assert_eq!(stats.records, count);
}

#[tokio::test]
async fn byte_limit_counts_keys_and_values() {
    let (_, b) = manual();
    let r = b.max_bytes(10_000).shards(1).build().unwrap();
    for i in 0..100 {
        // 4-5 byte keys + 500 byte values.
        r.put(&format!("k{i:03}"), vec![1u8; 500]).await.unwrap();
    }
    let stats = r.stats().await.unwrap();
    assert!(
        stats.bytes <= 10_000,
        "{} bytes held under 10000",
        stats.bytes
    );
    assert!(
        stats.bytes >= 5_000,
        "evicted far too much: {}",
        stats.bytes
    );
    assert_eq!(stats.bytes, stats.records * 504);
}

#[tokio::test]
async fn both_limits_hold_at_once() {
    let (_, b) = manual();
    let r = b
        .max_records(50)
        .max_bytes(100_000)
        .shards(1)
        .build()
        .unwrap();
    // Small records: the record limit binds.
    for i in 0..200 {
        r.put(&format!("s{i:03}"), vec![0u8; 10]).await.unwrap();
    }
    assert!(r.count().await.unwrap() <= 50);
    // Large records: the byte limit binds.
    for i in 0..200 {
        r.put(&format!("l{i:03}"), vec![0u8; 10_000]).await.unwrap();
    }
    let stats = r.stats().await.unwrap();
    assert!(stats.bytes <= 100_000, "{} bytes", stats.bytes);
    assert!(stats.records <= 50);
}

#[tokio::test]
async fn a_record_larger_than_the_byte_budget_is_refused_not_lost_silently() {
    let (_, b) = manual();
    let r = b.max_bytes(1_000).shards(1).build().unwrap();
    r.put("small", vec![0u8; 10]).await.unwrap();
    assert!(matches!(
        r.put("huge", vec![0u8; 2_000]).await,
        Err(Error::TooLarge { .. })
    ));
    assert_eq!(r.get("small").await.unwrap().map(|v| v.len()), Some(10));
}

#[tokio::test]
async fn expired_records_never_push_out_live_ones() {
    let (clock, b) = manual();
    let r = b.max_records(100).shards(1).build().unwrap();
    for i in 0..50 {
        r.put(&format!("live{i}"), "x").await.unwrap();
    }
    for i in 0..50 {
        r.put_with_ttl(&format!("ttl{i}"), "x", Duration::from_secs(5))
            .await
            .unwrap();
    }
    clock.advance(Duration::from_secs(6));
    // The registry is full of 50 live + 50 expired records; 50 new ones must replace
    // the expired ones, not the live ones.
    for i in 0..50 {
        r.put(&format!("new{i}"), "x").await.unwrap();
    }
    for i in 0..50 {
        assert!(
            r.exists(&format!("live{i}")).await.unwrap(),
            "live{i} was evicted"
        );
        assert!(
            r.exists(&format!("new{i}")).await.unwrap(),
            "new{i} missing"
        );
    }
    let stats = r.stats().await.unwrap();
    assert_eq!(stats.evictions, 0);
    assert_eq!(stats.expirations, 50);
}

#[tokio::test]
async fn sweep_reclaims_only_what_is_due() {
    let (clock, b) = manual();
    let r = b.build().unwrap();
    for i in 0..1_000 {
        let ttl = Duration::from_secs(if i % 10 == 0 { 1 } else { 100 });
        r.put_with_ttl(&format!("k{i}"), "v", ttl).await.unwrap();
    }
    r.put("forever", "v").await.unwrap();
    assert_eq!(r.sweep_expired(), 0);
    clock.advance(Duration::from_secs(2));
    assert_eq!(r.sweep_expired(), 100);
    assert_eq!(r.sweep_expired(), 0, "a second pass found more");
    assert_eq!(r.count().await.unwrap(), 901);
    // A rewrite without TTL takes the key out of the index.
    r.put("k1", "now permanent").await.unwrap();
    clock.advance(Duration::from_secs(200));
    assert_eq!(r.sweep_expired(), 899);
    assert_eq!(r.count().await.unwrap(), 2);
}

#[tokio::test]
async fn removal_listener_sees_evictions_and_expirations_outside_the_locks() {
    let (clock, b) = manual();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let holder: Arc<Mutex<Option<MemoryRegistry>>> = Arc::new(Mutex::new(None));
    let reentrant = Arc::clone(&holder);
    let reentered = Arc::new(AtomicUsize::new(0));
    let reentered2 = Arc::clone(&reentered);
    let r = b
        .max_records(10)
        .shards(1)
        .on_removal(move |removal| {
            // Using the registry from the listener must not deadlock.
            if let Some(reg) = reentrant.lock().unwrap().as_ref() {
                let _ = reg.get_now("anything");
                reentered2.fetch_add(1, Ordering::Relaxed);
            }
            log.lock()
                .unwrap()
                .push((removal.key.to_string(), removal.cause));
        })
        .build()
        .unwrap();
    *holder.lock().unwrap() = Some(r.clone());
    r.put_with_ttl("short", "x", Duration::from_secs(1))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(2));
    r.sweep_expired();
    for i in 0..20 {
        r.put(&format!("k{i}"), "x").await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    assert!(seen.contains(&("short".to_owned(), RemovalCause::Expired)));
    let evicted = seen
        .iter()
        .filter(|(_, c)| *c == RemovalCause::Evicted)
        .count();
    assert_eq!(evicted, 10, "{seen:?}");
    assert_eq!(reentered.load(Ordering::Relaxed), seen.len());
    holder.lock().unwrap().take();
}

#[tokio::test]
async fn a_record_limit_below_the_shard_count_still_takes_every_write() {
    let (_, b) = manual();
    let r = b.max_records(1_000).shards(4).build().unwrap();
    for i in 0..20 {
        r.put(&format!("k{i}"), "v").await.unwrap();
    }
    r.set_capacity(Capacity::records(3)).await.unwrap();
    assert!(r.count().await.unwrap() <= 3);
    // Three records over four shards: a shard left without a share borrows one from
    // the others (evicting there), instead of refusing a write the registry has
    // room for.
    for i in 0..40 {
        r.put(&format!("new{i}"), "v").await.unwrap();
        let count = r.count().await.unwrap();
        assert!(
            (1..=3).contains(&count),
            "{count} records under a limit of 3"
        );
    }
    let stats = r.stats().await.unwrap();
    assert!(stats.evictions >= 37, "{stats:?}");
    r.set_capacity(Capacity::records(1_000)).await.unwrap();
    for i in 0..40 {
        r.put(&format!("new{i}"), "v").await.unwrap();
    }
    assert_eq!(r.count().await.unwrap(), 40);
}

/// A record larger than its shard's share of a byte limit, but within the limit,
/// is stored: the shard borrows room from the others.
#[tokio::test]
async fn a_record_larger_than_its_shards_share_fits_within_the_limit() {
    let (_, b) = manual();
    let r = b.shards(8).build().unwrap();
    r.set_capacity(Capacity::unbounded().with_max_bytes(Some(8_000)))
        .await
        .unwrap();
    for i in 0..20 {
        r.put(&format!("small{i}"), vec![1u8; 100]).await.unwrap();
    }
    // A share is 1,000 bytes; the record is 5,000.
    r.put("big", vec![2u8; 5_000]).await.unwrap();
    assert_eq!(r.get("big").await.unwrap().map(|b| b.len()), Some(5_000));
    assert!(r.stats().await.unwrap().bytes <= 8_000);
    // The largest record stored is a little under the limit (quick_cache keeps a
    // cold section); the refusal names it.
    match r.put("huge", vec![3u8; 8_000]).await {
        Err(Error::TooLarge { limit, .. }) => assert!((7_600..8_000).contains(&limit), "{limit}"),
        other => panic!("a record as large as the whole limit: {other:?}"),
    }
    assert_eq!(r.get("big").await.unwrap().map(|b| b.len()), Some(5_000));
}

#[tokio::test]
async fn a_clock_at_the_end_of_its_range_sweeps_without_overflow() {
    let (clock, b) = manual();
    let r = b.build().unwrap();
    r.put_opts(
        "forever-ish",
        Bytes::from_static(b"v"),
        PutOptions::default().ttl(Duration::MAX),
    )
    .await
    .unwrap();
    r.put("plain", "v").await.unwrap();
    clock.set(Timestamp::from_millis(u64::MAX));
    // Nothing with an expiry is live at the clock's last instant.
    assert_eq!(r.count().await.unwrap(), 1);
    assert!(r.get("forever-ish").await.unwrap().is_none());
    assert_eq!(r.sweep_expired(), 0);
}

#[tokio::test]
async fn lowering_capacity_evicts_and_raising_it_keeps_records() {
    let (_, b) = manual();
    let r = b.max_records(1_000).shards(1).build().unwrap();
    for i in 0..1_000 {
        r.put(&format!("k{i}"), vec![0u8; 100]).await.unwrap();
    }
    r.set_capacity(Capacity::records(100)).await.unwrap();
    assert!(r.count().await.unwrap() <= 100);
    // Switching to a byte limit re-charges records instead of evicting them for the
    // change of units.
    let before = r.count().await.unwrap();
    r.set_capacity(Capacity::unbounded().with_max_bytes(Some(1_000_000)))
        .await
        .unwrap();
    assert_eq!(r.count().await.unwrap(), before);
    r.set_capacity(Capacity::unbounded().with_max_bytes(Some(2_000)))
        .await
        .unwrap();
    let stats = r.stats().await.unwrap();
    assert!(stats.bytes <= 2_000, "{stats:?}");
    assert_eq!(
        r.capacity().await.unwrap(),
        Capacity::unbounded().with_max_bytes(Some(2_000))
    );
}

#[tokio::test]
async fn the_background_sweep_runs_and_stops_with_the_registry() {
    let r = MemoryRegistry::builder()
        .sweep_interval(Some(Duration::from_millis(20)))
        .build()
        .unwrap();
    r.put_with_ttl("brief", "x", Duration::from_millis(30))
        .await
        .unwrap();
    let mut reclaimed = false;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if r.stats().await.unwrap().expirations == 1 {
            reclaimed = true;
            break;
        }
    }
    assert!(reclaimed, "the background sweep never reclaimed the record");
    let threads_before = thread_count();
    drop(r);
    for _ in 0..200 {
        if thread_count() < threads_before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the sweep thread outlived its registry");
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

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

#[tokio::test]
async fn concurrent_writers_on_one_key_never_lose_version_order() {
    let r = MemoryRegistry::new();
    let mut handles = Vec::new();
    for t in 0..4 {
        let r = r.clone();
        handles.push(tokio::task::spawn_blocking(move || {
            let mut last = None;
            for i in 0..2_000 {
                let v = r
                    .put_now("hot", format!("{t}-{i}").into(), Default::default())
                    .unwrap();
                assert!(last.is_none_or(|l| v > l));
                last = Some(v);
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let entry = r.get_entry("hot").await.unwrap().unwrap();
    let stats = r.stats().await.unwrap();
    assert_eq!(stats.inserts + stats.updates, 8_000);
    assert_eq!(stats.records, 1);
    assert!(entry.version.as_raw() > 0);
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

/// Rewriting records with larger values stays within the byte limit: the registry
/// evicts, as it does for new records.
#[tokio::test]
async fn rewrites_that_grow_records_stay_within_the_byte_limit() {
    let (_, b) = manual();
    let r = b.max_bytes(10_000).build().unwrap();
    for i in 0..100 {
        r.put(&format!("k{i:03}"), vec![b'v'; 60]).await.unwrap();
    }
    for i in 0..100 {
        r.put(&format!("k{i:03}"), vec![b'B'; 2_000]).await.unwrap();
    }
    let stats = r.stats().await.unwrap();
    assert!(
        stats.bytes <= 10_000,
        "{} bytes held under a limit of 10000",
        stats.bytes
    );
    assert!(stats.evictions > 0);
}

/// Under a tiny limit, whether set at build or at run time, each write is readable
/// right after it is answered. quick_cache admits a new key into a full shard of one
/// or two entries by evicting its coldest entry, the new key itself once the others
/// were read: a put answered Ok, and its record was gone (from outside: under
/// `max_records(1)`, 39 of 40 puts, the first record staying for good).
#[tokio::test]
async fn under_a_tiny_limit_every_write_is_readable_right_after() {
    let (_, b) = manual();
    let one = b.max_records(1).build().unwrap();
    let (_, b) = manual();
    let lowered = b.shards(16).build().unwrap();
    lowered.set_capacity(Capacity::records(5)).await.unwrap();
    for r in [&one, &lowered] {
        for i in 0..40 {
            let key = format!("m{i}");
            r.put(&key, "v").await.unwrap();
            assert_eq!(
                r.get(&key).await.unwrap().as_deref(),
                Some(&b"v"[..]),
                "{key}"
            );
        }
    }
    assert_eq!(one.count().await.unwrap(), 1);
    assert!(lowered.count().await.unwrap() <= 5);
    assert_eq!(one.stats().await.unwrap().evictions, 39);
}

/// One record under a byte limit: it is charged the whole limit's worth, which
/// quick_cache would never admit; it is charged what the shard admits instead.
#[tokio::test]
async fn one_record_under_a_byte_limit_is_stored() {
    let (_, b) = manual();
    let r = b.build().unwrap();
    r.set_capacity(Capacity::records(1).with_max_bytes(Some(1_000)))
        .await
        .unwrap();
    for i in 0..5 {
        let key = format!("one{i}");
        r.put(&key, "xy").await.unwrap();
        assert_eq!(r.get(&key).await.unwrap().as_deref(), Some(&b"xy"[..]));
        assert_eq!(r.count().await.unwrap(), 1);
    }
}

/// Limits changed through tiny capacities shrink quick_cache's hot section, which
/// admits no heavier record: a put is then stored and readable, or refused as
/// `TooLarge`, never answered Ok and dropped (from outside: about 400 of the puts
/// under 40 random small limits).
#[tokio::test]
async fn a_put_under_changed_limits_is_stored_or_refused_never_dropped() {
    let mut stored = 0;
    for (round, limits, shards) in [
        ([2u64, 3, 3_000], 1),
        ([2, 3, 3_000], 4),
        ([5, 2, 40_000], 1),
        ([1, 7, 900], 4),
        ([3, 2, 64], 1),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (l, s))| (i, l, s))
    {
        let (_, b) = manual();
        let r = b.shards(shards).build().unwrap();
        for max in limits {
            r.set_capacity(Capacity::unbounded().with_max_bytes(Some(max)))
                .await
                .unwrap();
        }
        let last = limits[2];
        for size in [1, last / 10, last / 3, last / 2, last * 9 / 10] {
            let key = format!("r{round}/{size}");
            match r.put(&key, vec![7u8; size as usize]).await {
                Ok(_) => {
                    assert!(r.get(&key).await.unwrap().is_some(), "{key}: Ok, then gone");
                    stored += 1;
                }
                Err(Error::TooLarge { .. }) => {}
                Err(e) => panic!("{key}: {e}"),
            }
        }
        assert!(r.stats().await.unwrap().bytes <= last);
    }
    assert!(stored >= 8, "{stored} stored");
}
