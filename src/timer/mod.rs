//! Shared deadlines: timeouts whose deadlines fall in the same tick, started
//! on the same thread, share one tick, and a thread's ticks share one
//! `futures_timer::Delay`, its lane's alarm, which rings for the earliest.
//!
//! A `Delay` per timeout costs a heap node, a push onto futures-timer's one
//! global list and a wake-up of its helper thread (a system call), and
//! dropping it early costs the push and the wake-up again. Here a deadline is
//! rounded *up* to the next tick boundary: 250 µs for a timeout shorter than
//! a second, where a millisecond is a noticeable part of the wait, and from a
//! second up the widest of 1 ms, 4 ms, 16 ms, and so on by fours, that is at
//! most a thousandth of it ([`tick_of`]): coarser ticks mean fewer of them,
//! and each costs memory while it waits. Timeouts of any lengths whose
//! ticks are as wide share a tick when their deadlines round up to the
//! same boundary. The first timeout of a tick makes the tick, later ones
//! only add their waker to the tick's list. Only a tick earlier than every
//! other of its lane
//! sets the lane's `Delay` (see [`alarm`]): a server that takes requests one
//! at a time, each with a timeout that is cancelled when the request is done,
//! makes at most a tick per request and touches futures-timer's thread
//! about once per timeout length, not twice per request; in all, the
//! process holds at most one `Delay` per lane, whatever the number of
//! timeouts. A tick fires once the deadlines of all its waiters have
//! passed, to a 250th of its width (a microsecond for a fine tick), and at
//! its boundary at the latest (see "When a tick fires"). When the alarm
//! rings, the lane's due ticks fire: each wakes its earliest waiter, and
//! that one, when its task is polled, wakes the rest (see "Relayed
//! wake-ups"); then the tick leaves the wheel. So a timeout:
//!
//! - never fires before its deadline (its tick fires once every deadline in
//!   it has passed);
//! - fires at most one tick after it (250 µs, or from a second up at most a
//!   thousandth of its length), and less than a 250th of that (a
//!   microsecond under a second, 64 µs at 30 s) when it is the last
//!   deadline of its tick (as a timeout alone in its tick is), plus the
//!   helper thread's wake-up (and for all but a tick's first waiter, the
//!   first one's scheduling, or 31 ms more at most should it not be
//!   scheduled), or sooner when its own thread keeps starting timeouts (see
//!   "Firing from the thread");
//! - gives its memory back when dropped early: its waker at once, and the
//!   tick itself when its last waiter leaves, whatever the deadline (but for
//!   the one tick each thread keeps, below), so memory follows the timeouts
//!   that are pending, not the ones that were. A lane's alarm may still ring
//!   for a tick that left: it then finds nothing due and sets itself for the
//!   lane's next tick.
//!
//! No executor is involved: the timer needs nothing from the runtime it runs
//! on.
//!
//! # When a tick fires
//! A tick waits for the latest deadline among its waiters, not for its
//! boundary: a timeout alone in its tick, the common case where timeouts
//! start apart, fires at its own deadline rather than up to a tick after
//! it (250 µs, or 16 ms for a 30 s timeout). Each tick notes how long
//! before its boundary all its deadlines have passed (its slack, in 250ths
//! of its width, rounded down: whole microseconds for a fine tick, 64 µs
//! for a 16 ms one; at most its width), lowered as waiters join; the lane's
//! alarm is asked for the boundary less that slack. A waiter that joins
//! later lowers it, and the alarm, when it rings for the earlier time,
//! finds the tick not due yet and asks again. Before its boundary a tick fires only under its
//! list's lock, which joiners take too: the list is checked and closed at
//! once, so a waiter either joined before (and its deadline counts) or is
//! turned away, and makes a tick of its own for the same boundary. A
//! thread that finds the tick it keeps fired takes its own deadline for
//! passed only if the tick's slack says that it fired no earlier; if it
//! may have fired before, the thread goes to its lane, where a tick is no
//! longer found once it has fired. A lane keeps
//! its ticks of each width in a map of their own: those do not overlap, so
//! with a slack of at most its width, each map's first tick by boundary is
//! its first to fire, and the lane need only look at the first of each.
//! Its waiters all round up to its width, and count their slack in its
//! unit. Staging ticks have a map of their own, and fire at their
//! boundary: their waiters only move on then.
//!
//! # Staging
//! A tick costs memory while it waits (about 115 bytes with its place in
//! its lane's map), and a timeout alone in its tick pays all of it: long
//! timeouts started over time, a few a second, each have a tick of their
//! own (a 30 s timeout's tick is 16 ms wide). So a timeout from 8 s up to
//! 68 minutes (whose own tick is narrower than 4.096 s) first waits in a
//! staging tick: a tick like any other, on a 4.096 s boundary, 128 ms to
//! 4.2 s before its deadline, which the timeouts of any length whose
//! deadlines fall in the same 4.096 s share. When it comes, it wakes the
//! timeout's task like any tick; polled, the timeout finds that its
//! deadline has not come, and moves to its own tick, which comes at most a
//! thousandth of its length after the deadline, as before. Such a timeout
//! so wakes its task once more than it would (a future must allow that: a
//! wake-up need not mean that it can go on), seconds before its deadline,
//! if it is still pending then; one that ends before (a request answered
//! in time, the common case) never sees its staging tick come. It is never
//! early: a timeout ends only when its own tick comes. Should its task be
//! polled only after its deadline passed (a busy executor), it ends at that
//! poll, before its future is polled, so that a timeout nested in it knows
//! that the enclosing deadline came first.
//!
//! # Lanes
//! Each thread gets a lane, and a tick belongs to one lane: timeouts started
//! on different threads (the workers of a multi-thread runtime) never share
//! a tick, so they never contend on its lock or its reference count. The
//! wheel keeps each lane's ticks in maps of their own, one per width, by
//! time. Each thread also remembers the tick it joined last: timeouts of
//! one length started within a tick of each other mostly land in it, and
//! skip the lane's lock and lookup. Threads past [`LANES`] share lanes.
//!
//! The tick a thread remembers stays open when its last waiter leaves, so
//! that a run of timeouts started one after another (each dropped before the
//! next starts) shares it rather than making and dropping a tick each.
//! It is retired once the thread moves on to another tick, or exits, if no
//! one waits on it then: at most one empty tick per thread is kept. When
//! the thread moves on and nothing else holds the empty tick, the new tick
//! is made in its memory rather than in fresh allocations, so that a thread
//! whose timeouts each get a tick of their own (a server taking requests
//! one at a time) allocates nothing per timeout.
//!
//! # Relayed wake-ups
//! A tick's waiters were mostly started by one thread's tasks, so they are
//! mostly woken into one executor. Woken from futures-timer's thread, each
//! wake-up is a wake-up from outside that executor, which is dear: tokio
//! pushes the task onto a shared queue under its lock and wakes its driver
//! (a system call), for each one. So futures-timer's thread wakes only the
//! first waiter; when its task polls (or drops) its timeout, it wakes the
//! others, from inside the executor, where tokio queues them locally. The
//! lane's alarm is asked for 1 ms later (rounded up to a fine tick), and
//! should the first task not have run by then (its executor busy, or
//! blocked on something else) it wakes one more waiter, whose task relays too,
//! then again after twice as long, and so on; 31 ms after the first
//! wake-up it wakes all that are left itself. A busy executor so gets time
//! to reach the tasks woken first: waking a tick's thousands of waiters
//! into it from outside, one by one, is what would slow it most. Either
//! way each waiter is woken once (they are taken out under the list's
//! lock).
//!
//! # Firing from the thread
//! A thread that starts a timeout reads the clock anyway. When that timeout
//! does not fall in the tick the thread keeps (the thread moves on to a new
//! tick, as happens once a tick boundary has passed, which is about when a
//! tick can have come), it also fires those of its lane's ticks whose time
//! has come (one relaxed load when none has: each lane notes when its
//! first tick fires), waking their waiters from where their tasks run. On
//! a busy server that saves each timeout the wait for futures-timer's
//! thread to be scheduled, and then for the runtime's, which under load is
//! where most of a timeout's lateness came from; it also spares
//! futures-timer's thread the work. A thread that starts no more timeouts
//! leaves its ticks to futures-timer's thread, as before. Whichever comes
//! first fires a tick, and never before its time: a tick is fired here
//! only once the reading is at or past it.
//!
//! # User code and locks
//! Wakers are user code: cloning, waking or dropping one may start or drop a
//! timeout, panic, or block. None of that happens while a lock of ours is
//! held: wakers are cloned before a waiter joins, and those that leave,
//! are replaced, or are woken are handed out of the lock first
//! ([`waitlist`]), and a leaving waiter's waker is dropped after the tick is
//! in order again (retired if it emptied, its relay done), so that a waker
//! whose drop panics leaves no tick behind. A tick's wakers run on
//! futures-timer's thread, or on a thread of the tick's lane that relays its
//! wake-up or finds it due: a waker that panics there is contained, its panic
//! payload too ([`crate::contain`]), and the others are still woken. One
//! that blocks holds up the thread it runs on: on futures-timer's thread,
//! every timer in the process (as with any waker of a futures-timer
//! `Delay`); on a task's thread, that thread.
//!
//! # When futures-timer cannot run
//! futures-timer runs one helper thread for the process. If it cannot be
//! spawned (a thread or memory limit) or has died, a lane's alarm cannot be
//! set. Every tick of that lane is then marked broken: it leaves the wheel
//! at once, and its waiters (the one starting it and any that joined
//! meanwhile) are woken and end with an error value ([`Outcome::NoTimer`]),
//! never a panic, a hang or an early timeout. A dying timer thread rings the
//! alarm before its time; setting it again then fails, with the same end.
//! After a failure, timeouts fail at once for one second, then a fresh
//! start is tried, which succeeds if the limit was lifted. (futures-timer
//! says it cannot run only by panicking when its `Delay` is polled: in a
//! build with `panic = "abort"` that ends the process, as a waker's panic
//! does; nothing can be contained there.)
//!
//! # Locks and atomic orderings
//! A lane's mutex guards its maps only, and a tick's list mutex guards its
//! waiters only. A lane's lock may be held while a tick's list is locked
//! (joining through the wheel), never the other way round. A lane's alarm
//! has a lock of its own, held with no other and never while a `Delay` is
//! set: a new tick joins the map before it asks the alarm, and a ring clears
//! what was asked before it looks at the map, so a tick is either seen by
//! the ring or asks for itself; a ring while a thread is setting the bell
//! (for a time that came before it put the bell back) has that thread set it
//! again for what the ring asked (loom: [`alarm`]). The tick's state is set
//! with `AcqRel` before its list is drained under the list's mutex, and read
//! with `Acquire`; a waiter joins under the mutex unless the list is closed.
//! So a wake-up is never lost: a waiter either joined before the drain (and
//! is woken) or finds the list closed and reads the state (loom:
//! [`waitlist`]). A tick fires before its boundary only once its list is
//! closed, under the list's mutex, with the slack that joiners lower under
//! it (loom: [`waitlist`] again), so no waiter's deadline is after it. A
//! tick found in its lane's map fired has fired at its boundary, at or
//! after the deadline of every waiter that would join it, so a timeout that
//! finds it so has timed out, correctly and at once. No code here panics
//! while holding a lock: the lanes' mutexes ignore poisoning, and the
//! lists' spin lock ([`mod@lock`]) has none. A lane's earliest time is
//! a hint, stored and read `Relaxed` (see [`Lane::next`]). A kept tick is
//! made a new one in place only under its lane's lock, once it is out of the
//! map and this thread's cache, and only through `Arc::get_mut`, which fails
//! while anything else holds it (a waiter, a ring, a relay's weak
//! reference): no one can see a tick change its time under them.

