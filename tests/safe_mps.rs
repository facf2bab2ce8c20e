//! `safe_mps!` against real libtorch. Linux has no MPS, so `Device::Mps`
//! raises PyTorch's real MPS errors and the fallback path runs end to end.
//! The registry is process-wide: each test holds `SERIAL` and starts from
//! `fresh()`.
#![cfg(feature = "tch")]

mod common;

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

use common::mps::{fresh, logs_containing};
use std::time::Duration;

use futures::executor::block_on;
use opguard::alert::{self, AlertKind, AlertPolicy};
use opguard::mps::{self, MpsState};
use opguard::safe_mps;
use opguard::testing;
use tch::{Device, Kind, TchError, Tensor};

fn ones(dev: Device) -> Result<Tensor, TchError> {
    Tensor::f_ones([2, 2], (Kind::Float, dev))
}

#[test]
fn device_form_falls_back_from_a_real_mps_error_to_cpu() {
    let _g = fresh();
    let devices = Mutex::new(Vec::new());
    let out = safe_mps!(label = "ones_f", device = Device::Mps, |dev| {
        devices.lock().unwrap().push(dev);
        ones(dev)
    });
    let t = out.expect("the CPU retry works");
    assert_eq!(t.device(), Device::Cpu);
    assert_eq!(t.sum(Kind::Float).double_value(&[]), 4.0);
    assert_eq!(*devices.lock().unwrap(), [Device::Mps, Device::Cpu]);
    let s = mps::stats();
    assert_eq!((s.mps_errors, s.fallbacks, s.failed_fallbacks), (1, 1, 0));
}

#[test]
fn the_warning_names_label_first_line_and_site_without_the_backtrace() {
    let _g = fresh();
    let line = line!() + 1;
    let _ = safe_mps!(label = "logged_op", device = Device::Mps, |dev| ones(dev));
    let warnings = logs_containing("'logged_op': MPS error at");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let w = &warnings[0];
    assert!(
        w.starts_with("WARN 'logged_op': MPS error at tests/safe_mps.rs:"),
        "{w}"
    );
    assert!(w.contains(&format!(":{line}:")), "{w}");
    assert!(w.contains("Could not run 'aten::"), "{w}");
    assert!(w.contains("'MPS' backend"), "{w}");
    assert!(w.ends_with("; retrying on CPU"), "{w}");
    assert!(
        !w.contains("Exception raised from") && !w.contains('\n'),
        "{w}"
    );
}

#[test]
fn the_warning_for_an_unwrapped_error_leaves_its_backtrace_out() {
    let _g = fresh();
    // `.unwrap()` panics with the error's debug form: PyTorch's message and
    // backtrace on one line, its line breaks written `\n`.
    let t = safe_mps!(label = "unwrapped", device = Device::Mps, |dev| ones(dev)
        .unwrap());
    assert_eq!(t.device(), Device::Cpu);
    let warnings = logs_containing("'unwrapped': MPS error at");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let w = &warnings[0];
    assert!(
        w.contains("called `Result::unwrap()` on an `Err` value: Torch(\"Could not run 'aten::"),
        "{w}"
    );
    assert!(
        !w.contains("Exception raised from") && !w.contains("frame #") && !w.contains("\\n"),
        "{w}"
    );
    // The debug form cut at its first escaped line break is closed again.
    assert!(w.ends_with("\"); retrying on CPU"), "{w}");
}

#[test]
fn a_panicking_plain_tensor_method_falls_back_too() {
    let _g = fresh();
    let attempts = Cell::new(0);
    let t = safe_mps!(device = Device::Mps, |dev| {
        attempts.set(attempts.get() + 1);
        Tensor::ones([3], (Kind::Float, dev)) * 2
    });
    assert_eq!(attempts.get(), 2);
    assert_eq!(t.device(), Device::Cpu);
    assert_eq!(t.sum(Kind::Float).double_value(&[]), 6.0);
    assert_eq!(mps::stats().fallbacks, 1);
}

