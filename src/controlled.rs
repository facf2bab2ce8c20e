//! Deadlines on a clock that a test controls instead of real time: the test
//! clock entered where a timeout starts (feature `test-util`), or the paused
//! clock of the tokio runtime it starts in (feature `tokio`).

#[cfg(feature = "tokio")]
use std::panic::AssertUnwindSafe;
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::timer::Outcome;

/// A started deadline on a controlled clock. A trait object, so that a
/// `Timeout`'s drop needs no code for the kinds of clock (tokio's `Sleep`
/// has a large drop) on the paths that never use one. Unwind-safe, as the
/// shared timer's deadline is: a `Timeout` has the same auto traits with
/// every feature (features add, never take away).
pub(crate) trait Deadline: Send + Sync + UnwindSafe + RefUnwindSafe {
    /// Ready once the clock has reached the deadline, or once it never can
    /// (a test clock whose every handle was dropped, a tokio runtime that
    /// shut down); otherwise keeps `cx`'s waker registered.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Outcome>;

    /// A poll of its timeout begins: whether the clock has reached the
    /// deadline. (A test clock also learns that whatever woke the timeout
    /// has been seen.)
    fn begin_poll(&self) -> bool;

    /// The deadline, for comparing nested timeouts on the same clock.
    fn due(&self) -> u64;

    /// The test clock it waits on, if it does.
    #[cfg(feature = "test-util")]
    fn test_clock(&self) -> Option<&std::sync::Arc<crate::test_clock::Shared>> {
        None
    }

    /// The waker to poll the timed future with instead of `waker`, if the
    /// clock needs to see its wakes (a test clock does).
    fn tap(&mut self, _waker: &std::task::Waker) -> Option<std::task::Waker> {
        None
    }
}

#[cfg(feature = "test-util")]
impl Deadline for crate::test_clock::TestDeadline {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Outcome> {
        crate::test_clock::TestDeadline::poll(self, cx)
    }

    fn begin_poll(&self) -> bool {
        crate::test_clock::TestDeadline::begin_poll(self)
    }

    fn due(&self) -> u64 {
        crate::test_clock::TestDeadline::due(self)
    }

    fn test_clock(&self) -> Option<&std::sync::Arc<crate::test_clock::Shared>> {
        Some(self.clock())
    }

    fn tap(&mut self, waker: &std::task::Waker) -> Option<std::task::Waker> {
        Some(crate::test_clock::TestDeadline::tap(self, waker))
    }
}

/// A deadline on tokio's paused clock.
#[cfg(feature = "tokio")]
struct TokioDeadline {
    /// Asserted unwind-safe: tokio's `Sleep` is not `RefUnwindSafe` only
    /// because the runtime handle it holds keeps the user's task hooks
    /// (`Arc<dyn Fn .. + Send + Sync>`, without that bound), not because
    /// a panic leaves the timer in a state one must not look at. Without
    /// this, turning the `tokio` feature on would take `UnwindSafe` away from
    /// every `Timeout`, and code that compiles without the feature would
    /// not with it.
    sleep: AssertUnwindSafe<std::pin::Pin<Box<tokio::time::Sleep>>>,
    due: u64,
}

#[cfg(feature = "tokio")]
impl Deadline for TokioDeadline {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Outcome> {
        // tokio panics when a timer of a runtime that has shut down is
        // polled. A timeout that outlived its runtime ends with an error
        // instead; tokio's panic message is still printed by the panic hook.
        // Such a `Sleep` reads as elapsed: the runtime fired every timer as
        // it shut down. One that does not is still in a live runtime's
        // wheel, and its panic is the waker's (tokio clones a new one): that
        // goes on as it is, as it does from every other timer.
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.sleep.as_mut().poll(cx))) {
            Ok(polled) => polled.map(|()| Outcome::Elapsed),
            Err(payload) if self.sleep.is_elapsed() => {
                crate::contain::drop_payload(payload);
                Poll::Ready(Outcome::NoTimer(crate::error::Missing::TokioRuntime))
            }
            Err(payload) => std::panic::resume_unwind(payload),
        }
    }

    fn begin_poll(&self) -> bool {
        self.sleep.is_elapsed()
    }

    fn due(&self) -> u64 {
        self.due
    }
}

/// How a deadline on a controlled clock started.
pub(crate) enum Started {
    Waiting(Box<dyn Deadline>),
    /// Due already, at this time (`Deadline::due`'s units).
    Due(u64),
    Never,
}

/// Starts a deadline on the test clock entered on this thread, if one is:
/// `wait` says, from the clock's reading, how long to wait and whether it is
/// a deadline.
#[cfg(feature = "test-util")]
#[cold]
pub(crate) fn start_on_test_clock(
    cx: &mut Context<'_>,
    wait: impl FnOnce(&dyn Fn() -> Instant) -> (Duration, bool),
) -> Option<(Duration, bool, Started)> {
    let clock = crate::test_clock::current()?;
    // A deadline form counts from the clock's own reading.
    let now = clock.now();
    let (after, until) = wait(&|| now);
    Some((after, until, clock.start(after, cx.waker())))
}

