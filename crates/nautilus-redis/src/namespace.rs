//! What works on a whole namespace, all on the one [`Walk`]: a page of a prefix scan,
//! `count`, `clear`, and the estimate of its records that `stats` reports.
//!
//! What they cost: SCAN visits every key of the server (of each primary on Cluster),
//! not only the namespace's, so `count` and `clear` are O(keys on the server), in
//! calls of 1000 keys each, plus one command per key of the namespace (two for
//! `count`: a record's header and its length, pipelined). A scan page
//! costs at most 16 SCAN calls and one read of the page's keys. The estimate does not
//! grow with the namespace: one `ZCOUNT` where a record limit keeps an index, else a
//! walk that stops after 1000 of the namespace's keys (on a server the namespace has
//! to itself, one or two SCAN calls; a small namespace on a large shared server is
//! counted exactly, by a walk over the server).

use nautilus_core::{Error, Limits, Page, Result, Timestamp};

use crate::client::Client;
use crate::codec::{is_live_header, live_entry};
use crate::keys::{KeyBatch, Namespace};
use crate::walk::{Position, ScanCursor, Walk};

/// SCAN calls a scan page makes at most.
const MAX_CALLS: usize = 16;
/// Keys the estimate's SCAN calls visit each.
const ESTIMATE_COUNT: u32 = 1000;
/// Keys of the namespace after which the estimate stops walking.
const SAMPLE: usize = 1000;

/// One page of the records under `prefix` live at `now` on the server's clock (see
/// [`Registry::scan`](nautilus_core::Registry::scan)).
pub(crate) async fn scan(
    client: &Client,
    ns: &Namespace,
    limits: &Limits,
    prefix: &str,
    cursor: Option<&nautilus_core::Cursor>,
    limit: usize,
    now: Timestamp,
) -> Result<Page> {
    let full_prefix = ns.full(prefix);
    let mut cursor = match cursor {
        Some(c) => ScanCursor::decode(c, &full_prefix)?,
        None => ScanCursor::default(),
    };
    let mut walk = Walk::new(client, &full_prefix, cursor.at)?;
    // SCAN's COUNT is how much of the keyspace one call visits, not how many keys
    // match: on a server shared with other namespaces, keep scanning (a bounded number
    // of calls) rather than hand back a run of empty pages.
    let count = u32::try_from((limit * 4).clamp(100, 1000)).unwrap_or(1000);
    // Keys that no put of this registry could have written (not UTF-8, or refused by
    // its key limits) are not records of it: listed as skipped, never read, so that
    // a router's repair or migration does not fail on them for good.
    let mut skipped = Vec::new();
    while cursor.pending.is_empty() && walk.calls() < MAX_CALLS {
        match walk.step(count).await? {
            Some(listed) => {
                skipped.extend(listed.foreign.iter().map(|k| ns.name(k).to_owned()));
                cursor.pending = listed.keys;
            }
            None => break,
        }
    }
    cursor.at = walk.position();
    let rest = cursor.pending.split_off(cursor.pending.len().min(limit));
    let mut page = std::mem::replace(&mut cursor.pending, rest);
    page.retain(|full| {
        let valid = is_record_key(ns, limits, full);
        if !valid {
            skipped.push(ns.name(full).to_owned());
        }
        valid
    });
    let batch = KeyBatch::of_full(ns.prefix().len(), &page);
    let mut records = Vec::with_capacity(batch.len());
    for (i, raw) in client.get_many(&batch).await.into_iter().enumerate() {
        let key = batch.name(i);
        match raw.and_then(|raw| live_entry(key, raw, now, ns.layout_1())) {
            Ok(Some(entry)) => records.push((key.to_owned(), entry)),
            Ok(None) => {}
            // Not a record of ours: listed, left alone, and no obstacle to paging.
            Err(Error::Corrupt { .. }) => skipped.push(key.to_owned()),
            Err(e) => return Err(e),
        }
    }
    let next = (!walk.done() || !cursor.pending.is_empty()).then(|| cursor.encode());
    Ok(Page::new(records, next).with_skipped(skipped))
}

/// Whether the full key `full` is one a put of this registry could have written: its
/// name passes the key limits.
fn is_record_key(ns: &Namespace, limits: &Limits, full: &str) -> bool {
    limits.check_key(ns.name(full)).is_ok()
}

