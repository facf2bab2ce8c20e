//! A lane's alarm: one bell (a futures-timer `Delay`) for all of the lane's
//! ticks, set for the earliest of them, kept apart from the wheel and
//! futures-timer so that loom can run it under every interleaving.
//!
//! Setting a `Delay` (making, resetting or dropping one) wakes futures-timer's
//! thread, a system call, and that thread then runs. A `Delay` per tick paid
//! that twice for every tick, which on a server taking requests one at a
//! time is twice per request. With one bell per lane only a tick earlier
//! than the bell's time sets it; a later tick, or a tick that leaves, does
//! not touch it. When the bell rings, the lane fires its ticks that are due
//! and asks for the next one; should the earliest tick have left meanwhile,
//! that ring finds nothing due and only sets the bell again.
//!
//! The bell is set with no lock of ours held (futures-timer may call the
//! lane's waker from inside the `Delay`'s poll). While a thread has it out,
//! an earlier time asked of it is noted, and that thread sets it again
//! before putting it back. So is a ring meanwhile: a `Delay` rings once per
//! setting, and the time just set may come, and ring, before the thread
//! puts the bell back; the ring fires what is due and asks for the next
//! tick, which the thread setting the bell then sets it for. (Put back as
//! it was, a bell that had rung would stay silent: the lane's later ticks,
//! asking for times after the one noted, would wait for a ring that never
//! comes.)

#[cfg(opguard_loom)]
use loom::sync::{Mutex, MutexGuard};
#[cfg(not(opguard_loom))]
use std::sync::{Mutex, MutexGuard};

/// Nothing is asked of the bell.
pub(super) const UNSET: u64 = u64::MAX;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What setting the bell gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Set {
    /// It rings at or before the time asked.
    Pending,
    /// The time asked has come already: the caller rings it now
    /// ([`Alarm::rang`], then fires what is due and asks again).
    Rang,
    /// It cannot be set (futures-timer cannot run): nothing will ring.
    Failed,
}

#[cfg(test)]
thread_local! {
    /// Run by this thread's next [`Alarm::ask`] once it has set the bell,
    /// before it puts it back: a test's hold on the bell (not under loom,
    /// whose models hold it their own way).
    pub(super) static AFTER_SET: std::cell::Cell<Option<Box<dyn FnOnce()>>> =
        const { std::cell::Cell::new(None) };
}

pub(super) struct Alarm<B> {
    state: Mutex<State<B>>,
}

struct State<B> {
    /// The bell, unless a thread has it out to set it.
    bell: Option<B>,
    /// It rings at or before this tick (or a thread is setting it so);
    /// [`UNSET`]: nothing is asked of it.
    at: u64,
    /// A thread has the bell out, setting it.
    setting: bool,
    /// The bell rang while a thread had it out: what that thread set it for
    /// may have rung already (see the module's docs).
    rang_out: bool,
}

impl<B> State<B> {
    /// No bell yet, nothing asked of it.
    const fn idle() -> Self {
        State {
            bell: None,
            at: UNSET,
            setting: false,
            rang_out: false,
        }
    }
}

impl<B> Alarm<B> {
    #[cfg(not(opguard_loom))]
    pub(super) const fn new() -> Self {
        Alarm {
            state: Mutex::new(State::idle()),
        }
    }

    #[cfg(opguard_loom)]
    pub(super) fn new() -> Self {
        Alarm {
            state: Mutex::new(State::idle()),
        }
    }

    /// Makes sure the bell rings at or before tick `at`: returns at once if
    /// it does already, or if another thread is setting it (that thread
    /// sets it for `at` too). Otherwise `set` sets the bell (made when
    /// `None`) for a tick, with no lock held, and says how that went; it is
    /// called again should an earlier tick be asked for meanwhile.
    pub(super) fn ask(&self, at: u64, mut set: impl FnMut(&mut Option<B>, u64) -> Set) -> Set {
        let mut state = lock(&self.state);
        if state.at <= at {
            return Set::Pending;
        }
        state.at = at;
        if state.setting {
            return Set::Pending;
        }
        state.setting = true;
        let mut bell = state.bell.take();
        loop {
            let target = state.at;
            drop(state);
            let set = set(&mut bell, target);
            #[cfg(all(test, not(opguard_loom)))]
            if let Some(hold) = AFTER_SET.take() {
                hold();
            }
            state = lock(&self.state);
            let rang = std::mem::replace(&mut state.rang_out, false);
            match set {
                // Asked for an earlier tick meanwhile, or it rang meanwhile
                // (for the time just set, perhaps) and the ring asked for
                // the next tick: set it again.
                Set::Pending if state.at < target || (rang && state.at != UNSET) => continue,
                Set::Pending | Set::Rang => state.bell = bell,
                Set::Failed => {
                    state.at = UNSET;
                    state.setting = false;
                    drop(state);
                    // Dropped with no lock held, as it was set.
                    drop(bell);
                    return Set::Failed;
                }
            }
            state.setting = false;
            return set;
        }
    }

