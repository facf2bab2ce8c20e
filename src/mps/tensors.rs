//! Moving tensors, nested ones and a model's parameters, from MPS to CPU.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasher;

use tch::{Device, TchError, Tensor};

use super::classify::is_mps_error;

/// A value whose tensors can be moved to CPU in place, as `safe_mps!` does
/// with the tensors named in `[..] =>` before its CPU retry.
///
/// Implemented for [`Tensor`] and `&Tensor`, for a model's parameters
/// ([`tch::nn::VarStore`]), and recursively for `Option`, `Vec`, `VecDeque`,
/// slices, arrays, tuples (up to 8), `Box`, `&mut`, and the values of
/// `HashMap` and `BTreeMap`. Implement it for your own structs by calling it on
/// their fields:
///
/// ```
/// use opguard::MoveToCpu;
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
/// }
/// ```
///
/// A tensor is moved in place (`set_data`, as `VarStore::set_device` does):
/// every handle to it, such as a layer's weight, sees it on CPU afterwards. A
/// tensor already on CPU is left alone. Results computed by a CPU retry stay
/// on CPU; move them back yourself if you need them on MPS.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be moved to CPU by `safe_mps!`",
    label = "named in `[..] =>`, so its tensors move to CPU before the retry",
    note = "implement `opguard::MoveToCpu` for it, calling `move_to_cpu` on each of its tensor fields"
)]
pub trait MoveToCpu {
    /// Moves every tensor in `self` to CPU, in place.
    fn move_to_cpu(&mut self);
}

/// Moves `t`'s data to CPU in place, so that every handle to it follows.
fn move_data(t: &Tensor) {
    if t.device() == Device::Cpu || !t.defined() {
        return;
    }
    let mut handle = t.shallow_clone();
    let moved = tch::no_grad(|| {
        let cpu = handle.f_to_device(Device::Cpu)?;
        handle.f_set_data(&cpu)
    });
    if let Err(err) = moved {
        log::warn!(target: "opguard", "could not move a {:?} tensor to CPU: {err}", t.device());
    }
}

impl MoveToCpu for Tensor {
    fn move_to_cpu(&mut self) {
        move_data(self);
    }
}

impl MoveToCpu for &Tensor {
    fn move_to_cpu(&mut self) {
        move_data(self);
    }
}

impl MoveToCpu for tch::nn::VarStore {
    fn move_to_cpu(&mut self) {
        if self.device() != Device::Cpu {
            tch::no_grad(|| self.set_device(Device::Cpu));
        }
    }
}

impl<T: MoveToCpu + ?Sized> MoveToCpu for &mut T {
    fn move_to_cpu(&mut self) {
        (**self).move_to_cpu();
    }
}

impl<T: MoveToCpu + ?Sized> MoveToCpu for Box<T> {
    fn move_to_cpu(&mut self) {
        (**self).move_to_cpu();
    }
}

impl<T: MoveToCpu> MoveToCpu for Option<T> {
    fn move_to_cpu(&mut self) {
        if let Some(v) = self {
            v.move_to_cpu();
        }
    }
}

impl<T: MoveToCpu> MoveToCpu for [T] {
    fn move_to_cpu(&mut self) {
        self.iter_mut().for_each(MoveToCpu::move_to_cpu);
    }
}

impl<T: MoveToCpu, const N: usize> MoveToCpu for [T; N] {
    fn move_to_cpu(&mut self) {
        self.as_mut_slice().move_to_cpu();
    }
}

impl<T: MoveToCpu> MoveToCpu for Vec<T> {
    fn move_to_cpu(&mut self) {
        self.as_mut_slice().move_to_cpu();
    }
}

impl<T: MoveToCpu> MoveToCpu for VecDeque<T> {
    fn move_to_cpu(&mut self) {
        self.iter_mut().for_each(MoveToCpu::move_to_cpu);
    }
}

impl<K, V: MoveToCpu, S: BuildHasher> MoveToCpu for HashMap<K, V, S> {
    fn move_to_cpu(&mut self) {
        self.values_mut().for_each(MoveToCpu::move_to_cpu);
    }
}

impl<K, V: MoveToCpu> MoveToCpu for BTreeMap<K, V> {
    fn move_to_cpu(&mut self) {
        self.values_mut().for_each(MoveToCpu::move_to_cpu);
    }
}

macro_rules! tuples {
    ($(($($name:ident . $i:tt),+))*) => {$(
        impl<$($name: MoveToCpu),+> MoveToCpu for ($($name,)+) {
            fn move_to_cpu(&mut self) {
                $( self.$i.move_to_cpu(); )+
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

/// Whether a tch error is an MPS error (see [`is_mps_error`](crate::is_mps_error)).
pub fn is_mps_tch_error(err: &TchError) -> bool {
    is_mps_error(&err.to_string())
}
