//! The shared timer under hostile wakers, hooks, loggers and limits. Each
//! case that could stop the process's timer runs in a child process of its
//! own, which the parent kills if it hangs.

mod common;

use std::future::{Future, pending};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use common::{child_passes, park_on, poll_with};
use futures::executor::block_on;
use opguard::timeout_async;

const LONG: Duration = Duration::from_secs(3600);

/// The timer still keeps time: a 20 ms timeout fires in its window.
fn assert_the_timer_works() {
    let start = Instant::now();
    let out = block_on(timeout_async!(Duration::from_millis(20), pending::<()>()));
    let took = start.elapsed();
    assert!(out.is_err_and(|e| e.is_elapsed()), "did not time out");
    assert!(
        took >= Duration::from_millis(20) && took < Duration::from_secs(10),
        "{took:?}"
    );
}

/// A waker whose last drop drops the pending timeout it holds.
struct Holder(Mutex<Option<Pin<Box<dyn Future<Output = ()> + Send>>>>);
impl Wake for Holder {
    fn wake(self: Arc<Self>) {
        // Polls what it holds, as a waker that drives a future would.
        if let Some(f) = self.0.lock().unwrap().as_mut() {
            let _ = f.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        }
    }
}

#[test]
fn a_waker_that_drops_a_timeout_when_dropped_cannot_stop_the_timer() {
    if child_passes(
        "a_waker_that_drops_a_timeout_when_dropped_cannot_stop_the_timer",
        &[],
        "timer alive",
    ) {
        return;
    }
    // `x`: pending on the tick of `LONG` from now.
    let mut x = Box::pin(async {
        let _ = timeout_async!(LONG, pending::<()>()).await;
    });
    assert!(poll_with(Pin::new(&mut x), Waker::noop()).is_pending());
    // A waker whose state holds `x`.
    let waker = Waker::from(Arc::new(Holder(Mutex::new(Some(x)))));
    // `y`: the same duration, the same tick, polled with that waker.
    let mut y = Box::pin(timeout_async!(LONG, pending::<()>()));
    assert!(poll_with(Pin::new(&mut y), &waker).is_pending());
    // The tick's list now holds the only other clone of the waker: dropping
    // `y` drops that clone, which drops `x`, which leaves the same tick.
    drop(waker);
    drop(y);
    assert_the_timer_works();
    println!("timer alive");
}

#[test]
fn a_waker_whose_clone_starts_a_timeout_cannot_stop_the_timer() {
    if child_passes(
        "a_waker_whose_clone_starts_a_timeout_cannot_stop_the_timer",
        &[],
        "timer alive",
    ) {
        return;
    }
    use std::task::{RawWaker, RawWakerVTable};
    fn reenter() {
        // The same duration as the timeout being started: the same tick.
        let mut t = Box::pin(timeout_async!(LONG, pending::<()>()));
        let _ = poll_with(Pin::new(&mut t), Waker::noop());
    }
    const VTABLE: RawWakerVTable = RawWakerVTable::new(
        |p| {
            reenter();
            RawWaker::new(p, &VTABLE)
        },
        |_| {},
        |_| {},
        |_| reenter(),
    );
    // SAFETY: the vtable never reads the data pointer.
    let waker = unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) };
    let mut t = Box::pin(timeout_async!(LONG, pending::<()>()));
    assert!(poll_with(Pin::new(&mut t), &waker).is_pending());
    // A new waker for the same timeout: the old clone is dropped.
    assert!(poll_with(Pin::new(&mut t), Waker::noop()).is_pending());
    assert!(poll_with(Pin::new(&mut t), &waker).is_pending());
    drop(t);
    assert_the_timer_works();
    println!("timer alive");
}

#[test]
fn a_waker_whose_panic_payload_panics_on_drop_cannot_stop_the_timer() {
    if child_passes(
        "a_waker_whose_panic_payload_panics_on_drop_cannot_stop_the_timer",
        &[],
        "timer alive",
    ) {
        return;
    }
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("the payload's drop panics too");
        }
    }
    struct Hostile;
    impl Wake for Hostile {
        fn wake(self: Arc<Self>) {
            std::panic::panic_any(Bomb);
        }
    }
    a_timer_thread_wake_with(&Waker::from(Arc::new(Hostile)));
    println!("timer alive");
}

