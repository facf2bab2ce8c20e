//! The timer's own cases. Hostile wakers (ones that start or drop timeouts
//! when cloned or dropped, panic payloads that panic on drop) are tested in
//! `tests/timer_faults.rs`, each in a child process of its own: a regression
//! there would stop the timer for every test in the process.

use super::*;
use std::sync::atomic::AtomicUsize;

thread_local! {
    /// How many times this thread set a lane's bell (see [`set_bell`]).
    pub(super) static BELLS_SET: Cell<u32> = const { Cell::new(0) };
}

impl Tick {
    /// Its time and its lane.
    fn key(&self) -> Key {
        (self.at, self.lane())
    }
}

/// How long after the epoch the tick `at` comes.
fn tick_offset(at: u64) -> Duration {
    Duration::new(at / FINE_PER_SEC, (at % FINE_PER_SEC) as u32 * FINE_NANOS)
}

/// When the tick `at` comes, if `Instant` can hold it.
fn tick_instant(at: u64) -> Option<Instant> {
    clock::epoch().checked_add(tick_offset(at))
}

fn bells_set() -> u32 {
    BELLS_SET.with(Cell::get)
}

/// Gives this thread a lane of its own, one no thread had before: a lane
/// that an earlier test used may still have a bell set, which could ring
/// in the middle of this test and set the bell itself, or ask for another
/// tick. Kept until the guard goes.
fn private_lane() -> PrivateLane {
    static NEXT: AtomicU32 = AtomicU32::new(LANES + 1);
    let index = NEXT.fetch_add(1, Ordering::Relaxed);
    assert!(
        (index as usize) < WHEEL_LANES,
        "out of private lanes: more tests use them than TEST_LANES"
    );
    LOCAL.with(|l| l.lane.set(index));
    PrivateLane
}

/// This thread's private lane ([`private_lane`]).
fn private() -> u32 {
    let index = LOCAL.with(|l| l.lane.get());
    assert!(
        index > LANES && (index as usize) < WHEEL_LANES,
        "no private lane"
    );
    index
}

/// A private lane, held; declared first in a test, so dropped last.
struct PrivateLane;

impl Drop for PrivateLane {
    fn drop(&mut self) {
        // The tick this thread keeps goes now, not when the thread exits.
        if let Some(kept) = LOCAL.with(|l| l.last.borrow_mut().take()) {
            forget(kept);
        }
        // Should the thread start timeouts after, it takes a lane as any.
        LOCAL.with(|l| l.lane.set(u32::MAX));
    }
}

