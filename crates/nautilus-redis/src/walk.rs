//! The one walk over a namespace, which scans, counts, `clear`, the stats' estimate and
//! the limit's index rebuild all use: `SCAN … MATCH` with the prefix's glob characters
//! escaped, primary after primary on Cluster, from a typed [`Position`]. And the scan
//! cursor, which carries a position and the keys SCAN listed beyond a page: encoded,
//! decoded and checked here only.

use fred::prelude::Server;
use nautilus_core::{Cursor, Error, Result};

use crate::client::{Client, Listed};

/// Keys a walk over everything asks SCAN to visit per call.
const WALK_COUNT: u32 = 1000;

/// Where a walk is: which primary (in [`Client::primaries`]' order), and SCAN's cursor
/// on it (0: its start). Past the last primary, the walk is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Position {
    node: usize,
    cursor: u64,
}

/// A walk over the keys under a prefix.
#[derive(Debug)]
pub(crate) struct Walk<'c> {
    client: &'c Client,
    nodes: Vec<Option<Server>>,
    pattern: String,
    at: Position,
    calls: usize,
}

impl<'c> Walk<'c> {
    /// A walk over the keys that start with `full_prefix`, from `from`.
    pub(crate) fn new(client: &'c Client, full_prefix: &str, from: Position) -> Result<Self> {
        let nodes = client.primaries();
        if from.node > nodes.len() {
            return Err(Error::invalid_argument("cursor from another deployment"));
        }
        Ok(Walk {
            client,
            nodes,
            pattern: format!("{}*", glob_escape(full_prefix)),
            at: from,
            calls: 0,
        })
    }

    /// Whether every primary has been walked.
    pub(crate) fn done(&self) -> bool {
        self.at.node >= self.nodes.len()
    }

    pub(crate) fn position(&self) -> Position {
        self.at
    }

    /// The SCAN calls made so far.
    pub(crate) fn calls(&self) -> usize {
        self.calls
    }

    /// The primaries walked.
    pub(crate) fn nodes(&self) -> &[Option<Server>] {
        &self.nodes
    }

    /// One SCAN call visiting about `count` keys: the keys it listed (maybe none), or
    /// `None` once the walk is done.
    pub(crate) async fn step(&mut self, count: u32) -> Result<Option<Listed>> {
        let Some(node) = self.nodes.get(self.at.node) else {
            return Ok(None);
        };
        let (next, listed) = self
            .client
            .scan_page(node.as_ref(), self.at.cursor, &self.pattern, count)
            .await?;
        self.calls += 1;
        self.at = match next {
            0 => Position {
                node: self.at.node + 1,
                cursor: 0,
            },
            cursor => Position { cursor, ..self.at },
        };
        Ok(Some(listed))
    }

    /// The next keys of a walk over everything (never an empty page), or `None` once
    /// it is done. Keys that are not UTF-8 are passed by (see [`Listed`]).
    pub(crate) async fn next_keys(&mut self) -> Result<Option<Vec<String>>> {
        while let Some(listed) = self.step(WALK_COUNT).await? {
            if !listed.keys.is_empty() {
                return Ok(Some(listed.keys));
            }
        }
        Ok(None)
    }
}

/// A scan's cursor: where its walk is, and keys the walk listed that the caller has
/// not been given yet (SCAN may list more keys than a page holds).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ScanCursor {
    pub(crate) at: Position,
    /// Full keys, each under the scan's prefix.
    pub(crate) pending: Vec<String>,
}

impl ScanCursor {
    /// `node:cursor:` then each pending key as `length:key`.
    pub(crate) fn encode(&self) -> Cursor {
        let mut s = format!("{}:{}:", self.at.node, self.at.cursor);
        for k in &self.pending {
            s.push_str(&k.len().to_string());
            s.push(':');
            s.push_str(k);
        }
        Cursor::new(s)
    }

