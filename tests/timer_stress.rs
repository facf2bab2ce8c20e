//! The shared timer under a hostile mix, for a few seconds: more threads
//! than it has lanes (so threads share them), timeouts of lengths from none
//! to a second, re-polled with new wakers (some whose clones take fresh
//! data), moved to other threads, dropped early, started by threads that
//! exit at once, beside two threads that only compute. Whatever the mix,
//! each timeout that is kept ends with its timeout error, never before its
//! deadline; its current waker is woken (the threads poll a timeout only
//! when its waker was, or with a new one), and its wakers, old and new, are
//! woken no more than once in all.
//!
//! The computing threads make the others be preempted between any two steps
//! of the timer, as on a busy machine: a race between a lane's alarm
//! ringing and another thread setting it (fixed since) went unseen here on
//! an idle machine in a dozen runs, and failed about one run in four with
//! them.

use std::future::{Future, pending};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use opguard::{TimeoutError, timeout_async};

/// More than the timer's 64 lanes.
const THREADS: usize = 80;
/// How long the threads start timeouts for.
const TRAFFIC: Duration = Duration::from_secs(2);
/// How long past its deadline a kept timeout may take to be woken before
/// it counts as lost: far past any scheduling delay of 80 threads on a busy
/// machine.
const LOST_AFTER: Duration = Duration::from_secs(20);

/// One waker's state: whether it was woken, and the thread to unpark.
struct Flag {
    woken: AtomicBool,
    thread: Thread,
    /// Wake-ups of every waker of its timeout.
    wakes: Arc<AtomicUsize>,
}

impl Flag {
    fn new(wakes: &Arc<AtomicUsize>) -> Arc<Flag> {
        Arc::new(Flag {
            woken: AtomicBool::new(false),
            thread: std::thread::current(),
            wakes: wakes.clone(),
        })
    }
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, SeqCst);
        self.woken.store(true, SeqCst);
        self.thread.unpark();
    }
}

/// A waker whose data is a box of its own holding the flag, and whose
/// clone makes a new box: a clone does not share its original's data.
mod boxed {
    use super::{Arc, Flag, RawWaker, RawWakerVTable, Wake, Waker};

    fn flag<'a>(data: *const ()) -> &'a Arc<Flag> {
        // SAFETY: the data of these wakers is a live `Box<Arc<Flag>>`,
        // freed only by `wake` or `drop`, which consume the waker.
        unsafe { &*data.cast::<Arc<Flag>>() }
    }

    fn into_data(flag: Arc<Flag>) -> *const () {
        Box::into_raw(Box::new(flag)).cast_const().cast()
    }

    fn take(data: *const ()) -> Arc<Flag> {
        // SAFETY: as in `flag`; the waker is consumed, so this is the last
        // use of its box.
        *unsafe { Box::from_raw(data.cast::<Arc<Flag>>().cast_mut()) }
    }

    const VTABLE: RawWakerVTable = RawWakerVTable::new(
        |data| RawWaker::new(into_data(flag(data).clone()), &VTABLE),
        |data| take(data).wake(),
        |data| flag(data).wake_by_ref(),
        |data| drop(take(data)),
    );

    pub fn new(flag: &Arc<Flag>) -> Waker {
        // SAFETY: the vtable's functions uphold `RawWaker`'s contract for
        // this data (see `flag`), and `Flag` is `Send + Sync`.
        unsafe { Waker::from_raw(RawWaker::new(into_data(flag.clone()), &VTABLE)) }
    }
}

/// A small xorshift: the mix is the same from run to run, but for timing.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

type Boxed = Pin<Box<dyn Future<Output = Result<(), TimeoutError>> + Send>>;

/// What happens to a kept timeout, at a time drawn within its length.
#[derive(Clone, Copy)]
enum Act {
    /// Nothing: it is polled when woken.
    Wait,
    /// Dropped, before or after its deadline.
    Drop,
    /// Its task moves on to a new waker (plain, or boxed).
    NewWaker { boxed: bool },
    /// Sent to another thread, which polls it with a waker of its own.
    Send,
}

/// A pending timeout, with its current waker and its deadline as seen from
/// before it started (its own is no earlier).
struct Kept {
    timeout: Boxed,
    flag: Arc<Flag>,
    waker: Waker,
    due: Instant,
    wakes: Arc<AtomicUsize>,
    act: Act,
    act_at: Instant,
    /// What happened to it, for the message should it never be woken.
    length: Duration,
    polls: u32,
    new_wakers: u32,
    last_poll: Instant,
}

