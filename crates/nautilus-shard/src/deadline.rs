//! A bound on every call the router makes to a node. A node that never answers (a
//! hung backend, a connection its client does not see is dead) fails the call with
//! [`Error::Timeout`] after the router's call timeout, which counts toward marking
//! the node down, instead of hanging the caller and every operation behind it.
//!
//! A call whose node panics fails the same way (`Unavailable`), instead of unwinding
//! into the caller's task.
//!
//! The timer is armed only when a call does not answer at its first poll, so the
//! calls of an in-process node, which always do, cost nothing more. A runtime without
//! a timer (or no runtime) leaves calls unbounded rather than panicking: the runtime
//! is asked once per router (its panic message is printed then), see
//! [`Timers`].

use std::future::Future;
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use nautilus_core::{
    Bytes, Capacity, Cursor, DeleteOptions, DynRegistry, Entry, Error, Expiry, Page, PutItem,
    PutOptions, Registry, Result, Stats, Version,
};

type Call<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Whether the runtime the router runs on has its timer, asked once per router: one
/// built without `enable_time()` (or `enable_all()`) panics on the first `sleep` or
/// `timeout`, and tokio offers no way to ask but to try, so its panic message is
/// printed once, by the panic hook, when the answer is no.
#[derive(Debug, Default)]
pub(crate) struct Timers(AtomicU8);

// 0: not asked yet.
const YES: u8 = 1;
const NO: u8 = 2;

impl Timers {
    /// Whether a timer can be armed here; `false` outside a runtime (not remembered:
    /// the router may be used from one later).
    pub(crate) fn enabled(&self) -> bool {
        match self.0.load(Ordering::Relaxed) {
            YES => true,
            NO => false,
            _ if tokio::runtime::Handle::try_current().is_err() => false,
            _ => {
                let yes = catch_unwind(|| drop(tokio::time::sleep(Duration::ZERO))).is_ok();
                self.0.store(if yes { YES } else { NO }, Ordering::Relaxed);
                yes
            }
        }
    }

    /// Waits `after` where a timer can be armed; where none can (no time driver) it
    /// only yields.
    pub(crate) async fn pause(&self, after: Duration) {
        match self.arm(after) {
            Some(sleep) => sleep.await,
            None => tokio::task::yield_now().await,
        }
    }

    /// A timer of `after`, if one can be armed here.
    fn arm(&self, after: Duration) -> Option<Pin<Box<tokio::time::Sleep>>> {
        if !self.enabled() {
            return None;
        }
        // Asked on another runtime than the one that answered: still no panic.
        match catch_unwind(|| Box::pin(tokio::time::sleep(after))) {
            Ok(sleep) => Some(sleep),
            Err(_) => {
                self.0.store(NO, Ordering::Relaxed);
                None
            }
        }
    }
}

/// A node's registry as the router calls it: the same methods, each bounded by the
/// call timeout. What it does not bound (the synchronous methods) it reaches through
/// `Deref`.
#[derive(Debug, Clone)]
pub(crate) struct NodeRegistry {
    inner: DynRegistry,
    after: Duration,
    /// Whether the router's runtime has a timer.
    timers: Arc<Timers>,
}

impl Deref for NodeRegistry {
    type Target = dyn Registry;
    fn deref(&self) -> &Self::Target {
        &*self.inner
    }
}

/// What a call answers when its time is up or its node panicked: `Err` for one
/// answer, one `Err` per input for a batch.
pub(crate) trait Failed {
    fn failed(error: impl Fn() -> Error, inputs: usize) -> Self;
}

impl<T> Failed for Result<T> {
    fn failed(error: impl Fn() -> Error, _: usize) -> Self {
        Err(error())
    }
}

impl<T> Failed for Vec<Result<T>> {
    fn failed(error: impl Fn() -> Error, inputs: usize) -> Self {
        (0..inputs).map(|_| Err(error())).collect()
    }
}

impl NodeRegistry {
    pub(crate) fn new(inner: DynRegistry, after: Duration, timers: Arc<Timers>) -> Self {
        NodeRegistry {
            inner,
            after,
            timers,
        }
    }

    /// Another registry under the same bound.
    pub(crate) fn replaced(&self, inner: DynRegistry) -> Self {
        NodeRegistry::new(inner, self.after, Arc::clone(&self.timers))
    }

    /// The registry as given, unbounded.
    pub(crate) fn dyn_registry(&self) -> &DynRegistry {
        &self.inner
    }