#[test]
fn tensor_and_device_form_moves_named_tensors_and_retries_on_cpu() {
    let _g = fresh();
    let mut xs = Tensor::ones([2, 3], (Kind::Float, Device::Cpu));
    let mut ys = Tensor::ones([3, 2], (Kind::Float, Device::Cpu));
    let out = safe_mps!(device = Device::Mps, [xs, ys] => |dev| {
        xs.f_to_device(dev)?.f_matmul(&ys.f_to_device(dev)?)
    });
    let product = out.unwrap();
    assert_eq!(product.size(), [2, 2]);
    assert_eq!(product.sum(Kind::Float).double_value(&[]), 12.0);
    assert_eq!((xs.device(), ys.device()), (Device::Cpu, Device::Cpu));
    assert_eq!(mps::stats().fallbacks, 1);
}

#[test]
fn other_errors_propagate_untouched_after_one_attempt() {
    let _g = fresh();
    let attempts = Cell::new(0);
    let mut a = Tensor::ones([2, 3], (Kind::Float, Device::Cpu));
    let mut b = Tensor::ones([4, 5], (Kind::Float, Device::Cpu));
    let err = safe_mps!([a, b] => {
        attempts.set(attempts.get() + 1);
        a.f_matmul(&b)
    })
    .unwrap_err();
    assert_eq!(attempts.get(), 1);
    let text = err.to_string();
    assert!(
        text.contains("mat1 and mat2 shapes cannot be multiplied"),
        "{text}"
    );
    assert!(!opguard::mps::is_mps_tch_error(&err));
    let s = mps::stats();
    assert_eq!(
        (s.mps_errors, s.fallbacks, s.consecutive_failures),
        (0, 0, 0)
    );
}

#[test]
fn a_panic_that_is_not_an_mps_error_resumes_unchanged() {
    let _g = fresh();
    let attempts = Cell::new(0);
    let caught = catch_unwind(AssertUnwindSafe(|| {
        safe_mps!(device = Device::Mps, |_dev| -> Tensor {
            attempts.set(attempts.get() + 1);
            std::panic::panic_any(String::from("model exploded"))
        })
    }));
    let payload = caught.unwrap_err();
    assert_eq!(
        payload.downcast_ref::<String>().map(String::as_str),
        Some("model exploded")
    );
    assert_eq!(attempts.get(), 1);
    assert_eq!(mps::stats().mps_errors, 0);
}

#[test]
fn when_the_cpu_retry_fails_too_its_error_propagates_and_nothing_loops() {
    let _g = fresh();
    let attempts = Cell::new(0);
    let out: Result<Tensor, TchError> = safe_mps!(device = Device::Mps, |dev| {
        attempts.set(attempts.get() + 1);
        match dev {
            Device::Cpu => Err(TchError::Torch("CPU is broken as well".into())),
            _ => ones(dev),
        }
    });
    assert_eq!(
        out.unwrap_err().to_string(),
        "Internal torch error: CPU is broken as well"
    );
    assert_eq!(attempts.get(), 2);
    let s = mps::stats();
    assert_eq!((s.mps_errors, s.fallbacks, s.failed_fallbacks), (1, 0, 1));
}

#[test]
fn a_panicking_cpu_retry_propagates_its_panic() {
    let _g = fresh();
    let caught = catch_unwind(AssertUnwindSafe(|| {
        safe_mps!(device = Device::Mps, |dev| {
            if dev == Device::Cpu {
                panic!("retry failed");
            }
            Tensor::ones([1], (Kind::Float, dev))
        })
    }));
    assert_eq!(
        caught.unwrap_err().downcast_ref::<&str>(),
        Some(&"retry failed")
    );
    assert_eq!(mps::stats().failed_fallbacks, 1);
}