/// Polls `d` until it ends, for at most `within`.
fn wait_within(d: &mut Deadline, waker: &Waker, within: Duration) -> Option<Outcome> {
    let mut cx = Context::from_waker(waker);
    let start = Instant::now();
    while start.elapsed() < within {
        if let Poll::Ready(out) = d.poll(&mut cx, || Duration::ZERO) {
            return Some(out);
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    None
}

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

fn waiting(after: Duration, waker: &Waker) -> Deadline {
    match start(Instant::now(), after, waker) {
        Start::Waiting(d) => d,
        Start::Due(_) => panic!("due at once"),
        Start::Never => panic!("never"),
    }
}

fn wait(d: &mut Deadline, waker: &Waker) -> Outcome {
    let mut cx = Context::from_waker(waker);
    loop {
        if let Poll::Ready(out) = d.poll(&mut cx, || Duration::ZERO) {
            return out;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

fn in_wheel(tick: &Arc<Tick>) -> bool {
    lock(&lane(tick.lane()).ticks)[usize::from(tick.class())]
        .get(&tick.at)
        .is_some_and(|t| Arc::ptr_eq(t, tick))
}

/// Whether `tick` is the one this thread keeps for its next timeouts.
fn is_kept(tick: &Arc<Tick>) -> bool {
    LOCAL.with(|l| {
        l.last
            .borrow()
            .as_ref()
            .is_some_and(|t| Arc::ptr_eq(t, tick))
    })
}

#[test]
fn never_fires_before_the_deadline() {
    let (_, waker) = counter();
    for ms in [1, 3, 10] {
        let after = Duration::from_millis(ms) + Duration::from_micros(300);
        let start = Instant::now();
        let mut d = waiting(after, &waker);
        assert_eq!(wait(&mut d, &waker), Outcome::Elapsed);
        assert!(
            start.elapsed() >= after,
            "{:?} < {after:?}",
            start.elapsed()
        );
    }
}

/// A timeout of `after` alone in a new tick of this thread's private lane,
/// its deadline at least `room` ns before the tick's boundary.
fn alone_in_a_tick(after: Duration, room: u64, waker: &Waker) -> Deadline {
    (0..200)
        .find_map(|_| {
            // The next fine tick: not the one this thread keeps, whose
            // waiters' deadlines (gone since) count still.
            std::thread::sleep(FINE);
            let d = waiting(after, waker);
            (d.tick.boundary() - d.due() >= room).then_some(d)
        })
        .expect("a deadline that much before its tick's boundary, in 200 tries")
}

#[test]
fn a_tick_fires_at_its_latest_waiters_deadline_to_the_microsecond_not_at_its_boundary() {
    let _lane = private_lane();
    let lane = lane(private());
    let (_, waker) = counter();
    // Long enough that the bell of a tick that left does not ring during
    // the test, even under Miri; short enough for a tick of 250 µs.
    let after = Duration::from_millis(900);
    let first = alone_in_a_tick(after, 100_000, &waker);
    let tick = Arc::clone(&first.tick);
    let fires = tick.fires_at();
    assert!(
        fires >= first.due() && fires < first.due() + 1_000,
        "alone in its tick, it fires at {fires}, its deadline {}",
        first.due()
    );
    // Set for it, or for an earlier tick of `alone_in_a_tick`'s tries, which
    // left (a later tick does not set the bell again).
    let asked = lane.alarm.asked();
    assert!(asked <= fires, "the bell rings at {asked}, after {fires}");
    // A deadline 50 µs later joins: the tick fires then, not before.
    let since = Duration::from_nanos(first.due() + 50_000) - after;
    let Start::Waiting(later) = start(clock::epoch() + since, after, &waker) else {
        panic!("not waiting");
    };
    assert!(Arc::ptr_eq(&later.tick, &tick), "another tick");
    let fires = tick.fires_at();
    assert!(
        fires >= later.due() && fires < later.due() + 1_000,
        "it fires at {fires}, its latest deadline {}",
        later.due()
    );
    assert!(fires < tick.boundary());
    // The lane's bell, set for the first deadline, finds it not due then;
    // a nanosecond before its time it still is not; at its time it is,
    // before its boundary.
    assert_eq!(take_due(lane, first.due() + 1_000).err(), Some(fires));
    assert_eq!(take_due(lane, fires - 1).err(), Some(fires));
    let due = take_due(lane, fires).expect("not due at its latest deadline");
    assert!(Arc::ptr_eq(&due, &tick) && !in_wheel(&tick));
    due.fire();
    assert!(first.has_fired() && later.has_fired());
}

/// A timeout of `after` alone in a new tick of this thread's private lane,
/// which this thread keeps, fired at its deadline, before its boundary;
/// with its tick.
fn fired_at_its_deadline(after: Duration, waker: &Waker) -> (Deadline, Arc<Tick>) {
    let first = alone_in_a_tick(after, 100_000, waker);
    let tick = Arc::clone(&first.tick);
    let fired = take_due(lane(private()), tick.fires_at()).expect("not due at its deadline");
    fired.fire();
    assert!(first.has_fired() && is_kept(&tick));
    (first, tick)
}

/// A tick that fired at its waiters' deadlines, before its boundary, turns
/// away a later deadline of the same tick: it waits in a tick of its own,
/// rather than being taken for one that has passed.
#[test]
fn a_later_deadline_whose_tick_fired_early_waits_in_a_tick_of_its_own() {
    let _lane = private_lane();
    let (_, waker) = counter();
    // Long enough that the bell of a tick that left does not ring during
    // the test, even under Miri; short enough for a tick of 250 µs.
    let after = Duration::from_millis(900);
    let (first, tick) = fired_at_its_deadline(after, &waker);
    // From the thread that keeps the fired tick, 50 µs after the first.
    let since = Duration::from_nanos(first.due() + 50_000) - after;
    let later = match start(clock::epoch() + since, after, &waker) {
        Start::Waiting(later) => later,
        Start::Due(_) => panic!("taken for due, 50 µs before its deadline"),
        Start::Never => panic!("never"),
    };
    assert_eq!(later.tick.at, tick.at, "not the same boundary");
    assert!(!Arc::ptr_eq(&later.tick, &tick), "in the fired tick");
    assert!(!later.has_ended());
    assert!(later.tick.fires_at() >= later.due());
}

/// A tick that fired at or after a deadline of its boundary ends a timeout
/// with that deadline at once, from the thread that keeps it: no tick of
/// its own, no wait for the alarm.
#[test]
fn an_earlier_deadline_whose_kept_tick_fired_after_it_is_due_at_once() {
    let _lane = private_lane();
    let (_, waker) = counter();
    // As in the test above.
    let after = Duration::from_millis(900);
    let (first, tick) = fired_at_its_deadline(after, &waker);
    // From the thread that keeps it, a deadline in the same tick, between
    // its start and the first's deadline.
    let earlier = (tick.boundary() - u64::from(FINE_NANOS) + first.due()) / 2 + 1;
    assert!(earlier <= first.due());
    let since = Duration::from_nanos(earlier) - after;
    match start(clock::epoch() + since, after, &waker) {
        Start::Due(due) => assert_eq!(due, earlier),
        Start::Waiting(d) => panic!("waits in a tick at {}, fired already", d.tick.at),
        Start::Never => panic!("never"),
    }
    assert!(no_ticks(), "made a tick");
}

/// A timeout of a second or more rounds up to a tick wider than a fine one
/// (16 ms for 30 s, 4.096 s from 68 minutes), and alone in it still fires
/// at its deadline: to a 250th of the tick's width (4 µs for 1.5 s, 64 µs
/// for 30 s), not up to that width late. A staging tick fires at its
/// boundary.
#[test]
fn a_lone_timeout_of_a_second_or_more_fires_within_a_250th_of_its_tick_after_its_deadline() {
    let _lane = private_lane();
    let (_, waker) = counter();
    for (after, unit) in [
        (Duration::from_millis(1_500), 4_000),
        (Duration::from_secs(5), 16_000),
        (Duration::from_secs(30), 64_000),
        (Duration::from_secs(7_200), 16_384_000),
    ] {
        let mut d = waiting(after, &waker);
        if d.is_staged() {
            assert_eq!(d.tick.class(), STAGING);
            assert_eq!(d.tick.fires_at(), d.tick.boundary(), "{after:?}: staged");
            d = settled(d, after, &waker);
        }
        let tick = &d.tick;
        assert_eq!(unit_nanos(tick.class()), unit, "{after:?}");
        assert_eq!(
            tick_of(after),
            FINE * (1 << width_bits(tick.class())),
            "{after:?}"
        );
        // Alone in its tick: each length here has a tick width, and so a
        // map of the lane, of its own.
        let (fires, due) = (tick.fires_at(), d.due());
        assert!(
            fires >= due && fires < due + unit,
            "{after:?}: its deadline {due}, it fires at {fires} (its boundary {})",
            tick.boundary()
        );
    }
}

/// A tick wider than a fine one can fire before a narrower tick whose
/// boundary is earlier than its own: the lane takes out whichever tick's
/// time has come, not only its first by boundary.
#[test]
fn a_wide_tick_due_before_a_narrower_ones_earlier_boundary_fires_first() {
    let _lane = private_lane();
    let lane = lane(private());
    let (_, waker) = counter();
    // A 1 ms boundary 3 s from now, so that no bell rings during the test.
    let now = ticks_passed(Instant::now().saturating_duration_since(clock::epoch()));
    let boundary = (now + 3 * FINE_PER_SEC).next_multiple_of(4) * u64::from(FINE_NANOS);
    let start_at = |due: u64, after: Duration| match start(
        clock::epoch() + (Duration::from_nanos(due) - after),
        after,
        &waker,
    ) {
        Start::Waiting(d) => d,
        _ => panic!("not waiting"),
    };
    // A 2 s timeout, due 900 µs before its 1 ms tick's boundary.
    let wide = start_at(boundary - 900_000, Duration::from_secs(2));
    // A 500 ms timeout due 100 µs after it, in a fine tick that ends
    // 750 µs before the wide one's.
    let fine = start_at(boundary - 800_000, Duration::from_millis(500));
    assert_eq!(wide.tick.boundary(), boundary);
    assert_eq!(fine.tick.boundary(), boundary - 750_000);
    assert_eq!(wide.tick.fires_at(), wide.due());
    assert_eq!(fine.tick.fires_at(), fine.due());
    assert_eq!(take_due(lane, wide.due() - 1).err(), Some(wide.due()));
    let due = take_due(lane, wide.due()).expect("the wide tick is not due at its deadline");
    assert!(Arc::ptr_eq(&due, &wide.tick), "another tick");
    due.fire();
    assert!(wide.has_fired() && !fine.has_ended());
    assert_eq!(take_due(lane, wide.due()).err(), Some(fine.due()));
    let due = take_due(lane, fine.due()).expect("the fine tick is not due at its deadline");
    assert!(Arc::ptr_eq(&due, &fine.tick));
    due.fire();
    assert!(fine.has_fired());
    assert_eq!(take_due(lane, u64::MAX).err(), Some(UNSET));
}

/// Moves a wait in its staging tick on to its deadline's own tick, as when
/// the staging tick comes: fired here, ahead of its time (on a lane of the
/// test's own, where no other test's timeouts wait).
fn settled(mut d: Deadline, after: Duration, waker: &Waker) -> Deadline {
    assert!(d.is_staged(), "{after:?}: no staging tick");
    d.tick.finish(FIRED);
    assert!(
        d.poll(&mut Context::from_waker(waker), || after)
            .is_pending(),
        "{after:?}: ended at its staging tick"
    );
    assert!(!d.is_staged(), "{after:?}: still staged");
    d
}

#[test]
fn a_deadline_rounds_up_to_a_tick_of_at_most_a_thousandth_of_the_timeout_or_250_us() {
    let _lane = private_lane();
    let (_, waker) = counter();
    for (after, step) in [
        (Duration::from_micros(1), FINE),
        (Duration::from_micros(499), FINE),
        (Duration::from_micros(1_001), FINE),
        (Duration::from_millis(20) + Duration::from_nanos(7), FINE),
        (Duration::from_secs(1) - Duration::from_nanos(1), FINE),
        (Duration::from_secs(1), Duration::from_millis(1)),
        (
            Duration::from_secs(4) - Duration::from_nanos(1),
            Duration::from_millis(1),
        ),
        (Duration::from_secs(4), Duration::from_millis(4)),
        (
            Duration::from_secs(30) + Duration::from_micros(1_001),
            Duration::from_millis(16),
        ),
        (Duration::from_secs(64), Duration::from_millis(64)),
        (Duration::from_secs(1_024), Duration::from_millis(1_024)),
        (Duration::from_secs(4_096), Duration::from_millis(4_096)),
        (
            Duration::from_secs(86_400 * 365),
            Duration::from_millis(4_096),
        ),
    ] {
        assert_eq!(tick_of(after), step, "{after:?}");
        assert!(
            after < Duration::from_secs(1) || step * 1_000 <= after,
            "{after:?}: a tick of {step:?} is more than a thousandth of it"
        );
        let before = Instant::now();
        let d = waiting(after, &waker);
        let latest = Instant::now() + after;
        // Its own tick, after its staging tick if it has one.
        let d = if (STAGED_FROM..STAGED_BELOW).contains(&after) {
            settled(d, after, &waker)
        } else {
            assert!(!d.is_staged(), "{after:?}: staged");
            d
        };
        let fires = tick_instant(d.tick.at).unwrap();
        assert!(
            fires >= before + after,
            "{after:?}: tick before the deadline"
        );
        assert!(fires < latest + step, "{after:?}: more than {step:?} late");
        let fine_per_step = (step.as_nanos() / FINE.as_nanos()) as u64;
        assert!(
            d.tick.at.is_multiple_of(fine_per_step),
            "{after:?}: not on a boundary of its tick"
        );
        let exact = clock::epoch() + Duration::from_nanos(d.due());
        assert!(
            exact >= before + after && exact <= latest,
            "{after:?}: inexact"
        );
    }
}

#[test]
fn timeouts_from_8_s_to_68_min_have_a_staging_tick_from_128_ms_to_4_2_s_before_the_deadline() {
    let due = Duration::new(1_000, 123_456_789);
    for after in [
        Duration::from_secs(1),
        Duration::from_secs(8) - Duration::from_nanos(1),
        Duration::from_secs(8),
        Duration::from_secs(30),
        Duration::from_secs(4_096) - Duration::from_nanos(1),
        Duration::from_secs(4_096),
        Duration::from_secs(86_400),
    ] {
        let staged = (Duration::from_secs(8)..Duration::from_secs(4_096)).contains(&after);
        assert_eq!(staging(due, after).is_some(), staged, "{after:?}");
    }
    for due in [
        Duration::new(1_000, 123_456_789),
        Duration::from_secs(4_096),
        Duration::from_millis(4_096_128),
        Duration::from_nanos(4_096_128_000_001),
        Duration::from_secs(86_400 * 365),
    ] {
        let (at, late) = staging(due, Duration::from_secs(30)).unwrap();
        assert!(at.is_multiple_of(STAGE), "{due:?}: off a staging boundary");
        let late = Duration::from_nanos(u64::from(late));
        assert!(
            late >= Duration::from_millis(128) && late < Duration::from_millis(4_224),
            "{due:?}: {late:?} before it"
        );
        assert_eq!(tick_offset(at) + late, due, "{due:?}: inexact");
    }
}

#[test]
fn long_timeouts_started_together_share_staging_ticks() {
    let _lane = private_lane();
    let (_, waker) = counter();
    // 200 lengths over 2 s: 125 ticks of their own (16 ms), and at most two
    // staging ticks (4.096 s).
    let deadlines: Vec<_> = (0..200)
        .map(|i| {
            waiting(
                Duration::from_secs(30) + Duration::from_millis(10 * i),
                &waker,
            )
        })
        .collect();
    let mut ticks: Vec<_> = deadlines.iter().map(|d| Arc::as_ptr(&d.tick)).collect();
    ticks.dedup();
    assert!(deadlines.iter().all(Deadline::is_staged));
    assert!(ticks.len() <= 2, "{} staging ticks", ticks.len());
}

#[test]
fn when_its_staging_tick_comes_a_wait_moves_to_its_own_tick_and_ends_there() {
    let _lane = private_lane();
    let (count, waker) = counter();
    let after = Duration::from_secs(30);
    let mut d = waiting(after, &waker);
    let due = d.due();
    let staging = Arc::clone(&d.tick);
    assert!(d.is_staged() && d.ended().is_none());
    staging.finish(FIRED);
    assert_eq!(
        count.0.load(Ordering::SeqCst),
        1,
        "woken at its staging tick"
    );
    // Its deadline has not come: nothing says it has.
    assert!(d.has_ended(), "a poll must look");
    assert!(!d.has_fired() && d.ended().is_none());
    let mut cx = Context::from_waker(&waker);
    assert!(d.poll(&mut cx, || after).is_pending());
    assert!(!d.is_staged());
    assert_eq!(d.due(), due, "the deadline moved");
    assert!(d.tick.at >= staging.at + LEAD, "its own tick");
    assert!(freed(&staging), "the staging tick is still held");
    assert!(d.poll(&mut cx, || after).is_pending());
    d.tick.finish(FIRED);
    assert_eq!(count.0.load(Ordering::SeqCst), 2, "woken at its own tick");
    assert_eq!(d.poll(&mut cx, || after), Poll::Ready(Outcome::Elapsed));
}

/// A tick `at` of class `class` of the private lane, in its map, fired
/// already: as another timeout's tick whose time came. Its caller retires
/// it.
fn fired_tick(at: u64, class: u8) -> Arc<Tick> {
    let tick = Arc::new(Tick {
        at,
        list: Waitlist::pinned_with_first(
            Waker::noop().clone(),
            0,
            TickInfo::new(private(), class),
        ),
    });
    assert!(tick.list.finish(FIRED).is_some());
    lock(&lane(private()).ticks)[usize::from(class)].insert(at, Arc::clone(&tick));
    tick
}

/// Whether the private lane has no tick.
fn no_ticks() -> bool {
    lock(&lane(private()).ticks).iter().all(BTreeMap::is_empty)
}

#[test]
fn a_wait_whose_own_tick_came_before_it_moved_there_ends_at_once() {
    let _lane = private_lane();
    let (_, waker) = counter();
    let after = Duration::from_secs(30);
    let mut d = waiting(after, &waker);
    let due = d.due();
    // Its own tick, fired already (its task ran after it).
    let (at, _) = ticks(Duration::from_nanos(due), width(class(after))).unwrap();
    let own = fired_tick(at, class(after));
    d.tick.finish(FIRED);
    let polled = d.poll(&mut Context::from_waker(&waker), || after);
    own.retire();
    assert_eq!(polled, Poll::Ready(Outcome::Elapsed));
    assert_eq!(d.due(), due, "not its exact deadline");
}

/// A timeout from 8 s up is woken at its staging tick, before its
/// deadline: polled then, it polls its future and waits on, and its error
/// comes at its own tick.
#[test]
fn a_long_timeout_woken_at_its_staging_tick_waits_on_for_its_deadline() {
    static SITE: crate::site::Site =
        crate::site::Site::new(Some("staged"), file!(), line!(), column!());
    let _lane = private_lane();
    let (count, waker) = counter();
    let mut cx = Context::from_waker(&waker);
    let polls = Arc::new(AtomicUsize::new(0));
    let inner = {
        let polls = Arc::clone(&polls);
        std::future::poll_fn(move |_| {
            polls.fetch_add(1, Ordering::SeqCst);
            Poll::<()>::Pending
        })
    };
    let mut t = Box::pin(crate::timeout::timeout(&SITE, 30, inner));
    let kept = || LOCAL.with(|l| l.last.borrow().clone()).unwrap();
    assert!(t.as_mut().poll(&mut cx).is_pending());
    let staging = kept();
    staging.finish(FIRED);
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
    assert!(
        t.as_mut().poll(&mut cx).is_pending(),
        "ended at its staging tick, seconds early"
    );
    assert_eq!(polls.load(Ordering::SeqCst), 2, "its future was not polled");
    let own = kept();
    assert!(own.at > staging.at);
    own.finish(FIRED);
    assert_eq!(count.0.load(Ordering::SeqCst), 2);
    match t.as_mut().poll(&mut cx) {
        Poll::Ready(Err(e)) => {
            assert!(e.is_elapsed(), "{e}");
            assert_eq!(e.duration(), Some(Duration::from_secs(30)));
        }
        Poll::Ready(Ok(())) => unreachable!("the inner future never ends"),
        Poll::Pending => panic!("still pending after its own tick"),
    }
}

/// A wait whose staging tick comes after its deadline has passed (its task
/// ran late) ends at that poll, in its staging tick: it neither makes a tick
/// in the past nor waits for one.
#[test]
fn a_wait_whose_staging_tick_came_after_its_deadline_ends_at_once() {
    let _lane = private_lane();
    let (_, waker) = counter();
    // A staging tick at the first fine tick, the deadline a microsecond
    // after it: both past once the process's clock has run that long (this
    // test may be the first to read it, and start its epoch).
    let staging = Arc::new(Tick {
        at: 1,
        list: Waitlist::pinned_with_first(waker.clone(), 0, TickInfo::new(private(), STAGING)),
    });
    let mut d = Deadline {
        tick: Arc::clone(&staging),
        key: STAGED,
        offset: 1_000,
        waker: WakerId::of(&waker),
    };
    let due = d.due();
    while clock::now_nanos() <= due {
        std::thread::sleep(Duration::from_micros(100));
    }
    staging.finish(FIRED);
    assert!(!d.has_fired() && d.ended().is_none(), "ended before a poll");
    let mut cx = Context::from_waker(&waker);
    assert_eq!(
        d.poll(&mut cx, || Duration::from_secs(30)),
        Poll::Ready(Outcome::Elapsed)
    );
    assert!(Arc::ptr_eq(&d.tick, &staging), "moved to a tick of its own");
    assert!(no_ticks(), "made a tick");
    assert_eq!(d.due(), due, "not its exact deadline");
    assert!(d.has_fired() && d.ended() == Some(Outcome::Elapsed));
    assert_eq!(
        d.poll(&mut cx, || Duration::from_secs(30)),
        Poll::Ready(Outcome::Elapsed)
    );
}

/// Nested long timeouts whose staging tick comes so late that the ticks of
/// both deadlines have come too (other timeouts' ticks, fired): the outer
/// deadline came first, and its error reports, not the inner one's.
#[test]
fn nested_long_timeouts_polled_after_their_own_ticks_came_report_the_earlier() {
    static OUTER: crate::site::Site =
        crate::site::Site::new(Some("outer"), file!(), line!(), column!());
    static INNER: crate::site::Site =
        crate::site::Site::new(Some("inner"), file!(), line!(), column!());
    let _lane = private_lane();
    let (_, waker) = counter();
    let mut cx = Context::from_waker(&waker);
    // The inner one starts first, in the first poll: 2 s longer, its
    // deadline still comes after the outer's (however slow the run, as
    // under Miri).
    let (outer, inner) = (Duration::from_secs(30), Duration::from_secs(32));
    let before = Instant::now();
    let mut t = Box::pin(crate::timeout::timeout(
        &OUTER,
        outer,
        crate::timeout::timeout(&INNER, inner, std::future::pending::<()>()),
    ));
    assert!(t.as_mut().poll(&mut cx).is_pending());
    let after = Instant::now();
    assert!(
        after - before < inner - outer,
        "the outer deadline may be later"
    );
    let staging: Vec<_> = lock(&lane(private()).ticks)[usize::from(STAGING)]
        .values()
        .cloned()
        .collect();
    assert!(!staging.is_empty() && staging.len() <= 2);
    // Every tick either deadline can round up to, fired.
    let since = |i: Instant| i.saturating_duration_since(clock::epoch());
    let step = width(class(outer));
    assert_eq!(step, width(class(inner)));
    let (first, _) = ticks(since(before) + outer, step).unwrap();
    let (last, _) = ticks(since(after) + inner, step).unwrap();
    let own: Vec<_> = (first..=last)
        .step_by(step as usize)
        .map(|at| fired_tick(at, class(outer)))
        .collect();
    for tick in &staging {
        tick.finish(FIRED);
    }
    let polled = t.as_mut().poll(&mut cx);
    for tick in own {
        tick.retire();
    }
    drop(t);
    match polled {
        Poll::Ready(Err(e)) => assert_eq!(e.label(), Some("outer"), "{e}"),
        Poll::Ready(Ok(Err(e))) => panic!("the inner one reported: {e}"),
        Poll::Ready(Ok(Ok(()))) => unreachable!("the inner future never ends"),
        Poll::Pending => panic!("still pending after both deadlines"),
    }
}

#[test]
fn a_deadline_rounds_up_to_the_next_boundary_of_its_width_and_knows_by_how_much() {
    let at = |secs: u64, nanos: u32, width: u64| ticks(Duration::new(secs, nanos), width);
    // Fine ticks: 250 µs.
    assert_eq!(at(5, 0, 1), Some((20_000, 0)));
    assert_eq!(at(5, 1, 1), Some((20_001, 249_999)));
    assert_eq!(at(5, 250_000, 1), Some((20_001, 0)));
    assert_eq!(at(5, 1_000_001, 1), Some((20_005, 249_999)));
    assert_eq!(at(5, 999_999_999, 1), Some((24_000, 1)));
    // 1 ms, counted in fine ticks.
    assert_eq!(at(5, 1, 4), Some((20_004, 999_999)));
    assert_eq!(at(5, 250_000, 4), Some((20_004, 750_000)));
    assert_eq!(at(5, 1_000_000, 4), Some((20_004, 0)));
    assert_eq!(at(5, 1_000_001, 4), Some((20_008, 999_999)));
    // 16 ms: 5.000000001 s rounds up to 5.008 s (320 ticks of 16 ms).
    assert_eq!(at(5, 1, 64), Some((20_032, 7_999_999)));
    assert_eq!(at(5, 8_000_000, 64), Some((20_032, 0)));
    // The widest, 4.096 s: the most a deadline can be early by fits.
    let widest = 1 << (2 * COARSEST);
    assert_eq!(at(0, 1, widest), Some((widest, 4_095_999_999)));
    assert_eq!(at(4, 96_000_000, widest), Some((widest, 0)));
    // Past what a tick count holds: no tick.
    assert_eq!(at(u64::MAX / 4_000 + 1, 0, 1), None);
    assert_eq!(at(u64::MAX / 4_000, 0, widest), None);
}

#[test]
fn many_timeouts_in_one_tick_share_it_and_each_wakes() {
    let far = Duration::from_millis(50);
    let wakers: Vec<_> = (0..200).map(|_| counter()).collect();
    let deadlines: Vec<_> = wakers.iter().map(|(_, w)| waiting(far, w)).collect();
    let ticks: std::collections::BTreeSet<Key> = deadlines.iter().map(|d| d.tick.key()).collect();
    // Created within a few ticks of each other: they share a handful of
    // ticks (not under Miri, which runs far slower than the clock).
    if !cfg!(miri) {
        assert!(ticks.len() <= 5, "{} ticks for 200 timeouts", ticks.len());
    }
    let mut deadlines = deadlines;
    for (d, (_, w)) in deadlines.iter_mut().zip(&wakers) {
        assert_eq!(wait(d, w), Outcome::Elapsed);
    }
    // The state is set before the wake-ups go out, and nothing here relays
    // (a `Deadline` polled on its own does not): the timer wakes the rest
    // itself, the last of them 31 ms after the first. Let it finish.
    let woken = || wakers.iter().all(|(c, _)| c.0.load(Ordering::SeqCst) > 0);
    let start = Instant::now();
    while !woken() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(20));
    // Each was woken exactly once by its tick (the polls above only re-check).
    for (count, _) in &wakers {
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }
}

/// Records the threads it was woken on, and when.
struct Where(Mutex<Vec<(std::thread::ThreadId, Instant)>>);
impl Wake for Where {
    fn wake(self: Arc<Self>) {
        lock(&self.0).push((std::thread::current().id(), Instant::now()));
    }
}

fn recorder() -> (Arc<Where>, Waker) {
    let w = Arc::new(Where(Mutex::new(Vec::new())));
    (w.clone(), Waker::from(w))
}

/// Waits until `w` was woken, within a generous bound.
fn woken(w: &Where) -> Vec<(std::thread::ThreadId, Instant)> {
    let start = Instant::now();
    while lock(&w.0).is_empty() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_micros(100));
    }
    lock(&w.0).clone()
}

type Recorded = (Vec<(Arc<Where>, Waker)>, Vec<Deadline>);

/// `n` timeouts of `after` in one tick, each with a recorder. Callers hold
/// [`private_lane`]: in a lane shared with a test running at the same time,
/// timeouts of the same length join the same tick, and that test's polls
/// and drops relay to this one's waiters. A tick
/// boundary can fall between them on a busy machine: then it tries again.
/// Started within one tick, none of them can find the others' tick due (a
/// thread that starts a timeout fires its own due ticks), so their tick is
/// futures-timer's to fire. Miri runs far slower than the clock: it takes
/// what comes, and checks the memory of whichever path that is.
fn in_one_tick(n: usize, after: Duration) -> Recorded {
    let tries = if cfg!(miri) { 1 } else { 20 };
    (0..tries)
        .map(|_| {
            let all: Vec<_> = (0..n).map(|_| recorder()).collect();
            let deadlines: Vec<_> = all.iter().map(|(_, w)| waiting(after, w)).collect();
            (all, deadlines)
        })
        .find(|(_, ds)| cfg!(miri) || ds.iter().all(|d| Arc::ptr_eq(&d.tick, &ds[0].tick)))
        .expect("the timeouts in one tick, in 20 tries")
}

/// When the lane's alarm steps in for the fired `tick`'s relay for the
/// `nth` time (from 0), if it is still to: never before then. `None` once
/// it has stepped in that often (or is not to).
fn steps_in_at(tick: &Arc<Tick>, nth: u8) -> Option<Instant> {
    let at = {
        let relays = lock(&lane(tick.lane()).relays);
        let (&(at, _), _) = relays
            .iter()
            .find(|(_, t)| std::ptr::eq(t.as_ptr(), Arc::as_ptr(tick)))?;
        at
    };
    // Read after the entry: had a step-in taken it before, the one found
    // would be the next one's (a step-in counts itself before it notes the
    // next); one that takes it now comes at its time, not before.
    let stepped_in = tick.list.extra.fallbacks.load(Ordering::SeqCst);
    if stepped_in != nth {
        return None;
    }
    tick_instant(at)
}

#[test]
fn a_ticks_first_waiter_wakes_the_others_from_its_own_thread() {
    let _lane = private_lane();
    let (all, mut deadlines) = in_one_tick(3, Duration::from_millis(5));
    let here = std::thread::current().id();
    // futures-timer's thread wakes the first waiter only.
    let first = woken(&all[0].0);
    assert_eq!(first.len(), 1);
    if !cfg!(miri) {
        assert_ne!(first[0].0, here, "the first waiter is woken by the timer");
    }
    // Its task runs here, and its timeout ends: the others are woken from
    // here, unless this thread was too slow and the backup, set for 1 ms
    // after the tick fired, came first.
    let backup = steps_in_at(&deadlines[0].tick, 0);
    drop(deadlines.remove(0));
    let relayed_in_time = backup.is_some_and(|at| Instant::now() < at);
    for (w, _) in &all[1..] {
        let on = woken(w);
        assert_eq!(on.len(), 1, "woken once");
        if relayed_in_time {
            assert_eq!(on[0].0, here, "not relayed from the first waiter's thread");
        }
    }
    assert!(
        !in_wheel(&deadlines[0].tick),
        "the fired tick stayed in the wheel"
    );
}

#[test]
fn when_the_first_waiter_never_runs_the_timer_wakes_the_rest_itself() {
    let _lane = private_lane();
    let (all, deadlines) = in_one_tick(3, Duration::from_millis(5));
    let here = std::thread::current().id();
    // Nothing polls or drops the first: futures-timer's thread wakes them all.
    for (w, _) in &all {
        let on = woken(w);
        assert_eq!(on.len(), 1, "woken once");
        if !cfg!(miri) {
            assert_ne!(on[0].0, here);
        }
    }
    std::thread::sleep(Duration::from_millis(10));
    for (w, _) in &all {
        assert_eq!(lock(&w.0).len(), 1, "woken again");
    }
    assert!(deadlines.iter().all(Deadline::has_fired));
    assert!(
        !in_wheel(&deadlines[0].tick),
        "the fired tick stayed in the wheel"
    );
}

#[test]
fn when_no_woken_waiter_runs_the_timer_wakes_one_more_at_a_time_then_the_rest() {
    let _lane = private_lane();
    let n = FALLBACKS as usize + 3;
    let (all, deadlines) = in_one_tick(n, Duration::from_millis(5));
    let here = std::thread::current().id();
    // Nothing polls or drops any: futures-timer's thread wakes them all.
    let at: Vec<Instant> = all
        .iter()
        .map(|(w, _)| {
            let on = woken(w);
            assert_eq!(on.len(), 1, "woken once");
            if !cfg!(miri) {
                assert_ne!(on[0].0, here);
            }
            on[0].1
        })
        .collect();
    std::thread::sleep(Duration::from_millis(10));
    for (w, _) in &all {
        assert_eq!(lock(&w.0).len(), 1, "woken again");
    }
    // The first, then one more each time it stepped in, in order; the
    // last time, the rest.
    assert!(at.windows(2).all(|w| w[0] <= w[1]), "out of order");
    let tick = &deadlines[0].tick;
    // (Under Miri they may not share a tick: see `in_one_tick`.)
    if !cfg!(miri) {
        assert_eq!(
            u32::from(tick.list.extra.fallbacks.load(Ordering::SeqCst)),
            FALLBACKS
        );
    }
    assert!(!tick.list.relaying() && !in_wheel(tick));
}

#[test]
fn a_waiter_woken_for_a_relay_that_has_not_come_relays_to_the_rest() {
    let _lane = private_lane();
    let (all, mut deadlines) = in_one_tick(4, Duration::from_millis(5));
    let here = std::thread::current().id();
    // The first's task never runs: one more is woken, by the timer.
    assert_eq!(woken(&all[0].0).len(), 1);
    let second = woken(&all[1].0);
    assert_eq!(second.len(), 1);
    if !cfg!(miri) {
        assert_ne!(second[0].0, here, "woken by the timer");
    }
    // Its task runs here, and its timeout ends: the rest are woken from
    // here, unless the timer stepped in again first (2 ms after).
    let backup = steps_in_at(&deadlines[0].tick, 1);
    drop(deadlines.remove(1));
    let relayed_in_time = backup.is_some_and(|at| Instant::now() < at);
    for (w, _) in &all[2..] {
        let on = woken(w);
        assert_eq!(on.len(), 1, "woken once");
        if relayed_in_time {
            assert_eq!(on[0].0, here, "not relayed from the second waiter's thread");
        }
    }
    assert!(!in_wheel(&deadlines[0].tick));
}

/// A tick of the private lane at `at` with three waiters, fired: its first
/// waiter is woken, the other two left to relay. With their counts.
fn fired_with_two_to_relay(at: u64) -> (Arc<Tick>, Vec<Arc<Count>>) {
    let (first, waker) = counter();
    let tick = Arc::new(Tick {
        at,
        list: Waitlist::pinned_with_first(waker, 0, TickInfo::new(private(), 0)),
    });
    let mut counts = vec![first];
    for _ in 0..2 {
        let (count, waker) = counter();
        assert!(tick.list.join(waker, 0).is_ok());
        counts.push(count);
    }
    tick.fire();
    (tick, counts)
}

/// Two ticks of one lane can have the same time: a thread that read the
/// clock just before a tick fired makes that tick anew, and threads that
/// share its lane join it, before it fires too. Fired in the same fine
/// tick, each still gets the timer's step-in for its relay (one noted for
/// the time of the other's in its place left the other's waiters asleep
/// for as long as its first waiter's task did not run).
#[test]
fn two_ticks_of_one_time_fired_together_each_get_the_step_in_for_their_relay() {
    let _lane = private_lane();
    let relay_tick =
        || ticks_passed(Instant::now().saturating_duration_since(clock::epoch()) + RELAY_GRACE);
    let (ticks, counts) = (0..20)
        .find_map(|_| {
            let at = ticks_passed(Instant::now().saturating_duration_since(clock::epoch()));
            let before = relay_tick();
            let (a, mut counts) = fired_with_two_to_relay(at);
            let (b, more) = fired_with_two_to_relay(at);
            counts.extend(more);
            // Both relays noted for the same time, as the case needs
            // (Miri runs far slower than the clock: it takes what comes).
            (cfg!(miri) || relay_tick() == before).then_some(([a, b], counts))
        })
        .expect("two ticks fired within one fine tick, in 20 tries");
    // The lane's alarm, asked for the relays as a ring asks for them.
    ring(private());
    // No waiter's task runs: the timer wakes them all, each once.
    let start = Instant::now();
    while counts.iter().any(|c| c.0.load(Ordering::SeqCst) == 0)
        && start.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    let woken: Vec<usize> = counts.iter().map(|c| c.0.load(Ordering::SeqCst)).collect();
    assert_eq!(
        woken, [1; 6],
        "waiters of the two ticks not woken once each"
    );
    assert!(ticks.iter().all(|t| !t.list.relaying()));
}

/// Starts and drops a timeout in a tick of its own (two hours out): this
/// thread moves on from the tick it kept.
fn move_on() {
    let (_, waker) = counter();
    drop(waiting(Duration::from_secs(7200), &waker));
}

#[test]
fn dropped_timeouts_free_their_share_and_the_tick_goes_once_its_thread_moves_on() {
    let _lane = private_lane();
    let (_, waker) = counter();
    let keep = waiting(Duration::from_secs(3600), &waker);
    let tick = Arc::clone(&keep.tick);
    let dropped: Vec<_> = (0..200)
        .map(|_| waiting(Duration::from_secs(3600), &waker))
        .filter(|d| Arc::ptr_eq(&d.tick, &tick))
        .collect();
    let joined = dropped.len();
    let (live, chunks) = tick.list.live();
    assert_eq!(live as usize, joined + 1);
    // The first waiter in the list itself, the others in chunks.
    let last_key = u32::try_from(joined).unwrap();
    assert_eq!(chunks, waitlist::split(last_key).map_or(0, |(c, _)| c + 1));
    drop(dropped);
    let (live, chunks) = tick.list.live();
    assert_eq!(live, 1, "only `keep` is left");
    // Full chunks that emptied went back; the last stays.
    assert!(chunks <= 1, "{chunks} chunks for one waiter");
    let kept = is_kept(&tick);
    drop(keep);
    if kept {
        // This thread's tick stays open for its next timeouts (whose first
        // goes in the list itself: no chunk is kept but the first).
        assert_eq!(tick.list.live().0, 0);
        assert!(in_wheel(&tick));
    }
    // (Under Miri, slower than the clock, the thread may have moved on to a
    // later tick already; then the last waiter took it down.)
    move_on();
    assert_eq!(tick.list.live(), (0, 0), "the memory went back");
    assert!(freed(&tick), "an empty tick stayed");
}

/// Whether nothing but the caller holds `tick` (not the wheel, not a
/// thread's cache), so that it goes when the caller lets it go.
fn freed(tick: &Arc<Tick>) -> bool {
    Arc::strong_count(tick) == 1
}

#[test]
fn a_cancelled_timeout_frees_its_tick_whatever_its_deadline() {
    let _lane = private_lane();
    let (_, waker) = counter();
    for after in [
        Duration::from_secs(3600),
        Duration::from_secs(86_400),
        Duration::from_secs(1_000_000_000),
    ] {
        let d = waiting(after, &waker);
        let tick = Arc::clone(&d.tick);
        assert!(in_wheel(&tick), "{after:?}");
        drop(d);
        move_on();
        assert!(freed(&tick), "{after:?}: the tick stayed");
    }
}

#[test]
fn a_tick_left_empty_on_another_thread_goes_at_once() {
    let _lane = private_lane();
    let (_, waker) = counter();
    let d = waiting(Duration::from_secs(3600), &waker);
    let tick = Arc::clone(&d.tick);
    move_on();
    // Not this thread's kept tick any more: its last waiter takes it down.
    std::thread::spawn(move || drop(d)).join().unwrap();
    assert!(freed(&tick));
}

#[test]
fn a_thread_that_exits_lets_its_empty_tick_go() {
    let tick = std::thread::spawn(|| {
        // Kept to the thread's end, whose letting go is what is tested.
        std::mem::forget(private_lane());
        let (_, waker) = counter();
        let d = waiting(Duration::from_secs(3600), &waker);
        let tick = Arc::clone(&d.tick);
        drop(d);
        assert!(in_wheel(&tick), "kept while the thread runs");
        tick
    })
    .join()
    .unwrap();
    assert!(freed(&tick));
}

#[test]
fn timeouts_started_one_after_another_share_one_tick() {
    let _lane = private_lane();
    let (_, waker) = counter();
    let mut shared = 0;
    // A millisecond can pass between two starts (a busy machine): try again
    // a few times.
    for _ in 0..20 {
        let first = waiting(Duration::from_secs(3600), &waker);
        let tick = Arc::clone(&first.tick);
        drop(first);
        for _ in 0..100 {
            let d = waiting(Duration::from_secs(3600), &waker);
            if d.tick.key() != tick.key() {
                break;
            }
            assert!(
                Arc::ptr_eq(&d.tick, &tick),
                "a new tick for the same millisecond"
            );
            drop(d);
            assert_eq!(tick.list.live(), (0, 0), "each the first waiter: no chunk");
            shared += 1;
        }
        if shared > 0 || cfg!(miri) {
            break;
        }
    }
    // Not under Miri, which runs far slower than the clock.
    if !cfg!(miri) {
        assert!(shared > 0, "the next millisecond came at once, 20 times");
    }
}

#[test]
fn a_thread_moving_on_from_its_empty_tick_makes_the_next_in_its_memory() {
    let _lane = private_lane();
    let (_, waker) = counter();
    let first = waiting(Duration::from_secs(3600), &waker);
    let (kept, mut old) = (Arc::as_ptr(&first.tick), first.tick.key());
    drop(first);
    // Each new tick is made while the kept one is still in the wheel:
    // without the renewal it would be a new allocation, at another address.
    for hours in 2..5 {
        let d = waiting(Duration::from_secs(3600 * hours), &waker);
        assert_eq!(Arc::as_ptr(&d.tick), kept, "a new allocation, {hours} h");
        assert_ne!(d.tick.key(), old);
        old = d.tick.key();
    }
    // Both timeouts below count from one reading, so that they share a
    // deadline (two readings can fall on both sides of a tick's boundary).
    let started = Instant::now();
    let Start::Waiting(mut next) = start(started, Duration::from_millis(2), &waker) else {
        panic!("not waiting");
    };
    assert_eq!(Arc::as_ptr(&next.tick), kept, "a new allocation");
    assert_ne!(next.tick.key(), old);
    assert!(in_wheel(&next.tick));
    assert!(
        !lock(&lane(old.1).ticks)
            .iter()
            .any(|class| class.contains_key(&old.0)),
        "the kept tick's time stayed in the wheel"
    );
    assert_eq!((next.key, next.tick.list.live()), (0, (1, 0)));
    // It is a tick like any other: others join it, and it fires.
    let joined_too = match start(started, Duration::from_millis(2), &waker) {
        Start::Waiting(joined) => Arc::ptr_eq(&joined.tick, &next.tick),
        // Its tick came meanwhile (under Miri, far slower than the clock).
        _ => false,
    };
    assert_eq!(
        wait_within(&mut next, &waker, Duration::from_secs(10)),
        Some(Outcome::Elapsed)
    );
    assert!(started.elapsed() >= Duration::from_millis(2), "early");
    assert!(
        joined_too || cfg!(miri),
        "a second timeout made its own tick"
    );
}

#[test]
fn a_kept_tick_that_someone_else_holds_is_not_made_the_next() {
    let _lane = private_lane();
    let (_, waker) = counter();
    let first = waiting(Duration::from_secs(3600), &waker);
    let held = Arc::clone(&first.tick);
    let key = held.key();
    drop(first);
    let next = waiting(Duration::from_secs(7200), &waker);
    assert!(!Arc::ptr_eq(&next.tick, &held));
    assert_eq!(held.key(), key, "the held tick changed under its holder");
    assert!(freed(&held), "the tick left behind stayed");
}

#[test]
fn fired_ticks_leave_the_wheel() {
    let (_, waker) = counter();
    let mut d = waiting(Duration::from_millis(2), &waker);
    assert_eq!(wait(&mut d, &waker), Outcome::Elapsed);
    // The state is set before the tick leaves the wheel: give it a moment.
    let gone = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        !in_wheel(&d.tick)
    });
    assert!(gone, "a fired tick stayed in the wheel");
}

