//! Shared deadlines: timeouts whose deadlines fall in the same tick share
//! one `futures_timer::Delay`, which wakes them all.
//!
//! A `Delay` per timeout costs a heap node, a push onto futures-timer's one
//! global list and a wake-up of its helper thread, and that heap never
//! shrinks. Here a deadline is rounded *up* to the next tick boundary (1 ms,
//! [`TICK`]); the first timeout of a tick creates the tick's `Delay`, later
//! ones only add their waker to the tick's list. When the `Delay` fires, the
//! tick wakes every waiter and leaves the wheel. So a timeout:
//!
//! - never fires before its deadline (the tick is at or after it);
//! - fires at most one tick after it, plus the helper thread's wake-up;
//! - frees its waiter slot when dropped early; the tick itself, small and
//!   shared, stays until its time comes, so memory follows the number of
//!   distinct pending ticks, not the number of timeouts.
//!
//! Everything stays on futures-timer's own thread: no executor is involved.
//!
//! Starting a timeout costs a clock read, a lookup of its tick, one
//! uncontended lock to add its waker, and one more to take it out when the
//! timeout is dropped. The lookup is usually free: each thread remembers the
//! tick it joined last, and timeouts started within the same millisecond
//! mostly land in it; only the first of a tick on a thread takes the wheel's
//! shard lock and map lookup.
//!
//! # Locks and atomic orderings
//! The wheel is sharded by tick; a shard's mutex guards its map only, and a
//! tick's mutex guards its waiter list only. No code holds two of them at once
//! except `fire`, which takes the tick's and then, after releasing it, the
//! shard's. `fired` is set with `AcqRel` before the waiter list is drained
//! under its mutex, and read with `Acquire`. A new waiter adds its waker under
//! the mutex and then reads `fired`, so a wake-up is never lost: either its
//! waker was in the list that `fire` drained, or it took the mutex after
//! `fire` released it and so sees `fired`. A tick fires no earlier than its
//! time, which is at or after the deadline of every waiter that joins it, so
//! joining a tick that has just fired is a correct, immediate timeout.
//! Mutex poisoning is ignored: no code here panics while holding one.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures_timer::Delay;

/// The granularity of deadlines: a timeout fires at most this much late.
pub const TICK: Duration = Duration::from_millis(1);
const TICK_NANOS: u32 = TICK.subsec_nanos();
const TICKS_PER_SEC: u64 = 1_000_000_000 / TICK_NANOS as u64;
const _: () = assert!(
    TICK.as_secs() == 0 && 1_000_000_000 % TICK_NANOS == 0,
    "a tick divides a second"
);

const SHARDS: usize = 16;
type Shard = Mutex<BTreeMap<u64, Arc<Tick>>>;
#[allow(clippy::declare_interior_mutable_const)] // Only used to build the array.
const EMPTY_SHARD: Shard = Mutex::new(BTreeMap::new());
static WHEEL: [Shard; SHARDS] = [EMPTY_SHARD; SHARDS];

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn shard(tick: u64) -> &'static Shard {
    &WHEEL[(tick % SHARDS as u64) as usize]
}

/// One tick of the wheel: its `Delay` and the wakers waiting on it.
struct Tick {
    at: u64,
    fired: AtomicBool,
    waiters: Mutex<Waiters>,
    delay: Mutex<Option<Delay>>,
}

/// Slab capacity kept when the last waiter leaves a tick.
const SMALL: usize = 16;

/// A small slab of wakers: a waiter keeps its key until it leaves.
#[derive(Default)]
struct Waiters {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
    live: usize,
}

impl Waiters {
    fn insert(&mut self, waker: Waker) -> usize {
        self.live += 1;
        match self.free.pop() {
            Some(key) => {
                self.slots[key] = Some(waker);
                key
            }
            None => {
                self.slots.push(Some(waker));
                self.slots.len() - 1
            }
        }
    }

    fn remove(&mut self, key: usize) {
        if let Some(slot) = self.slots.get_mut(key)
            && slot.take().is_some()
        {
            self.live -= 1;
            if self.live != 0 {
                self.free.push(key);
            } else if self.slots.capacity() > SMALL {
                // The last one left a big slab: give the memory back now
                // rather than when the tick fires, which may be much later.
                *self = Waiters::default();
            } else {
                // Small: keep it for the next timeout of this tick.
                self.slots.clear();
                self.free.clear();
            }
        }
    }

    fn take_all(&mut self) -> Vec<Waker> {
        let all = std::mem::take(self);
        all.slots.into_iter().flatten().collect()
    }
}

/// Wakes the tick when its `Delay` fires. Weak, so that the timer's node
/// does not keep the tick alive.
struct TickWaker(Weak<Tick>);

