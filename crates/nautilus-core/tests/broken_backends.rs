//! The conformance checks can fail: each test wraps the reference backend in a
//! registry that breaks exactly one promise (`broken/`), and shows that the check of
//! that promise fails on it (and passes on the unbroken reference).

#![allow(clippy::unwrap_used, clippy::panic)] // a failed unwrap is a failed test

mod broken;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use broken::{Broken, Fault};
use nautilus_core::ManualClock;
use nautilus_core::testkit::{Harness, checks};

type Check = fn(Harness) -> Pin<Box<dyn Future<Output = ()>>>;

/// A check as a plain function pointer, so that it can run on a thread of its own.
macro_rules! check {
    ($name:ident) => {
        (|h: Harness| -> Pin<Box<dyn Future<Output = ()>>> {
            Box::pin(async move { checks::$name(&h).await })
        }) as Check
    };
}

/// Runs `check` on a fresh [`Broken`] registry with `fault`: the failure it reported
/// (its panic message), or `None` if it passed.
fn failure(fault: Fault, check: Check) -> Option<String> {
    let run = std::thread::spawn(move || {
        let clock = ManualClock::starting_now();
        let harness = Harness::with_manual_clock(Arc::new(Broken::new(fault, &clock)), clock);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(check(harness));
    });
    run.join().err().map(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    })
}

/// `check` passes on the reference and fails on `fault`, saying `because`.
fn catches(check: Check, fault: Fault, because: &str) {
    if let Some(msg) = failure(Fault::Nothing, check) {
        panic!("the check fails on the unbroken reference: {msg}");
    }
    match failure(fault, check) {
        None => panic!("the check passed a registry that {fault:?}"),
        Some(msg) => assert!(
            msg.contains(because),
            "the check failed on {fault:?} for another reason: {msg}"
        ),
    }
}

#[test]
fn a_delete_without_its_tombstone_is_caught() {
    catches(
        check!(tombstone_deletes_refuse_older_imports_and_stay_invisible),
        Fault::ForgetsTombstones,
        "version was imported over a tombstone",
    );
}

#[test]
fn tombstones_never_collected_are_caught() {
    catches(
        check!(collected_tombstones_no_longer_refuse_imports),
        Fault::NeverCollectsTombstones,
        "still refused imports well after its collection time",
    );
}

#[test]
fn expired_imports_that_take_room_are_caught() {
    catches(
        check!(expired_imports_store_nothing),
        Fault::StoresExpiredImports,
        "an expired import: count",
    );
}

#[test]
fn imports_past_the_value_limit_are_caught() {
    catches(
        check!(oversized_imports_are_refused),
        Fault::ImportIgnoresValueLimit,
        "expected TooLarge",
    );
}

#[test]
fn cursors_that_restart_the_scan_are_caught() {
    catches(
        check!(foreign_cursors_are_refused),
        Fault::AcceptsAnyCursor,
        "must be InvalidArgument",
    );
}

#[test]
fn byte_limits_never_enforced_are_caught() {
    catches(
        check!(byte_limits_are_enforced),
        Fault::IgnoresByteLimit,
        "held under a limit of",
    );
}

#[test]
fn imports_past_the_record_limit_are_caught() {
    catches(
        check!(imports_count_against_the_capacity),
        Fault::ImportIgnoresCapacity,
        "expected CapacityExceeded",
    );
}

#[test]
fn counters_that_miss_writes_are_caught() {
    catches(
        check!(stats_count_writes_deletes_and_batch_reads),
        Fault::CountsNoWrites,
        "was not counted as an insert",
    );
}

#[test]
fn counters_that_miss_batch_reads_are_caught() {
    catches(
        check!(stats_count_writes_deletes_and_batch_reads),
        Fault::CountsNoBatchReads,
        "a batch hit was not counted",
    );
}

#[test]
fn capacity_errors_naming_another_limit_are_caught() {
    catches(
        check!(capacity_errors_name_the_limit),
        Fault::MisnamesTheLimit,
        "a put past the limit of 3 records was refused as past 1 records",
    );
}

#[test]
fn absent_deletes_that_delete_are_caught() {
    catches(
        check!(absent_delete_deletes_nothing),
        Fault::AbsentDeleteDeletes,
        "an Absent delete of a live record: expected Conflict",
    );
}

#[test]
fn ready_puts_that_ignore_their_condition_are_caught() {
    catches(
        check!(put_ready_answers_as_put_opts),
        Fault::ReadyPutIgnoresConditions,
        "was applied through pr/ready",
    );
}

#[test]
fn ready_puts_that_write_and_hand_the_value_back_are_caught() {
    catches(
        check!(put_ready_answers_as_put_opts),
        Fault::ReadyPutWritesAndHandsBack,
        "put_ready handed the value back but changed the record",
    );
}