#[test]
fn mps_is_disabled_after_consecutive_failures_and_later_calls_go_straight_to_cpu() {
    let _g = fresh();
    let devices = Mutex::new(Vec::new());
    for _ in 0..5 {
        let t = safe_mps!(label = "breaker", device = Device::Mps, |dev| {
            devices.lock().unwrap().push(dev);
            ones(dev)
        });
        assert_eq!(t.unwrap().device(), Device::Cpu);
    }
    use Device::{Cpu, Mps};
    assert_eq!(
        *devices.lock().unwrap(),
        [Mps, Cpu, Mps, Cpu, Mps, Cpu, Cpu, Cpu]
    );
    let s = mps::stats();
    assert_eq!(s.state, MpsState::Disabled);
    assert_eq!(
        (s.mps_errors, s.fallbacks, s.skipped, s.times_disabled),
        (3, 3, 2, 1)
    );
    assert_eq!(
        logs_containing("MPS disabled after 3 consecutive MPS failures").len(),
        1
    );
}

#[test]
fn after_the_cooldown_one_trial_reenables_or_redisables_mps() {
    let _g = fresh();
    mps::set_failure_threshold(1);
    mps::set_cooldown(0.05).unwrap();
    let _ = safe_mps!(device = Device::Mps, |dev| ones(dev));
    assert_eq!(mps::stats().state, MpsState::Disabled);

    // A failing trial disables MPS again.
    std::thread::sleep(Duration::from_millis(80));
    let attempts = Cell::new(0);
    let _ = safe_mps!(device = Device::Mps, |dev| {
        attempts.set(attempts.get() + 1);
        ones(dev)
    });
    assert_eq!(attempts.get(), 2, "the trial tried MPS, then CPU");
    assert_eq!(mps::stats().state, MpsState::Disabled);
    assert_eq!(logs_containing("MPS trial failed").len(), 1);

    // A trial that succeeds enables it: work that runs with dev = MPS and
    // succeeds (it allocates nothing there, so it works on any machine).
    std::thread::sleep(Duration::from_millis(80));
    let out = safe_mps!(device = Device::Mps, |dev| {
        assert_eq!(dev, Device::Mps);
        ones(Device::Cpu)
    });
    assert!(out.is_ok());
    let s = mps::stats();
    assert_eq!(s.state, MpsState::Enabled);
    assert_eq!(s.times_disabled, 2);
    assert_eq!(logs_containing("MPS trial succeeded").len(), 1);
}

#[test]
fn work_that_never_touched_mps_never_moves_the_breaker() {
    let _g = fresh();
    mps::set_failure_threshold(2);
    mps::set_cooldown(0.05).unwrap();
    let mut xs = Tensor::ones([2], (Kind::Float, Device::Cpu));
    let _ = safe_mps!(device = Device::Mps, |dev| ones(dev));
    assert_eq!(mps::stats().consecutive_failures, 1);
    // Tensor-form work on CPU tensors, no device named: runs once, and its
    // success does not break the streak of MPS failures.
    let attempts = mps::stats().mps_attempts;
    let out = safe_mps!(label = "cpu_only", [xs] => xs.f_add_scalar(1.0));
    assert_eq!(out.unwrap().double_value(&[0]), 2.0);
    let s = mps::stats();
    assert_eq!((s.consecutive_failures, s.mps_attempts), (1, attempts));
    assert!(
        s.site("cpu_only").is_none(),
        "not even listed: it never asked"
    );
    let _ = safe_mps!(device = Device::Mps, |dev| ones(dev));
    assert_eq!(mps::stats().state, MpsState::Disabled);
    // Past the cool-down, the same CPU work is not admitted as the trial.
    std::thread::sleep(Duration::from_millis(80));
    for _ in 0..3 {
        let _ = safe_mps!(label = "cpu_only", [xs] => xs.f_add_scalar(1.0));
    }
    let s = mps::stats();
    assert_eq!(s.state, MpsState::Disabled, "CPU work closed nothing");
    assert!(logs_containing("MPS trial").is_empty());
    // Work on MPS is the trial (it fails here: disabled again).
    let _ = safe_mps!(device = Device::Mps, |dev| ones(dev));
    assert_eq!(logs_containing("MPS trial failed").len(), 1);
}

