//! On a machine with CUDA, a CUDA tensor stands in for an MPS one: these
//! tests put tensors, a model and its gradients on the GPU and check that
//! moving them to CPU, by hand and through a `safe_mps!` fallback, reaches
//! every handle to them. Without a GPU a tensor is always on CPU already and
//! such a check could not fail, so they are ignored by default:
//!
//!     . scripts/torch-env.sh
//!     cargo test --features tch --test cuda -- --ignored
//!
//! (tch links libtorch_cuda only when the build asks for it: see
//! `scripts/cuda-check.sh`, which builds and runs these on a GPU machine.)
#![cfg(feature = "tch")]

mod common;

use std::collections::HashMap;

use common::mps::fresh;
use opguard::mps::{self, MoveToCpu};
use opguard::safe_mps;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

const NEEDS_CUDA: &str = "needs CUDA: cargo test --features tch --test cuda -- --ignored";

fn gpu() -> Device {
    assert!(tch::Cuda::is_available(), "{NEEDS_CUDA} (CUDA not found)");
    Device::Cuda(0)
}

fn on(dev: Device, values: &[f32]) -> Tensor {
    Tensor::from_slice(values).to_device(dev)
}

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.to_device(Device::Cpu)).unwrap()
}

#[test]
#[ignore = "needs CUDA"]
fn nested_cuda_tensors_move_to_cpu_on_every_handle() {
    let gpu = gpu();
    let a = on(gpu, &[1.0, 2.0]);
    let b = on(gpu, &[3.0]);
    let (alias_a, alias_b) = (a.shallow_clone(), b.shallow_clone());
    let mut nested = (
        vec![Some(a)],
        HashMap::from([("b", Box::new(b))]),
        [on(gpu, &[4.0])],
    );
    assert!(alias_a.device().is_cuda() && alias_b.device().is_cuda());
    nested.move_to_cpu();
    for t in [
        &alias_a,
        &alias_b,
        nested.0[0].as_ref().unwrap(),
        &nested.1["b"],
        &nested.2[0],
    ] {
        assert_eq!(t.device(), Device::Cpu);
    }
    assert_eq!(values(&alias_a), [1.0, 2.0]);
    assert_eq!(values(&alias_b), [3.0]);
}

#[test]
#[ignore = "needs CUDA"]
fn a_fallback_moves_named_cuda_tensors_and_the_retry_sees_them_on_cpu() {
    let _g = fresh();
    let gpu = gpu();
    let mut xs = on(gpu, &[1.0, 2.0, 3.0]);
    let alias = xs.shallow_clone();
    let mut seen = Vec::new();
    // The first attempt runs with dev = MPS and fails for real (this
    // PyTorch has no MPS); the retry finds the named tensor on CPU.
    let out = safe_mps!(device = Device::Mps, [xs] => |dev| {
        seen.push((dev, xs.device()));
        xs.f_to_device(dev)?.f_sum(Kind::Float)
    });
    assert_eq!(out.unwrap().double_value(&[]), 6.0);
    assert_eq!(seen, [(Device::Mps, gpu), (Device::Cpu, Device::Cpu)]);
    assert_eq!((xs.device(), alias.device()), (Device::Cpu, Device::Cpu));
    assert_eq!(mps::stats().fallbacks, 1);
}

/// A model whose variables were moved to the GPU one by one, the way a
/// `set_device` that fails half-way leaves them: `vs.device()` still says
/// CPU. Each variable is judged by its own device, so all of them move.
#[test]
#[ignore = "needs CUDA"]
fn a_half_moved_model_comes_back_whole_with_its_gradients() {
    let gpu = gpu();
    tch::manual_seed(3);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let layer = nn::linear(vs.root() / "fc", 3, 1, Default::default());
    let mut opt = nn::Sgd::default().build(&vs, 0.1).unwrap();
    tch::no_grad(|| {
        for (_, v) in vs.variables() {
            v.shallow_clone().set_data(&v.to_device(gpu));
        }
    });
    assert_eq!(vs.device(), Device::Cpu, "the store does not know");
    assert!(layer.ws.device().is_cuda());
    // A training step on the GPU leaves gradients there.
    let xs = Tensor::ones([4, 3], (Kind::Float, gpu));
    opt.zero_grad();
    layer.forward(&xs).sum(Kind::Float).backward();
    assert!(layer.ws.grad().device().is_cuda());

    vs.move_to_cpu();
    for (name, v) in vs.variables() {
        assert_eq!(v.device(), Device::Cpu, "{name}");
        assert_eq!(v.grad().device(), Device::Cpu, "{name}'s gradient");
    }
    assert_eq!(layer.ws.device(), Device::Cpu, "the layer's handle follows");
    // Training goes on on CPU: backward accumulates into the moved gradients.
    let xs = Tensor::ones([4, 3], (Kind::Float, Device::Cpu));
    layer.forward(&xs).sum(Kind::Float).backward();
    opt.step();
    assert_eq!(layer.ws.device(), Device::Cpu);
}

/// The training idiom on a GPU: the model goes to `dev` inside the work.
/// Here the first attempt really runs on CUDA (standing in for MPS), moves
/// the model there, then fails with an MPS error; the fallback brings the
/// whole model back and the step runs on CPU.
#[test]
#[ignore = "needs CUDA"]
fn a_model_moved_to_the_gpu_inside_the_work_comes_back_on_fallback() {
    let _g = fresh();
    let gpu = gpu();
    tch::manual_seed(4);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = nn::linear(vs.root() / "fc", 2, 1, Default::default());
    let mut opt = nn::Sgd::default().build(&vs, 0.01).unwrap();
    let xs = Tensor::ones([8, 2], (Kind::Float, Device::Cpu));
    let mut devices = Vec::new();
    let out = safe_mps!(device = Device::Mps, [vs] => |dev| {
        // "MPS" is the GPU here; CPU stays CPU.
        let dev = if dev == Device::Mps { gpu } else { dev };
        vs.set_device(dev);
        devices.push(net.ws.device());
        let loss = net.forward(&xs.f_to_device(dev)?).f_mean(Kind::Float)?;
        opt.backward_step(&loss);
        if dev == gpu {
            // What PyTorch says when an op has no MPS kernel.
            return Err(tch::TchError::Torch(
                "The operator 'aten::foo' is not currently implemented for the MPS device.".into(),
            ));
        }
        loss.f_double_value(&[])
    });
    assert!(out.unwrap().is_finite());
    assert_eq!(devices, [gpu, Device::Cpu]);
    assert_eq!(vs.device(), Device::Cpu);
    for (name, v) in vs.variables() {
        assert_eq!(v.device(), Device::Cpu, "{name}");
        let g = v.grad();
        assert!(
            !g.defined() || g.device() == Device::Cpu,
            "{name}'s gradient"
        );
    }
}
