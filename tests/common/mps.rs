//! The process-wide MPS registry, for the tests that drive it: one test at a
//! time, each from the defaults, reading only its own log lines.

use std::sync::{Mutex, MutexGuard};

use opguard::mps;
use opguard::testing;

static SERIAL: Mutex<()> = Mutex::new(());

/// Serialises the test, resets the registry to its defaults and forgets the
/// log lines captured so far.
pub fn fresh() -> MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    super::capture_logs();
    super::clear_logs();
    mps::set_enabled(true);
    mps::set_failure_threshold(mps::DEFAULT_FAILURE_THRESHOLD);
    mps::set_cooldown(mps::DEFAULT_COOLDOWN).unwrap();
    testing::reset_mps();
    guard
}

/// The captured log lines (`LEVEL message`) that contain `needle`.
pub fn logs_containing(needle: &str) -> Vec<String> {
    super::captured_logs()
        .into_iter()
        .filter(|l| l.contains(needle))
        .collect()
}