#[test]
fn a_fallback_inside_a_fallback_never_falls_back_again() {
    let _g = fresh();
    let inner_devices = Mutex::new(Vec::new());
    let out = safe_mps!(label = "outer", device = Device::Mps, |dev| {
        let inner = safe_mps!(label = "inner", device = Device::Mps, |inner_dev| {
            inner_devices.lock().unwrap().push(inner_dev);
            ones(inner_dev)
        });
        // The outer first attempt fails on MPS itself, after the inner call.
        inner.and_then(|t| t.f_to_device(dev))
    });
    assert_eq!(out.unwrap().device(), Device::Cpu);
    // First outer attempt: the inner call falls back (MPS, CPU). In the outer
    // CPU retry the inner call runs once, on CPU.
    assert_eq!(
        *inner_devices.lock().unwrap(),
        [Device::Mps, Device::Cpu, Device::Cpu]
    );
    let s = mps::stats();
    assert_eq!((s.mps_errors, s.fallbacks), (2, 2));
}

#[test]
fn kill_switch_runs_once_on_the_preferred_device_and_propagates() {
    let _g = fresh();
    mps::set_enabled(false);
    let attempts = Cell::new(0);
    let out = safe_mps!(device = Device::Mps, |dev| {
        attempts.set(attempts.get() + 1);
        ones(dev)
    });
    mps::set_enabled(true);
    assert!(opguard::mps::is_mps_tch_error(&out.unwrap_err()));
    assert_eq!(attempts.get(), 1);
    assert_eq!(mps::stats().mps_errors, 0, "the registry is bypassed");
}

#[test]
fn injected_failures_fall_back_on_a_machine_without_mps() {
    let _g = fresh();
    testing::inject_mps_failures(2);
    assert_eq!(mps::stats().injected_pending, 2);
    let devices = Mutex::new(Vec::new());
    for _ in 0..3 {
        // No device given: without MPS the work would simply run on CPU.
        let t = safe_mps!(label = "injected", |dev| {
            devices.lock().unwrap().push(dev);
            ones(dev)
        });
        assert!(t.is_ok());
    }
    // Injected attempts do not run; each is followed by one CPU run.
    assert_eq!(*devices.lock().unwrap(), [Device::Cpu; 3]);
    let s = mps::stats();
    assert_eq!((s.mps_errors, s.fallbacks, s.injected_pending), (2, 2, 0));
    assert_eq!(logs_containing("'injected': MPS error at").len(), 2);
    assert!(logs_containing("injected MPS failure (opguard fault injection)").len() >= 2);
}

#[test]
fn async_device_form_falls_back() {
    let _g = fresh();
    let attempts = Cell::new(0);
    let fut = safe_mps!(label = "async_op", device = Device::Mps, async |dev| {
        attempts.set(attempts.get() + 1);
        futures_timer::Delay::new(Duration::from_millis(1)).await;
        ones(dev)
    });
    let t = block_on(fut).unwrap();
    assert_eq!((t.device(), attempts.get()), (Device::Cpu, 2));
    assert_eq!(mps::stats().fallbacks, 1);
}

#[test]
fn async_tensor_form_moves_tensors_and_works_under_timeout_async() {
    let _g = fresh();
    testing::inject_mps_failures(1);
    let mut xs = Tensor::ones([4], (Kind::Float, Device::Cpu));
    let out = block_on(opguard::timeout_async!(
        5,
        safe_mps!([xs] => async {
            futures_timer::Delay::new(Duration::from_millis(1)).await;
            xs.sum(Kind::Float)
        })
    ));
    assert_eq!(out.unwrap().double_value(&[]), 4.0);
    assert_eq!(mps::stats().fallbacks, 1);
}

#[test]
fn async_nested_fallback_never_falls_back_again() {
    let _g = fresh();
    let inner_devices = Mutex::new(Vec::new());
    let out = block_on(safe_mps!(device = Device::Mps, async |dev| {
        let inner = safe_mps!(device = Device::Mps, async |d| {
            inner_devices.lock().unwrap().push(d);
            ones(d)
        })
        .await;
        inner.and_then(|t| t.f_to_device(dev))
    }));
    assert!(out.is_ok());
    assert_eq!(
        *inner_devices.lock().unwrap(),
        [Device::Mps, Device::Cpu, Device::Cpu]
    );
}

