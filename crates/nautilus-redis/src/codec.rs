//! How a record is laid out in a Redis string, and how foreign or damaged bytes are
//! recognised.
//!
//! ```text
//! byte 0      'N' record | 'T' tombstone
//! byte 1      layout version: 2 (written), or 1 (read if asked, see below)
//! bytes 2-9   version, u64 big endian
//! bytes 10-17 expiry in Unix ms, u64 big endian (0: never)
//! layout 2:
//! bytes 18-21 the value's length, u32 big endian
//! bytes 22-29 the check, u64 big endian: of a record, xxh3-64 of its value seeded
//!             with xxh3-64 of its key (the name under the namespace); of a
//!             tombstone, the bitwise not of an empty value's check
//! bytes 30-   the value
//! layout 1:
//! bytes 18-   the value
//! ```
//! The first 18 bytes mean the same in both layouts: the scripts read them alone
//! (`GETRANGE key 0 17`) and patch the version and expiry in place (bytes 2-17), never
//! the length or the check, which cover the key and the value only. The client
//! computes both when it builds a record (puts and imports); the scripts write only
//! tombstones of their own (deletes), with an empty value and the check the delete
//! sends (see [`tombstone_check`]).
//!
//! A layout-2 record whose value is not as long as its header says (cut, or grown) or
//! does not match its check (a byte changed, the check itself changed, or another
//! key's record copied under this one) is [`Error::Corrupt`] on every read of its
//! value, as is a tombstone that carries a value or a record that carries a
//! tombstone's check (its tag changed), and a layout-1 record whose rest is a whole
//! layout-2 record of its key (its layout byte changed). The paths that read headers only (`count`, the stats' estimate, see
//! [`is_live_header`]) compare the length with the string's (`STRLEN`): they leave a
//! cut or grown value out, but only a read of the value finds a byte changed in place.
//! Layout 1 carries neither, so a layout-1 record is `Corrupt` unless the namespace
//! is read with [`crate::RedisConfig::read_layout_1`]: then a layout-1 record cut or
//! changed inside its value reads as that value, and a layout-2 record whose layout
//! byte and another byte were changed reads as a layout-1 record (its length and
//! check glued to its value).

use bytes::{Buf, Bytes};
use nautilus_core::{Entry, Error, Result, Timestamp, Version};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// The bytes every layout begins with: tag, layout, version, expiry.
pub(crate) const HEADER: usize = 18;
/// Layout 2's header: [`HEADER`], then the value's length and check.
pub(crate) const HEADER_2: usize = 30;
/// The layout every write uses.
const LAYOUT: u8 = 2;
/// The layout written before values carried their length and check, read only if
/// asked.
const LAYOUT_1: u8 = 1;