impl Kept {
    /// Draws what happens to it next, and when: within `within` from now;
    /// with nothing left of that, nothing (it is polled when woken).
    fn draw(&mut self, within: Duration, rng: &mut Rng) {
        if within.is_zero() {
            self.act = Act::Wait;
            return;
        }
        self.act = match rng.below(10) {
            0..=3 => Act::Wait,
            4 | 5 => Act::Drop,
            6..=8 => Act::NewWaker {
                boxed: rng.below(2) == 0,
            },
            _ => Act::Send,
        };
        let nanos = u64::try_from(within.as_nanos()).unwrap_or(u64::MAX);
        self.act_at = Instant::now() + Duration::from_nanos(rng.below(nanos.max(1)));
    }

    /// Polls it with a new waker of this thread's (plain or boxed); `None`
    /// once it has ended. The old waker goes first, so that the new one may
    /// get its data: with a boxed one, it then differs from the old one
    /// only in the flag it sets.
    fn poll_with_new_waker(mut self, boxed: bool, tally: &Tally) -> Option<Kept> {
        let old = std::mem::replace(&mut self.waker, Waker::noop().clone());
        let old_data = (old.data(), old.vtable());
        drop(old);
        self.flag = Flag::new(&self.wakes);
        self.new_wakers += 1;
        self.waker = if boxed {
            boxed::new(&self.flag)
        } else {
            Waker::from(self.flag.clone())
        };
        if (self.waker.data(), self.waker.vtable()) == old_data {
            tally.old_data.fetch_add(1, SeqCst);
        }
        self.poll(tally)
    }

    /// Polls it with its current waker; `None` once it has ended.
    fn poll(mut self, tally: &Tally) -> Option<Kept> {
        self.polls += 1;
        self.last_poll = Instant::now();
        let out = self
            .timeout
            .as_mut()
            .poll(&mut Context::from_waker(&self.waker));
        let Poll::Ready(out) = out else {
            return Some(self);
        };
        let at = Instant::now();
        assert!(
            at >= self.due,
            "ended {:?} before its deadline",
            self.due - at
        );
        assert!(out.is_err_and(|e| e.is_elapsed()), "not its timeout error");
        tally.ended.lock().unwrap().push(self.wakes);
        None
    }
}

/// What the threads saw.
#[derive(Default)]
struct Tally {
    /// The wake-up counts of the timeouts that ended.
    ended: Mutex<Vec<Arc<AtomicUsize>>>,
    dropped: AtomicUsize,
    /// Polls with a new waker that has the data and vtable of the waker
    /// before it, dropped just before.
    old_data: AtomicUsize,
    sent: AtomicUsize,
}

/// Starts a timeout of `after`, polled once with a plain waker of this
/// thread; `None` if it ended at once.
fn start(after: Duration, rng: &mut Rng, tally: &Tally) -> Option<Kept> {
    let due = Instant::now() + after;
    let wakes = Arc::new(AtomicUsize::new(0));
    let flag = Flag::new(&wakes);
    let mut kept = Kept {
        timeout: Box::pin(timeout_async!(after, pending::<()>())),
        waker: Waker::from(flag.clone()),
        flag,
        due,
        wakes,
        act: Act::Wait,
        act_at: due,
        length: after,
        polls: 0,
        new_wakers: 0,
        last_poll: Instant::now(),
    };
    kept.draw(after, rng);
    kept.poll(tally)
}

/// A timeout's length: none or a few µs, a few ms (one fine tick or a
/// few), tens of ms, or a second (ticks of 1 ms).
fn length(rng: &mut Rng) -> Duration {
    Duration::from_micros(match rng.below(10) {
        0 => rng.below(100),
        1..=6 => 200 + rng.below(3_000),
        7 | 8 => 5_000 + rng.below(20_000),
        _ => 1_000_000 + rng.below(100_000),
    })
}

/// The threads' inboxes, by thread.
type Outboxes = Arc<Vec<Mutex<Sender<Kept>>>>;

