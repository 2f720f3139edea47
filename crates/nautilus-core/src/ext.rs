//! Conveniences for callers, implemented for every registry.

use std::time::Duration;

use bytes::Bytes;
use std::future::Future;

use crate::error::Result;
use crate::read::Read;
use crate::record::{Condition, Cursor, DeleteOptions, Entry, Expiry, PutOptions, Version};
use crate::registry::Registry;

/// Caller conveniences over [`Registry`], implemented for every registry (including
/// `dyn Registry`). Backend authors never implement it.
///
/// The methods return unboxed futures, and reads try [`Registry::get_ready`] first, so
/// an in-process backend answers without allocating.
pub trait RegistryExt: Registry {
    /// The live record under `key`, if any (value, version and expiry).
    fn entry<'a>(
        &'a self,
        key: &'a str,
    ) -> impl Future<Output = Result<Option<Entry>>> + Send + 'a {
        Read::new(self, key, |entry| entry)
    }

    /// The live value under `key`, if any.
    fn get<'a>(&'a self, key: &'a str) -> impl Future<Output = Result<Option<Bytes>>> + Send + 'a {
        Read::new(self, key, |entry| entry.value)
    }

    /// Whether a live record exists under `key`.
    fn exists<'a>(&'a self, key: &'a str) -> impl Future<Output = Result<bool>> + Send + 'a {
        let read = Read::new(self, key, |_| ());
        async move { Ok(read.await?.is_some()) }
    }

    /// Writes `value` under `key` with no expiry; returns the new version.
    fn put(
        &self,
        key: &str,
        value: impl Into<Bytes> + Send,
    ) -> impl Future<Output = Result<Version>> + Send {
        let value = value.into();
        async move { self.put_opts(key, value, PutOptions::default()).await }
    }

    /// Writes `value` under `key`, expiring `ttl` after the write.
    fn put_with_ttl(
        &self,
        key: &str,
        value: impl Into<Bytes> + Send,
        ttl: Duration,
    ) -> impl Future<Output = Result<Version>> + Send {
        let value = value.into();
        async move {
            self.put_opts(key, value, PutOptions::default().ttl(ttl))
                .await
        }
    }

    /// Writes only if no live record exists; [`Error::Conflict`](crate::Error::Conflict)
    /// otherwise.
    fn put_if_absent(
        &self,
        key: &str,
        value: impl Into<Bytes> + Send,
        expiry: Expiry,
    ) -> impl Future<Output = Result<Version>> + Send {
        let value = value.into();
        let options = PutOptions::default()
            .expiry(expiry)
            .condition(Condition::Absent);
        async move { self.put_opts(key, value, options).await }
    }

    /// Compare-and-swap: writes only if the live record has version `expected`;
    /// [`Error::Conflict`](crate::Error::Conflict) with the actual version otherwise.
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Version,
        value: impl Into<Bytes> + Send,
        expiry: Expiry,
    ) -> impl Future<Output = Result<Version>> + Send {
        let value = value.into();
        let options = PutOptions::default()
            .expiry(expiry)
            .condition(Condition::Version(expected));
        async move { self.put_opts(key, value, options).await }
    }

    /// Deletes the record under `key`; returns whether a live record was removed.
    fn delete(&self, key: &str) -> impl Future<Output = Result<bool>> + Send {
        async move {
            self.delete_opts(key, DeleteOptions::default())
                .await
                .map(|v| v.is_some())
        }
    }

    /// Deletes only if the live record has version `expected`.
    fn delete_if_version(
        &self,
        key: &str,
        expected: Version,
    ) -> impl Future<Output = Result<bool>> + Send {
        let options = DeleteOptions::default().condition(Condition::Version(expected));
        async move { self.delete_opts(key, options).await.map(|v| v.is_some()) }
    }

    /// Walks every live record under `prefix`, one page at a time, never holding more
    /// than one page in memory.
    fn scanner(&self, prefix: &str) -> Scanner<'_, Self> {
        Scanner::new(self, prefix)
    }
}

impl<R: Registry + ?Sized> RegistryExt for R {}

/// Pages through a prefix scan; see [`RegistryExt::scanner`].
///
/// ```
/// # async fn demo(registry: &impl nautilus_core::Registry) -> nautilus_core::Result<()> {
/// use nautilus_core::RegistryExt;
/// let mut users = registry.scanner("user:");
/// while let Some((key, entry)) = users.next().await? {
///     println!("{key}: {} bytes", entry.value.len());
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Scanner<'a, R: ?Sized> {
    registry: &'a R,
    prefix: String,
    page_size: usize,
    cursor: Option<Cursor>,
    buffer: std::vec::IntoIter<(String, Entry)>,
    done: bool,
    skipped: u64,
}

impl<'a, R: Registry + ?Sized> Scanner<'a, R> {
    /// A scanner over `registry` for keys starting with `prefix`.
    pub fn new(registry: &'a R, prefix: &str) -> Self {
        Scanner {
            registry,
            prefix: prefix.to_owned(),
            page_size: 256,
            cursor: None,
            buffer: Vec::new().into_iter(),
            done: false,
            skipped: 0,
        }
    }

    /// Sets how many records to ask for per page (default 256).
    #[must_use]
    pub fn page_size(mut self, n: usize) -> Self {
        self.page_size = n.max(1);
        self
    }

    /// How many keys the pages so far skipped because their data is not a record of
    /// this registry (see [`Page::skipped`](crate::Page::skipped)).
    #[must_use]
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The next record, or `None` when the scan is complete.
    pub async fn next(&mut self) -> Result<Option<(String, Entry)>> {
        loop {
            if let Some(item) = self.buffer.next() {
                return Ok(Some(item));
            }
            if self.done {
                return Ok(None);
            }
            let page = self
                .registry
                .scan(&self.prefix, self.cursor.as_ref(), self.page_size)
                .await?;
            // The page's vector becomes the buffer: records are not moved again.
            self.buffer = page.records.into_iter();
            self.skipped += page.skipped.len() as u64;
            match page.next {
                Some(next) => self.cursor = Some(next),
                None => self.done = true,
            }
        }
    }

    /// The next page's worth of records (at most `page_size`), or an empty vector when
    /// the scan is complete.
    pub async fn next_batch(&mut self) -> Result<Vec<(String, Entry)>> {
        let mut out = Vec::new();
        while out.len() < self.page_size {
            match self.next().await? {
                Some(item) => out.push(item),
                None => break,
            }
        }
        Ok(out)
    }
}
