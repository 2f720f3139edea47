//! The one protocol of the scripts' answers (see [`crate::scripts`]): each record's
//! [`Outcome`], and [`decode`], its one reader.
//!
//! An outcome is 9 bytes: a code, then 8 bytes big endian (a version, or the record
//! limit; zeros where the code needs none). A string, because Redis turns a string
//! into its reply far faster than a table (about 0.6 µs per record saved in a batch).
//!
//! | code | meaning | the 8 bytes |
//! | --- | --- | --- |
//! | `1` `2` | written as sent (a put's candidate version, an import's own) over no live record, over one | |
//! | `I` `R` | written at another version over no live record, over one: a put whose stored version was not older than its candidate; a touch | the version written |
//! | `D` | deleted | the delete's version |
//! | `0` | nothing changed: no live record (delete, touch, index), not newer (import) | |
//! | `c` | the condition failed on a live record | its version |
//! | `n` | the condition failed: no live record | |
//! | `x` | the key's bytes are not a Nautilus record (puts, deletes, touches; an import replaces them) | |
//! | `L` | refused: the namespace's record limit is reached | the limit |
//! | `T` | refused: a late command (see [`crate::scripts`]) | the window, in ms |
//! | `F` | refused: the stored version is dated more than [`Version::MAX_AHEAD`] after the server's clock, forged or corrupt | |
//! | `B` | refused: a conditional write reached another server process than its fence names (see [`crate::scripts`]) | |

use std::time::Duration;

use nautilus_core::{CapacityLimit, Condition, Error, Result, Version};

use crate::error::bad_reply;

/// How long an outcome is.
const OUTCOME: usize = 9;

/// One record's answer from a script: a code and 8 bytes (see the module's table).
pub(crate) type Outcome = [u8; OUTCOME];

/// What a script did to a record, read from its [`Outcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Done {
    /// Written as sent: a put's candidate version, an import's own version.
    Written {
        /// Over a live record.
        replaced: bool,
    },
    /// Written at this version instead of the candidate (or, for a touch, at the next
    /// version).
    WrittenAt {
        version: Version,
        /// Over a live record.
        replaced: bool,
    },
    /// Deleted the live record, at this version.
    Deleted { version: Version },
    /// Changed nothing: no live record, or not newer.
    Unchanged,
}

/// The outcome of one record in a script's reply.
pub(crate) fn outcome(reply: &[u8]) -> Result<Outcome> {
    Outcome::try_from(reply).map_err(|_| {
        bad_reply(format!(
            "a script answered an outcome of {} bytes, not {OUTCOME}",
            reply.len()
        ))
    })
}

/// The outcomes of `n` records in one reply (the multi-record write script's); all of
/// them errors if the reply is not `n` outcomes long.
pub(crate) fn outcomes(reply: &[u8], n: usize) -> Vec<Result<Outcome>> {
    if reply.len() == n * OUTCOME {
        reply.chunks_exact(OUTCOME).map(outcome).collect()
    } else {
        (0..n).map(|_| outcome(reply)).collect()
    }
}

/// The one reader of outcomes: what the script did to `key`, written under
/// `condition`, or the error it reports, worded as core words it.
pub(crate) fn decode(key: &str, condition: Condition, outcome: &Outcome) -> Result<Done> {
    let mut payload = [0u8; 8];
    payload.copy_from_slice(&outcome[1..]);
    let payload = u64::from_be_bytes(payload);
    Ok(match outcome[0] {
        b'1' => Done::Written { replaced: false },
        b'2' => Done::Written { replaced: true },
        code @ (b'I' | b'R') => Done::WrittenAt {
            version: Version::from_raw(payload),
            replaced: code == b'R',
        },
        b'D' => Done::Deleted {
            version: Version::from_raw(payload),
        },
        b'0' => Done::Unchanged,
        b'c' => return Err(conflict(key, condition, Some(Version::from_raw(payload)))),
        b'n' => return Err(conflict(key, condition, None)),
        b'x' => return Err(Error::corrupt(key, "not a Nautilus record")),
        b'F' => {
            return Err(Error::corrupt(
                key,
                "a record dated more than 366 days after the server's clock: forged or corrupt, \
                 and left as it is (writing past it would carry every later version there)",
            ));
        }
        b'L' => {
            return Err(Error::CapacityExceeded {
                limit: CapacityLimit::Records,
                max: payload,
            });
        }
        b'T' => {
            return Err(Error::Timeout {
                op: "a write that reached the server late",
                after: Duration::from_millis(payload),
            });
        }
        b'B' => return Err(restarted("")),
        other => return Err(bad_reply(format!("unknown script outcome {other:#04x}"))),
    })
}