mod alarm;
mod lock;
mod waitlist;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures_timer::Delay;

use self::alarm::{Alarm, Set, UNSET};
use self::waitlist::{BROKEN, FIRED, MAX_SLACK, OPEN, Waitlist};
use crate::clock;
use crate::contain::{contain, drop_payload};
use crate::error::Missing;

/// A fine tick: deadlines are counted in these (a tick's key), and a
/// timeout shorter than a second rounds up to one, where a millisecond is a
/// noticeable part of the wait. Longer timeouts round up to coarser ticks
/// ([`tick_of`]).
const FINE: Duration = Duration::from_micros(250);
const FINE_NANOS: u32 = FINE.subsec_nanos();
const FINE_PER_SEC: u64 = 1_000_000_000 / FINE_NANOS as u64;
const _: () = assert!(
    FINE.as_secs() == 0 && 1_000_000_000_u32.is_multiple_of(FINE_NANOS),
    "a fine tick divides a second"
);
const _: () = assert!(
    FINE.as_micros() == MAX_SLACK as u128,
    "a fine tick's slack is counted in microseconds"
);

/// How long before its tick's boundary a deadline `early` ns before it is,
/// in its tick's slack units ([`unit_nanos`]), rounded down, at most
/// [`MAX_SLACK`], a tick's width: how much earlier than its boundary its
/// tick may fire for it (see "When a tick fires").
#[inline]
fn slack_of(early: u32, class: u8) -> u8 {
    // Below `MAX_SLACK` (a u8) once capped: no truncation.
    ((early / 1_000) >> width_bits(class)).min(u32::from(MAX_SLACK)) as u8
}

/// A tick's slack unit, in nanoseconds: a 250th of its width ([`MAX_SLACK`]
/// of them make it), 1 µs for a fine tick, 64 µs for the 16 ms tick of a
/// 30 s timeout (see [`slack_of`]). A staging tick's is the coarsest's.
#[inline]
fn unit_nanos(class: u8) -> u64 {
    1_000 << width_bits(class)
}

/// A tick of class `class` ([`class`]) is `1 << width_bits(class)` fine
/// ticks wide: a power of four. A staging tick is as wide as the coarsest.
#[inline]
fn width_bits(class: u8) -> u32 {
    2 * u32::from(class.min(COARSEST as u8))
}

/// About how far past the epoch a deadline can be and still come: past
/// this (about 146 million years), a tick count no longer holds it, and a
/// timeout makes no timer ([`Start::Never`]). A test clock goes no further.
#[cfg(feature = "test-util")]
pub(crate) const HORIZON: Duration = Duration::from_secs(u64::MAX / FINE_PER_SEC);

/// The coarsest tick is 4 to this power fine ticks wide (4.096 s), the tick
/// of timeouts of 4 096 s (68 min) and longer. It keeps how early a deadline
/// falls in its tick within a `u32` of nanoseconds.
const COARSEST: u32 = 7;
const _: () = assert!(
    (FINE_NANOS as u64) << (2 * COARSEST) <= u32::MAX as u64,
    "how early a deadline falls in the coarsest tick fits a u32 of nanoseconds"
);

