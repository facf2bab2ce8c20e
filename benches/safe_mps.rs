//! The cost of `safe_mps!` on real libtorch, beside the bare tch op
//! (a 64x64 matmul).
//!
//!     . scripts/torch-env.sh && cargo bench --features tch --bench safe_mps
//!
//! - `happy/*`: the op succeeds at once (this machine has no MPS, so the
//!   device form runs on CPU; the tensor form goes through the registry's
//!   guarded path, catching and judging the result).
//! - `mps_disabled/*`: the registry has disabled MPS, so the call goes
//!   straight to CPU, tensors moved first; beside a plain CPU op.
//! - `first_fallback`: a forced MPS attempt that fails for real (PyTorch builds
//!   its error and backtrace), the warning, and the CPU retry.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use opguard::{mps, safe_mps};
use tch::{Device, Kind, Tensor};

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
    mps::reset();
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
    mps::reset();
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
            mps::reset();
            black_box(safe_mps!(device = Device::Mps, |dev| a
                .f_to_device(dev)?
                .f_matmul(&b)))
        })
    });
    g.finish();
}

criterion_group!(benches, happy, disabled, first_fallback);
criterion_main!(benches);
