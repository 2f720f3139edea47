//! The typed layer: user structs that name their own identifier and expiry, stored
//! through a [`Codec`] in any registry.

use std::fmt;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{Bincode, Codec};
use crate::error::{Error, Result};
use crate::ext::RegistryExt;
use crate::registry::DynRegistry;
use crate::{Capacity, Condition, Cursor, Expiry, PutOptions, Version};

/// A user type stored in a registry: it names its own identifier and, optionally,
/// when it expires.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use nautilus_core::{Expiry, Record};
/// use std::time::Duration;
///
/// #[derive(Serialize, Deserialize)]
/// struct Session { id: String, user: u64 }
///
/// impl Record for Session {
///     fn id(&self) -> String { self.id.clone() }
///     fn expiry(&self) -> Expiry { Expiry::After(Duration::from_secs(3600)) }
/// }
/// ```
pub trait Record: Serialize + DeserializeOwned + Send + Sync {
    /// The record's identifier, unique within its typed registry.
    fn id(&self) -> String;

    /// When the record expires. Never, unless overridden.
    fn expiry(&self) -> Expiry {
        Expiry::Never
    }
}

/// A page of typed records from [`TypedRegistry::list`].
#[derive(Debug)]
#[non_exhaustive]
pub struct TypedPage<T> {
    /// The records, with their versions.
    pub records: Vec<(T, Version)>,
    /// Where to continue; `None` when the listing is complete.
    pub next: Option<Cursor>,
}

/// A registry of one record type over any backend.
///
/// Records are stored under `prefix + id`, so several types can share a registry.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> nautilus_core::Result<()> {
/// # use nautilus_core::testkit::MapRegistry as SomeBackend;
/// use std::sync::Arc;
/// use serde::{Deserialize, Serialize};
/// use nautilus_core::{Record, TypedRegistry};
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// struct Service { name: String, port: u16 }
/// impl Record for Service {
///     fn id(&self) -> String { self.name.clone() }
/// }
///
/// let services = TypedRegistry::<Service>::new(Arc::new(SomeBackend::default()))
///     .with_prefix("svc:");
/// services.add(&Service { name: "api".into(), port: 8080 }).await?;
/// assert_eq!(services.get("api").await?.map(|s| s.port), Some(8080));
/// assert!(services.remove("api").await?);
/// # Ok(()) }
/// ```
pub struct TypedRegistry<T, C = Bincode> {
    inner: DynRegistry,
    codec: C,
    prefix: String,
    _type: PhantomData<fn() -> T>,
}

impl<T, C: fmt::Debug> fmt::Debug for TypedRegistry<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedRegistry")
            .field("inner", &self.inner)
            .field("codec", &self.codec)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl<T: Record> TypedRegistry<T, Bincode> {
    /// A typed registry over `inner`, encoding with bincode.
    #[must_use]
    pub fn new(inner: DynRegistry) -> Self {
        TypedRegistry::with_codec(inner, Bincode)
    }
}

impl<T: Record, C: Codec<T>> TypedRegistry<T, C> {
    /// A typed registry over `inner` with another codec.
    #[must_use]
    pub fn with_codec(inner: DynRegistry, codec: C) -> Self {
        TypedRegistry {
            inner,
            codec,
            prefix: String::new(),
            _type: PhantomData,
        }
    }

    /// Stores records under `prefix + id`.
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The registry underneath.
    #[must_use]
    pub fn inner(&self) -> &DynRegistry {
        &self.inner
    }

    fn key(&self, id: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + id.len());
        key.push_str(&self.prefix);
        key.push_str(id);
        key
    }

    fn decode(&self, key: &str, bytes: &[u8]) -> Result<T> {
        self.codec
            .decode(bytes)
            .map_err(|source| Error::corrupt(key, source))
    }

    async fn write(&self, record: &T, condition: Condition) -> Result<Version> {
        let key = self.key(&record.id());
        let bytes = self
            .codec
            .encode(record)
            .map_err(|source| Error::Encode { source })?;
        let options = PutOptions::default()
            .expiry(record.expiry())
            .condition(condition);
        self.inner.put_opts(&key, bytes.into(), options).await
    }

    /// Adds or replaces a record; returns its new version.
    pub async fn add(&self, record: &T) -> Result<Version> {
        self.write(record, Condition::Always).await
    }

    /// Adds a record only if none with its id exists.
    pub async fn insert_new(&self, record: &T) -> Result<Version> {
        self.write(record, Condition::Absent).await
    }

    /// Replaces a record only if it still has version `expected`.
    pub async fn update(&self, record: &T, expected: Version) -> Result<Version> {
        self.write(record, Condition::Version(expected)).await
    }

    /// The record with this id. Bytes that do not decode are [`Error::Corrupt`].
    pub async fn get(&self, id: &str) -> Result<Option<T>> {
        Ok(self.get_versioned(id).await?.map(|(record, _)| record))
    }

    /// The record with this id and its version.
    pub async fn get_versioned(&self, id: &str) -> Result<Option<(T, Version)>> {
        let key = self.key(id);
        match self.inner.get_entry(&key).await? {
            Some(entry) => Ok(Some((self.decode(&key, &entry.value)?, entry.version))),
            None => Ok(None),
        }
    }

    /// Removes the record with this id; returns whether one was removed.
    pub async fn remove(&self, id: &str) -> Result<bool> {
        self.inner.delete(&self.key(id)).await
    }

    /// One page of this type's records (those under the prefix).
    pub async fn list(&self, cursor: Option<&Cursor>, limit: usize) -> Result<TypedPage<T>> {
        let page = self.inner.scan(&self.prefix, cursor, limit).await?;
        let mut records = Vec::with_capacity(page.records.len());
        for (key, entry) in page.records {
            records.push((self.decode(&key, &entry.value)?, entry.version));
        }
        Ok(TypedPage {
            records,
            next: page.next,
        })
    }

    /// The registry's current capacity.
    pub async fn capacity(&self) -> Result<Capacity> {
        self.inner.capacity().await
    }

    /// Changes the registry's capacity at run time.
    pub async fn set_capacity(&self, capacity: Capacity) -> Result<()> {
        self.inner.set_capacity(capacity).await
    }
}
