//! A Redis Cluster loses a primary mid-workload and gets it back: calls come back
//! promptly with the right record or a transient error, the registry recovers by
//! itself, and no acknowledged write is lost.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use nautilus_core::{Registry, RegistryExt};
use nautilus_redis::{RedisConfig, RedisRegistry};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_and_regaining_a_primary_loses_no_acknowledged_write() {
    let mut cluster = common::Cluster::start(
        3,
        common::Persistence::Durable,
        &[
            "--cluster-node-timeout",
            "1000",
            // Survivors keep serving their slots while a primary is down.
            "--cluster-require-full-coverage",
            "no",
        ],
    )
    .unwrap();
    let url = cluster.url();
    let registry = RedisRegistry::connect(
        RedisConfig::new(url)
            .namespace(common::fresh_namespace())
            .command_timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap();
    let acked = common::write_acked(&registry, 300).await;

    // Kill the primary of the third port mid-workload. Every call must still come
    // back promptly: the right record, or a transient error (never a hang, never a
    // wrong answer). While fred reconnects to the lost node it may refuse the whole
    // cluster, so this does not require the survivors to keep serving.
    cluster.nodes_mut()[2].stop();
    for (key, version) in acked.iter().take(40) {
        let started = Instant::now();
        match registry.get_entry(key).await {
            Ok(Some(e)) => assert_eq!(e.version, *version),
            Ok(None) => panic!("{key} vanished"),
            Err(e) => assert!(e.is_transient(), "{key}: {e:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{key} took {:?} with a primary down",
            started.elapsed()
        );
    }
    let during = registry.put("during-outage", "x").await;
    assert!(during.is_ok() || during.as_ref().is_err_and(|e| e.is_transient()));

    cluster.nodes_mut()[2].restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    for (key, version) in &acked {
        loop {
            match registry.get_entry(key).await {
                Ok(Some(e)) => {
                    assert_eq!(e.version, *version, "{key} came back at another version");
                    break;
                }
                Ok(None) => panic!("acknowledged write {key} was lost"),
                Err(e) if e.is_transient() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{key} did not recover: {e:?}"),
            }
        }
    }
    // Writes work again everywhere (scripts reloaded on the restarted primary), once
    // every connection of the pool is back (20 recovery records).
    common::until_recovered(&registry, Duration::from_secs(30)).await;
    for (key, _) in acked.iter().take(50) {
        registry.put(key, "after").await.unwrap();
    }
    let count = registry.count().await.unwrap();
    assert!(
        count == 320 || count == 321,
        "{count} records after recovery"
    );
    drop(cluster);
}
