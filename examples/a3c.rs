//! Reinforcement learning: the policy and value updates of a small
//! actor-critic (A3C style), each under `safe_mps!`.
//!
//!     . scripts/torch-env.sh && cargo run --features tch --example a3c
//!
//! The task is a two-armed bandit whose better arm depends on the state's
//! sign. Several workers (the "asynchronous" of A3C, here threads) share one
//! model behind a mutex and push advantage actor-critic updates. Each update
//! asks for MPS; without it, the update falls back to CPU, the registry
//! disables MPS after three failures, and the agent learns all the same.

use std::sync::{Arc, Mutex};

use opguard::mps::{self, MoveToCpu};
use opguard::safe_mps;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, TchError, Tensor};

/// The shared actor-critic: a policy head (2 actions) and a value head.
// `pub` items: tests/faults.rs drives this code with injected failures.
pub struct ActorCritic {
    pub vs: nn::VarStore,
    body: nn::Sequential,
    policy: nn::Linear,
    value: nn::Linear,
    opt: nn::Optimizer,
}

// Falling back moves the whole model: every parameter lives in `vs`.
impl MoveToCpu for ActorCritic {
    fn move_to_cpu(&mut self) {
        self.vs.move_to_cpu();
    }

    fn is_on_mps(&self) -> bool {
        self.vs.is_on_mps()
    }
}

impl ActorCritic {
    pub fn new() -> Result<Self, TchError> {
        let device = if tch::utils::has_mps() {
            Device::Mps
        } else {
            Device::Cpu
        };
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let body = nn::seq()
            .add(nn::linear(&root / "body", 1, 32, Default::default()))
            .add_fn(|x| x.tanh());
        let policy = nn::linear(&root / "policy", 32, 2, Default::default());
        let value = nn::linear(&root / "value", 32, 1, Default::default());
        let opt = nn::Adam::default().build(&vs, 3e-2)?;
        Ok(ActorCritic {
            vs,
            body,
            policy,
            value,
            opt,
        })
    }
}

/// One worker's rollout: states, the actions taken and the rewards received.
pub fn rollout(model: &ActorCritic, n: i64) -> (Tensor, Tensor, Tensor) {
    let states = Tensor::randn([n, 1], (Kind::Float, Device::Cpu));
    let probs = tch::no_grad(|| {
        model
            .policy
            .forward(&model.body.forward(&states))
            .softmax(-1, Kind::Float)
    });
    let actions = probs.multinomial(1, true).squeeze_dim(1);
    // Arm 1 pays when the state is positive, arm 0 when it is negative.
    let good = states.squeeze_dim(1).gt(0.0).to_kind(Kind::Int64);
    let rewards = actions.eq_tensor(&good).to_kind(Kind::Float);
    (states, actions, rewards)
}

/// The advantage actor-critic update, guarded: returns (policy loss, value loss).
pub fn update(
    model: &mut ActorCritic,
    states: &Tensor,
    actions: &Tensor,
    rewards: &Tensor,
) -> Result<(f64, f64), TchError> {
    safe_mps!(label = "a3c_update", device = Device::Mps, [model] => |dev| {
        let states = states.f_to_device(dev)?;
        let actions = actions.f_to_device(dev)?;
        let rewards = rewards.f_to_device(dev)?;
        let hidden = model.body.forward(&states);
        let log_probs = model.policy.forward(&hidden).f_log_softmax(-1, Kind::Float)?;
        let values = model.value.forward(&hidden).f_squeeze_dim(1)?;
        let advantages = (&rewards - &values).detach();
        let taken = log_probs.f_gather(1, &actions.f_unsqueeze(1)?, false)?.f_squeeze_dim(1)?;
        let policy_loss = -(taken * advantages).f_mean(Kind::Float)?;
        let value_loss = (&rewards - values).f_square()?.f_mean(Kind::Float)?;
        model.opt.backward_step(&(&policy_loss + &value_loss * 0.5));
        Ok((policy_loss.f_double_value(&[])?, value_loss.f_double_value(&[])?))
    })
}

/// Mean reward of the greedy policy on fresh states.
pub fn greedy_reward(model: &ActorCritic) -> f64 {
    let states = Tensor::randn([1000, 1], (Kind::Float, Device::Cpu)).to_device(model.vs.device());
    let actions = tch::no_grad(|| {
        model
            .policy
            .forward(&model.body.forward(&states))
            .argmax(-1, false)
    });
    let good = states.squeeze_dim(1).gt(0.0).to_kind(Kind::Int64);
    actions
        .eq_tensor(&good)
        .to_kind(Kind::Float)
        .mean(Kind::Float)
        .double_value(&[])
}

fn main() -> Result<(), TchError> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    tch::manual_seed(11);
    let model = Arc::new(Mutex::new(ActorCritic::new()?));
    let before = greedy_reward(&model.lock().unwrap());

    let workers: Vec<_> = (0..3)
        .map(|w| {
            let model = Arc::clone(&model);
            std::thread::spawn(move || -> Result<(f64, f64), TchError> {
                let mut last = (0.0, 0.0);
                for _ in 0..60 {
                    let mut m = model.lock().unwrap();
                    let (s, a, r) = rollout(&m, 32);
                    last = update(&mut m, &s, &a, &r)?;
                }
                println!(
                    "worker {w}: last policy loss {:.4}, value loss {:.4}",
                    last.0, last.1
                );
                Ok(last)
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker panicked")?;
    }

    let after = greedy_reward(&model.lock().unwrap());
    println!("greedy reward: {before:.2} before training, {after:.2} after");
    assert!(after > 0.9, "the agent did not learn");
    let s = mps::stats();
    println!(
        "MPS registry: {:?}; {} MPS errors, {} fallbacks, {} updates sent straight to CPU",
        s.state, s.mps_errors, s.fallbacks, s.skipped
    );
    Ok(())
}