/// A 5 ms timeout whose waker is `hostile` fires on the timer thread; then
/// a one-hour timeout started before it is still pending, and the timer
/// still keeps time.
fn a_timer_thread_wake_with(hostile: &Waker) {
    let mut long = Box::pin(timeout_async!(LONG, pending::<()>()));
    assert!(poll_with(Pin::new(&mut long), Waker::noop()).is_pending());
    let mut short = Box::pin(timeout_async!(Duration::from_millis(5), pending::<()>()));
    assert!(poll_with(Pin::new(&mut short), hostile).is_pending());
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        poll_with(Pin::new(&mut long), Waker::noop()).is_pending(),
        "a one-hour timeout ended after 100 ms"
    );
    assert!(poll_with(Pin::new(&mut short), Waker::noop()).is_ready());
    assert_the_timer_works();
}

/// A waker that blocks futures-timer's thread (it waits for its thread to
/// be released) holds up every timer that thread serves. Timeouts whose
/// thread starts more timeouts meanwhile must not wait for it: that thread
/// fires them itself, from where their tasks run.
#[test]
fn with_the_timer_thread_blocked_a_thread_that_starts_timeouts_fires_its_due_ones() {
    if child_passes(
        "with_the_timer_thread_blocked_a_thread_that_starts_timeouts_fires_its_due_ones",
        &[],
        "fired here",
    ) {
        return;
    }
    use std::sync::Barrier;
    use std::thread::ThreadId;
    /// Blocks whoever wakes it until the test lets it go.
    struct Blocker {
        entered: Barrier,
        release: Barrier,
    }
    impl Wake for Blocker {
        fn wake(self: Arc<Self>) {
            self.entered.wait();
            self.release.wait();
        }
    }
    /// Records the thread that woke it, and starts a timeout there, as
    /// hostile code may (the timer must hold no lock of its own meanwhile).
    /// (Its panics would be contained, so it only records what it saw.)
    struct Recorder(Mutex<Option<(ThreadId, bool)>>);
    impl Wake for Recorder {
        fn wake(self: Arc<Self>) {
            let mut t = Box::pin(timeout_async!(LONG, pending::<()>()));
            let started = poll_with(Pin::new(&mut t), Waker::noop()).is_pending();
            *self.0.lock().unwrap() = Some((std::thread::current().id(), started));
        }
    }
    let blocker = Arc::new(Blocker {
        entered: Barrier::new(2),
        release: Barrier::new(2),
    });
    let mut stall = futures_timer::Delay::new(Duration::from_millis(1));
    let waker = Waker::from(blocker.clone());
    assert!(poll_with(Pin::new(&mut stall), &waker).is_pending());
    // futures-timer's thread is now inside the blocking waker.
    blocker.entered.wait();

    let recorder = Arc::new(Recorder(Mutex::new(None)));
    let waker = Waker::from(recorder.clone());
    let mut due = Box::pin(timeout_async!(Duration::from_millis(2), pending::<()>()));
    assert!(poll_with(Pin::new(&mut due), &waker).is_pending());
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        *recorder.0.lock().unwrap(),
        None,
        "woken while futures-timer's thread was blocked"
    );
    // Starting another timeout on this thread fires the due one from here.
    let mut other = Box::pin(timeout_async!(LONG, pending::<()>()));
    assert!(poll_with(Pin::new(&mut other), Waker::noop()).is_pending());
    assert_eq!(
        *recorder.0.lock().unwrap(),
        Some((std::thread::current().id(), true)),
        "the due timeout was not woken from the thread that started it, or \
         its waker could not start a timeout there"
    );
    match poll_with(Pin::new(&mut due), Waker::noop()) {
        Poll::Ready(Err(e)) => assert!(e.is_elapsed(), "{e}"),
        other => panic!("the due timeout did not end with its error: {other:?}"),
    }
    blocker.release.wait();
    drop(other);
    assert_the_timer_works();
    println!("fired here");
}

