//! The contract every backend implements.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::limits::Limits;
use crate::{
    Capabilities, Capacity, Cursor, DeleteOptions, Entry, Expiry, Page, PutItem, PutOptions, Stats,
    Version,
};

/// A shared, type-erased registry: what applications and the shard router hold.
pub type DynRegistry = Arc<dyn Registry>;

/// The registry contract: an async store of versioned records with optional expiry.
///
/// Backend authors implement this trait; callers mostly use the conveniences of
/// [`RegistryExt`](crate::RegistryExt), implemented for every registry. Every method is
/// required, so a wrapper cannot silently drop a backend's fast path by forgetting to
/// forward one.
///
/// The semantics every implementation honours (and the [testkit](crate::testkit)
/// checks):
/// - Keys are validated with [`Registry::limits`] before storage is touched, and are
///   data: no character has a special meaning.
/// - An expired record does not exist: it is not returned, listed, counted, nor in the
///   way of a put-if-absent.
/// - Every successful write returns a version greater than the one it replaced,
///   also across delete-and-recreate.
/// - Batches return one result per input, in input order; one failing key does not
///   fail the others.
///
/// # Helpers for backend authors
///
/// Core words the answers every backend shares, so that a new backend gives the same
/// errors as the others without copying them:
/// - [`Limits::check_key`] and [`Limits::check_record`]: the key and size checks, first
///   thing in every keyed method.
/// - [`Expiry::resolve`]: a write's expiry as an absolute time, refusing zero TTLs.
/// - [`Condition::check`](crate::Condition::check): a conditional write's or delete's
///   [`Error::Conflict`].
/// - [`Page::check_limit`]: the [`Error::InvalidArgument`] of a zero page size in
///   [`Registry::scan`].
/// - [`Capacity::validate`]: the refusal of zero limits in [`Registry::set_capacity`].
/// - [`VersionClock`](crate::VersionClock): versions that keep increasing.
/// - [`batch::get_each`](crate::batch::get_each),
///   [`batch::put_each`](crate::batch::put_each) and
///   [`batch::delete_each`](crate::batch::delete_each): the batch methods as one
///   single-key call per input, in input order, for a backend that has no faster
///   batch path.
#[async_trait]
pub trait Registry: Send + Sync + fmt::Debug {
    /// What this backend supports.
    fn capabilities(&self) -> Capabilities;

    /// The key and value size limits this registry enforces.
    fn limits(&self) -> Limits;

    /// The live record under `key`, if any.
    async fn get_entry(&self, key: &str) -> Result<Option<Entry>>;

    /// The same answer as [`Registry::get_entry`] when the backend has it without
    /// waiting (an in-process store), else `None` and callers await `get_entry`.
    ///
    /// [`RegistryExt::get`](crate::RegistryExt::get) tries this first, so reads from an
    /// in-process backend through `Arc<dyn Registry>` allocate no boxed future.
    /// Remote backends return `None`.
    fn get_ready(&self, key: &str) -> Option<Result<Option<Entry>>>;

    /// [`Registry::get_ready`]'s answer without the version and expiry: what
    /// [`RegistryExt::get`](crate::RegistryExt::get) tries first. It must agree with
    /// `get_ready`, which the default maps.
    ///
    /// An in-process backend overrides it to hand back the value alone: at a million
    /// records a read waits on memory, and the processor overlaps those waits across
    /// reads only while the stores between them fit in its store buffer. Returning the
    /// value instead of the whole entry saves the memory backend's awaited `get` eight
    /// of its stores.
    fn get_value_ready(&self, key: &str) -> Option<Result<Option<Bytes>>> {
        self.get_ready(key)
            .map(|answer| answer.map(|entry| entry.map(|entry| entry.value)))
    }

    /// Writes `value` under `key` if `options.condition` holds; returns the new version.
    async fn put_opts(&self, key: &str, value: Bytes, options: PutOptions) -> Result<Version>;

    /// The same write as [`Registry::put_opts`] when the backend can make it without
    /// waiting (an in-process store): `Ok` with `put_opts`'s answer. Otherwise `Err`
    /// with `value` handed back, having done nothing, and callers await `put_opts`.
    ///
    /// [`RegistryExt::put`](crate::RegistryExt::put) and the other writes of
    /// [`RegistryExt`](crate::RegistryExt) try this first, so writes to an in-process
    /// backend through `Arc<dyn Registry>` allocate no boxed future. A backend that
    /// answers here must answer exactly as `put_opts` would (the conformance suite checks both
    /// paths), and a wrapper forwards it. Remote backends hand the value back.
    fn put_ready(
        &self,
        key: &str,
        value: Bytes,
        options: PutOptions,
    ) -> std::result::Result<Result<Version>, Bytes>;

