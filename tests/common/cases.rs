//! The behaviours of `timeout_async!`, each an async fn run on every executor.

use std::future::pending;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures_timer::Delay;
use opguard::timeout_async;

/// Far above any deadline here, even on a loaded 2-core machine.
const SLACK: Duration = Duration::from_secs(2);

fn assert_window(elapsed: Duration, deadline: Duration) {
    assert!(
        elapsed >= deadline,
        "fired early: {elapsed:?} < {deadline:?}"
    );
    assert!(
        elapsed < deadline + SLACK,
        "fired late: {elapsed:?} for {deadline:?}"
    );
}

/// Sets its flag when dropped.
struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
    }
}

pub async fn ready_at_once() {
    let mut fut = pin!(timeout_async!(1, async { 5 }));
    // Ready at the first poll: no timer stands in the way.
    assert_eq!(futures::poll!(fut.as_mut()), std::task::Poll::Ready(Ok(5)));
}

pub async fn fires_near_its_deadline() {
    let deadline = Duration::from_millis(100);
    let start = Instant::now();
    let err = timeout_async!(deadline, pending::<()>()).await.unwrap_err();
    assert_window(start.elapsed(), deadline);
    assert!(err.is_elapsed());
    assert_eq!(err.duration(), Some(deadline));
}

/// A timeout from 8 s up waits in a staging tick shared with other
/// deadlines; when that comes (0.1 to 4.2 s before the deadline) it wakes
/// the task, whose poll polls the future and moves the timeout to its own
/// tick. The future is polled once then, and the timeout ends at its
/// deadline, not at the staging tick.
pub async fn a_long_timeout_polls_its_future_at_its_staging_tick_and_ends_at_its_deadline() {
    let deadline = Duration::from_secs(8);
    let start = Instant::now();
    let mut polls = Vec::new();
    let inner = std::future::poll_fn(|_| {
        polls.push(start.elapsed());
        std::task::Poll::<()>::Pending
    });
    let err = timeout_async!(deadline, inner).await.unwrap_err();
    assert_window(start.elapsed(), deadline);
    assert!(err.is_elapsed());
    let before: Vec<_> = polls[1..].iter().filter(|&&at| at < deadline).collect();
    assert_eq!(before.len(), 1, "polls before the deadline: {polls:?}");
    assert!(
        *before[0] >= deadline - Duration::from_millis(4_224),
        "woken too early: {polls:?}"
    );
}

pub async fn finishes_in_time() {
    let start = Instant::now();
    let out = timeout_async!(5, async {
        Delay::new(Duration::from_millis(20)).await;
        7
    })
    .await;
    assert_eq!(out, Ok(7));
    assert!(start.elapsed() < Duration::from_secs(5));
}

pub async fn nested_outer_fires_first() {
    let out = timeout_async!(
        label = "outer",
        0.05,
        timeout_async!(label = "inner", 10, pending::<()>())
    )
    .await;
    let err = out.unwrap_err();
    assert_eq!(err.label(), Some("outer"));
    assert_eq!(err.duration(), Some(Duration::from_millis(50)));
}

pub async fn nested_inner_fires_first() {
    let out = timeout_async!(
        label = "outer",
        10,
        timeout_async!(label = "inner", 0.05, pending::<()>())
    )
    .await;
    let err = out.expect("the outer deadline is far").unwrap_err();
    assert_eq!(err.label(), Some("inner"));
    assert!(
        err.to_string()
            .starts_with("'inner' timed out after 50ms at tests/common/cases.rs:")
    );
}

pub async fn inner_error_passes_through() {
    let out = timeout_async!(5, async { Err::<u8, _>(io::Error::other("exchange down")) }).await;
    let inner = out.expect("no timeout").unwrap_err();
    assert_eq!(inner.to_string(), "exchange down");
}

pub async fn inner_future_dropped_on_timeout() {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(dropped.clone());
    let inner = async move {
        let _flag = flag;
        pending::<()>().await
    };
    let mut timed = pin!(timeout_async!(0.02, inner));
    let err = timed.as_mut().await.unwrap_err();
    assert!(err.is_elapsed());
    // The Timeout itself is still alive: the inner future went first.
    assert!(
        dropped.load(SeqCst),
        "inner future still alive after the timeout"
    );
}

pub async fn fractional_seconds() {
    let start = Instant::now();
    let err = timeout_async!(0.05, pending::<()>()).await.unwrap_err();
    assert_window(start.elapsed(), Duration::from_millis(50));
    assert_eq!(err.duration(), Some(Duration::from_millis(50)));
}

pub async fn bad_durations_are_errors_and_the_future_is_not_polled() {
    let polled = Arc::new(AtomicBool::new(false));
    macro_rules! check {
        ($secs:expr, $shown:literal) => {{
            let p = polled.clone();
            let err = timeout_async!($secs, async move { p.store(true, SeqCst) })
                .await
                .unwrap_err();
            assert!(err.is_invalid(), "{err}");
            assert!(err.to_string().contains($shown), "{err} lacks {}", $shown);
        }};
    }
    check!(-1, "-1 seconds is negative");
    check!(-0.5, "-0.5 seconds is negative");
    check!(f64::NAN, "NaN seconds is not a number");
    check!(f64::INFINITY, "inf seconds is infinite");
    check!(i64::MIN, "-9223372036854775808 seconds");
    assert!(!polled.load(SeqCst));
}