/// With futures-timer's thread unable to start (an address-space limit too
/// small for its stack), timeouts end with an error value, not a panic or a
/// hang, a second one in the same millisecond too; once the limit is lifted,
/// they work again.
#[cfg(target_os = "linux")]
#[test]
fn when_the_timer_thread_cannot_start_timeouts_fail_with_an_error_then_recover() {
    if child_passes(
        "when_the_timer_thread_cannot_start_timeouts_fail_with_an_error_then_recover",
        &[],
        "recovered",
    ) {
        return;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let vm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a valid struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_AS, &mut old), 0);
        let tight = libc::rlimit {
            // Room for a few small allocations, none for a thread's stack.
            rlim_cur: (vm_kb + 512) * 1024,
            rlim_max: old.rlim_max,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_AS, &tight), 0);
    }
    let both = block_on(futures::future::join(
        timeout_async!(label = "first", Duration::from_millis(50), pending::<()>()),
        timeout_async!(label = "second", Duration::from_millis(50), pending::<()>()),
    ));
    // SAFETY: as above; the soft limit goes back where it was.
    unsafe {
        assert_eq!(libc::setrlimit(libc::RLIMIT_AS, &old), 0);
    }
    let (first, second) = (both.0.unwrap_err(), both.1.unwrap_err());
    assert!(first.is_no_timer(), "{first}");
    assert!(second.is_no_timer(), "{second}");
    assert!(first.to_string().contains("could not keep"), "{first}");
    // The next second fails at once; after it, a fresh start succeeds.
    std::thread::sleep(Duration::from_millis(1100));
    assert_the_timer_works();
    println!("recovered");
}

/// An outer timeout whose deadline comes first reports, even when the inner
/// one's deadline falls in the same tick and the inner is polled first.
/// Timeouts this short round up to 250 µs ticks: 150 µs apart, the two
/// deadlines share one in about two runs of five, where a mistake shows.
#[test]
fn nested_timeouts_in_one_tick_report_the_earliest() {
    let (outer, inner) = (Duration::from_micros(2000), Duration::from_micros(2150));
    let mut checked = 0;
    for _ in 0..100 {
        let start = Instant::now();
        let mut first_poll = None;
        let res = block_on(async {
            let mut t = std::pin::pin!(timeout_async!(
                label = "outer",
                outer,
                timeout_async!(label = "inner", inner, pending::<()>())
            ));
            futures::future::poll_fn(|cx| {
                let polled = t.as_mut().poll(cx);
                first_poll.get_or_insert_with(|| start.elapsed());
                polled
            })
            .await
        });
        // Both start within the first poll. If it was descheduled for longer
        // than the deadlines' gap, the inner's deadline may truly have come
        // first: such a run proves nothing either way.
        if first_poll.unwrap() > (inner - outer) / 2 {
            continue;
        }
        checked += 1;
        let err = res.expect_err("the outer one fires");
        assert_eq!(err.label(), Some("outer"), "{err}");
    }
    assert!(checked >= 50, "only {checked} runs were undisturbed");
}

/// An alert hook whose own work times out, when every timeout alerts
/// (threshold 0, each in a window of its own), raises alerts inside the
/// hook: they are logged, and do not call the hook again (which would recurse
/// until the stack overflows).
#[test]
fn an_alert_hook_that_times_out_does_not_call_itself() {
    if child_passes(
        "an_alert_hook_that_times_out_does_not_call_itself",
        &[],
        "hook ran",
    ) {
        return;
    }
    use opguard::alert::{self, AlertKind, AlertPolicy};
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    // The hook's own timeouts that timed out. (Counted rather than asserted
    // inside the hook, whose panics are contained.)
    static INNER_TIMED_OUT: AtomicUsize = AtomicUsize::new(0);
    alert::set_policy(AlertKind::Timeouts, AlertPolicy::new(0, Duration::ZERO));
    alert::set_hook(|_| {
        CALLS.fetch_add(1, SeqCst);
        // Polled by hand: futures' `block_on` refuses to nest.
        let mut inner = Box::pin(timeout_async!(Duration::ZERO, pending::<()>()));
        let polled = poll_with(Pin::new(&mut inner), Waker::noop());
        if matches!(polled, Poll::Ready(Err(_))) {
            INNER_TIMED_OUT.fetch_add(1, SeqCst);
        }
    });
    let out = block_on(timeout_async!(Duration::ZERO, pending::<()>()));
    assert!(out.is_err());
    assert_eq!(CALLS.load(SeqCst), 1);
    assert_eq!(
        INNER_TIMED_OUT.load(SeqCst),
        1,
        "the hook's own timeout did not time out"
    );
    // The next one calls it again, once.
    std::thread::sleep(Duration::from_millis(1));
    let out = block_on(timeout_async!(Duration::ZERO, pending::<()>()));
    assert!(out.is_err());
    assert_eq!(CALLS.load(SeqCst), 2);
    println!("hook ran");
}