/// Whether a script refused a conditional write because another server process
/// answered than the one its fence names (see [`crate::scripts`]).
pub(crate) fn is_restarted(outcome: &Outcome) -> bool {
    outcome[0] == b'B'
}

/// The error of a conditional write the server `node` refused for being another
/// process than the one the client knew: transient, and nothing was written.
pub(crate) fn restarted(node: &str) -> Error {
    Error::Unavailable {
        node: node.to_owned(),
        source: Box::new(nautilus_core::Restarted::new(
            "the server restarted since it was last checked (another run_id answers), so a \
             conditional write was refused: it would have been decided on records that may \
             be older than those acknowledged",
        )),
    }
}

/// The conflict a script reported, worded by core's own check of the condition
/// (`actual`: the live version the script saw, if any).
fn conflict(key: &str, condition: Condition, actual: Option<Version>) -> Error {
    match condition.check(key, actual) {
        Err(e) => e,
        Ok(()) => bad_reply("a script reported a conflict its condition does not have"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    fn answer(code: u8, payload: u64) -> Outcome {
        let mut o = [code; OUTCOME];
        o[1..].copy_from_slice(&payload.to_be_bytes());
        o
    }

    #[test]
    fn every_code_reads_as_what_it_says() {
        let v = Version::from_raw(1 << 40 | 7);
        let read = |code, payload, condition| decode("k", condition, &answer(code, payload));
        let always = Condition::Always;
        assert_eq!(
            read(b'1', 0, always).unwrap(),
            Done::Written { replaced: false }
        );
        assert_eq!(
            read(b'2', 0, always).unwrap(),
            Done::Written { replaced: true }
        );
        assert_eq!(
            read(b'R', v.as_raw(), always).unwrap(),
            Done::WrittenAt {
                version: v,
                replaced: true
            }
        );
        assert_eq!(
            read(b'D', v.as_raw(), always).unwrap(),
            Done::Deleted { version: v }
        );
        assert_eq!(read(b'0', 0, always).unwrap(), Done::Unchanged);
        match read(b'c', v.as_raw(), Condition::Absent) {
            Err(Error::Conflict {
                key,
                expected: None,
                actual,
            }) => {
                assert_eq!((key.as_str(), actual), ("k", Some(v)));
            }
            other => panic!("{other:?}"),
        }
        let cas = Condition::Version(Version::from_raw(3));
        assert!(matches!(
            read(b'n', 0, cas),
            Err(Error::Conflict { actual: None, .. })
        ));
        // A conflict under no condition is the script's mistake, not the caller's.
        assert!(matches!(read(b'n', 0, always), Err(Error::Backend { .. })));
        assert!(matches!(read(b'x', 0, always), Err(Error::Corrupt { key, .. }) if key == "k"));
        assert!(matches!(read(b'F', 0, always), Err(Error::Corrupt { key, .. }) if key == "k"));
        match read(b'L', 40, always) {
            Err(Error::CapacityExceeded { limit, max }) => {
                assert_eq!((limit, max), (CapacityLimit::Records, 40));
            }
            other => panic!("{other:?}"),
        }
        match read(b'T', 250, always) {
            Err(e @ Error::Timeout { after, .. }) => {
                assert_eq!(after, Duration::from_millis(250));
                assert!(e.is_transient());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(read(b'?', 0, always), Err(Error::Backend { .. })));
    }

    #[test]
    fn a_reply_of_the_wrong_length_fails_every_record() {
        let two = [answer(b'1', 0), answer(b'2', 0)].concat();
        assert!(outcomes(&two, 2).iter().all(Result::is_ok));
        let short = &two[..10];
        let read = outcomes(short, 2);
        assert_eq!(read.len(), 2);
        assert!(read.iter().all(Result::is_err));
        assert!(outcome(b"").is_err());
    }

    proptest! {
        #[test]
        fn any_reply_is_read_without_panicking(
            reply in proptest::collection::vec(any::<u8>(), 0..40),
            n in 0usize..5,
        ) {
            let read = outcomes(&reply, n);
            prop_assert_eq!(read.len(), n);
            for o in read.into_iter().flatten() {
                let _ = decode("k", Condition::Version(Version::from_raw(1)), &o);
            }
        }

        #[test]
        fn versions_and_limits_come_back_whole(payload in any::<u64>()) {
            let at = decode("k", Condition::Always, &answer(b'I', payload)).unwrap();
            prop_assert_eq!(at, Done::WrittenAt {
                version: Version::from_raw(payload),
                replaced: false,
            });
            let limit = match decode("k", Condition::Always, &answer(b'L', payload)) {
                Err(Error::CapacityExceeded { limit, max }) => (limit, max),
                other => panic!("{other:?}"),
            };
            prop_assert_eq!(limit, (CapacityLimit::Records, payload));
        }
    }
}
