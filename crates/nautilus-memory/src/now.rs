//! The time an operation is decided at, read from the clock only if it is needed.

use std::cell::Cell;

use crate::shard::Shared;

/// The time an operation (or a batch) is decided at, in milliseconds: read from the
/// clock once, and only if something needs it (a record with an expiry met, a shard
/// with expiries due, an import of a record that expires). A put, which dates its
/// version with it, starts with it read. At about 40 ns a reading on a VM, a clock
/// read was a tenth of an in-process put, and an R=2 router's put read it twice
/// (the second replica's import, which rarely needs it).
pub(crate) struct LazyNow(Cell<Option<u64>>);

impl LazyNow {
    /// Not read yet.
    #[inline]
    pub(crate) fn unread() -> Self {
        LazyNow(Cell::new(None))
    }

    /// Already read: `ms`.
    #[inline]
    pub(crate) fn at(ms: u64) -> Self {
        LazyNow(Cell::new(Some(ms)))
    }

    /// The time, read from `shared`'s clock the first time it is asked for.
    #[inline]
    pub(crate) fn get(&self, shared: &Shared) -> u64 {
        match self.0.get() {
            Some(ms) => ms,
            None => {
                let ms = shared.now_ms();
                self.0.set(Some(ms));
                ms
            }
        }
    }
}
