//! Keys hashed with xxh3: one hash picks the shard and places the key in quick_cache's
//! table. Reads hash the borrowed key once; stored keys carry no hash (8 bytes less per
//! record, which is what reads pay for at a million records) and are hashed again only
//! when written, evicted or indexed.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use quick_cache::Equivalent;

/// A stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HKey {
    pub(crate) key: Arc<str>,
}

impl HKey {
    pub(crate) fn new(key: &str) -> Self {
        HKey {
            key: Arc::from(key),
        }
    }
}

impl Hash for HKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(hash(&self.key));
    }
}

/// A borrowed lookup key: no allocation on reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lookup<'a> {
    pub(crate) hash: u64,
    pub(crate) key: &'a str,
}

impl<'a> Lookup<'a> {
    #[inline]
    pub(crate) fn new(key: &'a str) -> Self {
        Lookup {
            hash: hash(key),
            key,
        }
    }
}

impl Hash for Lookup<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl Equivalent<HKey> for Lookup<'_> {
    #[inline]
    fn equivalent(&self, key: &HKey) -> bool {
        self.key == &*key.key
    }
}

/// The one hash of a key: xxh3, fixed seed, the same in every process.
#[inline]
pub(crate) fn hash(key: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key.as_bytes())
}

/// Passes the precomputed hash through, so quick_cache does not hash the key again.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PassThrough;

impl BuildHasher for PassThrough {
    type Hasher = PassThroughHasher;
    fn build_hasher(&self) -> PassThroughHasher {
        PassThroughHasher(0)
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not reached by our key types; hash properly rather than degrade if it ever is.
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }
}
