#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod batch;
mod clock;
mod codec;
mod error;
mod ext;
mod key;
mod limits;
mod read;
mod record;
mod registry;
mod typed;
mod version;
mod write;

#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod testkit;

pub use bytes::Bytes;

pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use crate::codec::{Bincode, Codec};
pub use crate::error::{BoxError, CapacityLimit, Error, Result};
pub use crate::ext::{RegistryExt, Scanner};
pub use crate::key::BatchKey;
pub use crate::limits::Limits;
pub use crate::record::{
    Capabilities, Capacity, Condition, Cursor, DeleteOptions, Entry, Expiry, Page, PutItem,
    PutOptions, Stats, Timestamp, Version,
};
pub use crate::registry::{DynRegistry, Registry};
pub use crate::typed::{Record, TypedPage, TypedRegistry};
pub use crate::version::VersionClock;

/// Re-exported so backends implement the trait with the same macro version.
pub use async_trait::async_trait;
