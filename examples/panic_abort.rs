//! `safe_mps!` in a program built with `panic = "abort"`, as many release
//! profiles are.
//!
//!     . scripts/torch-env.sh && cargo run --features tch --profile panic-abort --example panic_abort
//!     . scripts/torch-env.sh && cargo run --features tch --profile panic-abort --example panic_abort -- plain
//!
//! There a panic ends the process as soon as the panic hook has printed it:
//! nothing can catch it, `safe_mps!` included. tch reports an error in two
//! ways, and only one of them survives:
//! - the `f_` methods return `Err(TchError)`, which `safe_mps!` sees and
//!   falls back on, whatever the panic strategy (the first run);
//! - the plain methods panic, which ends the process, with the panic's
//!   message printed as usual (`-- plain`; on a machine without MPS, where
//!   PyTorch refuses the device).
//!
//! So under `panic = "abort"`, write MPS work with the `f_` methods and `?`.
//! (The `panic-abort` profile is this crate's own, in its Cargo.toml: a
//! debug build with `panic = "abort"`.)

use opguard::{mps, safe_mps};
use tch::{Device, Kind, Tensor};

fn main() {
    let xs = Tensor::ones([2, 3], (Kind::Float, Device::Cpu));
    if std::env::args().nth(1).as_deref() == Some("plain") {
        // A plain method: its MPS error is a panic, which ends the process.
        let sum = safe_mps!(device = Device::Mps, |dev| {
            xs.to_device(dev).sum(Kind::Float)
        });
        println!("ran on MPS: sum {}", sum.double_value(&[]));
        return;
    }
    // The `f_` methods: an MPS error is a value, and the work runs again on CPU.
    let sum = safe_mps!(label = "sum", device = Device::Mps, |dev| {
        xs.f_to_device(dev)?.f_sum(Kind::Float)
    })
    .expect("the CPU retry works");
    let fallbacks = mps::stats().fallbacks;
    println!(
        "sum {} on {:?}, after {fallbacks} fallback(s) to CPU",
        sum.double_value(&[]),
        sum.device()
    );
}