/// What a stored string holds.
#[derive(Debug)]
pub(crate) enum Stored {
    Record(Entry),
    /// A deleted record, at its version, kept briefly so versions never go back.
    Tombstone(Version),
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

/// The check a layout-2 record of `key` carries of its `value`: bound to the key, so
/// that another key's record copied under this one (by hand, or a reply matched to
/// the wrong request) does not pass for it.
pub(crate) fn check(key: &str, value: &[u8]) -> u64 {
    xxh3_64_with_seed(value, xxh3_64(key.as_bytes()))
}

/// The check a layout-2 tombstone of `key` carries: bound to the key as a record's
/// is, so that another key's tombstone copied under this one does not pass for it (it
/// would delete the record on every replica), and unlike the check of an empty value,
/// so that a record whose tag changed does not pass for a tombstone. The scripts
/// cannot compute it: a delete sends it (see [`crate::args::delete`]).
pub(crate) fn tombstone_check(key: &str) -> u64 {
    !check(key, &[])
}

/// A live record of `key` as stored: the header, then the value. (The scripts write
/// tombstones of deletes, and patch headers, in the same layout.)
pub(crate) fn encode_record(
    key: &str,
    version: Version,
    expires_at_ms: u64,
    value: &[u8],
) -> Vec<u8> {
    encode(b'N', version, expires_at_ms, value, check(key, value))
}

/// An imported tombstone of `key` as stored: its header (expiry: when it is
/// collected).
pub(crate) fn encode_tombstone(key: &str, version: Version, collect_at_ms: u64) -> Vec<u8> {
    encode(b'T', version, collect_at_ms, &[], tombstone_check(key))
}

fn encode(tag: u8, version: Version, expires_at_ms: u64, value: &[u8], check: u64) -> Vec<u8> {
    let mut stored = Vec::with_capacity(HEADER_2 + value.len());
    stored.push(tag);
    stored.push(LAYOUT);
    stored.extend_from_slice(&version.as_raw().to_be_bytes());
    stored.extend_from_slice(&expires_at_ms.to_be_bytes());
    // Redis refuses strings over 512 MiB: a longer value is never stored, so the
    // saturated length is never read back.
    let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
    stored.extend_from_slice(&len.to_be_bytes());
    stored.extend_from_slice(&check.to_be_bytes());
    stored.extend_from_slice(value);
    stored
}

/// Whether `header`, a stored string's first [`HEADER_2`] bytes (fewer for a shorter
/// string), is a live record's as [`live_entry`] reads it at `now`, the string being
/// `stored_len` bytes long (`STRLEN`). The value is not read: a layout-2 record whose
/// length is not its header's is not live (cut or grown), but a byte changed inside
/// its value is only found by reading it.
pub(crate) fn is_live_header(
    header: &[u8],
    stored_len: u64,
    now: Timestamp,
    layout_1: bool,
) -> bool {
    header.len() >= HEADER
        && header[0] == b'N'
        && match header[1] {
            LAYOUT_1 => layout_1,
            LAYOUT => {
                header.len() == HEADER_2
                    && stored_len == HEADER_2 as u64 + u64::from(be_u32(&header[18..22]))
            }
            _ => false,
        }
        && {
            let version = be_u64(&header[2..10]);
            version != u64::MAX && !far_ahead(Version::from_raw(version), now)
        }
}

/// Whether a stored `version` is dated more than [`Version::MAX_AHEAD`] after `now`
/// (the server's clock): no write of ours gives one (the scripts refuse to write past
/// it, as the router's imports refuse to carry it), so it is forged or corrupt.
pub(crate) fn far_ahead(version: Version, now: Timestamp) -> bool {
    let horizon = now
        .as_millis()
        .saturating_add(Version::MAX_AHEAD.as_millis() as u64);
    version.millis() > horizon
}

/// What is wrong with a layout-2 record: found without allocating, so that a layout-1
/// read can ask whether its bytes are a whole layout-2 record at no cost.
enum Fault {
    Short(usize),
    Length { value: usize, header: u32 },
    TombstoneValue(usize),
    Check,
}

impl Fault {
    fn error(self, key: &str) -> Error {
        let why = match self {
            Fault::Short(n) => {
                format!("{n} bytes is shorter than a layout-2 record header ({HEADER_2})")
            }
            Fault::Length { value, header } => {
                format!("a value of {value} bytes where its header says {header}: cut or grown")
            }
            Fault::TombstoneValue(n) => format!("a tombstone carrying a value of {n} bytes"),
            Fault::Check => "the record does not match its check (xxh3 of key and value): \
                             bytes of its value or its check were changed, its tag was, or \
                             it is another key's"
                .to_owned(),
        };
        Error::corrupt(key, why)
    }
}

/// What is wrong with `raw` read as a layout-2 record of `key`, if anything: a value
/// cut or grown, or a byte of it changed, a record whose check is another key's or a
/// tombstone's, and a tombstone with a value or a record's check. Its value starts at
/// [`HEADER_2`].
fn layout_2_fault(key: &str, raw: &[u8]) -> Option<Fault> {
    if raw.len() < HEADER_2 {
        return Some(Fault::Short(raw.len()));
    }
    let value = &raw[HEADER_2..];
    let header = be_u32(&raw[18..22]);
    if u64::try_from(value.len()).ok() != Some(u64::from(header)) {
        return Some(Fault::Length {
            value: value.len(),
            header,
        });
    }
    let expected = match raw[0] {
        b'T' if value.is_empty() => tombstone_check(key),
        b'T' => return Some(Fault::TombstoneValue(value.len())),
        _ => check(key, value),
    };
    (expected != be_u64(&raw[22..30])).then_some(Fault::Check)
}

/// The record `raw` holds for `key`; a layout-1 record is read as one only if
/// `layout_1` (otherwise it is corrupt: it carries no check, see the module's doc).
pub(crate) fn decode(key: &str, raw: Bytes, layout_1: bool) -> Result<Stored> {
    if raw.len() < HEADER {
        return Err(Error::corrupt(
            key,
            format!("{} bytes is shorter than a record header", raw.len()),
        ));
    }
    let start = match raw[1] {
        LAYOUT => match layout_2_fault(key, &raw) {
            Some(fault) => return Err(fault.error(key)),
            None => HEADER_2,
        },
        // A layout-2 record of this key whose layout byte was changed would read as
        // a layout-1 record whose value begins with the length and the check: one
        // whose rest is a whole layout-2 record of the key is that, not a record.
        LAYOUT_1 if layout_2_fault(key, &raw).is_none() => {
            return Err(Error::corrupt(
                key,
                "a layout-2 record whose layout byte was changed to 1",
            ));
        }
        LAYOUT_1 if layout_1 => HEADER,
        LAYOUT_1 => {
            return Err(Error::corrupt(
                key,
                "a record of layout 1, which carries no check: read only with \
                 RedisConfig::read_layout_1",
            ));
        }
        other => {
            return Err(Error::corrupt(
                key,
                format!("unknown record layout {other}"),
            ));
        }
    };
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
            value.advance(start);
            Ok(Stored::Record(Entry::new(
                value,
                version,
                (expires != 0).then(|| Timestamp::from_millis(expires)),
            )))
        }
        b'T' => Ok(Stored::Tombstone(version)),
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
/// `Corrupt` for a record or a tombstone dated past the version horizon.
pub(crate) fn live_entry(
    key: &str,
    raw: Option<Bytes>,
    now: Timestamp,
    layout_1: bool,
) -> Result<Option<Entry>> {
    Ok(match raw {
        None => None,
        Some(raw) => match decode(key, raw, layout_1)? {
            // A tombstone too: its version refuses every write of the key (the
            // scripts take none over it) while reads would see nothing. (Before, a
            // deleted key's tombstone forged ahead on its first replica made every put
            // of it fail as corrupt for the tombstone's grace, and no read, scan or
            // repair saw anything to heal; found from outside.)
            Stored::Record(Entry { version, .. }) | Stored::Tombstone(version)
                if far_ahead(version, now) =>
            {
                return Err(Error::corrupt(
                    key,
                    format!(
                        "a record at version {version}, dated more than {} days after \
                         the server's clock: forged or corrupt",
                        Version::MAX_AHEAD.as_secs() / 86_400
                    ),
                ));
            }
            Stored::Record(e) => Some(e).filter(|e| !e.is_expired_at(now)),
            Stored::Tombstone(_) => None,
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

    /// The tests below read as a namespace with `read_layout_1` does, so that layout
    /// 1's records read; without it they are corrupt (see
    /// `layout_1_is_corrupt_unless_asked_for`).
    fn decode(key: &str, raw: Bytes) -> Result<Stored> {
        super::decode(key, raw, true)
    }

    fn live_entry(key: &str, raw: Option<Bytes>, now: Timestamp) -> Result<Option<Entry>> {
        super::live_entry(key, raw, now, true)
    }

    fn is_live_header(header: &[u8], stored_len: u64, now: Timestamp) -> bool {
        super::is_live_header(header, stored_len, now, true)
    }

    #[test]
    fn layout_1_is_corrupt_unless_asked_for() {
        let old = encode(b'N', 42, 0, b"a layout-1 value");
        assert!(is_corrupt(super::decode("k", old.clone(), false)));
        assert!(matches!(
            super::decode("k", old.clone(), true),
            Ok(Stored::Record(_))
        ));
        let now = Timestamp::from_millis(1_000);
        assert!(!super::is_live_header(&old, old.len() as u64, now, false));
        assert!(super::is_live_header(&old, old.len() as u64, now, true));
        // Layout 2 reads either way.
        let new = encode_record("k", Version::from_raw(42), 0, b"a value");
        assert!(matches!(
            super::decode("k", new.into(), false),
            Ok(Stored::Record(_))
        ));
    }

    #[test]
    fn a_layout_2_record_with_its_layout_byte_and_another_byte_changed_is_corrupt() {
        // From outside: the layout byte changed to 1 and one byte of the check, the
        // length or the value changed too read as a layout-1 record whose value was
        // the length, the check and the value glued together.
        let stored = encode_record("k", Version::from_raw(42), 0, b"hello-world");
        for at in [21, 25, HEADER_2] {
            let mut raw = stored.clone();
            raw[1] = LAYOUT_1;
            raw[at] ^= 0x10;
            assert!(is_corrupt(super::decode("k", raw.into(), false)), "{at}");
        }
    }

    /// A record in layout 1, as written before layout 2.
    fn encode(tag: u8, version: u64, expires: u64, value: &[u8]) -> Bytes {
        let mut v = vec![tag, LAYOUT_1];
        v.extend_from_slice(&version.to_be_bytes());
        v.extend_from_slice(&expires.to_be_bytes());
        v.extend_from_slice(value);
        v.into()
    }

    #[test]
    fn records_round_trip_and_garbage_is_corrupt() {
        match decode(
            "k",
            encode_record("k", Version::from_raw(42), 7, b"hello").into(),
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
            Ok(Stored::Tombstone(_))
        ));
        for garbage in [
            &b""[..],
            b"plain text value",
            b"N\x02aaaaaaaaaaaaaaaaaaaa",
            b"N\x03aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
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
        let raw = |exp| {
            Some(Bytes::from(encode_record(
                "k",
                Version::from_raw(1),
                exp,
                b"v",
            )))
        };
        let now = Timestamp::from_millis(1_000);
        assert!(live_entry("k", raw(0), now).unwrap().is_some());
        assert!(live_entry("k", raw(1_001), now).unwrap().is_some());
        assert!(live_entry("k", raw(1_000), now).unwrap().is_none());
        assert!(live_entry("k", raw(999), now).unwrap().is_none());
        assert!(live_entry("k", None, now).unwrap().is_none());
        let tomb = Some(Bytes::from(encode_tombstone(
            "k",
            Version::from_raw(2),
            5_000,
        )));
        assert!(live_entry("k", tomb, now).unwrap().is_none());
    }

    #[test]
    fn a_record_dated_past_the_horizon_is_corrupt_and_no_live_header() {
        let now = Timestamp::from_millis(1_796_000_000_000);
        let horizon = now.as_millis() + Version::MAX_AHEAD.as_millis() as u64;
        for (millis, corrupt) in [(horizon, false), (horizon + 1, true)] {
            let version = Version::from_raw(millis << 16);
            let raw = Bytes::from(encode_record("k", version, 0, b"v"));
            let read = live_entry("k", Some(raw.clone()), now);
            assert_eq!(
                matches!(read, Err(Error::Corrupt { .. })),
                corrupt,
                "{millis}: {read:?}"
            );
            let live = is_live_header(&raw[..HEADER_2], raw.len() as u64, now);
            assert_eq!(live, !corrupt, "{millis}");
            // A tombstone at that version too: every write of the key refuses it.
            let tomb = Bytes::from(encode_tombstone("k", version, 0));
            let read = live_entry("k", Some(tomb), now);
            assert_eq!(
                matches!(read, Err(Error::Corrupt { .. })),
                corrupt,
                "tombstone {millis}: {read:?}"
            );
            assert!(corrupt || read.is_ok_and(|r| r.is_none()));
        }
    }

    fn is_corrupt(read: Result<Stored>) -> bool {
        matches!(read, Err(Error::Corrupt { key, .. }) if key == "k")
    }

    #[test]
    fn a_record_is_written_in_layout_2_with_its_length_and_check() {
        let stored = encode_record("k", Version::from_raw(42), 7, b"hello");
        assert_eq!(&stored[..2], b"N\x02");
        assert_eq!(be_u32(&stored[18..22]), 5);
        assert_eq!(be_u64(&stored[22..30]), check("k", b"hello"));
        assert_ne!(check("k", b"hello"), check("j", b"hello"));
        assert_eq!(&stored[HEADER_2..], b"hello");
        let tomb = encode_tombstone("k", Version::from_raw(3), 9);
        assert_eq!((tomb.len(), tomb[0], tomb[1]), (HEADER_2, b'T', LAYOUT));
        assert_eq!(be_u64(&tomb[22..30]), tombstone_check("k"));
        assert!(matches!(decode("k", tomb.into()), Ok(Stored::Tombstone(_))));
    }

    #[test]
    fn another_keys_tombstone_is_corrupt() {
        // Copied under a live key at a newer version, it would pass for that key's
        // delete and win over every replica's record (from outside: `COPY` of a
        // deleted key over a live one, then repair, lost the record everywhere).
        let theirs = encode_tombstone("j", Version::from_raw(42), 0);
        assert!(is_corrupt(decode("k", theirs.clone().into())));
        assert!(matches!(
            decode("j", theirs.into()),
            Ok(Stored::Tombstone(_))
        ));
        assert_ne!(tombstone_check("k"), tombstone_check("j"));
        assert_ne!(tombstone_check("k"), check("k", b""));
    }

    #[test]
    fn another_keys_record_or_a_changed_tag_is_corrupt() {
        let theirs = encode_record("j", Version::from_raw(42), 0, b"a value");
        assert!(is_corrupt(decode("k", theirs.clone().into())));
        assert!(matches!(decode("j", theirs.into()), Ok(Stored::Record(_))));
        // A record whose tag says tombstone, and a tombstone whose tag says record.
        let mut record = encode_record("k", Version::from_raw(42), 0, b"a value");
        record[0] = b'T';
        assert!(is_corrupt(decode("k", record.into())));
        let mut tomb = encode_tombstone("k", Version::from_raw(42), 0);
        tomb[0] = b'N';
        assert!(is_corrupt(decode("k", tomb.into())));
        // An empty record is not a tombstone, nor is a tombstone's check an empty
        // record's.
        let empty = encode_record("k", Version::from_raw(42), 0, b"");
        assert!(matches!(decode("k", empty.into()), Ok(Stored::Record(e)) if e.value.is_empty()));
    }

    #[test]
    fn a_layout_2_record_marked_layout_1_is_corrupt_not_a_longer_value() {
        let mut stored = encode_record("k", Version::from_raw(42), 0, b"a value");
        stored[1] = LAYOUT_1;
        assert!(is_corrupt(decode("k", stored.into())));
        // A genuine layout-1 record still reads.
        let old = encode(b'N', 42, 0, b"a layout-1 value of some length");
        assert!(matches!(decode("k", old), Ok(Stored::Record(_))));
    }

    #[test]
    fn a_layout_2_value_cut_anywhere_is_corrupt() {
        let stored = encode_record("k", Version::from_raw(42), 0, b"a value of some length");
        let tomb = encode_tombstone("k", Version::from_raw(42), 0);
        for whole in [&stored, &tomb] {
            for cut in 0..whole.len() {
                let raw = Bytes::copy_from_slice(&whole[..cut]);
                assert!(
                    is_corrupt(decode("k", raw)),
                    "cut at {cut} of {}",
                    whole.len()
                );
            }
        }
        // And a value grown past its length.
        let mut grown = stored;
        grown.push(b'!');
        assert!(is_corrupt(decode("k", grown.into())));
    }

    #[test]
    fn a_layout_2_value_with_a_byte_changed_is_corrupt() {
        let stored = encode_record("k", Version::from_raw(42), 0, b"a value");
        // Any bit of the value, of its length or of its check.
        for at in 18..stored.len() {
            for bit in 0..8 {
                let mut flipped = stored.clone();
                flipped[at] ^= 1 << bit;
                assert!(
                    is_corrupt(decode("k", flipped.into())),
                    "byte {at} bit {bit}"
                );
            }
        }
        // The header the scripts patch (version, expiry) is not under the check.
        let mut patched = stored;
        patched[2..18].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 5]);
        match decode("k", patched.into()) {
            Ok(Stored::Record(e)) => {
                assert_eq!(
                    (&e.value[..], e.version),
                    (&b"a value"[..], Version::from_raw(9))
                );
                assert_eq!(e.expires_at, Some(Timestamp::from_millis(5)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn layout_1_is_still_read_as_it_was() {
        match decode("k", encode(b'N', 42, 7, b"written before layout 2")) {
            Ok(Stored::Record(e)) => {
                assert_eq!(e.value, Bytes::from_static(b"written before layout 2"));
                assert_eq!(e.version, Version::from_raw(42));
                assert_eq!(e.expires_at, Some(Timestamp::from_millis(7)));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode("k", encode(b'T', 1, 0, b"")),
            Ok(Stored::Tombstone(_))
        ));
        let now = Timestamp::from_millis(1_000);
        let old = encode(b'N', 42, 0, b"a value longer than twelve bytes");
        assert!(is_live_header(&old[..HEADER_2], old.len() as u64, now));
        let short = encode(b'N', 42, 0, b"v");
        assert!(is_live_header(&short, short.len() as u64, now));
        assert!(!is_live_header(
            &short[..HEADER - 1],
            short.len() as u64,
            now
        ));
    }

    #[test]
    fn a_header_alone_tells_a_cut_or_grown_layout_2_value_from_a_whole_one() {
        let now = Timestamp::from_millis(1_000);
        let stored = encode_record("k", Version::from_raw(42), 0, b"a value");
        let head = &stored[..HEADER_2];
        let len = stored.len() as u64;
        assert!(is_live_header(head, len, now));
        for wrong in [len - 1, len + 1, HEADER_2 as u64, 0] {
            assert!(!is_live_header(head, wrong, now), "{wrong}");
        }
        // Cut inside the header, the length is not there to compare.
        assert!(!is_live_header(&stored[..HEADER], HEADER as u64, now));
        let tomb = encode_tombstone("k", Version::from_raw(42), 0);
        assert!(!is_live_header(&tomb, tomb.len() as u64, now));
    }
}
