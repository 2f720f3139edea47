//! [`BatchKey`]: the key a batch item owns.

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::ops::Deref;

use compact_str::CompactString;

/// The key a [`PutItem`](crate::PutItem) owns: up to 24 bytes held in place, longer
/// keys on the heap. A batch of short keys allocates nothing per key; with a `String`
/// it allocated and freed one each, about a tenth of a memory put.
///
/// Reads as a `&str` (it derefs to one) and is made from any string:
///
/// ```
/// use nautilus_core::{BatchKey, PutItem};
///
/// let item = PutItem::new("user:42", "v");
/// let key: &str = &item.key;
/// assert_eq!(key, "user:42");
/// assert_eq!(BatchKey::from(String::from("user:42")), item.key);
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchKey(CompactString);

impl BatchKey {
    /// The key as text.
    #[must_use]
    #[inline]
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl Deref for BatchKey {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.0.as_str()
    }
}

impl AsRef<str> for BatchKey {
    #[inline]
    fn as_ref(&self) -> &str {
        self.0.as_str()
    }
}

impl Borrow<str> for BatchKey {
    #[inline]
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for BatchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for BatchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for BatchKey {
    #[inline]
    fn from(key: &str) -> Self {
        BatchKey(CompactString::new(key))
    }
}

impl From<&String> for BatchKey {
    #[inline]
    fn from(key: &String) -> Self {
        BatchKey(CompactString::new(key))
    }
}

impl From<String> for BatchKey {
    /// Takes the string's buffer when the key is too long to hold in place.
    #[inline]
    fn from(key: String) -> Self {
        BatchKey(CompactString::from(key))
    }
}

impl From<Box<str>> for BatchKey {
    #[inline]
    fn from(key: Box<str>) -> Self {
        BatchKey(CompactString::from(key))
    }
}

impl From<Cow<'_, str>> for BatchKey {
    #[inline]
    fn from(key: Cow<'_, str>) -> Self {
        BatchKey(CompactString::from(key))
    }
}

impl From<BatchKey> for String {
    fn from(key: BatchKey) -> Self {
        key.0.into_string()
    }
}

impl PartialEq<str> for BatchKey {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for BatchKey {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for BatchKey {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_any_length_read_back_as_given() {
        for key in [
            "",
            "a",
            "user:0000000042",
            &"k".repeat(24),
            &"long".repeat(40),
            "日本語キー🦀",
        ] {
            let k = BatchKey::from(key);
            assert_eq!(k.as_str(), key);
            assert_eq!(&*k, key);
            assert_eq!(k, key);
            assert_eq!(BatchKey::from(key.to_owned()), k);
            assert_eq!(String::from(k.clone()), key);
            assert_eq!(k.to_string(), key);
            assert_eq!(format!("{k:?}"), format!("{key:?}"));
        }
    }
}
