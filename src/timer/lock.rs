//! The lock of a tick's waiter list: a spin lock whose release is a plain
//! store.
//!
//! Every timeout that finishes in time takes its tick's lock twice (to join
//! the list and to leave it), and an uncontended `std::sync::Mutex` costs two
//! atomic read-modify-writes each time: one to take it, and one to release it
//! (a swap, which tells whether a thread sleeps on it and must be woken).
//! Those are the dearest instructions a timeout runs: measured in a
//! timeout's start and end, each costs 7 to 10 ns, about what a hundred
//! plain ones do. This lock releases with a store, so a timeout pays two
//! read-modify-writes for its two locks where it paid four.
//!
//! What makes that sound here: the list's lock is held for a few dozen
//! instructions at a time, never while user code runs (no waker is cloned,
//! woken or dropped under it), no other lock is taken under it (it is the
//! innermost), and a tick's list is mostly used by one thread (its lane's). So it is rarely
//! contended, and when it is, the holder is about to release it. A thread
//! that finds it held spins briefly, then yields, then sleeps in short steps:
//! should the holder have been preempted, the waiter gives its core back
//! rather than burn it.
//!
//! There is no poisoning: a panic while it is held (the list's code does not
//! panic; an allocation failure aborts) releases it as the guard drops,
//! which is what the list's callers did with a poisoned `Mutex` too.

#[cfg(opguard_loom)]
use loom::cell::{MutPtr, UnsafeCell};
#[cfg(opguard_loom)]
use loom::sync::atomic::{AtomicBool, Ordering};
#[cfg(not(opguard_loom))]
use std::cell::UnsafeCell;
#[cfg(not(opguard_loom))]
use std::sync::atomic::{AtomicBool, Ordering};

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

/// A value behind a spin lock (see the module's docs).
pub(super) struct Lock<T> {
    held: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through a `Guard`, and at most one guard
// exists at a time (`held` is set by the one that made it, with `Acquire`,
// and cleared as it drops, with `Release`), or through `&mut Lock`: a
// `&Lock<T>` shared between threads hands the value from one thread to
// another, one at a time, which `T: Send` allows.
unsafe impl<T: Send> Sync for Lock<T> {}

// As `std::sync::Mutex`: a panic that unwinds out of a caller cannot leave
// the value half changed, as the list's code under the lock does not panic
// (the `Mutex` this replaces was unwind safe, its poisoning ignored).
impl<T> std::panic::RefUnwindSafe for Lock<T> {}
impl<T> std::panic::UnwindSafe for Lock<T> {}

impl<T> Lock<T> {
    pub(super) fn new(value: T) -> Self {
        Lock {
            held: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Takes the lock: one compare-and-swap when no one holds it.
    #[inline]
    pub(super) fn lock(&self) -> Guard<'_, T> {
        if self
            .held
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        Guard {
            lock: self,
            value_of: PhantomData,
            #[cfg(opguard_loom)]
            value: Some(self.value.get_mut()),
        }
    }

    /// Waits for the holder, trying again each time it sees the lock free:
    /// spins, then yields, then sleeps in steps growing to 100 µs.
    #[cold]
    #[inline(never)]
    fn lock_contended(&self) {
        let mut tries: u32 = 0;
        loop {
            while self.held.load(Ordering::Relaxed) {
                tries = tries.saturating_add(1);
                wait(tries);
            }
            if self
                .held
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }

    /// The value, through `&mut self`: no one can hold the lock. (The wait
    /// lists' loom models use `model::Lock` instead.)
    #[cfg(not(opguard_loom))]
    pub(super) fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }
}

/// One wait for a held lock, the `tries`-th in a row (from 1).
#[cfg(not(opguard_loom))]
fn wait(tries: u32) {
    const SPINS: u32 = 64;
    const YIELDS: u32 = 16;
    if tries <= SPINS {
        std::hint::spin_loop();
    } else if tries <= SPINS + YIELDS {
        std::thread::yield_now();
    } else {
        let micros = (tries - SPINS - YIELDS).min(100);
        std::thread::sleep(std::time::Duration::from_micros(u64::from(micros)));
    }
}

/// Under loom, which must see every wait to run the other threads.
#[cfg(opguard_loom)]
fn wait(_: u32) {
    loom::thread::yield_now();
}

/// The lock, held: releases it as it drops. Shared between threads only
/// where `&mut T` may be (`T: Sync`), as `std::sync::MutexGuard`.
pub(super) struct Guard<'a, T> {
    lock: &'a Lock<T>,
    value_of: PhantomData<&'a mut T>,
    /// loom's record of the access, which must end before the release.
    #[cfg(opguard_loom)]
    value: Option<MutPtr<T>>,
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: this guard holds the lock (see `Lock`'s `Sync`), so no
        // other reference to the value exists while it lives.
        #[cfg(not(opguard_loom))]
        return unsafe { &*self.lock.value.get() };
        // SAFETY: as above.
        #[cfg(opguard_loom)]
        return unsafe { MutPtr::deref(self.value.as_ref().expect("held")) };
    }
}

impl<T> DerefMut for Guard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference
        // made through this guard.
        #[cfg(not(opguard_loom))]
        return unsafe { &mut *self.lock.value.get() };
        // SAFETY: as above.
        #[cfg(opguard_loom)]
        return unsafe { MutPtr::deref(self.value.as_ref().expect("held")) };
    }
}

