//! One tick's waiters and whether it has come: the part of the timer whose
//! ordering matters, kept apart from the wheel and futures-timer so that loom
//! can run it under every interleaving.
//!
//! The list takes no waker clone and drops no waker while its lock is held:
//! wakers are user code, and one that starts or drops a timeout would lock
//! the list again. Callers clone before [`Waitlist::join`] and drop what
//! [`Waitlist::leave`], [`Waitlist::poll`] and [`Waitlist::finish`] hand
//! back, after the lock is released.

#[cfg(opguard_loom)]
use loom::sync::atomic::{AtomicBool, AtomicU8, Ordering};
#[cfg(not(opguard_loom))]
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use std::ops::{Deref, DerefMut};
use std::task::{Poll, Waker};

#[cfg(not(opguard_loom))]
use super::lock::{Guard, Lock};
// Under loom, loom's mutex (see `lock::model`).
#[cfg(opguard_loom)]
use super::lock::model::{Guard, Lock};

/// The tick has not come.
pub(super) const OPEN: u8 = 0;
/// The tick has come: every waiter's deadline has passed.
pub(super) const FIRED: u8 = 1;
/// The tick can never come: its timer could not start or went away.
pub(super) const BROKEN: u8 = 2;

/// The most a list's slack can be ([`Waitlist::slack`]): 250 of its units,
/// which its owner sets (a 250th of the tick's width: a microsecond for a
/// fine tick of 250 µs). Joiners with more slack than this give this.
pub(super) const MAX_SLACK: u8 = 250;

/// Slots in the largest chunks: 32 wakers of 16 bytes, an allocation small
/// enough that the system allocator serves it from its quick lists.
const CHUNK: usize = 32;
/// Chunks that grow before they reach [`CHUNK`] slots: 2, 4, 8, 16 and 32.
const GROWING: usize = CHUNK.trailing_zeros() as usize;

/// A chunk of waiter slots.
struct Chunk {
    slots: Box<[Option<Waker>]>,
    live: u32,
}

impl Chunk {
    fn new(len: usize) -> Self {
        Chunk {
            slots: (0..len).map(|_| None).collect(),
            live: 0,
        }
    }
}

/// The list of chunks, behind one pointer, made when a second waiter
/// joins: a tick with one waiter, the most common kind where timeouts
/// spread over ticks, needs none, and its list stays 16 bytes smaller for
/// it (with the flags and fields packed below, its tick is a 72-byte
/// allocation rather than one of 104, with its `Arc`'s counts). A tick of
/// two or more pays the box instead (24 bytes), about what every tick
/// saves.
#[derive(Default)]
#[allow(clippy::box_collection)] // The box is the point: one pointer, not three words.
struct Chunks(Option<Box<Vec<Option<Chunk>>>>);

impl Deref for Chunks {
    type Target = [Option<Chunk>];

    #[inline]
    fn deref(&self) -> &[Option<Chunk>] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }
}

impl DerefMut for Chunks {
    #[inline]
    fn deref_mut(&mut self) -> &mut [Option<Chunk>] {
        self.0.as_deref_mut().map_or(&mut [], Vec::as_mut_slice)
    }
}

impl Chunks {
    /// The list itself, made if it is not there yet.
    fn vec(&mut self) -> &mut Vec<Option<Chunk>> {
        self.0.get_or_insert_with(Box::default)
    }

    fn capacity(&self) -> usize {
        self.0.as_ref().map_or(0, |list| list.capacity())
    }

    /// Empties the list, keeping its memory.
    fn clear(&mut self) {
        if let Some(list) = &mut self.0 {
            list.clear();
        }
    }

    fn into_vec(self) -> Vec<Option<Chunk>> {
        self.0.map_or_else(Vec::new, |list| *list)
    }
}

/// No one may join: the tick finished, or its last waiter left.
const CLOSED: u32 = 1 << 31;
/// A thread keeps this tick for its next timeouts: when the last waiter
/// leaves, it stays open (see [`Waitlist::pin`]).
const PINNED: u32 = 1 << 30;
/// The key's bits, below the two flags (see [`Waiters::next`]); a list
/// whose next key is this one has handed out every key, and is full.
pub(super) const FULL: u32 = PINNED - 1;

/// The waiters: the first (key 0) in the list itself, the others in chunks
/// of 2, 4, 8, 16 and 32 slots, then 32 each. A waiter keeps its key (its
/// place) until it leaves. Keys are handed out in order and not reused: a
/// tick takes new waiters only for about a tick of start times (a
/// thousandth of their timeouts' length), so there is little to reuse, and
/// in exchange no slab is ever regrown or copied; what a key left behind
/// costs is its chunk's entry in the list of chunks (24 bytes per 32 keys)
/// until the tick empties. A tick with one waiter, as when timeouts start
/// one at a time or far enough apart that each gets a tick of its own, needs
/// no chunk at all, and one with a few waiters small ones; thousands come in
/// chunks of 32. A chunk goes back to the allocator as soon as it is full and empty
/// again, the last one when the last waiter leaves.
#[derive(Default)]
struct Waiters {
    /// The waiter whose key is 0.
    first: Option<Waker>,
    chunks: Chunks,
    /// The next key, at most [`FULL`], with the [`CLOSED`] and [`PINNED`]
    /// bits above it: two flags of their own would take 8 bytes more with
    /// their padding, and a tick's list is most of its size.
    next: u32,
    live: u32,
}

