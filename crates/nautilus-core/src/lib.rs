#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod batch;
mod capabilities;
mod capacity;
mod clock;
mod codec;
mod error;
mod ext;
mod key;
mod limits;
mod options;
mod page;
mod read;
mod record;
mod registry;
mod stats;
mod typed;
mod version;
mod write;

#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod testkit;

pub use bytes::Bytes;

pub use crate::capabilities::Capabilities;
pub use crate::capacity::Capacity;
pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use crate::codec::{Bincode, Codec};
pub use crate::error::{BoxError, CapacityLimit, Error, Restarted, Result};
pub use crate::ext::{RegistryExt, Scanner};
pub use crate::key::BatchKey;
pub use crate::limits::Limits;
pub use crate::options::{DeleteOptions, PutItem, PutOptions};
pub use crate::page::{Cursor, Page};
pub use crate::record::{Condition, Entry, Expiry, Timestamp, Version};
pub use crate::registry::{DynRegistry, Registry};
pub use crate::stats::Stats;
pub use crate::typed::{Record, TypedPage, TypedRegistry};
pub use crate::version::VersionClock;

/// Re-exported so backends implement the trait with the same macro version.
pub use async_trait::async_trait;
