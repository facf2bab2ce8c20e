//! The timeouts' settings and counters: the kill switch ([`set_enabled`]),
//! the default timeout ([`set_default`]) and the counters ([`stats`]), as
//! `safe_mps!`'s are in [`crate::mps`].
//!
//! | in code | variable | default |
//! |---|---|---|
//! | [`set_default`] | `OPGUARD_TIMEOUT_SECS`: the timeout of `timeout_async!(fut)`, in seconds (fractions allowed) | `30` |
//! | [`set_enabled`] | `OPGUARD_TIMEOUT_DISABLE`: `1`/`true`/`yes`/`on`: every `timeout_async!` passes its future through | on |
//! | | `OPGUARD_DISABLE`: the same for every opguard macro | on |
//!
//! Each variable is read once, the first time it is needed. A value that does
//! not parse is logged at warn level, naming the variable and the value, and
//! the built-in default stays. A setting made in code wins over the variable.
//!
//! # Atomic orderings
//! Settings are single values that publish nothing else, and the counters
//! are independent event counts, read for reports: all `Relaxed`. A snapshot
//! is therefore not one atomic picture of all counters at once, which a
//! report does not need.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::{
    ENV_TIMEOUT_DISABLE, ENV_TIMEOUT_SECS, FromEnv, Switch, enabled_by_env, env_parse,
};
use crate::duration::{IntoTimeout, InvalidTimeout};

use crate::site::Site;

/// The built-in default of `timeout_async!(fut)`: 30 seconds.
pub const BUILTIN_DEFAULT: Duration = Duration::from_secs(30);

static SWITCH: Switch = Switch::new(|warnings| enabled_by_env(ENV_TIMEOUT_DISABLE, warnings));

/// Turns every `timeout_async!` into a pass-through (`false`) or back (`true`).
///
/// The kill switch for rollback: while off, `timeout_async!(secs, fut)` yields
/// `Ok(fut.await)` and arms no timer, whatever `secs` is. It wins over
/// `OPGUARD_TIMEOUT_DISABLE`. A future already waiting on its timer keeps it.
///
/// ```
/// use opguard::timeouts;
///
/// timeouts::set_enabled(false);
/// assert!(!timeouts::enabled());
/// timeouts::set_enabled(true);
/// ```
pub fn set_enabled(enabled: bool) {
    SWITCH.set(enabled);
}

/// Whether `timeout_async!` enforces timeouts (see [`set_enabled`]).
#[inline]
pub fn enabled() -> bool {
    SWITCH.enabled()
}

/// Nanoseconds of the default set in code; `NOT_SET` when none was.
static CODE_DEFAULT: AtomicU64 = AtomicU64::new(NOT_SET);
const NOT_SET: u64 = u64::MAX;

static ENV_DEFAULT: FromEnv<Duration> = FromEnv::new(|warnings| {
    env_parse(
        ENV_TIMEOUT_SECS,
        "a number of seconds >= 0",
        |raw| raw.parse::<f64>().ok()?.into_timeout().ok(),
        warnings,
    )
    .unwrap_or(BUILTIN_DEFAULT)
});

/// Sets the timeout of `timeout_async!(fut)`, the form without one.
///
/// Takes what the macro takes: seconds or a `Duration`. It wins over
/// `OPGUARD_TIMEOUT_SECS`. Values past about 584 years are held as 584 years.
///
/// ```
/// # fn main() -> Result<(), opguard::InvalidTimeout> {
/// use opguard::timeouts;
///
/// timeouts::set_default(45)?;
/// assert_eq!(timeouts::default(), std::time::Duration::from_secs(45));
/// assert!(timeouts::set_default(-1).is_err());
/// # Ok(()) }
/// ```
pub fn set_default(timeout: impl IntoTimeout) -> Result<(), InvalidTimeout> {
    let timeout = timeout.into_timeout()?;
    let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(NOT_SET - 1);
    CODE_DEFAULT.store(nanos.min(NOT_SET - 1), Ordering::Relaxed);
    Ok(())
}

/// The timeout of `timeout_async!(fut)`: set in code, else `OPGUARD_TIMEOUT_SECS`, else 30 s.
pub fn default() -> Duration {
    match CODE_DEFAULT.load(Ordering::Relaxed) {
        NOT_SET => *ENV_DEFAULT.get(),
        nanos => Duration::from_nanos(nanos),
    }
}

static INVALID: AtomicU64 = AtomicU64::new(0);

/// A snapshot of the timeout counters, from [`stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TimeoutStats {
    /// Timeouts that fired, everywhere: the sum of `sites`' counts.
    pub timeouts: u64,
    /// `timeout_async!` calls given an invalid timeout.
    pub invalid: u64,
    /// Timeouts per call site, for the sites that have fired since the last reset.
    pub sites: Vec<TimeoutSiteStats>,
}

/// The timeouts of one `timeout_async!` call site.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TimeoutSiteStats {
    /// The `label = "..."` of the call, if any.
    pub label: Option<&'static str>,
    /// The file of the call.
    pub file: &'static str,
    /// The line of the call.
    pub line: u32,
    /// The column of the call.
    pub column: u32,
    /// Timeouts that fired at this site.
    pub timeouts: u64,
}

impl TimeoutStats {
    /// Timeouts that fired at call sites with this label.
    ///
    /// ```
    /// assert_eq!(opguard::timeouts::stats().timeouts_labelled("never_used"), 0);
    /// ```
    pub fn timeouts_labelled(&self, label: &str) -> u64 {
        self.sites
            .iter()
            .filter(|s| s.label == Some(label))
            .map(|s| s.timeouts)
            .sum()
    }
}

/// Reads the timeout counters.
pub fn stats() -> TimeoutStats {
    let sites: Vec<TimeoutSiteStats> = Site::all()
        .filter(|site| site.count() > 0)
        .map(|site| TimeoutSiteStats {
            label: site.label(),
            file: site.file(),
            line: site.line(),
            column: site.column(),
            timeouts: site.count(),
        })
        .collect();
    TimeoutStats {
        // The sites' sum: a fired timeout is counted once, at its site, so
        // that a burst of timeouts firing on many threads shares one
        // counter's cache line per site, not a process-wide one too.
        timeouts: sites.iter().map(|s| s.timeouts).sum(),
        invalid: INVALID.load(Ordering::Relaxed),
        sites,
    }
}

/// Sets every timeout counter back to zero ([`crate::testing::reset_timeouts`]).
pub(crate) fn reset() {
    INVALID.store(0, Ordering::Relaxed);
    Site::all().for_each(Site::reset);
}

pub(crate) fn count_timeout(site: &'static Site) {
    site.record();
}

pub(crate) fn count_invalid() {
    INVALID.fetch_add(1, Ordering::Relaxed);
}