/// One thread's share: starts timeouts until `end`, then sees its own and
/// those sent to it to their end.
fn run(n: usize, end: Instant, inbox: Receiver<Kept>, outboxes: Outboxes, tally: &Tally) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((n as u64 + 1) * 0x0123_4567));
    let mut kept: Vec<Kept> = Vec::new();
    loop {
        let traffic = Instant::now() < end;
        if traffic && kept.len() < 32 {
            for _ in 0..rng.below(6) {
                let after = length(&mut rng);
                kept.extend(start(after, &mut rng, tally));
            }
        }
        let mut next = Vec::with_capacity(kept.len());
        for mut k in kept.drain(..) {
            let now = Instant::now();
            let act = if now >= k.act_at { k.act } else { Act::Wait };
            if now >= k.act_at {
                // What comes after this: one more thing, before the deadline.
                k.draw(k.due.saturating_duration_since(now), &mut rng);
            }
            let ended_or_kept = match act {
                Act::Drop => {
                    tally.dropped.fetch_add(1, SeqCst);
                    None
                }
                Act::NewWaker { boxed } => k.poll_with_new_waker(boxed, tally),
                // Kept here should that thread be done.
                Act::Send if traffic => {
                    let to = rng.below(THREADS as u64) as usize;
                    let sent = outboxes[to].lock().unwrap().send(k);
                    tally.sent.fetch_add(usize::from(sent.is_ok()), SeqCst);
                    sent.err().map(|back| back.0)
                }
                _ if k.flag.woken.swap(false, SeqCst) => k.poll(tally),
                _ => {
                    let past = k.due.elapsed();
                    assert!(
                        past < LOST_AFTER,
                        "not woken {past:?} past its deadline: a timeout of {:?}, polled {} \
                         times (the last {:?} ago), with {} new wakers, woken {} times",
                        k.length,
                        k.polls,
                        k.last_poll.elapsed(),
                        k.new_wakers,
                        k.wakes.load(SeqCst),
                    );
                    Some(k)
                }
            };
            next.extend(ended_or_kept);
        }
        kept = next;
        while let Ok(k) = inbox.try_recv() {
            kept.extend(k.poll_with_new_waker(rng.below(2) == 0, tally));
        }
        // A thread that starts a few timeouts and exits at once, handing
        // them here.
        if traffic && rng.below(100) == 0 {
            let back = outboxes[n].lock().unwrap().clone();
            let seed = rng.below(u64::MAX) | 1;
            std::thread::spawn(move || {
                let (mut rng, tally) = (Rng(seed), Tally::default());
                for _ in 0..3 {
                    let after = length(&mut rng);
                    if let Some(k) = start(after, &mut rng, &tally) {
                        back.send(k).unwrap();
                    }
                }
            })
            .join()
            .unwrap();
        }
        // Done, once no thread sends any more: one that still does after
        // this finds its send refused, and keeps the timeout.
        if !traffic && kept.is_empty() && Instant::now() > end + Duration::from_millis(200) {
            break;
        }
        std::thread::park_timeout(Duration::from_micros(500));
    }
}

#[test]
fn under_a_hostile_mix_every_kept_timeout_ends_in_time_woken_once() {
    let tally = Arc::new(Tally::default());
    let (outboxes, inboxes): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| channel()).unzip();
    let outboxes: Outboxes = Arc::new(outboxes.into_iter().map(Mutex::new).collect());
    let end = Instant::now() + TRAFFIC;
    // Two threads that only compute while the traffic lasts, as on a busy
    // machine: a thread is then preempted anywhere, also between two steps
    // of the timer that a quiet machine runs back to back.
    let busy: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                let mut x = 0_u64;
                while Instant::now() < end {
                    for _ in 0..10_000 {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                    }
                }
            })
        })
        .collect();
    let threads: Vec<_> = inboxes
        .into_iter()
        .enumerate()
        .map(|(n, inbox)| {
            let (outboxes, tally) = (outboxes.clone(), tally.clone());
            std::thread::spawn(move || run(n, end, inbox, outboxes, &tally))
        })
        .collect();
    for thread in busy.into_iter().chain(threads) {
        thread.join().unwrap();
    }
    // A wake-up in flight as its timeout ended has had time to land.
    std::thread::sleep(Duration::from_millis(100));
    let ended = tally.ended.lock().unwrap();
    assert!(ended.len() > 1_000, "only {} timeouts ended", ended.len());
    eprintln!(
        "{} timeouts ended, {} dropped, {} sent to another thread, {} polled with a waker with its old one's data",
        ended.len(),
        tally.dropped.load(SeqCst),
        tally.sent.load(SeqCst),
        tally.old_data.load(SeqCst),
    );
    // The mix happened.
    assert!(tally.dropped.load(SeqCst) > 100);
    assert!(tally.sent.load(SeqCst) > 100);
    // (glibc's allocator hands a freed block of a size straight back to the
    // next allocation of that size; others may not.)
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        assert!(tally.old_data.load(SeqCst) > 100);
    }
    let twice = ended.iter().filter(|w| w.load(SeqCst) > 1).count();
    assert_eq!(twice, 0, "timeouts whose wakers were woken more than once");
}