/// Where the waiter `key` is: its chunk and its slot there; `None` for the
/// first waiter, kept in [`Waiters::first`].
#[inline]
pub(super) fn split(key: u32) -> Option<(usize, usize)> {
    if key == 0 {
        return None;
    }
    // The growing chunks hold keys 1 to 2 * CHUNK - 2: chunk `c` those whose
    // `key + 1` has its highest bit at `c + 1`.
    let m = key as usize + 1;
    if m < 2 * CHUNK {
        let high = (usize::BITS - 1 - m.leading_zeros()) as usize;
        Some((high - 1, m - (1 << high)))
    } else {
        let past = m - 2 * CHUNK;
        Some((GROWING + past / CHUNK, past % CHUNK))
    }
}

/// The key of slot `i` of chunk `c`: the inverse of [`split`].
fn key_of(c: usize, i: usize) -> usize {
    if c < GROWING {
        (2 << c) - 1 + i
    } else {
        2 * CHUNK - 1 + (c - GROWING) * CHUNK + i
    }
}

/// How many slots chunk `c` has.
fn chunk_len(c: usize) -> usize {
    if c < GROWING { 2 << c } else { CHUNK }
}

impl Waiters {
    fn closed() -> Self {
        Waiters {
            next: CLOSED,
            ..Waiters::default()
        }
    }

    /// No one may join ([`CLOSED`]).
    #[inline]
    fn is_closed(&self) -> bool {
        self.next & CLOSED != 0
    }

    fn close(&mut self) {
        self.next |= CLOSED;
    }

    /// Its thread keeps it ([`PINNED`]).
    fn is_pinned(&self) -> bool {
        self.next & PINNED != 0
    }

    fn set_pinned(&mut self, pinned: bool) {
        if pinned {
            self.next |= PINNED;
        } else {
            self.next &= !PINNED;
        }
    }

    /// No one may join: it is closed, or every key was handed out (joiners
    /// then make a fresh tick). One comparison: with the pinned bit
    /// cleared, the closed bit alone is above every key.
    #[inline]
    fn takes_no_waiter(&self) -> bool {
        self.next & !PINNED >= FULL
    }

    /// Adds a waiter, in a list that is not full.
    #[inline]
    fn insert(&mut self, waker: Waker) -> u32 {
        let key = self.next & FULL;
        debug_assert!(key < FULL, "a full list takes no waiter");
        match split(key) {
            None => self.first = Some(waker),
            // Its chunk is there, but for the first key of each chunk.
            Some((c, i)) => match self.chunks.get_mut(c) {
                Some(Some(chunk)) => {
                    chunk.slots[i] = Some(waker);
                    chunk.live += 1;
                }
                _ => self.insert_in_new_chunk(c, i, waker),
            },
        }
        // Below `FULL`: no carry into the flags.
        self.next += 1;
        self.live += 1;
        key
    }

    /// Puts `waker` in slot `i` of chunk `c`, which is not there yet.
    #[inline(never)]
    fn insert_in_new_chunk(&mut self, c: usize, i: usize, waker: Waker) {
        if c >= self.chunks.len() {
            // The chunk before, should all of its waiters have left, is
            // done with: it goes now (it holds no waker).
            if let Some(last) = self.chunks.last_mut()
                && last.as_ref().is_some_and(|chunk| chunk.live == 0)
            {
                *last = None;
            }
            let chunks = self.chunks.vec();
            if chunks.capacity() == 0 {
                // Room for the one chunk of a tick with 2 or 3 waiters (the
                // most common size after 1 where timeouts spread over
                // ticks): it then grows as a `Vec` does, to 4 chunks, 8 and
                // so on. Room for 8 at once took 192 bytes for a second
                // waiter.
                chunks.reserve_exact(1);
            }
            chunks.resize_with(c + 1, || None);
        }
        // (Made here should it be missing: a chunk is freed only once every
        // key in it was handed out.)
        let chunk = self.chunks[c].get_or_insert_with(|| Chunk::new(chunk_len(c)));
        chunk.slots[i] = Some(waker);
        chunk.live += 1;
    }

    /// The key of the earliest waiter still there.
    fn first(&self) -> Option<u32> {
        if self.first.is_some() {
            return Some(0);
        }
        self.chunks.iter().enumerate().find_map(|(c, chunk)| {
            let i = chunk.as_ref()?.slots.iter().position(Option::is_some)?;
            u32::try_from(key_of(c, i)).ok()
        })
    }

    #[inline]
    fn slot(&mut self, key: u32) -> Option<&mut Waker> {
        match split(key) {
            None => self.first.as_mut(),
            Some((c, i)) => self.chunks.get_mut(c)?.as_mut()?.slots[i].as_mut(),
        }
    }

    /// Takes the earliest waiter still there out, as [`Waiters::remove`].
    fn take_first(&mut self) -> (Option<Waker>, Option<Chunk>) {
        match self.first() {
            Some(key) => self.remove(key),
            None => (None, None),
        }
    }