    /// `call`, bounded; `inputs` is a batch's length.
    pub(crate) fn bound<'a, F>(
        &'a self,
        op: &'static str,
        inputs: usize,
        call: F,
    ) -> Deadline<'a, F>
    where
        F: Future + Unpin,
        F::Output: Failed,
    {
        Deadline {
            call,
            op,
            inputs,
            after: self.after,
            timers: &self.timers,
            sleep: None,
            armed: false,
        }
    }

    /// The node's [`Registry::get_ready`], a panic in it failing the call.
    #[inline]
    pub(crate) fn get_ready(&self, key: &str) -> Option<Result<Option<Entry>>> {
        catch_unwind(AssertUnwindSafe(|| self.inner.get_ready(key)))
            .unwrap_or_else(|_| Some(Err(panicked("get"))))
    }

    /// The node's [`Registry::get_value_ready`], a panic in it failing the call.
    #[inline]
    pub(crate) fn get_value_ready(&self, key: &str) -> Option<Result<Option<Bytes>>> {
        catch_unwind(AssertUnwindSafe(|| self.inner.get_value_ready(key)))
            .unwrap_or_else(|_| Some(Err(panicked("get"))))
    }

    /// The node's [`Registry::put_ready`], a panic in it failing the call (the write
    /// may or may not have been applied, as after a timeout).
    #[inline]
    pub(crate) fn put_ready(
        &self,
        key: &str,
        value: nautilus_core::Bytes,
        options: PutOptions,
    ) -> std::result::Result<Result<Version>, nautilus_core::Bytes> {
        catch_unwind(AssertUnwindSafe(|| {
            self.inner.put_ready(key, value, options)
        }))
        .unwrap_or_else(|_| Ok(Err(panicked("put"))))
    }

    /// The node's [`Registry::import_ready`], a panic in it failing the call (the
    /// import may or may not have been applied, as after a timeout).
    #[inline]
    pub(crate) fn import_ready(
        &self,
        key: &str,
        entry: Entry,
    ) -> std::result::Result<Result<bool>, Entry> {
        catch_unwind(AssertUnwindSafe(|| self.inner.import_ready(key, entry)))
            .unwrap_or_else(|_| Ok(Err(panicked("import"))))
    }

    pub(crate) fn get_entry<'a>(
        &'a self,
        key: &'a str,
    ) -> Deadline<'a, Call<'a, Result<Option<Entry>>>> {
        self.bound("get", 1, self.inner.get_entry(key))
    }

    pub(crate) fn put_opts<'a>(
        &'a self,
        key: &'a str,
        value: nautilus_core::Bytes,
        options: PutOptions,
    ) -> Deadline<'a, Call<'a, Result<Version>>> {
        self.bound("put", 1, self.inner.put_opts(key, value, options))
    }

    pub(crate) fn delete_opts<'a>(
        &'a self,
        key: &'a str,
        options: DeleteOptions,
    ) -> Deadline<'a, Call<'a, Result<Option<Version>>>> {
        self.bound("delete", 1, self.inner.delete_opts(key, options))
    }

    pub(crate) fn touch<'a>(
        &'a self,
        key: &'a str,
        expiry: Expiry,
    ) -> Deadline<'a, Call<'a, Result<Option<Version>>>> {
        self.bound("touch", 1, self.inner.touch(key, expiry))
    }

    /// The node's import: [`Registry::import_ready`] at the first poll, else its
    /// bounded [`Registry::import`].
    pub(crate) fn import<'a>(&'a self, key: &'a str, entry: Entry) -> Import<'a> {
        Import {
            node: self,
            key,
            state: ImportState::Start(entry),
        }
    }

    pub(crate) fn get_many<'a>(
        &'a self,
        keys: &'a [&'a str],
    ) -> Deadline<'a, Call<'a, Vec<Result<Option<Entry>>>>> {
        self.bound("get_many", keys.len(), self.inner.get_many(keys))
    }

    pub(crate) fn put_many<'a>(
        &'a self,
        items: Vec<PutItem>,
    ) -> Deadline<'a, Call<'a, Vec<Result<Version>>>> {
        let n = items.len();
        self.bound("put_many", n, self.inner.put_many(items))
    }

    pub(crate) fn delete_many<'a>(
        &'a self,
        keys: &'a [&'a str],
    ) -> Deadline<'a, Call<'a, Vec<Result<bool>>>> {
        self.bound("delete_many", keys.len(), self.inner.delete_many(keys))
    }

    pub(crate) fn scan<'a>(
        &'a self,
        prefix: &'a str,
        cursor: Option<&'a Cursor>,
        limit: usize,
    ) -> Deadline<'a, Call<'a, Result<Page>>> {
        self.bound("scan", 1, self.inner.scan(prefix, cursor, limit))
    }

    pub(crate) fn count(&self) -> Deadline<'_, Call<'_, Result<u64>>> {
        self.bound("count", 1, self.inner.count())
    }

    pub(crate) fn clear(&self) -> Deadline<'_, Call<'_, Result<()>>> {
        self.bound("clear", 1, self.inner.clear())
    }

    pub(crate) fn ping(&self) -> Deadline<'_, Call<'_, Result<()>>> {
        self.bound("ping", 1, self.inner.ping())
    }

    pub(crate) fn incarnation(&self) -> Option<u64> {
        self.inner.incarnation()
    }

    pub(crate) fn stats(&self) -> Deadline<'_, Call<'_, Result<Stats>>> {
        self.bound("stats", 1, self.inner.stats())
    }

    pub(crate) fn capacity(&self) -> Deadline<'_, Call<'_, Result<Capacity>>> {
        self.bound("capacity", 1, self.inner.capacity())
    }

    pub(crate) fn set_capacity(&self, capacity: Capacity) -> Deadline<'_, Call<'_, Result<()>>> {
        self.bound("set_capacity", 1, self.inner.set_capacity(capacity))
    }
}

