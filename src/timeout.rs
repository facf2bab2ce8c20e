//! The future behind `timeout_async!`: the inner future raced against a timer.
//!
//! The inner future is polled first. Only when it is still pending does the
//! timer start: a deadline on the shared timer ([`crate::timer`]), whose ticks
//! are `futures_timer::Delay`s on futures-timer's own helper thread, so it
//! needs nothing from the executor. A future that is ready at once therefore
//! costs what the bare future costs: no timer, no allocation. The deadline
//! counts from that first pending poll.
//!
//! When the timer wins, the inner future is dropped in place (cancelled)
//! before the error is returned.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::alert::{self, AlertKind};
use crate::config;
use crate::duration::{IntoTimeout, InvalidTimeout};
use crate::error::TimeoutError;
use crate::site::Site;
use crate::stats;
use crate::timer::Deadline;

/// A future with a timeout, made by [`timeout_async!`](crate::timeout_async).
///
/// Yields `Ok(output)` when the inner future finishes in time, and
/// `Err(`[`TimeoutError`]`)` when the deadline passes first (the inner
/// future is then dropped) or the timeout was invalid.
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Timeout<F> {
    /// Structurally pinned: polled in place, dropped in place, never moved.
    inner: Option<F>,
    /// Not pinned: `Timer` is `Unpin`.
    timer: Timer,
}

/// Everything about the race that does not depend on the inner future's type,
/// so that it is compiled once rather than once per future type.
struct Timer {
    state: State,
    site: &'static Site,
}

enum State {
    /// Not started: the inner future has not pended yet.
    Armed(Result<Duration, InvalidTimeout>),
    /// Not started, with the default timeout, read when it starts.
    ArmedDefault,
    /// Started: registered with the shared timer.
    Waiting { deadline: Deadline, after: Duration },
    /// No timer: the kill switch was off, or the timeout already fired.
    Unbounded,
}

#[doc(hidden)] // Not public API: called by `timeout_async!`.
#[inline(always)]
pub fn timeout<D, F>(site: &'static Site, timeout: D, fut: F) -> Timeout<F::IntoFuture>
where
    D: IntoTimeout,
    F: IntoFuture,
{
    Timeout::new(site, State::Armed(timeout.into_timeout()), fut)
}

#[doc(hidden)] // Not public API: called by `timeout_async!`.
#[inline(always)]
pub fn timeout_default<F>(site: &'static Site, fut: F) -> Timeout<F::IntoFuture>
where
    F: IntoFuture,
{
    Timeout::new(site, State::ArmedDefault, fut)
}

impl<F: Future> Timeout<F> {
    #[inline(always)]
    fn new<I: IntoFuture<IntoFuture = F>>(site: &'static Site, state: State, fut: I) -> Self {
        Timeout {
            inner: Some(fut.into_future()),
            timer: Timer { state, site },
        }
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, TimeoutError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `inner` is structurally pinned. It is only ever polled
        // through `Pin::new_unchecked` below or dropped in place by assigning
        // `None`; it is never moved out, and `Timeout` has no `Drop` impl and
        // is `Unpin` only when `F` is. `timer` is not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        if let State::Armed(Err(_)) = this.timer.state
            && let Some(err) = this.timer.reject()
        {
            this.inner = None;
            return Poll::Ready(Err(err));
        }
        let Some(inner) = this.inner.as_mut() else {
            panic!("`timeout_async!` future polled after it timed out");
        };
        // SAFETY: see above; `inner` stays where it is.
        if let Poll::Ready(output) = unsafe { Pin::new_unchecked(inner) }.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        match this.timer.poll_elapsed(cx) {
            Poll::Ready(err) => {
                // Cancel the inner future before reporting.
                this.inner = None;
                Poll::Ready(Err(err))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Timer {
    /// Starts the timer on the first pending poll, then polls it.
    fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<TimeoutError> {
        let after = match self.state {
            State::Armed(Ok(after)) => after,
            State::ArmedDefault => config::default_timeout(),
            State::Waiting {
                ref mut deadline,
                after,
            } => {
                return match deadline.poll(cx) {
                    Poll::Ready(()) => Poll::Ready(self.expire(after)),
                    Poll::Pending => Poll::Pending,
                };
            }
            State::Armed(Err(_)) | State::Unbounded => return Poll::Pending,
        };
        if !config::timeouts_enabled() {
            self.state = State::Unbounded;
            return Poll::Pending;
        }
        if after.is_zero() {
            return Poll::Ready(self.expire(after));
        }
        match Deadline::new(after, cx.waker()) {
            // Registered with `cx`'s waker already: no need to poll it.
            Some(deadline) => {
                let fired = deadline.has_fired();
                self.state = State::Waiting { deadline, after };
                if fired {
                    return Poll::Ready(self.expire(after));
                }
            }
            // Half a billion years away: it never comes.
            None => self.state = State::Unbounded,
        }
        Poll::Pending
    }

    #[cold]
    #[inline(never)]
    fn expire(&mut self, after: Duration) -> TimeoutError {
        // Leaves the shared timer.
        self.state = State::Unbounded;
        let site = self.site;
        stats::count_timeout(site);
        #[cfg(feature = "metrics")]
        crate::export::timeout(site.label());
        match site.label() {
            Some(label) => {
                log::warn!(target: "opguard", "'{label}' timed out after {after:?} at {site}")
            }
            None => log::warn!(target: "opguard", "future timed out after {after:?} at {site}"),
        }
        alert::count(AlertKind::Timeouts, site.label(), site);
        TimeoutError::elapsed(site, after)
    }

    /// An invalid timeout: the error, or `None` while the kill switch is off.
    #[cold]
    #[inline(never)]
    fn reject(&mut self) -> Option<TimeoutError> {
        let State::Armed(Err(bad)) = self.state else {
            return None;
        };
        if !config::timeouts_enabled() {
            self.state = State::Unbounded;
            return None;
        }
        self.state = State::Unbounded;
        stats::count_invalid();
        let err = TimeoutError::invalid(self.site, bad);
        log::warn!(target: "opguard", "{err}");
        Some(err)
    }
}

impl<F> fmt::Debug for Timeout<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state: &dyn fmt::Debug = match &self.timer.state {
            State::Armed(Ok(after)) => after,
            State::Armed(Err(bad)) => bad,
            State::ArmedDefault => &"default",
            State::Waiting { after, .. } => after,
            State::Unbounded => &"none",
        };
        f.debug_struct("Timeout")
            .field("timeout", state)
            .field(
                "started",
                &matches!(self.timer.state, State::Waiting { .. }),
            )
            .field("site", self.timer.site)
            .finish_non_exhaustive()
    }
}
