//! # Nautilus
//!
//! An async record registry: one contract ([`Registry`]), many storage backends,
//! consistent-hash sharding with failover.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> nautilus::Result<()> {
//! use std::sync::Arc;
//! use nautilus::prelude::*;
//!
//! let registry: DynRegistry = Arc::new(nautilus::memory::MemoryRegistry::new());
//! let v1 = registry.put("user:1", "ada").await?;
//! let v2 = registry.compare_and_swap("user:1", v1, "ada lovelace", Expiry::Never).await?;
//! assert!(v2 > v1);
//! assert_eq!(registry.get("user:1").await?.as_deref(), Some(&b"ada lovelace"[..]));
//! # Ok(()) }
//! ```
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `memory` | yes | [`memory::MemoryRegistry`], in-process on quick_cache |
//! | `redis` | no | `redis::RedisRegistry`, on fred (standalone, Sentinel, Cluster) |
//! | `shard` | no | `shard::ShardedRegistry`: consistent-hash sharding over any registries, resharded online |
//! | `full` | no | all of the above |
//!
//! Everything in [`nautilus_core`] is re-exported at the root: the contract, the
//! record model, the errors, the codec and the typed layer.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use nautilus_core::*;

/// The in-process backend (feature `memory`).
#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
#[doc(inline)]
pub use nautilus_memory as memory;

/// The Redis backend (feature `redis`).
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[doc(inline)]
pub use nautilus_redis as redis;

/// Consistent-hash sharding (feature `shard`).
#[cfg(feature = "shard")]
#[cfg_attr(docsrs, doc(cfg(feature = "shard")))]
#[doc(inline)]
pub use nautilus_shard as shard;

/// The names most programs use: `use nautilus::prelude::*;`.
pub mod prelude {
    pub use nautilus_core::{
        Bytes, Capacity, CapacityLimit, DynRegistry, Entry, Error, Expiry, Record, Registry,
        RegistryExt, Result, TypedRegistry, Version,
    };

    #[cfg(feature = "memory")]
    pub use nautilus_memory::MemoryRegistry;

    #[cfg(feature = "shard")]
    pub use nautilus_shard::ShardedRegistry;
}
