//! Batches for backends without a batch path of their own: the batch methods of
//! [`Registry`], answered by one call of the matching single-key method per input.
//!
//! Every method of [`Registry`] is required, so that a wrapper cannot lose a
//! backend's fast path by forgetting to forward one; a backend that has no faster
//! way to serve a batch implements the batch methods with these helpers:
//!
//! ```
//! use nautilus_core::{Entry, PutItem, Registry, Result, Version, async_trait, batch};
//! # use nautilus_core::{Bytes, Capabilities, Capacity, Cursor, DeleteOptions, Expiry, Limits, Page, PutOptions, Stats};
//! # #[derive(Debug, Default)]
//! # struct MyRegistry(nautilus_core::testkit::MapRegistry);
//!
//! #[async_trait]
//! impl Registry for MyRegistry {
//!     // The single-key methods, scan and the rest as the store does them, then:
//! #   fn capabilities(&self) -> Capabilities { self.0.capabilities() }
//! #   fn limits(&self) -> Limits { self.0.limits() }
//! #   async fn get_entry(&self, key: &str) -> Result<Option<Entry>> { self.0.get_entry(key).await }
//! #   fn get_ready(&self, key: &str) -> Option<Result<Option<Entry>>> { self.0.get_ready(key) }
//! #   async fn put_opts(&self, key: &str, value: Bytes, options: PutOptions) -> Result<Version> { self.0.put_opts(key, value, options).await }
//! #   fn put_ready(&self, key: &str, value: Bytes, options: PutOptions) -> std::result::Result<Result<Version>, Bytes> { self.0.put_ready(key, value, options) }
//! #   async fn delete_opts(&self, key: &str, options: DeleteOptions) -> Result<Option<Version>> { self.0.delete_opts(key, options).await }
//! #   async fn touch(&self, key: &str, expiry: Expiry) -> Result<Option<Version>> { self.0.touch(key, expiry).await }
//! #   async fn import(&self, key: &str, entry: Entry) -> Result<bool> { self.0.import(key, entry).await }
//! #   fn import_ready(&self, key: &str, entry: Entry) -> std::result::Result<Result<bool>, Entry> { self.0.import_ready(key, entry) }
//! #   async fn scan(&self, prefix: &str, cursor: Option<&Cursor>, limit: usize) -> Result<Page> { self.0.scan(prefix, cursor, limit).await }
//! #   async fn count(&self) -> Result<u64> { self.0.count().await }
//! #   async fn clear(&self) -> Result<()> { self.0.clear().await }
//! #   async fn ping(&self) -> Result<()> { self.0.ping().await }
//! #   async fn stats(&self) -> Result<Stats> { self.0.stats().await }
//! #   async fn capacity(&self) -> Result<Capacity> { self.0.capacity().await }
//! #   async fn set_capacity(&self, capacity: Capacity) -> Result<()> { self.0.set_capacity(capacity).await }
//!
//!     async fn get_many(&self, keys: &[&str]) -> Vec<Result<Option<Entry>>> {
//!         batch::get_each(self, keys).await
//!     }
//!
//!     async fn put_many(&self, items: Vec<PutItem>) -> Vec<Result<Version>> {
//!         batch::put_each(self, items).await
//!     }
//!
//!     async fn delete_many(&self, keys: &[&str]) -> Vec<Result<bool>> {
//!         batch::delete_each(self, keys).await
//!     }
//! }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! # let r = MyRegistry::default();
//! # let written = r.put_many(vec![PutItem::new("a", "1"), PutItem::new("", "x")]).await;
//! # assert!(written[0].is_ok() && written[1].is_err());
//! # assert_eq!(r.delete_many(&["a", "a"]).await.into_iter().map(|d| d.ok()).collect::<Vec<_>>(), [Some(true), Some(false)]);
//! # }
//! ```
//!
//! The calls run one after the other, in input order, so a batch that writes one key
//! twice leaves the later write. A backend that can send a batch in one round trip
//! (per node) should: these helpers are for stores where a call per key is what a
//! batch costs anyway.

use crate::error::Result;
use crate::registry::Registry;
use crate::{DeleteOptions, Entry, PutItem, Version};

/// [`Registry::get_many`] as one [`Registry::get_entry`] per key: one result per
/// key, in input order.
pub async fn get_each<R: Registry + ?Sized>(
    registry: &R,
    keys: &[&str],
) -> Vec<Result<Option<Entry>>> {
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        out.push(registry.get_entry(key).await);
    }
    out
}

/// [`Registry::put_many`] as one [`Registry::put_opts`] per item: one result per
/// item, in input order.
pub async fn put_each<R: Registry + ?Sized>(
    registry: &R,
    items: Vec<PutItem>,
) -> Vec<Result<Version>> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        out.push(registry.put_opts(&item.key, item.value, item.options).await);
    }
    out
}

/// [`Registry::delete_many`] as one unconditional [`Registry::delete_opts`] per key:
/// whether each removed a live record, in input order.
pub async fn delete_each<R: Registry + ?Sized>(registry: &R, keys: &[&str]) -> Vec<Result<bool>> {
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let deleted = registry.delete_opts(key, DeleteOptions::default()).await;
        out.push(deleted.map(|version| version.is_some()));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use bytes::Bytes;

    use super::*;
    use crate::error::Error;
    use crate::ext::RegistryExt;
    use crate::testkit::MapRegistry;
    use crate::{Condition, PutOptions};

    #[tokio::test]
    async fn puts_apply_in_input_order_and_fail_alone() {
        let r = MapRegistry::default();
        let absent = PutOptions::default().condition(Condition::Absent);
        let items = vec![
            PutItem::new("a", "1"),
            PutItem::new("", "bad key"),
            PutItem::new("a", "2"),
            PutItem::new("a", "3").with_options(absent),
        ];
        let got = put_each(&r, items).await;
        assert_eq!(got.len(), 4);
        assert!(got[0].as_ref().unwrap() < got[2].as_ref().unwrap());
        assert!(matches!(got[1], Err(Error::InvalidKey { .. })));
        assert!(matches!(got[3], Err(Error::Conflict { .. })));
        assert_eq!(r.get("a").await.unwrap(), Some(Bytes::from("2")));
    }

    #[tokio::test]
    async fn gets_and_deletes_answer_each_key_in_input_order() {
        let r = MapRegistry::default();
        let v = r.put("b", "x").await.unwrap();
        let got = get_each(&r, &["missing", "b", ""]).await;
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].as_ref().unwrap(), &None);
        assert_eq!(got[1].as_ref().unwrap().as_ref().unwrap().version, v);
        assert!(matches!(got[2], Err(Error::InvalidKey { .. })));

        let deleted = delete_each(&r, &["b", "b", "", "missing"]).await;
        let deleted: Vec<_> = deleted.into_iter().map(|d| d.ok()).collect();
        assert_eq!(deleted, [Some(true), Some(false), None, Some(false)]);
        assert!(get_each(&r, &[]).await.is_empty());
    }
}
