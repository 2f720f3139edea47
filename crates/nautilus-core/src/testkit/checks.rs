//! The conformance checks. Each takes a fresh [`Harness`] and panics with a message
//! naming the broken promise.

#![allow(clippy::panic)] // assertions are the point of a check

use std::collections::BTreeSet;

use bytes::Bytes;

use super::Harness;
use super::answered::Answered;
pub use super::batch_answers::batches_answer_each_key_as_a_single_operation;
pub use super::batch_writes::batched_writes_keep_the_rules_of_single_writes;
pub use super::capacity::{
    byte_limits_are_enforced, capacity_errors_name_the_limit, capacity_is_enforced,
    imports_count_against_the_capacity,
};
pub use super::conditions::{
    absent_delete_deletes_nothing, compare_and_swap_checks_the_version,
    concurrent_compare_and_swap_has_exactly_one_winner, conditional_delete_checks_the_version,
    put_if_absent_has_one_winner, put_ready_answers_as_put_opts,
};
pub use super::counters::{bytes_follow_the_records_held, expired_records_are_not_evictions};
pub use super::expiry::{
    expired_records_are_not_listed_counted_or_in_the_way, touch_changes_expiry_without_rewriting,
    ttl_expires_records, zero_ttl_is_refused,
};
pub use super::loose_ends::{
    expired_imports_store_nothing, foreign_cursors_are_refused, imports_from_far_ahead_are_refused,
    long_batches_answer_every_key_in_place, oversized_imports_are_refused,
    stats_count_each_operation_exactly, stats_count_writes_deletes_and_batch_reads,
};
pub use super::paths::{
    conditional_deletes_and_batches_delete_as_single_deletes, ready_paths_answer_as_awaited,
};
pub use super::scans::{
    long_scans_return_each_record_once, scan_is_stable_under_concurrent_writes,
    scan_returns_each_record_exactly_once_in_pages,
};
pub use super::tombstones::{
    clear_removes_tombstones_too, collected_tombstones_no_longer_refuse_imports,
    import_ready_answers_as_import, imported_tombstones_remove_older_records_only,
    tombstone_deletes_refuse_older_imports_and_stay_invisible,
};
use crate::error::{Error, Result};
use crate::ext::RegistryExt;
use crate::{Condition, Entry, Expiry, PutItem, PutOptions, Timestamp, Version};

/// The answer of `ready` (a call made without waiting, named `name`) or, if it
/// handed its `input` back, of `awaited` with it: after checking that the backend
/// may hand back (it does not claim `answers_ready`), that the input came back
/// unchanged, and that the record under `key` is still `before`.
pub(super) async fn ready_else_awaited<T, I, F>(
    h: &Harness,
    (what, name, input_name): (&str, &str, &str),
    key: &str,
    before: &Option<Entry>,
    input: I,
    ready: impl FnOnce(I) -> std::result::Result<Result<T>, I>,
    awaited: impl FnOnce(I) -> F,
) -> Result<T>
where
    I: Clone + PartialEq + std::fmt::Debug,
    F: std::future::Future<Output = Result<T>>,
{
    let r = &h.registry;
    match ready(input.clone()) {
        Ok(answer) => answer,
        Err(back) => {
            assert!(
                !r.capabilities().answers_ready,
                "{what}: {name} handed the {input_name} back, though the backend claims \
                 answers_ready"
            );
            assert_eq!(
                back, input,
                "{what}: {name} handed back another {input_name}"
            );
            assert_eq!(
                &r.get_entry(key).await.answered(),
                before,
                "{what}: {name} handed the {input_name} back but changed the record"
            );
            awaited(back).await
        }
    }
}

/// Two refusals of the same step, awaited and made without waiting (`names`), are
/// the same kind of error.
pub(super) fn same_refusal<T: std::fmt::Debug>(
    what: &str,
    names: [&str; 2],
    answers: &[Result<T>],
) {
    if let [Err(a), Err(b)] = answers {
        assert_eq!(
            std::mem::discriminant(a),
            std::mem::discriminant(b),
            "{what}: {} answered {a:?}, {} {b:?}",
            names[0],
            names[1]
        );
    }
}