/// What tokio's clock reads: `Ok` when it is paused, `Err` with the real
/// time otherwise. Two readings in a row differ on a running clock, which is
/// the real clock: the second one is what the real timer needs anyway (one
/// extra clock read). Equal readings mean a paused clock, whose time does
/// not move while a task is polled (tokio pauses only current-thread
/// runtimes), or a running one read twice within its resolution: 41.7 ns on
/// Apple silicon, 100 ns on Windows, where two readings in a row are often
/// equal. Then the real clock is watched until it moves, and tokio's read
/// again ([`stands_still`]).
#[cfg(feature = "tokio")]
#[inline]
pub(crate) fn tokio_reading() -> Result<tokio::time::Instant, Instant> {
    let first = tokio::time::Instant::now();
    let second = tokio::time::Instant::now();
    if second != first {
        return Err(second.into_std());
    }
    match stands_still(&second, tokio::time::Instant::now, Instant::now) {
        Some(true) => Ok(second),
        Some(false) => Err(tokio::time::Instant::now().into_std()),
        // A real clock that barely moves: real time, whose deadline is
        // never early.
        None => Err(Instant::now()),
    }
}

/// How many readings of the real clock [`stands_still`] waits for it to
/// move: some microseconds, many times the resolution of the clocks that
/// `Instant` reads.
#[cfg(any(feature = "tokio", test))]
const STILL_READINGS: u32 = 1_000;

/// Whether a clock (`clock`), read as `reading` twice in a row, stands still
/// rather than moves too little to tell: once the real clock (`real`) has
/// moved, a running clock, which moves with it, reads past `reading`, and a
/// paused one does not. `None` when the real clock does not move within
/// [`STILL_READINGS`] readings.
#[cfg(any(feature = "tokio", test))]
#[cold]
#[inline(never)]
fn stands_still<T: PartialEq, R: PartialEq>(
    reading: &T,
    clock: impl Fn() -> T,
    real: impl Fn() -> R,
) -> Option<bool> {
    let before = real();
    for _ in 0..STILL_READINGS {
        if real() != before {
            return Some(clock() == *reading);
        }
        std::hint::spin_loop();
    }
    None
}

/// Starts a deadline on tokio's paused clock, which reads `now`. `None`
/// when the runtime has no timers (tokio lets a current-thread runtime
/// without `enable_time` pause its clock, and then panics in
/// `sleep_until`): the timeout runs on real time instead.
#[cfg(feature = "tokio")]
#[cold]
pub(crate) fn start_on_tokio(
    now: tokio::time::Instant,
    cx: &mut Context<'_>,
    wait: impl FnOnce(&dyn Fn() -> Instant) -> (Duration, bool),
) -> Option<(Duration, bool, Started)> {
    let (after, until) = wait(&|| now.into_std());
    let Some(at) = now.checked_add(after) else {
        return Some((after, until, Started::Never));
    };
    let due = nanos(at);
    if after.is_zero() {
        return Some((after, until, Started::Due(due)));
    }
    let sleep = crate::contain::contain(|| tokio::time::sleep_until(at))?;
    let mut sleep = Box::pin(sleep);
    let started = match sleep.as_mut().poll(cx) {
        Poll::Ready(()) => Started::Due(due),
        Poll::Pending => Started::Waiting(Box::new(TokioDeadline {
            sleep: AssertUnwindSafe(sleep),
            due,
        })),
    };
    Some((after, until, started))
}

/// A tokio instant in the units of `clock::now_nanos`.
#[cfg(feature = "tokio")]
fn nanos(at: tokio::time::Instant) -> u64 {
    crate::clock::saturating_nanos(
        at.into_std()
            .saturating_duration_since(crate::clock::epoch()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A clock of `ticks`, read through `reads`: it moves one tick every
    /// `every` readings (`0`: never).
    fn coarse<'a>(reads: &'a Cell<u64>, every: u64) -> impl Fn() -> u64 + 'a {
        move || {
            let n = reads.get();
            reads.set(n + 1);
            n.checked_div(every).unwrap_or(0)
        }
    }

    #[test]
    fn a_running_clock_read_twice_within_its_resolution_does_not_stand_still() {
        // The real clock and the one asked about are the same, running
        // clock, which moves once every 5 readings.
        let reads = Cell::new(2);
        let clock = coarse(&reads, 5);
        assert_eq!(stands_still(&0, &clock, &clock), Some(false));
    }

    #[test]
    fn a_paused_clock_stands_still_while_the_real_one_moves() {
        let reads = Cell::new(0);
        assert_eq!(stands_still(&7, || 7, coarse(&reads, 5)), Some(true));
    }

    #[test]
    fn a_real_clock_that_does_not_move_says_nothing() {
        let reads = Cell::new(0);
        assert_eq!(stands_still(&7, || 7, coarse(&reads, 0)), None);
        assert_eq!(reads.get(), u64::from(STILL_READINGS) + 1, "bounded");
    }
}
