//! The quickstart: a typed registry of services on the in-memory default.
//!
//! `cargo run --example quickstart`

use std::sync::Arc;
use std::time::Duration;

use nautilus::prelude::*;
use serde::{Deserialize, Serialize};

/// A service instance that registers itself and must heartbeat within 30 s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Service {
    name: String,
    address: String,
    port: u16,
}

impl Record for Service {
    fn id(&self) -> String {
        self.name.clone()
    }

    fn expiry(&self) -> Expiry {
        Expiry::After(Duration::from_secs(30))
    }
}

#[tokio::main]
async fn main() -> nautilus::Result<()> {
    let backend = MemoryRegistry::builder()
        .max_records(10_000)
        .on_removal(|r| println!("  (removed {} : {:?})", r.key, r.cause))
        .build()?;
    let registry: DynRegistry = Arc::new(backend);
    let services = TypedRegistry::<Service>::new(registry.clone()).with_prefix("svc/");

    // Register.
    let api = Service {
        name: "api".into(),
        address: "10.0.0.7".into(),
        port: 8080,
    };
    let v1 = services.add(&api).await?;
    services
        .add(&Service {
            name: "billing".into(),
            address: "10.0.0.9".into(),
            port: 9090,
        })
        .await?;
    println!("registered api at version {v1}");

    // Optimistic concurrency: update only if nobody else did.
    let moved = Service {
        port: 8081,
        ..api.clone()
    };
    let v2 = services.update(&moved, v1).await?;
    println!("moved api to port 8081, version {v2}");
    match services.update(&api, v1).await {
        Err(Error::Conflict {
            expected, actual, ..
        }) => println!("stale update refused: expected {expected:?}, found {actual:?}"),
        other => println!("unexpected: {other:?}"),
    }

    // List in pages.
    let page = services.list(None, 100).await?;
    for (service, version) in &page.records {
        println!(
            "  {} -> {}:{} (v{version})",
            service.name, service.address, service.port
        );
    }

    // Bad input is a typed error, not a panic.
    if let Err(e) = registry.put("", "x").await {
        println!("empty key refused: {e}");
    }

    // Capacity is readable and changeable at run time.
    services.set_capacity(Capacity::records(1_000)).await?;
    println!("capacity now {:?}", services.capacity().await?);

    let stats = registry.stats().await?;
    println!(
        "{} records, {} bytes, {} hits, {} misses",
        stats.records, stats.bytes, stats.hits, stats.misses
    );
    Ok(())
}
