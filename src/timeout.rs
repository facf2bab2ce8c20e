//! The future behind `timeout_async!`: the inner future raced against a timer.
//!
//! The inner future is polled first. Only when it is still pending does the
//! timer start: a deadline on the shared timer ([`crate::timer`]), whose ticks
//! are timed by `futures_timer::Delay`s (one per thread's ticks) on
//! futures-timer's own helper thread, so it needs nothing from the executor. A future that is ready at once therefore
//! costs what the bare future costs: no timer, no allocation. The deadline
//! counts from that first pending poll.
//!
//! When the timer wins, the inner future is dropped in place (cancelled)
//! before the error is returned. The pinning is `pin_project!`'s, without
//! `unsafe` of our own: the inner future sits in an enum whose variant is
//! replaced in place when it is cancelled.

use std::cell::Cell;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pin_project_lite::pin_project;

#[cfg(any(feature = "test-util", feature = "tokio"))]
use crate::controlled;
use crate::duration::{IntoDeadline, IntoTimeout, InvalidTimeout};
use crate::error::{Missing, TimeoutError};
use crate::report;
use crate::site::Site;
use crate::timer::{self, Deadline, Outcome, Start};

pin_project! {
    /// A future with a timeout, made by [`timeout_async!`](crate::timeout_async).
    ///
    /// Yields `Ok(output)` when the inner future finishes in time, and
    /// `Err(`[`TimeoutError`]`)` when the deadline passes first (the inner
    /// future is then dropped), the timeout was invalid, or no timer could run
    /// ([`TimeoutError::is_no_timer`]). Once it has yielded, it holds no
    /// timer: kept after that, it takes no room in the timer and wakes
    /// nothing at its deadline.
    ///
    /// # Panics
    /// Polling it again after it yielded an error panics, as a finished
    /// future may.
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct Timeout<F> {
        #[pin]
        inner: Inner<F>,
        race: Race,
    }
}

