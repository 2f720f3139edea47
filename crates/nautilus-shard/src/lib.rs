#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod batches;
mod builder;
mod capacity;
mod checker;
mod deadline;
mod handback;
mod heal;
mod health;
mod hints;
mod join;
mod landing;
mod ln;
mod migrate;
pub mod placement;
mod reads;
mod ready;
mod refused;
mod registry;
mod repair;
mod replica;
mod replica_move;
mod router;
mod scan;
mod state;
mod task;

pub use crate::builder::ShardedRegistryBuilder;
pub use crate::health::{HealthEvent, NodeHealth, NodeState};
pub use crate::migrate::{MigrationHandle, Progress};
pub use crate::placement::Placement;
pub use crate::repair::{RepairHandle, RepairProgress};
pub use crate::router::{NodeStats, ShardedRegistry};
