//! Moving tensors, nested ones and a model's parameters, from MPS to CPU,
//! and telling whether any of them is on MPS.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasher;

use once_cell::sync::Lazy;
use tch::{Device, TchError, Tensor};

use super::call::Dev;
use super::classify::is_mps_error;

static HAS_MPS: Lazy<bool> = Lazy::new(tch::utils::has_mps);

impl Dev for Device {
    #[inline]
    fn cpu() -> Self {
        Device::Cpu
    }

    #[inline]
    fn is_mps(self) -> bool {
        self == Device::Mps
    }

    #[inline]
    fn preferred() -> Self {
        if *HAS_MPS { Device::Mps } else { Device::Cpu }
    }
}

/// A value whose tensors can be moved to CPU in place, as `safe_mps!` does
/// with the values named in `[..] =>` before its CPU retry.
///
/// Implemented for [`Tensor`] and `&Tensor`, for a model's parameters
/// ([`tch::nn::VarStore`]), and recursively for `Option`, `Vec`, `VecDeque`,
/// slices, arrays, tuples (up to 8), `Box`, `&mut`, and the values of
/// `HashMap` and `BTreeMap`. Implement it for your own structs by calling it on
/// their fields:
///
/// ```
/// use opguard::mps::MoveToCpu;
/// use tch::Tensor;
///
/// struct Batch {
///     features: Tensor,
///     labels: Option<Tensor>,
/// }
///
/// impl MoveToCpu for Batch {
///     fn move_to_cpu(&mut self) {
///         self.features.move_to_cpu();
///         self.labels.move_to_cpu();
///     }
///
///     fn is_on_mps(&self) -> bool {
///         self.features.is_on_mps() || self.labels.is_on_mps()
///     }
/// }
/// ```
///
/// A tensor is moved in place (`set_data`, as `VarStore::set_device` does):
/// every handle to it, such as a layer's weight, sees it on CPU afterwards. A
/// tensor already on CPU is left alone. A tensor that libtorch cannot copy to
/// CPU stays where it is, with a warning that names its device and
/// libtorch's reason; the CPU retry runs all the same, and its error, if it
/// fails for that, is the call's. Results computed by a CPU retry stay on
/// CPU; move them back yourself if you need them on MPS.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be moved to CPU by `safe_mps!`",
    label = "named in `[..] =>`, so its tensors move to CPU before the retry",
    note = "implement `opguard::mps::MoveToCpu` for it, calling `move_to_cpu` and `is_on_mps` on each of its tensor fields"
)]
pub trait MoveToCpu {
    /// Moves every tensor in `self` to CPU, in place.
    fn move_to_cpu(&mut self);

    /// Whether any tensor in `self` is on MPS.
    ///
    /// `safe_mps!` asks this of the named values when the call's device is
    /// not MPS: work whose tensors are all elsewhere runs once, untouched by
    /// the registry, since it cannot tell anything about MPS.
    fn is_on_mps(&self) -> bool;
}

fn on_mps(t: &Tensor) -> bool {
    t.defined() && t.device() == Device::Mps
}

/// Moves `t`'s data to CPU in place, so that every handle to it follows; a
/// gradient it has goes along, so that the next backward pass on CPU can
/// accumulate into it. A move that fails is logged, and the tensor stays.
fn move_data(t: &Tensor) {
    if let Err(failed) = try_move_data(t) {
        failed.log();
    }
}

/// [`move_data`], with the failure handed back rather than logged: for
/// callers that hold a lock a logger might take.
fn try_move_data(t: &Tensor) -> Result<(), FailedMove> {
    if !t.defined() || t.device() == Device::Cpu {
        return Ok(());
    }
    let from = t.device();
    tch::no_grad(|| {
        set_data_to_cpu(t)?;
        let grad = t.grad();
        if grad.defined() && grad.device() != Device::Cpu {
            set_data_to_cpu(&grad)?;
        }
        Ok(())
    })
    .map_err(|error| FailedMove { from, error })
}

/// A tensor that could not be moved to CPU.
struct FailedMove {
    from: Device,
    error: TchError,
}

impl FailedMove {
    fn log(&self) {
        let FailedMove { from, error } = self;
        // PyTorch's reason, without the C++ backtrace that follows it.
        let error = error.to_string();
        let reason = crate::report::mps::headline(&error);
        log::warn!(target: "opguard", "could not move a {from:?} tensor to CPU: {reason}");
    }
}

fn set_data_to_cpu(t: &Tensor) -> Result<(), TchError> {
    let mut handle = t.shallow_clone();
    let cpu = handle.f_to_device(Device::Cpu)?;
    handle.f_set_data(&cpu)
}

impl MoveToCpu for Tensor {
    fn move_to_cpu(&mut self) {
        move_data(self);
    }

    fn is_on_mps(&self) -> bool {
        on_mps(self)
    }
}

impl MoveToCpu for &Tensor {
    fn move_to_cpu(&mut self) {
        move_data(self);
    }

    fn is_on_mps(&self) -> bool {
        on_mps(self)
    }
}