    /// The cursor [`ScanCursor::encode`] wrote, for a scan of the keys under
    /// `full_prefix`: anything else (another registry's cursor, another prefix's, a
    /// forged key outside the prefix) is an invalid argument.
    pub(crate) fn decode(cursor: &Cursor, full_prefix: &str) -> Result<Self> {
        let bad = || Error::invalid_argument("not a cursor of this Redis registry's scan");
        let (node, rest) = cursor.as_str().split_once(':').ok_or_else(bad)?;
        let (at, mut rest) = rest.split_once(':').ok_or_else(bad)?;
        let at = Position {
            node: number(node).ok_or_else(bad)?,
            cursor: number(at).ok_or_else(bad)?,
        };
        let mut pending = Vec::new();
        while !rest.is_empty() {
            let (len, tail) = rest.split_once(':').ok_or_else(bad)?;
            let len: usize = number(len).ok_or_else(bad)?;
            let key = tail.get(..len).ok_or_else(bad)?;
            if !key.starts_with(full_prefix) {
                return Err(bad());
            }
            pending.push(key.to_owned());
            rest = &tail[len..];
        }
        Ok(ScanCursor { at, pending })
    }
}

/// A decimal number as [`ScanCursor::encode`] writes it: digits only, no leading zero.
fn number<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

/// Escapes glob characters so a key prefix matches itself only in `SCAN MATCH`.
pub(crate) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    /// Redis's glob, for the patterns [`glob_escape`] writes: literals, escaped
    /// literals, and `*`.
    fn matches(pattern: &str, key: &str) -> bool {
        let (p, k): (Vec<char>, Vec<char>) = (pattern.chars().collect(), key.chars().collect());
        fn go(p: &[char], k: &[char]) -> bool {
            match p {
                [] => k.is_empty(),
                ['*', rest @ ..] => (0..=k.len()).any(|i| go(rest, &k[i..])),
                ['\\', c, rest @ ..] => k.first() == Some(c) && go(rest, &k[1..]),
                [c, rest @ ..] => {
                    assert!(!matches!(c, '?' | '[' | ']' | '\\'), "unescaped {c:?}");
                    k.first() == Some(c) && go(rest, &k[1..])
                }
            }
        }
        go(&p, &k)
    }

    fn cursor(node: usize, at: u64, pending: &[&str]) -> ScanCursor {
        ScanCursor {
            at: Position { node, cursor: at },
            pending: pending.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn a_cursor_reads_back_and_refuses_what_it_did_not_write() {
        let c = cursor(2, 17, &["ns:a", "ns:b:c", "ns:"]);
        assert_eq!(c.encode().as_str(), "2:17:4:ns:a6:ns:b:c3:ns:");
        assert_eq!(ScanCursor::decode(&c.encode(), "ns:").unwrap(), c);
        for bad in [
            "",
            "2",
            "2:",
            "x:0:",
            "0:done:",
            "0:-1:",
            "0:+1:",
            "0:0:9:ns:a",
            "0:0:4:ns:a:",
            "0:0:5:other",
            "0:0:x:ns:a",
            "01:0:",
            "0:00:",
        ] {
            assert!(
                ScanCursor::decode(&Cursor::new(bad), "ns:").is_err(),
                "{bad:?} was taken for a cursor"
            );
        }
    }

    #[test]
    fn escaped_prefixes_match_only_themselves() {
        let pattern = format!("{}*", glob_escape("a*[b]?\\"));
        assert_eq!(pattern, "a\\*\\[b\\]\\?\\\\*");
        assert!(matches(&pattern, "a*[b]?\\key"));
        assert!(!matches(&pattern, "ab]?\\key"));
    }

    proptest! {
        #[test]
        fn cursors_round_trip(
            node in 0usize..1000,
            at in any::<u64>(),
            prefix in "[a-z:]{0,5}",
            keys in proptest::collection::vec(".{0,10}", 0..6),
        ) {
            let c = ScanCursor {
                at: Position { node, cursor: at },
                pending: keys.iter().map(|k| format!("{prefix}{k}")).collect(),
            };
            prop_assert_eq!(ScanCursor::decode(&c.encode(), &prefix).unwrap(), c);
        }

        #[test]
        fn any_text_decodes_or_is_refused_without_panicking(s in ".{0,40}") {
            if let Ok(c) = ScanCursor::decode(&Cursor::new(s.clone()), "") {
                let again = c.encode();
                prop_assert_eq!(again.as_str(), s.as_str());
            }
        }

        #[test]
        fn an_escaped_prefix_matches_exactly_the_keys_under_it(
            prefix in "[a-c*?\\[\\]\\\\]{0,6}",
            key in "[a-c*?\\[\\]\\\\]{0,8}",
        ) {
            let pattern = format!("{}*", glob_escape(&prefix));
            prop_assert_eq!(matches(&pattern, &key), key.starts_with(&prefix));
        }
    }
}
