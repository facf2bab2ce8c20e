//! With the `tokio` feature, `timeout_async!` follows tokio's clock when it is
//! paused. These are the tests of tokio's own `tests/time_timeout.rs` (tokio
//! 1.x), ported unchanged but for the macro: `timeout(d, f)` became
//! `timeout_async!(d, f)` and `timeout_at(t, f)` became
//! `timeout_async!(until = t, f)`. The tests after those (from
//! `auto_advance_ends_a_long_timeout_at_once` on) are opguard's own.
#![cfg(feature = "tokio")]
#![warn(rust_2018_idioms)]

use opguard::timeout_async;
use tokio::sync::oneshot;
use tokio::time::{self, Instant};
use tokio_test::*;

use futures::future::pending;
use std::time::Duration;

#[tokio::test]
async fn simultaneous_deadline_future_completion() {
    // Create a future that is immediately ready
    let mut fut = task::spawn(timeout_async!(until = Instant::now(), async {}));

    // Ready!
    assert_ready_ok!(fut.poll());
}

#[tokio::test]
async fn completed_future_past_deadline() {
    // Wrap it with a deadline
    let mut fut = task::spawn(timeout_async!(until = Instant::now() - ms(1000), async {}));

    // Ready!
    assert_ready_ok!(fut.poll());
}

#[tokio::test]
async fn future_and_deadline_in_future() {
    time::pause();

    // Not yet complete
    let (tx, rx) = oneshot::channel();

    // Wrap it with a deadline
    let mut fut = task::spawn(timeout_async!(until = Instant::now() + ms(100), rx));

    assert_pending!(fut.poll());

    // Turn the timer, it runs for the elapsed time
    time::advance(ms(90)).await;

    assert_pending!(fut.poll());

    // Complete the future
    tx.send(()).unwrap();
    assert!(fut.is_woken());

    assert_ready_ok!(fut.poll()).unwrap();
}

#[tokio::test]
async fn future_and_timeout_in_future() {
    time::pause();

    // Not yet complete
    let (tx, rx) = oneshot::channel();

    // Wrap it with a deadline
    let mut fut = task::spawn(timeout_async!(ms(100), rx));

    // Ready!
    assert_pending!(fut.poll());

    // Turn the timer, it runs for the elapsed time
    time::advance(ms(90)).await;

    assert_pending!(fut.poll());

    // Complete the future
    tx.send(()).unwrap();

    assert_ready_ok!(fut.poll()).unwrap();
}

#[tokio::test]
async fn very_large_timeout() {
    time::pause();

    // Not yet complete
    let (tx, rx) = oneshot::channel();

    // copy-paste unstable `Duration::MAX`
    let duration_max = Duration::from_secs(u64::MAX) + Duration::from_nanos(999_999_999);

    // Wrap it with a deadline
    let mut fut = task::spawn(timeout_async!(duration_max, rx));

    // Ready!
    assert_pending!(fut.poll());

    // Turn the timer, it runs for the elapsed time
    time::advance(Duration::from_secs(86400 * 365 * 10)).await;

    assert_pending!(fut.poll());

    // Complete the future
    tx.send(()).unwrap();

    assert_ready_ok!(fut.poll()).unwrap();
}

#[tokio::test]
async fn deadline_now_elapses() {
    use futures::future::pending;

    time::pause();

    // Wrap it with a deadline
    let mut fut = task::spawn(timeout_async!(until = Instant::now(), pending::<()>()));

    // Factor in jitter
    // TODO: don't require this
    time::advance(ms(1)).await;

    assert_ready_err!(fut.poll());
}

#[tokio::test]
async fn deadline_future_elapses() {
    time::pause();

    // Wrap it with a deadline
    let mut fut = task::spawn(timeout_async!(
        until = Instant::now() + ms(300),
        pending::<()>()
    ));

    assert_pending!(fut.poll());

    time::advance(ms(301)).await;

    assert!(fut.is_woken());
    assert_ready_err!(fut.poll());
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test]
async fn timeout_is_not_exhausted_by_future() {
    let fut = timeout_async!(ms(1), async {
        let mut buffer = [0u8; 1];
        loop {
            use tokio::io::AsyncReadExt;
            let _ = tokio::io::empty().read(&mut buffer).await;
        }
    });

    assert!(fut.await.is_err());
}

// Beyond tokio's suite: what a user of the paused clock relies on.

