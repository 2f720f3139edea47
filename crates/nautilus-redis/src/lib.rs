#![doc = include_str!("../README.md")]

mod coalesce;
mod codec;
mod config;
mod registry;
mod scripts;
mod tls;

pub use crate::config::RedisConfig;
pub use crate::registry::RedisRegistry;
