//! Running code we do not trust (wakers, hooks) where its panic must not
//! escape: on futures-timer's thread, or inside a guarded call.
//!
//! `catch_unwind` alone is not enough: the caught payload is a user value
//! too, and its `Drop` can panic again. The payload is dropped under a second
//! catch; a payload that panics even then is leaked rather than let through.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

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
}
