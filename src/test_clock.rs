//! A clock that tests drive (feature `test-util`): timeouts bound to it wait
//! for it, not for real time, on any executor.
//!
//! ```
//! use opguard::test_clock::TestClock;
//! use opguard::timeout_async;
//! use std::time::Duration;
//!
//! # futures::executor::block_on(async {
//! // Jumps to the next deadline once every timeout bound to it waits.
//! let clock = TestClock::auto_advancing();
//! let hour = clock.bind(async {
//!     timeout_async!(3600, std::future::pending::<()>()).await
//! });
//! assert!(hour.await.unwrap_err().is_elapsed()); // at once, in real time
//! assert_eq!(clock.elapsed(), Duration::from_secs(3600));
//! # });
//! ```
//!
//! # Which timeouts follow it
//! A timeout follows the clock entered on the thread where it starts: its
//! first poll that leaves it pending, which is where its deadline is set. It
//! keeps that clock wherever it is polled afterwards. [`TestClock::enter`]
//! enters a clock on this thread until the guard drops;
//! [`TestClock::bind`] enters it around every poll of a future, on whichever
//! thread an executor polls it, which is what a multi-thread executor or a
//! spawned task needs. Tests that run in parallel each make their own clock
//! and do not see each other's. A timeout that starts where no clock is
//! entered runs on real time, as without the feature.
//!
//! # How it moves
//! The clock starts at the instant it was made and stands still:
//! [`advance`](TestClock::advance) moves it by a duration and
//! [`advance_to_next`](TestClock::advance_to_next) to the earliest deadline
//! waiting on it. Deadlines fire in deadline order, when the clock reaches
//! them and never before, and wake their tasks as a real deadline would.
//! The clock goes no further than about 146 million years from its start,
//! where a real timer counts no further: a deadline past that never comes,
//! as on real time (`timeout_async!(u64::MAX, ..)` waits on nothing), and
//! `advance(Duration::MAX)` leaves the clock there, still readable.
//! Such a clock moves only through its handles (a [`Bound`] future or an
//! [`Entered`] guard holds one too): once every handle is dropped, nothing
//! can move it to the deadlines still waiting on it, so rather than hang,
//! those timeouts are woken and end with an error
//! ([`TimeoutError::is_no_timer`](crate::TimeoutError::is_no_timer)), as a
//! timeout does whose timer cannot run. Keep a handle while they wait.
//!
//! An auto-advancing clock ([`TestClock::auto_advancing`]) also moves by
//! itself, to the next deadline, once every timeout waiting on it is idle:
//! none is being polled, and none has been started, polled or dropped for
//! [`settle`](TestClock::set_settle) of real time (1 ms unless set). So a test
//! that awaits a 30 s timeout finishes at once. A timeout that is woken,
//! by its deadline or by its own future waking its task (a yield, a busy
//! loop, a message from another thread), holds the clock until it is polled
//! or dropped, however long its task waits for its turn: what the task does
//! next (start the next timeout, say) counts from where the clock stood.
//! A timeout's very first poll is over before it knows its clock, so a
//! timeout that starts on an auto-advancing clock polls its future once
//! more at once, where the clock sees a wake: a future that yields at its
//! first poll is not timed out while its task waits for its turn. (Like any
//! spurious poll, one that every future must allow: it may come before the
//! future woke its task.)
//!
//! Should a woken timeout not be polled within a second of real time (or
//! `settle`, if longer), the clock moves on without it and logs a warning. A
//! poll of a timeout holds the clock however long it takes, unless it may be
//! waiting for the clock itself: when a timeout started on this clock during
//! that poll, on its thread, still waits and nothing else has happened on the
//! clock for that second, the clock moves on and logs a warning, so a future
//! that blocks its thread on a timeout of the same clock (a nested
//! `block_on`) is released at that deadline rather than hang. The clock
//! cannot see tasks that hold no timeout of its own: a task that wakes a
//! timed future after more real time than `settle` (real I/O, a thread, a
//! timer of another kind) may find it timed out; use a longer settle, or a
//! clock that moves only when told. It goes on moving while timeouts wait on
//! it, its handles dropped or not.
//!
//! # Cost
//! Meant for tests (enable the feature in `[dev-dependencies]`). Where no
//! clock was ever entered in the process, a timeout that starts pays one
//! relaxed atomic load, and a timeout ready at its first poll nothing. A
//! timeout on a test clock takes the clock's lock on each poll.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use crate::controlled::Started;
use crate::error::Missing;
use crate::timer::Outcome;