#[test]
fn after_its_last_tick_fired_a_thread_joins_a_new_one() {
    let (_, waker) = counter();
    let mut first = waiting(Duration::from_millis(1), &waker);
    wait(&mut first, &waker);
    // This thread's cache still holds the fired tick; a new timeout must
    // not join it (it would time out at once).
    let start = Instant::now();
    let mut next = waiting(Duration::from_millis(5), &waker);
    assert!(!Arc::ptr_eq(&first.tick, &next.tick));
    wait(&mut next, &waker);
    assert!(start.elapsed() >= Duration::from_millis(5));
}

#[test]
fn unrepresentable_deadlines_need_no_timer() {
    let (_, waker) = counter();
    assert!(matches!(
        start(Instant::now(), Duration::MAX, &waker),
        Start::Never
    ));
}

#[test]
fn threads_never_share_a_tick() {
    let after = Duration::from_secs(3600);
    let (_, waker) = counter();
    let here = waiting(after, &waker);
    let there = std::thread::spawn(move || {
        let (_, waker) = counter();
        let d = waiting(after, &waker);
        (d.tick.key(), Arc::as_ptr(&d.tick) as usize)
    })
    .join()
    .unwrap();
    assert_ne!(here.tick.lane(), there.0.1, "one lane per thread");
    assert_ne!(Arc::as_ptr(&here.tick) as usize, there.1);
}