pub async fn huge_durations_are_long_timeouts() {
    let soon = || async {
        Delay::new(Duration::from_millis(10)).await;
        1
    };
    assert_eq!(timeout_async!(u64::MAX, soon()).await, Ok(1));
    assert_eq!(timeout_async!(Duration::MAX, soon()).await, Ok(1));
    assert_eq!(timeout_async!(1e300, soon()).await, Ok(1));
}

pub async fn zero_times_out_unless_ready_at_once() {
    assert_eq!(timeout_async!(0, async { 3 }).await, Ok(3));
    assert_eq!(timeout_async!(Duration::ZERO, async { 3 }).await, Ok(3));
    let err = timeout_async!(0, pending::<()>()).await.unwrap_err();
    assert!(err.is_elapsed());
    assert_eq!(err.duration(), Some(Duration::ZERO));
}

pub async fn default_form_passes_results_through() {
    assert_eq!(timeout_async!(async { "ok" }).await, Ok("ok"));
    let out = timeout_async!(label = "default_labelled", async {
        Delay::new(Duration::from_millis(10)).await;
        "later"
    })
    .await;
    assert_eq!(out, Ok("later"));
}

pub async fn thousands_of_concurrent_timeouts_on_one_task() {
    const N: usize = 4000;
    let resolved = Arc::new(AtomicUsize::new(0));
    let all = (0..N).map(|i| {
        let resolved = resolved.clone();
        async move {
            let out = if i % 2 == 0 {
                timeout_async!(label = "many_complete", 10, async move {
                    Delay::new(Duration::from_millis(10)).await;
                    i
                })
                .await
            } else {
                timeout_async!(label = "many_fire", 0.05, pending::<usize>()).await
            };
            resolved.fetch_add(1, SeqCst);
            (i, out)
        }
        .boxed()
    });
    let outs = futures::future::join_all(all).await;
    assert_eq!(resolved.load(SeqCst), N, "each resolves exactly once");
    for (i, out) in outs {
        match out {
            Ok(v) => assert!(i % 2 == 0 && v == i, "#{i} completed with {v}"),
            Err(e) => assert!(i % 2 == 1 && e.label() == Some("many_fire"), "#{i}: {e}"),
        }
    }
}

pub async fn a_deadline_fires_at_its_instant() {
    let start = Instant::now();
    let deadline = start + Duration::from_millis(60);
    // Shared by two calls: the second has only what is left.
    let out = timeout_async!(until = deadline, async {
        Delay::new(Duration::from_millis(10)).await;
        1
    })
    .await;
    assert_eq!(out, Ok(1));
    let err = timeout_async!(label = "until_labelled", until = deadline, pending::<()>())
        .await
        .unwrap_err();
    assert_window(start.elapsed(), Duration::from_millis(60));
    assert!(err.is_elapsed() && err.is_deadline(), "{err}");
    assert_eq!(err.label(), Some("until_labelled"));
    let had = err.duration().unwrap();
    assert!(
        had < Duration::from_millis(60),
        "it had what was left: {had:?}"
    );
    assert!(
        err.to_string()
            .starts_with("'until_labelled' timed out at its deadline (`until`), "),
        "{err}"
    );
}

pub async fn a_past_deadline_times_out_unless_ready_at_once() {
    let past = Instant::now();
    Delay::new(Duration::from_millis(2)).await;
    assert_eq!(timeout_async!(until = past, async { 3 }).await, Ok(3));
    let polled = Arc::new(AtomicUsize::new(0));
    let counted = polled.clone();
    let err = timeout_async!(until = past, async move {
        counted.fetch_add(1, SeqCst);
        pending::<()>().await
    })
    .await
    .unwrap_err();
    assert!(err.is_deadline());
    assert_eq!(err.duration(), Some(Duration::ZERO));
    assert_eq!(polled.load(SeqCst), 1, "polled once, like a zero timeout");
}

#[cfg(feature = "test-util")]
pub async fn test_clock_moves_timeouts_when_told() {
    use opguard::test_clock::TestClock;
    let clock = TestClock::new();
    let moves = clock.clone();
    clock
        .bind(async move {
            let mut fut = pin!(timeout_async!(30, pending::<()>()));
            assert!(futures::poll!(fut.as_mut()).is_pending());
            moves.advance(Duration::from_secs(29));
            assert!(futures::poll!(fut.as_mut()).is_pending());
            moves.advance(Duration::from_secs(1));
            // The task is woken as by a real deadline: the await finishes.
            let err = fut.await.unwrap_err();
            assert_eq!(err.duration(), Some(Duration::from_secs(30)));
        })
        .await;
    assert_eq!(clock.waiting(), 0);
}

#[cfg(feature = "test-util")]
pub async fn test_clock_auto_advances_when_every_timeout_waits() {
    use opguard::test_clock::TestClock;
    let clock = TestClock::auto_advancing();
    let start = Instant::now();
    let (hour, day, quick) = clock
        .bind(async {
            futures::join!(
                timeout_async!(3600, pending::<()>()),
                timeout_async!(
                    label = "day",
                    until = clock.now() + Duration::from_secs(86_400),
                    pending::<()>()
                ),
                timeout_async!(5, async {
                    futures::future::ready(()).await;
                    "in time"
                }),
            )
        })
        .await;
    assert_eq!(
        hour.unwrap_err().duration(),
        Some(Duration::from_secs(3600))
    );
    assert!(day.unwrap_err().is_deadline());
    assert_eq!(quick, Ok("in time"));
    assert_eq!(clock.elapsed(), Duration::from_secs(86_400));
    assert!(
        start.elapsed() < SLACK,
        "a day of test time took {:?}",
        start.elapsed()
    );
}
