//! The arguments of each script call (see [`crate::scripts`]), built from an
//! operation's options: a put's stored record, condition and expiry, a touch's expiry
//! (both resolved by core's [`Expiry::resolve`] on the estimate of the server's
//! clock), a delete's condition, an import's record.

use fred::types::Value;
use nautilus_core::{Condition, Entry, Error, Expiry, Result, Timestamp, Version};

use crate::codec::{encode_record, encode_tombstone, halves, tombstone_check};

/// A record write: a put or an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write {
    Put,
    Import,
}

impl Write {
    /// Its name, in errors.
    pub(crate) fn op(self) -> &'static str {
        match self {
            Write::Put => "put",
            Write::Import => "import",
        }
    }

    /// The tag that comes before its arguments in a call of the multi-record script.
    pub(crate) fn tag(self) -> Value {
        match self {
            Write::Put => Value::from_static_str("P"),
            Write::Import => Value::from_static_str("I"),
        }
    }
}

/// A put or an import ready to send: which, its full key and its script's arguments
/// (those of one record, the same in the single-record and the multi-record script,
/// where the tag of its kind comes first).
#[derive(Debug)]
pub(crate) struct RecordCall {
    pub(crate) kind: Write,
    pub(crate) key: String,
    pub(crate) args: Vec<Value>,
}

impl RecordCall {
    /// About the bytes it puts on the wire (for sizing batches).
    pub(crate) fn size(&self) -> usize {
        self.key.len()
            + self
                .args
                .iter()
                .map(|v| match v {
                    Value::Bytes(b) => b.len(),
                    Value::String(s) => s.len(),
                    _ => 8,
                })
                .sum::<usize>()
    }
}

/// The instant `expiry` ends at, in ms (0: never), on a clock that reads `now`: core's
/// resolution, within what the scripts can add and compare exactly (Lua numbers are
/// doubles, exact up to 2^53 ms, a date some 285,000 years away).
pub(crate) fn expires_at(expiry: Expiry, now: Timestamp) -> Result<u64> {
    within_lua(expiry.resolve(now)?.map_or(0, Timestamp::as_millis))
}

/// An expire-at in ms, if the scripts can add and compare it exactly (and Redis take
/// it as `PXAT`): at most 2^53.
fn within_lua(ms: u64) -> Result<u64> {
    if ms <= 1 << 53 {
        Ok(ms)
    } else {
        Err(Error::invalid_argument(
            "the expiry is too far in the future for Redis scripts (over 2^53 ms)",
        ))
    }
}

/// A put's arguments: the record as stored (header with the candidate `version`, then
/// the value), its expiry, its condition, and now (which only purges the index). A
/// conditional put carries `fence`, the `run_id` the client last saw, after its
/// condition: a server that restarted since refuses it (see [`crate::scripts`]).
pub(crate) fn put(
    key: &str,
    value: &[u8],
    version: Version,
    expires_at: u64,
    condition: Condition,
    now: Timestamp,
    fence: Option<&str>,
) -> Vec<Value> {
    let fenced = |cond: &[u8], fence: &str| {
        let mut c = Vec::with_capacity(cond.len() + fence.len());
        c.extend_from_slice(cond);
        c.extend_from_slice(fence.as_bytes());
        Value::Bytes(c.into())
    };
    let condition = match (condition, fence) {
        (Condition::Absent, None) => Value::from_static_str("N"),
        (Condition::Absent, Some(f)) => fenced(b"N", f),
        (Condition::Version(v), f) => fenced(&v.as_raw().to_be_bytes(), f.unwrap_or_default()),
        _ => Value::from_static_str(""),
    };
    vec![
        Value::Bytes(encode_record(key, version, expires_at, value).into()),
        Value::from(expires_at.to_string()),
        condition,
        Value::from(now.as_millis().to_string()),
    ]
}

/// A delete's arguments: its condition, how long its tombstone lives, its candidate
/// version (taken, as a put's, on the estimate of the server's clock) and the check
/// its tombstone carries, bound to `key` (the script cannot compute it); a
/// conditional delete also carries `fence`, as a conditional put does.
pub(crate) fn delete(
    key: &str,
    condition: Condition,
    tombstone_ms: u64,
    candidate: Version,
    fence: Option<&str>,
) -> Vec<Value> {
    let (cond, (hi, lo)) = match condition {
        Condition::Version(v) => ("V", halves(v.as_raw())),
        _ => ("A", (0, 0)),
    };
    let mut args = vec![
        Value::from(cond),
        Value::from(hi.to_string()),
        Value::from(lo.to_string()),
        Value::from(tombstone_ms.to_string()),
    ];
    args.extend(version(candidate));
    args.extend(halves_of(tombstone_check(key)));
    if let (Condition::Version(_), Some(fence)) = (condition, fence) {
        args.push(Value::from(fence));
    }
    args
}

/// A touch's arguments: the new expiry (see [`expires_at`]) and the candidate version.
pub(crate) fn touch(expires_at: u64, candidate: Version) -> Vec<Value> {
    let mut args = vec![Value::from(expires_at.to_string())];
    args.extend(version(candidate));
    args
}

/// A version as the scripts take it: its two 32-bit halves, in decimal.
fn version(v: Version) -> [Value; 2] {
    halves_of(v.as_raw())
}

/// A u64 as the scripts take one: its high and low 32 bits, in decimal.
fn halves_of(x: u64) -> [Value; 2] {
    let (hi, lo) = halves(x);
    [Value::from(hi.to_string()), Value::from(lo.to_string())]
}

