//! Process-wide timeout counters, read with [`stats`] (as `safe_mps!`'s
//! are with [`crate::mps::stats`]).
//!
//! # Atomic orderings
//! All counters are independent event counts, read for reports: `Relaxed`.
//! A snapshot is therefore not one atomic picture of all counters at once,
//! which a report does not need.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::site::Site;

static TIMEOUTS: AtomicU64 = AtomicU64::new(0);
static INVALID: AtomicU64 = AtomicU64::new(0);

/// A snapshot of the timeout counters, from [`stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TimeoutStats {
    /// Timeouts that fired, everywhere.
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
    TimeoutStats {
        timeouts: TIMEOUTS.load(Ordering::Relaxed),
        invalid: INVALID.load(Ordering::Relaxed),
        sites: Site::all()
            .filter(|site| site.count() > 0)
            .map(|site| TimeoutSiteStats {
                label: site.label(),
                file: site.file(),
                line: site.line(),
                column: site.column(),
                timeouts: site.count(),
            })
            .collect(),
    }
}

/// Sets every timeout counter back to zero ([`crate::testing::reset_timeouts`]).
pub(crate) fn reset() {
    TIMEOUTS.store(0, Ordering::Relaxed);
    INVALID.store(0, Ordering::Relaxed);
    Site::all().for_each(Site::reset);
}

pub(crate) fn count_timeout(site: &'static Site) {
    TIMEOUTS.fetch_add(1, Ordering::Relaxed);
    site.record();
}

pub(crate) fn count_invalid() {
    INVALID.fetch_add(1, Ordering::Relaxed);
}
