//! Behaviour specific to the memory registry: eviction, the sweep, notifications.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nautilus_core::{Bytes, Capacity, Error, PutOptions, Registry, RegistryExt, Timestamp};
use nautilus_memory::{MemoryRegistry, RemovalCause};

mod common;

use common::manual;

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
