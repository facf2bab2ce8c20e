//! What each `safe_mps!` event logs, exports and alerts. The registry counts;
//! this module decides what a person (or a metrics backend) sees.
//!
//! Log lines (target `opguard`), one per event:
//! - warn: `'label': MPS error at SITE: FIRST LINE; retrying on CPU`, for a
//!   device-level error;
//! - warn: `'label': MPS op error at SITE: FIRST LINE; retrying on CPU, and
//!   this call site runs on CPU for 60s, then tries MPS once`, for an
//!   op-level error that pins the site (a failed trial says "stays on CPU for
//!   another 60s");
//! - warn: `'label': CPU retry at SITE failed too`;
//! - warn: `MPS disabled after 3 consecutive MPS failures; ...` and `MPS trial
//!   failed; ...`, once per transition of the process-wide breaker;
//! - info: `MPS trial succeeded; MPS is enabled again`, and `'label': MPS
//!   works again at SITE`.
//!
//! Calls that go straight to CPU (a pinned site, MPS disabled) log nothing.

use std::fmt;
use std::time::Duration;

use crate::alert::{self, AlertKind};
use crate::mps::MpsErrorKind;
use crate::mps::breaker::Transition;
use crate::mps::site::MpsSite;

/// An MPS error at `site`; `pin` is what it did to the site's breaker.
#[cold]
pub(crate) fn mps_error(
    site: &'static MpsSite,
    kind: MpsErrorKind,
    message: &str,
    pin: Option<Transition>,
    cooldown: Duration,
) {
    let first_line = message.lines().next().unwrap_or("").trim();
    let label = Labelled(site.label());
    match (kind, pin) {
        (MpsErrorKind::Op, Some(Transition::Disabled { .. })) => log::warn!(
            target: "opguard",
            "{label}MPS op error at {site}: {first_line}; retrying on CPU, and this call site runs on CPU for {cooldown:?}, then tries MPS once"
        ),
        (MpsErrorKind::Op, Some(Transition::TrialFailed)) => log::warn!(
            target: "opguard",
            "{label}MPS op error at {site}: {first_line}; retrying on CPU, and this call site stays on CPU for another {cooldown:?}"
        ),
        (MpsErrorKind::Op, _) => log::warn!(
            target: "opguard",
            "{label}MPS op error at {site}: {first_line}; retrying on CPU"
        ),
        _ => log::warn!(
            target: "opguard",
            "{label}MPS error at {site}: {first_line}; retrying on CPU"
        ),
    }
    #[cfg(feature = "metrics")]
    {
        crate::export::mps_error(site, kind);
        if pin.is_some() {
            crate::export::site_pinned(site, true);
        }
    }
}

/// A transition of `site`'s pin that no error line has told.
#[cold]
pub(crate) fn site_transition(site: &'static MpsSite, t: Transition) {
    if t == Transition::Enabled {
        log::info!(
            target: "opguard",
            "{}MPS works again at {site}; the call site uses MPS again",
            Labelled(site.label())
        );
        #[cfg(feature = "metrics")]
        crate::export::site_pinned(site, false);
    }
}

/// A transition of the process-wide breaker.
#[cold]
pub(crate) fn process_transition(t: Transition, cooldown: Duration) {
    match t {
        Transition::Disabled { failures } => log::warn!(
            target: "opguard",
            "MPS disabled after {failures} consecutive MPS failures; safe_mps! runs on CPU for {cooldown:?}, then tries MPS once"
        ),
        Transition::TrialFailed => log::warn!(
            target: "opguard",
            "MPS trial failed; MPS stays disabled for another {cooldown:?}"
        ),
        Transition::Enabled => {
            log::info!(target: "opguard", "MPS trial succeeded; MPS is enabled again");
        }
    }
}

/// The CPU retry at `site` ended; `ok` when it did not fail too.
#[cold]
pub(crate) fn fallback(site: &'static MpsSite, ok: bool) {
    if !ok {
        log::warn!(
            target: "opguard",
            "{}CPU retry at {site} failed too",
            Labelled(site.label())
        );
    }
    #[cfg(feature = "metrics")]
    crate::export::fallback(site, ok);
    alert::count(AlertKind::MpsFallbacks, site.label(), site);
}

/// `'label': ` when the site has a label, else nothing.
struct Labelled(Option<&'static str>);

impl fmt::Display for Labelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(label) => write!(f, "'{label}': "),
            None => Ok(()),
        }
    }
}