impl Wake for TickWaker {
    fn wake(self: Arc<Self>) {
        if let Some(tick) = self.0.upgrade() {
            tick.fire();
        }
    }
}

impl Tick {
    fn fire(&self) {
        if self.fired.swap(true, Ordering::AcqRel) {
            return;
        }
        let woken = lock(&self.waiters).take_all();
        for waker in woken {
            // This runs on futures-timer's one thread: a waker that panics
            // must not take every other timer in the process down with it.
            if catch_unwind(AssertUnwindSafe(|| waker.wake())).is_err() {
                log::error!(target: "opguard", "a waker panicked when its timeout fired");
            }
        }
        let mut map = lock(shard(self.at));
        if map
            .get(&self.at)
            .is_some_and(|t| std::ptr::eq(Arc::as_ptr(t), self))
        {
            map.remove(&self.at);
        }
    }

    /// Starts the tick's `Delay`, to fire at `at`.
    fn start(self: &Arc<Self>, at: Instant) {
        let mut delay = Delay::new(at.saturating_duration_since(Instant::now()));
        let waker = Waker::from(Arc::new(TickWaker(Arc::downgrade(self))));
        let fired = Pin::new(&mut delay)
            .poll(&mut Context::from_waker(&waker))
            .is_ready();
        *lock(&self.delay) = Some(delay);
        if fired {
            self.fire();
        }
    }
}

/// A registered wait for one deadline; dropping it leaves the tick.
pub(crate) struct Deadline {
    tick: Arc<Tick>,
    key: usize,
}

/// When the tick `at` comes, if `Instant` can hold it.
fn tick_instant(at: u64) -> Option<Instant> {
    let since = Duration::new(at / TICKS_PER_SEC, (at % TICKS_PER_SEC) as u32 * TICK_NANOS);
    crate::clock::epoch().checked_add(since)
}

thread_local! {
    /// The tick this thread joined last. Timeouts started close together
    /// mostly share a tick, so they skip the wheel's lock and lookup.
    static LAST: RefCell<Option<Arc<Tick>>> = const { RefCell::new(None) };
}

/// The tick at `at`: from this thread's last one, or from the wheel, where it
/// is made (and its `Delay` started) when it is not there yet.
fn tick_at(at: u64) -> Arc<Tick> {
    let cached = LAST.try_with(|last| match &*last.borrow() {
        Some(tick) if tick.at == at && !tick.fired.load(Ordering::Acquire) => {
            Some(Arc::clone(tick))
        }
        _ => None,
    });
    if let Ok(Some(tick)) = cached {
        return tick;
    }
    let (tick, new) = {
        let mut map = lock(shard(at));
        match map.get(&at) {
            Some(tick) => (Arc::clone(tick), false),
            None => {
                let tick = Arc::new(Tick {
                    at,
                    fired: AtomicBool::new(false),
                    waiters: Mutex::new(Waiters::default()),
                    delay: Mutex::new(None),
                });
                map.insert(at, Arc::clone(&tick));
                (tick, true)
            }
        }
    };
    if new {
        // A tick past what `Instant` can hold never comes: it gets no `Delay`.
        if let Some(fires) = tick_instant(at) {
            tick.start(fires);
        }
    }
    // Ignored when the thread is exiting: the cache is only a shortcut.
    // The one it replaces is dropped after the borrow ends.
    let _ = LAST.try_with(|last| last.replace(Some(Arc::clone(&tick))));
    tick
}

impl Deadline {
    /// Waits until `after` from now, rounded up to a tick; `None` when that
    /// is past what a tick count can hold (half a billion years), and no
    /// timer is needed.
    pub(crate) fn new(after: Duration, waker: &Waker) -> Option<Deadline> {
        let due = crate::clock::epoch().elapsed().checked_add(after)?;
        // Whole ticks since the epoch, rounded up, in `u64` arithmetic.
        let at = due
            .as_secs()
            .checked_mul(TICKS_PER_SEC)?
            .checked_add(u64::from(due.subsec_nanos().div_ceil(TICK_NANOS)))?;
        let tick = tick_at(at);
        let key = lock(&tick.waiters).insert(waker.clone());
        Some(Deadline { tick, key })
    }

    /// Whether the tick has fired: for a deadline just made with the task's
    /// waker, which is registered already.
    pub(crate) fn has_fired(&self) -> bool {
        self.tick.fired.load(Ordering::Acquire)
    }