    /// Deletes the record under `key` if `options.condition` holds. Returns the
    /// delete's version (greater than the removed record's) if a live record was
    /// removed, `None` if there was none. With [`DeleteOptions::tombstone`], the
    /// delete leaves a tombstone at that version (see [`Entry`]): until it is
    /// collected, [`Registry::import`] refuses any copy of the record at or below it,
    /// while reads, scans, [`Registry::count`] and [`Stats::records`] never see it; a
    /// later write of the key gets a version above it.
    async fn delete_opts(&self, key: &str, options: DeleteOptions) -> Result<Option<Version>>;

    /// Changes a live record's expiry without rewriting its value (`Expiry::Never`
    /// removes it). Returns the record's new version, or `None` if there is no live
    /// record. The version changes so that replicas see the new expiry as newer.
    /// As for a put, a zero TTL or an instant not in the future is refused with
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument), and the record is
    /// left as it was.
    async fn touch(&self, key: &str, expiry: Expiry) -> Result<Option<Version>>;

    /// Writes a record with its metadata as-is, only if it is newer than what is stored:
    /// a version higher than the stored record's **and** than a tombstone's the key
    /// still has. Returns whether it was applied.
    ///
    /// - A [tombstone](Entry::tombstone) removes an older live record and is kept
    ///   until its `expires_at` (or the backend's grace period); it stays invisible.
    ///   Once that time has passed it is collected and no longer refuses anything.
    /// - A record that has already expired removes an older live record and stores
    ///   nothing (the newest version of the key no longer exists); it still answers
    ///   `true`. It takes no room: [`Registry::count`], [`Stats::records`], scans and
    ///   reads are as if the key had been deleted.
    /// - A key holding what the backend did not write, which its reads answer as
    ///   [`Error::Corrupt`](crate::Error::Corrupt), holds no version: the entry
    ///   replaces it (puts, deletes and touches refuse it as corrupt and leave it).
    ///   A router heals a corrupted replica this way, from a good copy.
    /// - The key and value limits apply as to a put ([`Error::TooLarge`](crate::Error::TooLarge) past
    ///   `max_value_bytes`, and nothing is stored or removed), and so does the
    ///   capacity: a refusing backend answers a new live record past it with
    ///   [`Error::CapacityExceeded`](crate::Error::CapacityExceeded) (a newer copy of a record it holds, and a
    ///   tombstone, need no room); an evicting one evicts.
    ///
    /// Migration, replication, repair, backup and restore use it: applying the same
    /// entries in any order, any number of times, leaves the newest of each.
    async fn import(&self, key: &str, entry: Entry) -> Result<bool>;

    /// The same import as [`Registry::import`] when the backend can apply it without
    /// waiting (an in-process store): `Ok` with `import`'s answer. Otherwise `Err`
    /// with `entry` handed back, having done nothing, and callers await `import`.
    ///
    /// The router's replicated writes, migrations and repairs try this first, so
    /// copies to in-process nodes allocate no boxed future. As for
    /// [`Registry::put_ready`]: a backend that answers here must answer exactly as
    /// `import` would (the conformance suite checks both paths), and a wrapper
    /// forwards it. Remote backends hand the entry back.
    fn import_ready(&self, key: &str, entry: Entry) -> std::result::Result<Result<bool>, Entry>;

    /// Reads many keys: one result per key, in input order. Each answer is the one
    /// [`Registry::get_entry`] gives for its key: the live record whole (value,
    /// version and expiry), `None` where there is none (an expired record or a
    /// tombstone is none), [`Error::InvalidKey`](crate::Error::InvalidKey) for that key
    /// alone. Each key counts as one read in [`Registry::stats`].
    async fn get_many(&self, keys: &[&str]) -> Vec<Result<Option<Entry>>>;

    /// Writes many records: one result per item, in input order. Each item is
    /// written as [`Registry::put_opts`] would write it on its own, in input order:
    /// a key repeated in the batch ends with its later item, at a higher version
    /// than the earlier one's, and an item's condition sees the earlier items.
    async fn put_many(&self, items: Vec<PutItem>) -> Vec<Result<Version>>;

    /// Deletes many keys unconditionally: one result per key, in input order, each
    /// as [`Registry::delete_opts`] with default options would answer it: `true` if
    /// a live record was removed, `false` if there was none (an expired record or a
    /// tombstone is none), [`Error::InvalidKey`](crate::Error::InvalidKey) for that key
    /// alone. Each removal counts as one delete in [`Registry::stats`].
    async fn delete_many(&self, keys: &[&str]) -> Vec<Result<bool>>;

    /// One page of the live records whose keys start with `prefix` (an empty prefix
    /// matches every key). Start with `cursor: None`; continue with the page's `next`
    /// until it is `None`. A page holds at most `limit` records and may hold fewer;
    /// a record present for the whole scan is returned exactly once. Keys whose data
    /// is not a record of this registry are not returned but listed in
    /// [`Page::skipped`], so they never stop a scan.
    ///
    /// A cursor is valid only for the registry and the prefix whose scan returned
    /// it. A cursor the backend can tell it never wrote (foreign or damaged text) is
    /// [`Error::InvalidArgument`], never a panic nor a silent restart of the scan. A
    /// cursor of this registry's scan of another prefix is either refused the same
    /// way or continues a scan of `prefix`; either way no page ever holds a record
    /// whose key does not start with `prefix`.
    async fn scan(&self, prefix: &str, cursor: Option<&Cursor>, limit: usize) -> Result<Page>;

    /// The number of live records.
    async fn count(&self) -> Result<u64>;

    /// Removes every record of this registry (its namespace only, for shared servers),
    /// tombstones included: afterwards the registry takes any import as a fresh one
    /// would.
    async fn clear(&self) -> Result<()>;

    /// Checks that the backend is reachable and answering.
    async fn ping(&self) -> Result<()>;

    /// Which lifetime of the store behind this handle the last [`ping`](Self::ping)
    /// (or the connection) saw: an opaque value that changes when the store may have
    /// lost or rolled back records behind the client's back, such as a server
    /// process restarted (empty, or from an old snapshot) while the client
    /// reconnected without an error. `None` when the backend cannot tell, or cannot
    /// lose records that way (an in-process store). The shard router treats a change
    /// like a node coming back from down: it checks the node's answers against other
    /// replicas until a repair has covered it.
    ///
    /// Must not wait or do I/O: the router compares it at every call (with several
    /// replicas) and on every failed one, so a backend keeps the value it last saw
    /// and refreshes it on its own (Redis: on connecting, after each reconnection,
    /// at each ping, and when a conditional write finds another process). A backend
    /// that can also refuse writes decided on a process other than the one it last
    /// reported closes the window before it learns of the change (see
    /// `nautilus-redis`'s fence of conditional writes), answering such a refusal as
    /// an [`Error::Unavailable`](crate::Error::Unavailable) whose source is a
    /// [`Restarted`](crate::Restarted): the router then does not count it against
    /// the node's health, and decides the write again. A read (or scan page) answered
    /// by a process the value does not tell yet should return only once it does, so
    /// that the router, comparing after the answer, knows where it came from (the
    /// Redis backend waits for its reading after a reconnection).
    fn incarnation(&self) -> Option<u64> {
        None
    }

    /// The registry's counters, for this handle at least (a remote backend may count
    /// per client). Every backend counts, among [`Stats`]' fields: `records` (live
    /// records only: no tombstones, nothing expired), `hits` and `misses` of every read,
    /// single or batched ([`Registry::get_many`] counts each key), `inserts` (a write
    /// that created a record), `updates` (one that replaced a live record) and
    /// `deletes` (a delete that removed a live record), each operation once, exactly
    /// (an [`Registry::import`], which copies a record between nodes, is none of
    /// them; a key refused as invalid is not a read). `bytes`, `evictions` and
    /// `expirations` are counted where the backend can; zero otherwise.
    async fn stats(&self) -> Result<Stats>;

    /// The current limits.
    async fn capacity(&self) -> Result<Capacity>;

    /// Changes the limits at run time. A backend that evicts makes room at once; one
    /// that refuses keeps what it holds and refuses new records until under the limit.
    ///
    /// Each limit is enforced exactly as [`Registry::capabilities`] says: a limit the
    /// backend does not claim ([`Capabilities::max_records`],
    /// [`Capabilities::max_bytes`]) is refused here. A claimed byte limit counts keys
    /// plus values of live records; when full, an evicting backend evicts so that
    /// [`Stats::bytes`] stays within it, and a refusing one answers a write past it
    /// with [`Error::CapacityExceeded`] and stores nothing.
    async fn set_capacity(&self, capacity: Capacity) -> Result<()>;
}