/// A value a hook holds, whose drop is user code that calls back into the
/// alert API: here it removes the hook.
struct ClearsHookOnDrop;
impl Drop for ClearsHookOnDrop {
    fn drop(&mut self) {
        opguard::alert::clear_hook();
    }
}

/// Replacing a hook drops it, and what it holds runs its `Drop`: with no lock
/// of ours held, or a `Drop` that touches the hook deadlocks on it.
#[test]
fn replacing_a_hook_whose_drop_calls_the_alert_api_does_not_deadlock() {
    if child_passes(
        "replacing_a_hook_whose_drop_calls_the_alert_api_does_not_deadlock",
        &[],
        "replaced",
    ) {
        return;
    }
    use opguard::alert;
    let held = ClearsHookOnDrop;
    alert::set_hook(move |_| {
        let _ = &held;
    });
    alert::set_hook(|_| {});
    alert::clear_hook();
    println!("replaced");
}

/// A value a hook holds, whose drop panics.
struct PanicsOnDrop;
impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("hook's value dropped");
    }
}

/// A hook that removes itself (a one-shot hook) is dropped when its call
/// ends, and what it holds may panic then: contained as the hook's own
/// panic is, so the timeout that raised the alert still gives its error.
#[test]
fn a_hook_that_removes_itself_and_panics_when_dropped_is_contained() {
    if child_passes(
        "a_hook_that_removes_itself_and_panics_when_dropped_is_contained",
        &[],
        "contained",
    ) {
        return;
    }
    use opguard::alert::{self, AlertKind, AlertPolicy};
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    alert::set_policy(AlertKind::Timeouts, AlertPolicy::new(0, Duration::ZERO));
    let held = PanicsOnDrop;
    alert::set_hook(move |_| {
        let _ = &held;
        CALLS.fetch_add(1, SeqCst);
        alert::clear_hook();
    });
    let out =
        std::panic::catch_unwind(|| block_on(timeout_async!(Duration::ZERO, pending::<()>())));
    let out = out.expect("the hook's drop panicked through the timeout");
    assert!(out.is_err_and(|e| e.is_elapsed()));
    assert_eq!(CALLS.load(SeqCst), 1);
    println!("contained");
}

/// As above, with a hook that panics too and a logger that panics on the
/// lines that say so: the hook's last handle is dropped before anything is
/// logged about it, not while the logger's panic unwinds (where its own
/// panic would abort the process). The logger's first panic comes out.
#[test]
fn a_hook_that_removes_itself_and_panics_twice_under_a_panicking_logger_does_not_abort() {
    if child_passes(
        "a_hook_that_removes_itself_and_panics_twice_under_a_panicking_logger_does_not_abort",
        &[],
        "contained",
    ) {
        return;
    }
    use opguard::alert::{self, AlertKind, AlertPolicy};
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    install(&PANICS_ON_ERRORS);
    alert::set_policy(AlertKind::Timeouts, AlertPolicy::new(0, Duration::ZERO));
    let held = PanicsOnDrop;
    alert::set_hook(move |_| {
        let _ = &held;
        CALLS.fetch_add(1, SeqCst);
        alert::clear_hook();
        panic!("the hook failed");
    });
    let out =
        std::panic::catch_unwind(|| block_on(timeout_async!(Duration::ZERO, pending::<()>())));
    let payload = out.expect_err("the logger's panic comes out");
    assert!(
        is_the_loggers(&*payload, "alert"),
        "not the logger's first panic"
    );
    assert_eq!(CALLS.load(SeqCst), 1);
    println!("contained");
}

