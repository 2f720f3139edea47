//! A namespace's Redis keys: each record under `namespace:key`, the meta hash that holds
//! its record limit, the index of its live records; and batches of full keys written
//! once into one buffer.

use bytes::{Bytes, BytesMut};
use fred::types::Key;

use crate::config::ConfigError;

/// The Redis keys of one namespace.
#[derive(Debug, Clone)]
pub(crate) struct Namespace {
    /// `namespace:`; every record key of this registry starts with it.
    prefix: String,
    /// The meta hash (its record limit) and the index of live records, on a single
    /// server only: on Cluster they would sit in other slots than the records. `#`
    /// cannot clash with record keys, which all start with `namespace:`.
    meta: String,
    index: String,
    /// Whether records of layout 1 (no length, no check) are read as records: off
    /// unless [`crate::RedisConfig::read_layout_1`] asks (see [`crate::codec`]).
    layout_1: bool,
}

impl Namespace {
    /// The keys of `namespace`, which must be non-empty and free of Cluster hash tags.
    pub(crate) fn new(namespace: &str) -> Result<Self, ConfigError> {
        // No ':', so that no namespace's keys are another's: under `app`, the key
        // `x:k` is `app:x:k`, which is the key `k` of a namespace `app:x`.
        if namespace.is_empty() || namespace.contains(['{', '}', ':']) {
            return Err(ConfigError::Namespace {
                namespace: namespace.to_owned(),
            });
        }
        Ok(Namespace {
            prefix: format!("{namespace}:"),
            meta: format!("{namespace}#meta"),
            index: format!("{namespace}#index"),
            layout_1: false,
        })
    }

    /// These keys, whose records of layout 1 are read as records if `layout_1`.
    pub(crate) fn with_layout_1(mut self, layout_1: bool) -> Self {
        self.layout_1 = layout_1;
        self
    }

    /// Whether records of layout 1 are read as records.
    pub(crate) fn layout_1(&self) -> bool {
        self.layout_1
    }

    /// `namespace:`.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn meta(&self) -> &str {
        &self.meta
    }

    pub(crate) fn index(&self) -> &str {
        &self.index
    }

    /// The record key of `key`: the one place a key gets its full form.
    pub(crate) fn full(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.prefix.len() + key.len());
        full.push_str(&self.prefix);
        full.push_str(key);
        full
    }

    /// The key of the record `full` (a key under this namespace): what [`Self::full`]
    /// was given; empty for the prefix alone or a key outside it.
    pub(crate) fn name<'a>(&self, full: &'a str) -> &'a str {
        full.get(self.prefix.len()..).unwrap_or_default()
    }

    /// The KEYS of a write script for the record `full`: the record, then on a single
    /// server the meta hash and the index (where the record limit is enforced).
    pub(crate) fn script_keys(&self, full: String, cluster: bool) -> Vec<String> {
        if cluster {
            vec![full]
        } else {
            vec![full, self.meta.clone(), self.index.clone()]
        }
    }
}

/// Full keys written once into one buffer: fred takes each key as a slice of it, with
/// no allocation or copy per key.
#[derive(Debug)]
pub(crate) struct KeyBatch {
    buf: Bytes,
    /// Where each full key ends in `buf` (it starts where the one before ends).
    ends: Vec<usize>,
    /// How long the namespace's prefix is: a key's name follows it.
    prefix: usize,
}

impl KeyBatch {
    /// The full keys of `names` under `prefix`.
    pub(crate) fn new<'a>(
        prefix: &str,
        names: impl ExactSizeIterator<Item = &'a str> + Clone,
    ) -> Self {
        let bytes = names.clone().map(|n| prefix.len() + n.len()).sum();
        let mut buf = BytesMut::with_capacity(bytes);
        let mut ends = Vec::with_capacity(names.len());
        for name in names {
            buf.extend_from_slice(prefix.as_bytes());
            buf.extend_from_slice(name.as_bytes());
            ends.push(buf.len());
        }
        KeyBatch {
            buf: buf.freeze(),
            ends,
            prefix: prefix.len(),
        }
    }

    /// Keys already in their full form (a name follows the first `prefix` bytes of
    /// each), as coalesced gets and scans have them.
    pub(crate) fn of_full(prefix: usize, full: &[String]) -> Self {
        KeyBatch::new("", full.iter().map(String::as_str)).with_prefix(prefix)
    }

    fn with_prefix(mut self, prefix: usize) -> Self {
        self.prefix = prefix;
        self
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    fn span(&self, i: usize) -> (usize, usize) {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        (start, self.ends[i])
    }

    /// Key `i`, as fred takes it.
    pub(crate) fn key(&self, i: usize) -> Key {
        let (start, end) = self.span(i);
        Key::from(self.buf.slice(start..end))
    }

    pub(crate) fn keys(&self) -> Vec<Key> {
        (0..self.len()).map(|i| self.key(i)).collect()
    }

    /// Key `i` as the caller named it (without the namespace), for answers and errors.
    pub(crate) fn name(&self, i: usize) -> &str {
        let (start, end) = self.span(i);
        // Written from `&str`s; the prefix is whole characters of each.
        std::str::from_utf8(self.buf.get(start + self.prefix..end).unwrap_or_default())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_namespace_names_its_keys_and_refuses_hash_tags() {
        let ns = Namespace::new("app").unwrap();
        assert_eq!(ns.full("user:1"), "app:user:1");
        assert_eq!(
            ns.script_keys(ns.full("k"), false),
            ["app:k", "app#meta", "app#index"]
        );
        assert_eq!(ns.script_keys(ns.full("k"), true), ["app:k"]);
        for bad in ["", "a{b", "}"] {
            assert!(Namespace::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_empty_batch_is_empty() {
        let batch = KeyBatch::new("ns:", std::iter::empty());
        assert_eq!(batch.len(), 0);
        assert!(batch.keys().is_empty());
    }

    proptest! {
        #[test]
        fn batches_hold_each_full_key_and_name(
            prefix in "[a-z:]{0,6}",
            names in proptest::collection::vec(".{0,12}", 0..20),
        ) {
            let batch = KeyBatch::new(&prefix, names.iter().map(String::as_str));
            let full: Vec<String> = names.iter().map(|n| format!("{prefix}{n}")).collect();
            let again = KeyBatch::of_full(prefix.len(), &full);
            prop_assert_eq!(batch.len(), names.len());
            for (i, name) in names.iter().enumerate() {
                for b in [&batch, &again] {
                    prop_assert_eq!(b.key(i), Key::from(full[i].as_str()));
                    prop_assert_eq!(b.name(i), name.as_str());
                }
            }
        }
    }
}