#[test]
fn only_a_tick_earlier_than_the_lanes_others_sets_its_bell() {
    let _lane = private_lane();
    let alarm = &lane(private()).alarm;
    let (_, waker) = counter();
    let set = bells_set();
    let first = waiting(Duration::from_secs(3600), &waker);
    let first_at = first.tick.at;
    let first_fires = first.tick.fires_at();
    assert_eq!(bells_set(), set + 1, "the lane's first tick set no bell");
    assert_eq!(alarm.asked(), first_fires);
    let later = waiting(Duration::from_secs(5400), &waker);
    assert!(later.tick.at > first_at);
    drop(first);
    move_on();
    assert_eq!(
        bells_set(),
        set + 1,
        "a later tick, or one leaving, set the bell"
    );
    // It rings for the tick that left, finds nothing due and sets itself
    // for the next (see the next test).
    assert_eq!(alarm.asked(), first_fires);
    let earlier = waiting(Duration::from_secs(1800), &waker);
    assert_eq!(bells_set(), set + 2, "an earlier tick set no bell");
    assert_eq!(alarm.asked(), earlier.tick.fires_at());
}

#[test]
fn a_bell_that_rings_for_a_tick_that_left_sets_itself_for_the_next() {
    let _lane = private_lane();
    let (_, waker) = counter();
    let gone = waiting(Duration::from_millis(20), &waker);
    let start = Instant::now();
    let mut next = waiting(Duration::from_millis(60), &waker);
    assert!(next.tick.at > gone.tick.at);
    // Not the tick this thread keeps (that is `next`'s): it goes at once,
    // and the bell still rings for it.
    drop(gone);
    let out = wait_within(&mut next, &waker, Duration::from_secs(10));
    let took = start.elapsed();
    assert_eq!(out, Some(Outcome::Elapsed), "the next tick never fired");
    assert!(took >= Duration::from_millis(60), "{took:?}");
}