safe_mps! {
    // `device = Device::Mps`: the body puts its work on MPS itself, so the
    // call is MPS work although its parameter is on CPU.
    #[safe_mps(label = "item_scale", device = Device::Mps, [xs])]
    fn scale(xs: &Tensor, by: f64) -> Result<Tensor, TchError> {
        xs.f_to_device(Device::Mps)?.f_mul_scalar(by)
    }
}

safe_mps! {
    #[safe_mps([xs])]
    async fn async_scale(xs: Tensor, by: f64) -> Tensor {
        futures_timer::Delay::new(Duration::from_millis(1)).await;
        // The body may run twice, so it borrows what it uses.
        &xs * by
    }
}

#[test]
fn item_forms_guard_their_body() {
    let _g = fresh();
    let xs = Tensor::ones([3], (Kind::Float, Device::Cpu));
    // The body always asks for MPS, so the retry fails too: one fallback, failed.
    assert!(scale(&xs, 2.0).is_err());
    let s = mps::stats();
    assert_eq!((s.mps_errors, s.failed_fallbacks), (1, 1));
    assert_eq!(logs_containing("'item_scale': MPS error at").len(), 1);

    testing::inject_mps_failures(1);
    let t = block_on(async_scale(xs, 3.0));
    assert_eq!(t.sum(Kind::Float).double_value(&[]), 9.0);
    assert_eq!(mps::stats().fallbacks, 1);
}

/// A model that runs where it says: on MPS until it is moved to CPU.
struct Net {
    w: Tensor,
    on: Device,
    moves: u32,
}

impl mps::MoveToCpu for Net {
    fn move_to_cpu(&mut self) {
        self.w.move_to_cpu();
        self.on = Device::Cpu;
        self.moves += 1;
    }

    fn is_on_mps(&self) -> bool {
        self.on == Device::Mps
    }
}

impl Net {
    /// Weights of 2 on MPS, so far as it says (they are on CPU).
    fn on_mps() -> Self {
        Net {
            w: Tensor::full([3], 2.0, (Kind::Float, Device::Cpu)),
            on: Device::Mps,
            moves: 0,
        }
    }

    /// The work: on its device, times its weights.
    fn weigh(&self, xs: &Tensor) -> Result<Tensor, TchError> {
        xs.f_to_device(self.on)?.f_mul(&self.w)
    }

    safe_mps! {
        #[safe_mps(label = "net_forward", [self])]
        fn forward(&mut self, xs: &Tensor) -> Result<Tensor, TchError> {
            self.weigh(xs)
        }
    }

    safe_mps! {
        #[safe_mps([self])]
        async fn forward_async(&mut self, xs: &Tensor) -> Result<Tensor, TchError> {
            futures_timer::Delay::new(Duration::from_millis(1)).await;
            self.weigh(xs)
        }
    }
}

#[test]
fn item_form_methods_name_self_and_it_moves_before_the_retry() {
    let _g = fresh();
    let xs = Tensor::ones([3], (Kind::Float, Device::Cpu));
    let mut net = Net::on_mps();
    // PyTorch's real MPS error on the first attempt; `self` moved; the retry on CPU.
    let out = net.forward(&xs).unwrap();
    assert_eq!(out.sum(Kind::Float).double_value(&[]), 6.0);
    assert_eq!((net.moves, net.on), (1, Device::Cpu));
    assert_eq!(mps::stats().fallbacks, 1);
    assert_eq!(logs_containing("'net_forward': MPS error at").len(), 1);

    net.on = Device::Mps;
    let out = block_on(net.forward_async(&xs)).unwrap();
    assert_eq!(out.sum(Kind::Float).double_value(&[]), 6.0);
    assert_eq!((net.moves, net.on), (2, Device::Cpu));
    assert_eq!(mps::stats().fallbacks, 2);
}