/// A clock for tests: timeouts bound to it wait for it, not for real time.
/// See the [module docs](self). Cloning gives another handle to the same
/// clock.
#[derive(Clone)]
pub struct TestClock {
    handle: Arc<Handle>,
}

/// What every handle of one clock shares: the clock, let go when the last
/// handle drops. The timeouts on the clock hold the clock, not a handle.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.let_go();
    }
}

/// The clock itself, shared by its handles and the timeouts bound to it.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Told when something that the auto-advance waits on changes.
    changed: Condvar,
    /// Timeouts bound to this clock that are being polled right now.
    in_poll: AtomicUsize,
    /// Bumped on every poll, start and drop of a timeout on this clock.
    activity: AtomicU64,
    /// How many times the auto-advance thread has looked.
    #[cfg(test)]
    looks: AtomicU64,
}

struct State {
    /// The instant the clock was made; it reads `start + elapsed`.
    start: Instant,
    /// At most [`State::horizon`].
    elapsed: Duration,
    /// How far the clock can move ([`horizon`]): deadlines past it never
    /// come.
    horizon: Duration,
    /// Waiting deadlines, by (due, order of start): the waker to wake.
    waiting: BTreeMap<(Duration, u64), Option<Waker>>,
    /// Started timeouts woken (their deadline fired, or their future woke
    /// its task) and not polled or dropped since: their tasks are still to
    /// run, so the auto-advance waits for them (up to [`patience`]).
    to_poll: BTreeSet<(Duration, u64)>,
    /// Timeouts started on a thread while it was polling a timeout on this
    /// clock, for as long as that poll lasts: one still waiting while the
    /// poll goes on may be what the poll waits for (see [`drive`]).
    inside_polls: BTreeSet<(Duration, u64)>,
    next_order: u64,
    /// Auto-advance after this much quiet real time; `None`: only when told.
    settle: Option<Duration>,
    /// The auto-advance thread runs.
    driven: bool,
    /// Every handle was dropped while the clock did not auto-advance:
    /// nothing can move it any more, and its deadlines end with an error.
    stranded: bool,
}

/// Whether any clock was ever entered in this process: until then a timeout
/// that starts does not look for one.
static ANY_ENTERED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The clocks entered on this thread and not yet left, each with its
    /// guard's number; the last is the one in force. A guard dropped out of
    /// order takes out its own entry, wherever it is.
    static ENTERED: RefCell<Vec<(u64, TestClock)>> = const { RefCell::new(Vec::new()) };
    /// The number of the next guard made on this thread.
    static NEXT_GUARD: Cell<u64> = const { Cell::new(0) };
    /// The polls of timeouts on test clocks under way on this thread,
    /// innermost last: each with its clock and the timeouts started on that
    /// clock during it ([`Polling`]).
    static POLLS: RefCell<Vec<PollFrame>> = const { RefCell::new(Vec::new()) };
}

/// A poll of a timeout under way on this thread ([`POLLS`]).
struct PollFrame {
    clock: *const Shared,
    /// The timeouts started on `clock` during it.
    started: Vec<(Duration, u64)>,
}

