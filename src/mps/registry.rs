//! The process-wide fallback registry: counters, the breaker, settings, the
//! kill switch and fault injection, shared by every `safe_mps!`.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `OPGUARD_MPS_FAILURE_THRESHOLD` | consecutive MPS failures that disable MPS (>= 1) | `3` |
//! | `OPGUARD_MPS_COOLDOWN_SECS` | seconds MPS stays disabled before one trial call | `60` |
//! | `OPGUARD_SAFE_MPS_DISABLE` | `1`/`true`/`yes`/`on`: `safe_mps!` runs the op once and propagates errors | off |
//! | `OPGUARD_DISABLE` | the same for every opguard macro | off |
//!
//! Variables are read once, on first use; a bad value is logged at warn level
//! with its name and the default stays. Settings made in code win.
//!
//! # Atomic orderings
//! Counters are independent event counts, read for reports: `Relaxed`. The
//! injection budget is claimed with `fetch_update`, so each injected failure
//! is handed to exactly one call; nothing else is published through it:
//! `Relaxed`. The breaker documents its own orderings.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use once_cell::sync::Lazy;

use super::breaker::{Admit, Breaker, MpsState, Transition};
use crate::alert::{self, AlertKind};
use crate::clock::{now_nanos as now, saturating_nanos};
use crate::config::{self, Switch};
use crate::duration::{IntoTimeout, InvalidTimeout};
use crate::site::Site;

/// The default number of consecutive MPS failures that disable MPS.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
/// The default time MPS stays disabled before a trial call.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(60);

const ENV_THRESHOLD: &str = "OPGUARD_MPS_FAILURE_THRESHOLD";
const ENV_COOLDOWN: &str = "OPGUARD_MPS_COOLDOWN_SECS";
const ENV_SAFE_MPS_DISABLE: &str = "OPGUARD_SAFE_MPS_DISABLE";

static BREAKER: Lazy<Breaker> = Lazy::new(|| {
    let threshold = config::env_parse(ENV_THRESHOLD, "a whole number >= 1", |raw| {
        raw.parse::<u32>().ok().filter(|&n| n >= 1)
    })
    .unwrap_or(DEFAULT_FAILURE_THRESHOLD);
    let cooldown = config::env_parse(ENV_COOLDOWN, "a number of seconds >= 0", |raw| {
        raw.parse::<f64>().ok()?.into_timeout().ok()
    })
    .unwrap_or(DEFAULT_COOLDOWN);
    Breaker::new(threshold, saturating_nanos(cooldown))
});
static GUARD: Switch = Switch::new(|| config::enabled_by_env(ENV_SAFE_MPS_DISABLE));

static MPS_ERRORS: AtomicU64 = AtomicU64::new(0);
static FALLBACKS: AtomicU64 = AtomicU64::new(0);
static FAILED_FALLBACKS: AtomicU64 = AtomicU64::new(0);
static SKIPPED: AtomicU64 = AtomicU64::new(0);
static TIMES_DISABLED: AtomicU64 = AtomicU64::new(0);
static INJECTED: AtomicU32 = AtomicU32::new(0);

/// A snapshot of the fallback registry, from [`stats`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MpsStats {
    /// Whether MPS is enabled, disabled, or on trial.
    pub state: MpsState,
    /// MPS failures in a row, so far.
    pub consecutive_failures: u32,
    /// MPS attempts that failed with an MPS error (injected ones included).
    pub mps_errors: u64,
    /// CPU retries that succeeded.
    pub fallbacks: u64,
    /// CPU retries that failed as well.
    pub failed_fallbacks: u64,
    /// Calls sent straight to CPU because MPS was disabled.
    pub skipped: u64,
    /// How often MPS has been disabled.
    pub times_disabled: u64,
    /// Injected failures not yet used.
    pub injected_pending: u32,
    /// The consecutive failures that disable MPS.
    pub failure_threshold: u32,
    /// How long MPS stays disabled before a trial.
    pub cooldown: Duration,
}

/// Reads the registry.
pub fn stats() -> MpsStats {
    MpsStats {
        state: BREAKER.state(),
        consecutive_failures: BREAKER.streak(),
        mps_errors: MPS_ERRORS.load(Ordering::Relaxed),
        fallbacks: FALLBACKS.load(Ordering::Relaxed),
        failed_fallbacks: FAILED_FALLBACKS.load(Ordering::Relaxed),
        skipped: SKIPPED.load(Ordering::Relaxed),
        times_disabled: TIMES_DISABLED.load(Ordering::Relaxed),
        injected_pending: INJECTED.load(Ordering::Relaxed),
        failure_threshold: BREAKER.threshold(),
        cooldown: Duration::from_nanos(BREAKER.cooldown()),
    }
}

