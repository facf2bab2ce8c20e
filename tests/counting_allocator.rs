//! A global allocator is user code too: one that runs `safe_mps!` itself
//! while opguard allocates a thread's block of attempt counts. Its own file,
//! so that the allocator is this test binary's alone.
#![cfg(feature = "tch")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::mpsc;
use std::time::Duration;

use opguard::{mps, safe_mps};
use tch::Device;

thread_local! {
    /// Set on the thread under test: its allocations run `safe_mps!`.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    /// Set while this allocator runs `safe_mps!`, so it does not recurse.
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
    /// Calls made from inside the allocator.
    static FROM_ALLOC: Cell<u32> = const { Cell::new(0) };
}

/// The call the allocator makes, at one call site.
fn in_the_allocator() -> Device {
    safe_mps!(label = "in_the_allocator", device = Device::Mps, |dev| dev)
}

/// The call under test, at one call site.
fn under_test() -> Device {
    safe_mps!(label = "under_test", device = Device::Mps, |dev| dev)
}

struct RunsSafeMps;

unsafe impl GlobalAlloc for RunsSafeMps {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let armed = ARMED.try_with(Cell::get).unwrap_or(false);
        if armed && !IN_HOOK.with(|h| h.replace(true)) {
            assert_eq!(in_the_allocator(), Device::Mps);
            FROM_ALLOC.with(|n| n.set(n.get() + 1));
            IN_HOOK.with(|h| h.set(false));
        }
        // SAFETY: the caller's layout, passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: RunsSafeMps = RunsSafeMps;

#[test]
fn an_allocator_that_runs_safe_mps_while_a_threads_counts_are_set_up_neither_hangs_nor_loses_a_count()
 {
    log::set_max_level(log::LevelFilter::Off);
    // Everything opguard sets up once (settings, the panic hook, the
    // sites), set up here, so that the thread under test allocates only for
    // its block of counts. This thread keeps its block, so the thread under
    // test finds none free and makes one.
    for _ in 0..2 {
        in_the_allocator();
        under_test();
    }
    let before = mps::stats();
    let attempts = |stats: &mps::MpsStats, label| stats.site(label).unwrap().mps_attempts;

    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        ARMED.with(|a| a.set(true));
        let ran_on = under_test();
        ARMED.with(|a| a.set(false));
        done.send((ran_on, FROM_ALLOC.with(Cell::get))).unwrap();
    });
    let (ran_on, from_alloc) = finished
        .recv_timeout(Duration::from_secs(60))
        .expect("the call inside the allocator hung");
    assert_eq!(ran_on, Device::Mps);
    // The block's allocation ran the allocator's call, at least.
    assert!(
        from_alloc >= 1,
        "the allocator ran no safe_mps!: the test tests nothing"
    );
    std::thread::sleep(Duration::from_millis(50));
    let after = mps::stats();
    assert_eq!(
        attempts(&after, "under_test") - attempts(&before, "under_test"),
        1
    );
    assert_eq!(
        attempts(&after, "in_the_allocator") - attempts(&before, "in_the_allocator"),
        u64::from(from_alloc)
    );
}
