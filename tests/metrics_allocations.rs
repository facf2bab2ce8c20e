//! A timeout that fires records its metric without building a key each
//! time: an overloaded server whose timeouts all fire pays no allocation per
//! timeout for its counter. Its own file, so that the counting allocator is
//! this test binary's alone and no other test's logger allocates here.
#![cfg(feature = "metrics")]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::pending;

use futures::executor::block_on;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

thread_local! {
    /// Allocations on this thread while counting, or `None` when not.
    static COUNTED: Cell<Option<u64>> = const { Cell::new(None) };
}

struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = COUNTED.try_with(|c| c.set(c.get().map(|n| n + 1)));
        // SAFETY: the caller's layout, passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations on this thread while `f` runs.
fn allocations(f: impl FnOnce()) -> u64 {
    COUNTED.with(|c| c.set(Some(0)));
    f();
    COUNTED.with(|c| c.replace(None)).expect("counting")
}

/// Allocations on this thread for each of `n` zero timeouts fired at one
/// call site, with `recorder` in force if given.
fn per_timeout(n: usize, recorder: Option<&DebuggingRecorder>) -> Vec<u64> {
    let fire = || {
        (0..n)
            .map(|_| {
                // A zero timeout fires at its first poll, with no timer: what
                // it allocates is its error's and its report's.
                let mut fut =
                    Box::pin(opguard::timeout_async!(label = "fires", 0, pending::<()>()));
                allocations(|| assert!(block_on(fut.as_mut()).unwrap_err().is_elapsed()))
            })
            .collect()
    };
    match recorder {
        Some(recorder) => metrics::with_local_recorder(recorder, fire),
        None => fire(),
    }
}

#[test]
fn recording_a_fired_timeouts_metric_allocates_nothing_once_its_site_has() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let recorded = per_timeout(3, Some(&recorder));
    let unrecorded = per_timeout(3, None);
    // The first at the call site makes its key (and the recorder its
    // counter); after that, recording allocates nothing over what a
    // timeout that fires allocates anyway.
    assert_eq!(
        recorded[1..],
        unrecorded[1..],
        "allocations per timeout, recorded: {recorded:?}, not: {unrecorded:?}"
    );
    assert_eq!(
        common::timeouts_total(&snapshotter, "fires"),
        DebugValue::Counter(3)
    );
}
