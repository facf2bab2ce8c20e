//! The test clock (feature `test-util`): timeouts started under it wait for it,
//! fire in deadline order when it reaches them and never before, wake their
//! tasks, and tests on other threads do not see each other's clock.
#![cfg(feature = "test-util")]

use std::future::{Future, pending};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Wake, Waker};
use std::time::{Duration, Instant};

mod common;

use common::{PanickingWaker, park_on, poll_with};
use opguard::test_clock::TestClock;
use opguard::{TimeoutError, timeout_async};

/// A waker that records its name in a shared list when woken.
struct Named(&'static str, Arc<Mutex<Vec<&'static str>>>);
impl Wake for Named {
    fn wake(self: Arc<Self>) {
        self.1.lock().unwrap().push(self.0);
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

type Hang = Pin<Box<dyn Future<Output = Result<(), TimeoutError>> + Send>>;

fn hang(after: u64) -> Hang {
    Box::pin(timeout_async!(after, pending::<()>()))
}

#[test]
fn deadlines_fire_in_order_exactly_when_the_clock_reaches_them() {
    let clock = TestClock::new();
    let woken = Arc::new(Mutex::new(Vec::new()));
    let _entered = clock.enter();
    let mut futs = [("30s", hang(30)), ("10s", hang(10)), ("20s", hang(20))];
    let wakers: Vec<Waker> = futs
        .iter()
        .map(|(name, _)| Waker::from(Arc::new(Named(name, woken.clone()))))
        .collect();
    for ((_, fut), waker) in futs.iter_mut().zip(&wakers) {
        assert!(poll_with(fut.as_mut(), waker).is_pending());
    }
    assert_eq!(clock.waiting(), 3);

    // A nanosecond short of the first deadline: nothing fires.
    clock.advance(secs(10) - Duration::from_nanos(1));
    assert!(woken.lock().unwrap().is_empty());
    assert!(poll_with(futs[1].1.as_mut(), &wakers[1]).is_pending());

    // Past all three at once: woken in deadline order.
    clock.advance(secs(25));
    assert_eq!(*woken.lock().unwrap(), ["10s", "20s", "30s"]);
    assert_eq!(clock.elapsed(), secs(35) - Duration::from_nanos(1));
    for (i, want) in [(0, 30), (1, 10), (2, 20)] {
        let Poll::Ready(Err(err)) = poll_with(futs[i].1.as_mut(), &wakers[i]) else {
            panic!("#{i} did not time out");
        };
        assert!(err.is_elapsed());
        assert_eq!(err.duration(), Some(secs(want)));
    }
    assert_eq!(clock.waiting(), 0);
}

#[test]
fn advance_to_next_moves_to_the_earliest_deadline() {
    let clock = TestClock::new();
    let woken = Arc::new(Mutex::new(Vec::new()));
    let waker = Waker::from(Arc::new(Named("any", woken.clone())));
    let _entered = clock.enter();
    let (mut a, mut b) = (hang(7), hang(3));
    assert!(poll_with(a.as_mut(), &waker).is_pending());
    assert!(poll_with(b.as_mut(), &waker).is_pending());
    assert_eq!(clock.advance_to_next(), Some(secs(3)));
    assert!(poll_with(b.as_mut(), &waker).is_ready());
    assert!(poll_with(a.as_mut(), &waker).is_pending());
    assert_eq!(clock.advance_to_next(), Some(secs(4)));
    assert!(poll_with(a.as_mut(), &waker).is_ready());
    assert_eq!(clock.advance_to_next(), None, "nothing waits");
    assert_eq!(clock.elapsed(), secs(7));
}

#[test]
fn the_deadline_form_reads_the_test_clock() {
    let clock = TestClock::new();
    clock.advance(secs(100));
    let woken = Arc::new(Mutex::new(Vec::new()));
    let waker = Waker::from(Arc::new(Named("until", woken.clone())));
    let _entered = clock.enter();
    let mut fut = Box::pin(timeout_async!(
        until = clock.now() + secs(5),
        pending::<()>()
    ));
    assert!(poll_with(fut.as_mut(), &waker).is_pending());
    clock.advance(secs(4));
    assert!(poll_with(fut.as_mut(), &waker).is_pending());
    clock.advance(secs(1));
    let Poll::Ready(Err(err)) = poll_with(fut.as_mut(), &waker) else {
        panic!("the deadline passed on the test clock");
    };
    assert!(err.is_deadline(), "{err}");
    assert_eq!(err.duration(), Some(secs(5)));
}

#[test]
fn a_timeout_started_where_no_clock_is_entered_keeps_real_time() {
    let clock = TestClock::new();
    let waker = Waker::from(Arc::new(Named("real", Default::default())));
    let mut real = hang(30);
    assert!(poll_with(real.as_mut(), &waker).is_pending());
    // Entered after it started: it keeps the real clock.
    let _entered = clock.enter();
    clock.advance(secs(3600));
    assert!(poll_with(real.as_mut(), &waker).is_pending());
    assert_eq!(clock.waiting(), 0, "it never waited on the test clock");
}

#[test]
fn a_dropped_timeout_leaves_the_clock() {
    let clock = TestClock::new();
    let waker = Waker::from(Arc::new(Named("drop", Default::default())));
    let _entered = clock.enter();
    let mut fut = hang(5);
    assert!(poll_with(fut.as_mut(), &waker).is_pending());
    assert_eq!(clock.waiting(), 1);
    drop(fut);
    assert_eq!(clock.waiting(), 0);
}

#[test]
fn a_started_timeout_keeps_its_clock_on_another_thread() {
    let clock = TestClock::new();
    let mut fut = hang(10);
    {
        let _entered = clock.enter();
        let waker = Waker::from(Arc::new(Named("here", Default::default())));
        assert!(poll_with(fut.as_mut(), &waker).is_pending());
    }
    assert_eq!(clock.waiting(), 1, "it waits on the clock it started under");
    clock.advance(secs(10));
    // Polled next on a thread where no clock is entered.
    let ended = std::thread::spawn(move || {
        let waker = Waker::from(Arc::new(Named("other", Default::default())));
        matches!(poll_with(fut.as_mut(), &waker), Poll::Ready(Err(_)))
    })
    .join()
    .unwrap();
    assert!(ended);
}

#[test]
fn a_bound_future_takes_its_clock_to_the_thread_that_polls_it() {
    let clock = TestClock::new();
    // Made here, first polled on another thread: `bind` enters the clock
    // there, around each poll.
    let mut fut = Box::pin(clock.bind(hang(10)));
    let (pending, mut fut) = std::thread::spawn(move || {
        let waker = Waker::from(Arc::new(Named("other", Default::default())));
        (poll_with(fut.as_mut(), &waker).is_pending(), fut)
    })
    .join()
    .unwrap();
    assert!(pending);
    assert_eq!(clock.waiting(), 1);
    clock.advance(secs(10));
    let waker = Waker::from(Arc::new(Named("here", Default::default())));
    assert!(matches!(
        poll_with(fut.as_mut(), &waker),
        Poll::Ready(Err(_))
    ));
}

#[test]
fn tests_on_other_threads_do_not_see_each_others_clock() {
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let threads: Vec<_> = [1u64, 2]
        .into_iter()
        .map(|n| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let clock = TestClock::new();
                let _entered = clock.enter();
                let waker = Waker::from(Arc::new(Named("t", Default::default())));
                let mut fut = hang(10);
                assert!(poll_with(fut.as_mut(), &waker).is_pending());
                barrier.wait();
                // Thread 1 moves its clock past the deadline; thread 2 not.
                if n == 1 {
                    clock.advance(secs(60));
                }
                barrier.wait();
                (n, poll_with(fut.as_mut(), &waker).is_ready())
            })
        })
        .collect();
    let mut results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    results.sort();
    assert_eq!(results, [(1, true), (2, false)]);
}