/// Enables MPS again and sets every counter and injection to zero (for tests).
///
/// The threshold, cool-down and kill switch keep their settings.
pub fn reset() {
    BREAKER.reset();
    for c in [
        &MPS_ERRORS,
        &FALLBACKS,
        &FAILED_FALLBACKS,
        &SKIPPED,
        &TIMES_DISABLED,
    ] {
        c.store(0, Ordering::Relaxed);
    }
    INJECTED.store(0, Ordering::Relaxed);
}

/// Sets how many consecutive MPS failures disable MPS (at least 1).
pub fn set_failure_threshold(failures: u32) {
    BREAKER.set_threshold(failures);
}

/// Sets how long MPS stays disabled before one trial call; seconds or a `Duration`.
pub fn set_cooldown(cooldown: impl IntoTimeout) -> Result<(), InvalidTimeout> {
    BREAKER.set_cooldown(saturating_nanos(cooldown.into_timeout()?));
    Ok(())
}

/// The kill switch of `safe_mps!`: with `false`, every `safe_mps!` runs its
/// operation once, on the preferred device, and propagates errors; no
/// fallback, no registry. Wins over `OPGUARD_SAFE_MPS_DISABLE`.
pub fn set_safe_mps_enabled(enabled: bool) {
    GUARD.set(enabled);
}

/// Whether `safe_mps!` guards its operations (see [`set_safe_mps_enabled`]).
pub fn safe_mps_enabled() -> bool {
    GUARD.enabled()
}

/// Makes the next `n` guarded MPS attempts fail with an MPS error, without
/// running them, so that the fallback path can be tested on machines without
/// MPS. Adds to any injections still pending.
///
/// While injections are pending, `safe_mps!` attempts MPS even where the
/// device would otherwise be CPU; each injected failure counts as an MPS
/// error, disables MPS like a real one, and is followed by the CPU retry.
pub fn inject_mps_failures(n: u32) {
    INJECTED
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
            Some(p.saturating_add(n))
        })
        .ok();
}

/// Whether injected failures are pending.
#[inline]
pub(crate) fn injection_pending() -> bool {
    INJECTED.load(Ordering::Relaxed) != 0
}

/// Claims one injected failure, if any is pending.
#[inline]
pub(crate) fn take_injected() -> bool {
    INJECTED.load(Ordering::Relaxed) != 0
        && INJECTED
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
}

/// May this call try MPS?
#[inline]
pub(crate) fn admit() -> Admit {
    BREAKER.admit(now())
}

pub(crate) fn record_skip() {
    SKIPPED.fetch_add(1, Ordering::Relaxed);
}

#[inline]
pub(crate) fn record_success(trial: bool) {
    if let Some(t) = BREAKER.on_success(trial) {
        log_transition(t);
    }
}

/// An MPS failure at `site`; logs it with the message's first line.
#[cold]
pub(crate) fn record_failure(site: &'static Site, trial: bool, message: &str) {
    MPS_ERRORS.fetch_add(1, Ordering::Relaxed);
    let first_line = message.lines().next().unwrap_or("").trim();
    log::warn!(
        target: "opguard",
        "{}MPS error at {site}: {first_line}; retrying on CPU",
        Labelled(site)
    );
    if let Some(t) = BREAKER.on_failure(trial, now()) {
        log_transition(t);
    }
}

/// The CPU retry at `site` ended; `ok` when it did not fail too.
#[cold]
pub(crate) fn record_fallback(site: &'static Site, ok: bool) {
    if ok {
        FALLBACKS.fetch_add(1, Ordering::Relaxed);
    } else {
        FAILED_FALLBACKS.fetch_add(1, Ordering::Relaxed);
        log::warn!(target: "opguard", "{}CPU retry at {site} failed too", Labelled(site));
    }
    #[cfg(feature = "metrics")]
    crate::export::fallback(site.label(), ok);
    alert::count(AlertKind::MpsFallbacks, site.label(), site);
}

pub(crate) fn abandon_trial() {
    BREAKER.abandon_trial(now());
}

fn log_transition(t: Transition) {
    let cooldown = Duration::from_nanos(BREAKER.cooldown());
    match t {
        Transition::Disabled { failures } => {
            TIMES_DISABLED.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                target: "opguard",
                "MPS disabled after {failures} consecutive MPS failures; safe_mps! runs on CPU for {cooldown:?}, then tries MPS once"
            );
        }
        Transition::TrialFailed => {
            TIMES_DISABLED.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                target: "opguard",
                "MPS trial failed; MPS stays disabled for another {cooldown:?}"
            );
        }
        Transition::Enabled => {
            log::info!(target: "opguard", "MPS trial succeeded; MPS is enabled again");
        }
    }
}

/// `'label' ` when the site has a label, else nothing.
struct Labelled(&'static Site);

impl fmt::Display for Labelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.label() {
            Some(label) => write!(f, "'{label}': "),
            None => Ok(()),
        }
    }
}