impl TestClock {
    /// A clock that stands still at this instant until told to move.
    pub fn new() -> Self {
        let start = Instant::now();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                start,
                elapsed: Duration::ZERO,
                horizon: horizon(start),
                waiting: BTreeMap::new(),
                to_poll: BTreeSet::new(),
                inside_polls: BTreeSet::new(),
                next_order: 0,
                settle: None,
                driven: false,
                stranded: false,
            }),
            changed: Condvar::new(),
            in_poll: AtomicUsize::new(0),
            activity: AtomicU64::new(0),
            #[cfg(test)]
            looks: AtomicU64::new(0),
        });
        TestClock {
            handle: Arc::new(Handle { shared }),
        }
    }

    /// A clock that moves to the next deadline by itself once every timeout
    /// bound to it waits (like tokio's paused clock with auto-advance).
    pub fn auto_advancing() -> Self {
        let clock = TestClock::new();
        clock.set_settle(Some(Duration::from_millis(1)));
        clock
    }

    /// Auto-advance after `settle` of real time in which no timeout on this
    /// clock was started, polled or dropped; `None` turns auto-advance off.
    /// The first `Some` starts a thread that lives as long as the clock.
    ///
    /// # Panics
    /// If that thread cannot be spawned; the clock then does not
    /// auto-advance.
    pub fn set_settle(&self, settle: Option<Duration>) {
        let start_driver = {
            let mut s = self.handle.shared.lock();
            s.settle = settle;
            let start = settle.is_some() && !s.driven;
            s.driven |= start;
            start
        };
        self.handle.shared.changed.notify_all();
        if start_driver {
            let weak = Arc::downgrade(&self.handle.shared);
            let spawned = std::thread::Builder::new()
                .name("opguard-test-clock".into())
                .spawn(move || drive(weak));
            if let Err(err) = spawned {
                // The clock moves only by hand then, as it says, and a later
                // `Some` tries again.
                let mut s = self.handle.shared.lock();
                s.settle = None;
                s.driven = false;
                drop(s);
                panic!("opguard: cannot spawn the test clock's auto-advance thread: {err}");
            }
        }
    }

    /// Enters the clock on this thread: timeouts that start here until the
    /// guard drops follow it. Guards nest: while a guard lives, the clock of
    /// the latest guard still alive is in force, so dropping the latest
    /// restores the clock entered before it, and dropping an earlier one
    /// first (out of order) changes nothing until the later ones drop too.
    ///
    /// # Panics
    /// From a thread-local's destructor once this thread's list of entered
    /// clocks is gone: the clock cannot be entered there (a timeout started
    /// there follows real time).
    pub fn enter(&self) -> Entered {
        ANY_ENTERED.store(true, Ordering::Relaxed);
        let id = NEXT_GUARD.with(|n| {
            let id = n.get();
            n.set(id.wrapping_add(1));
            id
        });
        ENTERED.with(|e| e.borrow_mut().push((id, self.clone())));
        Entered {
            id,
            _not_send: std::marker::PhantomData,
        }
    }

    /// Enters the clock around every poll of `fut`, on whichever thread
    /// polls it: the timeouts that start inside `fut` follow this clock.
    /// Each poll panics where [`enter`](Self::enter) would.
    pub fn bind<F: Future>(&self, fut: F) -> Bound<F> {
        Bound {
            clock: self.clone(),
            fut: Box::pin(fut),
        }
    }

    /// What the clock reads: the instant it was made plus how far it moved.
    /// For `timeout_async!(until = clock.now() + d, ..)`.
    pub fn now(&self) -> Instant {
        self.handle.shared.now()
    }

    /// How far the clock has moved since it was made.
    pub fn elapsed(&self) -> Duration {
        self.handle.shared.lock().elapsed
    }

    /// How many started timeouts wait on this clock.
    pub fn waiting(&self) -> usize {
        self.handle.shared.lock().waiting.len()
    }

    /// Moves the clock by `by`, firing in deadline order the deadlines it
    /// reaches. It stops at about 146 million years from where it started,
    /// where a real timer counts no further (so `advance(Duration::MAX)`
    /// fires every deadline that can come, and the clock still reads).
    ///
    /// # Panics
    /// If a waker panics when woken, after every waker has been woken.
    pub fn advance(&self, by: Duration) {
        let s = self.handle.shared.lock();
        let to = s.elapsed.saturating_add(by).min(s.horizon);
        self.handle.shared.fire_until(s, to, false);
    }

    /// Moves the clock to the earliest waiting deadline and fires it (with
    /// any others due at the same time). Returns how far it moved, or `None`
    /// when no deadline waits (the clock stays).
    ///
    /// # Panics
    /// If a waker panics when woken, after every waker has been woken.
    pub fn advance_to_next(&self) -> Option<Duration> {
        self.handle.shared.advance_to_next(false)
    }
}