pin_project! {
    /// The inner future, polled and dropped where it is pinned; dropped
    /// early, in place, when the timer wins.
    #[project = InnerProj]
    #[project_replace = InnerReplaced]
    enum Inner<F> {
        Running { #[pin] fut: F },
        Gone,
    }
}

/// The timer's side of the race: everything that does not depend on the
/// inner future's type, so that it is compiled once rather than once per
/// future type. (The timer itself is the `timer` module's.)
struct Race {
    state: State,
    site: &'static Site,
}

enum State {
    /// Not started: the inner future has not pended yet.
    Armed(Duration),
    /// Not started, with the default timeout, read when it starts.
    ArmedDefault,
    /// Not started, with a deadline (`until = ..`).
    ArmedUntil(Instant),
    /// Started on a clock a test controls (a test clock, tokio's paused
    /// clock); boxed, as it is only for tests.
    #[cfg(any(feature = "test-util", feature = "tokio"))]
    Controlled {
        deadline: Box<dyn controlled::Deadline>,
        length: Length,
    },
    /// Started: registered with the shared timer.
    Waiting { deadline: Deadline, length: Length },
    /// Its deadline came, `due` (in its clock's nanoseconds), after an
    /// enclosing timeout's had: it pended once for that one to report.
    /// Polled again, it reports itself (see [`Race::end`]).
    Deferred { due: u64, length: Length },
    /// No timer: the kill switch was off, the deadline is out of reach, or
    /// the race is over.
    Unbounded,
    /// An invalid timeout, reported at the first poll.
    Invalid(InvalidTimeout),
    /// The timer won (or the timeout was invalid): the inner future is gone,
    /// or goes next (it is dropped once the timer's end is reported).
    Cancelled,
}

/// A started timeout's length, and whether it was made with a deadline
/// (which its error says), in seven bytes: beside the state's tag and the
/// deadline, a started timer's state takes 40 bytes, where a `u64` and a
/// `bool` made it 48, and a `Timeout` around an inner future of up to 8
/// bytes takes 56, under a 64-byte cache line. The length is kept to the
/// nanosecond below [`Length::EXACT_SECS`] seconds (78 hours), to the
/// millisecond up to 8 900 years, and to the second up to 285 million
/// years (the timer counts no further than about 146 million).
///
/// Six bytes of value, then a byte of flags: its unit, `until`, and in
/// seconds five more bits of value.
#[derive(Clone, Copy)]
struct Length {
    low: [u8; 4],
    high: [u8; 2],
    flags: u8,
}

impl Length {
    /// The value's bits: 48.
    const VALUE: u64 = (1 << 48) - 1;
    /// Lengths below this many seconds are kept to the nanosecond: their
    /// nanoseconds fit in the value's bits (2^48 ns is 281 474.98 s).
    const EXACT_SECS: u64 = Self::VALUE / 1_000_000_000;
    /// Flags: the value is in milliseconds; in seconds; made with a
    /// deadline (`until = ..`). In seconds, bits 2 to 6 hold the value's
    /// bits from 48 up.
    const MILLIS: u8 = 1;
    const SECS: u8 = 2;
    const UNTIL: u8 = 1 << 7;
    /// The most seconds kept: 2^53 - 1, 285 million years.
    const MAX_SECS: u64 = (1 << 53) - 1;

    #[inline]
    fn new(after: Duration, until: bool) -> Self {
        // One comparison, and no overflow to check below it.
        let (value, unit) = if after.as_secs() < Self::EXACT_SECS {
            let nanos = after.as_secs() * 1_000_000_000 + u64::from(after.subsec_nanos());
            (nanos, 0)
        } else {
            Self::coarse(after)
        };
        let [a, b, c, d, e, f, _, _] = value.to_le_bytes();
        Length {
            low: [a, b, c, d],
            high: [e, f],
            flags: unit | (u8::from(until) * Self::UNTIL),
        }
    }

    /// A length from [`Length::EXACT_SECS`] up: in milliseconds, or in
    /// seconds (held at 285 million years) when too long for those.
    #[cold]
    fn coarse(after: Duration) -> (u64, u8) {
        match u64::try_from(after.as_millis()) {
            Ok(ms) if ms <= Self::VALUE => (ms, Self::MILLIS),
            _ => {
                let secs = after.as_secs().min(Self::MAX_SECS);
                // The bits past 48 go in the flags (the caller keeps only
                // the value's low 48).
                (secs, Self::SECS | (((secs >> 48) as u8) << 2))
            }
        }
    }

    /// The timeout's length.
    #[inline]
    fn after(self) -> Duration {
        let [a, b, c, d] = self.low;
        let [e, f] = self.high;
        let value = u64::from_le_bytes([a, b, c, d, e, f, 0, 0]);
        match self.flags & (Self::MILLIS | Self::SECS) {
            0 => Duration::from_nanos(value),
            Self::MILLIS => Duration::from_millis(value),
            _ => Duration::from_secs(value | (u64::from((self.flags >> 2) & 0x1f) << 48)),
        }
    }

    /// Whether it was made with a deadline.
    #[inline]
    fn until(self) -> bool {
        self.flags & Self::UNTIL != 0
    }
}

#[doc(hidden)] // Not public API: called by `timeout_async!`.
#[inline(always)]
pub fn timeout<D, F>(site: &'static Site, timeout: D, fut: F) -> Timeout<F::IntoFuture>
where
    D: IntoTimeout,
    F: IntoFuture,
{
    let state = match timeout.into_timeout() {
        Ok(after) => State::Armed(after),
        Err(bad) => State::Invalid(bad),
    };
    Timeout::new(site, state, fut)
}

#[doc(hidden)] // Not public API: called by `timeout_async!`.
#[inline(always)]
pub fn timeout_until<D, F>(site: &'static Site, deadline: D, fut: F) -> Timeout<F::IntoFuture>
where
    D: IntoDeadline,
    F: IntoFuture,
{
    Timeout::new(site, State::ArmedUntil(deadline.into_deadline()), fut)
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
            inner: Inner::Running {
                fut: fut.into_future(),
            },
            race: Race { state, site },
        }
    }
}

impl<F> Timeout<F> {
    /// The inner future, or `None` once the timer has won: the inner future
    /// is dropped then, before the error is yielded (as it is when the
    /// timeout was invalid). A future that finished in time is still here.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let fut = opguard::timeout_async!(5, std::future::ready(7));
    /// assert!(fut.get_ref().is_some());
    /// # });
    /// ```
    pub fn get_ref(&self) -> Option<&F> {
        match &self.inner {
            Inner::Running { fut } => Some(fut),
            Inner::Gone => None,
        }
    }

    /// The inner future, mutably, or `None` once the timer has won (see
    /// [`get_ref`](Self::get_ref)). Changing it does not move the deadline.
    pub fn get_mut(&mut self) -> Option<&mut F> {
        match &mut self.inner {
            Inner::Running { fut } => Some(fut),
            Inner::Gone => None,
        }
    }

    /// The pinned inner future, or `None` once the timer has won (see
    /// [`get_ref`](Self::get_ref)): for a future that is not `Unpin` and
    /// is changed through `Pin<&mut Self>` (a timer's `reset`, say).
    /// Changing it does not move the deadline.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let mut fut = std::pin::pin!(opguard::timeout_async!(5, async { 7 }));
    /// assert!(fut.as_mut().get_pin_mut().is_some());
    /// assert_eq!(fut.await, Ok(7));
    /// # });
    /// ```
    pub fn get_pin_mut(self: Pin<&mut Self>) -> Option<Pin<&mut F>> {
        match self.project().inner.project() {
            InnerProj::Running { fut } => Some(fut),
            InnerProj::Gone => None,
        }
    }

    /// Takes the inner future out, without its timeout, or `None` once the
    /// timer has won (see [`get_ref`](Self::get_ref)). A started timer is
    /// let go first: it wakes nothing at its deadline, and the inner future
    /// runs on with no deadline.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let fut = opguard::timeout_async!(5, std::future::ready(7));
    /// let bare = fut.into_inner().expect("the timer has not won");
    /// assert_eq!(bare.await, 7);
    /// # });
    /// ```
    pub fn into_inner(self) -> Option<F> {
        let Timeout { inner, race } = self;
        // Out of the timer before the future is handed over.
        drop(race);
        match inner {
            Inner::Running { fut } => Some(fut),
            Inner::Gone => None,
        }
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, TimeoutError>;

    // Always inlined: where the compiler declines to (an await in a large
    // function, as in the loops of smol's and futures' `block_on`), the
    // ready path pays a call and redoes checks that inlining folds away:
    // 54 instructions per ready call against 31 to 41 inlined, the bare
    // future's 19 to 20. What is not needed at once (starting the timer,
    // its end) stays out of line (`scripts/ready_callgrind.sh` counts).
    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let (mut inner, race) = (this.inner, this.race);
        // The first poll, the one that matters for a future ready at once,
        // goes straight to the inner future.
        match race.state {
            // Where a test clock was entered, the first poll that pends may
            // have started the timeout on it, which then takes one more look
            // (`first_pend_on_test_clock`); the ready path stays as it is.
            #[cfg(feature = "test-util")]
            State::Armed(_) | State::ArmedDefault | State::ArmedUntil(_) => {
                let polled = inner.as_mut().poll_fut(cx);
                if polled.is_pending() && crate::test_clock::any_entered() {
                    return first_pend_on_test_clock(inner, race, cx);
                }
                return then_the_timer(inner, race, polled, cx);
            }
            #[cfg(not(feature = "test-util"))]
            State::Armed(_) | State::ArmedDefault | State::ArmedUntil(_) => {}
            // A re-poll: past its deadline only rarely.
            State::Waiting { ref deadline, .. } => {
                // Fired, or broken (futures-timer's thread went away): it
                // ends now, whatever waker it registered.
                if deadline.has_ended() {
                    return poll_past_deadline(inner, race, cx);
                }
                // Polled with the waker it registered, the common case: its
                // tick had not fired before the inner future's poll, and
                // should it fire now, it wakes that waker.
                let registered = deadline.waits_with(cx.waker());
                let polled = inner.as_mut().poll_fut(cx);
                if registered && polled.is_pending() {
                    return Poll::Pending;
                }
                return then_the_timer(inner, race, polled, cx);
            }
            #[cfg(any(feature = "test-util", feature = "tokio"))]
            State::Controlled { .. } => return poll_controlled(inner, race, cx),
            State::Deferred { .. } => return poll_past_deadline(inner, race, cx),
            _ => {
                if let Some(settled) = poll_settled(inner.as_mut(), race) {
                    return settled;
                }
            }
        }
        let polled = inner.as_mut().poll_fut(cx);
        then_the_timer(inner, race, polled, cx)
    }
}

impl<F: Future> Inner<F> {
    #[inline(always)]
    fn poll_fut(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.project() {
            InnerProj::Running { fut } => fut.poll(cx),
            // `poll` settles a cancelled timeout (it panics) before this.
            InnerProj::Gone => unreachable!("the inner future is polled only while it runs"),
        }
    }
}

impl<F> Inner<F> {
    /// Drops the inner future in place, once the race has ended (its state
    /// is `Cancelled` already: the timer's end set it before reporting).
    /// Should its drop panic, it is `Gone` all the same, and not dropped
    /// again. Cold: kept out of the polls' code, whose pending path it
    /// otherwise lengthened (`scripts/paths_callgrind.sh`).
    #[cold]
    fn cancel(self: Pin<&mut Self>) {
        self.project_replace(Inner::Gone);
    }
}

/// After the inner future's poll: its output, or the timer's verdict.
#[inline(always)]
fn then_the_timer<F: Future>(
    inner: Pin<&mut Inner<F>>,
    race: &mut Race,
    polled: Poll<F::Output>,
    cx: &mut Context<'_>,
) -> Poll<Result<F::Output, TimeoutError>> {
    if let Poll::Ready(output) = polled {
        race.finish();
        return Poll::Ready(Ok(output));
    }
    match race.poll_elapsed(cx) {
        Poll::Ready(err) => {
            // The race has ended: the inner future goes before the error
            // does.
            inner.cancel();
            Poll::Ready(Err(err))
        }
        Poll::Pending => Poll::Pending,
    }
}

/// The states that settle before the inner future is polled: an invalid
/// timeout gives its error (unless the kill switch is off), and a finished
/// one panics; `None` goes on to the usual poll.
#[cold]
#[inline(never)]
fn poll_settled<F: Future>(
    inner: Pin<&mut Inner<F>>,
    race: &mut Race,
) -> Option<Poll<Result<F::Output, TimeoutError>>> {
    if let State::Invalid(_) | State::Cancelled = race.state {
        let err = race.reject()?;
        inner.cancel();
        return Some(Poll::Ready(Err(err)));
    }
    None
}

/// A poll of a timeout on a clock that a test controls: as the usual one,
/// and a test clock knows that its timeout is being polled meanwhile (it
/// does not auto-advance then).
#[cfg(any(feature = "test-util", feature = "tokio"))]
#[cold]
#[inline(never)]
fn poll_controlled<F: Future>(
    mut inner: Pin<&mut Inner<F>>,
    race: &mut Race,
    cx: &mut Context<'_>,
) -> Poll<Result<F::Output, TimeoutError>> {
    #[cfg(feature = "test-util")]
    let _polling = race
        .test_clock()
        .cloned()
        .map(crate::test_clock::Polling::new);
    let tapped = match race.state {
        State::Controlled {
            ref mut deadline, ..
        } => {
            if deadline.begin_poll() {
                return poll_past_deadline(inner, race, cx);
            }
            deadline.tap(cx.waker())
        }
        _ => None,
    };
    // The future wakes its task through the clock's tap, if it has one: a
    // test clock waits for the poll that follows.
    let polled = match tapped {
        Some(ref waker) => inner.as_mut().poll_fut(&mut Context::from_waker(waker)),
        None => inner.as_mut().poll_fut(cx),
    };
    then_the_timer(inner, race, polled, cx)
}

/// The first poll left the future pending where a test clock was entered:
/// the timer starts (on that clock, if it is entered on this thread), and
/// on a clock that auto-advances the future is polled once more at once,
/// with the clock's tap ([`poll_controlled`]). The first poll was over before
/// the timeout knew its clock, so a wake of its task there went unseen; the
/// clock sees one from this poll on, and waits for the task to run, where it
/// could otherwise move on while the task waits for its turn and time the
/// future out (a future that yields at its first poll, say).
#[cfg(feature = "test-util")]
#[cold]
#[inline(never)]
fn first_pend_on_test_clock<F: Future>(
    mut inner: Pin<&mut Inner<F>>,
    race: &mut Race,
    cx: &mut Context<'_>,
) -> Poll<Result<F::Output, TimeoutError>> {
    let started = then_the_timer(inner.as_mut(), race, Poll::Pending, cx);
    if started.is_pending() && race.test_clock().is_some_and(|clock| clock.auto_advances()) {
        return poll_controlled(inner, race, cx);
    }
    started
}

/// A poll once the deadline has passed (or its timer broke): the inner
/// future still gets its chance, and the timeouts inside it learn that this
/// deadline came, so that the earliest one reports (see `Enclosing`).
#[cold]
#[inline(never)]
fn poll_past_deadline<F: Future>(
    mut inner: Pin<&mut Inner<F>>,
    race: &mut Race,
    cx: &mut Context<'_>,
) -> Poll<Result<F::Output, TimeoutError>> {
    // A broken timer's deadline has not come: nothing to tell the timeouts
    // inside, and it ends with its own error.
    let came = match race.state {
        State::Waiting {
            ref mut deadline,
            length,
        } => {
            deadline.relay();
            // One woken at its staging tick moves on, or ends if its task
            // ran so late that its deadline has passed.
            deadline.catch_up(cx.waker(), || length.after())
        }
        _ => true,
    };
    let enclosing = came.then(|| Enclosing::enter(race.due()));
    let polled = inner.as_mut().poll_fut(cx);
    drop(enclosing);
    then_the_timer(inner, race, polled, cx)
}

impl Race {
    /// The inner future finished: its timer, if it started, is let go now
    /// rather than when the future is dropped, which may be later. On the
    /// ready path this also settles, before the output is made, what
    /// dropping the future has left to do (nothing).
    #[inline(always)]
    fn finish(&mut self) {
        self.state = State::Unbounded;
    }

    /// Starts the timer on the first pending poll; polls it on later ones.
    fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<TimeoutError> {
        let polled = match self.state {
            State::Armed(_) | State::ArmedDefault | State::ArmedUntil(_) => return self.start(cx),
            State::Waiting {
                ref mut deadline,
                length,
            } => deadline.poll(cx, || length.after()),
            #[cfg(any(feature = "test-util", feature = "tokio"))]
            State::Controlled {
                ref mut deadline, ..
            } => deadline.poll(cx),
            State::Unbounded => return Poll::Pending,
            // Polled again after it let an enclosing timeout report: that
            // one did not take over (this one runs in an executor of its
            // own inside it, say), so this one ends now.
            State::Deferred { due, length } => {
                return Poll::Ready(self.expire(length.after(), length.until(), due));
            }
            State::Invalid(_) | State::Cancelled => {
                unreachable!("`poll` settles these before the timer")
            }
        };
        match polled {
            Poll::Ready(outcome) => {
                let (due, after, until) = self.started();
                self.end(outcome, due, after, until, cx)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// A started timer's deadline, in its clock's nanoseconds.
    fn due(&self) -> u64 {
        match self.state {
            State::Waiting { ref deadline, .. } => deadline.due(),
            #[cfg(any(feature = "test-util", feature = "tokio"))]
            State::Controlled { ref deadline, .. } => deadline.due(),
            State::Deferred { due, .. } => due,
            _ => unreachable!("called for a started timer only"),
        }
    }

    /// A started timer's deadline (in its clock's nanoseconds), its timeout,
    /// and whether it was given as a deadline.
    #[inline(always)]
    fn started(&self) -> (u64, Duration, bool) {
        match self.state {
            State::Waiting {
                ref deadline,
                length,
            } => (deadline.due(), length.after(), length.until()),
            #[cfg(any(feature = "test-util", feature = "tokio"))]
            State::Controlled {
                ref deadline,
                length,
            } => (deadline.due(), length.after(), length.until()),
            _ => unreachable!("called for a started timer only"),
        }
    }

    /// Starts the timer: on a clock a test controls, if there is one, else
    /// on the shared timer.
    #[inline]
    fn start(&mut self, cx: &mut Context<'_>) -> Poll<TimeoutError> {
        if !crate::timeouts::enabled() {
            self.state = State::Unbounded;
            return Poll::Pending;
        }
        // A test clock entered on this thread (one relaxed load when none
        // ever was).
        #[cfg(feature = "test-util")]
        if crate::test_clock::any_entered()
            && let Some(started) = controlled::start_on_test_clock(cx, |now| self.wait(now))
        {
            return self.controlled(started, cx);
        }
        // The clock's reading, for the deadline form and the timer; tokio's
        // paused clock when it is paused.
        #[cfg(feature = "tokio")]
        let now = match controlled::tokio_reading() {
            Ok(paused) => match controlled::start_on_tokio(paused, cx, |now| self.wait(now)) {
                Some(started) => return self.controlled(started, cx),
                // Paused, but without timers: real time.
                None => Instant::now(),
            },
            Err(now) => now,
        };
        #[cfg(not(feature = "tokio"))]
        let now = Instant::now();
        let (after, until) = self.wait(|| now);
        if after.is_zero() {
            let due = crate::clock::saturating_nanos(
                now.saturating_duration_since(crate::clock::epoch()),
            );
            return self.end(Outcome::Elapsed, due, after, until, cx);
        }
        match timer::start(now, after, cx.waker()) {
            // Registered with `cx`'s waker already: no need to poll it.
            Start::Waiting(deadline) => {
                let ended = deadline.ended();
                self.state = State::Waiting {
                    deadline,
                    length: Length::new(after, until),
                };
                if let Some(outcome) = ended {
                    let due = self.due();
                    return self.end(outcome, due, after, until, cx);
                }
            }
            Start::Due(due) => return self.end(Outcome::Elapsed, due, after, until, cx),
            // Over a hundred million years away: it never comes.
            Start::Never => self.state = State::Unbounded,
        }
        Poll::Pending
    }

    /// How long a timer about to start waits, counted from `now` for a
    /// deadline, and whether it was given as a deadline.
    #[inline]
    fn wait(&self, now: impl Fn() -> Instant) -> (Duration, bool) {
        match self.state {
            State::Armed(after) => (after, false),
            State::ArmedDefault => (crate::timeouts::default(), false),
            State::ArmedUntil(at) => (at.saturating_duration_since(now()), true),
            _ => unreachable!("called before the timer starts"),
        }
    }

    /// The test clock this timeout waits on, if any.
    #[cfg(feature = "test-util")]
    fn test_clock(&self) -> Option<&std::sync::Arc<crate::test_clock::Shared>> {
        match &self.state {
            State::Controlled { deadline, .. } => deadline.test_clock(),
            _ => None,
        }
    }

    /// The timer started on a clock a test controls: the test clock entered
    /// on this thread, or tokio's paused clock.
    #[cfg(any(feature = "test-util", feature = "tokio"))]
    #[cold]
    #[inline(never)]
    fn controlled(
        &mut self,
        (after, until, started): (Duration, bool, controlled::Started),
        cx: &mut Context<'_>,
    ) -> Poll<TimeoutError> {
        match started {
            controlled::Started::Waiting(deadline) => {
                self.state = State::Controlled {
                    deadline,
                    length: Length::new(after, until),
                };
                Poll::Pending
            }
            controlled::Started::Due(due) => self.end(Outcome::Elapsed, due, after, until, cx),
            controlled::Started::Never => {
                self.state = State::Unbounded;
                Poll::Pending
            }
        }
    }

    /// The timer ended with `outcome`: the error, unless an enclosing
    /// timeout's deadline came first (at or before `due`), which then reports
    /// instead: this one pends once, asking for another poll in case the
    /// enclosing one does not take over, and keeps its own answer for then.
    /// Only once: an enclosing timeout takes over as soon as the poll
    /// returns to it, and one that this one is polled again under has not
    /// had that poll back (this one runs in an executor of its own, a
    /// `block_on` in the enclosing one's future, which would otherwise poll
    /// it without end).
    #[cold]
    #[inline(never)]
    fn end(
        &mut self,
        outcome: Outcome,
        due: u64,
        after: Duration,
        until: bool,
        cx: &mut Context<'_>,
    ) -> Poll<TimeoutError> {
        if outcome == Outcome::Elapsed && Enclosing::came_first(due) {
            self.state = State::Deferred {
                due,
                length: Length::new(after, until),
            };
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(match outcome {
            Outcome::Elapsed => self.expire(after, until, due),
            Outcome::NoTimer(missing) => self.no_timer(after, missing),
        })
    }

    #[cold]
    #[inline(never)]
    fn no_timer(&mut self, after: Duration, missing: Missing) -> TimeoutError {
        // Over before the report, as in `expire`.
        self.state = State::Cancelled;
        let err = TimeoutError::no_timer(self.site, after, missing);
        report::no_timer(&err);
        err
    }

    #[cold]
    #[inline(never)]
    fn expire(&mut self, after: Duration, until: bool, due: u64) -> TimeoutError {
        // Leaves the shared timer, and is over before the report: should the
        // logger (or a metrics recorder) panic there, the timeout polled
        // again panics as a finished one does, rather than run its future
        // on with no deadline. The caller drops the future next.
        self.state = State::Cancelled;
        let err = if until {
            TimeoutError::deadline(self.site, after)
        } else {
            TimeoutError::elapsed(self.site, after)
        };
        report::timed_out(self.site, &err, due);
        err
    }

    /// Settles the two states that `poll` checks before the inner future:
    /// an invalid timeout gives its error, or `None` while the kill switch is
    /// off (the future then runs without a timer); a `Cancelled` one means the
    /// future was polled again after it timed out, which panics.
    #[cold]
    #[inline(never)]
    fn reject(&mut self) -> Option<TimeoutError> {
        let State::Invalid(bad) = self.state else {
            panic!("`timeout_async!` future polled after it timed out");
        };
        if !crate::timeouts::enabled() {
            self.state = State::Unbounded;
            return None;
        }
        // Over before the report, as in `expire`: polled again after a
        // logger's panic there, it is not reported twice.
        self.state = State::Cancelled;
        let err = TimeoutError::invalid(self.site, bad);
        report::invalid_timeout(&err);
        Some(err)
    }
}

thread_local! {
    /// The earliest deadline, in `clock::now_nanos`, of the timeouts whose
    /// inner future this thread is polling and whose deadline has passed;
    /// `u64::MAX` when there is none.
    static ENCLOSING: Cell<u64> = const { Cell::new(u64::MAX) };
}

/// Nested timeouts whose deadlines fall in the same tick fire together, and
/// the inner one, polled first, would report its own deadline even when the
/// outer one's came first. While a timeout whose deadline has passed polls
/// its inner future, an `Enclosing` tells the timeouts inside: one whose own
/// deadline is not earlier lets the enclosing one report.
struct Enclosing {
    previous: u64,
}

impl Enclosing {
    fn enter(due: u64) -> Self {
        let previous = ENCLOSING
            .try_with(|e| e.replace(due.min(e.get())))
            .unwrap_or(u64::MAX);
        Enclosing { previous }
    }

    /// Whether an enclosing timeout's deadline came at or before `due`.
    fn came_first(due: u64) -> bool {
        ENCLOSING.try_with(|e| e.get() <= due).unwrap_or(false)
    }
}

impl Drop for Enclosing {
    fn drop(&mut self) {
        // Restored on unwinding too.
        let _ = ENCLOSING.try_with(|e| e.set(self.previous));
    }
}

impl<F> fmt::Debug for Timeout<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let waiting;
        let state: &dyn fmt::Debug = match &self.race.state {
            State::Armed(after) => after,
            State::Invalid(bad) => bad,
            State::ArmedDefault => &"default",
            State::ArmedUntil(at) => at,
            State::Waiting { length, .. } | State::Deferred { length, .. } => {
                waiting = length.after();
                &waiting
            }
            #[cfg(any(feature = "test-util", feature = "tokio"))]
            State::Controlled { length, .. } => {
                waiting = length.after();
                &waiting
            }
            State::Unbounded => &"none",
            State::Cancelled => &"cancelled",
        };
        f.debug_struct("Timeout")
            .field("timeout", state)
            .field(
                "started",
                &match self.race.state {
                    State::Waiting { .. } | State::Deferred { .. } => true,
                    #[cfg(any(feature = "test-util", feature = "tokio"))]
                    State::Controlled { .. } => true,
                    _ => false,
                },
            )
            .field("site", self.race.site)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::pin::pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::task::Waker;

    static SITE: Site = Site::new(Some("unit"), file!(), line!(), column!());

    /// A future that counts its polls and its drops; `pend` pends forever.
    struct Probe {
        polls: Arc<AtomicUsize>,
        drops: Arc<AtomicUsize>,
        pend: bool,
        panic_on_drop: bool,
    }

    impl Future for Probe {
        type Output = u8;
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<u8> {
            self.polls.fetch_add(1, SeqCst);
            if self.pend {
                Poll::Pending
            } else {
                Poll::Ready(7)
            }
        }
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            self.drops.fetch_add(1, SeqCst);
            if self.panic_on_drop {
                panic!("probe drop");
            }
        }
    }

    fn probe(pend: bool) -> (Probe, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let (polls, drops) = (Arc::default(), Arc::default());
        let p = Probe {
            polls: Arc::clone(&polls),
            drops: Arc::clone(&drops),
            pend,
            panic_on_drop: false,
        };
        (p, polls, drops)
    }

    /// A waker whose task's `Arc` counts the clones alive (the task and the
    /// waker hold two).
    fn counted_waker() -> (Arc<impl std::task::Wake>, Waker) {
        struct Task;
        impl std::task::Wake for Task {
            fn wake(self: Arc<Self>) {}
        }
        let task = Arc::new(Task);
        let waker = Waker::from(Arc::clone(&task));
        (task, waker)
    }

    fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn an_unpolled_timeout_drops_its_future_once() {
        let (p, polls, drops) = probe(false);
        drop(timeout(&SITE, 1, p));
        assert_eq!((polls.load(SeqCst), drops.load(SeqCst)), (0, 1));
    }

    #[test]
    fn a_finished_future_is_dropped_once_with_its_timeout() {
        let (p, _, drops) = probe(false);
        {
            let mut t = pin!(timeout(&SITE, 1, p));
            assert!(matches!(poll_once(t.as_mut()), Poll::Ready(Ok(7))));
            assert_eq!(drops.load(SeqCst), 0, "dropped before the Timeout");
        }
        assert_eq!(drops.load(SeqCst), 1);
    }

    #[test]
    fn a_finished_timeout_lets_its_timer_go_while_it_is_kept() {
        let (task, waker) = counted_waker();
        let mut cx = Context::from_waker(&waker);
        let mut pended = false;
        let inner = std::future::poll_fn(move |_| {
            if std::mem::replace(&mut pended, true) {
                Poll::Ready(7)
            } else {
                Poll::Pending
            }
        });
        let mut t = pin!(timeout(&SITE, 3600, inner));
        assert!(t.as_mut().poll(&mut cx).is_pending());
        assert_eq!(
            Arc::strong_count(&task),
            3,
            "its tick holds a clone of the waker"
        );
        assert!(matches!(t.as_mut().poll(&mut cx), Poll::Ready(Ok(7))));
        // Still alive: a finished future may be kept (in a `select!` loop, a
        // struct), and its timer would wake the task again at the deadline.
        assert_eq!(
            Arc::strong_count(&task),
            2,
            "the finished timeout still waits on its tick"
        );
        assert!(format!("{t:?}").contains("started: false"));
    }

    #[test]
    fn a_timed_out_future_is_dropped_once_before_the_error() {
        let (p, _, drops) = probe(true);
        {
            let mut t = pin!(timeout(&SITE, Duration::ZERO, p));
            match poll_once(t.as_mut()) {
                Poll::Ready(Err(e)) => assert!(e.is_elapsed()),
                other => panic!("expected a timeout, got {:?}", other.map(|r| r.is_ok())),
            }
            assert_eq!(drops.load(SeqCst), 1, "not dropped before the error");
            assert!(format!("{t:?}").contains("cancelled"));
        }
        assert_eq!(drops.load(SeqCst), 1, "dropped twice");
    }

    #[test]
    fn an_invalid_timeout_drops_its_future_unpolled() {
        let (p, polls, drops) = probe(false);
        {
            let mut t = pin!(timeout(&SITE, -1, p));
            assert!(matches!(poll_once(t.as_mut()), Poll::Ready(Err(e)) if e.is_invalid()));
            assert_eq!(drops.load(SeqCst), 1);
        }
        assert_eq!((polls.load(SeqCst), drops.load(SeqCst)), (0, 1));
    }

    #[test]
    fn polling_after_a_timeout_panics_with_a_message() {
        let (p, _, drops) = probe(true);
        let mut t = pin!(timeout(&SITE, Duration::ZERO, p));
        assert!(matches!(poll_once(t.as_mut()), Poll::Ready(Err(_))));
        let again = catch_unwind(AssertUnwindSafe(|| poll_once(t.as_mut()).is_ready()));
        let msg = again.unwrap_err();
        let msg = msg.downcast_ref::<&str>().copied().unwrap_or_default();
        assert!(msg.contains("polled after it timed out"), "{msg}");
        assert_eq!(drops.load(SeqCst), 1);
    }

    #[test]
    fn a_future_whose_drop_panics_on_cancel_is_not_dropped_again() {
        let (mut p, _, drops) = probe(true);
        p.panic_on_drop = true;
        let t = Box::pin(timeout(&SITE, Duration::ZERO, p));
        let mut t = AssertUnwindSafe(t);
        let out = catch_unwind(move || {
            let _ = poll_once(t.as_mut());
        });
        assert!(out.is_err(), "the drop's panic comes through");
        assert_eq!(drops.load(SeqCst), 1);
    }

    #[test]
    fn the_inner_future_is_reachable_until_the_timer_wins() {
        let (p, polls, drops) = probe(true);
        let mut t = timeout(&SITE, 3600, p);
        assert!(t.get_ref().is_some_and(|p| p.pend));
        // The future reached is the one polled: made ready through
        // `get_mut`, it finishes.
        t.get_mut().expect("not started").pend = false;
        assert!(matches!(poll_once(Pin::new(&mut t)), Poll::Ready(Ok(7))));
        assert_eq!(polls.load(SeqCst), 1);
        assert!(t.get_ref().is_some(), "a finished future is kept");
        let inner = t.into_inner().expect("the timer did not win");
        assert_eq!(drops.load(SeqCst), 0, "dropped on the way out");
        drop(inner);
        assert_eq!(drops.load(SeqCst), 1);
    }

    #[test]
    fn the_inner_future_is_gone_once_the_timer_won() {
        let (p, _, drops) = probe(true);
        let mut t = timeout(&SITE, Duration::ZERO, p);
        assert!(matches!(poll_once(Pin::new(&mut t)), Poll::Ready(Err(e)) if e.is_elapsed()));
        assert!(t.get_ref().is_none());
        assert!(t.get_mut().is_none());
        assert!(t.into_inner().is_none());
        assert_eq!(drops.load(SeqCst), 1);
        // An invalid timeout drops its future at its first poll, too.
        let (p, polls, drops) = probe(false);
        let mut t = timeout(&SITE, -1, p);
        assert!(t.get_ref().is_some(), "not dropped before its first poll");
        assert!(matches!(poll_once(Pin::new(&mut t)), Poll::Ready(Err(e)) if e.is_invalid()));
        assert!(t.get_ref().is_none());
        assert_eq!((polls.load(SeqCst), drops.load(SeqCst)), (0, 1));
    }

    pin_project! {
        /// Pends until opened, which takes it pinned; not `Unpin`.
        struct Gate {
            open: bool,
            #[pin]
            pinned: std::marker::PhantomPinned,
        }
    }

    impl Gate {
        fn open(self: Pin<&mut Self>) {
            *self.project().open = true;
        }
    }

    impl Future for Gate {
        type Output = u8;
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<u8> {
            if self.open {
                Poll::Ready(9)
            } else {
                Poll::Pending
            }
        }
    }

    #[test]
    fn a_pinned_inner_future_is_reachable_pinned_until_the_timer_wins() {
        let gate = || Gate {
            open: false,
            pinned: std::marker::PhantomPinned,
        };
        let mut t = pin!(timeout(&SITE, 3600, gate()));
        assert!(poll_once(t.as_mut()).is_pending());
        t.as_mut().get_pin_mut().expect("not won").open();
        assert!(matches!(poll_once(t.as_mut()), Poll::Ready(Ok(9))));

        let mut t = pin!(timeout(&SITE, Duration::ZERO, gate()));
        assert!(matches!(poll_once(t.as_mut()), Poll::Ready(Err(e)) if e.is_elapsed()));
        assert!(t.as_mut().get_pin_mut().is_none());
    }

    #[test]
    fn taking_the_inner_future_out_lets_its_started_timer_go() {
        let (task, waker) = counted_waker();
        let mut cx = Context::from_waker(&waker);
        let (p, polls, drops) = probe(true);
        let mut t = timeout(&SITE, 3600, p);
        assert!(Pin::new(&mut t).poll(&mut cx).is_pending());
        assert_eq!(Arc::strong_count(&task), 3, "its tick holds a clone");
        let mut inner = t.into_inner().expect("the timer did not win");
        assert_eq!(
            Arc::strong_count(&task),
            2,
            "the timer still holds the waker"
        );
        // The same future, on with no deadline.
        inner.pend = false;
        assert_eq!(Pin::new(&mut inner).poll(&mut cx), Poll::Ready(7));
        assert_eq!((polls.load(SeqCst), drops.load(SeqCst)), (2, 0));
    }

    #[test]
    fn a_length_keeps_its_value_and_whether_it_was_a_deadline() {
        for after in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_micros(2_400),
            Duration::from_secs(30),
            Duration::from_secs(86_400),
            Duration::new(Length::EXACT_SECS - 1, 999_999_999),
        ] {
            for until in [false, true] {
                let length = Length::new(after, until);
                assert_eq!((length.after(), length.until()), (after, until));
            }
        }
    }

    #[test]
    fn a_length_past_78_hours_is_kept_to_the_millisecond_then_the_second() {
        let year = Duration::from_secs(365 * 86_400);
        let cases = [
            (
                Duration::new(Length::EXACT_SECS, 1),
                Duration::from_millis(1),
            ),
            (
                year + Duration::from_nanos(999_999),
                Duration::from_millis(1),
            ),
            (year * 8_900, Duration::from_millis(1)),
            (year * 9_000, Duration::from_secs(1)),
            (year * 146_000_000, Duration::from_secs(1)),
            (year * 285_000_000, Duration::from_secs(1)),
        ];
        for (after, within) in cases {
            for until in [false, true] {
                let length = Length::new(after, until);
                assert_eq!(length.until(), until);
                let kept = length.after();
                assert!(
                    kept <= after && after - kept < within,
                    "{after:?} kept as {kept:?}"
                );
            }
        }
        // Past 285 million years (no timeout that long starts), held there.
        let held = Length::new(Duration::MAX, true);
        assert_eq!(held.after(), Duration::from_secs(Length::MAX_SECS));
        assert!(held.until());
    }

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn a_started_timeout_around_a_small_future_fits_in_a_cache_line() {
        assert_eq!(std::mem::size_of::<State>(), 40);
        assert_eq!(std::mem::size_of::<Timeout<std::future::Ready<u32>>>(), 56);
    }
}