#[test]
fn a_bell_that_rings_before_its_setter_puts_it_back_is_set_again_for_the_next_tick() {
    let _lane = private_lane();
    let (_, waker) = counter();
    let start = Instant::now();
    // The lane's first tick sets the bell for itself (far enough off that
    // a stalled test thread still starts the earlier one before it).
    let mut later = waiting(Duration::from_millis(300), &waker);
    // An earlier tick sets it again, and holds it out until it has rung
    // for that tick (on futures-timer's thread), whose ring asks for the
    // later tick meanwhile: a bell rings once per setting, so the thread
    // holding it must set it again, for the later tick.
    let (earlier_woken, earlier_waker) = counter();
    let rung = earlier_woken.clone();
    alarm::AFTER_SET.set(Some(Box::new(move || {
        let held = Instant::now();
        while rung.0.load(Ordering::SeqCst) == 0 && held.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_micros(100));
        }
    })));
    let earlier = waiting(Duration::from_millis(1), &earlier_waker);
    assert!(earlier.tick.at < later.tick.at);
    assert_eq!(
        earlier_woken.0.load(Ordering::SeqCst),
        1,
        "the bell did not ring for the earlier tick while it was out"
    );
    let out = wait_within(&mut later, &waker, Duration::from_secs(10));
    let took = start.elapsed();
    assert_eq!(out, Some(Outcome::Elapsed), "the bell never rang again");
    assert!(took >= Duration::from_millis(300), "{took:?}");
}