    /// Takes the waiter `key` out; with a chunk that is done with, to free.
    #[inline]
    fn remove(&mut self, key: u32) -> (Option<Waker>, Option<Chunk>) {
        let Some((c, i)) = split(key) else {
            let waker = self.first.take();
            self.live -= u32::from(waker.is_some());
            return (waker, None);
        };
        let tail = self.chunks.len().saturating_sub(1);
        let Some(Some(chunk)) = self.chunks.get_mut(c) else {
            return (None, None);
        };
        let Some(waker) = chunk.slots[i].take() else {
            return (None, None);
        };
        chunk.live -= 1;
        self.live -= 1;
        let done = chunk.live == 0 && c < tail;
        (Some(waker), if done { self.chunks[c].take() } else { None })
    }

    /// Empty and still open: keys start again at 0. A list with room for
    /// one chunk only (a tick of two or three waiters, as when timeouts start
    /// one after another) keeps it, should it be there (all of its slots
    /// free), for the next waiters but the first. A longer one is handed back
    /// whole, to free: so an emptied tick that its thread keeps holds no
    /// more than a tick of three waiters, whatever it held before, and no
    /// part of the list is copied while the lock is held.
    fn recycle(&mut self) -> Chunks {
        // Keys from 0; closed and pinned as it was.
        self.next &= !FULL;
        if self.chunks.capacity() > 1 {
            return std::mem::take(&mut self.chunks);
        }
        if let Some(None) = self.chunks.first() {
            self.chunks.clear();
        }
        // No allocation: an empty list of chunks is free to make and to drop.
        Chunks::default()
    }

    fn drain(self) -> Vec<Waker> {
        let mut all = Vec::with_capacity(self.live as usize);
        all.extend(self.first);
        for chunk in self.chunks.into_vec().into_iter().flatten() {
            all.extend(chunk.slots.into_iter().flatten());
        }
        all
    }
}

/// What [`Waitlist::leave`] hands back.
pub(super) struct Left {
    /// The waiter's waker, to drop once no lock is held.
    pub(super) waker: Option<Waker>,
    /// It was the last waiter: the list is closed and the tick can go.
    pub(super) emptied: bool,
}

/// What [`Waitlist::fire`] hands back.
pub(super) struct Fired {
    /// The earliest waiter's waker, to wake now.
    pub(super) first: Option<Waker>,
    /// Other waiters are left for [`Waitlist::relay`].
    pub(super) more: bool,
}

/// A tick's waiters, and `T`, its owner's own small fields.
pub(super) struct Waitlist<T = ()> {
    state: AtomicU8,
    /// The tick fired and waiters other than the first are still to be
    /// woken ([`Waitlist::relay`]).
    relaying: AtomicBool,
    /// The tick finished and every waiter was taken out: a waiter that
    /// leaves now has nothing to take out, and needs no lock to know it.
    /// Set under the lock, as the waiters go.
    drained: AtomicBool,
    /// How long before the tick's boundary every waiter's deadline has
    /// passed, in whole units rounded down (see [`MAX_SLACK`]), at most
    /// [`MAX_SLACK`]:
    /// the least a joiner gave. Lowered as waiters join, under the lock;
    /// [`Waitlist::close_within`] closes the list that long before the
    /// boundary at the earliest, under the lock too, so a waiter either
    /// joined before (and lowered it) or is turned away. Read without the
    /// lock only as a hint, which can be too early, never too late: it
    /// only goes down while the list is open.
    slack: AtomicU8,
    /// The owner's fields (a tick's lane and its count of fallbacks, a few
    /// bytes): here they take the room that the flags above leave before
    /// the lock, where in the tick itself they would take 8 bytes more.
    pub(super) extra: T,
    waiters: Lock<Waiters>,
}

#[cfg(opguard_loom)]
impl Waitlist {
    /// A list with one waiter, whose key is 0 and slack `slack` (for the
    /// loom models; the timer's ticks are made pinned).
    pub(super) fn with_first(waker: Waker, slack: u8) -> Self {
        Self::first_of(waker, slack, false, ())
    }
}

impl<T> Waitlist<T> {
    /// A list with one waiter, whose key is 0 and whose deadline is
    /// `slack` units before the tick's boundary (see [`Waitlist::join`]),
    /// pinned (see [`Waitlist::pin`]): a new tick, which its thread keeps.
    /// Pinned as it is made, it needs no lock for that.
    pub(super) fn pinned_with_first(waker: Waker, slack: u8, extra: T) -> Self {
        Self::first_of(waker, slack, true, extra)
    }

    fn first_of(waker: Waker, slack: u8, pinned: bool, extra: T) -> Self {
        Waitlist {
            state: AtomicU8::new(OPEN),
            relaying: AtomicBool::new(false),
            drained: AtomicBool::new(false),
            slack: AtomicU8::new(slack.min(MAX_SLACK)),
            extra,
            waiters: Lock::new({
                let mut w = Waiters::default();
                w.set_pinned(pinned);
                w.insert(waker);
                w
            }),
        }
    }

    /// An open list whose waiters all left, made new with `waker` as its
    /// first waiter (key 0), as [`Waitlist::pinned_with_first`] would make
    /// it, but in the memory it has: its chunk is kept. Nothing else holds
    /// the list (`&mut`): no lock is taken.
    pub(super) fn renew(&mut self, waker: Waker, slack: u8) {
        debug_assert_eq!(self.state(), OPEN);
        self.state = AtomicU8::new(OPEN);
        self.relaying = AtomicBool::new(false);
        self.drained = AtomicBool::new(false);
        self.slack = AtomicU8::new(slack.min(MAX_SLACK));
        let w = self.waiters.get_mut();
        debug_assert_eq!(w.live, 0);
        // Open and pinned; the keys start again below.
        w.next = PINNED;
        let spare = w.recycle();
        w.insert(waker);
        drop(spare);
    }

