//! Hooks for tests: put the process-wide state back, and make MPS fail on
//! purpose. They act on the whole process, so call them from tests (or a
//! demo), not from production code. (A clock a test controls is in
//! `test_clock`, with the `test-util` feature.)
//!
//! ```
//! use opguard::{mps, testing};
//!
//! testing::inject_mps_failures(2);
//! assert_eq!(mps::stats().injected_pending, 2);
//! testing::reset_mps();
//! assert_eq!(mps::stats().injected_pending, 0);
//! ```

/// Makes the next `n` guarded MPS attempts fail with a device-level MPS
/// error, without running them, so that the fallback path can be tested on
/// machines without MPS. Adds to any injections still pending.
///
/// While injections are pending, `safe_mps!` attempts MPS even where the
/// device would otherwise be CPU; each injected failure counts as a
/// device-level MPS error, counts toward disabling MPS like a real one, and
/// is followed by the CPU retry.
pub fn inject_mps_failures(n: u32) {
    crate::mps::registry::inject_failures(n);
}

/// Enables MPS again, unpins every `safe_mps!` call site, and sets every
/// MPS counter and pending injection to zero. The threshold, cool-down and
/// kill switch keep their settings.
pub fn reset_mps() {
    crate::mps::registry::reset();
}

/// Sets every timeout counter ([`crate::timeouts::stats`]) back to zero.
pub fn reset_timeouts() {
    crate::timeouts::reset();
}

/// Starts a fresh alert window for every kind ([`crate::alert`]).
pub fn reset_alert_windows() {
    crate::alert::reset_windows();
}
