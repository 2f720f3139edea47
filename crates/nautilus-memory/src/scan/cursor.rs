//! The scan cursor: which registry, scan session, shard and place in that shard's
//! snapshot, the shard's arrival count when its snapshot was taken (the mark), and
//! the last record passed. Written as text, checked field by field when read back.

use nautilus_core::{Cursor, Error, Result};

/// A scan's position: which session, shard and place in that shard's snapshot, the
/// shard's arrival count when the snapshot was taken, and the last key passed (the
/// anchor that makes the cursor valid without the snapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ScanCursor {
    /// The registry the scan runs on (`Scans::origin`).
    pub(super) origin: u64,
    pub(super) session: u64,
    pub(super) shard: usize,
    pub(super) pos: usize,
    /// Records that arrived in the shard at or after this count are not part of the
    /// scan (`None` until the shard's snapshot is taken).
    pub(super) mark: Option<u64>,
    pub(super) last: Option<(u64, String)>,
}

const TAG: &str = "m2";

impl ScanCursor {
    pub(super) fn encode(&self) -> Cursor {
        let last = match &self.last {
            None => "-".to_owned(),
            Some((h, k)) => format!("{h:016x}.{k}"),
        };
        let mark = self
            .mark
            .map_or_else(|| "-".to_owned(), |m| format!("{m:x}"));
        Cursor::new(format!(
            "{TAG}.{:x}.{:x}.{:x}.{:x}.{mark}.{last}",
            self.origin, self.session, self.shard, self.pos
        ))
    }

    pub(super) fn decode(cursor: &Cursor, origin: u64, shards: usize) -> Result<Self> {
        let bad = || Error::invalid_argument("not a memory registry scan cursor");
        let mut parts = cursor.as_str().splitn(7, '.');
        if parts.next() != Some(TAG) {
            return Err(bad());
        }
        // Lowercase hex digits only, as `encode` writes them (no sign, no padding
        // past what a u64 needs).
        let hex = |p: &str| {
            (!p.is_empty()
                && p.len() <= 16
                && p.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then(|| u64::from_str_radix(p, 16).ok())
            .flatten()
        };
        let mut number = || parts.next().and_then(hex).ok_or_else(bad);
        if number()? != origin {
            return Err(Error::invalid_argument(
                "scan cursor from another registry (or one since rebuilt)",
            ));
        }
        let session = number()?;
        let shard = usize::try_from(number()?).map_err(|_| bad())?;
        let pos = usize::try_from(number()?).map_err(|_| bad())?;
        let mark = match parts.next().ok_or_else(bad)? {
            "-" => None,
            m => Some(hex(m).ok_or_else(bad)?),
        };
        let last = match parts.next().ok_or_else(bad)? {
            "-" => None,
            rest => {
                let (h, k) = rest.split_once('.').ok_or_else(bad)?;
                if h.len() != 16 {
                    return Err(bad());
                }
                Some((hex(h).ok_or_else(bad)?, k.to_owned()))
            }
        };
        if shard >= shards {
            return Err(Error::invalid_argument(
                "scan cursor from another registry (no such shard)",
            ));
        }
        // A position needs the last record passed, which arrived before the mark.
        match (&last, mark) {
            (None, None) if pos == 0 => {}
            (Some((born, _)), Some(mark)) if pos > 0 && *born < mark => {}
            _ => return Err(bad()),
        }
        Ok(ScanCursor {
            origin,
            session,
            shard,
            pos,
            mark,
            last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ORIGIN: u64 = 0xabc;

    fn cursor(session: u64, shard: usize, pos: usize, last: Option<(u64, &str)>) -> ScanCursor {
        ScanCursor {
            origin: ORIGIN,
            session,
            shard,
            pos,
            mark: last.map(|(h, _)| h.saturating_add(1)),
            last: last.map(|(h, k)| (h, k.to_owned())),
        }
    }

    #[test]
    fn cursors_round_trip() {
        for c in [
            cursor(0, 0, 0, None),
            cursor(7, 3, 12, Some((u64::MAX - 1, "a.b.c"))),
            cursor(u64::MAX, 15, 1, Some((0, ""))),
        ] {
            assert_eq!(ScanCursor::decode(&c.encode(), ORIGIN, 16).ok(), Some(c));
        }
    }

    #[test]
    fn foreign_and_damaged_cursors_are_refused() {
        for raw in [
            "",
            "0/abc",
            "m2",
            "m2.abc.1.2.3",
            "m2.abc.1.2.3.10.zz",
            "m2.abc.1.2.3.10.0123.k",
            "m2.abc.x.2.3.-.-",
            "m2.abc.1.2.3.-.-",
            "m2.abc.1.2.3.10.-",
            // A last record at or past the mark, or a position without a mark.
            "m2.abc.1.2.3.10.0000000000000010.k",
            "m2.abc.1.2.3.-.0000000000000001.k",
            "m2.abc.1.2.3.zz.0000000000000001.k",
            // A mark before the shard's snapshot was taken.
            "m2.abc.1.2.0.10.-",
            // Signs, capitals, padding past a u64.
            "m2.abc.+1.2.0.-.-",
            "m2.ABC.1.2.0.-.-",
            "m2.abc.00000000000000001.2.0.-.-",
            // Another registry's.
            "m2.abd.1.2.0.-.-",
            "m1.1.2.0.-",
            "m3.abc.1.2.0.-.-",
        ] {
            assert!(
                matches!(
                    ScanCursor::decode(&Cursor::new(raw), ORIGIN, 16),
                    Err(Error::InvalidArgument { .. })
                ),
                "{raw:?} was accepted"
            );
        }
        let other = cursor(1, 20, 0, None).encode();
        assert!(matches!(
            ScanCursor::decode(&other, ORIGIN, 16),
            Err(Error::InvalidArgument { .. })
        ));
    }

    proptest! {
        #[test]
        fn any_cursor_round_trips(session: u64, shard in 0usize..256, pos in 1usize..1 << 40, h in 0..u64::MAX, key in ".*") {
            let c = cursor(session, shard, pos, Some((h, &key)));
            prop_assert_eq!(ScanCursor::decode(&c.encode(), ORIGIN, 256).ok(), Some(c));
        }

        #[test]
        fn garbage_never_panics(raw in ".*") {
            let _ = ScanCursor::decode(&Cursor::new(raw), ORIGIN, 16);
        }
    }
}
