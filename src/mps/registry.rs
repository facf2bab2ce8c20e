//! The process-wide fallback registry: settings, the breaker, the call sites,
//! the kill switch and fault injection, shared by every `safe_mps!`. It
//! decides; what each event logs, counts, exports and alerts is
//! [`crate::report::mps`]'s. Its settings and their variables are listed in
//! [`crate::mps`].
//!
//! # Atomic orderings
//! Counters are independent event counts, read for reports: `Relaxed`. The
//! injection budget is claimed with `fetch_update`, so each injected failure
//! is handed to exactly one call; nothing else is published through it:
//! `Relaxed`. The settings are single values: `Relaxed`. The breakers
//! document their own orderings.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::breaker::{Breaker, MpsState};
use super::classify::MpsErrorKind;
use super::gate::{self, Admission};
use super::site::{MpsSite, MpsSiteStats};
use crate::clock::{now_nanos as now, saturating_nanos};
use crate::config::{self, FromEnv, Switch};
use crate::contain::user_then;
use crate::duration::{IntoTimeout, InvalidTimeout};
use crate::report;

/// The default number of consecutive device-level MPS failures that disable MPS.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
/// The default time MPS stays disabled, or a call site pinned to CPU, before a trial call.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(60);

const ENV_THRESHOLD: &str = "OPGUARD_MPS_FAILURE_THRESHOLD";
const ENV_COOLDOWN: &str = "OPGUARD_MPS_COOLDOWN_SECS";
const ENV_SAFE_MPS_DISABLE: &str = "OPGUARD_SAFE_MPS_DISABLE";

/// The text that stands for an injected failure in logs.
pub(crate) const INJECTED_MESSAGE: &str = "injected MPS failure (opguard fault injection)";

struct Settings {
    threshold: AtomicU32,
    cooldown: AtomicU64,
}

static SETTINGS: FromEnv<Settings> = FromEnv::new(|warnings| {
    let threshold = config::env_parse(
        ENV_THRESHOLD,
        "a whole number >= 1",
        |raw| raw.parse::<u32>().ok().filter(|&n| n >= 1),
        warnings,
    )
    .unwrap_or(DEFAULT_FAILURE_THRESHOLD);
    let cooldown = config::env_parse(
        ENV_COOLDOWN,
        "a number of seconds >= 0",
        |raw| raw.parse::<f64>().ok()?.into_timeout().ok(),
        warnings,
    )
    .unwrap_or(DEFAULT_COOLDOWN);
    Settings {
        threshold: AtomicU32::new(threshold),
        cooldown: AtomicU64::new(saturating_nanos(cooldown)),
    }
});
/// The process's breaker: a plain `static` (one load to read), where loom's
/// atomics, which cannot be made in a const context, need a `Lazy`.
#[cfg(not(opguard_loom))]
static BREAKER: Breaker = Breaker::new();
#[cfg(opguard_loom)]
static BREAKER: once_cell::sync::Lazy<Breaker> = once_cell::sync::Lazy::new(Breaker::new);
static GUARD: Switch =
    Switch::new(|warnings| config::enabled_by_env(ENV_SAFE_MPS_DISABLE, warnings));

static TIMES_DISABLED: AtomicU64 = AtomicU64::new(0);
static INJECTED: AtomicU32 = AtomicU32::new(0);

/// A snapshot of the fallback registry, from [`stats`].
///
/// The totals add up the call sites' counters ([`sites`](Self::sites)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MpsStats {
    /// Whether MPS is enabled, disabled, or on trial, for the whole process.
    pub state: MpsState,
    /// Device-level MPS failures in a row, so far.
    pub consecutive_failures: u32,
    /// Calls that tried MPS (injected failures included).
    pub mps_attempts: u64,
    /// MPS attempts that failed with an MPS error of either kind.
    pub mps_errors: u64,
    /// MPS attempts that failed with an op-level MPS error.
    pub op_errors: u64,
    /// MPS attempts that failed with a device-level MPS error (injected ones included).
    pub device_errors: u64,
    /// CPU retries that succeeded.
    pub fallbacks: u64,
    /// CPU retries that failed as well.
    pub failed_fallbacks: u64,
    /// CPU retries abandoned before they ended: their future dropped (by a
    /// timeout around the work, say), or a panic while the named values
    /// moved to CPU.
    pub abandoned_fallbacks: u64,
    /// Calls sent straight to CPU because their call site was pinned or MPS was disabled.
    pub skipped: u64,
    /// How often MPS has been disabled for the whole process.
    pub times_disabled: u64,
    /// Call sites that op-level MPS errors keep on CPU now.
    pub pinned_sites: usize,
    /// Injected failures not yet used.
    pub injected_pending: u32,
    /// The consecutive device-level failures that disable MPS.
    pub failure_threshold: u32,
    /// How long MPS stays disabled, or a site pinned, before a trial.
    pub cooldown: Duration,
    /// Every `safe_mps!` call site that has run since the process started,
    /// newest first.
    pub sites: Vec<MpsSiteStats>,
}

