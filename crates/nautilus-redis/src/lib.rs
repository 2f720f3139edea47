#![doc = include_str!("../README.md")]

// The public face: the registry and its configuration.
mod config;
mod connect;
mod registry;

// What the registry is made of, from the trait down to fred.
mod args;
mod batch;
mod capacity;
mod client;
mod clock;
mod coalesce;
mod codec;
mod damaged;
mod error;
mod identity;
mod keys;
mod namespace;
mod outcome;
mod scripts;
mod tls;
mod walk;

pub use crate::config::{ConfigError, RedisConfig};
pub use crate::registry::RedisRegistry;
