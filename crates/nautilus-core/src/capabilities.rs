//! What a backend supports.

/// What a backend supports, so callers, the testkit and the router adapt instead of
/// guessing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Capabilities {
    /// Short backend name (`"memory"`, `"redis"`).
    pub backend: &'static str,
    /// A record limit is enforced.
    pub max_records: bool,
    /// A byte limit is enforced.
    pub max_bytes: bool,
    /// When full, old records are evicted (`true`) rather than new ones refused with
    /// [`Error::CapacityExceeded`](crate::Error::CapacityExceeded) (`false`).
    pub evicts: bool,
    /// Data survives the process (and is visible to other processes).
    pub persistent: bool,
    /// The synchronous methods always answer: [`Registry::get_ready`] never answers
    /// `None`, and [`Registry::put_ready`] and [`Registry::import_ready`] never hand
    /// back (an in-process store). The router makes replicated writes over such nodes
    /// without a future; a node that claims it and hands back fails that write's copy.
    ///
    /// [`Registry::get_ready`]: crate::Registry::get_ready
    /// [`Registry::put_ready`]: crate::Registry::put_ready
    /// [`Registry::import_ready`]: crate::Registry::import_ready
    pub answers_ready: bool,
}

impl Capabilities {
    /// Capabilities of a backend with this name and nothing else.
    #[must_use]
    pub fn new(backend: &'static str) -> Self {
        Capabilities {
            backend,
            ..Capabilities::default()
        }
    }

    /// Sets whether a record limit is enforced ([`Capabilities::max_records`]).
    #[must_use]
    pub fn with_max_records(mut self, max_records: bool) -> Self {
        self.max_records = max_records;
        self
    }

    /// Sets whether a byte limit is enforced ([`Capabilities::max_bytes`]).
    #[must_use]
    pub fn with_max_bytes(mut self, max_bytes: bool) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Sets whether a full registry evicts rather than refuses
    /// ([`Capabilities::evicts`]).
    #[must_use]
    pub fn with_evicts(mut self, evicts: bool) -> Self {
        self.evicts = evicts;
        self
    }

    /// Sets persistence.
    #[must_use]
    pub fn with_persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    /// Sets whether the synchronous methods always answer
    /// ([`Capabilities::answers_ready`]).
    #[must_use]
    pub fn with_answers_ready(mut self, answers_ready: bool) -> Self {
        self.answers_ready = answers_ready;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_setters_set_one_field_each() {
        let caps = Capabilities::new("x")
            .with_max_records(true)
            .with_evicts(true);
        assert!(caps.max_records && caps.evicts);
        assert!(!caps.max_bytes && !caps.persistent);
        let caps = caps.with_max_records(false).with_max_bytes(true);
        assert!(!caps.max_records && caps.max_bytes && caps.evicts);
    }
}
