//! One monotonic epoch for the process, for everything that counts time in
//! nanoseconds: alert windows, the MPS cool-down, the shared timer's ticks.

use std::time::{Duration, Instant};

use once_cell::sync::Lazy;

static EPOCH: Lazy<Instant> = Lazy::new(Instant::now);

/// The epoch: made on first use, so it precedes every instant taken after.
pub(crate) fn epoch() -> Instant {
    *EPOCH
}

/// Nanoseconds since the epoch, saturating.
pub(crate) fn now_nanos() -> u64 {
    saturating_nanos(Instant::now().saturating_duration_since(*EPOCH))
}

/// A duration in nanoseconds, held at `u64::MAX` (584 years) past that.
#[inline]
pub(crate) fn saturating_nanos(d: Duration) -> u64 {
    // Whole seconds and the rest, in u64: cheaper than `as_nanos`'s u128.
    d.as_secs()
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(u64::from(d.subsec_nanos())))
        .unwrap_or(u64::MAX)
}
