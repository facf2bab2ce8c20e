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
    saturating_nanos(EPOCH.elapsed())
}

/// A duration in nanoseconds, held at `u64::MAX` (584 years) past that.
pub(crate) fn saturating_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