#[test]
fn guards_nest_and_restore_the_clock_before() {
    let outer = TestClock::new();
    let inner = TestClock::new();
    let waker = Waker::from(Arc::new(Named("nest", Default::default())));
    let _o = outer.enter();
    let (mut a, mut b) = (hang(1), hang(1));
    {
        let _i = inner.enter();
        assert!(poll_with(a.as_mut(), &waker).is_pending());
    }
    assert!(poll_with(b.as_mut(), &waker).is_pending());
    assert_eq!((inner.waiting(), outer.waiting()), (1, 1));
}

#[test]
fn guards_dropped_out_of_order_leave_the_latest_live_guards_clock_in_force() {
    let (first, second) = (TestClock::new(), TestClock::new());
    let waker = Waker::from(Arc::new(Named("order", Default::default())));
    let entered_first = first.enter();
    let entered_second = second.enter();
    drop(entered_first);
    // The later guard lives on: its clock stays in force.
    let mut a = hang(1);
    assert!(poll_with(a.as_mut(), &waker).is_pending());
    assert_eq!((first.waiting(), second.waiting()), (0, 1));
    drop(entered_second);
    // Both gone: real time, not the first clock back.
    let mut b = hang(1);
    assert!(poll_with(b.as_mut(), &waker).is_pending());
    assert_eq!((first.waiting(), second.waiting()), (0, 1));
}

