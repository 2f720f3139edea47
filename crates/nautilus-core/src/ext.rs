//! Conveniences for callers, implemented for every registry.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, Stream};
use std::future::Future;

use crate::error::Result;
use crate::read::{Read, Value, Whole};
use crate::registry::Registry;
use crate::write::Write;
use crate::{Condition, Cursor, DeleteOptions, Entry, Expiry, PutOptions, Version};

/// Caller conveniences over [`Registry`], implemented for every registry (including
/// `dyn Registry`). Backend authors never implement it.
///
/// The methods return unboxed futures, and reads try [`Registry::get_ready`] (for
/// `get` and `exists`, [`Registry::get_value_ready`]) first, so an in-process backend
/// answers without allocating.
pub trait RegistryExt: Registry {
    /// The live record under `key`, if any (value, version and expiry).
    fn entry<'a>(
        &'a self,
        key: &'a str,
    ) -> impl Future<Output = Result<Option<Entry>>> + Send + 'a {
        Read::<_, Whole>::new(self, key)
    }

    /// The live value under `key`, if any.
    fn get<'a>(&'a self, key: &'a str) -> impl Future<Output = Result<Option<Bytes>>> + Send + 'a {
        Read::<_, Value>::new(self, key)
    }

    /// Whether a live record exists under `key`.
    fn exists<'a>(&'a self, key: &'a str) -> impl Future<Output = Result<bool>> + Send + 'a {
        let read = Read::<_, Value>::new(self, key);
        async move { Ok(read.await?.is_some()) }
    }

    /// Writes `value` under `key` with `options` (expiry and condition); returns the
    /// new version. The same write as [`Registry::put_opts`], whose future is boxed
    /// (the trait is object-safe); this one is boxed only if the backend has to wait,
    /// so an in-process backend answers without allocating. The other puts here are
    /// this one with fixed options.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> nautilus_core::Result<()> {
    /// use std::time::Duration;
    /// use nautilus_core::{Condition, PutOptions, RegistryExt};
    /// # let registry = nautilus_core::testkit::MapRegistry::default();
    ///
    /// let v1 = registry.put("session:ada", "token-1").await?;
    /// // Replace it only if nobody else has since, and let it expire in an hour.
    /// let options = PutOptions::default()
    ///     .ttl(Duration::from_secs(3600))
    ///     .condition(Condition::Version(v1));
    /// let v2 = registry.put_with("session:ada", "token-2", options).await?;
    /// assert!(v2 > v1);
    /// // The same condition again fails: the record is at v2 now.
    /// assert!(registry.put_with("session:ada", "token-3", options).await.is_err());
    /// # Ok(()) }
    /// ```
    fn put_with<'a>(
        &'a self,
        key: &'a str,
        value: impl Into<Bytes> + Send,
        options: PutOptions,
    ) -> impl Future<Output = Result<Version>> + Send {
        Write::new(self, key, value.into(), options)
    }

    /// Writes `value` under `key` with no expiry; returns the new version.
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: impl Into<Bytes> + Send,
    ) -> impl Future<Output = Result<Version>> + Send {
        self.put_with(key, value, PutOptions::default())
    }

    /// Writes `value` under `key`, expiring `ttl` after the write.
    fn put_with_ttl<'a>(
        &'a self,
        key: &'a str,
        value: impl Into<Bytes> + Send,
        ttl: Duration,
    ) -> impl Future<Output = Result<Version>> + Send {
        self.put_with(key, value, PutOptions::default().ttl(ttl))
    }

    /// Writes only if no live record exists; [`Error::Conflict`](crate::Error::Conflict)
    /// otherwise.
    fn put_if_absent<'a>(
        &'a self,
        key: &'a str,
        value: impl Into<Bytes> + Send,
        expiry: Expiry,
    ) -> impl Future<Output = Result<Version>> + Send {
        let options = PutOptions::default()
            .expiry(expiry)
            .condition(Condition::Absent);
        self.put_with(key, value, options)
    }

    /// Compare-and-swap: writes only if the live record has version `expected`;
    /// [`Error::Conflict`](crate::Error::Conflict) with the actual version otherwise.
    fn compare_and_swap<'a>(
        &'a self,
        key: &'a str,
        expected: Version,
        value: impl Into<Bytes> + Send,
        expiry: Expiry,
    ) -> impl Future<Output = Result<Version>> + Send {
        let options = PutOptions::default()
            .expiry(expiry)
            .condition(Condition::Version(expected));
        self.put_with(key, value, options)
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
///
/// [`Scanner::into_stream`] turns it into a [`Stream`] for stream combinators.
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
            // A page may be empty and still not the last: give the runtime a turn
            // before the next one, so a backend that answers at once, page after
            // page, cannot hold a task (or a timeout around it) forever.
            if self.buffer.len() == 0 && !self.done {
                YieldOnce(false).await;
            }
        }
    }

    /// The records as a [`Stream`] (the `futures` crate's trait): each live record
    /// under the prefix once, page after page.
    ///
    /// An error ends the stream: it is the last item. (The scanner itself can be
    /// retried: after an error, [`Scanner::next`] asks for the same page again.)
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> nautilus_core::Result<()> {
    /// use futures_util::TryStreamExt;
    /// use nautilus_core::RegistryExt;
    /// # let registry = nautilus_core::testkit::MapRegistry::default();
    ///
    /// for name in ["ada", "alan", "grace"] {
    ///     registry.put(&format!("user:{name}"), name).await?;
    /// }
    /// let users: Vec<(String, nautilus_core::Entry)> = registry
    ///     .scanner("user:")
    ///     .page_size(2)
    ///     .into_stream()
    ///     .try_collect()
    ///     .await?;
    /// assert_eq!(users.len(), 3);
    /// # Ok(()) }
    /// ```
    pub fn into_stream(self) -> impl Stream<Item = Result<(String, Entry)>> + Send + 'a {
        // `try_unfold` drops the scanner once it yields an error, so the stream ends
        // there instead of asking for the failing page forever.
        stream::try_unfold(self, |mut scanner| async move {
            Ok(scanner.next().await?.map(|item| (item, scanner)))
        })
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

/// A future that is pending once (waking itself at once), then ready: a turn for
/// the runtime, whichever runtime it is.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use futures_util::StreamExt;

    use super::*;
    use crate::error::Error;
    use crate::limits::Limits;
    use crate::testkit::MapRegistry;
    use crate::{Capabilities, Capacity, Page, PutItem, Stats};

    /// The reference registry, whose scans fail once `pages` pages were served and
    /// which, with `waits`, answers no read or put at once (as a remote backend):
    /// `get_entry` and `put_opts` then wait for one reschedule.
    #[derive(Debug, Default)]
    struct FailingScans {
        inner: MapRegistry,
        pages: usize,
        scans: AtomicUsize,
        waits: bool,
    }

    #[async_trait]
    impl Registry for FailingScans {
        fn capabilities(&self) -> Capabilities {
            self.inner.capabilities()
        }
        fn limits(&self) -> Limits {
            self.inner.limits()
        }
        async fn get_entry(&self, key: &str) -> Result<Option<Entry>> {
            if self.waits {
                tokio::task::yield_now().await;
            }
            self.inner.get_entry(key).await
        }
        fn get_ready(&self, key: &str) -> Option<Result<Option<Entry>>> {
            (!self.waits).then(|| self.inner.get_ready(key)).flatten()
        }
        fn get_value_ready(&self, key: &str) -> Option<Result<Option<Bytes>>> {
            (!self.waits)
                .then(|| self.inner.get_value_ready(key))
                .flatten()
        }
        async fn put_opts(&self, key: &str, value: Bytes, options: PutOptions) -> Result<Version> {
            if self.waits {
                tokio::task::yield_now().await;
            }
            self.inner.put_opts(key, value, options).await
        }
        fn put_ready(
            &self,
            key: &str,
            value: Bytes,
            options: PutOptions,
        ) -> std::result::Result<Result<Version>, Bytes> {
            if self.waits {
                return Err(value);
            }
            self.inner.put_ready(key, value, options)
        }
        async fn delete_opts(&self, key: &str, options: DeleteOptions) -> Result<Option<Version>> {
            self.inner.delete_opts(key, options).await
        }
        async fn touch(&self, key: &str, expiry: Expiry) -> Result<Option<Version>> {
            self.inner.touch(key, expiry).await
        }
        async fn import(&self, key: &str, entry: Entry) -> Result<bool> {
            self.inner.import(key, entry).await
        }
        fn import_ready(
            &self,
            key: &str,
            entry: Entry,
        ) -> std::result::Result<Result<bool>, Entry> {
            self.inner.import_ready(key, entry)
        }
        async fn get_many(&self, keys: &[&str]) -> Vec<Result<Option<Entry>>> {
            self.inner.get_many(keys).await
        }
        async fn put_many(&self, items: Vec<PutItem>) -> Vec<Result<Version>> {
            self.inner.put_many(items).await
        }
        async fn delete_many(&self, keys: &[&str]) -> Vec<Result<bool>> {
            self.inner.delete_many(keys).await
        }
        async fn scan(&self, prefix: &str, cursor: Option<&Cursor>, limit: usize) -> Result<Page> {
            if self.scans.fetch_add(1, Ordering::SeqCst) >= self.pages {
                return Err(Error::Timeout {
                    op: "scan",
                    after: Duration::from_millis(1),
                });
            }
            self.inner.scan(prefix, cursor, limit).await
        }
        async fn count(&self) -> Result<u64> {
            self.inner.count().await
        }
        async fn clear(&self) -> Result<()> {
            self.inner.clear().await
        }
        async fn ping(&self) -> Result<()> {
            self.inner.ping().await
        }
        async fn stats(&self) -> Result<Stats> {
            self.inner.stats().await
        }
        async fn capacity(&self) -> Result<Capacity> {
            self.inner.capacity().await
        }
        async fn set_capacity(&self, capacity: Capacity) -> Result<()> {
            self.inner.set_capacity(capacity).await
        }
    }

    async fn filled(n: usize, pages: usize) -> FailingScans {
        let r = FailingScans {
            pages,
            ..FailingScans::default()
        };
        for i in 0..n {
            r.put(&format!("s/{i:02}"), "x").await.unwrap();
        }
        r.put("t/other", "x").await.unwrap();
        r
    }

    #[tokio::test]
    async fn the_stream_yields_every_record_once_across_pages() {
        let r = filled(23, usize::MAX).await;
        let stream = r.scanner("s/").page_size(4).into_stream();
        let items: Vec<_> = stream.collect().await;
        let keys: Vec<String> = items.into_iter().map(|i| i.unwrap().0).collect();
        let unique: BTreeSet<_> = keys.iter().cloned().collect();
        assert_eq!(keys.len(), 23, "{keys:?}");
        assert_eq!(unique.len(), 23, "a record came twice: {keys:?}");
        assert!(keys.iter().all(|k| k.starts_with("s/")));
        // 23 records in pages of 4: 6 pages, each scanned once.
        assert_eq!(r.scans.load(Ordering::SeqCst), 6);
    }

    #[tokio::test]
    async fn the_stream_ends_after_an_error() {
        let r = filled(10, 2).await;
        let items: Vec<_> = r.scanner("s/").page_size(3).into_stream().collect().await;
        assert_eq!(items.len(), 7, "two pages of 3, then the error: {items:?}");
        assert!(items[..6].iter().all(Result::is_ok));
        assert!(matches!(items[6], Err(Error::Timeout { .. })));
        assert_eq!(r.scans.load(Ordering::SeqCst), 3, "scanned after the error");
    }

    /// Polls `f` once, as an executor's first poll does.
    fn first_poll<F: Future>(f: F) -> std::task::Poll<F::Output> {
        let mut f = std::pin::pin!(f);
        f.as_mut()
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    }

    #[test]
    fn put_with_writes_on_the_first_poll_with_the_callers_options() {
        use std::task::Poll;
        let registry: std::sync::Arc<dyn Registry> = std::sync::Arc::new(MapRegistry::default());
        let Poll::Ready(Ok(v1)) = first_poll(registry.put("k", "one")) else {
            panic!("a ready backend's put waited");
        };
        let ttl = PutOptions::default().ttl(Duration::from_secs(60));
        let stale = ttl.condition(Condition::Absent);
        // The condition is the caller's: put-if-absent over a live record conflicts.
        match first_poll(registry.put_with("k", "two", stale)) {
            Poll::Ready(Err(Error::Conflict { actual, .. })) => assert_eq!(actual, Some(v1)),
            other => panic!("expected a conflict at once, got {other:?}"),
        }
        let swap = ttl.condition(Condition::Version(v1));
        let Poll::Ready(Ok(v2)) = first_poll(registry.put_with("k", "three", swap)) else {
            panic!("a ready backend's conditional put waited or failed");
        };
        assert!(v2 > v1);
        // And so is the expiry.
        let Poll::Ready(Ok(Some(entry))) = first_poll(registry.entry("k")) else {
            panic!("the write is not there");
        };
        assert_eq!((&entry.value[..], entry.version), (&b"three"[..], v2));
        assert!(entry.expires_at.is_some());
    }

    /// Polls `f` until it answers, then once more.
    async fn answer_then_poll_again<F: Future>(f: F) -> (F::Output, std::task::Poll<F::Output>) {
        let mut f = std::pin::pin!(f);
        let answer = std::future::poll_fn(|cx| f.as_mut().poll(cx)).await;
        let again = std::future::poll_fn(|cx| std::task::Poll::Ready(f.as_mut().poll(cx))).await;
        (answer, again)
    }

    #[tokio::test]
    async fn a_finished_read_or_write_polled_again_answers_instead_of_panicking() {
        use std::task::Poll;
        for waits in [false, true] {
            let r = FailingScans {
                waits,
                ..FailingScans::default()
            };
            // A write that had to wait, polled after its answer: the typed error, and
            // the record as the first poll left it.
            let (first, again) = answer_then_poll_again(r.put("k", "v1")).await;
            let v1 = first.unwrap();
            assert!(
                matches!(again, Poll::Ready(Err(Error::InvalidArgument { .. }))),
                "waits {waits}: {again:?}"
            );
            // A read polled again reads again.
            let (first, again) = answer_then_poll_again(r.entry("k")).await;
            assert_eq!(first.unwrap().map(|e| e.version), Some(v1), "waits {waits}");
            match again {
                Poll::Ready(Ok(Some(e))) => assert_eq!(e.version, v1),
                Poll::Pending if waits => {}
                other => panic!("waits {waits}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_stream_is_send() {
        fn send<T: Send>(_: &T) {}
        let r = MapRegistry::default();
        send(&r.scanner("").into_stream());
    }
}
