//! Deadlines on a clock that a test controls instead of real time: the test
//! clock a timeout was made under (feature `test-util`), or the paused clock
//! of the tokio runtime it is polled in (feature `tokio`).

use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The test clock a timeout was made under, if any.
#[cfg(feature = "test-util")]
pub(crate) type Clock<'a> = Option<&'a std::sync::Arc<crate::test_clock::Shared>>;
#[cfg(not(feature = "test-util"))]
pub(crate) type Clock<'a> = std::marker::PhantomData<&'a ()>;

/// A started deadline on a controlled clock.
pub(crate) enum Deadline {
    #[cfg(feature = "test-util")]
    Test(crate::test_clock::TestDeadline),
    #[cfg(feature = "tokio")]
    Tokio {
        sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
        due: u64,
    },
}

/// How a deadline on a controlled clock started.
pub(crate) enum Started {
    Waiting(Box<Deadline>),
    /// Due already, at this time (`Deadline::due`'s units).
    Due(u64),
    Never,
}

/// Starts a deadline on the controlled clock, if there is one: `wait` says,
/// from the clock's reading, how long to wait and whether it is a deadline.
/// `None`: real time it is.
pub(crate) fn start(
    clock: Clock<'_>,
    cx: &mut Context<'_>,
    wait: impl FnOnce(&dyn Fn() -> Instant) -> (Duration, bool),
) -> Option<(Duration, bool, Started)> {
    #[cfg(feature = "test-util")]
    if let Some(clock) = clock {
        return Some(start_test(clock, cx, wait));
    }
    #[cfg(not(feature = "test-util"))]
    let _ = clock;
    #[cfg(feature = "tokio")]
    if let Some(now) = tokio_paused_now() {
        return Some(start_tokio(now, cx, wait));
    }
    #[cfg(not(feature = "tokio"))]
    let _ = (cx, wait);
    None
}

#[cfg(feature = "test-util")]
fn start_test(
    clock: &std::sync::Arc<crate::test_clock::Shared>,
    cx: &mut Context<'_>,
    wait: impl FnOnce(&dyn Fn() -> Instant) -> (Duration, bool),
) -> (Duration, bool, Started) {
    use crate::test_clock::Started as S;
    // A deadline form counts from the clock's own reading.
    let now = clock.now();
    let (after, until) = wait(&|| now);
    let started = match clock.start(after, cx.waker()) {
        S::Waiting(deadline) => Started::Waiting(Box::new(Deadline::Test(deadline))),
        S::Due(due) => Started::Due(due),
        S::Never => Started::Never,
    };
    (after, until, started)
}

/// What tokio's clock reads, when it is paused: two readings in a row are
/// equal only on a paused clock (a running one moves by nanoseconds between
/// them), and tokio pauses only current-thread runtimes, whose clock does
/// not move while a task is polled.
#[cfg(feature = "tokio")]
fn tokio_paused_now() -> Option<tokio::time::Instant> {
    let first = tokio::time::Instant::now();
    (tokio::time::Instant::now() == first).then_some(first)
}

#[cfg(feature = "tokio")]
fn start_tokio(
    now: tokio::time::Instant,
    cx: &mut Context<'_>,
    wait: impl FnOnce(&dyn Fn() -> Instant) -> (Duration, bool),
) -> (Duration, bool, Started) {
    let (after, until) = wait(&|| now.into_std());
    let Some(at) = now.checked_add(after) else {
        return (after, until, Started::Never);
    };
    let due = nanos(at);
    if after.is_zero() {
        return (after, until, Started::Due(due));
    }
    let mut sleep = Box::pin(tokio::time::sleep_until(at));
    let started = match sleep.as_mut().poll(cx) {
        Poll::Ready(()) => Started::Due(due),
        Poll::Pending => Started::Waiting(Box::new(Deadline::Tokio { sleep, due })),
    };
    (after, until, started)
}

/// A tokio instant in the units of `clock::now_nanos`.
#[cfg(feature = "tokio")]
fn nanos(at: tokio::time::Instant) -> u64 {
    crate::clock::saturating_nanos(
        at.into_std()
            .saturating_duration_since(crate::clock::epoch()),
    )
}

impl Deadline {
    /// Ready once the clock has reached the deadline; otherwise keeps `cx`'s
    /// waker registered.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            #[cfg(feature = "test-util")]
            Deadline::Test(d) => d.poll(cx),
            #[cfg(feature = "tokio")]
            Deadline::Tokio { sleep, .. } => sleep.as_mut().poll(cx),
        }
    }

    /// Whether the clock has reached the deadline.
    pub(crate) fn has_fired(&self) -> bool {
        match self {
            #[cfg(feature = "test-util")]
            Deadline::Test(d) => d.has_fired(),
            #[cfg(feature = "tokio")]
            Deadline::Tokio { sleep, .. } => sleep.is_elapsed(),
        }
    }

    /// The deadline, for comparing nested timeouts on the same clock.
    pub(crate) fn due(&self) -> u64 {
        match self {
            #[cfg(feature = "test-util")]
            Deadline::Test(d) => d.due(),
            #[cfg(feature = "tokio")]
            Deadline::Tokio { due, .. } => *due,
        }
    }
}