impl Default for TestClock {
    fn default() -> Self {
        TestClock::new()
    }
}

impl fmt::Debug for TestClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.handle.shared.lock();
        f.debug_struct("TestClock")
            .field("elapsed", &s.elapsed)
            .field("waiting", &s.waiting.len())
            .field("settle", &s.settle)
            .finish()
    }
}

/// The clock entered on this thread by [`TestClock::enter`], until dropped.
#[must_use = "the clock is entered only while the guard lives"]
pub struct Entered {
    /// This guard's entry on its thread's list of entered clocks.
    id: u64,
    /// Entered on one thread: the guard stays there.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for Entered {
    fn drop(&mut self) {
        let id = self.id;
        let left = ENTERED
            .try_with(|e| {
                let mut e = e.borrow_mut();
                // Almost always the last one.
                let at = e.iter().rposition(|(entry, _)| *entry == id)?;
                Some(e.remove(at).1)
            })
            .ok()
            .flatten();
        // The clock handle goes out after the list is let go: nothing is
        // dropped while it is borrowed (the last handle drops whatever the
        // clock still holds).
        drop(left);
    }
}

impl fmt::Debug for Entered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entered").finish_non_exhaustive()
    }
}

/// A future that enters its clock around every poll: made by
/// [`TestClock::bind`].
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Bound<F> {
    clock: TestClock,
    fut: Pin<Box<F>>,
}

impl<F: Future> Future for Bound<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _entered = self.clock.enter();
        self.fut.as_mut().poll(cx)
    }
}

impl<F> fmt::Debug for Bound<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bound")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// Whether a clock was ever entered in this process: until then, no
/// timeout looks for one.
#[inline]
pub(crate) fn any_entered() -> bool {
    ANY_ENTERED.load(Ordering::Relaxed)
}

/// The clock entered on this thread, for a timeout that starts.
pub(crate) fn current() -> Option<Arc<Shared>> {
    ENTERED
        .try_with(|e| {
            e.borrow()
                .last()
                .map(|(_, clock)| Arc::clone(&clock.handle.shared))
        })
        .ok()
        .flatten()
}

/// Marks a timeout on this clock as being polled, until dropped; the
/// timeouts started on the same clock and thread meanwhile are noted
/// (`State::inside_polls`) until then.
pub(crate) struct Polling(Arc<Shared>);

impl Polling {
    pub(crate) fn new(clock: Arc<Shared>) -> Self {
        clock.in_poll.fetch_add(1, Ordering::AcqRel);
        // Where this thread's list is gone (a thread-local's destructor),
        // the poll holds the clock as before, with nothing noted.
        let _ = POLLS.try_with(|p| {
            p.borrow_mut().push(PollFrame {
                clock: Arc::as_ptr(&clock),
                started: Vec::new(),
            });
        });
        Polling(clock)
    }
}

/// Notes, where this thread is polling a timeout on `clock`, that the
/// timeout `key` started during that poll.
fn note_start_inside_poll(clock: &Shared, s: &mut State, key: (Duration, u64)) {
    let noted = POLLS
        .try_with(|p| {
            let mut p = p.borrow_mut();
            let frame = p.iter_mut().rev().find(|f| std::ptr::eq(f.clock, clock))?;
            frame.started.push(key);
            Some(())
        })
        .ok()
        .flatten();
    if noted.is_some() {
        s.inside_polls.insert(key);
    }
}

