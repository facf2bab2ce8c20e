//! The cost of `safe_mps!` on real libtorch, beside the bare tch op
//! (a 64x64 matmul).
//!
//!     . scripts/torch-env.sh && cargo bench --features tch --bench safe_mps
//!
//! - `happy/*`: the op succeeds at once (this machine has no MPS, so the
//!   device form runs on CPU; the tensor form probes its tensors' devices,
//!   finds nothing on MPS, and runs once).
//! - `mps_disabled/*`: the registry has disabled MPS, so the call goes
//!   straight to CPU, tensors moved first; beside a plain CPU op.
//! - `first_fallback`: a forced MPS attempt that fails for real (PyTorch builds
//!   its error and backtrace), the warning, and the CPU retry.
//! - `guard/*`: what `safe_mps!` itself costs, on work that does nothing (it
//!   returns its `dev`), beside the same work bare: MPS admitted (the call
//!   site's pin and the process breaker read, the attempt counted, the panic
//!   guard, the verdict), work named for CPU (nothing to guard), the call
//!   site pinned to CPU by an op-level error, and MPS disabled for the
//!   process. Set beside `happy/bare`, this is the
//!   share of a 64x64 matmul that the registry takes. The `*_word` cases
//!   return one word, as work that returns a `Tensor` does (a `Device` is
//!   two, and moving a two-word value through memory stalls the bare work
//!   too); the `*_contended` cases run a call while another thread makes
//!   the same call, at the same site, without pause.

use std::hint::black_box;

use criterion::{Criterion, criterion_group};
use opguard::{mps, safe_mps, testing};
use tch::{Device, Kind, TchError, Tensor};

/// PyTorch's op-level text for an operator without an MPS kernel.
const NOT_ON_MPS: &str =
    "The operator 'aten::_fft_r2c' is not currently implemented for the MPS device.";

/// Work that does nothing on MPS (it allocates nothing there, so it
/// succeeds on any machine), at its own call site.
#[inline(never)]
fn admitted() -> Device {
    safe_mps!(label = "admitted", device = Device::Mps, |dev| black_box(
        dev
    ))
}

/// [`admitted`] with a one-word result, as work returning a `Tensor` has.
#[inline(never)]
fn admitted_word() -> u64 {
    safe_mps!(label = "admitted_word", device = Device::Mps, |dev| {
        u64::from(black_box(dev) == Device::Mps)
    })
}

/// [`on_cpu`] with a one-word result.
#[inline(never)]
fn on_cpu_word() -> u64 {
    safe_mps!(label = "on_cpu_word", device = Device::Cpu, |dev| {
        u64::from(black_box(dev) == Device::Mps)
    })
}

/// Work named for CPU: nothing to guard, so it runs once (what a call pays
/// on a machine without MPS, where CPU is the preferred device).
#[inline(never)]
fn on_cpu() -> Device {
    safe_mps!(label = "on_cpu", device = Device::Cpu, |dev| black_box(dev))
}

/// The tensor form with a tensor on CPU: its device is asked (a call into
/// libtorch), nothing is on MPS, and the work runs once.
#[inline(never)]
fn probed_on_cpu(mut t: &Tensor) -> i64 {
    safe_mps!(label = "probed_on_cpu", [t] => black_box(t.dim() as i64))
}

/// The same, at a call site that an op-level error pins to CPU (`fail`).
#[inline(never)]
fn pinned(fail: bool) -> Result<Device, TchError> {
    safe_mps!(label = "pinned", device = Device::Mps, |dev| {
        if black_box(fail) && dev == Device::Mps {
            return Err(TchError::Torch(NOT_ON_MPS.into()));
        }
        Ok(black_box(dev))
    })
}

/// A call at the pinned site that would not fail (what callgrind counts).
#[inline(never)]
fn pinned_call() -> Result<Device, TchError> {
    pinned(false)
}

/// The same work as [`pinned`], at a call site of its own, called while MPS
/// is disabled for the process.
#[inline(never)]
fn while_disabled() -> Result<Device, TchError> {
    safe_mps!(label = "disabled", device = Device::Mps, |dev| {
        if black_box(false) && dev == Device::Mps {
            return Err(TchError::Torch(NOT_ON_MPS.into()));
        }
        Ok(black_box(dev))
    })
}

fn operands() -> (Tensor, Tensor) {
    tch::manual_seed(0);
    (
        Tensor::randn([64, 64], (Kind::Float, Device::Cpu)),
        Tensor::randn([64, 64], (Kind::Float, Device::Cpu)),
    )
}

fn happy(c: &mut Criterion) {
    tch::set_num_threads(1);
    let (mut a, mut b) = operands();
    testing::reset_mps();
    let mut g = c.benchmark_group("happy");
    g.bench_function("bare", |bench| bench.iter(|| black_box(a.matmul(&b))));
    // The device form's body moves its input to `dev`; so does this bare twin.
    g.bench_function("bare_to_device", |bench| {
        bench.iter(|| black_box(a.to_device(Device::Cpu).matmul(&b)))
    });
    g.bench_function("device_form", |bench| {
        bench.iter(|| black_box(safe_mps!(|dev| a.to_device(dev).matmul(&b))))
    });
    g.bench_function("tensor_form", |bench| {
        bench.iter(|| black_box(safe_mps!([a, b] => a.matmul(&b))))
    });
    g.bench_function("bare_f", |bench| bench.iter(|| black_box(a.f_matmul(&b))));
    g.bench_function("tensor_form_f", |bench| {
        bench.iter(|| black_box(safe_mps!([a, b] => a.f_matmul(&b))))
    });
    g.finish();
}