/// What a call whose node panicked answers: a transient failure, which the router
/// names after the node and counts toward marking it down.
fn panicked(op: &'static str) -> Error {
    Error::Unavailable {
        node: "router".into(),
        source: format!("the node panicked during {op}").into(),
    }
}

/// An import to a node: answered at the first poll if the node can
/// ([`Registry::import_ready`]), else the bounded awaited call.
pub(crate) struct Import<'a> {
    node: &'a NodeRegistry,
    key: &'a str,
    state: ImportState<'a>,
}

enum ImportState<'a> {
    Start(Entry),
    Waiting(Deadline<'a, Call<'a, Result<bool>>>),
    Answered,
}

impl Future for Import<'_> {
    type Output = Result<bool>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<bool>> {
        let this = self.get_mut();
        if let ImportState::Waiting(call) = &mut this.state {
            let answer = std::task::ready!(Pin::new(call).poll(cx));
            // Answered: a later poll gets the error below, not the finished call
            // (whose resumption would panic and count against the node).
            this.state = ImportState::Answered;
            return Poll::Ready(answer);
        }
        match std::mem::replace(&mut this.state, ImportState::Answered) {
            ImportState::Start(entry) => match this.node.import_ready(this.key, entry) {
                Ok(answer) => Poll::Ready(answer),
                Err(entry) => {
                    let call = this.node.inner.import(this.key, entry);
                    let mut call = this.node.bound("import", 1, call);
                    let polled = Pin::new(&mut call).poll(cx);
                    if polled.is_pending() {
                        this.state = ImportState::Waiting(call);
                    }
                    polled
                }
            },
            _ => Poll::Ready(Err(Error::invalid_argument(
                "an import polled again after it answered",
            ))),
        }
    }
}

/// A call and its time limit, armed at its first `Pending`.
pub(crate) struct Deadline<'a, F> {
    call: F,
    op: &'static str,
    inputs: usize,
    after: Duration,
    timers: &'a Timers,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
}