impl Drop for Polling {
    fn drop(&mut self) {
        // Its own frame, the innermost with its clock: polls on one thread
        // nest, and end in the reverse order of their start.
        let started = POLLS
            .try_with(|p| {
                let mut p = p.borrow_mut();
                let at = p
                    .iter()
                    .rposition(|f| std::ptr::eq(f.clock, Arc::as_ptr(&self.0)))?;
                Some(p.remove(at).started)
            })
            .ok()
            .flatten()
            .unwrap_or_default();
        if !started.is_empty() {
            let mut s = self.0.lock();
            for key in &started {
                s.inside_polls.remove(key);
            }
        }
        self.0.activity.fetch_add(1, Ordering::Relaxed);
        if self.0.in_poll.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.changed.notify_all();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing of the user's runs under this lock; a poisoned one still
        // holds consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the clock moves by itself (see [`TestClock::set_settle`]).
    pub(crate) fn auto_advances(&self) -> bool {
        self.lock().settle.is_some()
    }

    /// What the clock reads now.
    pub(crate) fn now(&self) -> Instant {
        let s = self.lock();
        s.start + s.elapsed
    }

    /// Starts a deadline `after` from the clock's reading, with `waker`
    /// registered, unless it is due already or never comes.
    pub(crate) fn start(self: &Arc<Self>, after: Duration, waker: &Waker) -> Started {
        let waker = waker.clone();
        let mut s = self.lock();
        // Past where the clock can go it never comes, as on real time,
        // where such a timeout makes no timer.
        let Some(due) = s.elapsed.checked_add(after).filter(|&due| due <= s.horizon) else {
            return Started::Never;
        };
        if after.is_zero() {
            return Started::Due(crate::clock::saturating_nanos(due));
        }
        let key = (due, s.next_order);
        s.next_order += 1;
        s.waiting.insert(key, Some(waker));
        note_start_inside_poll(self, &mut s, key);
        drop(s);
        self.touch();
        Started::Waiting(Box::new(TestDeadline {
            clock: Arc::clone(self),
            key,
            tap: None,
            retired: Arc::new(AtomicBool::new(false)),
        }))
    }

    fn touch(&self) {
        self.activity.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_all();
    }

    /// Fires, in deadline order, every deadline due at or before `to`, and
    /// leaves the clock at `to`; the wakers run after the lock is let go
    /// ([`wake_each`], `contained` on the auto-advance thread).
    fn fire_until(&self, mut s: MutexGuard<'_, State>, to: Duration, contained: bool) {
        let mut woken = Vec::new();
        while let Some(entry) = s.waiting.first_entry() {
            if entry.key().0 > to {
                break;
            }
            let key = *entry.key();
            woken.extend(entry.remove());
            s.to_poll.insert(key);
            s.elapsed = s.elapsed.max(key.0);
        }
        s.elapsed = s.elapsed.max(to);
        drop(s);
        wake_each(woken, contained);
    }

    /// The last handle went: unless the clock moves by itself, nothing can
    /// move it any more, so the deadlines waiting on it are woken to end
    /// with an error rather than wait forever. The wakers run here, in the
    /// handle's drop, contained.
    fn let_go(&self) {
        let mut s = self.lock();
        if s.settle.is_some() {
            // Auto-advancing: it goes on moving while timeouts wait on it.
            return;
        }
        s.stranded = true;
        let woken: Vec<Waker> = s.waiting.values_mut().filter_map(Option::take).collect();
        drop(s);
        wake_each(woken, true);
    }

    fn advance_to_next(&self, contained: bool) -> Option<Duration> {
        let s = self.lock();
        let (&(due, _), _) = s.waiting.first_key_value()?;
        let moved = due.saturating_sub(s.elapsed);
        self.fire_until(s, due, contained);
        Some(moved)
    }
}

/// Wakes every waker in `woken`, with no lock held, even if some panic; the
/// first panic then goes on to the caller (a test's `advance`), unless
/// `contained` (the auto-advance thread, which must keep running, or a
/// handle's drop).
fn wake_each(woken: Vec<Waker>, contained: bool) {
    let mut first_panic = None;
    for waker in woken {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| waker.wake())) {
            if contained || first_panic.is_some() {
                crate::contain::drop_payload(payload);
            } else {
                first_panic = Some(payload);
            }
        }
    }
    if let Some(payload) = first_panic {
        resume_unwind(payload);
    }
}

/// How far a clock started at `start` can move: as far as a real timer
/// counts ([`crate::timer::HORIZON`]), and no further than an `Instant` can
/// hold, so that the clock can always be read (where an `Instant` ends
/// sooner, the farthest whole second it holds).
fn horizon(start: Instant) -> Duration {
    farthest(start, crate::timer::HORIZON)
}