/// A logger that, for each line of opguard's, runs a timeout of its own, as
/// one that ships its lines under `timeout_async!` would. (Its own lines
/// from inside that timeout are not shipped again.)
struct TimingLogger;

static LOGGED: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHIPPING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl log::Log for TimingLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        if record.target() != "opguard" || SHIPPING.with(|s| s.replace(true)) {
            return;
        }
        LOGGED.fetch_add(1, SeqCst);
        // Pends, so its timer starts: that reads the kill switch and the
        // default timeout. Polled by hand: the line may come from inside an
        // executor.
        let mut ship = Box::pin(timeout_async!(pending::<()>()));
        let _ = poll_with(Pin::new(&mut ship), Waker::noop());
        SHIPPING.with(|s| s.set(false));
    }

    fn flush(&self) {}
}

/// The settings read from the environment warn about values that do not
/// parse, the first time they are read, and that warning goes to the
/// logger: user code, which may start a timeout and read the same setting.
/// Nothing of ours may be held then (a `Lazy` being initialised was, and the
/// logger's read of it deadlocked).
#[test]
fn a_logger_that_runs_timeouts_can_log_the_warnings_about_bad_settings() {
    const NAME: &str = "a_logger_that_runs_timeouts_can_log_the_warnings_about_bad_settings";
    let mut parent = false;
    for bad in [
        ("OPGUARD_TIMEOUT_DISABLE", "maybe"),
        ("OPGUARD_TIMEOUT_SECS", "soon"),
    ] {
        parent |= child_passes(NAME, &[bad], "logged");
    }
    if parent {
        return;
    }
    log::set_logger(&TimingLogger).unwrap();
    log::set_max_level(log::LevelFilter::Warn);
    let mut t = Box::pin(timeout_async!(pending::<()>()));
    assert!(poll_with(Pin::new(&mut t), Waker::noop()).is_pending());
    assert!(
        LOGGED.load(SeqCst) >= 1,
        "the warning did not reach the logger"
    );
    println!("logged");
}

/// A logger that panics on opguard's lines of one level: the error lines the
/// timer logs on futures-timer's thread (a waker that panicked) must not
/// take the thread down with them, and what follows a warning or an alert's
/// line must still happen.
struct PanicsOn(log::Level);

impl log::Log for PanicsOn {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        if record.target() == "opguard" && record.level() == self.0 {
            panic!("the logger failed: {}", record.args());
        }
    }

    fn flush(&self) {}
}

static PANICS_ON_ERRORS: PanicsOn = PanicsOn(log::Level::Error);
static PANICS_ON_WARNINGS: PanicsOn = PanicsOn(log::Level::Warn);

/// Installs `logger` for the rest of this (child) process.
fn install(logger: &'static PanicsOn) {
    log::set_logger(logger).unwrap();
    log::set_max_level(log::LevelFilter::Warn);
}

/// Whether a caught panic is [`PanicsOn`]'s, on a line that starts with `line`.
fn is_the_loggers(payload: &(dyn std::any::Any + Send), line: &str) -> bool {
    payload
        .downcast_ref::<String>()
        .is_some_and(|m| m.starts_with(&format!("the logger failed: {line}")))
}

#[test]
fn a_logger_that_panics_when_a_waker_panicked_cannot_stop_the_timer() {
    if child_passes(
        "a_logger_that_panics_when_a_waker_panicked_cannot_stop_the_timer",
        &[],
        "timer alive",
    ) {
        return;
    }
    install(&PANICS_ON_ERRORS);
    struct Panics;
    impl Wake for Panics {
        fn wake(self: Arc<Self>) {
            panic!("the waker failed");
        }
    }
    // Its waker panics on the timer thread, and so does the logger told
    // about it.
    a_timer_thread_wake_with(&Waker::from(Arc::new(Panics)));
    println!("timer alive");
}

