//! A router over three in-process nodes, a fourth added while the registry serves,
//! with the migration's progress printed. Runs with no server:
//! `cargo run -p nautilus --example sharded --features shard`.

use std::sync::Arc;
use std::time::Duration;

use nautilus::memory::MemoryRegistry;
use nautilus::prelude::*;
use nautilus::shard::ShardedRegistry;

#[tokio::main]
async fn main() -> nautilus::Result<()> {
    let node = || -> DynRegistry { Arc::new(MemoryRegistry::new()) };
    let router = ShardedRegistry::builder()
        .node("a", node())
        .node("b", node())
        .node("c", node())
        .build()?;
    let records = 200_000u32;
    let batch: Vec<nautilus::PutItem> = (0..records)
        .map(|i| nautilus::PutItem::new(format!("user:{i}"), i.to_le_bytes().to_vec()))
        .collect();
    for chunk in batch.chunks(1000) {
        for r in router.put_many(chunk.to_vec()).await {
            r?;
        }
    }
    for s in router.node_stats().await {
        println!("node {} holds {} records", s.id, s.stats?.records);
    }

    println!("adding node d ...");
    let migration = router.add_node("d", node(), 1).await?;
    // The registry keeps serving while records move.
    let reader = {
        let router = router.clone();
        tokio::spawn(async move {
            let mut reads = 0u64;
            for i in (0..records).cycle().step_by(7919).take(100_000) {
                let v = router.get(&format!("user:{i}")).await?;
                assert_eq!(v.as_deref(), Some(&i.to_le_bytes()[..]), "user:{i}");
                reads += 1;
            }
            Ok::<u64, nautilus::Error>(reads)
        })
    };
    loop {
        let p = migration.progress();
        println!(
            "  scanned {:>7}  moved {:>6}  failed {}",
            p.scanned, p.moved, p.failed
        );
        if p.done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let done = migration.wait().await?;
    let reads = reader
        .await
        .map_err(|e| nautilus::Error::invalid_argument(e.to_string()))??;
    println!(
        "done: {} of {records} records moved to d; {reads} reads during the move, none stale",
        done.moved
    );
    for s in router.node_stats().await {
        println!("node {} holds {} records", s.id, s.stats?.records);
    }
    assert_eq!(router.count().await?, u64::from(records));
    Ok(())
}
