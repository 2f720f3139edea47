#![doc = include_str!("../README.md")]

mod counters;
mod key;
mod registry;
mod shard;

pub use crate::registry::{MemoryRegistry, MemoryRegistryBuilder};
pub use crate::shard::{Removal, RemovalCause};
