//! The circuit breaker that keeps work off MPS after failures: one for the
//! whole process (device-level errors) and one per call site (op-level).
//!
//! Closed: MPS is tried. After `threshold` consecutive MPS failures it opens:
//! calls go straight to CPU. Once `cooldown` has passed, the first call to ask
//! becomes the one trial (half-open) while everyone else still goes to CPU;
//! its success closes the breaker, its failure opens it for another cool-down.
//! A call site's breaker is the same machine with a threshold of one: an
//! op-level failure pins the site to CPU at once.
//!
//! The breaker is a plain struct driven by the caller's clock (`now`, in
//! nanoseconds) and settings, so that tests can walk it through every state
//! with a fake clock; the process-wide one lives in [`super::registry`], the
//! per-site ones in [`super::site`]. The clock is read only when the answer
//! depends on it, so a closed breaker costs one load.
//!
//! # Atomic orderings
//! - `word` packs the state with the time the breaker opened, so that one
//!   `compare_exchange` moves both: exactly one caller wins each transition
//!   (one "disabled" log line, one trial). Transitions use `AcqRel` and loads
//!   `Acquire`, so that a thread which sees CLOSED after a successful trial
//!   also sees the failure streak reset that came before it.
//! - `streak` is a counter; its `fetch_add` is `Relaxed`. A failure racing a
//!   reset may be counted in either streak, which only shifts by one call
//!   when MPS is disabled, never whether exactly one caller disables it.

#[cfg(opguard_loom)]
use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
#[cfg(not(opguard_loom))]
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The state of the breaker, as a snapshot reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MpsState {
    /// MPS is used.
    Enabled,
    /// MPS is disabled after repeated failures; calls run on CPU until the cool-down ends.
    Disabled,
    /// The cool-down is over and one trial call is on MPS; the rest run on CPU.
    Probing,
}

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const STATE_BITS: u32 = 2;

const fn pack(state: u64, since: u64) -> u64 {
    (since << STATE_BITS) | state
}
const fn state(word: u64) -> u64 {
    word & ((1 << STATE_BITS) - 1)
}
const fn since(word: u64) -> u64 {
    word >> STATE_BITS
}

/// What a call may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Try MPS.
    Mps,
    /// Try MPS as the one trial after the cool-down; report how it went.
    Trial,
    /// MPS is disabled: go straight to CPU.
    Cpu,
}

/// A transition that the caller should log, exactly once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transition {
    /// The breaker opened after this many consecutive failures.
    Disabled { failures: u32 },
    /// The trial failed: open for another cool-down.
    TrialFailed,
    /// The trial succeeded: closed again.
    Enabled,
}

impl Transition {
    /// Whether the breaker opened (first, or again after a failed trial).
    pub(crate) fn opened(self) -> bool {
        self != Transition::Enabled
    }
}

#[derive(Debug)]
pub(crate) struct Breaker {
    /// State in the low 2 bits; above them, the time (ns) it opened.
    word: AtomicU64,
    streak: AtomicU32,
}

impl Breaker {
    #[cfg(not(opguard_loom))]
    pub(crate) const fn new() -> Self {
        Breaker {
            word: AtomicU64::new(pack(CLOSED, 0)),
            streak: AtomicU32::new(0),
        }
    }

    // loom's atomics cannot be built in a const context.
    #[cfg(opguard_loom)]
    pub(crate) fn new() -> Self {
        Breaker {
            word: AtomicU64::new(pack(CLOSED, 0)),
            streak: AtomicU32::new(0),
        }
    }

    pub(crate) fn state(&self) -> MpsState {
        match state(self.word.load(Ordering::Acquire)) {
            CLOSED => MpsState::Enabled,
            OPEN => MpsState::Disabled,
            _ => MpsState::Probing,
        }
    }

    /// Whether the breaker lets calls through with no trial (one load).
    #[inline]
    pub(crate) fn closed(&self) -> bool {
        state(self.word.load(Ordering::Acquire)) == CLOSED
    }

    pub(crate) fn streak(&self) -> u32 {
        self.streak.load(Ordering::Relaxed)
    }

    /// Back to closed with no streak (for tests and `reset`).
    pub(crate) fn reset(&self) {
        self.streak.store(0, Ordering::Relaxed);
        self.word.store(pack(CLOSED, 0), Ordering::Release);
    }

