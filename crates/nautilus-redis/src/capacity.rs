//! A namespace's record limit, on a single server: kept in its meta hash, shared by every
//! client of it and enforced by the write scripts against an index of its live records
//! (a sorted set scored by expiry), which setting a limit rebuilds. On Cluster the index
//! would sit in another hash slot than the records, so limits are not offered there.

use nautilus_core::{Capacity, Error, Result};

use crate::client::Client;
use crate::error::BACKEND;
use crate::keys::Namespace;
use crate::outcome;
use crate::walk::{Position, Walk};

/// The field of the meta hash that holds the record limit.
const MAX_RECORDS: &str = "max_records";

/// The namespace's limit.
pub(crate) async fn get(client: &Client, ns: &Namespace) -> Result<Capacity> {
    if client.cluster() {
        return Ok(Capacity::unbounded());
    }
    let max = client.hget("capacity", ns.meta(), MAX_RECORDS).await?;
    Ok(Capacity::unbounded().with_max_records(max))
}

/// Sets (or lifts) the namespace's limit, and rebuilds its index from the records.
pub(crate) async fn set(client: &Client, ns: &Namespace, capacity: Capacity) -> Result<()> {
    let capacity = capacity.validate()?;
    if capacity.max_bytes.is_some() || (client.cluster() && capacity.max_records.is_some()) {
        return Err(Error::NotSupported {
            operation: if capacity.max_bytes.is_some() {
                "byte limits"
            } else {
                "record limits on Redis Cluster"
            },
            backend: BACKEND,
        });
    }
    if client.cluster() {
        return Ok(());
    }
    const OP: &str = "set_capacity";
    let Some(max) = capacity.max_records else {
        client.hset(OP, ns.meta(), MAX_RECORDS, None).await?;
        return client.del(OP, ns.index()).await;
    };
    // Publish the limit first (from now on every write keeps the index), then rebuild
    // the index from the records: writes racing the rebuild index themselves, and the
    // rebuild adds only records that are live.
    client.hset(OP, ns.meta(), MAX_RECORDS, Some(max)).await?;
    client.del(OP, ns.index()).await?;
    let mut walk = Walk::new(client, ns.prefix(), Position::default())?;
    while let Some(keys) = walk.next_keys().await? {
        let calls = keys
            .into_iter()
            .map(|k| (vec![k, ns.index().to_owned()], Vec::new()))
            .collect();
        for reply in client.eval_many(OP, &client.scripts.index, calls).await {
            outcome::outcome(&reply?)?;
        }
    }
    Ok(())
}
