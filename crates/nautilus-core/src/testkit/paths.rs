//! The conformance checks that every path of an operation answers as the one it
//! stands for: reads and writes made without waiting as the awaited ones, and a
//! conditional delete as an unconditional one where the condition holds.

#![allow(clippy::panic)] // assertions are the point of a check

use super::Harness;
use super::answered::Answered;
use super::checks::v;
use crate::error::Error;
use crate::ext::RegistryExt;
use crate::{Condition, DeleteOptions, Entry, Expiry, PutOptions, Timestamp, Version};

/// `get_ready`, `put_ready` and `import_ready`, where the backend answers them, answer
/// as `get_entry`, `put_opts` and `import` do: a record's expiry included, a past
/// instant refused, an expired import on an absent key answered `true`.
pub async fn ready_paths_answer_as_awaited(h: &Harness) {
    let r = &h.registry;
    let ttl = PutOptions::default().ttl(h.ttl_unit() * 100);
    r.put_opts("rp/ttl", v("t"), ttl).await.answered();
    r.put("rp/plain", v("p")).await.answered();
    for key in ["rp/ttl", "rp/plain", "rp/missing"] {
        let awaited = r.get_entry(key).await.answered();
        if let Some(ready) = r.get_ready(key) {
            assert_eq!(
                ready.answered(),
                awaited,
                "get_ready answered {key} otherwise than get_entry"
            );
        }
        let value = awaited.map(|e| e.value);
        if let Some(ready) = r.get_value_ready(key) {
            assert_eq!(
                ready.answered(),
                value,
                "get_value_ready answered {key} otherwise than get_entry"
            );
        }
        assert_eq!(
            r.get(key).await.answered(),
            value,
            "get answered {key} otherwise than get_entry"
        );
    }
    let past = PutOptions::default().expiry(Expiry::At(Timestamp::from_millis(1)));
    if let Ok(answer) = r.put_ready("rp/past", v("x"), past) {
        assert!(
            matches!(answer, Err(Error::InvalidArgument { .. })),
            "put_ready took an instant in the past: {answer:?}"
        );
    }
    assert_eq!(r.get("rp/past").await.answered(), None);
    let expired = Some(Timestamp::from_millis(
        h.now().as_millis().saturating_sub(1_000),
    ));
    let copy = Entry::new(v("e"), Version::from_raw(5), expired);
    let awaited = r.import("rp/expired/a", copy.clone()).await.answered();
    assert!(
        awaited,
        "an expired import on an absent key must answer true"
    );
    if let Ok(ready) = r.import_ready("rp/expired/b", copy) {
        assert_eq!(
            ready.answered(),
            awaited,
            "import_ready answered an expired import otherwise than import"
        );
    }
}

/// A delete under a version condition that holds is a delete like any other: with
/// [`DeleteOptions::tombstone`] it leaves its tombstone, and `delete_many` lowers the
/// count as single deletes do.
pub async fn conditional_deletes_and_batches_delete_as_single_deletes(h: &Harness) {
    let r = &h.registry;
    let version = r.put("cd/a", v("a")).await.answered();
    let options = DeleteOptions::default()
        .condition(Condition::Version(version))
        .tombstone(h.ttl_unit() * 100);
    let deleted = r.delete_opts("cd/a", options).await.answered();
    assert!(
        deleted.is_some_and(|d| d > version),
        "a versioned delete answered {deleted:?} for a record at {version:?}"
    );
    let older = Entry::new(v("old"), version, None);
    assert!(
        !r.import("cd/a", older).await.answered(),
        "a versioned delete left no tombstone: an older copy was imported over it"
    );
    assert_eq!(r.get("cd/a").await.answered(), None);
    for i in 0..10 {
        r.put(&format!("cd/many/{i}"), v("m")).await.answered();
    }
    let before = r.count().await.answered();
    let keys: Vec<String> = (0..4).map(|i| format!("cd/many/{i}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    assert!(
        r.delete_many(&refs)
            .await
            .iter()
            .all(|d| matches!(d, Ok(true)))
    );
    assert_eq!(
        r.count().await.answered(),
        before - 4,
        "a batch of 4 deletes did not lower the count by 4"
    );
}
