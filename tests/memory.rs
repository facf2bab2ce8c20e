//! Cancelled timeouts give their memory back at once, whatever their
//! deadline: a server that cancels most of its timeouts must not carry them
//! until they would have fired. Measured with a counting global allocator.

#[path = "common/load.rs"]
mod load;

use std::future::{Future, pending};
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Waker};
use std::time::Duration;

use load::LIVE;
use opguard::timeout_async;

#[global_allocator]
static ALLOC: load::Counting = load::Counting;

/// Starts `n` timeouts of `after` plus a distinct number of milliseconds
/// each (so that each has a tick of its own), then drops them all; the heap
/// still allocated after, over the heap before.
fn left_after_cancelling(n: u64, after: Duration) -> isize {
    let base = LIVE.load(Relaxed);
    let mut all: Vec<Pin<Box<dyn Future<Output = _>>>> = Vec::new();
    for i in 0..n {
        let mut t = Box::pin(timeout_async!(
            after.saturating_add(Duration::from_millis(i)),
            pending::<()>()
        ));
        assert!(
            t.as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_pending()
        );
        all.push(t);
    }
    let during = LIVE.load(Relaxed) - base;
    assert!(during > 0);
    drop(all);
    // futures-timer's thread frees a dropped `Delay`'s node when it next runs.
    std::thread::sleep(Duration::from_millis(100));
    LIVE.load(Relaxed) - base
}

#[test]
fn cancelled_timeouts_give_their_memory_back_whatever_their_deadline() {
    const N: u64 = 2000;
    // Made on first use, not per timeout: the timer thread, its heap.
    left_after_cancelling(N, Duration::from_secs(3600));
    for (spelling, after) in [
        ("30 s", Duration::from_secs(30)),
        ("1 day", Duration::from_secs(86_400)),
        ("1e9 s", Duration::from_secs(1_000_000_000)),
        ("u64::MAX s", Duration::from_secs(u64::MAX)),
        ("Duration::MAX", Duration::MAX),
    ] {
        let left = left_after_cancelling(N, after);
        eprintln!("{spelling}: {left} bytes left after {N} cancelled timeouts");
        // A tick held until its time was ~440 bytes each, ~880 KB here.
        assert!(
            left < 20_000,
            "{spelling}: {left} bytes left after {N} cancelled timeouts"
        );
    }
}