#[test]
#[cfg_attr(miri, ignore)] // Hundreds of threads and real time: too slow there.
fn threads_sharing_lanes_with_ticks_asked_out_of_order_all_fire_in_their_window() {
    // Twice as many threads as lanes, so that lanes are shared, each
    // starting timeouts whose ticks come later and earlier than the ones
    // before (each earlier one sets its lane's alarm, racing the others'
    // and the rings), dropping every other one.
    let threads: Vec<_> = (0..2 * LANES as u64)
        .map(|t| {
            std::thread::spawn(move || {
                let (_, waker) = counter();
                let mut kept = Vec::new();
                for i in 0..12_u64 {
                    let ms = 5 + (t * 7 + i * 13) % 40;
                    let after = Duration::from_millis(ms);
                    let started = Instant::now();
                    let d = waiting(after, &waker);
                    if i % 2 == 0 {
                        kept.push((d, started, after));
                    }
                }
                for (mut d, started, after) in kept {
                    let out = wait_within(&mut d, &waker, Duration::from_secs(20));
                    let took = started.elapsed();
                    assert_eq!(out, Some(Outcome::Elapsed), "{after:?} never fired");
                    assert!(took >= after, "{after:?} fired early, after {took:?}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Panics when the last handle to it goes.
struct PanicsOnDrop;
impl Wake for PanicsOnDrop {
    fn wake(self: Arc<Self>) {}
}
impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("waker dropped");
    }
}

#[test]
fn a_waker_that_panics_when_dropped_leaves_its_tick_in_order() {
    let _lane = private_lane();
    // The timeout's own clone of the waker is the last: dropping the
    // timeout drops it, and it panics.
    let d = waiting(
        Duration::from_secs(3600),
        &Waker::from(Arc::new(PanicsOnDrop)),
    );
    let tick = Arc::clone(&d.tick);
    // Not this thread's kept tick: its last waiter takes it down.
    move_on();
    assert!(in_wheel(&tick));
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(d)));
    assert!(dropped.is_err(), "the waker's panic comes through");
    assert!(freed(&tick), "the emptied tick stayed in the wheel");
}

#[test]
#[cfg(target_pointer_width = "64")]
fn a_tick_is_a_72_byte_allocation() {
    // Its fields, then its `Arc`'s two counts: what the allocator is asked
    // for each tick (glibc serves 72 bytes from its 80-byte class; 104,
    // as before the list's chunks went behind one pointer, from its 112).
    assert_eq!(std::mem::size_of::<Tick>(), 56);
    assert_eq!(
        std::mem::size_of::<Tick>() + 2 * std::mem::size_of::<usize>(),
        72
    );
}

/// A timeout waiting on a tick that breaks (futures-timer's thread went
/// away) is woken, and its next poll ends it with the error, though it is
/// polled with the waker it registered.
#[test]
fn a_timeout_whose_tick_breaks_while_it_waits_ends_with_an_error() {
    static SITE: crate::site::Site =
        crate::site::Site::new(Some("breaks"), file!(), line!(), column!());
    let _lane = private_lane();
    let (count, waker) = counter();
    let mut cx = Context::from_waker(&waker);
    let inner = std::future::pending::<()>();
    let mut t = Box::pin(crate::timeout::timeout(
        &SITE,
        Duration::from_secs(60),
        inner,
    ));
    assert!(t.as_mut().poll(&mut cx).is_pending());
    break_lane(lane(private()));
    assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken once");
    match t.as_mut().poll(&mut cx) {
        Poll::Ready(Err(e)) => assert!(e.is_no_timer(), "{e}"),
        Poll::Ready(Ok(())) => unreachable!("the inner future never ends"),
        Poll::Pending => panic!("still pending after its timer broke"),
    }
}