    /// [`OPEN`], [`FIRED`] or [`BROKEN`].
    #[inline]
    pub(super) fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    /// Adds a waiter whose deadline is `slack` units (rounded down) before
    /// the tick's boundary, or more; a closed list gives the waker back
    /// with its state (still [`OPEN`] when its last waiter left it, or
    /// when it closed early and is about to fire).
    #[inline]
    pub(super) fn join(&self, waker: Waker, slack: u8) -> Result<u32, (Waker, u8)> {
        let mut w = self.waiters.lock();
        // A list that handed out every key it has turns joiners away too:
        // they make a fresh tick.
        if w.takes_no_waiter() {
            drop(w);
            return Err((waker, self.state()));
        }
        // Under the lock, as `close_within` reads it.
        if slack < self.slack.load(Ordering::Relaxed) {
            self.slack.store(slack, Ordering::Relaxed);
        }
        Ok(w.insert(waker))
    }

    /// How long before the tick's boundary every waiter's deadline has
    /// passed, in units: a hint, read without the lock (see the field).
    #[inline]
    pub(super) fn slack(&self) -> u8 {
        self.slack.load(Ordering::Relaxed)
    }

    /// Closes the list, `before` units ahead of its tick's boundary, if every
    /// waiter's deadline has passed by then (its slack is at least
    /// `before`): from then on no one may join, and the tick is fired next
    /// ([`Waitlist::fire`] or [`Waitlist::finish`]), its state still
    /// [`OPEN`] until then. Returns whether it closed.
    pub(super) fn close_within(&self, before: u64) -> bool {
        if before > u64::from(MAX_SLACK) {
            return false;
        }
        let mut w = self.waiters.lock();
        if before > u64::from(self.slack.load(Ordering::Relaxed)) {
            return false;
        }
        w.close();
        true
    }

    /// Takes a waiter out. A waiter whose tick finished is already out.
    #[inline]
    pub(super) fn leave(&self, key: u32) -> Left {
        // Every waiter was taken out (and woken): the usual end of a timeout
        // that fired, with nothing left to do here.
        if self.drained.load(Ordering::Acquire) {
            return Left {
                waker: None,
                emptied: false,
            };
        }
        let mut w = self.waiters.lock();
        let (waker, chunk) = w.remove(key);
        if waker.is_none() || w.live != 0 {
            drop(w);
            drop(chunk);
            return Left {
                waker,
                emptied: false,
            };
        }
        if w.is_pinned() {
            // The last one, of a tick kept for its thread's next timeouts:
            // it stays open, and only spare memory goes.
            let rest = w.recycle();
            drop(w);
            drop((chunk, rest));
            return Left {
                waker,
                emptied: false,
            };
        }
        // The last one: no one may join any more, and the memory goes back
        // now rather than at the tick's time.
        let memory = std::mem::replace(&mut *w, Waiters::closed());
        drop(w);
        drop((chunk, memory));
        Left {
            waker,
            emptied: true,
        }
    }

    /// Keeps the list open when its last waiter leaves, for a thread that
    /// will start more timeouts in this tick: a tick made and retired for
    /// each of a run of timeouts would start and drop a timer each time.
    pub(super) fn pin(&self) {
        self.waiters.lock().set_pinned(true);
    }

    /// Undoes [`Waitlist::pin`]; `true` when that leaves the list empty, so
    /// that it closes and the tick can go.
    pub(super) fn unpin(&self) -> bool {
        let mut w = self.waiters.lock();
        w.set_pinned(false);
        if w.is_closed() || w.live != 0 {
            return false;
        }
        let memory = std::mem::replace(&mut *w, Waiters::closed());
        drop(w);
        drop(memory);
        true
    }

    /// Ready with the state once the tick finished; otherwise registers
    /// `new` for the waiter `key`, in place of its waker. `new` is a clone
    /// the caller made with no lock held (a clone is user code), and the
    /// one whose identity it keeps: see `Deadline::poll`. Gives back the
    /// replaced waker, or `new` itself when the tick finished, to drop
    /// outside the lock (through `old`).
    pub(super) fn poll(&self, key: u32, new: Waker, old: &mut Option<Waker>) -> Poll<u8> {
        if self.state() == OPEN {
            let mut w = self.waiters.lock();
            if let Some(current) = w.slot(key) {
                *old = Some(std::mem::replace(current, new));
                return Poll::Pending;
            }
            // Drained: the tick finished, and set its state first.
        }
        *old = Some(new);
        Poll::Ready(self.state())
    }

