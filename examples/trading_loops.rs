//! A trading service's loops: `trading_loop`, `continual_learning_loop`
//! and `monitoring_loop` run concurrently, each iteration under a 60 s timeout.
//!
//!     cargo run --example trading_loops
//!
//! Time is scaled down 600x so the example runs in about two seconds: 60 s
//! becomes 100 ms. Now and then a stage hangs (a stuck exchange socket, a
//! stalled data feed); its iteration times out, the loop logs it and goes on.
//! Runs on tokio's multi-thread runtime.

use std::future::pending;
use std::time::Duration;

use futures_timer::Delay;
use opguard::{timeout_async, timeouts};

/// 60 s per iteration, scaled down 600x.
const ITERATION_TIMEOUT: Duration = Duration::from_millis(60_000 / 600);
const ITERATIONS: u32 = 12;

/// Work that takes `ms` milliseconds, or never finishes when `hangs`.
async fn stage(ms: u64, hangs: bool) {
    if hangs {
        pending::<()>().await;
    }
    Delay::new(Duration::from_millis(ms)).await;
}

async fn trading_loop() -> u32 {
    let mut filled = 0;
    for i in 0..ITERATIONS {
        // Every fifth order hangs on the exchange.
        match timeout_async!(
            label = "trading_loop",
            ITERATION_TIMEOUT,
            stage(20, i % 5 == 3)
        )
        .await
        {
            Ok(()) => filled += 1,
            Err(e) => println!("trading_loop:      iteration {i} abandoned ({e}); next tick"),
        }
    }
    filled
}

async fn continual_learning_loop() -> u32 {
    let mut updates = 0;
    for i in 0..ITERATIONS {
        match timeout_async!(
            label = "continual_learning_loop",
            ITERATION_TIMEOUT,
            stage(40, i == 7)
        )
        .await
        {
            Ok(()) => updates += 1,
            Err(e) => println!(
                "continual_learning: iteration {i} abandoned ({e}); keeping the last model"
            ),
        }
    }
    updates
}

async fn monitoring_loop() -> u32 {
    let mut checks = 0;
    for i in 0..ITERATIONS {
        match timeout_async!(
            label = "monitoring_loop",
            ITERATION_TIMEOUT,
            stage(10, i == 2)
        )
        .await
        {
            Ok(()) => checks += 1,
            Err(e) => println!("monitoring_loop:   iteration {i} abandoned ({e})"),
        }
    }
    checks
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    opguard::alert::set_hook(|alert| println!("ALERT HOOK: {alert}"));
    opguard::alert::set_policy(
        opguard::alert::AlertKind::Timeouts,
        opguard::alert::AlertPolicy::new(3, Duration::from_secs(60)),
    );

    let (filled, updates, checks) = tokio::join!(
        tokio::spawn(trading_loop()),
        tokio::spawn(continual_learning_loop()),
        tokio::spawn(monitoring_loop()),
    );
    println!();
    println!(
        "trading_loop:            {}/{ITERATIONS} iterations completed",
        filled.unwrap()
    );
    println!(
        "continual_learning_loop: {}/{ITERATIONS} iterations completed",
        updates.unwrap()
    );
    println!(
        "monitoring_loop:         {}/{ITERATIONS} iterations completed",
        checks.unwrap()
    );

    let s = timeouts::stats();
    println!("\ntimeouts in total: {}", s.timeouts);
    for label in ["trading_loop", "continual_learning_loop", "monitoring_loop"] {
        println!("  {label:<24} {}", s.timeouts_labelled(label));
    }
}
