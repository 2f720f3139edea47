//! The record limit of a namespace on Redis: shared by every client of the namespace,
//! enforced on the server, built over records that existed before it was set.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use nautilus_core::{Capacity, CapacityLimit, Error, Registry, RegistryExt};

#[tokio::test]
async fn a_limit_set_over_existing_records_is_shared_by_every_client() {
    let (a, b) = common::two_clients("NAUTILUS_REDIS_URL").await;
    for i in 0..30 {
        a.put(&format!("old/{i}"), "x").await.unwrap();
    }
    // Set on a namespace that already holds 30 records: the index is rebuilt from them.
    a.set_capacity(Capacity::records(40)).await.unwrap();
    assert_eq!(b.capacity().await.unwrap().max_records, Some(40));
    let mut accepted = 0;
    let mut refused = 0;
    for i in 0..10 {
        for client in [&a, &b] {
            match client
                .put(&format!("new/{i}/{}", accepted + refused), "y")
                .await
            {
                Ok(_) => accepted += 1,
                Err(Error::CapacityExceeded { limit, max }) => {
                    assert_eq!((limit, max), (CapacityLimit::Records, 40));
                    refused += 1;
                }
                Err(e) => panic!("{e:?}"),
            }
        }
    }
    assert_eq!((accepted, refused), (10, 10));
    assert_eq!(a.count().await.unwrap(), 40);
    // Deleting makes room for exactly one more, from either client.
    assert!(b.delete("old/0").await.unwrap());
    a.put("one-more", "z").await.unwrap();
    assert!(matches!(
        b.put("two-more", "z").await,
        Err(Error::CapacityExceeded { .. })
    ));
    // Lifting the limit.
    b.set_capacity(Capacity::unbounded()).await.unwrap();
    a.put("unlimited", "z").await.unwrap();
    assert_eq!(a.capacity().await.unwrap(), Capacity::unbounded());
    assert!(matches!(
        a.set_capacity(Capacity::unbounded().with_max_bytes(Some(1 << 20)))
            .await,
        Err(Error::NotSupported { .. })
    ));
    a.clear().await.unwrap();
}

#[tokio::test]
async fn record_limits_are_refused_plainly_on_cluster() {
    let registry = common::registry("NAUTILUS_REDIS_CLUSTER_URL").await;
    assert!(!registry.capabilities().max_records);
    assert!(matches!(
        registry.set_capacity(Capacity::records(10)).await,
        Err(Error::NotSupported { .. })
    ));
    registry.set_capacity(Capacity::unbounded()).await.unwrap();
}