/// The farthest whole second up to `limit` that `start` can be moved by.
fn farthest(start: Instant, limit: Duration) -> Duration {
    if start.checked_add(limit).is_some() {
        return limit;
    }
    let (mut fits, mut over) = (0, limit.as_secs());
    while over - fits > 1 {
        let mid = fits + (over - fits) / 2;
        if start.checked_add(Duration::from_secs(mid)).is_some() {
            fits = mid;
        } else {
            over = mid;
        }
    }
    Duration::from_secs(fits)
}

/// A started timeout's place on its test clock.
pub(crate) struct TestDeadline {
    clock: Arc<Shared>,
    key: (Duration, u64),
    /// The waker its future was last polled with, tapped ([`Tap`]).
    tap: Option<Arc<Tap>>,
    /// Set, under the clock's lock, when it drops: its taps then no longer
    /// hold the clock.
    retired: Arc<AtomicBool>,
}

impl TestDeadline {
    /// Ready once the clock has reached the deadline, or when it never can
    /// (every handle of a clock moved by hand dropped); otherwise keeps
    /// `cx`'s waker registered.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Outcome> {
        if self.has_ended() {
            return Poll::Ready(Outcome::Elapsed);
        }
        // Cloned, and the old one dropped, outside the lock: user code.
        let waker = cx.waker().clone();
        let old = {
            let mut s = self.clock.lock();
            if s.stranded {
                drop(s);
                drop(waker);
                return Poll::Ready(Outcome::NoTimer(Missing::TestClock));
            }
            match s.waiting.get_mut(&self.key) {
                Some(slot) => slot.replace(waker),
                None => {
                    s.to_poll.remove(&self.key);
                    drop(s);
                    drop(waker);
                    return Poll::Ready(Outcome::Elapsed);
                }
            }
        };
        drop(old);
        Poll::Pending
    }

    pub(crate) fn clock(&self) -> &Arc<Shared> {
        &self.clock
    }

    /// Whether the clock has reached the deadline, which ends its timeout:
    /// nothing is left to poll then. (A wake of its future during the poll
    /// that ends in this still holds the clock otherwise.)
    fn has_ended(&self) -> bool {
        let mut s = self.clock.lock();
        if s.waiting.contains_key(&self.key) {
            return false;
        }
        s.to_poll.remove(&self.key);
        true
    }

    /// A poll of its timeout begins: whatever woke the timeout counts as
    /// seen from here on (the auto-advance no longer waits for its task).
    /// Whether the clock has reached the deadline.
    pub(crate) fn begin_poll(&self) -> bool {
        let mut s = self.clock.lock();
        s.to_poll.remove(&self.key);
        !s.waiting.contains_key(&self.key)
    }

    /// The waker to poll the timed future with: `waker`, tapped, so that
    /// the clock learns when the future wakes its task (and waits for the
    /// poll that follows). The same tap while the task's waker stays the
    /// same.
    pub(crate) fn tap(&mut self, waker: &Waker) -> Waker {
        if let Some(tap) = &self.tap
            && tap.waker.will_wake(waker)
        {
            return Waker::from(Arc::clone(tap));
        }
        let tap = Arc::new(Tap {
            waker: waker.clone(),
            clock: Arc::downgrade(&self.clock),
            key: self.key,
            retired: Arc::clone(&self.retired),
        });
        // The old tap, and the waker in it, go with no lock held.
        drop(self.tap.replace(Arc::clone(&tap)));
        Waker::from(tap)
    }

    /// The deadline, in nanoseconds of the clock's own time.
    pub(crate) fn due(&self) -> u64 {
        crate::clock::saturating_nanos(self.key.0)
    }
}

impl Drop for TestDeadline {
    fn drop(&mut self) {
        let waker = {
            let mut s = self.clock.lock();
            self.retired.store(true, Ordering::Relaxed);
            s.to_poll.remove(&self.key);
            s.waiting.remove(&self.key)
        };
        drop(waker);
        self.clock.touch();
        // The tap, and the task's waker in it, drop after this, with no
        // lock held.
    }
}

