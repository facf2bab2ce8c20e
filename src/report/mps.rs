//! What each `safe_mps!` event logs, counts, exports and alerts: one
//! function per event. The registry decides what happens to a call; these
//! functions decide what a person, the counters ([`crate::mps::stats`]), a
//! metrics backend and the alert hook see.
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
use crate::contain::user_then;
use crate::mps::MpsErrorKind;
use crate::mps::breaker::Transition;
use crate::mps::registry;
use crate::mps::site::{Event, MpsSite};

/// A call at `site` was admitted to try MPS.
#[inline]
pub(crate) fn attempt(site: &'static MpsSite) {
    site.count(Event::Attempt);
    #[cfg(feature = "metrics")]
    crate::export::mps_attempt(site);
}

/// A call at `site` went straight to CPU (the site pinned, or MPS disabled):
/// counted, not logged.
#[inline]
pub(crate) fn skipped(site: &'static MpsSite) {
    site.count(Event::Skipped);
}

/// An MPS error at `site`; `pin` is what it did to the site's breaker.
#[cold]
pub(crate) fn mps_error(
    site: &'static MpsSite,
    kind: MpsErrorKind,
    message: &str,
    pin: Option<Transition>,
    cooldown: Duration,
) {
    site.count(match kind {
        MpsErrorKind::Op => Event::OpError,
        _ => Event::DeviceError,
    });
    let first_line = headline(message);
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

/// What a warning quotes of an error's text: up to its first line break,
/// real or written as the two characters `\n`. The panic of `.unwrap()` on
/// a `TchError` quotes the error's debug form, which writes PyTorch's line
/// breaks that way: without the second kind, its first line would carry
/// PyTorch's C++ backtrace, kilobytes of it.
pub(crate) fn headline(message: &str) -> &str {
    let line = message.lines().next().unwrap_or("");
    let end = line.find("\\n").unwrap_or(line.len());
    line[..end].trim()
}

/// A transition of `site`'s pin: a pin is counted (its error line told
/// it already), an unpin logged.
#[cold]
pub(crate) fn site_transition(site: &'static MpsSite, t: Transition) {
    if t.opened() {
        site.count(Event::Pinned);
        return;
    }
    log::info!(
        target: "opguard",
        "{}MPS works again at {site}; the call site uses MPS again",
        Labelled(site.label())
    );
    #[cfg(feature = "metrics")]
    crate::export::site_pinned(site, false);
}

/// A transition of the process-wide breaker.
#[cold]
pub(crate) fn process_transition(t: Transition, cooldown: Duration) {
    if t.opened() {
        registry::count_disabled();
    }
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
    site.count(if ok {
        Event::Fallback
    } else {
        Event::FailedFallback
    });
    // Counted towards the alert even if the logger or the recorder panics.
    user_then(
        || {
            if !ok {
                log::warn!(
                    target: "opguard",
                    "{}CPU retry at {site} failed too",
                    Labelled(site.label())
                );
            }
            #[cfg(feature = "metrics")]
            crate::export::fallback(site, ok);
        },
        || alert::count(AlertKind::MpsFallbacks, site.label(), site),
    );
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

#[cfg(test)]
mod tests {
    use super::headline;

    #[test]
    fn a_headline_ends_at_the_first_line_break_real_or_escaped() {
        assert_eq!(
            headline("shape mismatch\nException raised from f"),
            "shape mismatch"
        );
        assert_eq!(
            headline(
                r#"called `Result::unwrap()` on an `Err` value: Torch("no MPS\nException raised from f\nframe #0: g")"#
            ),
            r#"called `Result::unwrap()` on an `Err` value: Torch("no MPS"#
        );
        assert_eq!(headline("  one line  "), "one line");
        assert_eq!(headline(""), "");
    }
}