/// The logger's panic comes out of the poll in which the timeout fired,
/// before the error does. Polled again (an executor that survives a task's
/// panic), the timeout must not go on as if it had no deadline: it had
/// left the timer, so its inner future ran on with nothing to end it.
#[test]
fn a_timeout_whose_warning_panics_in_the_logger_does_not_run_on_without_a_deadline() {
    if child_passes(
        "a_timeout_whose_warning_panics_in_the_logger_does_not_run_on_without_a_deadline",
        &[],
        "ended",
    ) {
        return;
    }
    install(&PANICS_ON_WARNINGS);
    let mut t = Box::pin(timeout_async!(Duration::ZERO, pending::<()>()));
    is_over_after_the_loggers_panic(t.as_mut());
    println!("ended");
}

/// Polls `t`, whose end the logger panics on: that panic comes out of the
/// poll. Polled again, `t` panics as a timeout polled after it ended does,
/// rather than wait on with no timer or report its end again.
fn is_over_after_the_loggers_panic<F: Future>(mut t: Pin<&mut F>)
where
    F::Output: std::fmt::Debug,
{
    use std::panic::{AssertUnwindSafe, catch_unwind};
    let first = catch_unwind(AssertUnwindSafe(|| poll_with(t.as_mut(), Waker::noop())));
    let payload = first.expect_err("the logger's panic comes out of the poll");
    assert!(is_the_loggers(&*payload, ""), "not the logger's panic");
    let again = catch_unwind(AssertUnwindSafe(|| poll_with(t.as_mut(), Waker::noop())));
    match again {
        Ok(polled) => panic!("polled again, it went on: {polled:?}"),
        Err(payload) => assert!(
            payload
                .downcast_ref::<&str>()
                .is_some_and(|m| m.contains("polled after it timed out")),
            "another panic"
        ),
    }
}

/// As above, for an invalid timeout: polled again, it is not reported (and
/// counted) a second time.
#[test]
fn an_invalid_timeout_whose_warning_panics_in_the_logger_is_reported_once() {
    if child_passes(
        "an_invalid_timeout_whose_warning_panics_in_the_logger_is_reported_once",
        &[],
        "once",
    ) {
        return;
    }
    install(&PANICS_ON_WARNINGS);
    let mut t = Box::pin(timeout_async!(-1, pending::<()>()));
    is_over_after_the_loggers_panic(t.as_mut());
    assert_eq!(opguard::timeouts::stats().invalid, 1);
    println!("once");
}

/// A timeout that alerts (threshold 0) timed out while `logger` panics on
/// opguard's lines of its level: the logger's panic comes out of the poll, and
/// the alert hook has been called all the same (the alert fires once per
/// window: a panicking logger in front of it would lose it). Test `name`
/// runs it in a child of its own, which installs the logger.
fn the_alert_hook_is_called_though_the_logger_panics_on(name: &str, logger: &'static PanicsOn) {
    if child_passes(name, &[], "hook called") {
        return;
    }
    use opguard::alert::{self, AlertKind, AlertPolicy};
    use std::panic::{AssertUnwindSafe, catch_unwind};
    install(logger);
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    alert::set_policy(AlertKind::Timeouts, AlertPolicy::new(0, LONG));
    alert::set_hook(|_| {
        CALLS.fetch_add(1, SeqCst);
    });
    let mut t = Box::pin(timeout_async!(Duration::ZERO, pending::<()>()));
    let polled = catch_unwind(AssertUnwindSafe(|| {
        poll_with(Pin::new(&mut t), Waker::noop())
    }));
    let payload = polled.expect_err("the logger's panic comes out of the poll");
    assert!(is_the_loggers(&*payload, ""), "not the logger's panic");
    assert_eq!(opguard::timeouts::stats().timeouts, 1, "not counted");
    assert_eq!(CALLS.load(SeqCst), 1, "the alert hook was not called");
    println!("hook called");
}

/// The logger panics on the timeout's warning, before the alert is counted.
#[test]
fn a_logger_that_panics_on_a_timeouts_warning_does_not_keep_its_alert_from_the_hook() {
    the_alert_hook_is_called_though_the_logger_panics_on(
        "a_logger_that_panics_on_a_timeouts_warning_does_not_keep_its_alert_from_the_hook",
        &PANICS_ON_WARNINGS,
    );
}