#[test]
fn fallbacks_past_the_threshold_raise_one_alert() {
    let _g = fresh();
    let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    alert::set_policy(
        AlertKind::MpsFallbacks,
        AlertPolicy::new(1, Duration::from_secs(3600)),
    );
    alert::set_hook(move |a| sink.lock().unwrap().push((a.kind, a.count, a.label)));
    mps::set_failure_threshold(100);
    for _ in 0..3 {
        let _ = safe_mps!(label = "alerted", device = Device::Mps, |dev| ones(dev));
    }
    alert::clear_hook();
    alert::set_policy(AlertKind::MpsFallbacks, AlertPolicy::DEFAULT);
    assert_eq!(
        *seen.lock().unwrap(),
        [(AlertKind::MpsFallbacks, 2, Some("alerted"))]
    );
}

#[test]
fn real_tch_errors_are_classified_by_their_message() {
    let _g = fresh();
    let mps_errors = [
        Tensor::f_ones([2], (Kind::Float, Device::Mps)).unwrap_err(),
        Tensor::f_zeros([2], (Kind::Float, Device::Mps)).unwrap_err(),
        Tensor::ones([2], (Kind::Float, Device::Cpu))
            .f_to_device(Device::Mps)
            .unwrap_err(),
        Tensor::f_randn([2, 2], (Kind::Float, Device::Mps)).unwrap_err(),
    ];
    for e in &mps_errors {
        assert!(mps::is_mps_tch_error(e), "{e}");
    }
    let a = Tensor::ones([2, 3], (Kind::Float, Device::Cpu));
    let other_errors = [
        a.f_matmul(&Tensor::ones([4, 5], (Kind::Float, Device::Cpu)))
            .unwrap_err(),
        a.f_sum_dim_intlist(7, false, Kind::Float).unwrap_err(),
        a.f_reshape([7]).unwrap_err(),
        a.f_select(0, 9).unwrap_err(),
    ];
    for e in &other_errors {
        assert!(!mps::is_mps_tch_error(e), "{e}");
        assert!(
            e.to_string().contains("Exception raised from"),
            "has a backtrace: {e}"
        );
    }
}

#[test]
fn the_mps_panic_of_a_plain_method_is_recognised() {
    let _g = fresh();
    let payload = catch_unwind(|| Tensor::zeros([2], (Kind::Float, Device::Mps))).unwrap_err();
    assert!(mps::is_mps_panic(payload.as_ref()));
    let payload =
        catch_unwind(|| Tensor::ones([2, 3], (Kind::Float, Device::Cpu)).reshape([7])).unwrap_err();
    assert!(!mps::is_mps_panic(payload.as_ref()));
}

#[test]
fn async_work_that_names_its_tensors_is_send_and_spawns_on_a_multi_thread_runtime() {
    let _g = fresh();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let xs = Tensor::ones([3], (Kind::Float, Device::Cpu));
    let task = rt.spawn(async move {
        let mut xs = xs;
        let sum = safe_mps!(label = "spawned", device = Device::Mps, [xs] => async |dev| {
            tokio::task::yield_now().await;
            xs.f_to_device(dev)?.f_sum(Kind::Float)
        })
        .await;
        (sum, xs.device())
    });
    let (sum, xs_device) = rt.block_on(task).unwrap();
    assert_eq!(sum.unwrap().double_value(&[]), 3.0);
    assert_eq!(xs_device, Device::Cpu);
    assert_eq!(mps::stats().site("spawned").unwrap().fallbacks, 1);
}

/// Stacked item forms, timed on a test clock: each attempt takes 150 ms of
/// it (a timeout used as a sleep, which the clock jumps over), the first on
/// MPS (PyTorch's real error, through `?`), the retry on CPU.
#[cfg(feature = "test-util")]
mod stacked {
    use super::*;
    use opguard::test_clock::TestClock;
    use opguard::{TimeoutError, timeout_async};

    /// A clock that jumps to the next deadline after 100 ms of real time in
    /// which no timeout moved. It waits for a woken timeout to be polled
    /// whatever its settle; the 100 ms are for what the task does between
    /// that and starting its next timeout (the real MPS error, a fallback's
    /// log line, a tensor moved), which on a loaded machine can take longer
    /// than the default 1 ms.
    fn clock() -> TestClock {
        let clock = TestClock::new();
        clock.set_settle(Some(Duration::from_millis(100)));
        clock
    }