/// The live records of `keys`, by their header and length (a tombstone, foreign bytes,
/// a key of another type or a layout-2 record whose value is cut or grown is not one;
/// before, a string of foreign bytes that began with the record tag was counted). A
/// byte changed inside a value is not seen here: only a read of the value finds it
/// (see [`crate::codec`]).
async fn live_among(
    client: &Client,
    ns: &Namespace,
    op: &'static str,
    keys: &[String],
    now: Timestamp,
) -> Result<u64> {
    let headers = client.headers(op, keys).await?;
    Ok(headers
        .iter()
        .filter(|h| {
            h.as_ref()
                .is_some_and(|(header, len)| is_live_header(header, *len, now, ns.layout_1()))
        })
        .count() as u64)
}

/// Every live record of the namespace, by walking it all: the records a full scan
/// returns (a key the limits refuse is not one).
pub(crate) async fn count(
    client: &Client,
    ns: &Namespace,
    limits: &Limits,
    now: Timestamp,
) -> Result<u64> {
    let mut n = 0;
    let mut walk = Walk::new(client, ns.prefix(), Position::default())?;
    while let Some(mut keys) = walk.next_keys().await? {
        keys.retain(|full| is_record_key(ns, limits, full));
        if !keys.is_empty() {
            n += live_among(client, ns, "count", &keys, now).await?;
        }
    }
    Ok(n)
}

/// Removes every key of the namespace; the record limit stays, its index is emptied.
pub(crate) async fn clear(client: &Client, ns: &Namespace) -> Result<()> {
    let mut walk = Walk::new(client, ns.prefix(), Position::default())?;
    while let Some(keys) = walk.next_keys().await? {
        client.unlink("clear", &keys).await?;
    }
    if !client.cluster() {
        client.del("clear", ns.index()).await?;
    }
    Ok(())
}

/// The namespace's live records, estimated at a cost that does not grow with it: the
/// index's live members where a record limit keeps one. Otherwise a walk that stops
/// once it has seen [`SAMPLE`] of the namespace's keys: exact for a namespace smaller
/// than that (at the cost of a walk over the server's keys), else the live records
/// among those keys scaled by the share of the server's keys (`DBSIZE`) visited, so
/// the larger the namespace, the sooner it stops.
pub(crate) async fn estimate(client: &Client, ns: &Namespace, now: Timestamp) -> Result<u64> {
    if !client.cluster()
        && client
            .hget("stats", ns.meta(), "max_records")
            .await?
            .is_some()
    {
        return client
            .count_above("stats", ns.index(), now.as_millis())
            .await;
    }
    let mut walk = Walk::new(client, ns.prefix(), Position::default())?;
    let (mut seen, mut live) = (0, 0);
    while let Some(listed) = walk.step(ESTIMATE_COUNT).await? {
        let keys = listed.keys;
        if keys.is_empty() {
            continue;
        }
        seen += keys.len();
        live += live_among(client, ns, "stats", &keys, now).await?;
        if seen >= SAMPLE && !walk.done() {
            let mut total = 0;
            for node in walk.nodes() {
                total += client.dbsize(node.as_ref()).await?;
            }
            let visited = walk.calls() as u64 * u64::from(ESTIMATE_COUNT);
            return Ok(scale(live, visited, total));
        }
    }
    Ok(live)
}

/// `found` among `visited` keys, scaled to `total` keys.
fn scale(found: u64, visited: u64, total: u64) -> u64 {
    if visited >= total {
        return found;
    }
    let scaled = u128::from(found) * u128::from(total) / u128::from(visited.max(1));
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_sample_is_scaled_to_the_whole_server() {
        assert_eq!(scale(10, 1000, 100_000), 1000);
        assert_eq!(
            scale(3, 16_000, 2_000),
            3,
            "a sample larger than the server is whole"
        );
        assert_eq!(scale(0, 16_000, 1 << 40), 0);
    }

    proptest! {
        #[test]
        fn scaling_never_overflows_or_shrinks(found in any::<u64>(), visited in any::<u64>(), total in any::<u64>()) {
            let found = found.min(visited);
            prop_assert!(scale(found, visited, total) >= found.min(total));
        }
    }
}
