//! Scans across nodes with one cursor: nodes one after another in a fixed order, each
//! reporting only the records it owns (or, while they move, owned), so that a record
//! held on two nodes for a moment is still reported once outside migrations.
//!
//! The cursor says which state (epoch), which node of the scan order and that node's
//! cursor, sealed with a tag keyed by the router: another router's cursor, or one
//! edited by hand, is refused with `InvalidArgument`. A scan that outlives a membership change is refused with
//! `InvalidArgument` (start it again): the node order and ownership it relied on
//! changed. During a migration, sources are visited before targets, so a record that
//! moves while the scan runs is returned at least once: possibly twice (from its old
//! node and its new one), never missed. With several replicas, a key whose replicas
//! change is reported by a node that keeps it throughout: exactly once.
//!
//! With several replicas, the cursor also keeps the nodes that were down when the
//! scan started: they are not visited, and each of their records is reported by its
//! first replica that is not among them, so a scan goes on while a node is down. A
//! node that goes down during the scan fails the page with `Unavailable` (start the
//! scan again), and so does one that comes back or whose store restarts (an old
//! snapshot, or empty), seen after its page is answered; `count` starts again. A record whose replicas were all down when the scan started is not
//! returned.
//!
//! It keeps too the nodes that were up with writes still to hand back (stale): such
//! a node lacks what stand-ins took for it, and still holds what was deleted or
//! rewritten meanwhile, so each of its records is reported by its first replica that
//! is neither down nor stale, and by the stale node only when there is none (its
//! other replicas down or stale too).

use nautilus_core::{Cursor, Error, Page, Result};

use crate::state::{Node, State, no_nodes};

#[derive(Debug, Clone, PartialEq, Eq)]
struct ScanCursor {
    epoch: u64,
    pos: usize,
    /// The nodes (indices into the node list) down when the scan started.
    down: Vec<usize>,
    /// The nodes up but with hand-backs pending when the scan started.
    stale: Vec<usize>,
    /// Keys a node reported skipped (its copy corrupt) that the scan owes the caller
    /// from another replica, past the page that met them.
    owed: Vec<String>,
    node: Option<Cursor>,
}

const TAG: &str = "r4";

/// What a sealed cursor starts with.
const SEALED: &str = "r3.";

/// `body` under a tag only this router makes (keyed by its `key`): a cursor from
/// another router, or one altered (a node list edited so that the scan skips nodes),
/// is refused instead of paging on wrong terms.
fn seal(key: u64, body: &Cursor) -> Cursor {
    let tag = xxhash_rust::xxh3::xxh3_64_with_seed(body.as_str().as_bytes(), key);
    Cursor::new(format!("{SEALED}{tag:016x}.{}", body.as_str()))
}

/// The body of a cursor [`seal`] made with `key`.
fn unseal(key: u64, sealed: &Cursor) -> Result<Cursor> {
    let refused = || {
        Error::invalid_argument(
            "not a scan cursor of this router (another router's, or altered); start the \
             scan again",
        )
    };
    let rest = sealed.as_str().strip_prefix(SEALED).ok_or_else(refused)?;
    let (tag, body) = rest.split_once('.').ok_or_else(refused)?;
    let tag = u64::from_str_radix(tag, 16).map_err(|_| refused())?;
    if xxhash_rust::xxh3::xxh3_64_with_seed(body.as_bytes(), key) != tag {
        return Err(refused());
    }
    Ok(Cursor::new(body))
}

impl ScanCursor {
    fn encode(&self) -> Cursor {
        let node = match &self.node {
            None => "-".to_owned(),
            Some(c) => format!("c{}", c.as_str()),
        };
        // Down nodes, then stale ones marked `s`, in one list.
        let down = if self.down.is_empty() && self.stale.is_empty() {
            "-".to_owned()
        } else {
            let d: Vec<String> = self
                .down
                .iter()
                .map(|n| format!("{n:x}"))
                .chain(self.stale.iter().map(|n| format!("s{n:x}")))
                .collect();
            d.join("+")
        };
        let owed = if self.owed.is_empty() {
            "-".to_owned()
        } else {
            let keys: Vec<String> = self.owed.iter().map(|k| hex(k.as_bytes())).collect();
            keys.join("+")
        };
        Cursor::new(format!(
            "{TAG}.{:x}.{:x}.{down}.{owed}.{node}",
            self.epoch, self.pos
        ))
    }