#[test]
fn a_waker_that_advances_the_clock_again_does_not_deadlock() {
    // Wakers run after the clock's lock is let go: one may call back in.
    struct Again(TestClock, Arc<AtomicUsize>);
    impl Wake for Again {
        fn wake(self: Arc<Self>) {
            self.1.fetch_add(1, SeqCst);
            self.0.advance(secs(1));
            let _ = self.0.waiting();
        }
    }
    let clock = TestClock::new();
    let count = Arc::new(AtomicUsize::new(0));
    let waker = Waker::from(Arc::new(Again(clock.clone(), count.clone())));
    let _entered = clock.enter();
    let mut futs: Vec<_> = (1..=3).map(hang).collect();
    for f in &mut futs {
        assert!(poll_with(f.as_mut(), &waker).is_pending());
    }
    clock.advance(secs(1));
    // The first wake moves the clock on to the second deadline, and so on.
    assert_eq!(count.load(SeqCst), 3);
    assert_eq!(clock.waiting(), 0);
}

#[test]
fn auto_advance_ends_an_hour_long_timeout_at_once_in_deadline_order() {
    let clock = TestClock::auto_advancing();
    let start = Instant::now();
    let (first, second) = futures::executor::block_on(clock.bind(async {
        let first = async {
            let e = timeout_async!(20, pending::<()>()).await.unwrap_err();
            (e.duration(), Instant::now())
        };
        let second = async {
            let e = timeout_async!(3600, pending::<()>()).await.unwrap_err();
            (e.duration(), Instant::now())
        };
        futures::join!(first, second)
    }));
    assert_eq!(first.0, Some(secs(20)));
    assert_eq!(second.0, Some(secs(3600)));
    assert!(first.1 <= second.1, "the earlier deadline fired first");
    assert_eq!(
        clock.elapsed(),
        secs(3600),
        "it stopped at the last deadline"
    );
    assert!(
        start.elapsed() < secs(20),
        "an hour of test time took {:?} of real time",
        start.elapsed()
    );
}

#[test]
fn auto_advance_lets_a_future_that_finishes_in_time_finish() {
    let clock = TestClock::auto_advancing();
    let out = futures::executor::block_on(clock.bind(async {
        // Ready after 200 polls that each take 200 µs of real time (40 ms
        // in all, forty times the clock's settle time): the clock must not
        // move while the timeout is polled, nor between the polls.
        let mut left = 200;
        let busy = std::future::poll_fn(move |cx| {
            std::thread::sleep(Duration::from_micros(200));
            if left == 0 {
                return Poll::Ready(7);
            }
            left -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        });
        timeout_async!(30, busy).await
    }));
    assert_eq!(out, Ok(7));
    assert_eq!(clock.elapsed(), Duration::ZERO);
}

