//! Alerts when timeouts (or MPS fallbacks) come too often.
//!
//! Each kind of event is counted in fixed windows (60 s by default). When the
//! count in one window exceeds the threshold (10 by default), one alert fires
//! for that window: a log line at error level, then the hook set with
//! [`set_hook`], if any.
//!
//! ```
//! use opguard::alert::{self, AlertKind, AlertPolicy};
//! use std::time::Duration;
//!
//! alert::set_policy(AlertKind::Timeouts, AlertPolicy::new(100, Duration::from_secs(10)));
//! alert::set_hook(|a| eprintln!("page the on-call: {a}"));
//! ```
//!
//! # Atomic orderings
//! A window's state is one `AtomicU64` (window number in the high half, count
//! in the low half) advanced by `compare_exchange`, so exactly one event is the
//! one that crosses the threshold, and it alone fires; later events of that
//! window only read it. The policy atomics are
//! plain settings, read `Relaxed`: an event racing a policy change may be
//! judged by either policy. Nothing else is published through these atomics.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::contain::{contain, user_then};

/// What an alert is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AlertKind {
    /// `timeout_async!` deadlines that fired.
    Timeouts,
    /// `safe_mps!` operations that fell back from MPS to CPU.
    MpsFallbacks,
}

impl AlertKind {
    const ALL: usize = 2;

    fn index(self) -> usize {
        match self {
            AlertKind::Timeouts => 0,
            AlertKind::MpsFallbacks => 1,
        }
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AlertKind::Timeouts => "timeouts",
            AlertKind::MpsFallbacks => "MPS fallbacks",
        })
    }
}

/// When to alert: more than `threshold` events within one `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlertPolicy {
    threshold: u32,
    window: Duration,
}

impl AlertPolicy {
    /// Alert on the event that makes more than `threshold` in one `window`.
    ///
    /// A zero window counts as one nanosecond. A threshold of `u32::MAX`
    /// never alerts (and counts nothing).
    pub const fn new(threshold: u32, window: Duration) -> Self {
        AlertPolicy { threshold, window }
    }

    /// The default: more than 10 events within 60 seconds.
    pub const DEFAULT: AlertPolicy = AlertPolicy::new(10, Duration::from_secs(60));

    /// The number of events a window may hold without an alert.
    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    /// The length of a counting window.
    pub fn window(&self) -> Duration {
        self.window
    }
}

impl Default for AlertPolicy {
    fn default() -> Self {
        AlertPolicy::DEFAULT
    }
}

/// An alert, as passed to the hook.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Alert {
    /// What was counted.
    pub kind: AlertKind,
    /// Events in the current window when the alert fired (threshold + 1).
    pub count: u32,
    /// The policy in force.
    pub policy: AlertPolicy,
    /// The label of the call that crossed the threshold, if it had one.
    pub label: Option<&'static str>,
    /// Where that call is, `file:line:column`.
    pub site: String,
}

impl fmt::Display for Alert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} within {:?} (threshold {}); the last was ",
            self.count, self.kind, self.policy.window, self.policy.threshold
        )?;
        if let Some(label) = self.label {
            write!(f, "'{label}' ")?;
        }
        write!(f, "at {}", self.site)
    }
}

type Hook = Arc<dyn Fn(&Alert) + Send + Sync + 'static>;

struct Counter {
    threshold: AtomicU32,
    window_nanos: AtomicU64,
    /// Window number (high 32 bits) and events in it (low 32 bits).
    state: AtomicU64,
}

impl Counter {
    const fn new(policy: AlertPolicy) -> Self {
        Counter {
            threshold: AtomicU32::new(policy.threshold),
            window_nanos: AtomicU64::new(window_nanos(policy.window)),
            state: AtomicU64::new(0),
        }
    }
}

const fn window_nanos(window: Duration) -> u64 {
    let nanos = window.as_nanos();
    if nanos == 0 {
        1
    } else if nanos > u64::MAX as u128 {
        u64::MAX
    } else {
        nanos as u64
    }
}

static COUNTERS: [Counter; AlertKind::ALL] = [
    Counter::new(AlertPolicy::DEFAULT),
    Counter::new(AlertPolicy::DEFAULT),
];
static HOOK: RwLock<Option<Hook>> = RwLock::new(None);

/// Sets when alerts of `kind` fire. It also starts a fresh window.
pub fn set_policy(kind: AlertKind, policy: AlertPolicy) {
    let c = &COUNTERS[kind.index()];
    c.threshold.store(policy.threshold, Ordering::Relaxed);
    c.window_nanos
        .store(window_nanos(policy.window), Ordering::Relaxed);
    c.state.store(0, Ordering::Relaxed);
}

/// The policy in force for `kind`.
pub fn policy(kind: AlertKind) -> AlertPolicy {
    let c = &COUNTERS[kind.index()];
    AlertPolicy::new(
        c.threshold.load(Ordering::Relaxed),
        Duration::from_nanos(c.window_nanos.load(Ordering::Relaxed)),
    )
}