/// How wide, in fine ticks, a tick of class `class` is; for the tick of a
/// timeout of length `after` ([`class`]`(after)`), the widest power of four
/// fine ticks that is at most a thousandth of `after`, and one fine tick
/// under a second. So 1 ms from 1 s, 4 ms from 4 s, 16 ms from 16 s (the
/// tick of a 30 s timeout), and so on up to 4.096 s from 4 096 s. A timeout
/// so never fires more than a thousandth of its length late (or 250 µs),
/// and long timeouts, whose deadlines spread over a long time, share ticks:
/// whatever its rate of timeouts, a thread has at most 4 000 ticks pending
/// of each width but the widest (timeouts of the width `w` are shorter than
/// 4 000 `w`).
#[inline]
fn width(class: u8) -> u64 {
    1 << width_bits(class)
}

/// The class of the tick of a timeout of length `after`: its width is 4 to
/// this power fine ticks ([`width`]), 0 for a fine tick up to
/// [`COARSEST`]. Staging ticks have a class of their own, [`STAGING`]. A
/// lane keeps each class's ticks in a map of their own: a class's ticks do
/// not overlap, so its first by boundary is its first to fire (see "When a
/// tick fires").
#[inline]
fn class(after: Duration) -> u8 {
    match after.as_secs() {
        0 => 0,
        // At most `COARSEST` (7): no truncation.
        secs => (1 + secs.ilog2() / 2).min(COARSEST) as u8,
    }
}

/// The tick a timeout of length `after` rounds its deadline up to: it fires
/// no earlier than its deadline, and at most this much after it (plus the
/// time its thread takes to be scheduled). 250 µs for a timeout shorter
/// than a second; from a second up, the widest of 1 ms, 4 ms, 16 ms, and so
/// on by fours, that is at most a thousandth of `after` (16 ms for 30 s);
/// at most 4.096 s (from 68 minutes up). The tick fires once the latest
/// deadline in it has passed, to a 250th of its width: a timeout alone in
/// its tick, or the last in it, fires within that of its deadline (a
/// microsecond under a second, 64 µs for 30 s); one that shares its tick
/// with later deadlines waits for the latest.
///
/// ```
/// use std::time::Duration;
///
/// assert_eq!(opguard::tick_of(Duration::from_millis(20)), Duration::from_micros(250));
/// assert_eq!(opguard::tick_of(Duration::from_secs(1)), Duration::from_millis(1));
/// assert_eq!(opguard::tick_of(Duration::from_secs(30)), Duration::from_millis(16));
/// assert_eq!(opguard::tick_of(Duration::from_secs(86_400)), Duration::from_millis(4_096));
/// ```
pub fn tick_of(after: Duration) -> Duration {
    FINE * width(class(after)) as u32
}

/// How wide a staging tick is, in fine ticks: as the coarsest tick
/// (4.096 s). See "Staging".
const STAGE: u64 = 1 << (2 * COARSEST);

/// The class of staging ticks (see "Staging"): as wide as the coarsest,
/// and apart from them, so that a long timeout's own tick fires at its
/// deadline while the staging ticks on the same boundaries fire at theirs.
const STAGING: u8 = COARSEST as u8 + 1;
/// Classes of ticks: one per width, and the staging ticks'.
const CLASSES: usize = STAGING as usize + 1;

/// How long before a deadline its staging tick comes at the least, in fine
/// ticks (128 ms): time for the task woken then to be polled, and to
/// register in the deadline's own tick, before that comes.
const LEAD: u64 = 512;
/// Timeouts from this long up wait in a staging tick first.
const STAGED_FROM: Duration = Duration::from_secs(8);
/// Timeouts this long or longer have ticks as wide as a staging tick
/// ([`width`]): they wait in their own from the start.
const STAGED_BELOW: Duration = Duration::from_secs(4 << 10);
/// Set in a [`Deadline`]'s key when it waits in its staging tick: above
/// every key a list hands out.
const STAGED: u32 = 1 << 31;
/// Set with [`STAGED`] when its staging tick came so late that the
/// deadline had passed already: it ends there, as if its own tick had come.
const CAME: u32 = 1 << 30;
const _: () = {
    assert!(waitlist::FULL < CAME, "a staged key keeps its flags apart");
    // A staging tick comes at least LEAD before the deadline, and less
    // than STAGE after the boundary LEAD before it: how long after the
    // staging tick the deadline is fits a u32 of nanoseconds.
    assert!((LEAD + STAGE) * FINE_NANOS as u64 <= u32::MAX as u64);
    // A staging tick is still to come when its timeout starts.
    assert!(STAGED_FROM.as_secs() * FINE_PER_SEC > LEAD + STAGE);
    // Timeouts from STAGED_BELOW up have ticks as wide as a staging one,
    // and those below narrower ones.
    assert!(1 << (2 * (1 + (STAGED_BELOW.as_secs() - 1).ilog2() / 2)) < STAGE);
    assert!(1 << (2 * (1 + STAGED_BELOW.as_secs().ilog2() / 2)) >= STAGE);
};

/// How long a fired tick's first waiter has to relay the wake-up to the
/// others before the lane's alarm steps in (see [`Tick::fall_back`]):
/// long enough for a busy executor to get to the first task (waking
/// thousands of tasks from another thread costs far more than waiting a
/// little for it).
const RELAY_GRACE: Duration = Duration::from_millis(1);

/// How many times the lane's alarm steps in for a relay that has not
/// come, each time after twice the wait before: 1, 3, 7 and 15 ms after the
/// first wake-up it wakes one more waiter, and at 31 ms all that are left.
const FALLBACKS: u32 = 5;

/// Lanes: threads past this many share them. One more lane, [`LANES`]
/// itself, takes the timeouts of threads that are exiting.
const LANES: u32 = 64;
/// The wheel's lanes: [`LANES`], the exiting threads' one and, in the
/// crate's own tests, [`TEST_LANES`] more.
const WHEEL_LANES: usize = LANES as usize + 1 + TEST_LANES;
/// Lanes no thread gets on its own: in the crate's own tests, one for each
/// test that needs a lane to itself, never used before (no bell another
/// test set can ring into it).
const TEST_LANES: usize = if cfg!(test) { 48 } else { 0 };
type Key = (u64, u32);

/// A lane's ticks: a map by time for each class ([`class`]).
type Ticks = [BTreeMap<u64, Arc<Tick>>; CLASSES];

/// One lane's ticks, by time, and the alarm that rings for the earliest.
struct Lane {
    /// Its ticks, by class, then by time (the lane is this one).
    ticks: Mutex<Ticks>,
    /// When its earliest tick fires ([`Tick::fires_at`], `u64::MAX`:
    /// none), kept up to date under `ticks`' lock and read without it: a
    /// stale reading only makes [`fire_due`] look once in vain, or leave a
    /// tick to futures-timer.
    next: AtomicU64,
    /// Fired ticks whose relay may not come, by when the alarm steps in for
    /// them, then by the tick's address: see [`Tick::fall_back`]. A tick
    /// relayed meanwhile is skipped then. Not by the tick's time: two ticks
    /// of a lane can have the same (a thread that read the clock just
    /// before a tick fired makes it anew), and one's step-in must not take
    /// the other's place. The address is unique while the entry's `Weak`
    /// keeps the tick's memory.
    relays: Mutex<BTreeMap<(u64, usize), Weak<Tick>>>,
    /// Rings at or before the earliest tick or relay ([`ring`]).
    alarm: Alarm<Delay>,
}

