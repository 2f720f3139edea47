//! How a record is laid out in a Redis string, and how foreign bytes are recognised.
//!
//! ```text
//! byte 0      'N' record | 'T' tombstone
//! byte 1      layout version (1)
//! bytes 2-9   version, u64 big endian
//! bytes 10-17 expiry in Unix ms, u64 big endian (0: never)
//! bytes 18-   the value
//! ```
//! The Lua scripts write the same layout (`struct.pack('>I4I4I4I4', ..)`).

use bytes::{Buf, Bytes};
use nautilus_core::{Entry, Error, Result, Timestamp, Version};

pub(crate) const HEADER: usize = 18;
const LAYOUT: u8 = 1;

/// What a stored string holds.
#[derive(Debug)]
pub(crate) enum Stored {
    Record(Entry),
    /// A deleted record's version, kept briefly so versions never go back.
    Tombstone,
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// A live record as stored: the header, then the value. (The scripts write
/// tombstones of deletes, and patch headers, in the same layout.)
pub(crate) fn encode_record(version: Version, expires_at_ms: u64, value: &[u8]) -> Vec<u8> {
    encode(b'N', version, expires_at_ms, value)
}

/// An imported tombstone as stored: its header (expiry: when it is collected).
pub(crate) fn encode_tombstone(version: Version, collect_at_ms: u64) -> Vec<u8> {
    encode(b'T', version, collect_at_ms, &[])
}

fn encode(tag: u8, version: Version, expires_at_ms: u64, value: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(HEADER + value.len());
    stored.push(tag);
    stored.push(LAYOUT);
    stored.extend_from_slice(&version.as_raw().to_be_bytes());
    stored.extend_from_slice(&expires_at_ms.to_be_bytes());
    stored.extend_from_slice(value);
    stored
}

/// Whether `header`, a stored string's first [`HEADER`] bytes, is a live record's as
/// [`live_entry`] reads it at `now` (the value is not looked at).
pub(crate) fn is_live_header(header: &[u8], now: Timestamp) -> bool {
    header.len() == HEADER && header[0] == b'N' && header[1] == LAYOUT && {
        let version = be_u64(&header[2..10]);
        version != u64::MAX && !far_ahead(Version::from_raw(version), now)
    }
}

/// Whether a stored `version` is dated more than [`Version::MAX_AHEAD`] after `now`
/// (the server's clock): no write of ours gives one (the scripts refuse to write past
/// it, as the router's imports refuse to carry it), so it is forged or corrupt.
fn far_ahead(version: Version, now: Timestamp) -> bool {
    let horizon = now
        .as_millis()
        .saturating_add(Version::MAX_AHEAD.as_millis() as u64);
    version.millis() > horizon
}

pub(crate) fn decode(key: &str, raw: Bytes) -> Result<Stored> {
    if raw.len() < HEADER {
        return Err(Error::corrupt(
            key,
            format!("{} bytes is shorter than a record header", raw.len()),
        ));
    }
    if raw[1] != LAYOUT {
        return Err(Error::corrupt(
            key,
            format!("unknown record layout {}", raw[1]),
        ));
    }
    let version = Version::from_raw(be_u64(&raw[2..10]));
    if version.as_raw() == u64::MAX {
        // No write can follow it: not a version this library gives.
        return Err(Error::corrupt(key, "a record at the last possible version"));
    }
    let expires = be_u64(&raw[10..18]);
    match raw[0] {
        b'N' => {
            // Advancing the owned buffer moves a pointer; `slice` would clone it, which
            // for a buffer fred built from a Vec allocates its shared header.
            let mut value = raw;
            value.advance(HEADER);
            Ok(Stored::Record(Entry::new(
                value,
                version,
                (expires != 0).then(|| Timestamp::from_millis(expires)),
            )))
        }
        b'T' => Ok(Stored::Tombstone),
        other => Err(Error::corrupt(
            key,
            format!("not a Nautilus record (first byte {other:#04x})"),
        )),
    }
}

/// The live record in a read's stored bytes at `now` on the server's clock (none for
/// a miss, a tombstone, or a record whose header says it expired: Redis enforces the
/// same instant with `PXAT`, but a key whose TTL was removed behind our back, by
/// `PERSIST` or a copy without its TTL, would otherwise come back to life).
pub(crate) fn live_entry(key: &str, raw: Option<Bytes>, now: Timestamp) -> Result<Option<Entry>> {
    Ok(match raw {
        None => None,
        Some(raw) => match decode(key, raw)? {
            Stored::Record(e) if far_ahead(e.version, now) => {
                return Err(Error::corrupt(
                    key,
                    format!(
                        "a record at version {}, dated more than {} days after the \
                         server's clock: forged or corrupt",
                        e.version,
                        Version::MAX_AHEAD.as_secs() / 86_400
                    ),
                ));
            }
            Stored::Record(e) => Some(e).filter(|e| !e.is_expired_at(now)),
            Stored::Tombstone => None,
        },
    })
}

/// The two 32-bit halves of a u64, as the Lua scripts take them (Lua numbers are
/// doubles: a whole u64 would lose precision).
pub(crate) fn halves(v: u64) -> (u64, u64) {
    (v >> 32, v & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(tag: u8, version: u64, expires: u64, value: &[u8]) -> Bytes {
        let mut v = vec![tag, LAYOUT];
        v.extend_from_slice(&version.to_be_bytes());
        v.extend_from_slice(&expires.to_be_bytes());
        v.extend_from_slice(value);
        v.into()
    }

    #[test]
    fn records_round_trip_and_garbage_is_corrupt() {
        match decode(
            "k",
            encode_record(Version::from_raw(42), 7, b"hello").into(),
        ) {
            Ok(Stored::Record(e)) => {
                assert_eq!(e.value, Bytes::from_static(b"hello"));
                assert_eq!(e.version, Version::from_raw(42));
                assert_eq!(e.expires_at, Some(Timestamp::from_millis(7)));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode("k", encode(b'T', 1, 0, b"")),
            Ok(Stored::Tombstone)
        ));
        for garbage in [&b""[..], b"plain text value", b"N\x02aaaaaaaaaaaaaaaaaaaa"] {
            match decode("k", Bytes::copy_from_slice(garbage)) {
                Err(Error::Corrupt { key, .. }) => assert_eq!(key, "k"),
                other => panic!("{garbage:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn halves_join_back() {
        for v in [0u64, 1, u64::MAX, 1_795_471_582_762 << 16 | 5] {
            let (hi, lo) = halves(v);
            assert!(hi <= u64::from(u32::MAX) && lo <= u64::from(u32::MAX));
            assert_eq!(hi << 32 | lo, v);
        }
    }

    #[test]
    fn a_record_past_its_header_expiry_is_not_live() {
        let raw = |exp| Some(Bytes::from(encode_record(Version::from_raw(1), exp, b"v")));
        let now = Timestamp::from_millis(1_000);
        assert!(live_entry("k", raw(0), now).unwrap().is_some());
        assert!(live_entry("k", raw(1_001), now).unwrap().is_some());
        assert!(live_entry("k", raw(1_000), now).unwrap().is_none());
        assert!(live_entry("k", raw(999), now).unwrap().is_none());
        assert!(live_entry("k", None, now).unwrap().is_none());
        let tomb = Some(Bytes::from(encode_tombstone(Version::from_raw(2), 5_000)));
        assert!(live_entry("k", tomb, now).unwrap().is_none());
    }

    #[test]
    fn a_record_dated_past_the_horizon_is_corrupt_and_no_live_header() {
        let now = Timestamp::from_millis(1_796_000_000_000);
        let horizon = now.as_millis() + Version::MAX_AHEAD.as_millis() as u64;
        for (millis, corrupt) in [(horizon, false), (horizon + 1, true)] {
            let version = Version::from_raw(millis << 16);
            let raw = Bytes::from(encode_record(version, 0, b"v"));
            let read = live_entry("k", Some(raw.clone()), now);
            assert_eq!(
                matches!(read, Err(Error::Corrupt { .. })),
                corrupt,
                "{millis}: {read:?}"
            );
            assert_eq!(is_live_header(&raw[..HEADER], now), !corrupt, "{millis}");
        }
    }
}
