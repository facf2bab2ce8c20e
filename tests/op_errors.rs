//! Op-level MPS errors pin their call site, not MPS: a training step with one
//! op that MPS cannot run and several that it can, on real libtorch.
//!
//! This machine's PyTorch has no MPS, so a real MPS call fails with a
//! device-level error. Here the op-level path is driven by work that returns
//! PyTorch's own op-level text (what `The operator ... is not currently
//! implemented for the MPS device` looks like on a Mac), and a "working" site
//! is work that succeeds with `dev` = MPS without allocating there.
#![cfg(feature = "tch")]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use common::mps::{fresh, logs_containing};
use opguard::mps::mps_error_kind;
use opguard::mps::{self, MpsErrorKind, MpsState};
use opguard::safe_mps;
use tch::{Device, Kind, TchError, Tensor};

/// PyTorch's message for an operator without an MPS kernel (ATen/mps/MPSFallback.mm).
const NOT_ON_MPS: &str = "The operator 'aten::_fft_r2c' is not currently implemented for the MPS device. If you want this op to be considered for addition please comment on https://github.com/pytorch/pytorch/issues/141287 and mention use-case, that resulted in missing op as well as commit hash. As a temporary fix, you can set the environment variable `PYTORCH_ENABLE_MPS_FALLBACK=1` to use the CPU as a fallback for this op. WARNING: this will be slower than running natively on MPS.";

/// How often the spectrum op was asked to run on MPS.
static SPECTRUM_ON_MPS: AtomicUsize = AtomicUsize::new(0);

/// One step: normalise, project, a spectrum (not on MPS), a loss. Each op is
/// its own `safe_mps!` call site asking for MPS.
fn step(xs: &Tensor, w: &Tensor) -> Result<f64, TchError> {
    let normalised = safe_mps!(label = "normalise", device = Device::Mps, |dev| {
        assert_eq!(dev, Device::Mps, "a working site keeps MPS");
        xs.f_sub(&xs.f_mean(Kind::Float)?)
    })?;
    let projected = safe_mps!(label = "project", device = Device::Mps, |dev| {
        assert_eq!(dev, Device::Mps, "a working site keeps MPS");
        normalised.f_matmul(w)
    })?;
    let spectrum = safe_mps!(label = "spectrum", device = Device::Mps, |dev| {
        if dev == Device::Mps {
            SPECTRUM_ON_MPS.fetch_add(1, SeqCst);
            return Err(TchError::Torch(NOT_ON_MPS.into()));
        }
        projected.f_abs()
    })?;
    safe_mps!(label = "loss", device = Device::Mps, |dev| {
        assert_eq!(dev, Device::Mps, "a working site keeps MPS");
        spectrum.f_mean(Kind::Float)?.f_double_value(&[])
    })
}

#[test]
fn pytorchs_op_level_text_is_judged_op_level() {
    assert_eq!(mps_error_kind(NOT_ON_MPS), Some(MpsErrorKind::Op));
    assert_eq!(
        mps_error_kind(&TchError::Torch(NOT_ON_MPS.into()).to_string()),
        Some(MpsErrorKind::Op)
    );
}

#[test]
fn one_unsupported_op_runs_on_cpu_after_the_first_step_and_the_rest_stays_on_mps() {
    let _g = fresh();
    tch::manual_seed(5);
    let xs = Tensor::randn([8, 4], (Kind::Float, Device::Cpu));
    let w = Tensor::randn([4, 3], (Kind::Float, Device::Cpu));
    let expected = ((&xs - xs.mean(Kind::Float)).matmul(&w))
        .abs()
        .mean(Kind::Float)
        .double_value(&[]);
    SPECTRUM_ON_MPS.store(0, SeqCst);
    for _ in 0..5 {
        let loss = step(&xs, &w).unwrap();
        assert!((loss - expected).abs() < 1e-6, "{loss} vs {expected}");
    }

    // The failing op tried MPS once; after that, straight to CPU.
    assert_eq!(SPECTRUM_ON_MPS.load(SeqCst), 1);
    let s = mps::stats();
    let spectrum = s.site("spectrum").unwrap();
    assert_eq!(
        (
            spectrum.mps_attempts,
            spectrum.op_errors,
            spectrum.device_errors,
            spectrum.fallbacks,
            spectrum.skipped,
        ),
        (1, 1, 0, 1, 4)
    );
    assert!(spectrum.pinned);
    assert_eq!(spectrum.file, "tests/op_errors.rs");
    // The other sites tried MPS every step and never failed.
    for label in ["normalise", "project", "loss"] {
        let site = s.site(label).unwrap();
        assert_eq!(
            (
                site.mps_attempts,
                site.mps_errors(),
                site.skipped,
                site.pinned
            ),
            (5, 0, 0, false),
            "{label}"
        );
    }
    // MPS as a whole is untouched.
    assert_eq!(
        (s.state, s.consecutive_failures, s.pinned_sites, s.op_errors),
        (MpsState::Enabled, 0, 1, 1)
    );

    // One warning in all, naming the op's site, the error and the pin.
    let warnings = logs_containing("WARN");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let w = &warnings[0];
    assert!(
        w.starts_with("WARN 'spectrum': MPS op error at tests/op_errors.rs:"),
        "{w}"
    );
    assert!(
        w.contains("is not currently implemented for the MPS device"),
        "{w}"
    );
    assert!(
        w.ends_with(
            "; retrying on CPU, and this call site runs on CPU for 60s, then tries MPS once"
        ),
        "{w}"
    );
}

#[test]
fn after_the_cooldown_the_pinned_op_is_tried_on_mps_once_more() {
    let _g = fresh();
    mps::set_cooldown(0.05).unwrap();
    let xs = Tensor::ones([2, 4], (Kind::Float, Device::Cpu));
    let w = Tensor::ones([4, 3], (Kind::Float, Device::Cpu));
    SPECTRUM_ON_MPS.store(0, SeqCst);
    step(&xs, &w).unwrap();
    step(&xs, &w).unwrap();
    assert_eq!(SPECTRUM_ON_MPS.load(SeqCst), 1);
    std::thread::sleep(std::time::Duration::from_millis(80));
    step(&xs, &w).unwrap();
    step(&xs, &w).unwrap();
    assert_eq!(
        SPECTRUM_ON_MPS.load(SeqCst),
        2,
        "one trial, failed, pinned again"
    );
    let spectrum = mps::stats().site("spectrum").cloned().unwrap();
    assert_eq!((spectrum.times_pinned, spectrum.pinned), (2, true));
    assert_eq!(
        logs_containing("this call site stays on CPU for another").len(),
        1
    );
}

#[test]
fn real_device_level_errors_still_count_toward_disabling_mps() {
    let _g = fresh();
    // A real MPS allocation: this machine's PyTorch is not linked with MPS.
    for _ in 0..3 {
        let out = safe_mps!(label = "alloc", device = Device::Mps, |dev| {
            Tensor::f_ones([2], (Kind::Float, dev))
        });
        assert_eq!(out.unwrap().device(), Device::Cpu);
    }
    let s = mps::stats();
    let site = s.site("alloc").unwrap();
    assert_eq!(
        (site.device_errors, site.op_errors, site.pinned),
        (3, 0, false)
    );
    assert_eq!((s.state, s.times_disabled), (MpsState::Disabled, 1));
}
