//! A replica whose copy of records is corrupt (bytes its store did not write, put there
//! by hand as `redis-cli` would, or a key of another Redis type), over redis-server
//! processes of the test's own, at R=2: reads answer the good copy and heal the bad
//! one, scans and counts report every record once, in pages no longer than asked,
//! and a repair heals every such copy and finishes clean.

#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

use std::collections::BTreeMap;

use nautilus_core::{Registry, RegistryExt};
use nautilus_redis_servers::Server;

mod common;
mod corrupt_replica;

use corrupt_replica::{NS, Setup, repair_clean, setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_reads_answer_the_good_copy_and_heal_the_corrupt_one() {
    let s = setup().await;
    s.corrupt_first_copies().await;
    for (_, k) in &s.bad {
        let got = s.router.get(k).await.unwrap();
        assert_eq!(got.as_ref(), s.all.get(k), "{k}");
    }
    s.assert_healed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_scans_and_counts_report_a_record_whose_first_copy_is_corrupt() {
    let s = setup().await;
    s.corrupt_first_copies().await;
    // Before, both left out every record whose first replica held junk.
    assert_eq!(s.router.count().await.unwrap(), s.all.len() as u64);
    s.corrupt_first_copies().await;
    for page_size in [1, 5, 1000] {
        let mut seen = BTreeMap::new();
        let mut cursor = None;
        loop {
            let page = s.router.scan("", cursor.as_ref(), page_size).await.unwrap();
            assert!(
                page.records.len() <= page_size,
                "a page of {} records for a limit of {page_size}",
                page.records.len()
            );
            for (k, e) in page.records {
                assert!(seen.insert(k.clone(), e.value).is_none(), "{k} twice");
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, s.all, "page size {page_size}");
        s.corrupt_first_copies().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_repair_heals_corrupt_copies_and_finishes_clean() {
    let s = setup().await;
    s.corrupt_first_copies().await;
    // Before, each corrupt copy counted as failed, in this repair and every later one.
    s.assert_repairs_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_writes_over_a_corrupt_first_copy_heal_it_and_are_made() {
    let s = setup().await;
    s.corrupt_first_copies().await;
    for (i, (n, k)) in s.bad.iter().enumerate() {
        // Before, each answered `Corrupt` until a read or a repair healed the key.
        match i % 4 {
            0 => {
                s.router.put(k, "rewritten").await.unwrap();
                assert_eq!(s.router.get(k).await.unwrap().unwrap(), "rewritten");
            }
            1 => {
                let current = s.all[k].clone();
                let version = s.nodes[s.second_replica(k, *n).await]
                    .get_entry(k)
                    .await
                    .unwrap()
                    .unwrap()
                    .version;
                let cas = nautilus_core::PutOptions::default()
                    .condition(nautilus_core::Condition::Version(version));
                s.router.put_opts(k, "swapped".into(), cas).await.unwrap();
                assert_ne!(current, "swapped");
                assert_eq!(s.router.get(k).await.unwrap().unwrap(), "swapped");
            }
            2 => {
                assert!(s.router.delete(k).await.unwrap(), "{k}: nothing deleted");
                assert_eq!(s.router.get(k).await.unwrap(), None);
            }
            _ => {
                let ttl = std::time::Duration::from_secs(600);
                assert!(
                    s.router
                        .touch(k, nautilus_core::Expiry::After(ttl))
                        .await
                        .unwrap()
                        .is_some()
                );
            }
        }
        assert!(s.nodes[*n].get(k).await.is_ok(), "{k}: n{n} still corrupt");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_repair_heals_junk_over_a_deleted_key() {
    let s = setup().await;
    for (_, k) in &s.bad {
        assert!(s.router.delete(k).await.unwrap());
    }
    s.corrupt_first_copies().await;
    let progress = repair_clean(&s.router).await;
    assert_eq!(progress.failed, 0, "{progress:?}");
    for (n, k) in &s.bad {
        // Before, the junk stayed, and every later write of the key was refused.
        assert_eq!(s.nodes[*n].get(k).await.unwrap(), None, "{k} on n{n}");
        assert_eq!(s.router.get(k).await.unwrap(), None, "{k}");
        s.router.put(k, "again").await.unwrap();
        assert_eq!(s.router.get(k).await.unwrap().unwrap(), "again");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_a_corrupt_copy_with_the_good_replica_down_is_unavailable_not_an_answer() {
    let mut s = setup().await;
    let (n, k) = s.bad[0].clone();
    let other = s.second_replica(&k, n).await;
    s.corrupt_first_copies().await;
    s.servers[other].stop();
    for _ in 0..10 {
        s.router.check_health().await;
    }
    assert!(
        s.router
            .health()
            .iter()
            .any(|h| h.node == format!("n{other}") && h.state == nautilus_shard::NodeState::Down),
        "{:?}",
        s.router.health()
    );
    // Before: `Corrupt` for the read, and scans and counts that left the record out
    // without an error.
    let read = s.router.get(&k).await;
    assert!(
        matches!(read, Err(nautilus_core::Error::Unavailable { .. })),
        "{read:?}"
    );
    let count = s.router.count().await;
    assert!(
        matches!(count, Err(nautilus_core::Error::Unavailable { .. })),
        "{count:?}"
    );
    let mut cursor = None;
    let scanned = loop {
        match s.router.scan("", cursor.as_ref(), 50).await {
            Ok(page) => match page.next {
                Some(next) => cursor = Some(next),
                None => break Ok(()),
            },
            Err(e) => break Err(e),
        }
    };
    assert!(
        matches!(scanned, Err(nautilus_core::Error::Unavailable { .. })),
        "{scanned:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_a_key_a_scan_returns_is_not_also_listed_skipped() {
    let s = setup().await;
    // The second copies this time: the first replicas report the records.
    for (n, k) in &s.bad {
        let other = s.second_replica(k, *n).await;
        s.servers[other]
            .cli(&["SET", &format!("{NS}:{k}"), "junk"])
            .unwrap();
    }
    let mut cursor = None;
    let (mut returned, mut skipped) = (Vec::new(), Vec::new());
    loop {
        let page = s.router.scan("", cursor.as_ref(), 16).await.unwrap();
        returned.extend(page.records.into_iter().map(|(k, _)| k));
        skipped.extend(page.skipped);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(returned.len(), s.all.len());
    assert!(skipped.is_empty(), "returned and skipped: {skipped:?}");
}

/// Sets `key`'s copy on `server` to a record in the Redis layout dated ten years
/// ahead (a forged header), through `redis-cli -x`, which takes the bytes as they are.
fn forge(server: &Server, key: &str) {
    use std::io::Write;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let version = (now_ms + 10 * 366 * 86_400_000) << 16;
    let mut stored = vec![b'N', 1];
    stored.extend_from_slice(&version.to_be_bytes());
    stored.extend_from_slice(&0u64.to_be_bytes());
    stored.extend_from_slice(b"forged");
    let port = server.port().to_string();
    let full = format!("{NS}:{key}");
    let mut cli = std::process::Command::new("redis-cli")
        .args(["-p", &port, "-x", "SET", &full])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    cli.stdin.take().unwrap().write_all(&stored).unwrap();
    assert!(cli.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_a_copy_forged_years_ahead_is_corrupt_and_healed_not_the_newest() {
    let s = setup().await;
    for (i, (n, k)) in s.bad.iter().enumerate() {
        let on = if i % 2 == 0 {
            *n
        } else {
            s.second_replica(k, *n).await
        };
        forge(&s.servers[on], k);
        let direct = s.nodes[on].get(k).await;
        assert!(
            matches!(direct, Err(nautilus_core::Error::Corrupt { .. })),
            "{k}: {direct:?}"
        );
    }
    // Before, reads answered the forged value, writes failed (`Corrupt` on the first
    // replica, `InvalidArgument` on the second, after the coordinator applied them)
    // and every repair counted each key failed.
    for (i, (_, k)) in s.bad.iter().enumerate() {
        if i % 3 == 0 {
            s.router.put(k, "after").await.unwrap();
            assert_eq!(s.router.get(k).await.unwrap().unwrap(), "after", "{k}");
        } else {
            assert_eq!(s.router.get(k).await.unwrap().as_ref(), s.all.get(k), "{k}");
        }
    }
    let progress = repair_clean(&s.router).await;
    assert_eq!(progress.failed, 0, "{progress:?}");
    for (n, k) in &s.bad {
        for node in [*n, s.second_replica(k, *n).await] {
            assert!(s.nodes[node].get(k).await.is_ok(), "{k} on n{node}");
        }
    }
}

/// Cuts the value of `key`'s copy on `server` by its last 4 bytes (the header left
/// intact) for an even `i`, else changes its last byte, by hand: server-side, as a
/// partial copy or a hand edit would leave it.
fn damage_value(server: &Server, key: &str, i: usize) {
    let script = if i.is_multiple_of(2) {
        "local v = redis.call('GET', KEYS[1]) \
         return redis.call('SET', KEYS[1], string.sub(v, 1, #v - 4))"
    } else {
        "local n = redis.call('STRLEN', KEYS[1]) \
         return redis.call('SETRANGE', KEYS[1], n - 1, 'X')"
    };
    let full = format!("{NS}:{key}");
    server.cli(&["EVAL", script, "1", &full]).unwrap();
}

impl Setup {
    /// Cuts the value of the first replica's copy of half the keys of `bad`, and
    /// changes a byte of it for the other half: each node then answers its copy as
    /// corrupt.
    async fn damage_first_values(&self) {
        self.damage_first(damage_value, |_| false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_a_copy_cut_inside_its_value_is_read_from_the_other_replica_and_healed() {
    let s = setup().await;
    s.damage_first_values().await;
    // Before, the cut copy read as a valid, shorter record: the read answered it.
    for (_, k) in &s.bad {
        let got = s.router.get(k).await.unwrap();
        assert_eq!(got.as_ref(), s.all.get(k), "{k}");
    }
    s.assert_healed().await;
    s.damage_first_values().await;
    let keys: Vec<&str> = s.bad.iter().map(|(_, k)| k.as_str()).collect();
    for (k, got) in keys.iter().zip(s.router.get_many(&keys).await) {
        assert_eq!(got.unwrap().map(|e| e.value).as_ref(), s.all.get(*k), "{k}");
    }
    s.assert_healed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_copies_cut_inside_their_value_are_counted_once_and_repaired() {
    let s = setup().await;
    s.damage_first_values().await;
    assert_eq!(s.router.count().await.unwrap(), s.all.len() as u64);
    // The count read the records from the other replicas and healed the copies.
    s.assert_healed().await;
    s.damage_first_values().await;
    s.assert_repairs_clean().await;
}

/// Changes, by hand and server-side, the header of `key`'s copy on `server` (its value
/// left whole), the `kind`th of: its check, its tag (the record marked a tombstone),
/// its layout byte (2 to 1), its layout byte and a byte of its check, its expiry
/// (moved into the past, its Redis TTL left).
fn damage_header(server: &Server, key: &str, kind: usize) {
    let script = match kind % 5 {
        0 => {
            "local b = string.byte(redis.call('GETRANGE', KEYS[1], 29, 29)) \
             return redis.call('SETRANGE', KEYS[1], 29, string.char((b + 1) % 256))"
        }
        1 => "return redis.call('SETRANGE', KEYS[1], 0, 'T')",
        2 => "return redis.call('SETRANGE', KEYS[1], 1, string.char(1))",
        // Read as layout 1, its value would be the length, the check and the value
        // glued together (from outside: 6 wrong reads under load).
        3 => {
            "local b = string.byte(redis.call('GETRANGE', KEYS[1], 25, 25)) \
             redis.call('SETRANGE', KEYS[1], 25, string.char((b + 16) % 256)) \
             return redis.call('SETRANGE', KEYS[1], 1, string.char(1))"
        }
        _ => "return redis.call('SETRANGE', KEYS[1], 10, struct.pack('>I4I4', 0, 1))",
    };
    let full = format!("{NS}:{key}");
    server.cli(&["EVAL", script, "1", &full]).unwrap();
}

/// First copies whose check, tag, layout byte (alone, or with a byte of the check) or
/// expiry was changed: reads answer the
/// other replica's copy, and a repair replaces them, then finds nothing to do. Before,
/// an import at the copy's own version never replaced them, so every repair counted
/// the first three failed and no node was verified by one (found from outside: a node
/// restarted empty then stayed unverified, and adding a node was refused), and a
/// router took the refused import of the expired-looking one for a delete the
/// coordinator had not seen and buried the good copy too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_copies_whose_header_changed_are_read_from_the_other_replica_and_repaired() {
    let s = setup().await;
    let damage = || s.damage_first(damage_header, |i| i % 5 == 4);
    damage().await;
    for (_, k) in &s.bad {
        let got = s.router.get(k).await.unwrap();
        assert_eq!(got.as_ref(), s.all.get(k), "{k}");
    }
    s.assert_healed().await;
    damage().await;
    s.assert_repairs_clean().await;
    for (_, k) in &s.bad {
        let got = s.router.get(k).await.unwrap();
        assert_eq!(got.as_ref(), s.all.get(k), "{k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_writes_over_a_copy_cut_inside_its_value_are_made_and_leave_it_whole() {
    let s = setup().await;
    s.damage_first_values().await;
    for (i, (n, k)) in s.bad.iter().enumerate() {
        if i % 3 == 0 {
            s.router.put(k, "rewritten").await.unwrap();
            assert_eq!(s.router.get(k).await.unwrap().unwrap(), "rewritten");
        } else {
            let ttl = std::time::Duration::from_secs(600);
            let touched = s.router.touch(k, nautilus_core::Expiry::After(ttl)).await;
            assert!(touched.unwrap().is_some(), "{k}");
            assert_eq!(s.router.get(k).await.unwrap().as_ref(), s.all.get(k), "{k}");
        }
        assert!(s.nodes[*n].get(k).await.is_ok(), "{k}: n{n} still corrupt");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_another_keys_tombstone_copied_over_a_record_deletes_nothing() {
    let s = setup().await;
    // A key deleted on each node, after every record was written: its tombstone is
    // newer than any of them.
    let mut gone = Vec::new();
    for n in 0..3 {
        let k = common::keys_on(&s.router, &format!("n{n}"), &format!("gone{n}-"), 1).remove(0);
        s.router.put(&k, "soon deleted").await.unwrap();
        assert!(s.router.delete(&k).await.unwrap());
        gone.push(k);
    }
    for (n, k) in &s.bad {
        let (from, to) = (format!("{NS}:{}", gone[*n]), format!("{NS}:{k}"));
        s.servers[*n].cli(&["COPY", &from, &to, "REPLACE"]).unwrap();
    }
    // Before, the copied tombstone passed for the key's own delete: reads answered
    // "not found" and carried the delete to the good replica, and a repair made the
    // loss final on both (from outside, 3 acknowledged writes lost in one run).
    for (_, k) in &s.bad {
        assert_eq!(s.router.get(k).await.unwrap().as_ref(), s.all.get(k), "{k}");
    }
    s.assert_healed().await;
    let progress = repair_clean(&s.router).await;
    assert_eq!(progress.failed, 0, "{progress:?}");
    for k in s.all.keys() {
        assert_eq!(s.router.get(k).await.unwrap().as_ref(), s.all.get(k), "{k}");
    }
}

/// A record written, its second replica's layout byte changed, then a repair, key by
/// key: the record survives on both replicas. Before, the repair's walk of the first
/// replica gave the record to the corrupt copy while the second replica's walk healed
/// it; the give's import, refused over a copy being replaced, read nothing live and
/// was taken for a delete, and the last good copy was removed (found from outside:
/// 4 of 21 trials; here 3 of 8 keys, then 1 of 8 in 2 of 10 runs with heal fixed
/// alone). Nor does the repair count a step failed: the heal's import refused
/// because the give had just replaced the copy counted as a failure though both
/// copies were whole (2-4 of 8 keys), and a repair with a failed step does not mark
/// its nodes verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_fresh_records_whose_second_copy_changed_survive_a_repair() {
    let s = setup().await;
    let mut lost = Vec::new();
    let mut failed = Vec::new();
    for i in 0..8 {
        let k = format!("q{i}");
        s.router.put(&k, "hello-world-value").await.unwrap();
        let first: usize = s.router.node_of(&k).unwrap()[1..].parse().unwrap();
        let second = s.second_replica(&k, first).await;
        damage_header(&s.servers[second], &k, 2);
        let p = s.router.repair().unwrap().wait().await.unwrap();
        if s.router.get(&k).await.unwrap().is_none() {
            lost.push((k, second, p));
        } else if p.failed > 0 {
            failed.push((k, p));
        }
    }
    assert!(lost.is_empty(), "{lost:?}");
    assert!(failed.is_empty(), "{failed:?}");
}

/// A copy whose expiry was set by hand, ten minutes ahead (its header only, no Redis
/// TTL): a repair keeps the copy that never expires, on both replicas. Before, any
/// expiry beat none at one version, and the repair copied it to the good replica:
/// the record expired on both (found from outside).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_an_expiry_set_by_hand_on_one_copy_does_not_spread() {
    let s = setup().await;
    let ahead = "local t = redis.call('TIME') \
                 local ms = tonumber(t[1]) * 1000 + 600000 \
                 return redis.call('SETRANGE', KEYS[1], 10, \
                 struct.pack('>I4I4', math.floor(ms / 4294967296), ms % 4294967296))";
    for (n, k) in &s.bad {
        let full = format!("{NS}:{k}");
        s.servers[*n].cli(&["EVAL", ahead, "1", &full]).unwrap();
        let copy = s.nodes[*n].get_entry(k).await.unwrap().unwrap();
        assert!(copy.expires_at.is_some(), "{k}: the damage did not take");
    }
    let progress = repair_clean(&s.router).await;
    assert_eq!(progress.failed, 0, "{progress:?}");
    for (n, k) in &s.bad {
        let second = s.second_replica(k, *n).await;
        for node in [*n, second] {
            let copy = s.nodes[node].get_entry(k).await.unwrap().unwrap();
            assert_eq!(
                (copy.value, copy.expires_at),
                (s.all[k].clone(), None),
                "{k} on n{node}"
            );
        }
    }
}

/// Junk put by hand on a node that is no replica of its key: under a written key's
/// name, and under a deleted one's. No read asks that node and no replica's walk
/// gives it anything, so only a repair can clear it: it does, with nothing failed,
/// the records stay whole on their replicas, and a second repair finds nothing to do.
/// Before, such junk stayed for good (found from outside: 64-96 damaged copies after
/// each run), listed as skipped by every scan of that node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_junk_on_a_node_that_is_no_replica_of_its_key_is_cleared_by_a_repair() {
    let s = setup().await;
    let mut junk = Vec::new();
    for (n, k) in s.bad.iter().step_by(4) {
        let second = s.second_replica(k, *n).await;
        let third = (0..3).find(|&m| m != *n && m != second).unwrap();
        junk.push((third, k.clone()));
    }
    // A key written and deleted through the router: its replicas hold tombstones.
    let gone = common::keys_on(&s.router, "n0", "gone-", 1).remove(0);
    s.router.put(&gone, "soon deleted").await.unwrap();
    let second = s.second_replica(&gone, 0).await;
    assert!(s.router.delete(&gone).await.unwrap());
    let third = (0..3).find(|&m| m != 0 && m != second).unwrap();
    junk.push((third, gone));
    for (n, k) in &junk {
        s.servers[*n]
            .cli(&["SET", &format!("{NS}:{k}"), "junk"])
            .unwrap();
        let direct = s.nodes[*n].get(k).await;
        assert!(
            matches!(direct, Err(nautilus_core::Error::Corrupt { .. })),
            "{k}: {direct:?}"
        );
    }
    let progress = repair_clean(&s.router).await;
    assert_eq!(progress.failed, 0, "{progress:?}");
    assert!(progress.repaired >= junk.len() as u64, "{progress:?}");
    for (n, k) in &junk {
        assert_eq!(s.nodes[*n].get(k).await.unwrap(), None, "{k} on n{n}");
        assert_eq!(s.router.get(k).await.unwrap(), s.all.get(k).cloned(), "{k}");
    }
    let again = s.router.repair().unwrap().wait().await.unwrap();
    assert_eq!((again.repaired, again.failed), (0, 0), "{again:?}");
}

/// A deleted key whose tombstone's version was changed by hand to one years ahead,
/// on either replica (the header only: a tombstone's check covers no version): reads
/// answer "not found", a put of the key is made, and a repair heals every copy with
/// nothing failed. Before, the forged tombstone read as a tombstone (nothing) while
/// every put of the key failed as corrupt for the tombstone's grace (ten minutes),
/// and no read, scan or repair saw anything to heal (found from outside).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_a_tombstone_forged_years_ahead_is_healed_and_its_key_written_again() {
    let s = setup().await;
    let ahead = "return redis.call('SETRANGE', KEYS[1], 2, struct.pack('>I4', 2147483647))";
    let mut forged = Vec::new();
    for (i, (n, k)) in s.bad.iter().enumerate().take(6) {
        let second = s.second_replica(k, *n).await;
        assert!(s.router.delete(k).await.unwrap());
        let on = if i % 2 == 0 { *n } else { second };
        s.servers[on]
            .cli(&["EVAL", ahead, "1", &format!("{NS}:{k}")])
            .unwrap();
        let direct = s.nodes[on].get(k).await;
        assert!(
            matches!(direct, Err(nautilus_core::Error::Corrupt { .. })),
            "{k}: {direct:?}"
        );
        forged.push((i, *n, second, k.clone()));
    }
    for (i, _, _, k) in &forged {
        if i % 3 == 0 {
            s.router.put(k, "again").await.unwrap();
            assert_eq!(s.router.get(k).await.unwrap().unwrap(), "again", "{k}");
        } else {
            assert_eq!(s.router.get(k).await.unwrap(), None, "{k}");
        }
    }
    let progress = repair_clean(&s.router).await;
    assert_eq!(progress.failed, 0, "{progress:?}");
    for (i, first, second, k) in &forged {
        for node in [*first, *second] {
            let copy = s.nodes[node].get(k).await.unwrap();
            let expected = (i % 3 == 0).then(|| nautilus_core::Bytes::from("again"));
            assert_eq!(copy, expected, "{k} on n{node}");
        }
        s.router.put(k, "later").await.unwrap();
    }
}
