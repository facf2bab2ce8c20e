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

/// What a warning quotes of an error's text: up to its first line break.
///
/// The panic of `.unwrap()` on a `TchError` quotes the error's debug form,
/// `Torch("...")`, where PyTorch's line breaks are written as the two
/// characters `\n`: without looking inside that string, its first line would
/// carry PyTorch's C++ backtrace, kilobytes of it. So inside a quoted debug
/// string an escaped line break ends the headline too, and the quote and
/// brackets it opened are closed again. Outside one, a backslash is only a
/// backslash (`C:\new` in a plain message is a path), and inside one, `\\` is
/// a backslash too (a path in a debug form is written `C:\\new`).
pub(crate) fn headline(message: &str) -> Headline<'_> {
    let line = message.lines().next().unwrap_or("").trim();
    let bytes = line.as_bytes();
    let mut open = Closers::default();
    let mut quoted = false;
    let mut i = 0;
    while i < bytes.len() {
        match (quoted, bytes[i]) {
            (true, b'\\') => {
                if matches!(bytes.get(i + 1), Some(b'n' | b'r')) {
                    return Headline {
                        text: line[..i].trim_end(),
                        cut: Some(open),
                    };
                }
                // The escaped character, whatever it is, is not a quote.
                i += 1;
            }
            (true, b'"') => quoted = false,
            (false, b'"') => quoted = true,
            (false, b'(' | b'[' | b'{') => open.push(bytes[i]),
            (false, b')' | b']' | b'}') => open.pop(),
            _ => {}
        }
        i += 1;
    }
    Headline {
        text: line,
        cut: None,
    }
}

/// The first line of an error's text, as a warning quotes it: see
/// [`headline`].
pub(crate) struct Headline<'a> {
    text: &'a str,
    /// Where it was cut inside a quoted string: the brackets open there,
    /// closed after the quote.
    cut: Option<Closers>,
}

impl fmt::Display for Headline<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text)?;
        match &self.cut {
            Some(close) => {
                f.write_str("\"")?;
                close.fmt(f)
            }
            None => Ok(()),
        }
    }
}

/// The brackets open at a point of a debug form, innermost last (the first
/// few: debug forms nest shallowly, and a headline is a courtesy).
#[derive(Default)]
struct Closers {
    open: [u8; 8],
    len: usize,
}

impl Closers {
    fn push(&mut self, bracket: u8) {
        if let Some(slot) = self.open.get_mut(self.len) {
            *slot = bracket;
        }
        self.len += 1;
    }

    fn pop(&mut self) {
        self.len = self.len.saturating_sub(1);
    }
}

impl fmt::Display for Closers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known = &self.open[..self.len.min(self.open.len())];
        for bracket in known.iter().rev() {
            f.write_str(match bracket {
                b'(' => ")",
                b'[' => "]",
                // A struct's debug form: `Name { field: .. }`.
                _ => " }",
            })?;
        }
        Ok(())
    }
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

/// A CPU retry abandoned before it ended: counted, and no more (whatever
/// cut it short, a timeout say, reports itself). This runs where the call is
/// dropped, maybe while a panic unwinds, so the recorder's own panic stops
/// here (its hook has printed it).
pub(crate) fn fallback_abandoned(site: &'static MpsSite) {
    site.count(Event::AbandonedFallback);
    #[cfg(feature = "metrics")]
    crate::contain::contain(|| crate::export::fallback_abandoned(site));
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

    fn line(message: &str) -> String {
        headline(message).to_string()
    }

    #[test]
    fn a_headline_ends_at_the_first_real_line_break() {
        assert_eq!(
            line("shape mismatch\nException raised from f"),
            "shape mismatch"
        );
        assert_eq!(line("  one line  "), "one line");
        assert_eq!(line(""), "");
    }

    #[test]
    fn a_headline_ends_at_an_escaped_line_break_in_a_debug_string_and_closes_it() {
        assert_eq!(
            line(
                r#"called `Result::unwrap()` on an `Err` value: Torch("no MPS\nException raised from f\nframe #0: g")"#
            ),
            r#"called `Result::unwrap()` on an `Err` value: Torch("no MPS")"#
        );
        assert_eq!(
            line(r#"Err value: Custom { kind: Other, error: "MPS out of memory \r\nat f" }"#),
            r#"Err value: Custom { kind: Other, error: "MPS out of memory" }"#
        );
        assert_eq!(line(r#"Wrap([Torch("a\nb")])"#), r#"Wrap([Torch("a")])"#);
    }

    #[test]
    fn a_headline_keeps_backslashes_that_are_not_escaped_line_breaks() {
        // A Windows path in a plain message, outside any quotes.
        assert_eq!(
            line(r"MPS backend failed loading C:\new\model.pt"),
            r"MPS backend failed loading C:\new\model.pt"
        );
        // The same path in a debug form: its backslashes are doubled.
        let debug = format!("{:?}", r"MPS failed at C:\new\n.pt");
        assert_eq!(line(&debug), debug);
        // An escaped quote does not end the string.
        assert_eq!(
            line(r#"Torch("say \"hi\" \nlater")"#),
            r#"Torch("say \"hi\"")"#
        );
    }

    #[test]
    fn a_headline_cut_deep_inside_brackets_closes_what_it_can_count() {
        let deep = format!("{}\"x\\ny", "(".repeat(10));
        assert_eq!(
            line(&deep),
            format!("{}\"x\"{}", "(".repeat(10), ")".repeat(8))
        );
        // Brackets closed before the cut leave nothing to close.
        assert_eq!(line(r#"f(a) [b] {c} "d\ne""#), r#"f(a) [b] {c} "d""#);
    }
}