/// The waker a timed future is polled with on a test clock: the task's
/// own, and waking it also tells the clock that the timeout is to be polled,
/// so that a future that wakes its task (a yield, a busy loop, a channel
/// fed from another thread) holds the clock until its task has run, however
/// long that task waits for its turn.
struct Tap {
    waker: Waker,
    /// Not kept alive by a waker that outlives it.
    clock: Weak<Shared>,
    key: (Duration, u64),
    /// Its timeout's deadline dropped: nothing is to be polled.
    retired: Arc<AtomicBool>,
}

impl Wake for Tap {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(clock) = self.clock.upgrade() {
            let mut s = clock.lock();
            // Read under the lock that its deadline's drop sets it under:
            // a wake that comes after the drop marks nothing.
            if !self.retired.load(Ordering::Relaxed) {
                s.to_poll.insert(self.key);
            }
            drop(s);
            clock.touch();
        }
        // The task's own waker: user code, with no lock held.
        self.waker.wake_by_ref();
    }
}

/// How long the auto-advance thread sleeps at least while no timeout waits
/// on its clock (a timeout that starts wakes it at once): also how long it
/// may outlive its clock.
const IDLE_NAP: Duration = Duration::from_millis(10);

/// How long, in real time, an auto-advancing clock that is otherwise quiet
/// waits for the tasks of woken timeouts to poll (or drop) them before it
/// moves on without them: `settle`, and at least a second, far longer than
/// a woken task waits for its turn even on a loaded machine. A timeout
/// woken and then never polled again slows the clock once, not at every
/// step.
fn patience(settle: Duration) -> Duration {
    settle.max(Duration::from_secs(1))
}