    fn decode(c: &Cursor) -> Result<Self> {
        let bad = || Error::invalid_argument("not a router scan cursor");
        let mut parts = c.as_str().splitn(6, '.');
        if parts.next() != Some(TAG) {
            return Err(bad());
        }
        let epoch = parts
            .next()
            .and_then(|p| u64::from_str_radix(p, 16).ok())
            .ok_or_else(bad)?;
        let pos = parts
            .next()
            .and_then(|p| usize::from_str_radix(p, 16).ok())
            .ok_or_else(bad)?;
        let (mut down, mut stale) = (Vec::new(), Vec::new());
        match parts.next().ok_or_else(bad)? {
            "-" => {}
            list => {
                for item in list.split('+') {
                    let (into, hex) = match item.strip_prefix('s') {
                        Some(hex) => (&mut stale, hex),
                        None => (&mut down, item),
                    };
                    // `from_str_radix` takes a sign: refused, as no cursor has one.
                    if hex.starts_with('+') || hex.starts_with('-') {
                        return Err(bad());
                    }
                    into.push(usize::from_str_radix(hex, 16).map_err(|_| bad())?);
                }
            }
        }
        let owed = match parts.next().ok_or_else(bad)? {
            "-" => Vec::new(),
            list => list
                .split('+')
                .map(|k| unhex(k).ok_or_else(bad))
                .collect::<Result<_>>()?,
        };
        let node = match parts.next().ok_or_else(bad)? {
            "-" => None,
            rest => Some(Cursor::new(rest.strip_prefix('c').ok_or_else(bad)?)),
        };
        Ok(ScanCursor {
            epoch,
            pos,
            down,
            stale,
            owed,
            node,
        })
    }
}