/// An import's arguments: the entry as it is to be stored (built here, as a put's
/// record is, so the script only compares and writes) and its expire-at ms (0:
/// never); a tombstone without a collection time is kept `tombstone_ms` after `now`.
/// An expiry (or collection time) past 2^53 ms is refused, as a put's is: sent, it
/// would fail the script, and with it every record coalesced into the same call.
pub(crate) fn import(
    key: &str,
    entry: Entry,
    now: Timestamp,
    tombstone_ms: u64,
) -> Result<Vec<Value>> {
    let exp = within_lua(match entry.expires_at {
        Some(t) => t.as_millis(),
        None if entry.is_tombstone() => now.as_millis().saturating_add(tombstone_ms),
        None => 0,
    })?;
    let stored = if entry.is_tombstone() {
        encode_tombstone(key, entry.version, exp)
    } else {
        encode_record(key, entry.version, exp, &entry.value)
    };
    Ok(vec![
        Value::Bytes(stored.into()),
        Value::from(exp.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;
    use crate::codec::{Stored, decode};

    const NOW: Timestamp = Timestamp::from_millis(1_700_000_000_000);

    #[test]
    fn expiries_resolve_as_core_says_and_stay_within_lua() {
        assert_eq!(expires_at(Expiry::Never, NOW).unwrap(), 0);
        let ttl = Expiry::After(Duration::from_micros(1_500));
        assert_eq!(expires_at(ttl, NOW).unwrap(), NOW.as_millis() + 2);
        let at = Timestamp::from_millis(NOW.as_millis() + 10);
        assert_eq!(expires_at(Expiry::At(at), NOW).unwrap(), at.as_millis());
        for refused in [
            Expiry::After(Duration::ZERO),
            Expiry::At(NOW),
            Expiry::At(Timestamp::from_millis(1)),
            Expiry::After(Duration::MAX),
            Expiry::At(Timestamp::from_millis((1 << 53) + 1)),
        ] {
            assert!(
                matches!(expires_at(refused, NOW), Err(Error::InvalidArgument { .. })),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn a_put_sends_the_record_as_stored() {
        let v = Version::from_raw(99 << 16);
        let args = put("k", b"value", v, 5, Condition::Absent, NOW, None);
        let Value::Bytes(stored) = &args[0] else {
            panic!("{args:?}")
        };
        match decode("k", stored.clone(), false).unwrap() {
            Stored::Record(e) => {
                assert_eq!((&e.value[..], e.version), (&b"value"[..], v));
                assert_eq!(e.expires_at, Some(Timestamp::from_millis(5)));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(args[2], Value::from_static_str("N"));
        let cas = put("k", b"", v, 0, Condition::Version(v), NOW, None);
        assert_eq!(
            cas[2],
            Value::Bytes(Bytes::copy_from_slice(&v.as_raw().to_be_bytes()))
        );
        // The fence follows a condition, and only a condition.
        let fence = "f".repeat(40);
        let cas = put("k", b"", v, 0, Condition::Version(v), NOW, Some(&fence));
        let mut want = v.as_raw().to_be_bytes().to_vec();
        want.extend_from_slice(fence.as_bytes());
        assert_eq!(cas[2], Value::Bytes(want.into()));
        let absent = put("k", b"", v, 0, Condition::Absent, NOW, Some(&fence));
        assert_eq!(
            absent[2],
            Value::Bytes(format!("N{fence}").into_bytes().into())
        );
        let always = put("k", b"", v, 0, Condition::Always, NOW, Some(&fence));
        assert_eq!(always[2], Value::from_static_str(""));
        let d = delete(
            "k",
            Condition::Always,
            1000,
            Version::from_raw(5 << 32 | 6),
            Some(&fence),
        );
        assert_eq!(d[0], Value::from("A"));
        assert_eq!(d[4..6], [Value::from("5"), Value::from("6")]);
        // The tombstone's check, bound to the key: the script cannot compute it.
        let (hi, lo) = halves(tombstone_check("k"));
        assert_eq!(
            d[6..],
            [Value::from(hi.to_string()), Value::from(lo.to_string())]
        );
        let cas = delete(
            "k",
            Condition::Version(Version::from_raw(7 << 32 | 8)),
            1,
            v,
            None,
        );
        assert_eq!(
            cas[..3],
            [Value::from("V"), Value::from("7"), Value::from("8")]
        );
        assert_eq!(cas.len(), 8);
        let cas = delete("k", Condition::Version(v), 1, v, Some(&fence));
        assert_eq!(cas[8], Value::from(fence.as_str()));
        let t = touch(42, Version::from_raw(1 << 32));
        assert_eq!(t, [Value::from("42"), Value::from("1"), Value::from("0")]);
    }

    proptest! {
        #[test]
        fn a_ttl_ends_after_now_by_its_whole_milliseconds_rounded_up(
            now in 0u64..1 << 50,
            nanos in 1u64..u64::MAX,
        ) {
            let d = Duration::from_nanos(nanos);
            let now = Timestamp::from_millis(now);
            let want = now.as_millis() + nanos.div_ceil(1_000_000);
            match expires_at(Expiry::After(d), now) {
                Ok(ms) => prop_assert_eq!(ms, want),
                Err(_) => prop_assert!(want > 1 << 53),
            }
        }

        #[test]
        fn an_instant_is_kept_if_after_now(now in any::<u64>(), at in any::<u64>()) {
            let got = expires_at(Expiry::At(Timestamp::from_millis(at)), Timestamp::from_millis(now));
            prop_assert_eq!(got.ok(), (at > now && at <= 1 << 53).then_some(at));
        }
    }
}
