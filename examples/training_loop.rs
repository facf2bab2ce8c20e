//! A training loop: `main_training_loop` under `timeout_async!(300, ..)`,
//! with `safe_mps!` around each step's tensor work, then an evaluation under
//! both (the item forms, stacked).
//!
//!     bash scripts/demo.sh          # sets up libtorch, then runs this
//!
//! A small real model (tch::nn, two layers) learns y = 3x1 - 2x2 + 1 from
//! synthetic data. Each step asks for MPS; on a machine without it, PyTorch's
//! real MPS error sends the step to CPU, and after three such failures the
//! registry disables MPS, so later steps go straight to CPU. The loss falls
//! either way. The log lines and counters are printed at the end.
//!
//! Why the loop awaits `yield_now()` between batches: a timeout can only fire
//! when the guarded future yields to its executor. Tensor work is synchronous
//! code that never yields, so a loop without an await point would run to the
//! end, however long, and the timeout would only see it afterwards. The second
//! run below gives the loop 50 ms, and the yield lets the timeout stop it.

use std::time::Duration;

use opguard::{mps, safe_mps, timeout_async, timeouts};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, TchError, Tensor};

/// A 300 s budget for one run of the training loop.
const TRAINING_TIMEOUT: u64 = 300;

// `pub` items: tests/faults.rs drives this code with injected failures.
pub struct Trainer {
    pub vs: nn::VarStore,
    pub net: nn::Sequential,
    opt: nn::Optimizer,
}

impl Trainer {
    pub fn new() -> Result<Self, TchError> {
        tch::manual_seed(7);
        // The model is made on CPU; each step puts it on its device.
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let net = nn::seq()
            .add(nn::linear(&root / "hidden", 2, 16, Default::default()))
            .add_fn(|x| x.relu())
            .add(nn::linear(&root / "out", 16, 1, Default::default()));
        let opt = nn::Adam::default().build(&vs, 1e-2)?;
        Ok(Trainer { vs, net, opt })
    }
}

/// Synthetic batch: y = 3 x1 - 2 x2 + 1, plus a little noise.
pub fn batch(size: i64) -> (Tensor, Tensor) {
    let xs = Tensor::randn([size, 2], (Kind::Float, Device::Cpu));
    let w = Tensor::from_slice(&[3.0f32, -2.0]).view([2, 1]);
    let ys = xs.matmul(&w) + 1.0 + Tensor::randn([size, 1], (Kind::Float, Device::Cpu)) * 0.01;
    (xs, ys)
}

/// One optimisation step, on MPS when possible, else (or after an MPS error) on CPU.
///
/// How to put a model on the device inside `safe_mps!`: call
/// `vs.set_device(dev)` in the work and name the `VarStore` in `[..]`. On MPS
/// the first step moves the model there (later steps find it there). When
/// MPS fails, even inside `set_device` itself, the fallback brings every
/// variable back to CPU and the retry trains there, with the same optimizer.
pub fn train_step(trainer: &mut Trainer, xs: &Tensor, ys: &Tensor) -> Result<f64, TchError> {
    let Trainer { vs, net, opt } = trainer;
    safe_mps!(label = "train_step", device = Device::Mps, [vs] => |dev| {
        vs.set_device(dev);
        let xs = xs.f_to_device(dev)?;
        let ys = ys.f_to_device(dev)?;
        let loss = net.forward(&xs).f_mse_loss(&ys, tch::Reduction::Mean)?;
        opt.backward_step(&loss);
        loss.f_double_value(&[])
    })
}

/// The training loop: returns the mean loss of each epoch.
pub async fn main_training_loop(
    trainer: &mut Trainer,
    epochs: usize,
) -> Result<Vec<f64>, TchError> {
    let mut losses = Vec::new();
    for _ in 0..epochs {
        let mut total = 0.0;
        for _ in 0..20 {
            let (xs, ys) = batch(64);
            total += train_step(trainer, &xs, &ys)?;
            // Let the executor run other tasks, and the timeout fire.
            tokio::task::yield_now().await;
        }
        losses.push(total / 20.0);
    }
    Ok(losses)
}

timeout_async! {
    /// The model's mean squared error on fresh data, wherever the model is,
    /// within 10 s: both guards on one function, the timeout outermost, so
    /// that one deadline covers the attempt and a CPU retry. If the model is
    /// on MPS and the work fails there, the store moves to CPU and the work
    /// runs again.
    #[timeout(label = "evaluate", 10)]
    #[safe_mps(label = "evaluate_mps", [vs])]
    pub async fn evaluate(vs: &mut nn::VarStore, net: &nn::Sequential) -> Result<f64, TchError> {
        let dev = vs.device();
        let (xs, ys) = batch(256);
        let _no_grad = tch::no_grad_guard();
        let pred = net.forward(&xs.f_to_device(dev)?);
        pred.f_mse_loss(&ys.f_to_device(dev)?, tch::Reduction::Mean)?
            .f_double_value(&[])
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    println!("MPS available: {}", tch::utils::has_mps());

    let mut trainer = Trainer::new()?;
    let losses = timeout_async!(
        label = "main_training_loop",
        TRAINING_TIMEOUT,
        main_training_loop(&mut trainer, 8)
    )
    .await??;
    for (epoch, loss) in losses.iter().enumerate() {
        println!("epoch {epoch}: mean loss {loss:.5}");
    }
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    println!(
        "loss fell from {first:.4} to {last:.4}; the model is on {:?}",
        trainer.vs.device()
    );
    assert!(last < first / 10.0, "training did not converge");
    let Trainer { vs, net, .. } = &mut trainer;
    let held_out = evaluate(vs, net).await??;
    println!("mean squared error on fresh data: {held_out:.5}");

    // A budget too small for the whole run: the timeout stops it between batches.
    let mut rushed = Trainer::new()?;
    match timeout_async!(
        label = "rushed_training",
        Duration::from_millis(50),
        main_training_loop(&mut rushed, 1000)
    )
    .await
    {
        Ok(_) => println!("rushed training finished (the machine is fast)"),
        Err(e) => println!("rushed training stopped: {e}"),
    }

    let m = mps::stats();
    println!(
        "\nMPS registry: {:?}; {} MPS errors, {} CPU fallbacks, {} failed fallbacks, {} steps sent straight to CPU",
        m.state, m.mps_errors, m.fallbacks, m.failed_fallbacks, m.skipped
    );
    println!("timeouts: {}", timeouts::stats().timeouts);
    Ok(())
}
