//! The conformance check that a batch answers each key as the single operation it
//! stands for: `get_many` as `get_entry`, `delete_many` as an unconditional delete.

#![allow(clippy::panic)] // assertions are the point of a check

use std::time::Duration;

use super::Harness;
use super::answered::Answered;
use super::checks::v;
use crate::error::Error;
use crate::ext::RegistryExt;
use crate::{DeleteOptions, Entry, Result};

/// `get_many` answers each key as `get_entry` does: the record whole, expiry
/// included, and `None` for a key never written, an expired record and a tombstone.
/// `delete_many` answers `true` only where it removed a live record: not for those
/// three, and an invalid key is refused alone.
pub async fn batches_answer_each_key_as_a_single_operation(h: &Harness) {
    let r = &h.registry;
    let unit = h.ttl_unit();
    let tombstone = DeleteOptions::default().tombstone(Duration::from_secs(30));
    r.put("ba/plain", v("p")).await.answered();
    r.put_with_ttl("ba/ttl", v("t"), unit * 20).await.answered();
    r.put_with_ttl("ba/gone", v("g"), unit).await.answered();
    r.put("ba/tomb", v("x")).await.answered();
    r.delete_opts("ba/tomb", tombstone).await.answered();
    h.advance(unit).await;

    let keys = ["ba/plain", "ba/ttl", "ba/gone", "ba/tomb", "ba/never", ""];
    let mut singles = Vec::new();
    for key in keys {
        singles.push(r.get_entry(key).await);
    }
    let with_expiry = singles[1].as_ref().ok().and_then(Option::as_ref);
    assert!(
        with_expiry.is_some_and(|e| e.expires_at.is_some()),
        "get_entry of a record with a TTL: {:?}",
        singles[1]
    );
    let many = r.get_many(&keys).await;
    assert_eq!(many.len(), keys.len(), "{many:?}");
    for ((key, single), batched) in keys.iter().zip(&singles).zip(&many) {
        assert_same_read(key, single, batched);
    }

    let deleted = r
        .delete_many(&["ba/plain", "ba/gone", "ba/tomb", "ba/never", ""])
        .await;
    assert!(
        matches!(
            deleted[..],
            [
                Ok(true),
                Ok(false),
                Ok(false),
                Ok(false),
                Err(Error::InvalidKey { .. })
            ]
        ),
        "delete_many of a live record, an expired one, a tombstone, a key never \
         written and an invalid key: {deleted:?}"
    );
    assert_eq!(r.get_entry("ba/plain").await.answered(), None);
    assert_eq!(
        r.count().await.answered(),
        1,
        "after delete_many, only the record with a long TTL is live"
    );
}

/// `batched`, get_many's answer for `key`, is `single`, get_entry's.
fn assert_same_read(key: &str, single: &Result<Option<Entry>>, batched: &Result<Option<Entry>>) {
    match (single, batched) {
        (Ok(a), Ok(b)) => assert_eq!(
            a, b,
            "get_many answered {key:?} otherwise than get_entry (left: get_entry)"
        ),
        (Err(a), Err(b)) => assert_eq!(
            std::mem::discriminant(a),
            std::mem::discriminant(b),
            "get_many refused {key:?} with {b:?}, get_entry with {a:?}"
        ),
        (a, b) => panic!("get_many answered {key:?} with {b:?}, get_entry with {a:?}"),
    }
}
