//! Writes that wait for replicas (`RedisConfig::wait_for_replicas`): acknowledged
//! only once a replica has them, refused promptly while no replica answers, and kept
//! when the primary dies right after.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use nautilus_core::{Error, Expiry, PutItem, Registry, RegistryExt};
use nautilus_redis::{RedisConfig, RedisRegistry};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_are_on_the_replica_when_the_primary_dies() {
    let (mut primary, replica) = common::primary_and_replica().await;
    let (p, r) = (primary.port(), replica.port());
    let ns = common::fresh_namespace();
    let registry = Arc::new(
        RedisRegistry::connect(
            RedisConfig::new(format!("redis://127.0.0.1:{p}"))
                .namespace(&ns)
                .command_timeout(Duration::from_millis(800))
                .wait_for_replicas(1),
        )
        .await
        .unwrap(),
    );

    // Every kind of write: single puts (64 at once, so batched), a batch, a
    // conditional delete, a TTL change.
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let registry = registry.clone();
            tokio::spawn(async move {
                let key = format!("single/{t}");
                let version = registry.put(&key, format!("v{t}")).await.unwrap();
                (key, version)
            })
        })
        .collect();
    let mut acked = Vec::new();
    for t in tasks {
        acked.push(t.await.unwrap());
    }
    let items: Vec<PutItem> = (0..50)
        .map(|i| PutItem::new(format!("batch/{i}"), format!("b{i}")))
        .collect();
    for (item, version) in items.iter().zip(registry.put_many(items.clone()).await) {
        acked.push((item.key.to_string(), version.unwrap()));
    }
    let doomed = registry.put("doomed", "x").await.unwrap();
    assert!(registry.delete_if_version("doomed", doomed).await.unwrap());
    let touched = registry
        .touch("single/0", Expiry::Never)
        .await
        .unwrap()
        .unwrap();
    acked[0].1 = touched;

    // A frozen replica acknowledges nothing: writes fail promptly, as timeouts (they
    // are on the primary, but not known to be replicated).
    replica.pause();
    let started = Instant::now();
    let err = registry.put("unreplicated", "v").await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    let batch = registry
        .put_many(vec![
            PutItem::new("unreplicated/a", "a"),
            PutItem::new("unreplicated/b", "b"),
        ])
        .await;
    assert!(
        batch
            .iter()
            .all(|r| matches!(r, Err(Error::Timeout { .. }))),
        "{batch:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "refusals took {:?}",
        started.elapsed()
    );
    replica.resume();
    common::until_recovered(&registry, Duration::from_secs(10)).await;

    // The primary dies the moment the last write was acknowledged; the replica,
    // promoted, has every acknowledged write at its version, and not the deleted one.
    let last = registry.put("last", "just acknowledged").await.unwrap();
    acked.push(("last".into(), last));
    primary.stop();
    assert_eq!(common::cli(r, &["replicaof", "no", "one"]).trim(), "OK");
    let promoted = common::connect(&format!("redis://127.0.0.1:{r}"), &ns).await;
    common::assert_kept(&promoted, &acked).await;
    assert_eq!(promoted.get("doomed").await.unwrap(), None);
}

#[tokio::test]
async fn waiting_for_replicas_is_refused_on_cluster() {
    let url = common::url("NAUTILUS_REDIS_CLUSTER_URL");
    let err = RedisRegistry::connect(RedisConfig::new(url).wait_for_replicas(1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
}