    /// Decides whether a call may try MPS; the cool-down and the clock are
    /// read only when the breaker is open.
    #[inline]
    pub(crate) fn admit(&self, cooldown: impl FnOnce() -> u64, now: impl FnOnce() -> u64) -> Admit {
        let word = self.word.load(Ordering::Acquire);
        match state(word) {
            CLOSED => Admit::Mps,
            OPEN if now().saturating_sub(since(word)) >= cooldown() => {
                // Only the caller whose exchange succeeds becomes the trial.
                // Half-open keeps the time the breaker opened, so that a
                // trial handed back finds the cool-down already over.
                match self.word.compare_exchange(
                    word,
                    pack(HALF_OPEN, since(word)),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => Admit::Trial,
                    Err(_) => Admit::Cpu,
                }
            }
            _ => Admit::Cpu,
        }
    }

    /// An MPS attempt did not fail with an MPS error.
    #[inline]
    pub(crate) fn on_success(&self, trial: bool) -> Option<Transition> {
        // Load first: a store on every success would bounce the cache line.
        if self.streak.load(Ordering::Relaxed) != 0 {
            self.streak.store(0, Ordering::Relaxed);
        }
        if trial {
            return self
                .transition(HALF_OPEN, CLOSED, 0)
                .then_some(Transition::Enabled);
        }
        None
    }

    /// An MPS attempt failed with an MPS error at `now`; `threshold`
    /// consecutive failures open the breaker.
    pub(crate) fn on_failure(&self, trial: bool, now: u64, threshold: u32) -> Option<Transition> {
        if trial {
            return self
                .transition(HALF_OPEN, OPEN, now)
                .then_some(Transition::TrialFailed);
        }
        let failures = self
            .streak
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if failures >= threshold.max(1) && self.transition(CLOSED, OPEN, now) {
            self.streak.store(0, Ordering::Relaxed);
            return Some(Transition::Disabled { failures });
        }
        None
    }

    /// The trial ended without a verdict (its future was dropped): open
    /// again, so that a later call makes a fresh trial after the cool-down.
    pub(crate) fn abandon_trial(&self, now: u64) {
        self.transition(HALF_OPEN, OPEN, now);
    }

