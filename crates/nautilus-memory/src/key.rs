//! Keys hashed with xxh3: one hash picks the shard and places the key in quick_cache's
//! table. Reads hash the borrowed key once; stored keys carry no hash and are hashed
//! again only when written, evicted, indexed or scanned.
//!
//! A stored key of up to [`INLINE`] bytes lives inside the cache's entry, not on the
//! heap: a read then compares the key on the cache line it has already loaded, instead
//! of following a pointer to another one. At a million records that miss is a third of
//! a read's time. Longer keys are shared (`Arc<str>`), so a rewrite never copies them.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use quick_cache::Equivalent;

/// The longest key stored inline (the entry's key is 24 bytes either way).
pub(crate) const INLINE: usize = 22;

/// A stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HKey {
    /// A short key, in place.
    Inline {
        /// How many of `bytes` are the key.
        len: u8,
        /// The key's bytes (UTF-8), then zeros.
        bytes: [u8; INLINE],
    },
    /// A longer key, shared.
    Shared(Arc<str>),
}

impl HKey {
    pub(crate) fn new(key: &str) -> Self {
        match u8::try_from(key.len()) {
            Ok(len) if key.len() <= INLINE => {
                let mut bytes = [0u8; INLINE];
                bytes[..key.len()].copy_from_slice(key.as_bytes());
                HKey::Inline { len, bytes }
            }
            _ => HKey::Shared(Arc::from(key)),
        }
    }

    /// The key's bytes.
    #[inline]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            HKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            HKey::Shared(key) => key.as_bytes(),
        }
    }

    /// The key's length in bytes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        match self {
            HKey::Inline { len, .. } => usize::from(*len),
            HKey::Shared(key) => key.len(),
        }
    }

    /// The key as text. An inline key was copied from a `str` whole, so it is always
    /// UTF-8; were it ever not, the lossy form keeps every caller away from a panic.
    pub(crate) fn to_text(&self) -> String {
        match self {
            HKey::Inline { .. } => match std::str::from_utf8(self.as_bytes()) {
                Ok(text) => text.to_owned(),
                Err(_) => String::from_utf8_lossy(self.as_bytes()).into_owned(),
            },
            HKey::Shared(key) => String::from(&**key),
        }
    }

    /// The key shared, as the removal listener receives it.
    pub(crate) fn to_shared(&self) -> Arc<str> {
        match self {
            HKey::Inline { .. } => Arc::from(self.to_text()),
            HKey::Shared(key) => Arc::clone(key),
        }
    }

    /// The key's hash: the same as [`hash`] of the text.
    #[inline]
    pub(crate) fn hash(&self) -> u64 {
        hash_bytes(self.as_bytes())
    }
}

impl Hash for HKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(HKey::hash(self));
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
        match key {
            HKey::Inline { len, bytes } => {
                short_eq(self.key.as_bytes(), &bytes[..usize::from(*len)])
            }
            HKey::Shared(stored) => self.key.as_bytes() == stored.as_bytes(),
        }
    }
}

/// Equality of two keys of up to 24 bytes in a few word compares (overlapping when
/// the length is not a multiple of the word), instead of a call to `memcmp`: a read
/// compares its key once, and the call was a twentieth of a read's instructions.
#[inline]
fn short_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| {
        s.get(at..at + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            .map(u64::from_ne_bytes)
    };
    let half = |s: &[u8], at: usize| {
        s.get(at..at + 4)
            .and_then(|w| <[u8; 4]>::try_from(w).ok())
            .map(u32::from_ne_bytes)
    };
    match n {
        0..=3 => a == b,
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        17..=24 => {
            word(a, 0) == word(b, 0) && word(a, 8) == word(b, 8) && word(a, n - 8) == word(b, n - 8)
        }
        _ => a == b,
    }
}

/// The one hash of a key: xxh3, fixed seed, the same in every process.
#[inline]
pub(crate) fn hash(key: &str) -> u64 {
    hash_bytes(key.as_bytes())
}

#[inline]
pub(crate) fn hash_bytes(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_stored_key_is_24_bytes() {
        assert_eq!(std::mem::size_of::<HKey>(), 24);
    }

    #[test]
    fn short_keys_are_inline_and_long_ones_shared() {
        assert!(matches!(HKey::new(""), HKey::Inline { len: 0, .. }));
        assert!(matches!(
            HKey::new(&"k".repeat(INLINE)),
            HKey::Inline { .. }
        ));
        assert!(matches!(
            HKey::new(&"k".repeat(INLINE + 1)),
            HKey::Shared(_)
        ));
    }

    #[test]
    fn short_keys_compare_equal_only_byte_for_byte_at_every_length() {
        for n in 0..=30 {
            let a: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            assert!(short_eq(&a, &a.clone()), "{n}");
            for i in 0..n {
                let mut b = a.clone();
                b[i] ^= 1;
                assert!(!short_eq(&a, &b), "length {n}, byte {i} differs");
            }
            assert!(!short_eq(&a, &a[..n.saturating_sub(1)]) || n == 0);
        }
    }

    proptest! {
        #[test]
        fn a_stored_key_keeps_its_text_hash_and_equality(key in "\\PC{0,40}", other in "\\PC{0,40}") {
            let stored = HKey::new(&key);
            prop_assert_eq!(stored.as_bytes(), key.as_bytes());
            prop_assert_eq!(stored.len(), key.len());
            prop_assert_eq!(stored.to_text(), key.as_str());
            prop_assert_eq!(&*stored.to_shared(), key.as_str());
            prop_assert_eq!(stored.hash(), hash(&key));
            prop_assert!(Lookup::new(&key).equivalent(&stored));
            prop_assert_eq!(Lookup::new(&other).equivalent(&stored), other == key);
            prop_assert_eq!(HKey::new(&other) == stored, other == key);
        }
    }
}
