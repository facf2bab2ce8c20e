//! Per-thread counts of the calls that try MPS, summed when read.
//!
//! Every call that tries MPS is counted at its call site, and on a machine
//! with MPS that is nearly every call. One shared counter per site made each
//! count a `lock`-prefixed add on a cache line that every thread calling the
//! site writes: with two threads calling one site, a call took about four
//! times as long as with one. Here each thread counts in a block of its own,
//! with a plain load and store, and a read sums the blocks.
//!
//! - The first [`SLOTS`] call sites to count get a slot in every block; the
//!   sites after them count in their shared counter, as before (still exact,
//!   only not faster).
//! - A thread takes a block on its first count at a slotted site. When the
//!   thread ends, its block goes back to a free list, counts and all, and the
//!   next new thread counts on in it: the blocks are never freed, and there
//!   are never more of them than threads that counted at the same time
//!   (1 KB each).
//! - A count made after the thread's block went back (from a destructor of
//!   another thread-local) goes to the site's shared counter.
//!
//! # Atomic orderings
//! A block's slots are written by the one thread that holds it (a `Relaxed`
//! load and store: no read-modify-write) and read by readers (`Relaxed`):
//! counts for reports, as before, with nothing to order. A block changes
//! hands only through the registry's lock, which orders the last count of
//! the thread that gave it back before the first of the thread that takes it.
//! A read after a thread has been joined sees all of its counts.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The call sites that get a slot in every block; later ones count in their
/// shared counter.
pub(crate) const SLOTS: usize = 128;

/// A site's slot in every block.
pub(crate) struct Slot(AtomicU32);

/// Not given yet: the site has not counted.
const UNSET: u32 = u32::MAX;
/// None left when the site first counted.
const NONE: u32 = u32::MAX - 1;

impl Slot {
    pub(crate) const fn new() -> Self {
        Slot(AtomicU32::new(UNSET))
    }

    /// A slot that none is left for (what the sites after the first
    /// [`SLOTS`] get).
    #[cfg(test)]
    const fn none() -> Self {
        Slot(AtomicU32::new(NONE))
    }
}

/// One thread's counts, a slot per site.
struct Block {
    counts: [AtomicU64; SLOTS],
}

struct Registry {
    /// Slots given to sites so far.
    given: u32,
    /// Every block ever made (each leaked: `'static`).
    all: Vec<&'static Block>,
    /// Blocks whose thread has ended.
    free: Vec<&'static Block>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    given: 0,
    all: Vec::new(),
    free: Vec::new(),
});

/// Nothing under the lock runs user code or panics midway, so a poisoned
/// lock (a panic elsewhere, such as out of memory) still holds whole data.
fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

thread_local! {
    /// This thread's block, once it has one and until it gives it back: a
    /// thread-local with nothing to drop, so reading it is one load.
    static MINE: Cell<Option<&'static Block>> = const { Cell::new(None) };
    /// Holds the block for the thread, and gives it back when it ends.
    static HOLDER: Holder = Holder::take();
}

struct Holder;

impl Holder {
    fn take() -> Holder {
        let block = {
            let mut registry = registry();
            match registry.free.pop() {
                Some(block) => block,
                None => {
                    let block: &'static Block = Box::leak(Box::new(Block {
                        counts: [const { AtomicU64::new(0) }; SLOTS],
                    }));
                    registry.all.push(block);
                    block
                }
            }
        };
        MINE.set(Some(block));
        Holder
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if let Some(block) = MINE.take() {
            registry().free.push(block);
        }
    }
}

/// Counts one event at the site whose slot is `slot` and whose shared
/// counter is `shared`.
#[inline(always)]
pub(crate) fn count(slot: &Slot, shared: &AtomicU64) {
    let i = slot.0.load(Relaxed) as usize;
    match MINE.get() {
        Some(block) if i < SLOTS => {
            let c = &block.counts[i];
            c.store(c.load(Relaxed).wrapping_add(1), Relaxed);
        }
        _ => count_slow(slot, shared),
    }
}

