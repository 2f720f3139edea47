//! How a check takes an answer the contract says the backend must give: an error (a
//! refused call, a dead server, a timeout) or a missing value fails the check with a
//! message naming what the backend did and where the check was, never an anonymous
//! `unwrap` panic.

use std::fmt::Debug;

/// An answer a check requires: [`Answered::answered`] takes the value, and fails the
/// check (panics, as every check does) naming the call's error otherwise.
pub(crate) trait Answered<T> {
    /// The value; a failed check, at the caller's line, if there is none.
    fn answered(self) -> T;
}

impl<T, E: Debug> Answered<T> for Result<T, E> {
    #[track_caller]
    fn answered(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => panic!("the backend failed a call the contract says succeeds here: {e:?}"),
        }
    }
}

impl<T> Answered<T> for Option<T> {
    #[track_caller]
    fn answered(self) -> T {
        match self {
            Some(v) => v,
            None => panic!("the backend gave no answer where the contract requires one"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_fails_the_check_naming_it() {
        let failed = std::panic::catch_unwind(|| {
            let r: Result<u8, &str> = Err("connection refused");
            r.answered()
        });
        let message = failed
            .err()
            .and_then(|p| p.downcast_ref::<String>().cloned());
        assert!(
            message.is_some_and(|m| m.contains("connection refused")),
            "the check's failure does not name the backend's error"
        );
        assert_eq!(Ok::<u8, &str>(7).answered(), 7);
        assert_eq!(Some(3).answered(), 3);
    }
}