impl Lane {
    /// Notes when the earliest tick fires after `ticks` changed (with its
    /// lock held).
    fn note_next(&self, ticks: &Ticks) {
        let next = ticks
            .iter()
            .filter_map(|class| class.first_key_value())
            .fold(UNSET, |next, (_, tick)| next.min(tick.fires_at()));
        self.next.store(next, Ordering::Relaxed);
    }

    #[cfg(not(opguard_loom))]
    const fn new() -> Self {
        Lane {
            ticks: Mutex::new([const { BTreeMap::new() }; CLASSES]),
            next: AtomicU64::new(u64::MAX),
            relays: Mutex::new(BTreeMap::new()),
            alarm: Alarm::new(),
        }
    }
}

#[cfg(not(opguard_loom))]
#[allow(clippy::declare_interior_mutable_const)] // Only used to build the array.
const EMPTY_LANE: Lane = Lane::new();
#[cfg(not(opguard_loom))]
static WHEEL: [Lane; WHEEL_LANES] = [EMPTY_LANE; WHEEL_LANES];
// Under loom (whose mutexes cannot be made in a constant) the wheel is
// made on first use; its tests do not use it.
#[cfg(opguard_loom)]
static WHEEL: std::sync::LazyLock<[Lane; WHEEL_LANES]> = std::sync::LazyLock::new(|| {
    std::array::from_fn(|_| Lane {
        ticks: Mutex::new(std::array::from_fn(|_| BTreeMap::new())),
        next: AtomicU64::new(u64::MAX),
        relays: Mutex::new(BTreeMap::new()),
        alarm: Alarm::new(),
    })
});

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn lane(index: u32) -> &'static Lane {
    &WHEEL[wheel_index(index)]
}

/// Where lane `lane` sits in the wheel (and in [`lane_waker`]'s wakers).
fn wheel_index(lane: u32) -> usize {
    (lane as usize).min(WHEEL_LANES - 1)
}

/// One tick of one lane: its waiters; the lane's alarm times it. 56 bytes,
/// 72 with its `Arc`'s counts: the allocator's 80-byte class (for a
/// timeout alone in its tick, the most common case where timeouts spread
/// over ticks, the tick is the largest part of what it costs in memory).
struct Tick {
    /// Its time, in fine ticks since the epoch.
    at: u64,
    list: Waitlist<TickInfo>,
}

/// A tick's own small fields, kept in its list's spare room
/// ([`Waitlist::extra`]).
struct TickInfo {
    /// Its lane: the index of its [`Lane`] in the wheel.
    lane: u8,
    /// Its class ([`class`]): its width, and its slack's unit.
    class: u8,
    /// How many times the alarm stepped in for its relay.
    fallbacks: AtomicU8,
}

const _: () = assert!(WHEEL_LANES <= 1 << u8::BITS, "a lane's index fits a byte");

impl TickInfo {
    fn new(lane: u32, class: u8) -> Self {
        TickInfo {
            // Below `WHEEL_LANES` (asserted above): no truncation.
            lane: wheel_index(lane) as u8,
            class,
            fallbacks: AtomicU8::new(0),
        }
    }
}

/// When the last start of a `Delay` failed, in [`clock::now_nanos`]; 0: never.
static FAILED_AT: AtomicU64 = AtomicU64::new(0);
/// How long after a failure timeouts fail at once before a fresh try.
const RETRY_AFTER_NANOS: u64 = 1_000_000_000;

fn note_failure(why: &str) {
    FAILED_AT.store(clock::now_nanos().max(1), Ordering::Relaxed);
    log_contained(|| {
        log::error!(
            target: "opguard",
            "the shared timer cannot run ({why}): timeouts fail with an error for the next second, then start afresh"
        );
    });
}

/// Logs with `log` and contains what the logger does: it is user code, and
/// this may be futures-timer's one thread, which a panic there would take
/// down with every timer in the process.
fn log_contained(log: impl FnOnce()) {
    let _ = contain(log);
}

fn failed_recently() -> bool {
    let at = FAILED_AT.load(Ordering::Relaxed);
    at != 0 && clock::now_nanos().saturating_sub(at) < RETRY_AFTER_NANOS
}

/// Wakes each waker, once. Their panics are contained: on futures-timer's
/// one thread a waker that panics must not take every other timer in the
/// process down with it, and on a task's thread it must not keep the rest
/// of a relay asleep.
fn wake_all(wakers: Vec<Waker>) {
    wakers.into_iter().for_each(wake);
}

/// Wakes one waker, its panic contained (see [`wake_all`]).
fn wake(waker: Waker) {
    if contain(|| waker.wake()).is_none() {
        log_contained(|| log::error!(target: "opguard", "a waker panicked when its timeout fired"));
    }
}

impl Tick {
    /// Its lane's index in the wheel.
    fn lane(&self) -> u32 {
        u32::from(self.list.extra.lane)
    }

    /// Its class ([`class`]).
    #[inline]
    fn class(&self) -> u8 {
        self.list.extra.class
    }

    /// Its boundary, in nanoseconds since the epoch (saturating).
    #[inline]
    fn boundary(&self) -> u64 {
        self.at.saturating_mul(u64::from(FINE_NANOS))
    }

    /// When it fires, in nanoseconds since the epoch: once the latest
    /// deadline of its waiters has passed, to a 250th of its width (to
    /// the microsecond for a fine tick), and at its boundary at the latest
    /// (see "When a tick fires"); [`UNSET`] past what a `u64` of
    /// nanoseconds holds (some 584 years), which never comes. Read without
    /// its list's lock, a hint that can be early, not late.
    #[inline]
    fn fires_at(&self) -> u64 {
        match self.boundary() {
            UNSET => UNSET,
            boundary => {
                boundary.saturating_sub(u64::from(self.list.slack()) * unit_nanos(self.class()))
            }
        }
    }

    /// Wakes its waiters with `outcome`, once, and leaves the wheel: all of
    /// them from here, or, should futures-timer's thread have fired it
    /// first, those it left to relay.
    fn finish(&self, outcome: u8) {
        match self.list.finish(outcome) {
            Some(woken) => wake_all(woken),
            None => self.relay(),
        }
        self.retire();
    }

    /// The tick's time has come: wakes its earliest waiter, which relays the
    /// wake-up to the others when it is polled or dropped
    /// ([`Tick::relay`]). Their wake-ups then come from the thread that
    /// runs their tasks, where an executor takes them cheaply (tokio queues
    /// a task woken from its own thread locally, where one woken from
    /// another thread costs a shared queue's lock and a wake-up of its
    /// driver, each). With waiters left to relay to, the lane's alarm
    /// steps in [`RELAY_GRACE`] later, should the first waiter not be polled
    /// by then (its executor is busy or blocked): see [`Tick::fall_back`].
    /// Called by a ring, which asks the alarm for that time after.
    fn fire(self: &Arc<Self>) {
        let Some(fired) = self.list.fire() else {
            // Emptied, or finished, meanwhile.
            return;
        };
        if fired.more {
            self.fall_back_after(RELAY_GRACE);
        }
        if let Some(first) = fired.first {
            wake(first);
        }
        if !fired.more {
            self.retire();
        }
    }