/// The logger panics on the alert's own line, before the hook is called.
#[test]
fn a_logger_that_panics_on_an_alerts_line_does_not_keep_it_from_the_hook() {
    the_alert_hook_is_called_though_the_logger_panics_on(
        "a_logger_that_panics_on_an_alerts_line_does_not_keep_it_from_the_hook",
        &PANICS_ON_ERRORS,
    );
}

#[test]
fn a_timeout_polled_again_after_its_new_wakers_clone_panicked_wakes_that_waker() {
    use std::sync::atomic::AtomicBool;
    use std::task::{RawWaker, RawWakerVTable};
    // A waker whose first clone panics, and whose wake-ups are counted in
    // the counter its data points to (one per try below).
    static PANICKED: AtomicBool = AtomicBool::new(false);
    static WOKEN: [AtomicUsize; 3] = [const { AtomicUsize::new(0) }; 3];
    fn count_wake(p: *const ()) {
        // SAFETY: the data is always one of the `WOKEN` statics.
        unsafe { &*p.cast::<AtomicUsize>() }.fetch_add(1, SeqCst);
    }
    const VTABLE: RawWakerVTable = RawWakerVTable::new(
        |p| {
            if !PANICKED.swap(true, SeqCst) {
                panic!("the waker's clone panics, once");
            }
            RawWaker::new(p, &VTABLE)
        },
        count_wake,
        count_wake,
        |_| {},
    );
    // Long enough that the panic's report is over well before it; should
    // it not be (a backtrace symbolized on a loaded machine), the timeout
    // is tried again, longer.
    for (after, woken) in [1, 4, 16].map(Duration::from_secs).iter().zip(&WOKEN) {
        PANICKED.store(false, SeqCst);
        let data = std::ptr::from_ref(woken).cast::<()>();
        // SAFETY: the vtable reads the data as the `AtomicUsize` it is.
        let hostile = unsafe { Waker::from_raw(RawWaker::new(data, &VTABLE)) };
        let start = Instant::now();
        let mut t = Box::pin(timeout_async!(*after, pending::<()>()));
        // Registered with a first waker.
        assert!(poll_with(Pin::new(&mut t), Waker::noop()).is_pending());
        // Polled with the hostile waker: its clone panics, out of the poll.
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            poll_with(Pin::new(&mut t), &hostile)
        }));
        assert!(unwound.is_err(), "the clone's panic comes out of the poll");
        // Polled with it again, as a task that survives the panic is: its
        // clone works now, and it is the waker the deadline must wake.
        let again = poll_with(Pin::new(&mut t), &hostile);
        if start.elapsed() >= *after {
            // The panic took longer than the timeout: try a longer one.
            continue;
        }
        assert!(again.is_pending(), "{again:?}");
        while woken.load(SeqCst) == 0 && start.elapsed() < *after + Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let woken_after = start.elapsed();
        assert!(
            woken.load(SeqCst) == 1,
            "the waker of the last poll was not woken at the deadline ({woken_after:?})"
        );
        assert!(woken_after >= *after, "woken early: {woken_after:?}");
        let out = poll_with(Pin::new(&mut t), &hostile);
        assert!(matches!(out, Poll::Ready(Err(ref e)) if e.is_elapsed()));
        return;
    }
    panic!("the waker's panic took longer than a 16 s timeout");
}

/// Wakers whose data is a slot number, each slot naming the flag it sets;
/// a clone takes a fresh slot, and a dropped waker's slot is taken by the
/// next waker made. So a waker made after another is dropped can have the
/// dropped one's data and vtable, and wake something else: `Waker`'s
/// contract only asks that wakers alive at the same time with the same
/// data and vtable wake the same task.
mod slot_wakers {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    use std::task::{RawWaker, RawWakerVTable, Waker};

    static SLOTS: Mutex<Vec<Option<&'static AtomicBool>>> = Mutex::new(Vec::new());