/// A model's parameters. Each variable is judged by its own device, not by
/// `VarStore::device()`, which a move that failed half-way leaves wrong.
///
/// tch's `VarStore::set_device` panics on an MPS error while it holds the
/// store's lock, which poisons it: every later use of the store, and of an
/// optimizer built on it, would panic. Moving the store clears that poison
/// first (the variables themselves are whole: each move is one `set_data`),
/// so that a model whose `vs.set_device(dev)` failed inside `safe_mps!`
/// trains on CPU afterwards.
impl MoveToCpu for tch::nn::VarStore {
    fn move_to_cpu(&mut self) {
        self.variables_.clear_poison();
        // Failures are logged once the store's lock is released: a logger
        // that looks at the model (its parameters, an optimizer on it) takes
        // that lock, and would wait on this thread for good.
        let failed: Vec<FailedMove> = {
            let variables = self.variables_.lock().unwrap_or_else(|p| p.into_inner());
            variables
                .named_variables
                .values()
                .filter_map(|t| try_move_data(t).err())
                .collect()
        };
        failed.iter().for_each(FailedMove::log);
        // Now a no-op for the data; it makes `device()` say CPU, so that
        // variables added later are made there.
        if failed.is_empty() {
            tch::no_grad(|| self.set_device(Device::Cpu));
        }
    }

    fn is_on_mps(&self) -> bool {
        let variables = self.variables_.lock().unwrap_or_else(|p| p.into_inner());
        variables.named_variables.values().any(on_mps)
    }
}

impl<T: MoveToCpu + ?Sized> MoveToCpu for &mut T {
    fn move_to_cpu(&mut self) {
        (**self).move_to_cpu();
    }

    fn is_on_mps(&self) -> bool {
        (**self).is_on_mps()
    }
}

impl<T: MoveToCpu + ?Sized> MoveToCpu for Box<T> {
    fn move_to_cpu(&mut self) {
        (**self).move_to_cpu();
    }

    fn is_on_mps(&self) -> bool {
        (**self).is_on_mps()
    }
}

impl<T: MoveToCpu> MoveToCpu for Option<T> {
    fn move_to_cpu(&mut self) {
        if let Some(v) = self {
            v.move_to_cpu();
        }
    }

    fn is_on_mps(&self) -> bool {
        self.as_ref().is_some_and(MoveToCpu::is_on_mps)
    }
}

impl<T: MoveToCpu> MoveToCpu for [T] {
    fn move_to_cpu(&mut self) {
        self.iter_mut().for_each(MoveToCpu::move_to_cpu);
    }

    fn is_on_mps(&self) -> bool {
        self.iter().any(MoveToCpu::is_on_mps)
    }
}

impl<T: MoveToCpu, const N: usize> MoveToCpu for [T; N] {
    fn move_to_cpu(&mut self) {
        self.as_mut_slice().move_to_cpu();
    }

    fn is_on_mps(&self) -> bool {
        self.as_slice().is_on_mps()
    }
}

impl<T: MoveToCpu> MoveToCpu for Vec<T> {
    fn move_to_cpu(&mut self) {
        self.as_mut_slice().move_to_cpu();
    }

    fn is_on_mps(&self) -> bool {
        self.as_slice().is_on_mps()
    }
}

impl<T: MoveToCpu> MoveToCpu for VecDeque<T> {
    fn move_to_cpu(&mut self) {
        self.iter_mut().for_each(MoveToCpu::move_to_cpu);
    }

    fn is_on_mps(&self) -> bool {
        self.iter().any(MoveToCpu::is_on_mps)
    }
}

impl<K, V: MoveToCpu, S: BuildHasher> MoveToCpu for HashMap<K, V, S> {
    fn move_to_cpu(&mut self) {
        self.values_mut().for_each(MoveToCpu::move_to_cpu);
    }

    fn is_on_mps(&self) -> bool {
        self.values().any(MoveToCpu::is_on_mps)
    }
}

impl<K, V: MoveToCpu> MoveToCpu for BTreeMap<K, V> {
    fn move_to_cpu(&mut self) {
        self.values_mut().for_each(MoveToCpu::move_to_cpu);
    }

    fn is_on_mps(&self) -> bool {
        self.values().any(MoveToCpu::is_on_mps)
    }
}

macro_rules! tuples {
    ($(($($name:ident . $i:tt),+))*) => {$(
        impl<$($name: MoveToCpu),+> MoveToCpu for ($($name,)+) {
            fn move_to_cpu(&mut self) {
                $( self.$i.move_to_cpu(); )+
            }

            fn is_on_mps(&self) -> bool {
                false $( || self.$i.is_on_mps() )+
            }
        }
    )*};
}
tuples! {
    (A.0)
    (A.0, B.1)
    (A.0, B.1, C.2)
    (A.0, B.1, C.2, D.3)
    (A.0, B.1, C.2, D.3, E.4)
    (A.0, B.1, C.2, D.3, E.4, F.5)
    (A.0, B.1, C.2, D.3, E.4, F.5, G.6)
    (A.0, B.1, C.2, D.3, E.4, F.5, G.6, H.7)
}

/// Whether a tch error is an MPS error (see [`is_mps_error`]).
pub fn is_mps_tch_error(err: &TchError) -> bool {
    is_mps_error(&err.to_string())
}