    /// The alarm rang for the fired tick's relay, and its waiters are not
    /// all relayed to: the tasks woken so far have not run (their executor
    /// is busy, or blocked). One more waiter is woken (its task relays too,
    /// should it run first), and the alarm steps in again after twice as
    /// long; the [`FALLBACKS`]th time, the rest are woken from here. So an executor
    /// busy with a backlog gets time to reach the tasks woken first, rather
    /// than have thousands more woken into it from outside, one by one, and
    /// the waiters of one that is blocked still go in the end.
    fn fall_back(self: &Arc<Self>) {
        let done = u32::from(self.list.extra.fallbacks.fetch_add(1, Ordering::Relaxed)) + 1;
        if done < FALLBACKS {
            let Some((next, more)) = self.list.another() else {
                // Relayed meanwhile.
                return;
            };
            if more {
                self.fall_back_after(RELAY_GRACE * (1 << done));
            }
            wake(next);
            if !more {
                // That was the last one.
                self.retire();
            }
            return;
        }
        self.relay();
    }

    /// Has the lane's alarm step in for the relay `after` from now (rounded
    /// up to a tick): noted in the lane's relays, for the ring that called
    /// this to ask the alarm for.
    fn fall_back_after(self: &Arc<Self>, after: Duration) {
        let since = Instant::now().saturating_duration_since(clock::epoch());
        let at = ticks_passed(since.saturating_add(after)).saturating_add(1);
        let key = (at, Arc::as_ptr(self).addr());
        lock(&lane(self.lane()).relays).insert(key, Arc::downgrade(self));
    }

    /// Wakes the waiters a fired tick has left, once, from whichever thread
    /// comes first: that of a waiter woken before, or the alarm's (see
    /// [`Tick::fall_back`]).
    fn relay(&self) {
        if let Some(rest) = self.list.relay() {
            wake_all(rest);
            self.retire();
        }
    }

    /// Takes the tick out of the wheel.
    fn retire(&self) {
        let removed = {
            let lane = lane(self.lane());
            let mut ticks = lock(&lane.ticks);
            let map = &mut ticks[usize::from(self.class())];
            match map.get(&self.at) {
                Some(t) if std::ptr::eq(Arc::as_ptr(t), self) => {
                    let removed = map.remove(&self.at);
                    lane.note_next(&ticks);
                    removed
                }
                _ => None,
            }
        };
        // Dropped with no lock held.
        drop(removed);
    }

    /// Has its lane's alarm ring for it; breaks it when futures-timer
    /// cannot run.
    fn start(self: &Arc<Self>) {
        let at = self.fires_at();
        // A tick past what the clock counts never comes: nothing rings.
        if at == UNSET {
            return;
        }
        if failed_recently() {
            return self.finish(BROKEN);
        }
        if ask(self.lane(), at) == Set::Rang {
            ring(self.lane());
        }
    }
}

/// Has lane `index`'s alarm ring at or before `at` (nanoseconds since the
/// epoch): only a tick earlier than every other of the lane sets its bell
/// (see [`alarm`]).
/// Breaks the lane when the bell cannot be set; on [`Set::Rang`] the caller
/// rings it.
fn ask(index: u32, at: u64) -> Set {
    let lane = lane(index);
    let set = lane.alarm.ask(at, |bell, at| set_bell(bell, at, index));
    if set == Set::Failed {
        break_lane(lane);
    }
    set
}

/// Sets a lane's bell for `at` (nanoseconds since the epoch; a `Delay`,
/// made if there is none), woken through the lane's waker.
fn set_bell(bell: &mut Option<Delay>, at: u64, index: u32) -> Set {
    let Some(when) = clock::epoch().checked_add(Duration::from_nanos(at)) else {
        // It never comes: nothing to ring for.
        return Set::Pending;
    };
    #[cfg(test)]
    tests::BELLS_SET.with(|n| n.set(n.get() + 1));
    let after = when.saturating_duration_since(Instant::now());
    let waker = lane_waker(index);
    // A `Delay` made while futures-timer's thread cannot run, or whose
    // thread has died, panics when polled ("timer has gone away"); it has no
    // other way to say so.
    let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let delay = match bell {
            Some(delay) => {
                delay.reset(after);
                delay
            }
            None => bell.insert(Delay::new(after)),
        };
        Pin::new(delay).poll(&mut Context::from_waker(waker))
    }));
    match polled {
        Ok(Poll::Pending) => Set::Pending,
        Ok(Poll::Ready(())) => Set::Rang,
        Err(payload) => {
            drop_payload(payload);
            // The next try makes a fresh one.
            *bell = None;
            note_failure("futures-timer's helper thread could not start, or died");
            Set::Failed
        }
    }
}

/// Rings lane `index` when its bell does.
struct LaneWaker(u32);

impl Wake for LaneWaker {
    fn wake(self: Arc<Self>) {
        ring(self.0);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        ring(self.0);
    }
}

/// Lane `index`'s waker, made once.
fn lane_waker(index: u32) -> &'static Waker {
    static WAKERS: [std::sync::OnceLock<Waker>; WHEEL_LANES] =
        [const { std::sync::OnceLock::new() }; WHEEL_LANES];
    WAKERS[wheel_index(index)].get_or_init(|| Waker::from(Arc::new(LaneWaker(index))))
}

/// The bell of lane `index` rang: fires its ticks that are due, each
/// removed from the lane and woken through its first waiter (see
/// [`Tick::fire`]), steps in for the relays that are due
/// ([`Tick::fall_back`]), and sets the bell for the earliest of either
/// left. A ring for a tick that has left, or a relay that has come,
/// finds nothing due and only sets the bell.
fn ring(index: u32) {
    let lane = lane(index);
    if std::thread::panicking() {
        // futures-timer's thread is going away, unwinding: nothing will ring
        // again, and nothing may panic here now.
        note_failure("futures-timer's thread went away");
        return break_lane(lane);
    }
    loop {
        lane.alarm.rang();
        let since = Instant::now().saturating_duration_since(clock::epoch());
        let now = clock::saturating_nanos(since);
        let next_tick = loop {
            match take_due(lane, now) {
                Ok(tick) => tick.fire(),
                Err(next) => break next,
            }
        };
        // After the ticks: those just fired note their relays to come.
        let now_ticks = ticks_passed(since);
        let next_relay = loop {
            match take_relay(lane, now_ticks) {
                Ok(Some(tick)) => tick.fall_back(),
                Ok(None) => {}
                Err(next) => break next,
            }
        };
        // (`UNSET` stays `UNSET`.)
        let next = next_tick.min(next_relay.saturating_mul(u64::from(FINE_NANOS)));
        if next == UNSET {
            return;
        }
        if ask(index, next) != Set::Rang {
            return;
        }
    }
}

/// Nothing can ring for the lane (futures-timer cannot run): each of its
/// ticks is broken, its waiters woken to end with an error, and the fired
/// ones still waiting for a relay wake their rest from here.
fn break_lane(lane: &Lane) {
    while let Ok(relaying) = take_relay(lane, u64::MAX) {
        if let Some(tick) = relaying {
            tick.relay();
        }
    }
    while let Ok(tick) = take_due(lane, u64::MAX) {
        tick.finish(BROKEN);
    }
}

