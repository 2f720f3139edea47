//! Bytes under the namespace that no write of ours made, and what the registry does
//! about them: garbage and keys of other types, records no put could write, versions
//! past the last or years ahead, values cut or changed inside; reads answer
//! `Corrupt`, scans list the key as skipped, imports replace it.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use fred::prelude::{ClientLike, KeysInterface};
use nautilus_core::{Bytes, Error, Expiry, Registry, RegistryExt};
use nautilus_redis::RedisRegistry;

/// Every page of a full scan in pages of `limit`: the keys returned, and the keys
/// listed as skipped (sorted).
async fn scan_all(registry: &RedisRegistry, limit: usize) -> (Vec<String>, Vec<String>) {
    let (mut keys, mut skipped, mut cursor) = (Vec::new(), Vec::new(), None);
    loop {
        let page = registry.scan("", cursor.as_ref(), limit).await.unwrap();
        keys.extend(page.records.into_iter().map(|(k, _)| k));
        skipped.extend(page.skipped);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    skipped.sort();
    (keys, skipped)
}

#[tokio::test]
async fn garbage_in_the_namespace_is_a_corrupt_record_skipped_by_scans_and_left_alone() {
    let url = common::url("NAUTILUS_REDIS_URL");
    let ns = common::fresh_namespace();
    let registry = common::connect(&url, &ns).await;
    let raw = common::raw_client(&url).await;
    let _: () = raw
        .set(format!("{ns}:intruder"), "not ours", None, None, false)
        .await
        .unwrap();
    // Foreign bytes that begin with the record tag ('N') were counted as a record.
    let _: () = raw
        .set(
            format!("{ns}:lookalike"),
            "Not a record, though it starts like one",
            None,
            None,
            false,
        )
        .await
        .unwrap();
    registry.put("fine", "ok").await.unwrap();
    // A key of another Redis type under the namespace.
    common::plant_hash(&raw, &ns, "hashy").await;
    let hashy =
        |r: &Result<_, Error>| matches!(r, Err(Error::Corrupt { key, .. }) if key == "hashy");
    assert!(hashy(&registry.get("hashy").await.map(|_| ())));
    // Not a record of ours: not counted, and counting does not fail on it.
    assert_eq!(registry.count().await.unwrap(), 1);
    assert!(hashy(&registry.put("hashy", "x").await.map(|_| ())));
    let batch = registry.get_many(&["fine", "hashy"]).await;
    assert!(batch[0].as_ref().is_ok_and(Option::is_some));
    assert!(
        matches!(&batch[1], Err(Error::Corrupt { key, .. }) if key == "hashy"),
        "{:?}",
        batch[1]
    );

    let is_corrupt =
        |r: &Result<_, Error>| matches!(r, Err(Error::Corrupt { key, .. }) if key == "intruder");
    assert!(is_corrupt(&registry.get("intruder").await.map(|_| ())));
    assert!(is_corrupt(&registry.put("intruder", "x").await.map(|_| ())));
    assert!(is_corrupt(&registry.delete("intruder").await.map(|_| ())));
    assert!(is_corrupt(
        &registry.touch("intruder", Expiry::Never).await.map(|_| ())
    ));
    let batch = registry.get_many(&["fine", "intruder"]).await;
    assert!(
        batch[0].as_ref().unwrap().is_some(),
        "one bad key failed the batch"
    );
    assert!(
        matches!(&batch[1], Err(Error::Corrupt { key, .. }) if key == "intruder"),
        "{:?}",
        batch[1]
    );
    // A scan pages past both, lists them as skipped, and returns the record.
    let (keys, skipped) = scan_all(&registry, 10).await;
    assert_eq!(keys, ["fine"]);
    assert_eq!(skipped, ["hashy", "intruder", "lookalike"]);
    let mut scanner = registry.scanner("").page_size(1);
    let mut seen = Vec::new();
    while let Some((key, _)) = scanner.next().await.unwrap() {
        seen.push(key);
    }
    assert_eq!((seen, scanner.skipped()), (vec!["fine".to_owned()], 3));
    // Nothing was overwritten.
    let left: String = raw.get(format!("{ns}:intruder")).await.unwrap();
    assert_eq!(left, "not ours");
    registry.clear().await.unwrap();
    let _ = raw.quit().await;
}

#[tokio::test]
async fn records_under_keys_no_put_could_write_are_skipped_not_walls() {
    let url = common::url("NAUTILUS_REDIS_URL");
    let ns = common::fresh_namespace();
    let registry = common::connect(&url, &ns).await;
    let raw = common::raw_client(&url).await;
    registry.put("fine", "ok").await.unwrap();
    // A well-formed record, copied under names no put of the registry writes: bytes
    // that are not UTF-8, the namespace prefix alone (an empty key), a key past the
    // registry's key limit.
    let record: Bytes = raw.get(format!("{ns}:fine")).await.unwrap();
    let too_long = "k".repeat(registry.limits().max_key_bytes + 1);
    let mut not_utf8 = format!("{ns}:").into_bytes();
    not_utf8.extend_from_slice(b"\xff\xfebin");
    for name in [
        not_utf8,
        format!("{ns}:").into_bytes(),
        format!("{ns}:{too_long}").into_bytes(),
    ] {
        let _: () = raw
            .set(Bytes::from(name), record.clone(), None, None, false)
            .await
            .unwrap();
    }
    // Before, one key that is not UTF-8 failed every scan and count ("Could not
    // convert to string"), and with them a router's repairs and migrations.
    assert_eq!(registry.count().await.unwrap(), 1);
    let (keys, skipped) = scan_all(&registry, 2).await;
    assert_eq!(keys, ["fine"]);
    assert_eq!(skipped, ["", too_long.as_str(), "\u{fffd}\u{fffd}bin"]);
    registry.clear().await.unwrap();
    assert_eq!(registry.count().await.unwrap(), 0);
    let _ = raw.quit().await;
}

#[tokio::test]
async fn a_record_at_the_last_possible_version_is_foreign_data_not_a_version_to_wrap() {
    let url = common::url("NAUTILUS_REDIS_URL");
    let ns = common::fresh_namespace();
    let registry = common::connect(&url, &ns).await;
    let raw = common::raw_client(&url).await;
    for (key, tag) in [("max_record", b'N'), ("max_tombstone", b'T')] {
        let stored = common::plant_record(&raw, &ns, key, tag, u64::MAX, b"x").await;
        let corrupt = |r: Result<(), Error>| matches!(r, Err(Error::Corrupt { .. }));
        assert!(corrupt(registry.put(key, "new").await.map(drop)), "{key}");
        assert!(corrupt(registry.get(key).await.map(drop)), "{key}");
        assert!(corrupt(registry.delete(key).await.map(drop)), "{key}");
        let left: Vec<u8> = raw.get(format!("{ns}:{key}")).await.unwrap();
        assert_eq!(left, stored, "{key} was overwritten");
        // An import replaces it (it holds no version): a router's repair heals it.
        let entry =
            nautilus_core::Entry::new("imported", nautilus_core::Version::from_raw(9), None);
        assert!(registry.import(key, entry.clone()).await.unwrap(), "{key}");
        assert_eq!(registry.get_entry(key).await.unwrap(), Some(entry), "{key}");
    }
    registry.clear().await.unwrap();
    let _ = raw.quit().await;
}

/// Imports each damaged key's record as it was, at its own version: the import
/// replaces the copy, which reads back whole, and a second import changes nothing.
async fn imports_heal<'k>(
    registry: &RedisRegistry,
    records: impl IntoIterator<Item = (&'k str, nautilus_core::Entry)>,
) {
    for (key, entry) in records {
        assert!(registry.import(key, entry.clone()).await.unwrap(), "{key}");
        assert_eq!(
            registry.get_entry(key).await.unwrap().as_ref(),
            Some(&entry),
            "{key}"
        );
        assert!(!registry.import(key, entry).await.unwrap(), "{key}");
    }
}

/// A record whose value was cut by hand (`SET` of its first bytes, header intact), or
/// had a byte of it changed (`SETRANGE`), as a partial copy or a hand edit leaves it.
/// Before layout 2 carried the value's length and check, the cut one read as a valid,
/// shorter record. Now reads, batches and scans answer both as corrupt, `count` leaves
/// the cut one out, a touch refuses it, and an import of the record at its own version
/// (what a router's heal or repair sends) replaces each; a put or a delete writes over
/// a cut one. A record written in layout 1 is corrupt (it carries no check), unless
/// the client asks to read layout 1: then it is read, counted and touched.
#[tokio::test]
async fn a_record_cut_or_changed_inside_its_value_is_corrupt_and_an_import_replaces_it() {
    let url = common::url("NAUTILUS_REDIS_URL");
    let ns = common::fresh_namespace();
    let registry = common::connect(&url, &ns).await;
    let legacy = RedisRegistry::connect(
        nautilus_redis::RedisConfig::new(&url)
            .namespace(&ns)
            .read_layout_1(true),
    )
    .await
    .unwrap();
    let raw = common::raw_client(&url).await;
    let value = "a value long enough to be cut short";
    registry.put("fine", "ok").await.unwrap();
    let mut good = Vec::new();
    for key in ["cut", "changed", "cut_then_put", "cut_then_deleted"] {
        registry.put(key, value).await.unwrap();
        good.push(registry.get_entry(key).await.unwrap().unwrap());
    }
    for key in ["cut", "cut_then_put", "cut_then_deleted"] {
        let full = format!("{ns}:{key}");
        let stored: Vec<u8> = raw.get(&full).await.unwrap();
        let cut = &stored[..stored.len() - 7];
        let _: () = raw.set(&full, cut, None, None, false).await.unwrap();
    }
    let full = format!("{ns}:changed");
    let len: u32 = raw.strlen(&full).await.unwrap();
    let _: u32 = raw.setrange(&full, len - 1, "X").await.unwrap();
    let old = common::plant_record(&raw, &ns, "layout1", b'N', 5 << 16, b"from before").await;

    let corrupt = |r: &Result<(), Error>| matches!(r, Err(Error::Corrupt { .. }));
    for key in ["cut", "changed"] {
        assert!(corrupt(&registry.get(key).await.map(drop)), "{key}");
        let batch = registry.get_many(&["fine", key]).await;
        assert!(batch[0].as_ref().is_ok_and(Option::is_some), "{key}");
        assert!(
            matches!(&batch[1], Err(Error::Corrupt { .. })),
            "{key}: {:?}",
            batch[1]
        );
    }
    let (keys, skipped) = scan_all(&registry, 10).await;
    let mut keys = keys;
    keys.sort();
    assert_eq!(keys, ["fine"]);
    assert_eq!(
        skipped,
        [
            "changed",
            "cut",
            "cut_then_deleted",
            "cut_then_put",
            "layout1"
        ]
    );
    let (mut keys, _) = scan_all(&legacy, 10).await;
    keys.sort();
    assert_eq!(keys, ["fine", "layout1"]);
    // The header alone tells a cut value (its length); a byte changed in place is
    // found by reads of the value only.
    assert_eq!(registry.count().await.unwrap(), 2);
    assert_eq!(legacy.count().await.unwrap(), 3);
    assert!(corrupt(
        &registry.touch("cut", Expiry::Never).await.map(drop)
    ));
    assert!(corrupt(&registry.get("layout1").await.map(drop)));
    assert_eq!(
        legacy.get("layout1").await.unwrap().as_deref(),
        Some(&b"from before"[..])
    );
    assert!(
        legacy
            .touch("layout1", Expiry::Never)
            .await
            .unwrap()
            .is_some()
    );
    let touched: Vec<u8> = raw.get(format!("{ns}:layout1")).await.unwrap();
    assert_eq!((touched[1], &touched[18..]), (old[1], &old[18..]));
    assert_eq!(
        legacy.get("layout1").await.unwrap().as_deref(),
        Some(&b"from before"[..])
    );

    // Imports of the records as they were, at their own versions, replace them.
    imports_heal(
        &registry,
        ["cut", "changed"].into_iter().zip(good.iter().cloned()),
    )
    .await;
    let put = registry.put("cut_then_put", "rewritten").await.unwrap();
    assert!(put > good[2].version);
    assert_eq!(
        registry.get("cut_then_put").await.unwrap().as_deref(),
        Some(&b"rewritten"[..])
    );
    assert!(registry.delete("cut_then_deleted").await.unwrap());
    assert_eq!(registry.get("cut_then_deleted").await.unwrap(), None);
    assert_eq!(registry.count().await.unwrap(), 4);
    assert_eq!(legacy.count().await.unwrap(), 5);
    let (_, skipped) = scan_all(&registry, 10).await;
    assert_eq!(skipped, ["layout1"]);
    let (_, skipped) = scan_all(&legacy, 10).await;
    assert!(skipped.is_empty(), "{skipped:?}");
    registry.clear().await.unwrap();
    let _ = raw.quit().await;
}

/// A record whose check was changed by hand (its value intact), whose tag was (a
/// record marked a tombstone), whose layout byte was (2 to 1), or which is another
/// key's record copied under this key (`COPY`, or a reply matched to the wrong
/// request): each reads as corrupt, never as a value or a delete. One whose expiry
/// was moved into the past by hand reads as expired (nothing in it tells it from a
/// record that expired). Before the check was bound to the key, the copy read as the
/// other key's value and a router's repair spread it to the other replica; before
/// imports compared a copy with the import at its own version, none of the others was
/// replaced by an import of the record at its own version, so every repair of them
/// failed, and a router took the refused import of the expired-looking one for a
/// delete and buried the good copy (found from outside). Now an import at the
/// record's own version replaces each, and the copy an older version of, as any newer
/// record does. So does one over another key's record copied at a newer version,
/// which the import script cannot see as damaged: the client reads the copy, finds it
/// corrupt, drops it if unchanged, and imports again.
#[tokio::test]
async fn a_records_check_tag_or_key_changed_is_corrupt_and_an_import_replaces_it() {
    let url = common::url("NAUTILUS_REDIS_URL");
    let ns = common::fresh_namespace();
    let registry = common::connect(&url, &ns).await;
    let raw = common::raw_client(&url).await;
    registry.put("source", "their value").await.unwrap();
    let keys = [
        "check_changed",
        "copied",
        "copied_newer",
        "expiry_moved",
        "layout_flipped",
        "tag_flipped",
    ];
    let mut good = Vec::new();
    for key in keys {
        registry.put(key, "my value").await.unwrap();
        good.push(registry.get_entry(key).await.unwrap().unwrap());
    }
    // Written after: its record is newer than every key's above.
    registry.put("newer_source", "a newer value").await.unwrap();
    let full = |key: &str| format!("{ns}:{key}");
    let stored: Vec<u8> = raw.get(full("check_changed")).await.unwrap();
    let _: u32 = raw
        .setrange(full("check_changed"), 29, [stored[29] ^ 1].as_slice())
        .await
        .unwrap();
    let _: u32 = raw.setrange(full("tag_flipped"), 0, "T").await.unwrap();
    let _: u32 = raw
        .setrange(full("layout_flipped"), 1, [1u8].as_slice())
        .await
        .unwrap();
    let _: u32 = raw
        .setrange(full("expiry_moved"), 10, 1u64.to_be_bytes().as_slice())
        .await
        .unwrap();
    for (from, to) in [("source", "copied"), ("newer_source", "copied_newer")] {
        let theirs: Vec<u8> = raw.get(full(from)).await.unwrap();
        let _: () = raw
            .set(full(to), theirs.as_slice(), None, None, false)
            .await
            .unwrap();
    }

    for key in keys {
        let read = registry.get(key).await;
        if key == "expiry_moved" {
            assert!(matches!(read, Ok(None)), "{key}: {read:?}");
        } else {
            assert!(
                matches!(read, Err(Error::Corrupt { .. })),
                "{key}: {read:?}"
            );
        }
    }
    let (_, skipped) = scan_all(&registry, 10).await;
    assert_eq!(
        skipped,
        [
            "check_changed",
            "copied",
            "copied_newer",
            "layout_flipped",
            "tag_flipped"
        ]
    );

    imports_heal(&registry, keys.into_iter().zip(good)).await;
    assert_eq!(
        registry.get("source").await.unwrap().as_deref(),
        Some(&b"their value"[..])
    );
    let (_, skipped) = scan_all(&registry, 10).await;
    assert!(skipped.is_empty(), "{skipped:?}");
    registry.clear().await.unwrap();
    let _ = raw.quit().await;
}

/// A record in the backend's own layout, dated far ahead (forged, or written by a
/// machine whose clock was years off): writes over it are refused as corrupt and leave
/// it as it is, instead of taking a version past it that this client's clock would then
/// carry to every later write of every key.
#[tokio::test]
async fn a_record_dated_years_ahead_is_refused_and_does_not_carry_the_clock_away() {
    let url = common::url("NAUTILUS_REDIS_URL");
    let ns = common::fresh_namespace();
    let registry = common::connect(&url, &ns).await;
    let raw = common::raw_client(&url).await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let ten_years = 10 * 366 * 86_400_000u64;
    for (healed, (key, version)) in [
        ("years_ahead", (now_ms + ten_years) << 16),
        ("last_but_one", u64::MAX - 1),
    ]
    .into_iter()
    .enumerate()
    {
        let stored = common::plant_record(&raw, &ns, key, b'N', version, b"forged").await;
        let corrupt = |r: Result<(), Error>| matches!(r, Err(Error::Corrupt { .. }));
        assert!(corrupt(registry.put(key, "new").await.map(drop)), "{key}");
        assert!(
            corrupt(
                registry
                    .touch(key, nautilus_core::Expiry::Never)
                    .await
                    .map(drop)
            ),
            "{key}"
        );
        assert!(corrupt(registry.delete(key).await.map(drop)), "{key}");
        let left: Vec<u8> = raw.get(format!("{ns}:{key}")).await.unwrap();
        assert_eq!(left, stored, "{key} was overwritten");
        // Other keys are written at versions of this day, not of the forged one's.
        for i in 0..20 {
            let other = format!("clean{i}");
            let v = registry.put(&other, "v").await.unwrap();
            assert!(
                v.millis() < now_ms + 86_400_000,
                "{other} was written at {v} after {key}"
            );
            assert_eq!(
                registry.get(&other).await.unwrap().as_deref(),
                Some(&b"v"[..])
            );
        }
        // No write of ours is dated so far ahead: it reads as corrupt, is neither
        // counted nor scanned, and an import replaces it (a router heals it so).
        assert!(corrupt(registry.get(key).await.map(drop)), "{key}");
        assert_eq!(registry.count().await.unwrap(), 20 + healed as u64, "{key}");
        let (keys, skipped) = scan_all(&registry, 10).await;
        assert!(!keys.iter().any(|k| k == key), "{key}");
        assert!(skipped.iter().any(|k| k == key), "{key}: {skipped:?}");
        let entry =
            nautilus_core::Entry::new("imported", nautilus_core::Version::from_raw(9), None);
        assert!(registry.import(key, entry.clone()).await.unwrap(), "{key}");
        assert_eq!(registry.get_entry(key).await.unwrap(), Some(entry), "{key}");
    }
    // Within the horizon, a record is taken and the client's clock follows it; a
    // second one that far again is past the server's horizon, however far the
    // client's clock went.
    let within = 300 * 86_400_000u64;
    common::plant_record(&raw, &ns, "ahead", b'N', (now_ms + within) << 16, b"a").await;
    let carried = registry.put("ahead", "taken").await.unwrap();
    assert!(carried.millis() >= now_ms + within);
    let beyond = common::plant_record(
        &raw,
        &ns,
        "further",
        b'N',
        (now_ms + 2 * within) << 16,
        b"b",
    )
    .await;
    assert!(matches!(
        registry.put("further", "new").await,
        Err(Error::Corrupt { .. })
    ));
    let left: Vec<u8> = raw.get(format!("{ns}:further")).await.unwrap();
    assert_eq!(
        left, beyond,
        "a forgery past the server's horizon was written over"
    );
    registry.clear().await.unwrap();
    let _ = raw.quit().await;
}

/// A batch read that misses a key while a put of it lands answers the miss or the
/// new record, never `Corrupt`: a batch's misses are told from keys of another Redis
/// type by reading them again, and a record written in between is read as one.
/// (Checked with `EXISTS`, such a key looked like another type: 728 of 20,000 calls
/// in the outside attempt.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_read_racing_a_put_of_a_missed_key_never_answers_corrupt() {
    let url = common::url("NAUTILUS_REDIS_URL");
    let ns = common::fresh_namespace();
    let registry = std::sync::Arc::new(common::connect(&url, &ns).await);
    let mut wrong = Vec::new();
    for i in 0..3_000 {
        let key = format!("race{i}");
        let writer = {
            let (registry, key) = (std::sync::Arc::clone(&registry), key.clone());
            tokio::spawn(async move { registry.put(&key, "v").await.map(drop) })
        };
        let read = registry.get_many(&[&key, "never-written"]).await;
        writer.await.unwrap().unwrap();
        for r in read {
            match r {
                Ok(None) => {}
                Ok(Some(e)) if e.value == "v" => {}
                other => wrong.push(format!("{key}: {other:?}")),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    );
    registry.clear().await.unwrap();
}