/// Calls `hook` for every alert, after the error log line, replacing any
/// earlier hook. A hook that panics is logged and does not reach the guarded
/// code. Alerts raised on the same thread while the hook runs (by guarded
/// calls inside it) are logged but do not call it again. The hook may set or
/// clear the hook, and so may the `Drop` of what it holds: a replaced hook is
/// dropped with no lock held (and, if its last call is still running, at the
/// end of that call, where a panic in its `Drop` is contained too).
pub fn set_hook<F>(hook: F)
where
    F: Fn(&Alert) + Send + Sync + 'static,
{
    replace_hook(Some(Arc::new(hook)));
}

/// Removes the alert hook; alerts are then only logged.
pub fn clear_hook() {
    replace_hook(None);
}

/// Puts `new` in place of the hook. The old one is dropped once the lock is
/// released: what it holds is user code, whose `Drop` may set or clear the
/// hook itself.
fn replace_hook(new: Option<Hook>) {
    let old = std::mem::replace(
        &mut *HOOK
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
        new,
    );
    drop(old);
}

/// Starts a fresh window for every kind ([`crate::testing::reset_alert_windows`]).
pub(crate) fn reset_windows() {
    COUNTERS
        .iter()
        .for_each(|c| c.state.store(0, Ordering::Relaxed));
}

/// Counts one event of `kind`, now; fires the alert if it crosses the threshold.
#[cold]
pub(crate) fn count(kind: AlertKind, label: Option<&'static str>, site: &dyn fmt::Display) {
    count_at(kind, label, site, crate::clock::now_nanos());
}

/// Counts one event of `kind` that happened at `now` ([`crate::clock::now_nanos`]):
/// for callers that know the time already and can spare a clock read.
#[cold]
pub(crate) fn count_at(
    kind: AlertKind,
    label: Option<&'static str>,
    site: &dyn fmt::Display,
    now: u64,
) {
    let c = &COUNTERS[kind.index()];
    let threshold = c.threshold.load(Ordering::Relaxed);
    if threshold == u32::MAX {
        // Never alerts (and a new policy starts a fresh window).
        return;
    }
    let window = c.window_nanos.load(Ordering::Relaxed);
    // Truncated to 32 bits: only equality with the stored window matters.
    let epoch = (now / window) as u32 as u64;
    let mut old = c.state.load(Ordering::Relaxed);
    if old >> 32 == epoch && old as u32 > threshold {
        // This window's alert has fired: counting on changes nothing, so
        // events past it (a burst of timeouts) only read the shared state.
        return;
    }
    let count = loop {
        let count = if old >> 32 == epoch {
            (old as u32).saturating_add(1)
        } else {
            1
        };
        let new = (epoch << 32) | u64::from(count);
        match c
            .state
            .compare_exchange_weak(old, new, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => break count,
            Err(now) => old = now,
        }
    };
    if count == threshold + 1 {
        fire(Alert {
            kind,
            count,
            policy: AlertPolicy::new(threshold, Duration::from_nanos(window)),
            label,
            site: site.to_string(),
        });
    }
}

