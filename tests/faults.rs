//! Faults through the whole path, on real libtorch: injected MPS errors in
//! the training_loop and a3c examples' own code, CPU retries that fail too,
//! and panics inside wrapped ops and wrapped futures. Nothing hangs, nothing
//! loops, errors and panic payloads come out unchanged, and the registry and
//! counters stay usable afterwards.
#![cfg(feature = "tch")]
#![allow(dead_code)]

#[path = "../examples/a3c.rs"]
mod a3c;
mod common;
#[path = "../examples/training_loop.rs"]
mod training_loop;

use std::future::{Future, pending};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use common::PanickingWaker;
use common::mps::fresh;
use futures::FutureExt;
use futures::executor::block_on;
use opguard::mps;
use opguard::{alert, safe_mps, testing, timeout_async, timeouts};
use tch::{Device, Kind, Tensor};

#[test]
fn injected_mps_errors_during_the_training_loop_example() {
    let _g = fresh();
    let mut trainer = training_loop::Trainer::new().unwrap();
    // Keep trying MPS, so that every step meets an MPS error, real or injected.
    mps::set_failure_threshold(1000);
    let mut losses = Vec::new();
    for step in 0..60 {
        if step == 10 || step == 30 {
            testing::inject_mps_failures(2);
        }
        let (xs, ys) = training_loop::batch(64);
        losses.push(training_loop::train_step(&mut trainer, &xs, &ys).unwrap());
    }
    let s = mps::stats();
    // Each step: one MPS attempt (56 real errors, 4 injected), one CPU retry. Never more.
    assert_eq!(
        (s.mps_errors, s.fallbacks, s.failed_fallbacks),
        (60, 60, 0),
        "{s:?}"
    );
    assert_eq!(s.injected_pending, 0);
    assert!(
        losses[59] < losses[0] / 5.0,
        "training went on: {} -> {}",
        losses[0],
        losses[59]
    );
}

#[test]
fn the_training_loop_under_timeout_async_stops_between_batches() {
    let _g = fresh();
    let mut trainer = training_loop::Trainer::new().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = rt.block_on(timeout_async!(
        label = "rushed",
        Duration::from_millis(30),
        training_loop::main_training_loop(&mut trainer, 100_000)
    ));
    assert_eq!(out.unwrap_err().label(), Some("rushed"));
    // The trainer is still usable after the cancelled loop.
    let (xs, ys) = training_loop::batch(8);
    assert!(training_loop::train_step(&mut trainer, &xs, &ys).is_ok());
}

#[test]
fn the_examples_stacked_evaluation_falls_back_under_its_timeout() {
    let _g = fresh();
    let mut trainer = training_loop::Trainer::new().unwrap();
    testing::inject_mps_failures(1);
    let training_loop::Trainer { vs, net, .. } = &mut trainer;
    let mse = block_on(training_loop::evaluate(vs, net))
        .expect("in time")
        .expect("the CPU retry works");
    assert!(mse.is_finite() && mse > 0.0, "{mse}");
    let stats = mps::stats();
    let site = stats.site("evaluate_mps").unwrap();
    assert_eq!((site.mps_errors(), site.fallbacks), (1, 1));
}

#[test]
fn injected_mps_errors_during_the_a3c_example_updates() {
    let _g = fresh();
    tch::manual_seed(1);
    let mut model = a3c::ActorCritic::new().unwrap();
    mps::set_failure_threshold(1000); // keep trying MPS: every update falls back
    for round in 0..30 {
        testing::inject_mps_failures(u32::from(round % 3 == 0));
        let (s, a, r) = a3c::rollout(&model, 32);
        a3c::update(&mut model, &s, &a, &r).unwrap();
    }
    let s = mps::stats();
    // 10 injected, 20 real MPS errors (the update forces MPS), each retried once.
    assert_eq!((s.mps_errors, s.fallbacks, s.failed_fallbacks), (30, 30, 0));
}

#[test]
fn an_a3c_update_whose_cpu_retry_fails_lets_that_panic_out_unchanged() {
    let _g = fresh();
    let mut model = a3c::ActorCritic::new().unwrap();
    // Mismatched shapes: the CPU retry fails as well. The model's plain
    // `forward` panics with the shape error, and that panic comes out as it was.
    let states = Tensor::randn([4, 3], (Kind::Float, Device::Cpu));
    let actions = Tensor::zeros([4], (Kind::Int64, Device::Cpu));
    let rewards = Tensor::zeros([4], (Kind::Float, Device::Cpu));
    testing::inject_mps_failures(1);
    let payload = catch_unwind(AssertUnwindSafe(|| {
        a3c::update(&mut model, &states, &actions, &rewards)
    }))
    .unwrap_err();
    let text = payload
        .downcast_ref::<String>()
        .expect("tch panics with a String");
    assert!(
        text.contains("mat1 and mat2 shapes cannot be multiplied"),
        "{text}"
    );
    let s = mps::stats();
    assert_eq!((s.mps_errors, s.fallbacks, s.failed_fallbacks), (1, 0, 1));
    // Still usable.
    let (s, a, r) = a3c::rollout(&model, 8);
    assert!(a3c::update(&mut model, &s, &a, &r).is_ok());
}

#[test]
fn panics_inside_wrapped_futures_come_out_unchanged_on_tokio_smol_async_std_and_futures() {
    let _g = fresh();
    let boom = || timeout_async!(label = "panics", 1, async { std::panic::panic_any(42u32) });
    let payloads = [
        catch_unwind(AssertUnwindSafe(|| block_on(boom()))).unwrap_err(),
        catch_unwind(AssertUnwindSafe(|| smol::block_on(boom()))).unwrap_err(),
        catch_unwind(AssertUnwindSafe(|| async_std::task::block_on(boom()))).unwrap_err(),
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(async { tokio::spawn(boom()).await })
            .unwrap_err()
            .into_panic(),
    ];
    for p in payloads {
        assert_eq!(p.downcast_ref::<u32>(), Some(&42));
    }
    // Counters and timeouts still work.
    let before = timeouts::stats().timeouts;
    assert!(block_on(timeout_async!(0.001, pending::<()>())).is_err());
    assert_eq!(timeouts::stats().timeouts, before + 1);
}