    async fn slow_attempt(xs: &Tensor, attempts: &Cell<u32>) -> Result<Tensor, TchError> {
        attempts.set(attempts.get() + 1);
        let slept = timeout_async!(Duration::from_millis(150), std::future::pending::<()>()).await;
        assert!(slept.is_err());
        let dev = if attempts.get() == 1 {
            Device::Mps
        } else {
            Device::Cpu
        };
        xs.f_to_device(dev)?.f_mul_scalar(2.0)
    }

    timeout_async! {
        /// The timeout first: one deadline for both attempts.
        #[timeout(label = "stacked_outer", Duration::from_millis(250))]
        #[safe_mps(label = "stacked_inner", device = Device::Mps)]
        async fn one_deadline(xs: &Tensor, attempts: &Cell<u32>) -> Result<Tensor, TchError> {
            slow_attempt(xs, attempts).await
        }
    }

    safe_mps! {
        /// `safe_mps` first: each attempt has the whole timeout.
        #[safe_mps(label = "stacked_outer_mps", device = Device::Mps)]
        #[timeout(label = "per_attempt", Duration::from_millis(250))]
        async fn a_deadline_per_attempt(
            xs: &Tensor,
            attempts: &Cell<u32>,
        ) -> Result<Tensor, TchError> {
            slow_attempt(xs, attempts).await
        }
    }

    safe_mps! {
        /// `safe_mps` first, and the attempt on MPS hangs: its timeout is the
        /// result, with no retry (a timeout is no MPS error).
        #[safe_mps(device = Device::Mps)]
        #[timeout(label = "hung_on_mps", Duration::from_millis(250))]
        async fn hangs_on_mps(attempts: &Cell<u32>) -> u32 {
            attempts.set(attempts.get() + 1);
            std::future::pending().await
        }
    }

    timeout_async! {
        /// The macro's own attribute left out: its defaults, outermost
        /// (`timeout_async!`'s 30 s around the MPS work).
        #[safe_mps([xs])]
        async fn default_timeout_around(xs: Tensor) -> Tensor {
            &xs * 3
        }
    }

    impl Net {
        timeout_async! {
            #[timeout(label = "timed_forward", 5)]
            #[safe_mps([self])]
            async fn timed_forward(&mut self, xs: &Tensor) -> Result<Tensor, TchError> {
                self.weigh(xs)
            }
        }

        safe_mps! {
            #[safe_mps([self])]
            #[timeout(label = "forward_timed", 5)]
            async fn forward_timed(&mut self, xs: &Tensor) -> Result<Tensor, TchError> {
                futures_timer::Delay::new(Duration::from_millis(1)).await;
                self.weigh(xs)
            }
        }
    }

    #[test]
    fn stacked_methods_move_self_before_the_retry_in_either_order() {
        let _g = fresh();
        let xs = Tensor::ones([3], (Kind::Float, Device::Cpu));
        let mut net = Net::on_mps();
        let out = block_on(net.timed_forward(&xs)).unwrap().unwrap();
        assert_eq!(out.sum(Kind::Float).double_value(&[]), 6.0);
        assert_eq!((net.moves, net.on), (1, Device::Cpu));

        net.on = Device::Mps;
        let out = block_on(net.forward_timed(&xs)).unwrap().unwrap();
        assert_eq!(out.sum(Kind::Float).double_value(&[]), 6.0);
        assert_eq!((net.moves, net.on), (2, Device::Cpu));
        assert_eq!(mps::stats().fallbacks, 2);
    }