    fn take_slot(flag: &'static AtomicBool) -> *const () {
        let mut slots = SLOTS.lock().unwrap();
        let at = match slots.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                slots.push(None);
                slots.len() - 1
            }
        };
        slots[at] = Some(flag);
        // The slot's number is the data: never read as a pointer.
        std::ptr::without_provenance(at)
    }

    fn flag(data: *const ()) -> &'static AtomicBool {
        SLOTS.lock().unwrap()[data.addr()].expect("a live waker's slot")
    }

    fn free(data: *const ()) {
        SLOTS.lock().unwrap()[data.addr()] = None;
    }

    const VTABLE: RawWakerVTable = RawWakerVTable::new(
        |data| RawWaker::new(take_slot(flag(data)), &VTABLE),
        |data| {
            flag(data).store(true, SeqCst);
            free(data);
        },
        |data| flag(data).store(true, SeqCst),
        free,
    );

    /// A waker that sets `flag` when woken, in the first free slot.
    pub fn new(flag: &'static AtomicBool) -> Waker {
        // SAFETY: the vtable's functions take the data for a slot number,
        // and a waker frees its slot only when it is dropped or woken.
        unsafe { Waker::from_raw(RawWaker::new(take_slot(flag), &VTABLE)) }
    }
}

#[test]
fn a_timeout_polled_with_a_new_waker_that_has_a_dropped_ones_data_wakes_the_new_one() {
    use std::sync::atomic::AtomicBool;
    static FIRST: AtomicBool = AtomicBool::new(false);
    static SECOND: AtomicBool = AtomicBool::new(false);
    const AFTER: Duration = Duration::from_millis(50);
    let start = Instant::now();
    let mut t = Box::pin(timeout_async!(AFTER, pending::<()>()));
    // Registered through the first waker (the timer keeps a clone of it,
    // in a slot of its own).
    let first = slot_wakers::new(&FIRST);
    assert!(poll_with(Pin::new(&mut t), &first).is_pending());
    // The task moves on: its waker goes, and the next waker made (another
    // task's) has the same data and vtable.
    drop(first);
    let second = slot_wakers::new(&SECOND);
    assert!(poll_with(Pin::new(&mut t), &second).is_pending());
    // The deadline must wake the waker of the last poll.
    while !SECOND.load(SeqCst) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let woken_after = start.elapsed();
    assert!(
        SECOND.load(SeqCst),
        "the waker of the last poll was not woken at the deadline (the first was: {})",
        FIRST.load(SeqCst)
    );
    assert!(woken_after >= AFTER, "woken early: {woken_after:?}");
    let out = poll_with(Pin::new(&mut t), &second);
    assert!(matches!(out, Poll::Ready(Err(ref e)) if e.is_elapsed()));
}

/// Pends once, waking itself at once.
struct YieldOnce(bool);
impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if std::mem::replace(&mut self.0, true) {
            return Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// A timeout whose deadline came while an enclosing one's had come first
/// lets the enclosing one report, by pending once; but inside an executor
/// of its own (a `block_on` in the enclosing one's future), the enclosing
/// one cannot take over until that executor returns, which it only does
/// once the inner timeout ends.
#[test]
fn a_timeout_in_a_nested_block_on_past_an_enclosing_deadline_ends() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let start = Instant::now();
        let (_, outer) = block_on(async {
            // The blocker is polled first: on the second round it holds the
            // thread past the outer deadline, so that the outer timeout,
            // polled after it, finds its deadline passed and polls its future
            // with the deadline known.
            let blocker = async {
                YieldOnce(false).await;
                std::thread::sleep(Duration::from_millis(60));
            };
            let outer = timeout_async!(label = "outer", Duration::from_millis(20), async {
                YieldOnce(false).await;
                // A synchronous call that runs a timeout of its own, as
                // library code may.
                park_on(timeout_async!(
                    label = "nested",
                    Duration::ZERO,
                    pending::<()>()
                ))
            });
            futures::join!(blocker, outer)
        });
        let _ = done.send((outer, start.elapsed()));
    });
    let (outer, took) = finished
        .recv_timeout(Duration::from_secs(10))
        .expect("the nested timeout never ended: its block_on spins");
    // The nested one ends with its error, and the outer future with its
    // output, which came at the same poll.
    let nested = outer.expect("the outer future finished").unwrap_err();
    assert_eq!(nested.label(), Some("nested"), "{nested}");
    assert!(took >= Duration::from_millis(60), "{took:?}");
}