fn disabled(c: &mut Criterion) {
    tch::set_num_threads(1);
    let (mut a, b) = operands();
    testing::reset_mps();
    mps::set_failure_threshold(1);
    mps::set_cooldown(3600).unwrap();
    let _ = safe_mps!(device = Device::Mps, |dev| a.f_to_device(dev));
    assert_eq!(mps::stats().state, mps::MpsState::Disabled);
    let mut g = c.benchmark_group("mps_disabled");
    g.bench_function("plain_cpu", |bench| {
        bench.iter(|| black_box(a.to_device(Device::Cpu).matmul(&b)))
    });
    g.bench_function("safe_mps", |bench| {
        bench.iter(|| {
            black_box(safe_mps!(device = Device::Mps, [a] => |dev| a.to_device(dev).matmul(&b)))
        })
    });
    g.finish();
    mps::set_failure_threshold(mps::DEFAULT_FAILURE_THRESHOLD);
}

fn first_fallback(c: &mut Criterion) {
    let (a, b) = operands();
    log::set_max_level(log::LevelFilter::Off);
    let mut g = c.benchmark_group("first_fallback");
    g.sample_size(20);
    g.bench_function("safe_mps", |bench| {
        bench.iter(|| {
            testing::reset_mps();
            black_box(safe_mps!(device = Device::Mps, |dev| a
                .f_to_device(dev)?
                .f_matmul(&b)))
        })
    });
    g.finish();
}

fn guard(c: &mut Criterion) {
    testing::reset_mps();
    mps::set_failure_threshold(1);
    mps::set_cooldown(3600).unwrap();
    log::set_max_level(log::LevelFilter::Off);
    let mut g = c.benchmark_group("guard");
    g.bench_function("bare", |bench| {
        bench.iter(|| black_box(black_box(Device::Mps)))
    });
    g.bench_function("mps_admitted", |bench| bench.iter(|| black_box(admitted())));
    assert_eq!(admitted(), Device::Mps);
    g.bench_function("on_cpu", |bench| bench.iter(|| black_box(on_cpu())));
    g.bench_function("bare_word", |bench| {
        bench.iter(|| black_box(u64::from(black_box(Device::Mps) == Device::Mps)))
    });
    g.bench_function("mps_admitted_word", |bench| {
        bench.iter(|| black_box(admitted_word()))
    });
    assert_eq!(admitted_word(), 1);
    g.bench_function("on_cpu_word", |bench| {
        bench.iter(|| black_box(on_cpu_word()))
    });
    contended(&mut g, "mps_admitted_word_contended", admitted_word);
    let _ = pinned(true);
    assert!(mps::stats().site("pinned").unwrap().pinned);
    assert_eq!(mps::stats().state, mps::MpsState::Enabled);
    g.bench_function("site_pinned", |bench| {
        bench.iter(|| black_box(pinned_call()))
    });
    contended(&mut g, "site_pinned_contended", pinned_call);
    assert_eq!(pinned(false).unwrap(), Device::Cpu);
    let _ = safe_mps!(device = Device::Mps, |dev| Tensor::f_ones(
        [1],
        (Kind::Float, dev)
    ));
    assert_eq!(mps::stats().state, mps::MpsState::Disabled);
    g.bench_function("mps_disabled", |bench| {
        bench.iter(|| black_box(while_disabled()))
    });
    assert_eq!(while_disabled().unwrap(), Device::Cpu);
    g.finish();
    mps::set_failure_threshold(mps::DEFAULT_FAILURE_THRESHOLD);
    testing::reset_mps();
}

/// `call` while another thread makes the same call, at the same site,
/// without pause (on this 2-core machine the two run side by side).
fn contended<T>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    call: fn() -> T,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                black_box(call());
            }
        });
        g.bench_function(name, |bench| bench.iter(|| black_box(call())));
        stop.store(true, Ordering::Relaxed);
    });
}

/// The bare 64x64 matmul, as a function callgrind can find.
#[inline(never)]
fn bare_matmul(a: &Tensor, b: &Tensor) -> Tensor {
    a.matmul(b)
}

/// `OPGUARD_CALLGRIND_CALLS=n`: calls each case `n` times, without criterion,
/// for `scripts/mps_callgrind.sh`, which counts the instructions inside each
/// `#[inline(never)]` function per call.
fn instructions(n: usize) {
    tch::set_num_threads(1);
    let (a, b) = operands();
    log::set_max_level(log::LevelFilter::Off);
    testing::reset_mps();
    mps::set_failure_threshold(1);
    mps::set_cooldown(3600).unwrap();
    for _ in 0..n {
        drop(black_box(bare_matmul(&a, &b)));
        black_box(admitted());
        black_box(admitted_word());
    }
    for _ in 0..n {
        black_box(on_cpu());
        black_box(probed_on_cpu(&a));
    }
    let _ = pinned(true);
    for _ in 0..n {
        black_box(pinned_call().unwrap());
    }
    let _ = safe_mps!(device = Device::Mps, |dev| Tensor::f_ones(
        [1],
        (Kind::Float, dev)
    ));
    for _ in 0..n {
        black_box(while_disabled().unwrap());
    }
    assert_eq!(mps::stats().state, mps::MpsState::Disabled);
}

criterion_group!(benches, happy, disabled, first_fallback, guard);

fn main() {
    if let Ok(n) = std::env::var("OPGUARD_CALLGRIND_CALLS") {
        instructions(n.parse().expect("OPGUARD_CALLGRIND_CALLS is a number"));
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