/// Waits, in real time (20 s at most), until `woken` holds `name`.
fn wait_for_wake(woken: &Mutex<Vec<&'static str>>, name: &str) {
    let start = Instant::now();
    while !woken.lock().unwrap().contains(&name) {
        assert!(
            start.elapsed() < secs(20),
            "{name} was not woken: the clock stopped advancing"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A future that wakes its task and pends at each of its first `pends`
/// polls (a yield, a busy loop), then is ready with `value`; and a count of
/// its polls.
fn wakes_then_ready<T>(pends: usize, value: T) -> (impl Future<Output = T>, Arc<AtomicUsize>) {
    let polls = Arc::new(AtomicUsize::new(0));
    let counted = polls.clone();
    let mut value = Some(value);
    let fut = std::future::poll_fn(move |cx| {
        if counted.fetch_add(1, SeqCst) == pends {
            return Poll::Ready(value.take().expect("polled after it was ready"));
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    });
    (fut, polls)
}

#[test]
fn auto_advance_waits_for_a_woken_timeout_to_be_polled_before_moving_on() {
    let clock = TestClock::auto_advancing();
    // Long enough that the test thread, between polling one timeout and
    // starting the next, does not look idle even on a loaded machine.
    clock.set_settle(Some(Duration::from_millis(50)));
    let woken = Arc::new(Mutex::new(Vec::new()));
    let waker = |name| Waker::from(Arc::new(Named(name, woken.clone())));
    let (first_waker, second_waker, third_waker) = (waker("10s"), waker("20s"), waker("+5s"));
    let entered = clock.enter();
    let (mut first, mut second) = (hang(10), hang(20));
    assert!(poll_with(first.as_mut(), &first_waker).is_pending());
    assert!(poll_with(second.as_mut(), &second_waker).is_pending());
    drop(entered);

    // The first deadline fires; its task is slow to run (ten settles of
    // real time): the clock stays where it woke it.
    wait_for_wake(&woken, "10s");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(*woken.lock().unwrap(), ["10s"]);
    assert_eq!(clock.elapsed(), secs(10), "moved on before its task ran");

    // The task runs: its timeout ended at its deadline, and the timeout it
    // starts next counts from there, so it comes before the 20 s one.
    let Poll::Ready(Err(err)) = poll_with(first.as_mut(), &first_waker) else {
        panic!("the first timeout did not end at its deadline");
    };
    assert!(err.is_elapsed());
    let entered = clock.enter();
    let mut third = hang(5);
    assert!(poll_with(third.as_mut(), &third_waker).is_pending());
    drop(entered);
    wait_for_wake(&woken, "20s");
    assert_eq!(*woken.lock().unwrap(), ["10s", "+5s", "20s"]);
    assert_eq!(clock.elapsed(), secs(20));
}

#[test]
fn auto_advance_waits_for_a_future_that_woke_its_task_to_be_polled_again() {
    let clock = TestClock::auto_advancing();
    // Long enough that the clock does not move between the first poll and
    // the next, which it cannot see (below), even on a loaded machine.
    clock.set_settle(Some(Duration::from_millis(50)));
    // Wakes its task at every poll, and is done at the fifth (the
    // timeout's first poll polls it twice, see the next test).
    let (busy, polls) = wakes_then_ready(4, 7);
    let entered = clock.enter();
    let mut fut = Box::pin(timeout_async!(30, busy));
    assert!(poll_with(fut.as_mut(), Waker::noop()).is_pending());
    drop(entered);
    assert_eq!(clock.waiting(), 1);
    for _ in 0..2 {
        assert!(poll_with(fut.as_mut(), Waker::noop()).is_pending());
        // Woken, and its task slow to run: ten settles of real time.
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            clock.elapsed(),
            Duration::ZERO,
            "moved on while the task was to poll its future again (after poll {})",
            polls.load(SeqCst)
        );
    }
    assert_eq!(poll_with(fut.as_mut(), Waker::noop()), Poll::Ready(Ok(7)));
}

#[test]
fn auto_advance_waits_for_a_future_that_woke_its_task_at_its_first_poll() {
    // The usual settle: a future that yields as it starts, in a task that
    // then waits far longer than that for its turn.
    let clock = TestClock::auto_advancing();
    // Wakes its task at each of its first two polls; done at the third.
    let (yields, polls) = wakes_then_ready(2, 7);
    let entered = clock.enter();
    let mut fut = Box::pin(timeout_async!(30, yields));
    assert!(poll_with(fut.as_mut(), Waker::noop()).is_pending());
    drop(entered);
    assert_eq!(clock.waiting(), 1);
    // The timeout learnt its clock at that poll, and polled its future once
    // more at once, where the clock saw the wake.
    assert_eq!(polls.load(SeqCst), 2);
    // Its task slow to run: five hundred settles of real time.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        clock.elapsed(),
        Duration::ZERO,
        "moved on while the task was to poll its future again"
    );
    assert_eq!(poll_with(fut.as_mut(), Waker::noop()), Poll::Ready(Ok(7)));
}

#[test]
fn auto_advance_waits_for_a_poll_longer_than_a_second_that_waits_on_nothing_of_its_clock() {
    let clock = TestClock::auto_advancing();
    let out = futures::executor::block_on(clock.bind(async {
        // Pends once (its timeout starts), then works for 1.5 s of real
        // time in one poll, with an inner timeout done before that work.
        let mut started = false;
        let slow = std::future::poll_fn(move |cx| {
            if !std::mem::replace(&mut started, true) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let (yields_once, _) = wakes_then_ready(1, 5);
            let inner = park_on(timeout_async!(10, yields_once));
            std::thread::sleep(Duration::from_millis(1_500));
            Poll::Ready(inner)
        });
        timeout_async!(30, slow).await
    }));
    assert_eq!(out, Ok(Ok(5)));
    assert_eq!(clock.elapsed(), Duration::ZERO);
}

#[test]
fn auto_advance_moves_on_from_a_poll_that_blocks_on_a_timeout_of_its_own_clock() {
    common::capture_logs();
    let clock = TestClock::auto_advancing();
    // Polled again once its timeout has started (it yields first), the
    // future then blocks its thread on a timeout of the same clock, as a
    // nested `block_on` does: the outer timeout's poll does not return
    // until the clock reaches the inner one's deadline.
    let (yields_once, _) = wakes_then_ready(1, ());
    let blocks = clock.bind(timeout_async!(60, async move {
        yields_once.await;
        park_on(timeout_async!(10, pending::<()>()))
    }));
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(futures::executor::block_on(blocks));
    });
    let ended = finished
        .recv_timeout(secs(30))
        .expect("the clock stood still while a poll blocked on it");
    let inner = ended.expect("the outer timeout did not fire");
    assert!(inner.unwrap_err().is_elapsed());
    assert_eq!(clock.elapsed(), secs(10));
    assert!(
        common::captured_logs()
            .iter()
            .any(|line| line.starts_with("WARN") && line.contains("a timeout's poll")),
        "no warning about the poll it moved on from"
    );
}