/// `bytes` as lowercase hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The text [`hex`] made, or `None`.
fn unhex(text: &str) -> Option<String> {
    if text.is_empty() || !text.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Whether node `index` reports `key`: its first replica neither down nor stale at
/// the scan's start, else its first one not down (with one replica, or every node
/// up to date, the owner; see [`State::reports`]). While replicas change, the first
/// new replica that was an old one, which holds the key throughout.
fn reports(state: &State, replicas: usize, at: &ScanCursor, index: usize, key: &str) -> bool {
    // While replicas change, the node that holds the key throughout reports it.
    if replicas > 1
        && let Some(m) = &state.moving
    {
        return match crate::replica_move::ReplicaMove::of(state, m, key, replicas) {
            Some(mv) => mv.keeper == Some(index),
            None => state.current.owner(key) == Some(index),
        };
    }
    if at.down.is_empty() && at.stale.is_empty() {
        return state.reports(index, key);
    }
    let prefs = state.current.preference_inline(key, replicas);
    let up = |n: &&usize| !at.down.contains(n);
    prefs
        .iter()
        .filter(up)
        .find(|n| !at.stale.contains(n))
        .or_else(|| prefs.iter().find(up))
        == Some(&index)
}

/// `page`, a node's answer to a scan sent `sent`, unless its cursor is the one it was
/// sent: a scan resumed there would answer the same page again, and a walk over it
/// (a count, a migration, a repair) would never end.
pub(crate) fn advancing(node: &Node, sent: Option<&Cursor>, page: Page) -> Result<Page> {
    if sent.is_some() && page.next.as_ref() == sent {
        return Err(Error::Backend {
            backend: "shard",
            source: format!(
                "node {} answered a scan page with the cursor it was sent: its scan would \
                 never end",
                node.id
            )
            .into(),
        });
    }
    Ok(page)
}

/// Node calls one page makes at most.
const MAX_CALLS: usize = 32;

/// One page of at most `limit` records under `prefix`.
pub(crate) async fn page(
    router: &crate::router::ShardedRegistry,
    state: &State,
    prefix: &str,
    cursor: Option<&Cursor>,
    limit: usize,
) -> Result<Page> {
    Page::check_limit(limit)?;
    let (key, replicas) = (router.inner.scan_key, router.inner.config.replicas);
    if state.nodes.is_empty() {
        return Err(no_nodes());
    }
    let order = state.scan_order();
    let mut at = match cursor {
        None => ScanCursor {
            epoch: state.epoch,
            pos: 0,
            // With one replica a down node's records are nowhere else: it is visited
            // (and fails) like any other.
            down: if replicas > 1 && state.moving.is_none() {
                (0..state.nodes.len())
                    .filter(|&n| !state.nodes[n].is_up())
                    .collect()
            } else {
                Vec::new()
            },
            stale: if replicas > 1 && state.moving.is_none() {
                (0..state.nodes.len())
                    .filter(|&n| {
                        let node = &state.nodes[n];
                        node.is_up() && (node.hints.len() > 0 || node.unverified())
                    })
                    .collect()
            } else {
                Vec::new()
            },
            owed: Vec::new(),
            node: None,
        },
        Some(c) => ScanCursor::decode(&unseal(key, c)?)?,
    };
    if at.epoch != state.epoch {
        return Err(Error::invalid_argument(
            "the router's nodes changed since this scan started; start it again",
        ));
    }
    // A scan that reached the end with nothing owed hands out no cursor, so one at
    // the end (or past it) owing nothing was not ours; nor was one whose down nodes
    // are not listed as a scan lists them (ascending, each once) or are not there.
    let listed = |l: &[usize]| {
        l.windows(2).all(|w| w[0] < w[1]) && l.last().is_none_or(|&n| n < state.nodes.len())
    };
    if (cursor.is_some() && at.pos >= order.len() && at.owed.is_empty())
        || !listed(&at.down)
        || !listed(&at.stale)
        || at.stale.iter().any(|n| at.down.contains(n))
    {
        return Err(Error::invalid_argument("router scan cursor out of range"));
    }
    let mut records = Vec::new();
    let mut skipped = Vec::new();
    let mut calls = 0;
    loop {
        // What the scan owes first (see `ScanCursor::owed`), while the page has room.
        recover(
            router,
            state,
            &mut at.owed,
            limit,
            &mut records,
            &mut skipped,
        )
        .await?;
        // Bounded: a node that answers empty pages without end (or a run of nodes
        // whose records are all reported elsewhere) gets a short page back, with the
        // cursor.
        if at.pos >= order.len() || records.len() >= limit || calls >= MAX_CALLS {
            break;
        }
        let index = order[at.pos];
        if at.down.contains(&index) {
            at.pos += 1;
            continue;
        }
        calls += 1;
        let node = &state.nodes[index];
        if !node.is_up() {
            return Err(Error::Unavailable {
                node: node.id.clone(),
                source: "the node went down during the scan; start the scan again".into(),
            });
        }
        let page = node.answer(
            node.registry
                .scan(prefix, at.node.as_ref(), limit - records.len())
                .await,
        )?;
        let page = advancing(node, at.node.as_ref(), page)?;
        // A node that came back, or whose store restarted, since the scan started
        // (checked after its answer: a restart its store saw under this very page
        // counts) may have answered old records, deleted ones, or too few: its pages
        // were taken as they came. (From outside, before: stale values, deleted
        // records and missing ones in scans across a restart.)
        if replicas > 1 && state.moving.is_none() && !at.stale.contains(&index) && node.unverified()
        {
            return Err(Error::Unavailable {
                node: node.id.clone(),
                source: "the node came back or restarted during the scan (it may hold old \
                         or too few records until a repair); start the scan again"
                    .into(),
            });
        }
        // A node's record outside the prefix (a broken node) is not the caller's.
        records.extend(
            page.records
                .into_iter()
                .filter(|(k, _)| k.starts_with(prefix) && reports(state, replicas, &at, index, k)),
        );
        // A key the node skipped (its copy corrupt: bytes its store did not write)
        // that it would report is owed from another replica, as a read answers it.
        // (Before, scans and counts left such a record out while a replica held it.)
        // One the node would not report is another replica's to report, and to list
        // if it cannot read it either: listed here too, it would be both returned and
        // skipped.
        for k in page.skipped {
            if replicas > 1 && k.starts_with(prefix) && state.limits.check_key(&k).is_ok() {
                if reports(state, replicas, &at, index, &k) {
                    at.owed.push(k);
                }
            } else {
                skipped.push(k);
            }
        }
        match page.next {
            Some(next) => at.node = Some(next),
            None => {
                at.pos += 1;
                at.node = None;
            }
        }
    }
    let more = at.pos < order.len() || !at.owed.is_empty();
    let next = more.then(|| seal(key, &at.encode()));
    Ok(Page::new(records, next).with_skipped(skipped))
}

/// Reads the keys `owed` (see [`ScanCursor::owed`]) through the router, each as a
/// read of it would answer, while the page has room: a record found goes into
/// `records`; a key with none, or whose every copy is corrupt, is listed as skipped,
/// as the node listed it. A read that fails otherwise (the replica that may hold the
/// record is down) fails the page: the key stays owed, and the scan can go on from
/// the same cursor. The rest stays owed.
async fn recover(
    router: &crate::router::ShardedRegistry,
    state: &State,
    owed: &mut Vec<String>,
    limit: usize,
    records: &mut Vec<(String, nautilus_core::Entry)>,
    skipped: &mut Vec<String>,
) -> Result<()> {
    while records.len() < limit
        && let Some(k) = owed.first()
    {
        match router.get_replicated_uncounted(state, k).await {
            Ok(Some(entry)) => records.push((owed.remove(0), entry)),
            Ok(None) | Err(Error::Corrupt { .. }) => skipped.push(owed.remove(0)),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// How many times a count at R above 1 starts again after a membership change
/// swapped the router's state under it.
const COUNT_RESTARTS: usize = 8;

impl crate::router::ShardedRegistry {
    /// `count` with several replicas: what a scan reports, each record once.
    pub(crate) async fn count_replicated(&self) -> Result<u64> {
        // Each record is on R nodes: count what a scan reports, each once. A state
        // swapped in meanwhile (a membership change starting or ending) starts
        // the count again, as it would refuse a caller's scan; no page holds a
        // state past its end, so a change never waits for a count.
        'count: for _ in 0..COUNT_RESTARTS {
            let mut cursor = None;
            let mut n = 0u64;
            let mut epoch = None;
            let mut unverified: Option<Vec<bool>> = None;
            loop {
                let state = self.inner.state.load_full();
                if *epoch.get_or_insert(state.epoch) != state.epoch {
                    continue 'count;
                }
                let before = unverified
                    .get_or_insert_with(|| state.nodes.iter().map(|n| n.unverified()).collect());
                let page = match page(self, &state, "", cursor.as_ref(), 1024).await {
                    Ok(page) => page,
                    // A node came back or restarted under the count: counted again,
                    // its records taken from the other replicas this time.
                    Err(_)
                        if state
                            .nodes
                            .iter()
                            .zip(before.iter())
                            .any(|(n, &was)| !was && n.unverified()) =>
                    {
                        continue 'count;
                    }
                    Err(e) => return Err(e),
                };
                drop(state);
                n += page.records.len() as u64;
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => return Ok(n),
                }
                // Nodes that answer at once, page after page, must not hold the
                // task (or a timeout around it) for the whole walk.
                tokio::task::yield_now().await;
            }
        }
        Err(Error::Unavailable {
            node: "router".into(),
            source: "the nodes changed during every attempt to count".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn cursors_round_trip(
            epoch: u64,
            pos in 0usize..1 << 20,
            down in proptest::collection::vec(0usize..1024, 0..4),
            stale in proptest::collection::vec(0usize..1024, 0..4),
            owed in proptest::collection::vec(".+", 0..3),
            node in proptest::option::of(".*"),
        ) {
            let c = ScanCursor { epoch, pos, down, stale, owed, node: node.map(Cursor::new) };
            prop_assert_eq!(ScanCursor::decode(&c.encode()).ok(), Some(c));
        }

        #[test]
        fn garbage_is_refused_not_a_panic(raw in ".*") {
            let _ = ScanCursor::decode(&Cursor::new(raw));
        }
    }

    #[test]
    fn a_sealed_cursor_opens_only_unaltered_and_with_its_key() {
        let body = ScanCursor {
            epoch: 3,
            pos: 1,
            down: vec![],
            stale: vec![],
            owed: vec![],
            node: Some(Cursor::new("m2.a.b")),
        }
        .encode();
        let sealed = seal(7, &body);
        assert_eq!(unseal(7, &sealed).ok(), Some(body.clone()));
        assert!(unseal(8, &sealed).is_err(), "another router's key");
        // A down list added by hand, so that the scan would skip nodes.
        let forged = Cursor::new(sealed.as_str().replace(".-.c", ".0+1+2.c"));
        assert_ne!(forged, sealed);
        assert!(unseal(7, &forged).is_err());
        assert!(unseal(7, &body).is_err(), "an unsealed cursor");
    }

    #[test]
    fn foreign_cursors_are_refused() {
        for raw in [
            "",
            "m1.0.0.-",
            "r1.0.0.-",
            "r2.x.0.-.-",
            "r2.0.0.-",
            "r2.0.0.-.zz",
            "r2.0.0.1+x.-",
            "r2.0.0.s.-",
            "r2.0.0.s+1.-",
            "r2.0.0.1+s-1.-",
        ] {
            assert!(matches!(
                ScanCursor::decode(&Cursor::new(raw)),
                Err(Error::InvalidArgument { .. })
            ));
        }
    }
}