/// The tick of a deadline `due` after the epoch, in fine ticks, for a tick
/// `width` fine ticks wide (a power of two): rounded up to a multiple of
/// it; and how long before that tick the deadline is, in nanoseconds.
fn ticks(due: Duration, width: u64) -> Option<(u64, u32)> {
    debug_assert!(width.is_power_of_two() && width <= 1 << (2 * COARSEST));
    let nanos = due.subsec_nanos();
    // A division by a constant, which compiles to a multiplication.
    let sub = nanos.div_ceil(FINE_NANOS);
    let fine = due
        .as_secs()
        .checked_mul(FINE_PER_SEC)?
        .checked_add(u64::from(sub))?;
    let at = fine.checked_add(width - 1)? & !(width - 1);
    // Below a fine tick, plus whole fine ticks below the width: fits a u32
    // (see `COARSEST`).
    let early = (sub * FINE_NANOS - nanos) + (at - fine) as u32 * FINE_NANOS;
    Some((at, early))
}

/// This thread's lane and the tick it joined last.
struct Local {
    lane: Cell<u32>,
    last: RefCell<Option<Arc<Tick>>>,
}

thread_local! {
    static LOCAL: Local = const {
        Local {
            lane: Cell::new(u32::MAX),
            last: RefCell::new(None),
        }
    };
}

impl Drop for Local {
    fn drop(&mut self) {
        if let Some(last) = self.last.get_mut().take() {
            forget(last);
        }
    }
}

/// Makes `tick` this thread's last tick, pinned open for its next
/// timeouts (a new tick is pinned already), and lets the one it replaces
/// go if no one waits on it.
fn remember(tick: &Arc<Tick>, pinned: bool) {
    if !pinned {
        tick.list.pin();
    }
    // Ignored when the thread is exiting: the cache is only a shortcut.
    match LOCAL.try_with(|local| local.last.replace(Some(Arc::clone(tick)))) {
        Ok(Some(old)) if !Arc::ptr_eq(&old, tick) => forget(old),
        Ok(_) => {}
        Err(_) => forget(Arc::clone(tick)),
    }
}

/// A tick this thread no longer keeps: retired if it is empty.
fn forget(tick: Arc<Tick>) {
    if tick.list.unpin() {
        tick.retire();
    }
}

static NEXT_LANE: AtomicU32 = AtomicU32::new(0);

impl Local {
    fn lane(&self) -> u32 {
        let lane = self.lane.get();
        if lane != u32::MAX {
            return lane;
        }
        let lane = NEXT_LANE.fetch_add(1, Ordering::Relaxed) % LANES;
        self.lane.set(lane);
        lane
    }
}

/// How a timeout's start went.
pub(crate) enum Start {
    /// Registered: poll the deadline.
    Waiting(Deadline),
    /// Its tick has come already: it timed out (with its exact deadline).
    Due(u64),
    /// Past what a tick count can hold (over a hundred million years): no
    /// timer is needed, it never comes.
    Never,
}

/// How a deadline ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Its time came.
    Elapsed,
    /// Its timer could not run: futures-timer's thread is not there (or,
    /// on a clock a test controls, nothing can move that clock any more).
    NoTimer(Missing),
}

fn outcome(state: u8) -> Outcome {
    debug_assert_ne!(state, OPEN);
    if state == BROKEN {
        Outcome::NoTimer(Missing::Thread)
    } else {
        Outcome::Elapsed
    }
}

/// A registered wait for one deadline; dropping it leaves the tick.
pub(crate) struct Deadline {
    tick: Arc<Tick>,
    /// Its key in the tick's list, with [`STAGED`] set for a wait in its
    /// staging tick.
    key: u32,
    /// How long before its tick the exact deadline is, in nanoseconds (less
    /// than a tick): the deadline itself would take twice the room. In a
    /// staging tick, how long after it (see [`staging`]).
    offset: u32,
    /// Which waker is registered: re-polled with the same one (the usual
    /// case), the deadline needs no lock. The identity of the clone the
    /// tick holds, not of the waker it was cloned from: while the tick
    /// holds the clone, a waker with its data and vtable wakes the same
    /// task (`Waker`'s contract), where one that merely has the data of a
    /// waker since dropped may wake another (a clone need not share its
    /// original's data, and a dropped waker's data can be reused).
    waker: WakerId,
}

/// A waker's identity: what `Waker::will_wake` compares.
#[derive(Clone, Copy, PartialEq, Eq)]
struct WakerId(usize, usize);

impl WakerId {
    fn of(waker: &Waker) -> Self {
        WakerId(
            waker.data() as usize,
            std::ptr::from_ref(waker.vtable()) as usize,
        )
    }
}

/// Registers `waker` to be woken `after` from `now` (the clock's reading
/// just taken), rounded up to a tick; a timeout from [`STAGED_FROM`] up
/// waits in its staging tick first (see "Staging").
pub(crate) fn start(now: Instant, after: Duration, waker: &Waker) -> Start {
    let since = now.saturating_duration_since(clock::epoch());
    let Some(due) = since.checked_add(after) else {
        return Start::Never;
    };
    // The staging tick (before the deadline), or the deadline's own (at or
    // after it, by less than a tick).
    let (at, offset, staged, class) = match staging(due, after) {
        Some((at, late)) => (at, late, STAGED, STAGING),
        None => {
            let class = class(after);
            match ticks(due, width(class)) {
                Some((at, early)) => (at, early, 0, class),
                None => return Start::Never,
            }
        }
    };
    // A staging tick fires at its boundary: its waiters only move on when
    // it comes, 128 ms or more before their deadlines.
    let slack = if staged != 0 {
        0
    } else {
        slack_of(offset, class)
    };
    // Cloned before anything is locked or borrowed: it is user code.
    let waker = waker.clone();
    // The identity of the clone the tick keeps (see `Deadline::poll`).
    let id = WakerId::of(&waker);
    match join(at, class, slack, since, waker) {
        Ok((tick, key)) => Start::Waiting(Deadline {
            tick,
            key: key | staged,
            offset,
            waker: id,
        }),
        // Its staging tick came already (another thread read the clock
        // later): on to the deadline's own.
        Err(back) if staged != 0 => settle(since, due, after, back, id),
        Err(back) => {
            drop(back);
            Start::Due(clock::saturating_nanos(due))
        }
    }
}

/// The staging tick of a timeout of length `after` due `due` after the
/// epoch, if it has one, and how long after that tick the deadline is, in
/// nanoseconds.
#[inline]
fn staging(due: Duration, after: Duration) -> Option<(u64, u32)> {
    if !(STAGED_FROM..STAGED_BELOW).contains(&after) {
        return None;
    }
    let at = ticks_passed(due).checked_sub(LEAD)? & !(STAGE - 1);
    let late = clock::saturating_nanos(due).checked_sub(at.checked_mul(u64::from(FINE_NANOS))?)?;
    Some((at, u32::try_from(late).ok()?))
}

/// Registers `waker` (whose identity is `id`) for the deadline `due` after
/// the epoch of a timeout of length `after`, in the deadline's own tick:
/// rounded up to a tick of [`width`]`(after)`. `since` is the clock's
/// reading, since the epoch.
#[inline(never)]
fn settle(since: Duration, due: Duration, after: Duration, waker: Waker, id: WakerId) -> Start {
    // The tick is at or after the deadline, by less than a tick.
    let class = class(after);
    let Some((at, early)) = ticks(due, width(class)) else {
        return Start::Never;
    };
    match join(at, class, slack_of(early, class), since, waker) {
        Ok((tick, key)) => Start::Waiting(Deadline {
            tick,
            key,
            offset: early,
            waker: id,
        }),
        Err(back) => {
            drop(back);
            Start::Due(clock::saturating_nanos(due))
        }
    }
}

