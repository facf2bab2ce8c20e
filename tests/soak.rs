//! The load soak: many concurrent timeouts on tokio multi-thread, smol and a
//! futures ThreadPool, half firing and half completing. Each resolves exactly
//! once, the right way, and once all are gone the heap is back where it was,
//! give or take a few MB (measured with a counting allocator, not RSS).
//!
//! Short by default (20 000 per executor); `OPGUARD_SOAK=full` runs 1 000 000.

#[path = "common/load.rs"]
mod load;

use std::sync::atomic::Ordering::Relaxed;

use load::{FIRE_AFTER, LIVE, Tally, run};

#[global_allocator]
static ALLOC: load::Counting = load::Counting;

/// "A few MB": what may stay allocated once every timeout is gone.
const HEAP_LEFT_LIMIT: isize = 4_000_000;

#[test]
fn every_timeout_resolves_once_and_the_heap_returns() {
    let n = match std::env::var("OPGUARD_SOAK").as_deref() {
        Ok("full") => 1_000_000,
        _ => 20_000,
    };
    // Process-wide things made on first use (timer thread, runtimes' globals)
    // are not leaks: make them before the baseline.
    for executor in ["tokio", "smol", "threadpool"] {
        run(executor, 100, Box::leak(Box::default()));
    }
    std::thread::sleep(FIRE_AFTER * 2);
    let base = LIVE.load(Relaxed);
    for executor in ["tokio", "smol", "threadpool"] {
        let tally: &'static Tally = Box::leak(Box::default());
        run(executor, n, tally);
        let counts = (tally.fired.load(Relaxed), tally.completed.load(Relaxed));
        assert_eq!(counts, (n / 2, n / 2), "on {executor}: (fired, completed)");
    }
    // Every pending tick fires and frees itself.
    std::thread::sleep(FIRE_AFTER * 2);
    let left = LIVE.load(Relaxed) - base;
    eprintln!("heap left after {n} timeouts x 3 executors: {left} bytes");
    assert!(
        left < HEAP_LEFT_LIMIT,
        "{left} bytes still allocated after {n} timeouts x 3"
    );
}