thread_local! {
    /// Whether this thread is running the alert hook.
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// Clears [`IN_HOOK`] when the hook returns or unwinds.
struct InHook;

impl Drop for InHook {
    fn drop(&mut self) {
        let _ = IN_HOOK.try_with(|h| h.set(false));
    }
}

fn fire(alert: Alert) {
    // The hook is called even if the logger panics on the alert's line
    // (that panic goes on once the hook has run): the alert is fired once
    // per window, and would be lost.
    user_then(
        || log::error!(target: "opguard", "alert: {alert}"),
        || call_hook(&alert),
    );
}

fn call_hook(alert: &Alert) {
    // An alert raised by the hook's own work (a guarded call that times out
    // inside the hook, say) is logged, but does not call the hook again:
    // that could recurse without end.
    if IN_HOOK.try_with(|h| h.replace(true)).unwrap_or(true) {
        return;
    }
    let _in_hook = InHook;
    let hook = HOOK
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    let Some(hook) = hook else { return };
    let called = contain(|| hook(alert)).is_some();
    // Dropped contained too, apart from the call (a panic in both must not
    // abort): if it was replaced meanwhile (a hook that clears itself, say),
    // this is its last handle, and what it holds may panic when dropped.
    // Before anything is logged: should the logger panic, the handle must
    // not be dropped while that panic unwinds (a second one would abort).
    let dropped = contain(move || drop(hook)).is_some();
    if !called {
        log::error!(target: "opguard", "the alert hook panicked on: {alert}");
    }
    if !dropped {
        log::error!(target: "opguard", "the alert hook panicked when dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    // The hook and policies are global: these tests take turns.
    static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn fires_once_when_count_exceeds_threshold_within_window() {
        let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        static SEEN: AtomicUsize = AtomicUsize::new(0);
        // The count the alert carried (asserted outside the hook, whose
        // panics are contained).
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        set_policy(
            AlertKind::MpsFallbacks,
            AlertPolicy::new(3, Duration::from_secs(3600)),
        );
        set_hook(|a| {
            if a.kind == AlertKind::MpsFallbacks {
                COUNT.store(a.count as usize, Ordering::SeqCst);
                SEEN.fetch_add(1, Ordering::SeqCst);
            }
        });
        for _ in 0..3 {
            count(AlertKind::MpsFallbacks, Some("op"), &"here");
        }
        assert_eq!(SEEN.load(Ordering::SeqCst), 0);
        for _ in 0..5 {
            count(AlertKind::MpsFallbacks, Some("op"), &"here");
        }
        assert_eq!(SEEN.load(Ordering::SeqCst), 1);
        assert_eq!(COUNT.load(Ordering::SeqCst), 4, "the alert's count");
        clear_hook();
        set_policy(AlertKind::MpsFallbacks, AlertPolicy::DEFAULT);
    }

    #[test]
    fn a_new_window_starts_a_new_count() {
        let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        static SEEN: AtomicUsize = AtomicUsize::new(0);
        const WINDOW: Duration = Duration::from_millis(30);
        set_policy(AlertKind::Timeouts, AlertPolicy::new(1, WINDOW));
        set_hook(|a| {
            if a.kind == AlertKind::Timeouts && a.label == Some("new window") {
                SEEN.fetch_add(1, Ordering::SeqCst);
            }
        });
        // At given times, far on: other tests' events fall in other windows.
        let at = |windows: u64| (1_000_000 + windows) * WINDOW.as_nanos() as u64;
        let event = |now| count_at(AlertKind::Timeouts, Some("new window"), &"a", now);
        event(at(0));
        // The earlier event is in an older window: one event here is no alert.
        event(at(2));
        let after_two_windows = SEEN.load(Ordering::SeqCst);
        clear_hook();
        set_policy(AlertKind::Timeouts, AlertPolicy::DEFAULT);
        assert_eq!(after_two_windows, 0);
    }

    #[test]
    fn an_alert_fires_again_in_the_next_window() {
        let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        static SEEN: AtomicUsize = AtomicUsize::new(0);
        const HOUR: Duration = Duration::from_secs(3600);
        set_policy(AlertKind::Timeouts, AlertPolicy::new(1, HOUR));
        set_hook(|a| {
            if a.kind == AlertKind::Timeouts && a.label == Some("next window") {
                SEEN.fetch_add(1, Ordering::SeqCst);
            }
        });
        // Events at given times, a hundred hours on: other tests' events,
        // at the process's real times, fall in other windows.
        let at = |hours: u64| 100 * HOUR.as_nanos() as u64 + hours * HOUR.as_nanos() as u64;
        let event = |now| count_at(AlertKind::Timeouts, Some("next window"), &"a", now);
        // Past the threshold, and on past it: one alert.
        (0..4).for_each(|_| event(at(0)));
        let first = SEEN.load(Ordering::SeqCst);
        (0..2).for_each(|_| event(at(1)));
        let second = SEEN.load(Ordering::SeqCst);
        clear_hook();
        set_policy(AlertKind::Timeouts, AlertPolicy::DEFAULT);
        assert_eq!((first, second), (1, 2));
    }

    #[test]
    fn a_threshold_of_u32_max_never_alerts() {
        let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        static SEEN: AtomicUsize = AtomicUsize::new(0);
        set_policy(
            AlertKind::MpsFallbacks,
            AlertPolicy::new(u32::MAX, Duration::from_secs(3600)),
        );
        set_hook(|a| {
            if a.kind == AlertKind::MpsFallbacks {
                SEEN.fetch_add(1, Ordering::SeqCst);
            }
        });
        for _ in 0..3 {
            count(AlertKind::MpsFallbacks, None, &"here");
        }
        let seen = SEEN.load(Ordering::SeqCst);
        clear_hook();
        set_policy(AlertKind::MpsFallbacks, AlertPolicy::DEFAULT);
        assert_eq!(seen, 0);
    }

    #[test]
    fn a_panicking_hook_is_contained() {
        let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        set_policy(
            AlertKind::MpsFallbacks,
            AlertPolicy::new(0, Duration::from_secs(3600)),
        );
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        set_hook(|_| {
            CALLS.fetch_add(1, Ordering::SeqCst);
            panic!("hook failed");
        });
        // The panic does not escape `count`.
        count(AlertKind::MpsFallbacks, None, &"x");
        assert_eq!(CALLS.load(Ordering::SeqCst), 1);
        // The lock is not poisoned: the hook can be replaced and still runs.
        set_hook(|_| {
            CALLS.fetch_add(10, Ordering::SeqCst);
        });
        set_policy(
            AlertKind::MpsFallbacks,
            AlertPolicy::new(0, Duration::from_secs(3600)),
        );
        count(AlertKind::MpsFallbacks, None, &"x");
        assert_eq!(CALLS.load(Ordering::SeqCst), 11);
        clear_hook();
        set_policy(AlertKind::MpsFallbacks, AlertPolicy::DEFAULT);
    }
}