impl MpsStats {
    /// The first call site with this label, if any.
    ///
    /// ```
    /// assert!(opguard::mps::stats().site("never_used").is_none());
    /// ```
    pub fn site(&self, label: &str) -> Option<&MpsSiteStats> {
        self.sites.iter().find(|s| s.label == Some(label))
    }
}

/// Reads the registry.
///
/// Each thread counts its calls' MPS attempts and skips in memory of its
/// own, which this sums, so threads calling one call site do not slow each
/// other down. What another thread counted shows here once this thread has
/// synchronized with it (joined it, say); what this thread counted, at once.
pub fn stats() -> MpsStats {
    let sites: Vec<MpsSiteStats> = MpsSite::all().map(MpsSite::stats).collect();
    let sum = |f: fn(&MpsSiteStats) -> u64| sites.iter().map(f).sum::<u64>();
    let settings = SETTINGS.get();
    MpsStats {
        state: BREAKER.state(),
        consecutive_failures: BREAKER.streak(),
        mps_attempts: sum(|s| s.mps_attempts),
        mps_errors: sum(MpsSiteStats::mps_errors),
        op_errors: sum(|s| s.op_errors),
        device_errors: sum(|s| s.device_errors),
        fallbacks: sum(|s| s.fallbacks),
        failed_fallbacks: sum(|s| s.failed_fallbacks),
        abandoned_fallbacks: sum(|s| s.abandoned_fallbacks),
        skipped: sum(|s| s.skipped),
        times_disabled: TIMES_DISABLED.load(Ordering::Relaxed),
        pinned_sites: sites.iter().filter(|s| s.pinned).count(),
        injected_pending: INJECTED.load(Ordering::Relaxed),
        failure_threshold: settings.threshold.load(Ordering::Relaxed),
        cooldown: Duration::from_nanos(settings.cooldown.load(Ordering::Relaxed)),
        sites,
    }
}

/// Enables MPS again, unpins every call site, and sets every counter and
/// injection to zero ([`crate::testing::reset_mps`]).
pub(crate) fn reset() {
    BREAKER.reset();
    MpsSite::all().for_each(MpsSite::reset);
    TIMES_DISABLED.store(0, Ordering::Relaxed);
    INJECTED.store(0, Ordering::Relaxed);
}

/// Sets how many consecutive device-level MPS failures disable MPS (at least
/// 1: a 0 is taken as 1, with a warning).
pub fn set_failure_threshold(failures: u32) {
    SETTINGS
        .get()
        .threshold
        .store(failures.max(1), Ordering::Relaxed);
    // Logged once stored: a logger may read the settings.
    if failures == 0 {
        log::warn!(
            target: "opguard",
            "mps::set_failure_threshold(0): MPS is disabled after at least 1 failure; using 1"
        );
    }
}

/// Sets how long MPS stays disabled, or a call site pinned to CPU, before one
/// trial call; seconds or a `Duration`.
pub fn set_cooldown(cooldown: impl IntoTimeout) -> Result<(), InvalidTimeout> {
    let nanos = saturating_nanos(cooldown.into_timeout()?);
    SETTINGS.get().cooldown.store(nanos, Ordering::Relaxed);
    Ok(())
}

/// The kill switch of `safe_mps!`: with `false`, every `safe_mps!` runs its
/// operation once, on the preferred device, and propagates errors; no
/// fallback, no registry. Wins over `OPGUARD_SAFE_MPS_DISABLE`.
pub fn set_enabled(enabled: bool) {
    GUARD.set(enabled);
}

/// Whether `safe_mps!` guards its operations (see [`set_enabled`]).
#[inline]
pub fn enabled() -> bool {
    GUARD.enabled()
}