/// [`count`]'s first time at a site, or on a thread: gives the slot and the
/// block, or counts in `shared`.
#[cold]
#[inline(never)]
fn count_slow(slot: &Slot, shared: &AtomicU64) {
    let mut i = slot.0.load(Relaxed);
    if i == UNSET {
        let mut registry = registry();
        // Read again under the lock: another thread may have just given it.
        i = slot.0.load(Relaxed);
        if i == UNSET {
            i = if (registry.given as usize) < SLOTS {
                registry.given += 1;
                registry.given - 1
            } else {
                NONE
            };
            slot.0.store(i, Relaxed);
        }
    }
    let block = MINE
        .get()
        .or_else(|| HOLDER.try_with(|_| ()).ok().and_then(|()| MINE.get()));
    match block {
        Some(block) if (i as usize) < SLOTS => {
            let c = &block.counts[i as usize];
            c.store(c.load(Relaxed).wrapping_add(1), Relaxed);
        }
        // No slot, or the thread's thread-locals are being destroyed.
        _ => {
            shared.fetch_add(1, Relaxed);
        }
    }
}

/// What has been counted in blocks at the site whose slot is `slot` (its
/// shared counter holds the rest).
pub(crate) fn read(slot: &Slot) -> u64 {
    let i = slot.0.load(Relaxed) as usize;
    if i >= SLOTS {
        return 0;
    }
    registry().all.iter().fold(0u64, |sum, block| {
        sum.wrapping_add(block.counts[i].load(Relaxed))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    fn site() -> (&'static Slot, &'static AtomicU64) {
        (
            Box::leak(Box::new(Slot::new())),
            Box::leak(Box::new(AtomicU64::new(0))),
        )
    }

    fn total(slot: &Slot, shared: &AtomicU64) -> u64 {
        read(slot) + shared.load(Relaxed)
    }

    #[test]
    fn counts_from_threads_that_counted_at_once_add_up_once_they_are_joined() {
        let (slot, shared) = site();
        let threads = 8;
        let each = if cfg!(miri) { 50 } else { 10_000 };
        let barrier = Barrier::new(threads);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    barrier.wait();
                    for _ in 0..each {
                        count(slot, shared);
                    }
                });
            }
        });
        assert_eq!(total(slot, shared), (threads * each) as u64);
        // In blocks, not in the shared counter.
        assert_eq!(shared.load(Relaxed), 0);
    }

    #[test]
    fn a_thread_reads_its_own_counts_at_once() {
        let (slot, shared) = site();
        for n in 1..=5 {
            count(slot, shared);
            assert_eq!(total(slot, shared), n);
        }
    }

    #[test]
    fn a_block_outlives_its_thread_and_serves_the_next_one() {
        let (slot, shared) = site();
        let rounds = if cfg!(miri) { 5 } else { 200 };
        for _ in 0..rounds {
            std::thread::spawn(|| {
                count(slot, shared);
                count(slot, shared);
            })
            .join()
            .unwrap();
        }
        assert_eq!(total(slot, shared), 2 * rounds);
        // Threads one after another reuse blocks: far fewer than threads
        // (other tests' threads may hold some at the same time).
        assert!(registry().all.len() < 64, "{}", registry().all.len());
    }

    #[test]
    fn a_site_without_a_slot_counts_in_its_shared_counter() {
        let slot: &'static Slot = Box::leak(Box::new(Slot::none()));
        let shared = AtomicU64::new(0);
        count(slot, &shared);
        count(slot, &shared);
        assert_eq!((read(slot), shared.load(Relaxed)), (0, 2));
    }

    #[test]
    fn a_count_from_a_thread_local_destructor_after_the_block_went_back_is_kept() {
        let (slot, shared) = site();
        struct CountsWhenDropped(&'static Slot, &'static AtomicU64);
        impl Drop for CountsWhenDropped {
            fn drop(&mut self) {
                // Whether the holder has gone yet or not, the count is kept.
                count(self.0, self.1);
                count(self.0, self.1);
            }
        }
        thread_local! {
            static LATE: Cell<Option<CountsWhenDropped>> = const { Cell::new(None) };
        }
        std::thread::spawn(move || {
            count(slot, shared);
            LATE.set(Some(CountsWhenDropped(slot, shared)));
        })
        .join()
        .unwrap();
        assert_eq!(total(slot, shared), 3);
    }
}