#[test]
fn a_timeout_on_a_clock_moved_by_hand_polls_its_future_once_per_poll() {
    let clock = TestClock::new();
    let polls = Arc::new(AtomicUsize::new(0));
    let counted = polls.clone();
    let pends = std::future::poll_fn(move |_| {
        counted.fetch_add(1, SeqCst);
        Poll::<()>::Pending
    });
    let entered = clock.enter();
    let mut fut = Box::pin(timeout_async!(30, pends));
    assert!(poll_with(fut.as_mut(), Waker::noop()).is_pending());
    drop(entered);
    assert_eq!(clock.waiting(), 1);
    // No second look: such a clock moves only when told, whatever wakes.
    assert_eq!(polls.load(SeqCst), 1);
}

#[test]
fn auto_advance_moves_on_from_timeouts_past_their_deadline_that_are_never_polled() {
    common::capture_logs();
    let clock = TestClock::auto_advancing();
    let woken = Arc::new(Mutex::new(Vec::new()));
    let entered = clock.enter();
    // Two timeouts polled once and then kept, never polled again: the
    // clock cannot wait for them for ever.
    let mut kept = [hang(7), hang(7)];
    for fut in &mut kept {
        assert!(poll_with(fut.as_mut(), Waker::noop()).is_pending());
    }
    let mut later = hang(30);
    let later_waker = Waker::from(Arc::new(Named("30s", woken.clone())));
    assert!(poll_with(later.as_mut(), &later_waker).is_pending());
    drop(entered);

    wait_for_wake(&woken, "30s");
    assert_eq!(clock.elapsed(), secs(30));
    let said = common::captured_logs()
        .into_iter()
        .filter(|line| line.contains("test clock moved on"))
        .collect::<Vec<_>>();
    assert!(
        said.iter()
            .any(|line| line.starts_with("WARN") && line.contains("with 2 timeout(s)")),
        "no warning naming the two: {said:?}"
    );
    // Polled at last, they end at their deadline all the same.
    for fut in &mut kept {
        let Poll::Ready(Err(err)) = poll_with(fut.as_mut(), Waker::noop()) else {
            panic!("a kept timeout did not end");
        };
        assert!(err.is_elapsed());
    }
}