#[test]
fn imports_of_absurd_versions_that_are_taken_are_caught() {
    catches(
        check!(imports_from_far_ahead_are_refused),
        Fault::ImportsAnyVersion,
        "an import of version",
    );
}

#[test]
fn ready_imports_past_the_value_limit_are_caught() {
    catches(
        check!(import_ready_answers_as_import),
        Fault::ReadyImportIgnoresValueLimit,
        "an oversized newer copy through ir/ready",
    );
}

#[test]
fn ready_imports_that_write_and_hand_the_entry_back_are_caught() {
    catches(
        check!(import_ready_answers_as_import),
        Fault::ReadyImportWritesAndHandsBack,
        "import_ready handed the entry back but changed the record",
    );
}

#[test]
fn a_backend_that_claims_to_answer_at_once_and_waits_is_caught() {
    catches(
        check!(put_ready_answers_as_put_opts),
        Fault::ClaimsReadyButWaits,
        "though the backend claims answers_ready",
    );
    catches(
        check!(import_ready_answers_as_import),
        Fault::ClaimsReadyButWaits,
        "though the backend claims answers_ready",
    );
}

#[test]
fn tombstones_kept_for_less_than_asked_are_caught() {
    catches(
        check!(tombstone_deletes_refuse_older_imports_and_stay_invisible),
        Fault::ShortensTombstones,
        "was gone",
    );
}

#[test]
fn batches_that_drop_ttls_are_caught() {
    catches(
        check!(batched_writes_keep_the_rules_of_single_writes),
        Fault::BatchesDropTtls,
        "without an expiry",
    );
}

#[test]
fn scans_that_misreport_versions_are_caught() {
    catches(
        check!(scan_returns_each_record_exactly_once_in_pages),
        Fault::ScanForgetsVersions,
        "at another version or expiry",
    );
}

#[test]
fn imports_counted_as_writes_are_caught() {
    catches(
        check!(stats_count_each_operation_exactly),
        Fault::CountsImports,
        "two imports",
    );
}

#[test]
fn touches_that_take_a_zero_ttl_are_caught() {
    catches(
        check!(touch_changes_expiry_without_rewriting),
        Fault::TouchTakesZeroTtl,
        "touch with a zero TTL was not refused",
    );
}

#[test]
fn touches_that_take_a_past_instant_are_caught() {
    catches(
        check!(touch_changes_expiry_without_rewriting),
        Fault::TouchTakesPastInstant,
        "instant in the past was not refused",
    );
}

#[test]
fn returned_keys_listed_as_skipped_are_caught() {
    catches(
        check!(scan_returns_each_record_exactly_once_in_pages),
        Fault::SkippedListsLiveKeys,
        "both returned and listed as skipped",
    );
}

#[test]
fn incarnations_that_change_with_nothing_lost_are_caught() {
    catches(
        check!(ping_answers),
        Fault::IncarnationChanges,
        "the incarnation changed",
    );
}

#[test]
fn conditional_deletes_without_their_tombstone_are_caught() {
    catches(
        check!(conditional_deletes_and_batches_delete_as_single_deletes),
        Fault::ConditionalDeleteDropsTombstone,
        "left no tombstone",
    );
}

#[test]
fn batch_deletes_the_count_misses_are_caught() {
    catches(
        check!(conditional_deletes_and_batches_delete_as_single_deletes),
        Fault::DeleteManyKeepsCount,
        "did not lower the count",
    );
}

#[test]
fn batches_that_take_a_past_instant_are_caught() {
    catches(
        check!(batched_writes_keep_the_rules_of_single_writes),
        Fault::BatchPutTakesPastInstant,
        "an instant in the past",
    );
}

#[test]
fn bytes_that_miscount_the_records_are_caught() {
    catches(
        check!(bytes_follow_the_records_held),
        Fault::HalvesBytes,
        "took bytes from",
    );
}

#[test]
fn batch_reads_without_their_expiry_are_caught() {
    catches(
        check!(batches_answer_each_key_as_a_single_operation),
        Fault::BatchReadsDropExpiry,
        "get_many answered",
    );
}

#[test]
fn batch_deletes_that_claim_every_key_are_caught() {
    catches(
        check!(batches_answer_each_key_as_a_single_operation),
        Fault::DeleteManyClaimsAll,
        "delete_many of a live record",
    );
}

#[test]
fn clears_that_keep_tombstones_are_caught() {
    catches(
        check!(clear_removes_tombstones_too),
        Fault::ClearKeepsTombstones,
        "clear left the key's tombstone",
    );
}

#[test]
fn expired_records_counted_as_evicted_are_caught() {
    catches(
        check!(expired_records_are_not_evictions),
        Fault::CountsMissesAsEvictions,
        "counted as evicted",
    );
}
