//! Per-thread counts of what nearly every `safe_mps!` call counts at its
//! call site, summed when read: an attempt on MPS while MPS works, a skip
//! straight to CPU while it does not.
//!
//! One shared counter per site made each count a `lock`-prefixed add on a
//! cache line that every thread calling the site writes, the line that also
//! holds the site's pin, which every call reads: with two threads calling one
//! site, an admitted call took four to seven times as long as with one, a
//! skipped one twice. Here each thread counts in a block of its own, with a
//! plain load and store, and a read sums the blocks.
//!
//! - The first [`SLOTS`] counters to count (a site's attempts and its skips
//!   are two) get a slot in every block; those after them count in their
//!   shared counter, as before (still exact, only not faster).
//! - A thread takes a block on its first count in a slotted counter. When the
//!   thread ends, its block is free again, counts and all, and the next new
//!   thread counts on in it: the blocks are never freed, and there are never
//!   more of them than threads that counted at the same time (1 KB each).
//! - A count made after the thread's block was given back (from a destructor
//!   of another thread-local) goes to the counter's shared part.
//! - No lock is held while memory is allocated (a global allocator is user
//!   code too): the blocks are a lock-free, push-only list, each with a flag
//!   that says whether a thread holds it, and the one lock, which gives
//!   counters their slots, guards a number.
//!
//! # Atomic orderings
//! A block's slots are written by the one thread that holds it (a `Relaxed`
//! load and store: no read-modify-write) and read by readers (`Relaxed`):
//! counts for reports, as before, with nothing to order. A block changes
//! hands through its flag: cleared with `Release` by the thread that ends,
//! taken with an `Acquire` compare-exchange, so the last count of the one
//! comes before the first of the other. The list publishes each block with
//! its `Release` push ([`StaticList`]). A read after a thread has been
//! joined sees all of its counts.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::site::{Link, Listed, StaticList};

/// The counters that get a slot in every block; later ones count in their
/// shared counter.
pub(crate) const SLOTS: usize = 128;

/// A counter's slot in every block.
pub(crate) struct Slot(AtomicU32);

/// Not given yet: the counter has not counted.
const UNSET: u32 = u32::MAX;
/// None left when the counter first counted.
const NONE: u32 = u32::MAX - 1;

impl Slot {
    pub(crate) const fn new() -> Self {
        Slot(AtomicU32::new(UNSET))
    }

    /// A slot that none is left for (what the counters after the first
    /// [`SLOTS`] get).
    #[cfg(test)]
    const fn none() -> Self {
        Slot(AtomicU32::new(NONE))
    }

    /// The slot's index, given now if the counter has none yet.
    #[cold]
    fn give(&self) -> u32 {
        /// Slots given so far.
        static GIVEN: Mutex<u32> = Mutex::new(0);
        // Nothing under the lock can panic or run user code.
        let mut given = GIVEN.lock().unwrap_or_else(PoisonError::into_inner);
        // Read again under the lock: another thread may have just given it.
        let mut i = self.0.load(Ordering::Relaxed);
        if i == UNSET {
            i = if (*given as usize) < SLOTS {
                *given += 1;
                *given - 1
            } else {
                NONE
            };
            self.0.store(i, Ordering::Relaxed);
        }
        i
    }
}

/// One thread's counts, a slot per counter.
struct Block {
    counts: [AtomicU64; SLOTS],
    /// Whether a thread holds the block.
    held: AtomicBool,
    link: Link<Block>,
}

impl Listed for Block {
    fn link(&self) -> &Link<Self> {
        &self.link
    }
}

/// Every block ever made (each leaked: `'static`).
static BLOCKS: StaticList<Block> = StaticList::new();

impl Block {
    /// A free block, or a new one.
    fn take() -> &'static Block {
        for block in BLOCKS.iter() {
            if !block.held.load(Ordering::Relaxed)
                && block
                    .held
                    .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return block;
            }
        }
        let block: &'static Block = Box::leak(Box::new(Block {
            counts: [const { AtomicU64::new(0) }; SLOTS],
            held: AtomicBool::new(true),
            link: Link::new(),
        }));
        BLOCKS.push_once(block);
        block
    }

    fn give_back(&self) {
        self.held.store(false, Ordering::Release);
    }

    #[inline(always)]
    fn add(&self, i: usize) {
        let c = &self.counts[i];
        c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }
}

thread_local! {
    /// This thread's block, once it has one and until it gives it back: a
    /// thread-local with nothing to drop, so reading it is one load.
    static MINE: Cell<Option<&'static Block>> = const { Cell::new(None) };
    /// Gives this thread's block back when the thread ends.
    static HOLDER: Holder = const { Holder };
}

struct Holder;

impl Drop for Holder {
    fn drop(&mut self) {
        if let Some(block) = MINE.take() {
            block.give_back();
        }
    }
}

/// This thread's block, taken now if it has none; `None` once the thread's
/// thread-locals are being destroyed.
fn mine() -> Option<&'static Block> {
    if let Some(block) = MINE.get() {
        return Some(block);
    }
    // Makes sure the block is given back when the thread ends; fails once
    // this thread's thread-locals are being destroyed.
    HOLDER.try_with(|_| ()).ok()?;
    let block = Block::take();
    // Should taking it have counted on this thread (an allocator that
    // does), the block taken meanwhile goes back.
    if let Some(other) = MINE.replace(Some(block)) {
        other.give_back();
    }
    Some(block)
}

/// Counts one event in the counter whose slot is `slot` and whose shared
/// part is `shared`.
#[inline(always)]
pub(crate) fn count(slot: &Slot, shared: &AtomicU64) {
    let i = slot.0.load(Ordering::Relaxed) as usize;
    match MINE.get() {
        Some(block) if i < SLOTS => block.add(i),
        _ => count_slow(slot, shared),
    }
}

/// [`count`]'s first time for a counter, or on a thread: gives the slot and
/// the block, or counts in `shared`.
#[cold]
#[inline(never)]
fn count_slow(slot: &Slot, shared: &AtomicU64) {
    let mut i = slot.0.load(Ordering::Relaxed);
    if i == UNSET {
        i = slot.give();
    }
    match mine() {
        Some(block) if (i as usize) < SLOTS => block.add(i as usize),
        // No slot, or the thread's thread-locals are being destroyed.
        _ => {
            shared.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What has been counted in blocks for the counter whose slot is `slot` (its
/// shared part holds the rest).
pub(crate) fn read(slot: &Slot) -> u64 {
    let i = slot.0.load(Ordering::Relaxed) as usize;
    if i >= SLOTS {
        return 0;
    }
    BLOCKS.iter().fold(0u64, |sum, block| {
        sum.wrapping_add(block.counts[i].load(Ordering::Relaxed))
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
        read(slot) + shared.load(Ordering::Relaxed)
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
        assert_eq!(shared.load(Ordering::Relaxed), 0);
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
        let blocks = BLOCKS.iter().count();
        assert!(blocks < 64, "{blocks}");
    }

    #[test]
    fn a_counter_without_a_slot_counts_in_its_shared_part() {
        let slot: &'static Slot = Box::leak(Box::new(Slot::none()));
        let shared = AtomicU64::new(0);
        count(slot, &shared);
        count(slot, &shared);
        assert_eq!((read(slot), shared.load(Ordering::Relaxed)), (0, 2));
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
