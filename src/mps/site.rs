//! One `safe_mps!` call site: where it is, whether an op-level MPS error has
//! pinned it to CPU, and its counters.
//!
//! Each `safe_mps!` expands to a `static MpsSite`, so the per-site state is
//! found without a lookup: a call reads its own site's breaker (one load when
//! the site is not pinned) and counts its attempt, or its skip, in its
//! thread's block ([`tally`]: no write to memory that other
//! threads share).
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
    /// A CPU retry abandoned before it ended.
    AbandonedFallback,
}

const EVENTS: usize = 8;

/// The events counted per thread ([`tally`]): one of them comes with nearly
/// every call, an attempt while MPS works, a skip while it does not.
const PER_THREAD: [Event; 2] = [Event::Attempt, Event::Skipped];

/// `event`'s place in [`PER_THREAD`] (a constant wherever `event` is one,
/// as at every call of [`MpsSite::count`]).
#[inline(always)]
const fn tallied(event: Event) -> Option<usize> {
    let mut k = 0;
    while k < PER_THREAD.len() {
        if PER_THREAD[k] as usize == event as usize {
            return Some(k);
        }
        k += 1;
    }
    None
}

/// One `safe_mps!` call site.
#[doc(hidden)] // Not public API: built by the macro.
pub struct MpsSite {
    at: Location,
    pub(crate) pin: Breaker,
    counts: [AtomicU64; EVENTS],
    /// Where the events of nearly every call ([`PER_THREAD`]) are counted
    /// per thread; `counts` holds the rest.
    tallied: [Slot; PER_THREAD.len()],
    /// What was counted per thread before the last reset.
    tallied_before: [AtomicU64; PER_THREAD.len()],
    link: Link<MpsSite>,
    /// What its metrics need, made on its first metric.
    #[cfg(feature = "metrics")]
    keys: std::sync::OnceLock<crate::export::SiteKeys>,
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
            tallied: [const { Slot::new() }; PER_THREAD.len()],
            tallied_before: [const { AtomicU64::new(0) }; PER_THREAD.len()],
            link: Link::new(),
            #[cfg(feature = "metrics")]
            keys: std::sync::OnceLock::new(),
        }
    }
}

impl MpsSite {
    pub(crate) fn label(&self) -> Option<&'static str> {
        self.at.label
    }

    /// What the site's metrics need: its name and the key of the counter
    /// nearly every call records, made once per call site (a bounded number).
    #[cfg(feature = "metrics")]
    #[inline]
    pub(crate) fn keys(&self) -> &crate::export::SiteKeys {
        self.keys
            .get_or_init(|| crate::export::SiteKeys::new(self.label(), &self.at))
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

    #[inline(always)]
    pub(crate) fn count(&self, event: Event) {
        let shared = &self.counts[event as usize];
        match tallied(event) {
            Some(k) => tally::count(&self.tallied[k], shared),
            None => {
                shared.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn get(&self, event: Event) -> u64 {
        let shared = self.counts[event as usize].load(Ordering::Relaxed);
        let Some(k) = tallied(event) else {
            return shared;
        };
        // Saturating: a read racing a reset on another thread may see the
        // reset's mark before the counts it was taken from.
        let since_reset = tally::read(&self.tallied[k])
            .saturating_sub(self.tallied_before[k].load(Ordering::Relaxed));
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
        for (slot, before) in self.tallied.iter().zip(&self.tallied_before) {
            before.store(tally::read(slot), Ordering::Relaxed);
        }
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
            abandoned_fallbacks: self.get(Event::AbandonedFallback),
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
    /// CPU retries abandoned before they ended: their future dropped (by a
    /// timeout around the work, say), or a panic while the named values
    /// moved to CPU.
    pub abandoned_fallbacks: u64,
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

#[cfg(all(test, not(opguard_loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_events_counted_per_thread_are_the_ones_listed_each_in_its_place() {
        let all = [
            Event::Attempt,
            Event::OpError,
            Event::DeviceError,
            Event::Fallback,
            Event::FailedFallback,
            Event::AbandonedFallback,
            Event::Skipped,
            Event::Pinned,
        ];
        assert_eq!(all.len(), EVENTS);
        for event in all {
            let place = PER_THREAD.iter().position(|&e| e == event);
            assert_eq!(tallied(event), place, "{event:?}");
        }
    }

    #[test]
    fn every_event_reads_back_what_was_counted_and_zero_after_a_reset() {
        static SITE: MpsSite = MpsSite::new(None, "site.rs", 1, 1);
        for (n, event) in [Event::Attempt, Event::Skipped, Event::Fallback]
            .into_iter()
            .enumerate()
        {
            for _ in 0..=n {
                SITE.count(event);
            }
            assert_eq!(SITE.get(event), n as u64 + 1, "{event:?}");
        }
        SITE.reset();
        for event in [Event::Attempt, Event::Skipped, Event::Fallback] {
            assert_eq!(SITE.get(event), 0, "{event:?}");
        }
        SITE.count(Event::Skipped);
        assert_eq!(SITE.get(Event::Skipped), 1);
    }
}