#[test]
fn a_bound_future_enters_its_clock_on_every_poll() {
    let clock = TestClock::new();
    let mut fut = pin!(clock.bind(async { timeout_async!(5, pending::<()>()).await }));
    let waker = Waker::from(Arc::new(Named("bound", Default::default())));
    assert!(poll_with(fut.as_mut(), &waker).is_pending());
    assert_eq!(clock.waiting(), 1);
    clock.advance(secs(5));
    assert!(matches!(
        poll_with(fut.as_mut(), &waker),
        Poll::Ready(Err(_))
    ));
}

#[test]
fn a_panicking_waker_does_not_keep_the_others_asleep() {
    let clock = TestClock::new();
    let woken = Arc::new(Mutex::new(Vec::new()));
    let _entered = clock.enter();
    let (mut bad, mut good) = (hang(1), hang(2));
    assert!(poll_with(bad.as_mut(), &Waker::from(Arc::new(PanickingWaker))).is_pending());
    let waker = Waker::from(Arc::new(Named("good", woken.clone())));
    assert!(poll_with(good.as_mut(), &waker).is_pending());
    // The test's own call: the panic reaches it, after every wake.
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        clock.advance(secs(5));
    }));
    assert!(caught.is_err());
    assert_eq!(*woken.lock().unwrap(), ["good"]);
    assert_eq!(clock.elapsed(), secs(5));
}

#[test]
fn a_panicking_waker_does_not_stop_auto_advance() {
    let clock = TestClock::auto_advancing();
    let _entered = clock.enter();
    let mut bad = hang(1);
    assert!(poll_with(bad.as_mut(), &Waker::from(Arc::new(PanickingWaker))).is_pending());
    drop(_entered);
    // Woken (and panicking) on the clock's own thread; then the next one,
    // within a real-time bound should the clock's thread have died.
    let next = clock.bind(hang(10));
    let watchdog = futures_timer::Delay::new(secs(20));
    let out = match futures::executor::block_on(futures::future::select(next, watchdog)) {
        futures::future::Either::Left((out, _)) => out,
        futures::future::Either::Right(_) => panic!("the clock stopped advancing"),
    };
    assert!(out.unwrap_err().is_elapsed());
    // 10 s on from where the clock stood when `next` started: before the
    // panicking wake at 1 s, or (a loaded machine) after it.
    let elapsed = clock.elapsed();
    assert!(
        elapsed == secs(10) || elapsed == secs(11),
        "ended at {elapsed:?}"
    );
}