    timeout_async! {
        /// Generics and a where clause pass through both.
        #[safe_mps(label = "generic_stacked", [xs])]
        #[timeout(Duration::from_secs(5))]
        pub(crate) async fn scaled_by<'a, T>(xs: &'a mut Tensor, by: T) -> Tensor
        where
            T: Into<f64> + Copy + Send,
        {
            futures_timer::Delay::new(Duration::from_millis(1)).await;
            &*xs * by.into()
        }
    }

    #[test]
    fn stacked_item_forms_keep_generics_and_where_clauses() {
        let _g = fresh();
        testing::inject_mps_failures(1);
        let mut xs = Tensor::ones([2], (Kind::Float, Device::Cpu));
        // `timeout_async!` with `#[safe_mps]` listed first: MPS work around the timeout.
        let t = block_on(scaled_by(&mut xs, 4u8)).expect("in time");
        assert_eq!(t.sum(Kind::Float).double_value(&[]), 8.0);
        assert_eq!(mps::stats().site("generic_stacked").unwrap().fallbacks, 1);
    }

    #[test]
    fn a_timeout_listed_first_has_one_deadline_for_both_attempts() {
        let _g = fresh();
        let clock = clock();
        let xs = Tensor::ones([3], (Kind::Float, Device::Cpu));
        let attempts = Cell::new(0);
        let out: Result<Result<Tensor, TchError>, TimeoutError> =
            block_on(clock.bind(one_deadline(&xs, &attempts)));
        // Each attempt alone fits in 250 ms; the two together do not.
        let e = out.unwrap_err();
        assert!(e.is_elapsed());
        assert_eq!(e.label(), Some("stacked_outer"));
        assert_eq!(e.duration(), Some(Duration::from_millis(250)));
        assert!(clock.elapsed() >= Duration::from_millis(250));
        assert_eq!(attempts.get(), 2);
        // The retry was cut short: abandoned, neither a fallback that worked nor one that failed.
        let s = mps::stats();
        assert_eq!(
            (
                s.mps_errors,
                s.fallbacks,
                s.failed_fallbacks,
                s.abandoned_fallbacks
            ),
            (1, 0, 0, 1)
        );
        assert_eq!(logs_containing("'stacked_inner': MPS error at").len(), 1);
    }

    #[test]
    fn safe_mps_listed_first_times_each_attempt_and_falls_back_from_an_error_inside() {
        let _g = fresh();
        let clock = clock();
        let xs = Tensor::ones([3], (Kind::Float, Device::Cpu));
        let attempts = Cell::new(0);
        let out = block_on(clock.bind(a_deadline_per_attempt(&xs, &attempts)));
        let t = out
            .expect("each attempt is in time")
            .expect("the CPU retry works");
        assert_eq!(t.device(), Device::Cpu);
        assert_eq!(t.sum(Kind::Float).double_value(&[]), 6.0);
        assert_eq!(clock.elapsed(), Duration::from_millis(300));
        assert_eq!(attempts.get(), 2);
        let s = mps::stats();
        assert_eq!((s.mps_errors, s.fallbacks), (1, 1));
        assert_eq!(
            logs_containing("'stacked_outer_mps': MPS error at").len(),
            1
        );
    }

    #[test]
    fn a_timeout_inside_mps_work_is_its_result_and_no_fallback() {
        let _g = fresh();
        let clock = clock();
        let attempts = Cell::new(0);
        let e = block_on(clock.bind(hangs_on_mps(&attempts))).unwrap_err();
        assert!(e.is_elapsed());
        assert_eq!(e.label(), Some("hung_on_mps"));
        assert_eq!(clock.elapsed(), Duration::from_millis(250));
        assert_eq!(attempts.get(), 1);
        let s = mps::stats();
        assert_eq!((s.mps_errors, s.fallbacks), (0, 0));
    }

    #[test]
    fn the_macros_own_wrapper_goes_around_when_its_attribute_is_left_out() {
        let _g = fresh();
        testing::inject_mps_failures(1);
        let xs = Tensor::ones([2], (Kind::Float, Device::Cpu));
        // Named owned tensors are held by `&mut`: the future can be spawned.
        fn spawnable<F: std::future::Future + Send>(f: F) -> F {
            f
        }
        let out: Result<Tensor, TimeoutError> = block_on(spawnable(default_timeout_around(xs)));
        assert_eq!(out.unwrap().sum(Kind::Float).double_value(&[]), 6.0);
        assert_eq!(mps::stats().fallbacks, 1);
    }
}