    /// The trial was never run, or its outcome says nothing about this
    /// breaker: open as before, so that the next call to ask is the trial.
    pub(crate) fn give_back_trial(&self) {
        let word = self.word.load(Ordering::Acquire);
        if state(word) == HALF_OPEN {
            let _ = self.word.compare_exchange(
                word,
                pack(OPEN, since(word)),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    /// Moves `from` to `to` (opened at `now`); `true` for the one caller that did.
    fn transition(&self, from: u64, to: u64, now: u64) -> bool {
        let word = self.word.load(Ordering::Acquire);
        state(word) == from
            && self
                .word
                .compare_exchange(word, pack(to, now), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }
}

/// The breaker with fixed settings, as the registry drives it, for tests.
#[cfg(test)]
pub(crate) struct Fixed {
    breaker: Breaker,
    threshold: u32,
    cooldown: u64,
}

#[cfg(test)]
impl Fixed {
    pub(crate) fn new(threshold: u32, cooldown: u64) -> Self {
        Fixed {
            breaker: Breaker::new(),
            threshold,
            cooldown,
        }
    }

    pub(crate) fn admit(&self, now: u64) -> Admit {
        self.breaker.admit(|| self.cooldown, || now)
    }

    pub(crate) fn on_failure(&self, trial: bool, now: u64) -> Option<Transition> {
        self.breaker.on_failure(trial, now, self.threshold)
    }
}

#[cfg(test)]
impl std::ops::Deref for Fixed {
    type Target = Breaker;
    fn deref(&self) -> &Breaker {
        &self.breaker
    }
}

#[cfg(all(test, not(opguard_loom)))]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    const SEC: u64 = 1_000_000_000;

    /// Runs `f` on 16 threads released together; collects what they return.
    fn on_16_threads<T: Send + 'static>(f: impl Fn(usize) -> T + Send + Sync + 'static) -> Vec<T> {
        let f = Arc::new(f);
        let barrier = Arc::new(Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let (f, barrier) = (f.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    f(i)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    }

    #[test]
    fn sixteen_threads_of_failures_disable_exactly_once() {
        let b = Arc::new(Fixed::new(3, 10 * SEC));
        let b2 = b.clone();
        let transitions: Vec<_> = on_16_threads(move |_| {
            (0..100)
                .filter_map(|i| b2.on_failure(false, i))
                .collect::<Vec<_>>()
        })
        .into_iter()
        .flatten()
        .collect();
        assert_eq!(transitions.len(), 1, "{transitions:?}");
        assert!(matches!(transitions[0], Transition::Disabled { failures } if failures >= 3));
        assert_eq!(b.state(), MpsState::Disabled);
    }

    #[test]
    fn sixteen_threads_mixing_failures_and_successes_never_disable_twice() {
        let b = Arc::new(Fixed::new(2, 10 * SEC));
        let b2 = b.clone();
        let disabled: usize = on_16_threads(move |t| {
            (0..200)
                .filter(|i| {
                    if (i + t) % 3 == 0 {
                        b2.on_success(false);
                        false
                    } else {
                        b2.on_failure(false, 1).is_some()
                    }
                })
                .count()
        })
        .into_iter()
        .sum();
        assert!(disabled <= 1, "disabled {disabled} times");
        let expected = if disabled == 1 {
            MpsState::Disabled
        } else {
            MpsState::Enabled
        };
        assert_eq!(b.state(), expected);
    }

    #[test]
    fn after_the_cooldown_sixteen_threads_get_exactly_one_trial() {
        let b = Arc::new(Fixed::new(1, 10 * SEC));
        b.on_failure(false, 0);
        let b2 = b.clone();
        let admits = on_16_threads(move |_| b2.admit(10 * SEC));
        assert_eq!(admits.iter().filter(|a| **a == Admit::Trial).count(), 1);
        assert_eq!(admits.iter().filter(|a| **a == Admit::Cpu).count(), 15);
        assert_eq!(b.state(), MpsState::Probing);
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let b = Fixed::new(3, 10 * SEC);
        assert_eq!(b.on_failure(false, 1), None);
        assert_eq!(b.on_failure(false, 2), None);
        assert_eq!(b.admit(2), Admit::Mps);
        assert_eq!(
            b.on_failure(false, 3),
            Some(Transition::Disabled { failures: 3 })
        );
        assert_eq!(b.state(), MpsState::Disabled);
        assert_eq!(b.admit(4), Admit::Cpu);
        // Late failures of calls admitted before do not disable twice.
        assert_eq!(b.on_failure(false, 5), None);
    }

    #[test]
    fn a_success_breaks_the_streak() {
        let b = Fixed::new(2, SEC);
        b.on_failure(false, 0);
        assert_eq!(b.on_success(false), None);
        assert_eq!(b.on_failure(false, 0), None);
        assert_eq!(b.state(), MpsState::Enabled);
    }

    #[test]
    fn closed_open_half_open_closed_open() {
        let b = Fixed::new(1, 10 * SEC);
        assert_eq!(
            b.on_failure(false, 0),
            Some(Transition::Disabled { failures: 1 })
        );
        // Cool-down not over: CPU.
        assert_eq!(b.admit(10 * SEC - 1), Admit::Cpu);
        // Over: exactly one trial, the others still CPU.
        assert_eq!(b.admit(10 * SEC), Admit::Trial);
        assert_eq!(b.state(), MpsState::Probing);
        assert_eq!(b.admit(10 * SEC), Admit::Cpu);
        assert_eq!(b.on_success(true), Some(Transition::Enabled));
        assert_eq!(b.state(), MpsState::Enabled);
        assert_eq!(b.admit(11 * SEC), Admit::Mps);
        // And open again.
        assert_eq!(
            b.on_failure(false, 12 * SEC),
            Some(Transition::Disabled { failures: 1 })
        );
        assert_eq!(b.admit(13 * SEC), Admit::Cpu);
    }

    #[test]
    fn a_failed_trial_restarts_the_cooldown() {
        let b = Fixed::new(1, 10 * SEC);
        b.on_failure(false, 0);
        assert_eq!(b.admit(10 * SEC), Admit::Trial);
        assert_eq!(b.on_failure(true, 11 * SEC), Some(Transition::TrialFailed));
        assert_eq!(b.state(), MpsState::Disabled);
        assert_eq!(b.admit(20 * SEC), Admit::Cpu);
        assert_eq!(b.admit(21 * SEC), Admit::Trial);
    }

    #[test]
    fn an_abandoned_trial_opens_again() {
        let b = Fixed::new(1, SEC);
        b.on_failure(false, 0);
        assert_eq!(b.admit(SEC), Admit::Trial);
        b.abandon_trial(SEC);
        assert_eq!(b.state(), MpsState::Disabled);
        assert_eq!(b.admit(2 * SEC), Admit::Trial);
    }

    #[test]
    fn a_trial_handed_back_goes_to_the_next_caller_at_once() {
        let b = Fixed::new(1, 10 * SEC);
        b.on_failure(false, 0);
        assert_eq!(b.admit(10 * SEC), Admit::Trial);
        b.give_back_trial();
        assert_eq!(b.state(), MpsState::Disabled);
        // No new cool-down: the very next caller is the trial.
        assert_eq!(b.admit(10 * SEC), Admit::Trial);
        // Handing back twice, or when closed, changes nothing.
        assert_eq!(b.on_success(true), Some(Transition::Enabled));
        b.give_back_trial();
        assert_eq!(b.state(), MpsState::Enabled);
    }

    #[test]
    fn a_closed_breaker_reads_neither_the_clock_nor_the_cooldown() {
        let b = Breaker::new();
        let never = || unreachable!("read");
        assert_eq!(b.admit(never, never), Admit::Mps);
    }

    #[test]
    fn reset_closes() {
        let b = Fixed::new(1, SEC);
        b.on_failure(false, 0);
        b.reset();
        assert_eq!((b.state(), b.streak()), (MpsState::Enabled, 0));
    }
}

/// The breaker under loom, which runs every interleaving of the threads:
///
///     RUSTFLAGS="--cfg opguard_loom" cargo test --release --lib loom
#[cfg(opguard_loom)]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    const COOL: u64 = 10;

    #[test]
    fn loom_concurrent_failures_disable_exactly_once() {
        loom::model(|| {
            let b = Arc::new(Fixed::new(2, COOL));
            let threads: Vec<_> = (0..3)
                .map(|_| {
                    let b = b.clone();
                    thread::spawn(move || b.on_failure(false, 1))
                })
                .collect();
            let disabled = threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .filter(|t| matches!(t, Some(Transition::Disabled { .. })))
                .count();
            assert_eq!(disabled, 1);
            assert_eq!(b.state(), MpsState::Disabled);
        });
    }

    #[test]
    fn loom_after_the_cooldown_exactly_one_trial() {
        loom::model(|| {
            let b = Arc::new(Fixed::new(1, COOL));
            b.on_failure(false, 0);
            let threads: Vec<_> = (0..3)
                .map(|_| {
                    let b = b.clone();
                    thread::spawn(move || b.admit(COOL))
                })
                .collect();
            let admits: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            assert_eq!(admits.iter().filter(|a| **a == Admit::Trial).count(), 1);
            assert!(admits.iter().all(|a| *a != Admit::Mps));
        });
    }

    /// Closed, open, half-open, closed, open, with a trial's verdict racing
    /// other callers at each step.
    #[test]
    fn loom_the_whole_cycle_with_racing_callers() {
        loom::model(|| {
            let b = Arc::new(Fixed::new(1, COOL));
            // Closed -> open, while another caller asks.
            let other = {
                let b = b.clone();
                thread::spawn(move || b.admit(0))
            };
            assert_eq!(
                b.on_failure(false, 0),
                Some(Transition::Disabled { failures: 1 })
            );
            let seen = other.join().unwrap();
            assert!(seen == Admit::Mps || seen == Admit::Cpu);
            // Open -> half-open: the trial, while another caller asks.
            let other = {
                let b = b.clone();
                thread::spawn(move || b.admit(COOL))
            };
            let mine = b.admit(COOL);
            let theirs = other.join().unwrap();
            let (trial_here, trial_there) = (mine == Admit::Trial, theirs == Admit::Trial);
            assert!(
                trial_here ^ trial_there,
                "exactly one trial: {mine:?} {theirs:?}"
            );
            // Half-open -> closed by the trial's success, racing a late caller.
            let late = {
                let b = b.clone();
                thread::spawn(move || b.admit(COOL))
            };
            assert_eq!(b.on_success(true), Some(Transition::Enabled));
            assert_ne!(late.join().unwrap(), Admit::Trial);
            assert_eq!(b.state(), MpsState::Enabled);
            // Closed -> open again.
            assert_eq!(
                b.on_failure(false, 2 * COOL),
                Some(Transition::Disabled { failures: 1 })
            );
            assert_eq!(b.state(), MpsState::Disabled);
        });
    }
}
