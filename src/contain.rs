//! Running code we do not trust (wakers, hooks) where its panic must not
//! escape: on futures-timer's thread, or inside a guarded call; and where
//! it may, not before our own work that must follow it is done
//! ([`user_then`]).
//!
//! `catch_unwind` alone is not enough: the caught payload is a user value
//! too, and its `Drop` can panic again. The payload is dropped under a second
//! catch; a payload that panics even then is leaked rather than let through.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

/// Runs `f`; `None` when it panicked. Nothing `f` does unwinds past here.
pub(crate) fn contain<R>(f: impl FnOnce() -> R) -> Option<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(payload) => {
            drop_payload(payload);
            None
        }
    }
}

/// Runs `user`, user code whose panic goes on to our caller (a logger, a
/// metrics recorder), then `after`, what must follow it (counting an alert,
/// calling the alert hook), whatever `user` did: should `user` panic,
/// `after` runs all the same and the panic then goes on as it was, so that
/// a panicking logger leaves no count behind. Should both panic, `user`'s
/// goes on and `after`'s payload is dropped, contained.
pub(crate) fn user_then<R>(user: impl FnOnce(), after: impl FnOnce() -> R) -> R {
    let user = catch_unwind(AssertUnwindSafe(user));
    let after = catch_unwind(AssertUnwindSafe(after));
    match (user, after) {
        (Ok(()), Ok(out)) => out,
        (Ok(()), Err(payload)) => resume_unwind(payload),
        (Err(payload), after) => {
            if let Err(second) = after {
                drop_payload(second);
            }
            resume_unwind(payload)
        }
    }
}

/// Drops a caught panic's payload without letting its `Drop` unwind.
pub(crate) fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        // Its own payload could panic on drop too: leak it, a few bytes.
        std::mem::forget(again);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic payload whose `Drop` panics.
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("payload drop");
        }
    }

    #[test]
    fn a_payload_whose_drop_panics_does_not_escape() {
        let out = contain(|| std::panic::panic_any(Bomb));
        assert!(out.is_none());
    }

    #[test]
    fn a_value_comes_back() {
        assert_eq!(contain(|| 7), Some(7));
    }

    fn message(payload: Box<dyn Any + Send>) -> String {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn what_follows_user_code_runs_though_it_panics_and_its_panic_goes_on() {
        let mut ran = false;
        let out = catch_unwind(AssertUnwindSafe(|| {
            user_then(|| panic!("the logger"), || ran = true)
        }));
        assert!(ran, "what follows did not run");
        assert_eq!(message(out.unwrap_err()), "the logger");
        // Both panic: the first goes on.
        let out = catch_unwind(|| user_then(|| panic!("first"), || panic!("second")));
        assert_eq!(message(out.unwrap_err()), "first");
        let out = catch_unwind(|| user_then(|| {}, || panic!("second")));
        assert_eq!(message(out.unwrap_err()), "second");
        assert_eq!(user_then(|| {}, || 7), 7);
    }
}
