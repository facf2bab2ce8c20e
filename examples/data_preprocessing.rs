//! Data preprocessing: tensor ops on a batch struct with
//! optional parts, under `safe_mps!`'s item form.
//!
//!     . scripts/torch-env.sh && cargo run --features tch --example data_preprocessing
//!
//! `Batch` implements `MoveToCpu` by moving its fields, the optional mask
//! included, so `#[safe_mps([batch])]` can move it whole before the CPU retry.
//! The work runs where the batch is: on MPS where the machine has it, and on
//! CPU after a fallback. This machine has no MPS, so the example injects one
//! MPS failure, as a test would, to walk the fallback path.

use opguard::mps::{self, MoveToCpu};
use opguard::{safe_mps, testing};
use tch::{Device, Kind, TchError, Tensor};

/// Raw images (N, 1, 8, 8) in 0..255, class labels, and an optional mask of valid rows.
struct Batch {
    images: Tensor,
    labels: Tensor,
    mask: Option<Tensor>,
}

impl MoveToCpu for Batch {
    fn move_to_cpu(&mut self) {
        self.images.move_to_cpu();
        self.labels.move_to_cpu();
        self.mask.move_to_cpu();
    }

    fn is_on_mps(&self) -> bool {
        self.images.is_on_mps() || self.labels.is_on_mps() || self.mask.is_on_mps()
    }
}

/// What the model gets: normalised images, one-hot labels.
struct Prepared {
    images: Tensor,
    one_hot: Tensor,
}

/// MPS where the machine has it.
fn preferred() -> Device {
    if tch::utils::has_mps() {
        Device::Mps
    } else {
        Device::Cpu
    }
}

safe_mps! {
    /// Normalises, masks and one-hot encodes a batch on MPS, or on CPU after an MPS error.
    #[safe_mps(label = "preprocess", [batch])]
    fn preprocess(batch: &mut Batch, classes: i64) -> Result<Prepared, TchError> {
        // Wherever the batch is now: after a fallback, on CPU.
        let dev = batch.images.device();
        let mut images = batch.images.f_to_device(dev)?.f_to_kind(Kind::Float)? / 255.0;
        images = (&images - images.f_mean(Kind::Float)?) / images.f_std(true)?;
        if let Some(mask) = &batch.mask {
            let keep = mask.f_to_device(dev)?.f_view([-1, 1, 1, 1])?;
            images = images.f_mul(&keep)?;
        }
        let one_hot = batch.labels.f_to_device(dev)?.f_one_hot(classes)?.f_to_kind(Kind::Float)?;
        Ok(Prepared { images, one_hot })
    }
}

fn main() -> Result<(), TchError> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    tch::manual_seed(5);
    let dev = preferred();
    let mut batch = Batch {
        images: Tensor::randint(256, [16, 1, 8, 8], (Kind::Uint8, dev)),
        labels: Tensor::randint(10, [16], (Kind::Int64, dev)),
        mask: Some(Tensor::ones([16], (Kind::Float, dev))),
    };
    testing::inject_mps_failures(1);
    let prepared = preprocess(&mut batch, 10)?;
    println!(
        "images {:?} (mean {:.3}, std {:.3}) and labels {:?} on {:?}",
        prepared.images.size(),
        prepared.images.mean(Kind::Float).double_value(&[]),
        prepared.images.std(true).double_value(&[]),
        prepared.one_hot.size(),
        prepared.images.device(),
    );
    let s = mps::stats();
    println!(
        "MPS registry: {} MPS errors (injected), {} fallbacks",
        s.mps_errors, s.fallbacks
    );
    assert_eq!(s.fallbacks, 1);
    Ok(())
}
