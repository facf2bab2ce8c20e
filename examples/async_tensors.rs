//! `safe_mps!` in async code on a multi-thread tokio runtime.
//!
//!     . scripts/torch-env.sh && cargo run --features tch --example async_tensors
//!
//! tch's `Tensor` is `Send` but not `Sync`: a tensor may move to another
//! thread, but a `&Tensor` may not. So an async `safe_mps!` whose work
//! borrows a tensor by shared reference across an `.await` is not `Send`,
//! and `tokio::spawn` on a multi-thread runtime refuses it (a compile
//! error: "future cannot be sent between threads safely ... has type
//! `&tch::Tensor` which is not `Send`"). Four patterns that work:
//!
//! 1. Move owned tensors into the task, and name them in `[..] =>`: the
//!    work then holds them by `&mut`, which is `Send`.
//! 2. Run synchronous tensor work on the blocking pool (`spawn_blocking`).
//! 3. Borrow freely inside `block_in_place`, which runs the work on the
//!    current worker thread while tokio moves its other tasks away.
//! 4. Keep borrowing async work on one thread: a `LocalSet` and `spawn_local`.
//!
//! Each one asks for MPS; this machine has none, so each falls back to CPU
//! for real, and the sums come out the same.

use std::rc::Rc;

use opguard::{mps, safe_mps};
use tch::{Device, Kind, Tensor};

fn ones(n: i64) -> Tensor {
    Tensor::ones([n], (Kind::Float, Device::Cpu))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    // Keep MPS enabled for this demo, so that every pattern really falls back.
    mps::set_failure_threshold(100);

    // 1. Owned tensors, named: the future is `Send`, so `tokio::spawn` takes it.
    let xs = ones(4);
    let owned = tokio::spawn(async move {
        let mut xs = xs;
        safe_mps!(label = "owned", device = Device::Mps, [xs] => async |dev| {
            tokio::task::yield_now().await;
            xs.f_to_device(dev)?.f_sum(Kind::Float)
        })
        .await
    });
    println!("owned tensors in a spawned task: {}", sum(owned.await??));

    // 2. Synchronous work on the blocking pool.
    let ys = ones(5);
    let blocking = tokio::task::spawn_blocking(move || {
        safe_mps!(label = "blocking", device = Device::Mps, |dev| {
            ys.f_to_device(dev)?.f_sum(Kind::Float)
        })
    });
    println!("spawn_blocking: {}", sum(blocking.await??));

    // 3. Borrowed tensors inside block_in_place, on this worker thread.
    let zs = ones(6);
    let in_place = tokio::task::block_in_place(|| {
        safe_mps!(label = "in_place", device = Device::Mps, |dev| {
            zs.f_to_device(dev)?.f_sum(Kind::Float)
        })
    });
    println!("block_in_place: {}", sum(in_place?));

    // 4. Borrowing async work stays on one thread in a LocalSet.
    let local = tokio::task::LocalSet::new();
    let shared = Rc::new(ones(7));
    let out = local
        .run_until(async move {
            tokio::task::spawn_local(async move {
                safe_mps!(label = "local", device = Device::Mps, async |dev| {
                    tokio::task::yield_now().await;
                    shared.f_to_device(dev)?.f_sum(Kind::Float)
                })
                .await
            })
            .await
        })
        .await?;
    println!("LocalSet: {}", sum(out?));

    let s = mps::stats();
    assert_eq!(s.fallbacks, 4, "every pattern fell back: {s:?}");
    println!(
        "{} MPS errors, {} fallbacks to CPU",
        s.mps_errors, s.fallbacks
    );
    Ok(())
}

fn sum(t: Tensor) -> f64 {
    t.double_value(&[])
}