impl<T> Drop for Guard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        #[cfg(opguard_loom)]
        drop(self.value.take());
        self.lock.held.store(false, Ordering::Release);
    }
}

#[cfg(all(test, not(opguard_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn threads_that_take_the_lock_take_turns() {
        let lock = Arc::new(Lock::new((0u64, 0u64)));
        let (threads, rounds) = if cfg!(miri) { (3, 50) } else { (4, 20_000) };
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let lock = Arc::clone(&lock);
                std::thread::spawn(move || {
                    for _ in 0..rounds {
                        let mut held = lock.lock();
                        // Two writes that only a turn of its own keeps equal.
                        held.0 += 1;
                        std::hint::black_box(&mut *held);
                        held.1 += 1;
                        assert_eq!(held.0, held.1, "two threads held the lock at once");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let total = threads * rounds;
        assert_eq!(*lock.lock(), (total, total));
    }

    #[test]
    fn a_thread_waits_for_a_holder_that_keeps_the_lock_past_its_spins_and_yields() {
        let lock = Arc::new(Lock::new(0u32));
        let held = lock.lock();
        let (started, waiting) = std::sync::mpsc::channel();
        let waiter = {
            let lock = Arc::clone(&lock);
            std::thread::spawn(move || {
                started.send(()).unwrap();
                *lock.lock()
            })
        };
        waiting.recv().unwrap();
        // Long enough that the waiter is sleeping between its tries.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut held = held;
        *held = 7;
        drop(held);
        assert_eq!(
            waiter.join().unwrap(),
            7,
            "the waiter saw the holder's write"
        );
    }

    #[test]
    fn a_panic_while_it_is_held_releases_it() {
        let lock = Lock::new(1u8);
        let unwound = std::panic::catch_unwind(|| {
            let _held = lock.lock();
            panic!("while held");
        });
        assert!(unwound.is_err());
        assert!(
            !lock.held.load(Ordering::Relaxed),
            "still held after the unwind"
        );
        *lock.lock() += 1;
        assert_eq!(*lock.lock(), 2);
    }
}

/// The lock the wait lists' loom models use: loom's own mutex, behind the
/// same calls. A spin lock in those models would have loom run out of
/// branches (every spin is one); the spin lock itself is checked on its own
/// (`loom_tests` below), and the lists' models take it for a mutex.
#[cfg(opguard_loom)]
pub(super) mod model {
    pub(in crate::timer) struct Lock<T>(loom::sync::Mutex<T>);

    pub(in crate::timer) type Guard<'a, T> = loom::sync::MutexGuard<'a, T>;

    impl<T> Lock<T> {
        pub(in crate::timer) fn new(value: T) -> Self {
            Lock(loom::sync::Mutex::new(value))
        }

        pub(in crate::timer) fn lock(&self) -> Guard<'_, T> {
            self.0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }

        pub(in crate::timer) fn get_mut(&mut self) -> &mut T {
            self.0
                .get_mut()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }
}

/// The lock under loom, which runs every interleaving of the threads:
///
///     RUSTFLAGS="--cfg opguard_loom" cargo test --release --lib loom
#[cfg(all(test, opguard_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    #[test]
    fn loom_two_threads_never_hold_the_lock_at_once() {
        loom::model(|| {
            let lock = Arc::new(Lock::new(0u32));
            let other = {
                let lock = Arc::clone(&lock);
                loom::thread::spawn(move || *lock.lock() += 1)
            };
            // loom's cell reports any access that overlaps another.
            *lock.lock() += 1;
            other.join().unwrap();
            assert_eq!(*lock.lock(), 2);
        });
    }
}