/// The auto-advance thread of one clock: runs while the clock lives and
/// auto-advances.
fn drive(weak: Weak<Shared>) {
    let mut seen = u64::MAX;
    // Since when the clock has been quiet but for woken timeouts whose
    // tasks have not run yet.
    let mut held_since: Option<Instant> = None;
    // Since when a poll of a timeout on the clock has been under way with
    // nothing else happening.
    let mut stuck_since: Option<Instant> = None;
    loop {
        let Some(shared) = weak.upgrade() else {
            return;
        };
        #[cfg(test)]
        shared.looks.fetch_add(1, Ordering::Relaxed);
        let mut s = shared.lock();
        let Some(settle) = s.settle else {
            s.driven = false;
            return;
        };
        let activity = shared.activity.load(Ordering::Relaxed);
        let idle = activity == seen;
        seen = activity;
        // A poll under way holds the clock, however long it takes, unless
        // a timeout it started on this clock still waits and nothing else
        // has happened for `patience`: the poll may be blocking its thread
        // until that timeout ends (a nested `block_on`), which it then
        // would never do.
        let polling = shared.in_poll.load(Ordering::Acquire) != 0;
        let waits_inside = s.inside_polls.iter().any(|key| s.waiting.contains_key(key));
        if !idle || !polling || !waits_inside {
            stuck_since = None;
        }
        let stuck = idle
            && polling
            && waits_inside
            && stuck_since.get_or_insert_with(Instant::now).elapsed() >= patience(settle);
        let quiet = idle && (!polling || stuck);
        if !quiet || s.to_poll.is_empty() {
            held_since = None;
        }
        // A task woken by a deadline or by its timed future runs before the
        // clock moves on, so that the timeouts it starts then count from
        // this reading; unless it has not for `patience`.
        let held = !s.to_poll.is_empty()
            && held_since.get_or_insert_with(Instant::now).elapsed() < patience(settle);
        if quiet && !s.waiting.is_empty() && !held {
            let given_up = std::mem::take(&mut s.to_poll).len();
            drop(s);
            // The logger is the user's: no lock held, and contained on this
            // thread.
            if given_up > 0 {
                crate::contain::contain(|| {
                    log::warn!(
                        target: "opguard",
                        "the test clock moved on after {:?} of real time with {given_up} \
                         timeout(s) woken and not polled since",
                        patience(settle)
                    );
                });
            }
            if stuck {
                crate::contain::contain(|| {
                    log::warn!(
                        target: "opguard",
                        "the test clock moved on after {:?} of real time during a timeout's \
                         poll that had not returned, with a timeout it started on the clock \
                         waiting (does the poll block its thread on it?)",
                        patience(settle)
                    );
                });
            }
            // Wakers run here, on this clock's own thread: contained.
            shared.advance_to_next(true);
            // The next look is never quiet: it starts afresh (`held_since`
            // and `stuck_since` too).
            seen = u64::MAX;
            continue;
        }
        // Looks again after `settle`; the clock's handles may go meanwhile.
        // With nothing waiting there is nothing to advance to until a
        // timeout starts, which tells this thread: it naps at least
        // `IDLE_NAP` then, so that a zero settle does not spin.
        let nap = if s.waiting.is_empty() {
            settle.max(IDLE_NAP)
        } else {
            settle
        };
        let (s, _) = shared
            .changed
            .wait_timeout(s, nap)
            .unwrap_or_else(|e| e.into_inner());
        drop(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_goes_to_the_timers_horizon_or_as_far_as_an_instant_holds() {
        let start = Instant::now();
        assert_eq!(horizon(start), crate::timer::HORIZON);
        // No `Instant` holds `Duration::MAX` past now: the farthest second
        // that one does.
        let far = farthest(start, Duration::MAX);
        assert!(start.checked_add(far).is_some());
        assert!(start.checked_add(far + Duration::from_secs(1)).is_none());
    }

    #[test]
    #[cfg_attr(miri, ignore = "waits in real time")]
    fn a_zero_settle_does_not_spin_while_nothing_waits() {
        let clock = TestClock::new();
        clock.set_settle(Some(Duration::ZERO));
        std::thread::sleep(Duration::from_millis(200));
        let looks = clock.handle.shared.looks.load(Ordering::Relaxed);
        // About 20 at one look per `IDLE_NAP`; a spinning thread looked
        // over 2 000 times here, even in a debug build.
        assert!(
            looks < 60,
            "looked {looks} times in 200 ms with nothing waiting"
        );
        clock.set_settle(None);
    }

    #[test]
    fn a_fired_deadline_is_forgotten_once_its_timeout_is_polled_or_dropped() {
        let clock = TestClock::new();
        let shared = &clock.handle.shared;
        let start = |after| match shared.start(after, std::task::Waker::noop()) {
            Started::Waiting(deadline) => deadline,
            _ => unreachable!("a deadline 1 s or 2 s on waits"),
        };
        let (mut polled, dropped) = (start(Duration::from_secs(1)), start(Duration::from_secs(2)));
        clock.advance(Duration::from_secs(2));
        assert_eq!(shared.lock().to_poll.len(), 2, "both fired, neither seen");
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(polled.poll(&mut cx).is_ready());
        assert_eq!(shared.lock().to_poll.len(), 1);
        drop(dropped);
        assert!(shared.lock().to_poll.is_empty());
        drop(polled);
        let s = shared.lock();
        assert!(s.waiting.is_empty() && s.to_poll.is_empty());
    }

    #[test]
    fn a_tapped_wake_holds_the_clock_until_the_next_poll_and_not_after_the_drop() {
        let clock = TestClock::new();
        let shared = &clock.handle.shared;
        let Started::Waiting(mut deadline) = shared.start(Duration::from_secs(1), Waker::noop())
        else {
            unreachable!("a deadline 1 s on waits");
        };
        struct Task;
        impl Wake for Task {
            fn wake(self: Arc<Self>) {}
        }
        let task = Waker::from(Arc::new(Task));
        let tap = deadline.tap(&task).expect("a test clock taps");
        tap.wake_by_ref();
        assert_eq!(shared.lock().to_poll.len(), 1, "woken: to be polled");
        assert!(!deadline.begin_poll());
        assert!(shared.lock().to_poll.is_empty(), "polled: seen");
        // Tapped again for the next poll (the same tap, where `will_wake`
        // can tell): as before.
        let again = deadline.tap(&task).expect("a test clock taps");
        again.wake();
        assert_eq!(shared.lock().to_poll.len(), 1);
        assert!(!deadline.begin_poll());
        drop(deadline);
        // A waker kept by the future, woken after its timeout is gone.
        tap.wake();
        assert!(
            shared.lock().to_poll.is_empty(),
            "a dropped timeout holds the clock"
        );
    }
}
