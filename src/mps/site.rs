//! One `safe_mps!` call site: where it is, whether an op-level MPS error has
//! pinned it to CPU, and its counters.
//!
//! Each `safe_mps!` expands to a `static MpsSite`, so the per-site state is
//! found without a lookup: a call reads its own site's breaker (one load when
//! the site is not pinned) and counts its attempt in its thread's block
//! ([`tally`](super::tally): no write to memory that other threads share).
//!
//! # Atomic orderings
//! The counters are independent event counts read for reports: `Relaxed`.
//! The pin is a [`Breaker`], which documents its own orderings.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use super::breaker::{Breaker, MpsState};
use super::tally::{self, Slot};
use crate::site::{Link, Listed, Location, StaticList};

/// What a site counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// A call that tried MPS (an injected failure stands for one).
    Attempt,
    /// An attempt that failed with an op-level MPS error.
    OpError,
    /// An attempt that failed with a device-level MPS error.
    DeviceError,
    /// A CPU retry that succeeded.
    Fallback,
    /// A CPU retry that failed as well.
    FailedFallback,
    /// A call sent straight to CPU: this site pinned, or MPS disabled.
    Skipped,
    /// The site was pinned to CPU.
    Pinned,
}

const EVENTS: usize = 7;

/// One `safe_mps!` call site.
#[doc(hidden)] // Not public API: built by the macro.
pub struct MpsSite {
    at: Location,
    pub(crate) pin: Breaker,
    counts: [AtomicU64; EVENTS],
    /// Where attempts are counted per thread; `counts` holds the rest.
    attempts: Slot,
    /// The per-thread attempts counted before the last reset.
    attempts_before: AtomicU64,
    link: Link<MpsSite>,
    /// `file:line:column`, made once for the `metrics` labels.
    #[cfg(feature = "metrics")]
    name: std::sync::OnceLock<&'static str>,
}

static MPS_SITES: StaticList<MpsSite> = StaticList::new();

impl Listed for MpsSite {
    fn link(&self) -> &Link<Self> {
        &self.link
    }
}

// loom's atomics (inside the breaker) cannot be built in a const context;
// the loom build needs no call sites.
#[cfg(not(opguard_loom))]
impl MpsSite {
    #[doc(hidden)]
    pub const fn new(
        label: Option<&'static str>,
        file: &'static str,
        line: u32,
        column: u32,
    ) -> MpsSite {
        MpsSite {
            at: Location {
                label,
                file,
                line,
                column,
            },
            pin: Breaker::new(),
            counts: [const { AtomicU64::new(0) }; EVENTS],
            attempts: Slot::new(),
            attempts_before: AtomicU64::new(0),
            link: Link::new(),
            #[cfg(feature = "metrics")]
            name: std::sync::OnceLock::new(),
        }
    }
}

impl MpsSite {
    pub(crate) fn label(&self) -> Option<&'static str> {
        self.at.label
    }

    /// `file:line:column`, as a `'static` string: made once per call site
    /// (a bounded number), so that recording a metric allocates nothing.
    #[cfg(feature = "metrics")]
    pub(crate) fn name(&self) -> &'static str {
        self.name
            .get_or_init(|| Box::leak(self.at.to_string().into_boxed_str()))
    }

    /// Lists the site for the stats (a load after the first time).
    #[inline]
    pub(crate) fn list(&'static self) {
        MPS_SITES.push_once(self);
    }

    /// Whether the site is listed already.
    #[inline]
    pub(crate) fn listed(&self) -> bool {
        StaticList::has(self)
    }

    #[inline]
    pub(crate) fn count(&self, event: Event) {
        self.counts[event as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an attempt, the one event of nearly every call: in this
    /// thread's block.
    #[inline(always)]
    pub(crate) fn count_attempt(&self) {
        tally::count(&self.attempts, &self.counts[Event::Attempt as usize]);
    }

    fn get(&self, event: Event) -> u64 {
        let shared = self.counts[event as usize].load(Ordering::Relaxed);
        if event != Event::Attempt {
            return shared;
        }
        // Saturating: a read racing a reset on another thread may see the
        // reset's mark before the counts it was taken from.
        let since_reset = tally::read(&self.attempts)
            .saturating_sub(self.attempts_before.load(Ordering::Relaxed));
        shared.wrapping_add(since_reset)
    }

    /// Whether op-level MPS errors keep this site on CPU (until a trial succeeds).
    pub(crate) fn pinned(&self) -> bool {
        self.pin.state() != MpsState::Enabled
    }

    /// Unpinned, every counter at zero.
    pub(crate) fn reset(&self) {
        self.pin.reset();
        for c in &self.counts {
            c.store(0, Ordering::Relaxed);
        }
        // Threads own their blocks: what they counted is set aside, not
        // overwritten (a thread counting meanwhile would write it back).
        self.attempts_before
            .store(tally::read(&self.attempts), Ordering::Relaxed);
    }

    /// Every site that has been called, newest first.
    pub(crate) fn all() -> impl Iterator<Item = &'static MpsSite> {
        MPS_SITES.iter()
    }

    pub(crate) fn stats(&self) -> MpsSiteStats {
        MpsSiteStats {
            label: self.at.label,
            file: self.at.file,
            line: self.at.line,
            column: self.at.column,
            mps_attempts: self.get(Event::Attempt),
            op_errors: self.get(Event::OpError),
            device_errors: self.get(Event::DeviceError),
            fallbacks: self.get(Event::Fallback),
            failed_fallbacks: self.get(Event::FailedFallback),
            skipped: self.get(Event::Skipped),
            pinned: self.pinned(),
            times_pinned: self.get(Event::Pinned),
        }
    }
}

impl fmt::Display for MpsSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.at.fmt(f)
    }
}

impl fmt::Debug for MpsSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpsSite")
            .field("label", &self.at.label)
            .field("at", &format_args!("{self}"))
            .field("pinned", &self.pinned())
            .finish()
    }
}

/// The counters of one `safe_mps!` call site, from
/// [`MpsStats::sites`](super::MpsStats::sites).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MpsSiteStats {
    /// The `label = "..."` of the call, if any.
    pub label: Option<&'static str>,
    /// The file of the call.
    pub file: &'static str,
    /// The line of the call.
    pub line: u32,
    /// The column of the call.
    pub column: u32,
    /// Calls that tried MPS here (injected failures included).
    pub mps_attempts: u64,
    /// Attempts that failed with an op-level MPS error.
    pub op_errors: u64,
    /// Attempts that failed with a device-level MPS error (injected ones included).
    pub device_errors: u64,
    /// CPU retries that succeeded.
    pub fallbacks: u64,
    /// CPU retries that failed as well.
    pub failed_fallbacks: u64,
    /// Calls sent straight to CPU: this site pinned, or MPS disabled.
    pub skipped: u64,
    /// Whether an op-level MPS error keeps this site on CPU now.
    pub pinned: bool,
    /// How often the site has been pinned (a failed trial pins it again).
    pub times_pinned: u64,
}

impl MpsSiteStats {
    /// MPS errors of both kinds.
    pub fn mps_errors(&self) -> u64 {
        self.op_errors + self.device_errors
    }
}