/// Adds `waker`, whose deadline is `slack` units before the tick's
/// boundary (see [`slack_of`]), to this thread's tick `at` of class
/// `class`, made if it is not there, with its key there; hands `waker`
/// back if that tick has fired no earlier than this deadline. `since` is
/// the clock's reading, since the epoch.
#[inline(always)]
fn join(
    at: u64,
    class: u8,
    slack: u8,
    since: Duration,
    mut waker: Waker,
) -> Result<(Arc<Tick>, u32), Waker> {
    let (cached, lane) = LOCAL
        .try_with(|local| {
            let cached = match &*local.last.borrow() {
                Some(tick) if tick.at == at && tick.class() == class => Some(Arc::clone(tick)),
                _ => None,
            };
            (cached, local.lane())
        })
        // The thread is exiting: no cache, a lane of its own kind.
        .unwrap_or((None, LANES));
    if let Some(tick) = cached {
        match tick.list.join(waker, slack) {
            Ok(key) => return Ok((tick, key)),
            // Fired no earlier than this deadline: its slack, final once it
            // closed (this join took its lock after), is this one's or less.
            Err((back, FIRED)) if tick.list.slack() <= slack => return Err(back),
            // Fired, emptied or broken. Having fired does not mean that
            // this deadline has passed: a tick fires once the deadlines of
            // those in it have, which can be before this one. On to the
            // lane, where a tick that fired is no longer found.
            Err((back, _)) => waker = back,
        }
    }
    // This thread's ticks whose time has come, fired from here: with the
    // clock read anyway, this saves waiting for futures-timer's thread to
    // be scheduled, and then this one (see "Firing from the thread"). Only
    // when the thread moves on from the tick it keeps: that happens as a
    // tick boundary passes (at it, for whole-millisecond timeouts), which is
    // when a tick can come.
    fire_due(lane, since);
    let key = (at, lane);
    let mut old = None;
    let (tick, index, new) = {
        let lane = self::lane(lane);
        let mut ticks = lock(&lane.ticks);
        let joined = match ticks[usize::from(class)].get(&at) {
            Some(tick) => tick
                .list
                .join(waker, slack)
                .map(|index| (Arc::clone(tick), index)),
            None => Err((waker, OPEN)),
        };
        match joined {
            Ok((tick, index)) => (tick, index, false),
            // A tick leaves its lane before it fires, or closes early
            // ([`take_due`]) under the lane's lock: one found fired has
            // come at its boundary, at or after this deadline.
            Err((back, FIRED)) => {
                drop(ticks);
                return Err(back);
            }
            // None there, or one that was emptied or broken: a fresh tick,
            // in the memory of the one this thread keeps if it can.
            Err((back, _)) => {
                let tick = match renew_kept(&mut ticks, key, class, slack, back) {
                    Ok(tick) => tick,
                    Err(back) => Arc::new(Tick {
                        at,
                        list: Waitlist::pinned_with_first(back, slack, TickInfo::new(key.1, class)),
                    }),
                };
                old = ticks[usize::from(class)].insert(at, Arc::clone(&tick));
                lane.note_next(&ticks);
                (tick, 0, true)
            }
        }
    };
    drop(old);
    if new {
        tick.start();
    }
    remember(&tick, new);
    Ok((tick, index))
}

/// The tick this thread keeps, made the tick `key` of class `class` with
/// `waker` its first waiter, when nothing else has a hold on it (no
/// waiter, no ring, no relay, no test): it leaves `ticks`, those of its
/// lane and `key`'s, whose lock the caller holds. A server taking requests
/// one at a time moves to a new tick for each, and this spares it the
/// allocation of a tick and its free. Otherwise hands `waker` back.
fn renew_kept(
    ticks: &mut Ticks,
    key: Key,
    class: u8,
    slack: u8,
    waker: Waker,
) -> Result<Arc<Tick>, Waker> {
    let taken = LOCAL.try_with(|local| {
        // (Never borrowed here: no user code runs while this thread's cache
        // is; a renewal is only a saving, so none is tried should it be.)
        let mut last = local.last.try_borrow_mut().ok()?;
        let kept = last.as_ref()?;
        // Its only holders are this cache and the map, whose lock is held:
        // no one else can take a new hold on it meanwhile.
        if kept.lane() != wheel_index(key.1) as u32
            || Arc::strong_count(kept) != 2
            || Arc::weak_count(kept) != 0
        {
            return None;
        }
        let map = &mut ticks[usize::from(kept.class())];
        match map.remove(&kept.at) {
            Some(in_map) if Arc::ptr_eq(&in_map, kept) => last.take(),
            // Another tick of that time (this one was broken, and left):
            // the other holder is not the map.
            Some(other) => {
                map.insert(other.at, other);
                None
            }
            None => None,
        }
    });
    let Ok(Some(mut kept)) = taken else {
        return Err(waker);
    };
    match Arc::get_mut(&mut kept) {
        Some(tick) => {
            tick.at = key.0;
            tick.list.extra = TickInfo::new(key.1, class);
            tick.list.renew(waker, slack);
            Ok(kept)
        }
        None => {
            // Not alone after all (cannot happen, as said above): it is out
            // of the wheel and this thread's cache, and goes with its last
            // holder.
            drop(kept);
            Err(waker)
        }
    }
}

/// Fires the ticks of `lane` whose time has come by `since` (the clock's
/// reading, since the epoch), one at a time, with no lock held while their
/// wakers run.
#[inline]
fn fire_due(lane: u32, since: Duration) {
    let lane = self::lane(lane);
    let now = clock::saturating_nanos(since);
    if lane.next.load(Ordering::Relaxed) > now {
        return;
    }
    fire_due_slow(lane, now);
}

#[cold]
fn fire_due_slow(lane: &Lane, now: u64) {
    while let Ok(tick) = take_due(lane, now) {
        // Seen on the thread that started its timeouts: every waiter is
        // woken from here, before futures-timer's thread is needed (the
        // lane's alarm, should it ring for this tick, finds it gone).
        tick.finish(FIRED);
    }
}

/// Takes the lane's earliest relay out if its time has come by `now` (in
/// ticks), with its tick if that is still there; otherwise gives the
/// earliest's time ([`UNSET`]: none).
fn take_relay(lane: &Lane, now: u64) -> Result<Option<Arc<Tick>>, u64> {
    let mut relays = lock(&lane.relays);
    let Some(first) = relays.first_entry() else {
        return Err(UNSET);
    };
    match first.key().0 {
        at if at > now => Err(at),
        _ => Ok(first.remove().upgrade()),
    }
}

/// Takes one of the lane's ticks out whose time has come by `now` (in
/// nanoseconds since the epoch): its boundary, or before it the latest
/// deadline of its waiters, when the tick closes early under its list's
/// lock (see "When a tick fires"). Otherwise gives when the first fires
/// ([`UNSET`]: no tick). Only each class's first tick need be looked at:
/// a tick fires at most its width before its boundary, and its class's
/// next boundary is that width later or more.
fn take_due(lane: &Lane, now: u64) -> Result<Arc<Tick>, u64> {
    let mut ticks = lock(&lane.ticks);
    let mut next = UNSET;
    for class in 0..CLASSES {
        let Some(first) = ticks[class].first_entry() else {
            continue;
        };
        let tick = first.get();
        let boundary = tick.boundary();
        // Before its boundary, it fires only if no one joined with a later
        // deadline meanwhile: checked, and closed, under its list's lock.
        if boundary > now {
            let fires = tick.fires_at();
            let unit = unit_nanos(tick.class());
            if fires > now || !tick.list.close_within((boundary - now).div_ceil(unit)) {
                // (Read again: the waiters that joined since move it on.)
                next = next.min(tick.fires_at());
                continue;
            }
        }
        let tick = first.remove();
        lane.note_next(&ticks);
        return Ok(tick);
    }
    // A hint made stale by the waiters that joined since, if any.
    lane.next.store(next, Ordering::Relaxed);
    Err(next)
}