/// Counts a time MPS was disabled (or stayed so after a failed trial), for
/// [`MpsStats::times_disabled`].
pub(crate) fn count_disabled() {
    TIMES_DISABLED.fetch_add(1, Ordering::Relaxed);
}

/// See [`crate::testing::inject_mps_failures`].
pub(crate) fn inject_failures(n: u32) {
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

/// The cool-down, in nanoseconds.
#[inline]
fn cooldown() -> u64 {
    SETTINGS.get().cooldown.load(Ordering::Relaxed)
}

/// The common case of [`admit`] (the guard being on), decided with loads
/// alone: no injected failure pending, the site listed, and neither it nor
/// the process disabled. `true`: admitted with no trial
/// ([`Admission::PLAIN`]), and the attempt counted; `false`: ask [`admit`].
#[inline(always)]
pub(crate) fn admit_calm(site: &'static MpsSite) -> bool {
    let calm = !injection_pending() && site.listed() && site.pin.closed() && BREAKER.closed();
    if calm {
        // With no trial taken there is nothing to give back should the
        // metrics recorder panic (see `admit`).
        report::mps::attempt(site);
    }
    calm
}

/// May a call at `site` that would run on MPS try it? `None`: straight to
/// CPU, counted as skipped.
#[inline]
pub(crate) fn admit(site: &'static MpsSite) -> Option<Admission> {
    site.list();
    let admission = gate::admit(&BREAKER, &site.pin, cooldown, now);
    match admission {
        Some(admission) => {
            // The attempt is exported to the metrics recorder, user code:
            // should it panic, the call never runs, and a trial it was
            // admitted as goes back for the next call (it would stay taken,
            // and MPS off, for good).
            let unreported = GiveBack { site, admission };
            report::mps::attempt(site);
            std::mem::forget(unreported);
        }
        None => report::mps::skipped(site),
    }
    admission
}

/// Hands an admission's trials back when dropped (see [`admit`]).
struct GiveBack {
    site: &'static MpsSite,
    admission: Admission,
}

impl Drop for GiveBack {
    #[cold]
    fn drop(&mut self) {
        gate::give_back(&BREAKER, &self.site.pin, self.admission);
    }
}

/// The admitted attempt at `site` did not fail with an MPS error.
#[inline]
pub(crate) fn worked(site: &'static MpsSite, admission: Admission) {
    let t = gate::worked(&BREAKER, &site.pin, admission);
    if t.site.is_some() || t.global.is_some() {
        transitions(site, t);
    }
}

/// The admitted attempt at `site` failed with an MPS error of `kind`.
#[cold]
pub(crate) fn failed(
    site: &'static MpsSite,
    admission: Admission,
    kind: MpsErrorKind,
    message: &str,
) {
    let t = gate::failed(&BREAKER, &site.pin, admission, kind, now, threshold());
    // The transitions are counted even if the logger panics on the error's
    // line (its panic goes on then).
    user_then(
        || report::mps::mps_error(site, kind, message, t.site, cooldown_duration()),
        || transitions(site, t),
    );
}

/// The CPU retry at `site` ended; `ok` when it did not fail too.
#[cold]
pub(crate) fn fell_back(site: &'static MpsSite, ok: bool) {
    report::mps::fallback(site, ok);
}

/// The CPU retry was abandoned before it ended.
#[cold]
pub(crate) fn fallback_abandoned(site: &'static MpsSite) {
    report::mps::fallback_abandoned(site);
}

/// The admitted attempt was dropped before its outcome was known.
#[cold]
pub(crate) fn abandoned(site: &'static MpsSite, admission: Admission) {
    gate::abandon(&BREAKER, &site.pin, admission, now());
}

#[inline]
fn threshold() -> u32 {
    SETTINGS.get().threshold.load(Ordering::Relaxed)
}

fn cooldown_duration() -> Duration {
    Duration::from_nanos(cooldown())
}

#[cold]
fn transitions(site: &'static MpsSite, t: gate::Transitions) {
    // The process's transition is counted even if the logger panics on the
    // site's line.
    user_then(
        || {
            if let Some(t) = t.site {
                report::mps::site_transition(site, t);
            }
        },
        || {
            if let Some(t) = t.global {
                report::mps::process_transition(t, cooldown_duration());
            }
        },
    );
}