#[test]
fn panics_inside_async_safe_mps_come_out_unchanged_and_nothing_is_poisoned() {
    let _g = fresh();
    let fut = safe_mps!(device = Device::Mps, async |_dev| -> Tensor {
        std::panic::panic_any(String::from("async op exploded"))
    });
    let payload = block_on(AssertUnwindSafe(fut).catch_unwind()).unwrap_err();
    assert_eq!(
        payload.downcast_ref::<String>().map(String::as_str),
        Some("async op exploded")
    );
    // The panicking hook and the panics above poisoned nothing.
    alert::set_hook(|_| panic!("hook panics too"));
    alert::set_policy(
        alert::AlertKind::MpsFallbacks,
        alert::AlertPolicy::new(0, Duration::from_secs(60)),
    );
    let t = safe_mps!(device = Device::Mps, |dev| Tensor::f_ones(
        [1],
        (Kind::Float, dev)
    ));
    assert!(t.is_ok());
    alert::clear_hook();
    alert::set_policy(alert::AlertKind::MpsFallbacks, alert::AlertPolicy::DEFAULT);
    assert_eq!(mps::stats().fallbacks, 1);
}

#[test]
fn a_waker_that_panics_does_not_stop_the_shared_timer() {
    let _g = fresh();
    let waker = Waker::from(Arc::new(PanickingWaker));
    let mut fut = Box::pin(timeout_async!(0.005, pending::<()>()));
    assert!(
        fut.as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );
    std::thread::sleep(Duration::from_millis(30));
    // The timer thread survived: other timeouts still fire.
    for _ in 0..3 {
        assert!(
            block_on(timeout_async!(0.005, pending::<()>()))
                .unwrap_err()
                .is_elapsed()
        );
    }
}

/// A logger that panics on opguard's warnings that contain the text set in
/// [`PANIC_ON`]: user code, which the registry's own counts must not depend on.
struct PanicsOnLogger;

static PANIC_ON: std::sync::Mutex<&str> = std::sync::Mutex::new("");

impl log::Log for PanicsOnLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let text = record.args().to_string();
        if record.target() == "opguard" && text.contains(*PANIC_ON.lock().unwrap()) {
            panic!("the logger failed: {text}");
        }
    }

    fn flush(&self) {}
}

/// In a child: installs [`PanicsOnLogger`], panicking on lines with `text`,
/// runs `work`, and checks that the logger's panic came out of it.
fn with_a_logger_panicking_on(text: &'static str, work: impl FnOnce()) {
    *PANIC_ON.lock().unwrap() = text;
    log::set_logger(&PanicsOnLogger).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    let payload = catch_unwind(AssertUnwindSafe(work)).expect_err("the logger's panic comes out");
    assert!(
        payload
            .downcast_ref::<String>()
            .is_some_and(|m| m.starts_with("the logger failed")),
        "not the logger's panic"
    );
}

/// MPS is disabled at the first device-level error (threshold 1), and the
/// logger panics on that error's warning, which comes before the line that
/// says MPS is disabled: the registry counts the disabling all the same.
#[test]
fn a_logger_that_panics_on_an_mps_warning_leaves_the_counts_in_step_with_the_registry() {
    const NAME: &str =
        "a_logger_that_panics_on_an_mps_warning_leaves_the_counts_in_step_with_the_registry";
    if common::child_passes(NAME, &[], "counted") {
        return;
    }
    mps::set_failure_threshold(1);
    let xs = Tensor::ones([2, 3], (Kind::Float, Device::Cpu));
    with_a_logger_panicking_on("retrying on CPU", || {
        let _ = safe_mps!(device = Device::Mps, |dev| {
            xs.f_to_device(dev)?.f_sum(Kind::Float)
        });
    });
    let s = mps::stats();
    assert_eq!(s.state, mps::MpsState::Disabled);
    assert_eq!(s.device_errors, 1);
    assert_eq!(s.times_disabled, 1, "the disabling was not counted");
    println!("counted");
}

/// The CPU retry fails too (a view of 6 elements as 7, on any device), the
/// logger panics on the warning that says so, and fallbacks alert at the
/// first (threshold 0): the alert hook is called all the same.
#[test]
fn a_logger_that_panics_on_a_failed_retrys_warning_does_not_keep_its_alert_from_the_hook() {
    const NAME: &str =
        "a_logger_that_panics_on_a_failed_retrys_warning_does_not_keep_its_alert_from_the_hook";
    if common::child_passes(NAME, &[], "hook called") {
        return;
    }
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    alert::set_policy(
        alert::AlertKind::MpsFallbacks,
        alert::AlertPolicy::new(0, Duration::from_secs(3600)),
    );
    alert::set_hook(|_| {
        CALLS.fetch_add(1, SeqCst);
    });
    let xs = Tensor::ones([2, 3], (Kind::Float, Device::Cpu));
    with_a_logger_panicking_on("failed too", || {
        let _ = safe_mps!(device = Device::Mps, |dev| {
            xs.f_to_device(dev)?.f_view([7])
        });
    });
    assert_eq!(mps::stats().failed_fallbacks, 1);
    assert_eq!(CALLS.load(SeqCst), 1, "the alert hook was not called");
    println!("hook called");
}
