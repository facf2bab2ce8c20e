//! A model survives a fallback in the idiom tch users write: the work puts
//! the model on `dev` with `vs.set_device(dev)`. On MPS that panics inside
//! tch while it holds the store's lock; after `safe_mps!` has handled it the
//! store, the model and its optimizer keep working on CPU, with the losses of
//! plain CPU training. Real libtorch; this machine's MPS calls fail for real.
#![cfg(feature = "tch")]

mod common;

use std::sync::{Mutex, MutexGuard};

use common::mps::fresh;
use opguard::mps::MoveToCpu;
use opguard::mps::{self, MpsState};
use opguard::safe_mps;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, TchError, Tensor};

struct Model {
    vs: nn::VarStore,
    net: nn::Sequential,
    opt: nn::Optimizer,
}

/// libtorch's random generator is one per process, and the tests run in
/// parallel: seeding and drawing happen under this lock, or another test's
/// draws land in between and the "same" model or batches differ.
static RNG: Mutex<()> = Mutex::new(());

fn seeded(seed: i64) -> MutexGuard<'static, ()> {
    let guard = RNG.lock().unwrap_or_else(|p| p.into_inner());
    tch::manual_seed(seed);
    guard
}

/// A small regression model, made on CPU from a fixed seed.
fn model() -> Model {
    let _rng = seeded(21);
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let net = nn::seq()
        .add(nn::linear(&root / "hidden", 3, 8, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(&root / "out", 8, 1, Default::default()));
    let opt = nn::Adam::default().build(&vs, 1e-2).unwrap();
    Model { vs, net, opt }
}

/// The same batches for every run.
fn batches(n: usize) -> Vec<(Tensor, Tensor)> {
    let _rng = seeded(22);
    (0..n)
        .map(|_| {
            let xs = Tensor::randn([16, 3], (Kind::Float, Device::Cpu));
            let ys = xs.sum_dim_intlist(1, true, Kind::Float);
            (xs, ys)
        })
        .collect()
}

fn loss(net: &nn::Sequential, xs: &Tensor, ys: &Tensor) -> Result<Tensor, TchError> {
    net.forward(xs).f_mse_loss(ys, tch::Reduction::Mean)
}

/// The loss over all the batches at once, without recording gradients.
fn loss_over_all(net: &nn::Sequential, data: &[(Tensor, Tensor)]) -> f64 {
    let _no_grad = tch::no_grad_guard();
    let xs = Tensor::cat(&data.iter().map(|(x, _)| x).collect::<Vec<_>>(), 0);
    let ys = Tensor::cat(&data.iter().map(|(_, y)| y).collect::<Vec<_>>(), 0);
    loss(net, &xs, &ys).unwrap().double_value(&[])
}

/// Plain training on CPU, no opguard: the reference losses.
fn plain_cpu_losses(data: &[(Tensor, Tensor)]) -> Vec<f64> {
    let Model { net, mut opt, .. } = model();
    data.iter()
        .map(|(xs, ys)| {
            let l = loss(&net, xs, ys).unwrap();
            opt.backward_step(&l);
            l.double_value(&[])
        })
        .collect()
}

/// The idiom: put the model on `dev` inside the work, then train.
fn guarded_step(m: &mut Model, xs: &Tensor, ys: &Tensor) -> Result<f64, TchError> {
    let Model { vs, net, opt } = m;
    safe_mps!(label = "train", device = Device::Mps, [vs] => |dev| {
        vs.set_device(dev); // panics on MPS here, holding the store's lock
        let l = loss(net, &xs.f_to_device(dev)?, &ys.f_to_device(dev)?)?;
        opt.backward_step(&l);
        l.f_double_value(&[])
    })
}

#[test]
fn set_device_failing_inside_the_work_leaves_a_model_that_trains_on_cpu() {
    let _g = fresh();
    let data = batches(12);
    let reference = plain_cpu_losses(&data);

    let mut m = model();
    let before = loss_over_all(&m.net, &data);
    let losses: Vec<f64> = data
        .iter()
        .map(|(xs, ys)| guarded_step(&mut m, xs, ys).unwrap())
        .collect();

    // The same training as plain CPU, step for step.
    for (i, (got, want)) in losses.iter().zip(&reference).enumerate() {
        assert!((got - want).abs() < 1e-6, "step {i}: {got} vs {want}");
    }
    // It learned: the loss over all the batches fell. (Comparing the first and
    // last step's loss would not do: they are different batches, and with
    // another random stream the last one can be the harder one.)
    let after = loss_over_all(&m.net, &data);
    assert!(
        after < before,
        "it trained: {before} -> {after}, steps {losses:?}"
    );
    // Three real MPS failures disabled MPS; the rest went straight to CPU.
    let s = mps::stats();
    assert_eq!(
        (s.fallbacks, s.skipped, s.state),
        (3, 9, MpsState::Disabled)
    );

    // Outside the macro the store, the model and the optimizer all work.
    assert!(!m.vs.variables_.is_poisoned());
    assert_eq!(m.vs.device(), Device::Cpu);
    assert!(!m.vs.is_on_mps());
    for (name, t) in m.vs.variables() {
        assert_eq!(t.device(), Device::Cpu, "{name}");
    }
    let (xs, ys) = &data[0];
    m.opt.zero_grad();
    let l = loss(&m.net, xs, ys).unwrap();
    m.opt.backward_step(&l);
    assert!(l.double_value(&[]).is_finite());
}

#[test]
fn without_opguard_the_same_failure_kills_the_model() {
    // What the test above guards against, shown on plain tch: the panic in
    // set_device poisons the store, and every later use of it panics.
    let mut m = model();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        m.vs.set_device(Device::Mps);
    }));
    assert!(caught.is_err());
    assert!(m.vs.variables_.is_poisoned());
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.vs.variables()));
    assert!(again.is_err(), "the store is dead");
    // Naming it in a fallback (or moving it by hand) brings it back.
    m.vs.move_to_cpu();
    assert!(!m.vs.variables_.is_poisoned());
    assert_eq!(m.vs.variables().len(), 4);
}

#[test]
fn a_model_inside_a_struct_survives_too() {
    let _g = fresh();
    struct Agent {
        model: Model,
    }
    impl MoveToCpu for Agent {
        fn move_to_cpu(&mut self) {
            self.model.vs.move_to_cpu();
        }
        fn is_on_mps(&self) -> bool {
            self.model.vs.is_on_mps()
        }
    }
    let mut agent = Agent { model: model() };
    let data = batches(2);
    for (xs, ys) in &data {
        let out = safe_mps!(device = Device::Mps, [agent] => |dev| {
            agent.model.vs.set_device(dev);
            let l = loss(&agent.model.net, &xs.f_to_device(dev)?, &ys.f_to_device(dev)?)?;
            agent.model.opt.backward_step(&l);
            l.f_double_value(&[])
        });
        assert!(out.unwrap().is_finite());
    }
    assert_eq!(mps::stats().fallbacks, 2);
}