    /// Marks the tick `outcome` ([`FIRED`] or [`BROKEN`]) and hands back
    /// every waker to wake, once; `None` when it had finished already.
    pub(super) fn finish(&self, outcome: u8) -> Option<Vec<Waker>> {
        self.state
            .compare_exchange(OPEN, outcome, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        let all = self.take_all(&mut self.waiters.lock());
        Some(all.drain())
    }

    /// Marks the tick [`FIRED`] and hands back only its earliest waiter's
    /// waker; the others stay, for [`Waitlist::relay`] (the woken waiter
    /// relays to them from its own thread). No one may join any more, and
    /// waiters may still leave. `None` when it had finished already.
    pub(super) fn fire(&self) -> Option<Fired> {
        self.state
            .compare_exchange(OPEN, FIRED, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        let mut w = self.waiters.lock();
        w.close();
        let (first, chunk) = w.take_first();
        let more = w.live != 0;
        let memory = if more {
            self.relaying.store(true, Ordering::Release);
            None
        } else {
            Some(self.take_all(&mut w))
        };
        drop(w);
        drop((chunk, memory));
        Some(Fired { first, more })
    }

    /// Whether waiters of a fired tick are still to be relayed to.
    #[inline]
    pub(super) fn relaying(&self) -> bool {
        self.relaying.load(Ordering::Acquire)
    }

    /// For a fired tick whose waiters are still to be relayed to: takes the
    /// earliest of them out, to wake (its task relays to the rest too, as
    /// the first one's does), and whether any are left; `None` when there
    /// is nothing to relay (any more). Taking the last one ends the relay.
    pub(super) fn another(&self) -> Option<(Waker, bool)> {
        if !self.relaying() {
            return None;
        }
        let mut w = self.waiters.lock();
        // Relayed meanwhile: drained, and closed.
        let (Some(waker), chunk) = w.take_first() else {
            return None;
        };
        let more = w.live != 0;
        let memory = if more {
            None
        } else {
            self.relaying.store(false, Ordering::Release);
            Some(self.take_all(&mut w))
        };
        drop(w);
        drop((chunk, memory));
        Some((waker, more))
    }

    /// The wakers left after [`Waitlist::fire`], to wake, once: `None`
    /// when there is nothing to relay (any more).
    pub(super) fn relay(&self) -> Option<Vec<Waker>> {
        if !self.relaying() || !self.relaying.swap(false, Ordering::AcqRel) {
            return None;
        }
        let rest = self.take_all(&mut self.waiters.lock());
        Some(rest.drain())
    }

    /// Takes every waiter out of a finished tick's list, whose lock the
    /// caller holds, and closes it; from then on a leaving waiter takes no
    /// lock ([`Waitlist::leave`]).
    fn take_all(&self, w: &mut Guard<'_, Waiters>) -> Waiters {
        let all = std::mem::replace(&mut **w, Waiters::closed());
        self.drained.store(true, Ordering::Release);
        all
    }

    /// Waiters still registered, and chunks still allocated (for tests).
    #[cfg(test)]
    pub(super) fn live(&self) -> (u32, usize) {
        let w = self.waiters.lock();
        (w.live, w.chunks.iter().flatten().count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_has_its_own_slot_and_the_chunks_grow_to_32() {
        let mut seen = std::collections::HashSet::new();
        let keys = if cfg!(miri) { 300 } else { 10_000 };
        for key in 1..keys {
            let (c, i) = split(key).unwrap();
            assert!(i < chunk_len(c), "key {key}: slot {i} of {}", chunk_len(c));
            assert_eq!(key_of(c, i), key as usize, "key {key}");
            assert!(seen.insert((c, i)), "key {key} shares a slot");
        }
        assert_eq!(split(0), None, "the first waiter is in the list itself");
        let lens: Vec<usize> = (0..7).map(chunk_len).collect();
        assert_eq!(lens, [2, 4, 8, 16, 32, 32, 32]);
    }

    fn noop() -> Waker {
        Waker::noop().clone()
    }

    #[test]
    fn one_waiter_takes_no_chunk_a_second_takes_one_of_2_and_room_for_it_alone() {
        let mut w = Waiters::default();
        w.insert(noop());
        assert!(w.chunks.is_empty());
        assert_eq!(w.chunks.capacity(), 0);
        // A second waiter: one chunk of 2, and room for its descriptor only.
        w.insert(noop());
        assert_eq!(w.chunks.capacity(), 1);
        for _ in 0..5 {
            w.insert(noop());
        }
        // Keys 1 and 2 in a chunk of 2, 3 to 6 in one of 4.
        let lens: Vec<usize> = w.chunks.iter().flatten().map(|c| c.slots.len()).collect();
        assert_eq!(lens, [2, 4]);
        assert_eq!(w.live, 7);
    }

    #[test]
    fn chunks_go_once_every_waiter_in_them_left_and_keys_start_again_when_all_left() {
        let mut w = Waiters::default();
        let keys: Vec<u32> = (0..100).map(|_| w.insert(noop())).collect();
        assert_eq!(w.chunks.iter().flatten().count(), 7);
        for &key in &keys[1..] {
            let (waker, _freed) = w.remove(key);
            assert!(waker.is_some(), "key {key}");
        }
        // Only the last chunk, which keys would be handed out from, stays.
        assert_eq!(w.chunks.iter().flatten().count(), 1);
        assert_eq!(w.first(), Some(0));
        let (waker, _) = w.remove(0);
        assert!(waker.is_some() && w.live == 0 && w.first().is_none());
        drop(w.recycle());
        assert!(w.chunks.is_empty(), "the first chunk had gone: none kept");
        // Keys start again at 0, and every waiter is found.
        let again: Vec<u32> = (0..5).map(|_| w.insert(noop())).collect();
        assert_eq!(again, [0, 1, 2, 3, 4]);
        assert_eq!(w.drain().len(), 5);
    }

    #[test]
    fn an_emptied_list_keeps_a_small_chunk_but_gives_back_a_long_list_of_chunks() {
        // Two or three waiters at a time: the chunk of 2 and its one-entry
        // list stay for the next ones.
        let mut w = Waiters::default();
        let keys: Vec<u32> = (0..3).map(|_| w.insert(noop())).collect();
        for &key in &keys {
            drop(w.remove(key));
        }
        assert!(w.recycle().is_empty());
        assert_eq!(w.chunks.iter().flatten().count(), 1, "the chunk of 2 stays");
        assert_eq!(w.chunks.capacity(), 1);
        // A burst of thousands: the list of chunks (24 bytes per 32 waiters)
        // goes with them, not kept for the tick's next use.
        let keys: Vec<u32> = (0..10_000).map(|_| w.insert(noop())).collect();
        for &key in &keys {
            drop(w.remove(key));
        }
        let spare = w.recycle();
        assert!(spare.len() > 300, "handed back whole: {}", spare.len());
        assert_eq!(w.chunks.capacity(), 0, "nothing of the burst is kept");
        assert_eq!(w.insert(noop()), 0, "keys start again at 0");
    }

    #[test]
    fn waiters_of_a_fired_and_relayed_list_leave_without_its_lock() {
        // Every waker is out of the list once it fired and relayed: the
        // waiters' leaves (each fired timeout's drop) have nothing to take
        // out, and must not wait for its lock, held here all along.
        let list = std::sync::Arc::new(Waitlist::first_of(noop(), MAX_SLACK, false, ()));
        let keys: Vec<u32> = (0..3)
            .map(|_| list.join(noop(), MAX_SLACK).unwrap())
            .collect();
        assert!(list.fire().unwrap().more);
        assert_eq!(list.relay().map(|rest| rest.len()), Some(3));
        let held = list.waiters.lock();
        let (tx, rx) = std::sync::mpsc::channel();
        let leaving = list.clone();
        std::thread::spawn(move || {
            for key in std::iter::once(0).chain(keys) {
                let left = leaving.leave(key);
                tx.send(left.waker.is_none() && !left.emptied).unwrap();
            }
        });
        for key in 0..4 {
            let left = rx
                .recv_timeout(std::time::Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("waiter {key}'s leave waited for the lock"));
            assert!(left, "waiter {key} left nothing, emptied nothing");
        }
        drop(held);
    }

    #[test]
    fn a_list_that_handed_out_every_key_turns_joiners_away_and_keeps_its_flags() {
        // The keys' bits, the closed bit and the pinned bit, read together:
        // each flag is seen whatever the others, and the last key handed out
        // is `FULL - 1` (no insert here: a key that high would make a list
        // of millions of chunks).
        for pinned in [0, PINNED] {
            let w = |next: u32| Waiters {
                next: next | pinned,
                ..Waiters::default()
            };
            assert!(!w(0).takes_no_waiter() && !w(FULL - 1).takes_no_waiter());
            assert!(w(FULL).takes_no_waiter(), "every key handed out");
            assert!(w(CLOSED).takes_no_waiter() && w(CLOSED | 5).takes_no_waiter());
            assert_eq!(w(FULL).is_pinned(), pinned != 0);
            assert!(!w(FULL).is_closed() && w(CLOSED).is_closed());
        }
        // A full list turns joiners away as still open: they make a fresh
        // tick, and it keeps its waiter and its flags.
        let list = Waitlist::first_of(noop(), MAX_SLACK, true, ());
        list.waiters.lock().next = FULL | PINNED;
        let Err((_, state)) = list.join(noop(), MAX_SLACK) else {
            panic!("a full list took a waiter");
        };
        assert_eq!(state, OPEN, "turned away, not closed");
        let w = list.waiters.lock();
        assert!(w.is_pinned() && !w.is_closed() && w.live == 1);
    }

    #[test]
    fn the_last_waiter_leaving_a_fired_pinned_list_leaves_it_closed() {
        // Fired with a waiter left to relay to, in a tick its thread keeps:
        // that waiter's leave empties it, and it must stay closed (a joiner
        // would never be woken).
        let list = Waitlist::first_of(noop(), MAX_SLACK, true, ());
        let key = list.join(noop(), MAX_SLACK).unwrap();
        assert!(list.fire().unwrap().more);
        let left = list.leave(key);
        assert!(left.waker.is_some() && !left.emptied);
        assert!(
            list.join(noop(), MAX_SLACK).is_err(),
            "a fired list took a waiter"
        );
        assert!(list.waiters.lock().is_pinned());
    }

    #[test]
    fn a_chunk_emptied_before_the_next_is_needed_goes_then() {
        let mut w = Waiters::default();
        let first = w.insert(noop());
        // Keys 1 and 2 fill the chunk of 2 and leave; it is the last chunk,
        // so it stays until key 3 needs the next.
        for key in [w.insert(noop()), w.insert(noop())] {
            drop(w.remove(key));
        }
        assert_eq!(w.chunks.iter().flatten().count(), 1);
        w.insert(noop());
        let lens: Vec<usize> = w.chunks.iter().flatten().map(|c| c.slots.len()).collect();
        assert_eq!(lens, [4], "the emptied chunk of 2 stayed");
        assert_eq!(w.first(), Some(first));
    }
}

/// The list under loom, which runs every interleaving of the threads:
///
///     RUSTFLAGS="--cfg opguard_loom" cargo test --release --lib loom
#[cfg(opguard_loom)]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    fn counter() -> (std::sync::Arc<Count>, Waker) {
        let c = std::sync::Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    /// Runs `f` on the list from another thread.
    fn on_a_thread<T: Send + 'static>(
        list: &Arc<Waitlist>,
        f: fn(&Waitlist) -> T,
    ) -> thread::JoinHandle<T> {
        let list = list.clone();
        thread::spawn(move || f(&list))
    }

    /// The tick fires (its first waiter is woken) and, at once, the backup
    /// relays to the rest.
    fn fire(list: &Waitlist) {
        if let Some(fired) = list.fire() {
            fired.first.into_iter().for_each(Waker::wake);
        }
        relay(list);
    }

    fn relay(list: &Waitlist) {
        if let Some(rest) = list.relay() {
            rest.into_iter().for_each(Waker::wake);
        }
    }

    /// Two waiters; futures-timer's fire (the first is woken, the rest
    /// relayed) races `other` on another thread, while the second waiter
    /// replaces its waker. The first is woken once; the second once, by its
    /// new waker if its poll was pending, or its poll saw the tick fired.
    /// Never neither, never twice, and nothing is left to relay.
    fn two_waiters_fire_racing(other: fn(&Waitlist)) -> Arc<Waitlist> {
        let (c0, w0) = counter();
        let list = Arc::new(Waitlist::with_first(w0, MAX_SLACK));
        let (c1, w1) = counter();
        let Ok(key) = list.join(w1, MAX_SLACK) else {
            panic!("an open list takes a waiter");
        };
        let timer = on_a_thread(&list, fire);
        let racing = on_a_thread(&list, other);
        let (c2, w2) = counter();
        let mut old = None;
        let ready = list.poll(key, w2.clone(), &mut old).is_ready();
        drop(old);
        timer.join().unwrap();
        racing.join().unwrap();
        assert_eq!(c0.0.load(SeqCst), 1, "the first waiter, once");
        let (a, b) = (c1.0.load(SeqCst), c2.0.load(SeqCst));
        assert!(a + b <= 1, "one wake at most");
        assert!(ready || b == 1, "pending, and its new waker not woken");
        assert!(!list.relaying());
        list
    }

    /// The backup waking one more waiter (taken out of the list) races the
    /// first waiter's relay: of three waiters, each is woken once, and
    /// nothing is left to relay.
    #[test]
    fn loom_another_waiter_woken_racing_the_relay_wakes_each_once() {
        loom::model(|| {
            let (c0, w0) = counter();
            let list = Arc::new(Waitlist::with_first(w0, MAX_SLACK));
            let (c1, w1) = counter();
            let (c2, w2) = counter();
            assert!(list.join(w1, MAX_SLACK).is_ok() && list.join(w2, MAX_SLACK).is_ok());
            let Some(fired) = list.fire() else {
                panic!("an open tick fires");
            };
            fired.first.into_iter().for_each(Waker::wake);
            let backup = on_a_thread(&list, |list| {
                if let Some((next, _)) = list.another() {
                    next.wake();
                }
            });
            let first = on_a_thread(&list, relay);
            backup.join().unwrap();
            first.join().unwrap();
            for c in [&c0, &c1, &c2] {
                assert_eq!(c.0.load(SeqCst), 1, "each waiter, once");
            }
            assert!(!list.relaying());
        });
    }

    /// The first waiter's relay racing the backup's.
    #[test]
    fn loom_a_relay_racing_the_backup_wakes_each_waiter_once() {
        loom::model(|| {
            two_waiters_fire_racing(relay);
        });
    }

    /// The tick fired by its own thread (which wakes everyone at once, as a
    /// thread that finds its tick due does) racing futures-timer's fire and
    /// relay.
    #[test]
    fn loom_the_threads_own_fire_racing_the_timers_wakes_each_waiter_once() {
        loom::model(|| {
            let list = two_waiters_fire_racing(|list| match list.finish(FIRED) {
                Some(all) => all.into_iter().for_each(Waker::wake),
                None => relay(list),
            });
            assert_eq!(list.state(), FIRED);
        });
    }

    /// A waiter that joins while the tick fires is either woken once, or
    /// sees the tick fired: never neither (a lost wake-up), never twice.
    #[test]
    fn loom_a_join_racing_the_fire_is_never_lost() {
        loom::model(|| {
            let (_, first) = counter();
            let list = Arc::new(Waitlist::with_first(first, MAX_SLACK));
            let (count, waker) = counter();
            let firing = on_a_thread(&list, fire);
            let joined = list
                .join(waker.clone(), MAX_SLACK)
                .map_err(|(_, state)| state);
            let mut old = None;
            let ready = match joined {
                Ok(key) => list.poll(key, waker.clone(), &mut old).is_ready(),
                Err(state) => state == FIRED,
            };
            firing.join().unwrap();
            let woken = count.0.load(SeqCst);
            match joined {
                // Joined: the fire drained it and woke it exactly once.
                Ok(key) => {
                    assert_eq!(woken, 1);
                    assert!(list.poll(key, waker.clone(), &mut old).is_ready());
                }
                // Closed by the fire: it saw the tick had come.
                Err(_) => assert!(ready && woken == 0),
            }
        });
    }

    /// A waiter that replaces its waker while the tick fires: exactly one of
    /// the two wakers is woken, once, or the poll sees the tick fired.
    #[test]
    fn loom_a_new_waker_racing_the_fire_is_never_lost() {
        loom::model(|| {
            let (c1, w1) = counter();
            let list = Arc::new(Waitlist::with_first(w1, MAX_SLACK));
            let (c2, w2) = counter();
            let firing = on_a_thread(&list, fire);
            let mut old = None;
            let ready = list.poll(0, w2.clone(), &mut old).is_ready();
            drop(old);
            firing.join().unwrap();
            let (a, b) = (c1.0.load(SeqCst), c2.0.load(SeqCst));
            assert!(a + b <= 1, "one wake at most");
            assert!(ready || a + b == 1, "not ready and not woken");
            if !ready {
                assert_eq!(b, 1, "the new waker is the one woken");
            }
        });
    }

    /// The last waiter leaving while the tick fires: the list is closed
    /// exactly once (by the leave, or drained by the fire), and a late joiner
    /// is turned away.
    #[test]
    fn loom_the_last_leave_racing_the_fire_closes_once() {
        loom::model(|| {
            let (count, w) = counter();
            let list = Arc::new(Waitlist::with_first(w, MAX_SLACK));
            let firing = on_a_thread(&list, fire);
            let left = list.leave(0);
            firing.join().unwrap();
            let woken = count.0.load(SeqCst);
            // Left before the fire (its waker comes back, unwoken), or the
            // fire took it first (woken once, nothing to leave).
            assert_eq!(left.waker.is_some(), woken == 0);
            assert_eq!(left.emptied, woken == 0);
            let (_, late) = counter();
            assert!(list.join(late, MAX_SLACK).is_err());
        });
    }

    /// A pinned list's last waiter leaving while its thread unpins it: the
    /// list closes exactly once (the tick is retired once), by whichever
    /// comes second.
    #[test]
    fn loom_the_last_leave_racing_an_unpin_closes_once() {
        loom::model(|| {
            let (_, w) = counter();
            let list = Arc::new(Waitlist::with_first(w, MAX_SLACK));
            list.pin();
            let unpinning = on_a_thread(&list, Waitlist::unpin);
            let left = list.leave(0);
            let unpinned = unpinning.join().unwrap();
            assert!(left.emptied != unpinned, "closed twice, or never");
            let (_, late) = counter();
            assert!(list.join(late, MAX_SLACK).is_err());
        });
    }

    /// A list whose one waiter's deadline is 200 µs before its tick's end
    /// is closed early, 150 µs before it (and fired, should it close), on
    /// another thread, while a waiter whose deadline is `slack` µs before
    /// the end joins: the list, whether the joiner got in, whether the list
    /// closed, and how many times the joiner was woken.
    fn join_racing_an_early_close(slack: u8) -> (Arc<Waitlist>, bool, bool, usize) {
        let (_, first) = counter();
        let list = Arc::new(Waitlist::with_first(first, 200));
        let closing = on_a_thread(&list, |list| {
            let closed = list.close_within(150);
            if closed {
                fire(list);
            }
            closed
        });
        let (count, waker) = counter();
        let joined = list.join(waker, slack).is_ok();
        let closed = closing.join().unwrap();
        let woken = count.0.load(SeqCst);
        (list, joined, closed, woken)
    }

    /// A waiter whose deadline is still to come joins while the list is
    /// closed early, once the deadlines of those in it have passed: either
    /// it joined first, and the list stays open, or the list closed first,
    /// and it is turned away (to make a tick of its own). It is never in a
    /// list that fires before its deadline.
    #[test]
    fn loom_a_join_racing_an_early_close_is_never_fired_before_its_deadline() {
        loom::model(|| {
            // Its deadline is 100 µs before the end: not passed at the close.
            let (list, joined, closed, woken) = join_racing_an_early_close(100);
            assert!(joined != closed, "joined: {joined}, closed: {closed}");
            assert_eq!(woken, 0, "woken before its deadline");
            if joined {
                assert_eq!((list.slack(), list.state()), (100, OPEN));
            }
        });
    }

    /// A waiter whose deadline has passed joins while the list is closed
    /// early: it is woken once by the fire, or turned away; never left
    /// asleep in a fired list.
    #[test]
    fn loom_a_due_join_racing_an_early_close_is_woken_or_turned_away() {
        loom::model(|| {
            let (list, joined, closed, woken) = join_racing_an_early_close(180);
            assert!(closed, "every deadline has passed");
            assert_eq!(woken, usize::from(joined));
            assert_eq!(list.state(), FIRED);
        });
    }

    /// Two threads join and leave while a third fires: each is woken at most
    /// once, the live count never underflows, and the list ends closed.
    #[test]
    fn loom_joins_and_leaves_racing_the_fire() {
        loom::model(|| {
            let (_, w0) = counter();
            let list = Arc::new(Waitlist::with_first(w0, MAX_SLACK));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let list = list.clone();
                    thread::spawn(move || {
                        let (count, w) = counter();
                        if let Ok(key) = list.join(w, MAX_SLACK) {
                            list.leave(key);
                        }
                        count.0.load(SeqCst)
                    })
                })
                .collect();
            fire(&list);
            for t in threads {
                assert!(t.join().unwrap() <= 1);
            }
            assert_eq!(list.state(), FIRED);
        });
    }
}
