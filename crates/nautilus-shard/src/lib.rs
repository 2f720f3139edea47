#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod capacity;
mod ln;
mod migrate;
pub mod placement;
mod registry;
mod router;
mod scan;
mod state;

pub use crate::migrate::{MigrationHandle, Progress};
pub use crate::placement::Placement;
pub use crate::router::{NodeStats, ShardedRegistry, ShardedRegistryBuilder};