/// `start_paused` and auto-advance: an hour-long timeout ends at once, at
/// exactly an hour of tokio's time.
#[tokio::test(start_paused = true)]
async fn auto_advance_ends_a_long_timeout_at_once() {
    let (start, real) = (Instant::now(), std::time::Instant::now());
    let err = timeout_async!(3600, pending::<()>()).await.unwrap_err();
    assert_eq!(err.duration(), Some(Duration::from_secs(3600)));
    let passed = start.elapsed();
    assert!(passed >= Duration::from_secs(3600), "early: {passed:?}");
    assert!(passed < Duration::from_secs(3601), "late: {passed:?}");
    assert!(
        real.elapsed() < Duration::from_secs(10),
        "{:?}",
        real.elapsed()
    );
}

/// Timeouts and tokio's own sleeps keep their order on the paused clock.
#[tokio::test(start_paused = true)]
async fn a_sleep_inside_finishes_before_a_longer_timeout() {
    let out = timeout_async!(10, async {
        time::sleep(Duration::from_secs(9)).await;
        "slept"
    })
    .await;
    assert_eq!(out, Ok("slept"));
    let err = timeout_async!(10, time::sleep(Duration::from_secs(11)))
        .await
        .unwrap_err();
    assert!(err.is_elapsed());
}

/// With the clock running, nothing changes: real time.
#[tokio::test]
async fn a_running_clock_is_real_time() {
    let real = std::time::Instant::now();
    let err = timeout_async!(ms(30), pending::<()>()).await.unwrap_err();
    assert!(err.is_elapsed());
    let passed = real.elapsed();
    assert!(
        passed >= ms(30) && passed < Duration::from_secs(5),
        "{passed:?}"
    );
}

/// Paused, then resumed: a timeout started while paused follows tokio's
/// clock, one started after runs on real time.
#[tokio::test]
async fn only_timeouts_started_while_paused_follow_the_paused_clock() {
    time::pause();
    let mut paused = task::spawn(timeout_async!(3600, pending::<()>()));
    assert_pending!(paused.poll());
    time::resume();
    let real = std::time::Instant::now();
    let err = timeout_async!(ms(20), pending::<()>()).await.unwrap_err();
    assert!(err.is_elapsed());
    assert!(real.elapsed() >= ms(20));
    assert_pending!(paused.poll(), "an hour has not passed on tokio's clock");
}

/// tokio lets a runtime without timers pause its clock; its own sleeps panic
/// there. A timeout runs on real time instead.
#[test]
fn a_paused_runtime_without_timers_gets_real_time() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .start_paused(true)
        .build()
        .unwrap();
    let real = std::time::Instant::now();
    let err = rt
        .block_on(async { timeout_async!(ms(20), pending::<()>()).await })
        .unwrap_err();
    assert!(err.is_elapsed());
    let passed = real.elapsed();
    assert!(
        passed >= ms(20) && passed < Duration::from_secs(5),
        "{passed:?}"
    );
}

#[test]
fn a_timeout_outliving_its_paused_runtime_ends_with_an_error_not_a_panic() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let mut fut = Box::pin(timeout_async!(30, pending::<()>()));
    rt.block_on(async {
        assert!(futures::poll!(fut.as_mut()).is_pending());
    });
    drop(rt);
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        futures::executor::block_on(fut)
    }));
    let err = out
        .expect("polled after its runtime is gone, it panicked")
        .unwrap_err();
    assert!(err.is_no_timer(), "{err}");
    assert!(!err.is_elapsed(), "its deadline never came: {err}");
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}

#[test]
fn on_a_paused_runtime_a_wakers_panic_comes_out_of_the_poll_unchanged() {
    use std::task::{Context, RawWaker, RawWakerVTable, Waker};
    // A waker whose clone panics.
    const VTABLE: RawWakerVTable = RawWakerVTable::new(
        |_| panic!("this waker's clone panics"),
        |_| {},
        |_| {},
        |_| {},
    );
    // SAFETY: the vtable never reads the data pointer.
    let hostile = unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let _in_rt = rt.enter();
    let mut fut = Box::pin(timeout_async!(30, pending::<()>()));
    // Started on tokio's paused clock, with a waker that clones.
    let noop = &mut Context::from_waker(Waker::noop());
    assert!(fut.as_mut().poll(noop).is_pending());
    // tokio clones the new waker: its panic is the waker's, not a sign
    // that the runtime is gone, and comes out as it is.
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        fut.as_mut().poll(&mut Context::from_waker(&hostile))
    }));
    match out {
        Err(payload) => assert_eq!(
            payload.downcast_ref::<&str>(),
            Some(&"this waker's clone panics")
        ),
        Ok(polled) => panic!("the waker's panic became {polled:?}"),
    }
    // The runtime is alive, and the timeout still waits.
    assert!(fut.as_mut().poll(noop).is_pending());
}
