#![doc = include_str!("../README.md")]

mod builder;
mod charging;
mod counters;
mod expiry;
mod import;
mod key;
mod now;
mod ops;
mod read;
mod registry;
mod room;
mod scan;
mod shard;
#[cfg(test)]
mod test_support;
mod tombstones;

pub use crate::builder::MemoryRegistryBuilder;
pub use crate::registry::MemoryRegistry;
pub use crate::shard::{Removal, RemovalCause};
