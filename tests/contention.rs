//! The registry under contention: 16 threads call `safe_mps!` at once on
//! real libtorch (every forced MPS attempt that touches a tensor fails for
//! real here).
#![cfg(feature = "tch")]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use opguard::mps::{self, MpsState};
use opguard::safe_mps;
use opguard::testing;
use tch::{Device, Kind, Tensor};

const THREADS: usize = 16;

/// Runs `calls` guarded calls on each of 16 threads released together;
/// returns how many first attempts ran on MPS.
fn hammer(calls: usize) -> usize {
    let on_mps = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (on_mps, barrier) = (on_mps.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..calls {
                    let t = safe_mps!(label = "contended", device = Device::Mps, |dev| {
                        if dev == Device::Mps {
                            on_mps.fetch_add(1, SeqCst);
                        }
                        Tensor::f_ones([2], (Kind::Float, dev))
                    });
                    assert_eq!(t.unwrap().device(), Device::Cpu);
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    on_mps.load(SeqCst)
}

#[test]
fn sixteen_threads_exact_counts_one_disable_one_trial() {
    let _g = common::mps::fresh();
    mps::set_failure_threshold(3);
    mps::set_cooldown(3600).unwrap();

    let tried_mps = hammer(50);
    let s = mps::stats();
    let total = (THREADS * 50) as u64;
    assert_eq!(
        s.mps_errors, tried_mps as u64,
        "every MPS attempt failed once"
    );
    assert_eq!(s.mps_errors + s.skipped, total, "{s:?}");
    assert_eq!((s.fallbacks, s.failed_fallbacks), (s.mps_errors, 0));
    assert!(s.mps_errors >= 3);
    assert_eq!((s.state, s.times_disabled), (MpsState::Disabled, 1));
    let disabled_lines = common::captured_logs()
        .iter()
        .filter(|l| l.contains("MPS disabled after"))
        .count();
    assert_eq!(disabled_lines, 1);

    // After the cool-down, one trial among 16 simultaneous callers.
    mps::set_cooldown(1).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let tried_mps = hammer(1);
    assert_eq!(tried_mps, 1, "exactly one trial");
    let s = mps::stats();
    assert_eq!(
        (s.state, s.times_disabled),
        (MpsState::Disabled, 2),
        "the trial failed"
    );
    mps::set_cooldown(mps::DEFAULT_COOLDOWN).unwrap();
}

/// Runs `calls` admitted calls at one site on each of 16 threads released
/// together (work that touches no tensor, so MPS is tried and works).
fn admitted_everywhere(calls: usize) {
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                barrier.wait();
                for _ in 0..calls {
                    let ran_on = safe_mps!(label = "counted", device = Device::Mps, |dev| dev);
                    assert_eq!(ran_on, Device::Mps);
                }
            });
        }
    });
}

#[test]
fn attempts_counted_on_many_threads_add_up_exactly_after_the_threads_end() {
    let _g = common::mps::fresh();
    let per_wave = (THREADS * 2_000) as u64;
    admitted_everywhere(2_000);
    let s = mps::stats();
    assert_eq!(s.site("counted").unwrap().mps_attempts, per_wave, "{s:?}");
    assert_eq!((s.mps_attempts, s.mps_errors), (per_wave, 0));
    // New threads count on where ended ones left off.
    admitted_everywhere(2_000);
    assert_eq!(mps::stats().mps_attempts, 2 * per_wave);
    // A reset counts from zero, and this thread's calls show at once.
    testing::reset_mps();
    assert_eq!(mps::stats().mps_attempts, 0);
    let _ = safe_mps!(label = "counted", device = Device::Mps, |dev| dev);
    assert_eq!(mps::stats().site("counted").unwrap().mps_attempts, 1);
}