pub(super) fn v(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// The value and version `key` holds, as `get_entry` answers them.
pub(super) async fn held(r: &crate::DynRegistry, key: &str) -> Option<(Bytes, Version)> {
    r.get_entry(key)
        .await
        .answered()
        .map(|e| (e.value, e.version))
}

/// A put returns a version; a get returns the value and that version.
pub async fn put_then_get_returns_value_and_version(h: &Harness) {
    let r = &h.registry;
    let version = r.put("alpha", v("one")).await.answered();
    let entry = r
        .get_entry("alpha")
        .await
        .answered()
        .expect("record just written");
    assert_eq!(entry.value, v("one"));
    assert_eq!(
        entry.version, version,
        "get must return the version put returned"
    );
    assert_eq!(entry.expires_at, None, "a put without TTL must not expire");
    if let Some(ready) = r.get_ready("alpha") {
        assert_eq!(
            ready.answered(),
            Some(entry.clone()),
            "get_ready disagrees with get_entry"
        );
    }
    if let Some(ready) = r.get_ready("") {
        assert!(matches!(ready, Err(Error::InvalidKey { .. })));
    }
    if let Some(ready) = r.get_value_ready("alpha") {
        assert_eq!(
            ready.answered(),
            Some(entry.value.clone()),
            "get_value_ready disagrees with get_entry"
        );
    }
    if let Some(ready) = r.get_value_ready("never-written") {
        assert_eq!(
            ready.answered(),
            None,
            "get_value_ready found a key never written"
        );
    }
    if let Some(ready) = r.get_value_ready("") {
        assert!(matches!(ready, Err(Error::InvalidKey { .. })));
    }
    assert_eq!(r.entry("alpha").await.answered(), Some(entry.clone()));
    assert_eq!(r.get("alpha").await.answered(), Some(v("one")));
    // Empty values are values.
    r.put("empty", Bytes::new()).await.answered();
    assert_eq!(r.get("empty").await.answered(), Some(Bytes::new()));
}

/// Reading a key that was never written is `Ok(None)`, not an error.
pub async fn missing_key_is_none(h: &Harness) {
    assert_eq!(h.registry.get_entry("never-written").await.answered(), None);
    assert!(!h.registry.exists("never-written").await.answered());
    assert!(!h.registry.delete("never-written").await.answered());
}

/// Every write gives a strictly greater version.
pub async fn overwrite_increases_version(h: &Harness) {
    let r = &h.registry;
    let mut last = r.put("k", v("0")).await.answered();
    for i in 1..20 {
        let next = r.put("k", v(&i.to_string())).await.answered();
        assert!(next > last, "write {i}: version {next} is not after {last}");
        last = next;
    }
    assert_eq!(r.get("k").await.answered(), Some(v("19")));
}

/// Empty and over-long keys are `InvalidKey` on every operation and change nothing.
pub async fn invalid_keys_are_refused_before_anything_is_touched(h: &Harness) {
    let r = &h.registry;
    let too_long = "k".repeat(r.limits().max_key_bytes + 1);
    for bad in ["", too_long.as_str()] {
        let is_invalid = |res: &Result<_, Error>| matches!(res, Err(Error::InvalidKey { .. }));
        assert!(
            is_invalid(&r.get_entry(bad).await.map(|_| ())),
            "get {}",
            bad.len()
        );
        // The reads applications make: through the ready methods, when answered.
        assert!(
            is_invalid(&r.get(bad).await.map(|_| ())),
            "get {}",
            bad.len()
        );
        assert!(is_invalid(&r.exists(bad).await.map(|_| ())), "exists");
        if let Some(answer) = r.get_ready(bad) {
            assert!(is_invalid(&answer.map(|_| ())), "get_ready {}", bad.len());
        }
        if let Some(answer) = r.get_value_ready(bad) {
            assert!(
                is_invalid(&answer.map(|_| ())),
                "get_value_ready {}",
                bad.len()
            );
        }
        assert!(is_invalid(&r.put(bad, v("x")).await.map(|_| ())), "put");
        assert!(is_invalid(&r.delete(bad).await.map(|_| ())), "delete");
        assert!(
            is_invalid(&r.touch(bad, Expiry::Never).await.map(|_| ())),
            "touch"
        );
        let entry = Entry::new(v("x"), Version::from_raw(1), None);
        assert!(
            is_invalid(&r.import(bad, entry).await.map(|_| ())),
            "import"
        );
    }
    let at_limit = "k".repeat(r.limits().max_key_bytes);
    r.put(&at_limit, v("fits")).await.answered();
    assert_eq!(
        r.count().await.answered(),
        1,
        "refused keys must not be stored"
    );
}

/// Keys are data: pattern characters match themselves only, in gets and scans.
pub async fn keys_are_data_not_patterns(h: &Harness) {
    let r = &h.registry;
    let keys = [
        "a*",
        "a*b",
        "ab",
        "a",
        "user[1]",
        "user[1]x",
        "user1",
        "?",
        "x?y",
        "xzy",
        "\\",
        "{tag}",
        "{tag}:x",
        "sp ace",
        "line\nbreak",
        "ünïcødé",
        "%",
        "_",
    ];
    for k in keys {
        r.put(k, v(k)).await.answered();
    }
    for k in keys {
        assert_eq!(r.get(k).await.answered(), Some(v(k)), "key {k:?}");
    }
    let scan = |prefix: &'static str| async move {
        let mut found = BTreeSet::new();
        let mut s = r.scanner(prefix).page_size(3);
        while let Some((k, _)) = s.next().await.answered() {
            found.insert(k);
        }
        found
    };
    let set = |ks: &[&str]| ks.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
    assert_eq!(scan("a*").await, set(&["a*", "a*b"]));
    assert_eq!(scan("user[1]").await, set(&["user[1]", "user[1]x"]));
    assert_eq!(scan("x?").await, set(&["x?y"]));
    assert_eq!(scan("?").await, set(&["?"]));
    assert_eq!(scan("\\").await, set(&["\\"]));
    assert_eq!(scan("{tag}").await, set(&["{tag}", "{tag}:x"]));
    assert_eq!(scan("%").await, set(&["%"]));
    assert_eq!(scan("").await.len(), keys.len());
}

