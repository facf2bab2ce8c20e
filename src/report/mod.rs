//! What each event logs, counts, exports and alerts: one function per event.
//! The guards only say what happened; these functions decide what a person
//! (the log), the counters ([`crate::timeouts::stats`], [`crate::mps::stats`]), a
//! metrics backend (feature `metrics`) and the alert hook see.
//!
//! Timeouts (this module), log target `opguard`:
//! - warn: the error's message, for a timeout that elapsed (counted, exported,
//!   and counted towards the timeouts alert at its deadline) and for an
//!   invalid timeout (counted);
//! - error: the error's message, when no timer could run.
//!
//! Logging and exporting run user code (the logger, the metrics recorder),
//! whose panic goes on to the caller: what must follow them (an alert's
//! count) runs all the same before it does ([`user_then`]).
//!
//! `safe_mps!`'s events are in [`mps`].

// Without `tch` nothing reports MPS events.
#[cfg_attr(not(feature = "tch"), allow(dead_code))]
pub(crate) mod mps;

use crate::alert::{self, AlertKind};
use crate::contain::user_then;
use crate::error::TimeoutError;
use crate::site::Site;
use crate::timeouts;

/// A timeout at `site` elapsed at its deadline `due` (in
/// `clock::now_nanos`, or its clock's own time): `err` is what it yields.
#[cold]
pub(crate) fn timed_out(site: &'static Site, err: &TimeoutError, due: u64) {
    timeouts::count_timeout(site);
    user_then(
        || {
            #[cfg(feature = "metrics")]
            crate::export::timeout(site);
            log::warn!(target: "opguard", "{err}");
        },
        // Counted at its deadline, which has just passed: no clock read.
        || alert::count_at(AlertKind::Timeouts, site.label(), site, due),
    );
}

/// A timeout given to the macro was not a valid duration.
#[cold]
pub(crate) fn invalid_timeout(err: &TimeoutError) {
    timeouts::count_invalid();
    log::warn!(target: "opguard", "{err}");
}

/// No timer could run, so the deadline could not be kept.
#[cold]
pub(crate) fn no_timer(err: &TimeoutError) {
    log::error!(target: "opguard", "{err}");
}