/// Whole ticks in `since`, rounded down: every tick up to this one has come.
fn ticks_passed(since: Duration) -> u64 {
    since
        .as_secs()
        .saturating_mul(FINE_PER_SEC)
        .saturating_add(u64::from(since.subsec_nanos() / FINE_NANOS))
}

impl Deadline {
    /// The exact deadline, in [`clock::now_nanos`].
    pub(crate) fn due(&self) -> u64 {
        // The tick's time in nanoseconds, without a `Duration` (whose
        // seconds would take a division): saturating as `saturating_nanos`.
        let tick = (self.tick.at).saturating_mul(u64::from(FINE_NANOS));
        if self.is_staged() {
            tick.saturating_add(u64::from(self.offset))
        } else {
            tick.saturating_sub(u64::from(self.offset))
        }
    }

    /// Whether it waits in its staging tick, before its deadline's own.
    #[inline]
    fn is_staged(&self) -> bool {
        self.key & STAGED != 0
    }

    /// Whether it waits in its staging tick for its deadline's own: when
    /// the staging tick comes, it moves on (see [`Deadline::settle`]).
    #[inline]
    fn moves_on(&self) -> bool {
        self.key & (STAGED | CAME) == STAGED
    }

    /// Its key in its tick's list.
    #[inline]
    fn slot(&self) -> u32 {
        self.key & !(STAGED | CAME)
    }

    /// Whether its deadline has come: its own tick has fired, or its
    /// staging tick came after the deadline.
    pub(crate) fn has_fired(&self) -> bool {
        self.tick.list.state() == FIRED && !self.moves_on()
    }

    /// Whether the tick has fired or broken: a cheap check for a deadline
    /// being polled, which then ends, or, in its staging tick, moves on to
    /// its own (see [`Deadline::poll`]). One load and
    /// compare; `ended().is_some()` says the same but costs the re-poll
    /// about 10 instructions more (callgrind, the `paths` bench's pending
    /// path: 610 against 620).
    #[inline]
    pub(crate) fn has_ended(&self) -> bool {
        self.tick.list.state() != OPEN
    }

    /// Wakes the other waiters of its tick, if it fired and they are still
    /// to be woken: the first waiter a tick wakes does this for the rest
    /// (`Tick::fire`), when it is polled or dropped.
    #[inline]
    pub(crate) fn relay(&self) {
        if self.tick.list.relaying() {
            self.tick.relay();
        }
    }

    /// How it ended, if it has: for a deadline just started, whose waker is
    /// registered already. A staging tick that came meanwhile has woken
    /// that waker, or will: the next poll moves on.
    pub(crate) fn ended(&self) -> Option<Outcome> {
        match self.tick.list.state() {
            OPEN => None,
            FIRED if self.moves_on() => None,
            state => Some(outcome(state)),
        }
    }

    /// Whether `waker` is the one registered: a deadline polled again with
    /// it, whose tick had not fired when this poll began, is still pending
    /// (should the tick fire meanwhile, it wakes that waker).
    #[inline]
    pub(crate) fn waits_with(&self, waker: &Waker) -> bool {
        WakerId::of(waker) == self.waker
    }

    /// Ready once the tick has finished; otherwise keeps `cx`'s waker
    /// registered. A wait whose staging tick came moves on to its deadline's
    /// own tick, of the width for a timeout of length `after()` (asked for
    /// only then).
    ///
    /// Inlined, so that a fired timeout's poll ends without a call; only a
    /// new waker's registration, the rare case, stays out of line
    /// (`scripts/scale_callgrind.sh fire` counts the difference).
    #[inline]
    pub(crate) fn poll(
        &mut self,
        cx: &mut Context<'_>,
        after: impl FnOnce() -> Duration,
    ) -> Poll<Outcome> {
        let state = self.tick.list.state();
        if state != OPEN {
            if state == FIRED && self.moves_on() {
                return self.settle(cx.waker(), after());
            }
            return Poll::Ready(outcome(state));
        }
        // The registered waker is the one the tick will wake: no lock.
        if WakerId::of(cx.waker()) == self.waker {
            return Poll::Pending;
        }
        self.register(cx.waker())
    }

    /// Registers a new waker in place of the one the tick holds.
    #[inline(never)]
    fn register(&mut self, waker: &Waker) -> Poll<Outcome> {
        // Cloned with no lock held (its clone is user code).
        let new = waker.clone();
        let registered = WakerId::of(&new);
        let mut old = None;
        let polled = self.tick.list.poll(self.slot(), new, &mut old);
        // Noted once registered: should the clone panic, the next poll
        // with this waker registers it rather than take it for the one the
        // tick holds.
        self.waker = registered;
        // A replaced waker is dropped here, with no lock held.
        drop(old);
        polled.map(outcome)
    }

    /// Moves a deadline whose staging tick came on to its own tick (see
    /// [`Deadline::settle`]), registering `waker` there; ends it if the
    /// deadline has passed. For a timeout polled once its tick ended, before
    /// it polls its future. Returns whether its deadline has come (see
    /// [`Deadline::has_fired`]), which the timeouts inside learn; one read
    /// of the tick's state serves both.
    #[inline]
    pub(crate) fn catch_up(&mut self, waker: &Waker, after: impl FnOnce() -> Duration) -> bool {
        if self.tick.list.state() != FIRED {
            return false;
        }
        if self.moves_on() {
            let _ = self.settle(waker, after());
            return self.has_fired();
        }
        true
    }

    /// Its staging tick came: registers `waker` in its deadline's own tick
    /// (which comes 128 ms to 4.2 s later), and leaves the staging one,
    /// relaying its wake-up should it be the first woken. Ready if the
    /// deadline has passed, or that tick has come, already (its task ran
    /// late): then it stays where it is, its [`Deadline::due`] the exact
    /// deadline, and has fired from now on.
    #[cold]
    #[inline(never)]
    fn settle(&mut self, waker: &Waker, after: Duration) -> Poll<Outcome> {
        let since = Instant::now().saturating_duration_since(clock::epoch());
        let due = Duration::from_nanos(self.due());
        if since >= due {
            return self.came();
        }
        // Cloned before anything is locked: it is user code.
        let waker = waker.clone();
        let id = WakerId::of(&waker);
        match settle(since, due, after, waker, id) {
            Start::Waiting(own) => {
                // The staging wait goes, with no lock held (it relays, and
                // drops its waker).
                drop(std::mem::replace(self, own));
                Poll::Pending
            }
            Start::Due(_) => self.came(),
            // Not for a deadline that had a staging tick (it is within
            // hours of now): it would never come.
            Start::Never => Poll::Pending,
        }
    }

    /// Its staging tick came after the deadline: it ends in that tick.
    fn came(&mut self) -> Poll<Outcome> {
        self.key |= CAME;
        self.relay();
        Poll::Ready(Outcome::Elapsed)
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        let left = self.tick.list.leave(self.slot());
        if left.emptied {
            self.tick.retire();
        }
        self.relay();
        // Dropped with no lock held, and last: it is user code, and should
        // it panic, the tick is in order already.
        drop(left.waker);
    }
}

#[cfg(test)]
mod tests;