#[test]
fn dropping_every_handle_of_a_clock_moved_by_hand_ends_its_timeouts_with_an_error() {
    let clock = TestClock::new();
    let woken = Arc::new(Mutex::new(Vec::new()));
    let waker = Waker::from(Arc::new(Named("left", woken.clone())));
    let mut fut = hang(30);
    {
        let _entered = clock.enter();
        assert!(poll_with(fut.as_mut(), &waker).is_pending());
    }
    let other_handle = clock.clone();
    drop(clock);
    assert!(
        woken.lock().unwrap().is_empty(),
        "a handle is left, which can still move the clock"
    );
    assert!(poll_with(fut.as_mut(), &waker).is_pending());
    drop(other_handle);
    assert_eq!(
        *woken.lock().unwrap(),
        ["left"],
        "woken when the last handle went"
    );
    let Poll::Ready(Err(err)) = poll_with(fut.as_mut(), &waker) else {
        panic!("a timeout on a clock that no one can move still waits");
    };
    assert!(err.is_no_timer(), "{err}");
    assert!(!err.is_elapsed(), "its deadline never came: {err}");
    assert_eq!(err.duration(), Some(secs(30)));
    assert!(err.to_string().contains("test clock"), "{err}");
}

#[test]
fn auto_advance_goes_on_with_every_handle_of_its_clock_dropped() {
    let clock = TestClock::auto_advancing();
    let fut = clock.bind(hang(30));
    drop(clock);
    let watchdog = futures_timer::Delay::new(secs(20));
    let out = match futures::executor::block_on(futures::future::select(fut, watchdog)) {
        futures::future::Either::Left((out, _)) => out,
        futures::future::Either::Right(_) => panic!("the clock stopped advancing"),
    };
    assert!(out.unwrap_err().is_elapsed());
}

#[test]
fn a_clock_moved_without_end_stops_where_it_can_still_be_read() {
    let clock = TestClock::new();
    let _entered = clock.enter();
    let mut year = hang(365 * 24 * 3600);
    assert!(poll_with(year.as_mut(), Waker::noop()).is_pending());
    // "Run every deadline": past what an `Instant` can hold.
    clock.advance(Duration::MAX);
    let Poll::Ready(Err(err)) = poll_with(year.as_mut(), Waker::noop()) else {
        panic!("a deadline a year on did not come");
    };
    assert!(err.is_elapsed(), "{err}");
    // The clock reads, far on.
    let far = Duration::from_secs(100_000_000 * 365 * 24 * 3600);
    assert!(clock.elapsed() >= far, "{:?}", clock.elapsed());
    assert!(clock.now() >= Instant::now() + far);
    // A timeout that starts there reads it too; its deadline lies past
    // where the clock can go, so it never comes (and waits on nothing).
    let mut later = hang(1);
    assert!(poll_with(later.as_mut(), Waker::noop()).is_pending());
    assert_eq!(clock.waiting(), 0);
    clock.advance(Duration::MAX);
    assert!(poll_with(later.as_mut(), Waker::noop()).is_pending());
}

#[test]
fn a_deadline_past_where_the_clock_can_go_never_comes_as_on_real_time() {
    let clock = TestClock::new();
    let _entered = clock.enter();
    // The real timer makes no timer for these: they never come.
    let mut never = [
        hang(u64::MAX),
        Box::pin(timeout_async!(Duration::MAX, pending::<()>())),
        Box::pin(timeout_async!(1e300, pending::<()>())),
    ];
    for fut in &mut never {
        assert!(poll_with(fut.as_mut(), Waker::noop()).is_pending());
    }
    assert_eq!(
        clock.waiting(),
        0,
        "a never-coming deadline waits on the clock"
    );
    // So nothing moves the clock to them.
    assert_eq!(clock.advance_to_next(), None);
    assert_eq!(clock.elapsed(), Duration::ZERO);
}