    /// Ready once the tick has fired; otherwise keeps `cx`'s waker registered.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.tick.fired.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        let mut waiters = lock(&self.tick.waiters);
        if self.tick.fired.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if let Some(Some(waker)) = waiters.slots.get_mut(self.key)
            && !waker.will_wake(cx.waker())
        {
            waker.clone_from(cx.waker());
        }
        Poll::Pending
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        lock(&self.tick.waiters).remove(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its wake-ups.
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    fn wait(d: &mut Deadline, waker: &Waker) {
        let mut cx = Context::from_waker(waker);
        while d.poll(&mut cx).is_pending() {
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    #[test]
    fn never_fires_before_the_deadline() {
        let (_, waker) = counter();
        for ms in [1, 3, 10] {
            let after = Duration::from_millis(ms) + Duration::from_micros(300);
            let start = Instant::now();
            let mut d = Deadline::new(after, &waker).unwrap();
            wait(&mut d, &waker);
            assert!(
                start.elapsed() >= after,
                "{:?} < {after:?}",
                start.elapsed()
            );
        }
    }

    #[test]
    fn a_deadline_rounds_up_to_at_most_one_tick_later() {
        let (_, waker) = counter();
        for micros in [1, 499, 1000, 1001, 25_000] {
            let after = Duration::from_micros(micros);
            let before = Instant::now();
            let d = Deadline::new(after, &waker).unwrap();
            let fires = tick_instant(d.tick.at).unwrap();
            let latest = Instant::now() + after;
            assert!(fires >= before + after, "tick before the deadline");
            assert!(fires < latest + TICK, "tick more than one tick late");
        }
    }

    #[test]
    fn many_timeouts_in_one_tick_share_it_and_each_wakes() {
        let far = Duration::from_millis(50);
        let wakers: Vec<_> = (0..200).map(|_| counter()).collect();
        let deadlines: Vec<_> = wakers
            .iter()
            .map(|(_, w)| Deadline::new(far, w).unwrap())
            .collect();
        let ticks: std::collections::BTreeSet<u64> = deadlines.iter().map(|d| d.tick.at).collect();
        // Created within a few ticks of each other: they share a handful of
        // ticks (not under Miri, which runs far slower than the clock).
        if !cfg!(miri) {
            assert!(ticks.len() <= 5, "{} ticks for 200 timeouts", ticks.len());
        }
        let mut deadlines = deadlines;
        for (d, (_, w)) in deadlines.iter_mut().zip(&wakers) {
            wait(d, w);
        }
        // `fired` is set before the wake-ups go out: let the timer thread finish them.
        std::thread::sleep(Duration::from_millis(20));
        // Each was woken exactly once by its tick (the polls above only re-check).
        for (count, _) in &wakers {
            assert_eq!(count.0.load(Ordering::SeqCst), 1);
        }
    }

    #[test]
    fn dropped_timeouts_free_their_share() {
        let (_, waker) = counter();
        let keep = Deadline::new(Duration::from_secs(3600), &waker).unwrap();
        let tick = Arc::clone(&keep.tick);
        let dropped: Vec<_> = (0..100)
            .map(|_| Deadline::new(Duration::from_secs(3600), &waker).unwrap())
            .filter(|d| Arc::ptr_eq(&d.tick, &tick))
            .collect();
        let joined = dropped.len();
        assert_eq!(
            lock(&tick.waiters).slots.iter().flatten().count(),
            joined + 1
        );
        drop(dropped);
        {
            let waiters = lock(&tick.waiters);
            assert_eq!(
                waiters.slots.iter().flatten().count(),
                1,
                "only `keep` is left"
            );
            assert_eq!(waiters.free.len(), joined, "their slots are reused");
        }
        drop(keep);
        let waiters = lock(&tick.waiters);
        assert_eq!(waiters.live, 0);
        assert!(
            waiters.slots.capacity() <= SMALL,
            "the last one gives a big slab back"
        );
    }

    #[test]
    fn fired_ticks_leave_the_wheel() {
        let (_, waker) = counter();
        let mut d = Deadline::new(Duration::from_millis(2), &waker).unwrap();
        let at = d.tick.at;
        wait(&mut d, &waker);
        // `fired` is set before the tick leaves the wheel: give it a moment.
        let gone = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            !lock(shard(at)).contains_key(&at)
        });
        assert!(gone, "a fired tick stayed in the wheel");
    }

    #[test]
    fn after_its_last_tick_fired_a_thread_joins_a_new_one() {
        let (_, waker) = counter();
        let mut first = Deadline::new(Duration::from_millis(1), &waker).unwrap();
        wait(&mut first, &waker);
        // This thread's cache still holds the fired tick; a new timeout must
        // not join it (it would time out at once).
        let start = Instant::now();
        let mut next = Deadline::new(Duration::from_millis(5), &waker).unwrap();
        assert!(!Arc::ptr_eq(&first.tick, &next.tick));
        wait(&mut next, &waker);
        assert!(start.elapsed() >= Duration::from_millis(5));
    }

    #[test]
    fn unrepresentable_deadlines_need_no_timer() {
        let (_, waker) = counter();
        assert!(Deadline::new(Duration::MAX, &waker).is_none());
    }
}