    /// The bell rang: nothing is asked of it until the ringer, having fired
    /// the lane's due ticks, asks for the next.
    pub(super) fn rang(&self) {
        let mut state = lock(&self.state);
        state.at = UNSET;
        // A thread setting the bell sets it again for what is asked next.
        state.rang_out |= state.setting;
    }

    /// What is asked of it: the tick it rings at or before, or [`UNSET`].
    #[cfg(test)]
    pub(super) fn asked(&self) -> u64 {
        lock(&self.state).at
    }
}

/// The alarm under loom, which runs every interleaving of the threads:
///
///     RUSTFLAGS="--cfg opguard_loom" cargo test --release --lib loom
#[cfg(opguard_loom)]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;
    use std::collections::BTreeSet;

    /// A lane as the wheel keeps one: its ticks, and its alarm, whose bell
    /// is the tick it is set for; `armed`, the tick a futures-timer `Delay`
    /// would ring at, [`UNSET`] once it rang (a bell rings once per set).
    struct Lane {
        ticks: Mutex<BTreeSet<u64>>,
        alarm: Alarm<u64>,
        armed: Mutex<u64>,
    }

    impl Lane {
        fn set(&self, bell: &mut Option<u64>, at: u64) -> Set {
            *bell = Some(at);
            *lock(&self.armed) = at;
            Set::Pending
        }

        fn ask(&self, at: u64) -> Set {
            self.alarm.ask(at, |bell, at| self.set(bell, at))
        }
    }

    /// A new tick joins the lane and asks the alarm for it, as a timeout's
    /// start does.
    fn add(lane: &Lane, at: u64) {
        lock(&lane.ticks).insert(at);
        assert_eq!(lane.ask(at), Set::Pending);
    }

    fn empty_lane() -> Arc<Lane> {
        Arc::new(Lane {
            ticks: Mutex::new(BTreeSet::new()),
            alarm: Alarm::new(),
            armed: Mutex::new(UNSET),
        })
    }

    /// [`add`] on another thread.
    fn adding(lane: &Arc<Lane>, at: u64) -> thread::JoinHandle<()> {
        let lane = lane.clone();
        thread::spawn(move || add(&lane, at))
    }

    /// It is `now`: a bell armed for then or before rings, once. The due
    /// ticks fire (leave), and the alarm is asked for the next one.
    fn ring(lane: &Lane, now: u64) {
        {
            let mut armed = lock(&lane.armed);
            if *armed > now {
                return;
            }
            *armed = UNSET;
        }
        lane.alarm.rang();
        let next = {
            let mut ticks = lock(&lane.ticks);
            ticks.retain(|&t| t > now);
            ticks.first().copied()
        };
        if let Some(next) = next {
            assert_eq!(lane.ask(next), Set::Pending);
        }
    }

    /// Whatever the interleaving, every tick left is covered: the bell is
    /// armed at or before it (not spent), and nothing is left asked but
    /// unset.
    fn covered(lane: &Lane) {
        let state = lock(&lane.alarm.state);
        assert!(!state.setting);
        if let Some(&first) = lock(&lane.ticks).first() {
            let bell = state.bell.expect("ticks wait, and no bell is set");
            let armed = *lock(&lane.armed);
            assert!(
                armed <= first,
                "the bell rings at {armed} ({UNSET}: it rang already), after tick {first}"
            );
            assert!(bell <= state.at || state.at == UNSET);
        }
    }

    /// The bell is set for a new earliest tick, and rings for it before the
    /// thread that set it has put it back; the ring asks for the next tick
    /// meanwhile. The bell rang and is spent: the thread that set it sets
    /// it again, for the next tick.
    #[test]
    fn loom_a_bell_that_rings_while_it_is_out_is_set_again() {
        loom::model(|| {
            let lane = empty_lane();
            add(&lane, 30);
            let earlier = adding(&lane, 20);
            ring(&lane, 20);
            earlier.join().unwrap();
            covered(&lane);
        });
    }

    /// Two threads add ticks, an earlier one second, while the bell rings
    /// for a first tick: every tick left is covered.
    #[test]
    fn loom_ticks_added_racing_a_ring_are_all_covered() {
        loom::model(|| {
            let lane = empty_lane();
            add(&lane, 10);
            let later = adding(&lane, 30);
            let earlier = adding(&lane, 20);
            ring(&lane, 10);
            later.join().unwrap();
            earlier.join().unwrap();
            covered(&lane);
        });
    }

    /// Two threads ask for ever earlier ticks at once: the one setting the
    /// bell sets it again for the other's, and the bell ends at the earliest.
    #[test]
    fn loom_an_earlier_tick_asked_while_the_bell_is_out_is_set_too() {
        loom::model(|| {
            let lane = empty_lane();
            let other = adding(&lane, 20);
            add(&lane, 10);
            other.join().unwrap();
            covered(&lane);
            assert_eq!(lock(&lane.alarm.state).bell, Some(10));
            assert_eq!(*lock(&lane.armed), 10);
        });
    }
}