impl<F> Future for Deadline<'_, F>
where
    F: Future + Unpin,
    F::Output: Failed,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        // A node that panics fails the call, as a node that errs would, instead of
        // unwinding into the caller's task (and counts toward marking it down).
        let polled = catch_unwind(AssertUnwindSafe(|| Pin::new(&mut this.call).poll(cx)));
        match polled {
            Ok(Poll::Ready(answer)) => return Poll::Ready(answer),
            Ok(Poll::Pending) => {}
            Err(_) => {
                let op = this.op;
                return Poll::Ready(F::Output::failed(|| panicked(op), this.inputs));
            }
        }
        if !this.armed {
            this.armed = true;
            this.sleep = this.timers.arm(this.after);
        }
        if let Some(sleep) = &mut this.sleep
            && sleep.as_mut().poll(cx).is_ready()
        {
            let (op, after) = (this.op, this.after);
            return Poll::Ready(F::Output::failed(
                || Error::Timeout { op, after },
                this.inputs,
            ));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nautilus_core::testkit::MapRegistry;

    /// Never answers a get.
    #[derive(Debug, Default)]
    struct Hangs(MapRegistry);

    #[nautilus_core::async_trait]
    impl Registry for Hangs {
        fn capabilities(&self) -> nautilus_core::Capabilities {
            self.0.capabilities().with_answers_ready(false)
        }
        fn limits(&self) -> nautilus_core::Limits {
            self.0.limits()
        }
        async fn get_entry(&self, _key: &str) -> Result<Option<Entry>> {
            std::future::pending().await
        }
        fn get_ready(&self, _key: &str) -> Option<Result<Option<Entry>>> {
            None
        }
        async fn put_opts(
            &self,
            key: &str,
            value: nautilus_core::Bytes,
            options: PutOptions,
        ) -> Result<Version> {
            self.0.put_opts(key, value, options).await
        }
        fn put_ready(
            &self,
            _key: &str,
            _value: nautilus_core::Bytes,
            _options: PutOptions,
        ) -> std::result::Result<Result<Version>, nautilus_core::Bytes> {
            panic!("a broken node panics when it writes without waiting")
        }
        async fn delete_opts(&self, key: &str, options: DeleteOptions) -> Result<Option<Version>> {
            self.0.delete_opts(key, options).await
        }
        async fn touch(&self, _key: &str, _expiry: Expiry) -> Result<Option<Version>> {
            panic!("a broken node panics when touched")
        }
        async fn import(&self, key: &str, entry: Entry) -> Result<bool> {
            self.0.import(key, entry).await
        }
        fn import_ready(
            &self,
            _key: &str,
            entry: Entry,
        ) -> std::result::Result<Result<bool>, Entry> {
            Err(entry)
        }
        async fn get_many(&self, _keys: &[&str]) -> Vec<Result<Option<Entry>>> {
            std::future::pending().await
        }
        async fn put_many(&self, items: Vec<PutItem>) -> Vec<Result<Version>> {
            self.0.put_many(items).await
        }
        async fn delete_many(&self, keys: &[&str]) -> Vec<Result<bool>> {
            self.0.delete_many(keys).await
        }
        async fn scan(&self, prefix: &str, cursor: Option<&Cursor>, limit: usize) -> Result<Page> {
            self.0.scan(prefix, cursor, limit).await
        }
        async fn count(&self) -> Result<u64> {
            self.0.count().await
        }
        async fn clear(&self) -> Result<()> {
            self.0.clear().await
        }
        async fn ping(&self) -> Result<()> {
            self.0.ping().await
        }
        async fn stats(&self) -> Result<Stats> {
            self.0.stats().await
        }
        async fn capacity(&self) -> Result<Capacity> {
            self.0.capacity().await
        }
        async fn set_capacity(&self, capacity: Capacity) -> Result<()> {
            self.0.set_capacity(capacity).await
        }
    }

    #[tokio::test]
    async fn a_call_that_never_answers_times_out_and_a_batch_fails_per_key() {
        let after = Duration::from_millis(50);
        let node = NodeRegistry::new(Arc::new(Hangs::default()), after, Arc::default());
        let started = std::time::Instant::now();
        match node.get_entry("k").await {
            Err(Error::Timeout {
                op: "get",
                after: a,
            }) => assert_eq!(a, after),
            other => panic!("{other:?}"),
        }
        let took = started.elapsed();
        assert!(took >= after && took < Duration::from_secs(5), "{took:?}");
        let answers = node.get_many(&["a", "b", "c"]).await;
        assert_eq!(answers.len(), 3);
        assert!(
            answers
                .iter()
                .all(|a| matches!(a, Err(Error::Timeout { op: "get_many", .. })))
        );
        // A call that answers is not held up, and answers as the node did.
        node.put_opts("k", "v".into(), PutOptions::default())
            .await
            .unwrap();
        assert_eq!(node.count().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_call_whose_node_panics_fails_instead_of_unwinding_into_the_caller() {
        let node = NodeRegistry::new(
            Arc::new(Hangs::default()),
            Duration::from_secs(5),
            Arc::default(),
        );
        match node.touch("k", Expiry::Never).await {
            Err(Error::Unavailable { source, .. }) => {
                assert!(
                    source.to_string().contains("panicked during touch"),
                    "{source}"
                )
            }
            other => panic!("{other:?}"),
        }
        match node.put_ready("k", "v".into(), PutOptions::default()) {
            Ok(Err(Error::Unavailable { source, .. })) => {
                assert!(
                    source.to_string().contains("panicked during put"),
                    "{source}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(node.ping().await.is_ok(), "the node is still usable");
    }

    #[tokio::test]
    async fn an_import_polled_after_its_answer_errs_without_calling_the_node_again() {
        let node = NodeRegistry::new(
            Arc::new(Hangs::default()),
            Duration::from_secs(5),
            Arc::default(),
        );
        let entry = Entry::new("v", Version::from_raw(7), None);
        let mut import = std::pin::pin!(node.import("k", entry));
        // The node answers through its awaited import (its `import_ready` declines).
        assert!(matches!(import.as_mut().await, Ok(true)));
        match futures_util::poll!(import.as_mut()) {
            Poll::Ready(Err(Error::InvalidArgument { reason })) => {
                assert!(reason.contains("polled again"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn without_a_timer_calls_are_unbounded_instead_of_panicking() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let node = NodeRegistry::new(
            Arc::new(Hangs::default()),
            Duration::from_millis(1),
            Arc::default(),
        );
        rt.block_on(async {
            node.put_opts("k", "v".into(), PutOptions::default())
                .await
                .unwrap();
            // Polled once: pending, and the missing timer is remembered, not a panic.
            let mut get = node.get_entry("k");
            assert!(futures_util::poll!(&mut get).is_pending());
            assert!(!node.timers.enabled());
            assert_eq!(node.count().await.unwrap(), 1);
        });
    }
}