/// The future a forwarded async method returns: the pointee's own boxed future, handed
/// through as it is. (An `async fn` here would box a second future around it: a
/// measured 4% of a Redis get.)
type Fwd<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

// `Arc<T>` and `Box<T>` forward every method to `T` without a future of their own.
// The signatures are those `#[async_trait]` gives the trait's methods.
macro_rules! forward_registry {
    ($($ptr:ident),*) => {$(
        #[deny(clippy::missing_trait_methods)]
        impl<T: Registry + ?Sized> Registry for $ptr<T> {
            fn capabilities(&self) -> Capabilities {
                (**self).capabilities()
            }
            fn limits(&self) -> Limits {
                (**self).limits()
            }
            fn get_entry<'l0, 'l1, 'at>(&'l0 self, key: &'l1 str) -> Fwd<'at, Result<Option<Entry>>>
            where 'l0: 'at, 'l1: 'at, Self: 'at {
                (**self).get_entry(key)
            }
            fn get_ready(&self, key: &str) -> Option<Result<Option<Entry>>> {
                (**self).get_ready(key)
            }
            fn get_value_ready(&self, key: &str) -> Option<Result<Option<Bytes>>> {
                (**self).get_value_ready(key)
            }
            fn put_opts<'l0, 'l1, 'at>(&'l0 self, key: &'l1 str, value: Bytes, options: PutOptions) -> Fwd<'at, Result<Version>>
            where 'l0: 'at, 'l1: 'at, Self: 'at {
                (**self).put_opts(key, value, options)
            }
            fn put_ready(&self, key: &str, value: Bytes, options: PutOptions) -> std::result::Result<Result<Version>, Bytes> {
                (**self).put_ready(key, value, options)
            }
            fn delete_opts<'l0, 'l1, 'at>(&'l0 self, key: &'l1 str, options: DeleteOptions) -> Fwd<'at, Result<Option<Version>>>
            where 'l0: 'at, 'l1: 'at, Self: 'at {
                (**self).delete_opts(key, options)
            }
            fn touch<'l0, 'l1, 'at>(&'l0 self, key: &'l1 str, expiry: Expiry) -> Fwd<'at, Result<Option<Version>>>
            where 'l0: 'at, 'l1: 'at, Self: 'at {
                (**self).touch(key, expiry)
            }
            fn import<'l0, 'l1, 'at>(&'l0 self, key: &'l1 str, entry: Entry) -> Fwd<'at, Result<bool>>
            where 'l0: 'at, 'l1: 'at, Self: 'at {
                (**self).import(key, entry)
            }
            fn import_ready(&self, key: &str, entry: Entry) -> std::result::Result<Result<bool>, Entry> {
                (**self).import_ready(key, entry)
            }
            fn get_many<'l0, 'l1, 'l2, 'at>(&'l0 self, keys: &'l1 [&'l2 str]) -> Fwd<'at, Vec<Result<Option<Entry>>>>
            where 'l0: 'at, 'l1: 'at, 'l2: 'at, Self: 'at {
                (**self).get_many(keys)
            }
            fn put_many<'l0, 'at>(&'l0 self, items: Vec<PutItem>) -> Fwd<'at, Vec<Result<Version>>>
            where 'l0: 'at, Self: 'at {
                (**self).put_many(items)
            }
            fn delete_many<'l0, 'l1, 'l2, 'at>(&'l0 self, keys: &'l1 [&'l2 str]) -> Fwd<'at, Vec<Result<bool>>>
            where 'l0: 'at, 'l1: 'at, 'l2: 'at, Self: 'at {
                (**self).delete_many(keys)
            }
            fn scan<'l0, 'l1, 'l2, 'at>(&'l0 self, prefix: &'l1 str, cursor: Option<&'l2 Cursor>, limit: usize) -> Fwd<'at, Result<Page>>
            where 'l0: 'at, 'l1: 'at, 'l2: 'at, Self: 'at {
                (**self).scan(prefix, cursor, limit)
            }
            fn count<'l0, 'at>(&'l0 self) -> Fwd<'at, Result<u64>>
            where 'l0: 'at, Self: 'at {
                (**self).count()
            }
            fn clear<'l0, 'at>(&'l0 self) -> Fwd<'at, Result<()>>
            where 'l0: 'at, Self: 'at {
                (**self).clear()
            }
            fn ping<'l0, 'at>(&'l0 self) -> Fwd<'at, Result<()>>
            where 'l0: 'at, Self: 'at {
                (**self).ping()
            }
            fn incarnation(&self) -> Option<u64> {
                (**self).incarnation()
            }
            fn stats<'l0, 'at>(&'l0 self) -> Fwd<'at, Result<Stats>>
            where 'l0: 'at, Self: 'at {
                (**self).stats()
            }
            fn capacity<'l0, 'at>(&'l0 self) -> Fwd<'at, Result<Capacity>>
            where 'l0: 'at, Self: 'at {
                (**self).capacity()
            }
            fn set_capacity<'l0, 'at>(&'l0 self, capacity: Capacity) -> Fwd<'at, Result<()>>
            where 'l0: 'at, Self: 'at {
                (**self).set_capacity(capacity)
            }
        }
    )*};
}

forward_registry!(Arc, Box);