/// A value over the limit is `TooLarge` and the previous value is intact.
pub async fn oversized_values_are_refused_and_lose_nothing(h: &Harness) {
    let r = &h.registry;
    let limit = r.limits().max_value_bytes;
    let before = r.put("big", v("small")).await.answered();
    let huge = Bytes::from(vec![7u8; limit + 1]);
    match r.put("big", huge.clone()).await {
        Err(Error::TooLarge { size, limit: l, .. }) => {
            assert_eq!(size, limit as u64 + 1);
            assert_eq!(l, limit as u64);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let entry = r.get_entry("big").await.answered().answered();
    assert_eq!((entry.value, entry.version), (v("small"), before));
    let batch = r.put_many(vec![PutItem::new("big2", huge)]).await;
    assert!(matches!(batch[0], Err(Error::TooLarge { .. })));
    assert_eq!(r.get("big2").await.answered(), None);
}

/// A record deleted and written again gets a version above every earlier one, so an
/// old replica's copy can never win.
pub async fn versions_keep_increasing_across_delete_and_recreate(h: &Harness) {
    let r = &h.registry;
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(r.put("phoenix", v("x")).await.answered());
        assert!(r.delete("phoenix").await.answered());
    }
    seen.push(r.put("phoenix", v("x")).await.answered());
    assert!(
        seen.windows(2).all(|w| w[1] > w[0]),
        "versions went back: {seen:?}"
    );
    // A delete's version, tombstone or not, is above the record's it removed.
    let deleted = r
        .delete_opts("phoenix", crate::DeleteOptions::default())
        .await
        .answered()
        .expect("a delete of a live record returns its version");
    assert!(
        deleted > seen[5],
        "a delete returned {deleted:?}, not above the removed record's {:?}",
        seen[5]
    );
}

/// Import writes a record as-is only when it is newer than what is stored, and later
/// writes go above the imported version.
pub async fn import_applies_only_newer_records(h: &Harness) {
    let r = &h.registry;
    let local = r.put("imp", v("local")).await.answered();
    let older = Entry::new(v("older"), Version::from_raw(local.as_raw() - 1), None);
    assert!(
        !r.import("imp", older).await.answered(),
        "an older record was applied"
    );
    let same = Entry::new(v("same"), local, None);
    assert!(
        !r.import("imp", same).await.answered(),
        "an equal version was applied"
    );
    assert_eq!(r.get("imp").await.answered(), Some(v("local")));

    // A version far ahead, as from a node whose clock runs fast.
    let ahead = Version::from_raw(local.as_raw() + (1 << 40));
    let far_expiry = Timestamp::from_millis(ahead.millis() + 86_400_000);
    let newer = Entry::new(v("newer"), ahead, Some(far_expiry));
    assert!(r.import("imp", newer.clone()).await.answered());
    let got = r.get_entry("imp").await.answered().answered();
    assert_eq!(
        got, newer,
        "import must keep value, version and expiry as given"
    );
    let after = r.put("imp", v("after")).await.answered();
    assert!(
        after > ahead,
        "a write after an import must get a newer version"
    );

    assert!(
        r.import("fresh", Entry::new(v("f"), Version::from_raw(5), None))
            .await
            .answered()
    );
    assert_eq!(
        r.get_entry("fresh").await.answered().answered().version,
        Version::from_raw(5)
    );
    // Importing the same record twice is idempotent.
    assert!(
        !r.import("fresh", Entry::new(v("f"), Version::from_raw(5), None))
            .await
            .answered()
    );
}

/// Batches give one result per input, in order; one bad key fails only itself.
pub async fn batches_return_one_result_per_key_in_order(h: &Harness) {
    let r = &h.registry;
    let held = r.put("b/held", v("h")).await.answered();
    let items = vec![
        PutItem::new("b/1", v("one")),
        PutItem::new("", v("bad key")),
        PutItem::new("b/2", v("two")),
        PutItem::new("b/held", v("conflict"))
            .with_options(PutOptions::default().condition(Condition::Absent)),
        PutItem::new("b/3", v("three")).with_options(PutOptions::default().ttl(h.ttl_unit())),
    ];
    let results = r.put_many(items).await;
    assert_eq!(results.len(), 5);
    assert!(
        results[0].is_ok() && results[2].is_ok() && results[4].is_ok(),
        "{results:?}"
    );
    assert!(matches!(results[1], Err(Error::InvalidKey { .. })));
    assert!(
        matches!(&results[3], Err(Error::Conflict { actual: Some(a), .. }) if *a == held),
        "{:?}",
        results[3]
    );

    let got = r
        .get_many(&["b/2", "b/missing", "", "b/1", "b/held", "b/3"])
        .await;
    assert_eq!(got.len(), 6);
    let value = |i: usize| got[i].as_ref().answered().as_ref().map(|e| e.value.clone());
    assert_eq!(value(0), Some(v("two")));
    assert_eq!(value(1), None);
    assert!(matches!(got[2], Err(Error::InvalidKey { .. })));
    assert_eq!(value(3), Some(v("one")));
    assert_eq!(value(4), Some(v("h")));
    assert_eq!(value(5), Some(v("three")));
    assert_eq!(
        got[0].as_ref().answered().as_ref().answered().version,
        *results[2].as_ref().answered()
    );

    let deleted = r.delete_many(&["b/1", "b/missing", "", "b/2"]).await;
    assert_eq!(deleted.len(), 4);
    assert!(*deleted[0].as_ref().answered());
    assert!(!*deleted[1].as_ref().answered());
    assert!(matches!(deleted[2], Err(Error::InvalidKey { .. })));
    assert!(*deleted[3].as_ref().answered());
    assert_eq!(r.get("b/1").await.answered(), None);
    assert!(r.get_many(&[]).await.is_empty());
    assert!(r.put_many(Vec::new()).await.is_empty());

    // A compare-and-swap in a batch checks its version as a single one does.
    let first = r.put("b/cas", v("1")).await.answered();
    let second = r.put("b/cas", v("2")).await.answered();
    let swap = |value: &str, at: Version| {
        PutItem::new("b/cas", v(value))
            .with_options(PutOptions::default().condition(Condition::Version(at)))
    };
    let results = r.put_many(vec![swap("stale", first)]).await;
    assert!(
        matches!(&results[0], Err(Error::Conflict { actual: Some(a), .. }) if *a == second),
        "a batch's compare-and-swap from an old version: {results:?}"
    );
    assert_eq!(r.get("b/cas").await.answered(), Some(v("2")));
    let results = r.put_many(vec![swap("3", second)]).await;
    assert!(results[0].is_ok(), "{results:?}");
    assert_eq!(r.get("b/cas").await.answered(), Some(v("3")));
}

/// Count counts live records; clear removes them all.
pub async fn count_and_clear(h: &Harness) {
    let r = &h.registry;
    assert_eq!(
        r.count().await.answered(),
        0,
        "a fresh registry must be empty"
    );
    for i in 0..25 {
        r.put(&format!("c/{i}"), v("x")).await.answered();
    }
    r.put("c/3", v("overwrite")).await.answered();
    assert_eq!(r.count().await.answered(), 25);
    r.delete("c/0").await.answered();
    assert_eq!(r.count().await.answered(), 24);
    r.clear().await.answered();
    assert_eq!(r.count().await.answered(), 0);
    assert_eq!(r.get("c/3").await.answered(), None);
    r.put("c/after", v("x")).await.answered();
    assert_eq!(r.count().await.answered(), 1);
}

/// Stats count hits and misses.
pub async fn stats_count_hits_and_misses(h: &Harness) {
    let r = &h.registry;
    let before = r.stats().await.answered();
    r.put("st", v("x")).await.answered();
    r.get("st").await.answered();
    r.get("st").await.answered();
    r.get("st-missing").await.answered();
    let after = r.stats().await.answered();
    assert!(
        after.hits >= before.hits + 2,
        "hits: {before:?} -> {after:?}"
    );
    assert!(
        after.misses > before.misses,
        "misses: {before:?} -> {after:?}"
    );
    assert_eq!(after.records, 1);
}

/// Ping answers on a healthy backend.
pub async fn ping_answers(h: &Harness) {
    let before = h.registry.incarnation();
    h.registry.ping().await.answered();
    // The same store, which lost nothing in between, tells the same incarnation.
    assert_eq!(
        h.registry.incarnation(),
        before,
        "the incarnation changed with nothing lost"
    );
}
