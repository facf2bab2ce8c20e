//! Each form of `timeout_async!`: one call that finishes, one that times out.
//!
//!     cargo run --example quickstart
//!
//! Runs on `futures::executor::block_on`; any executor works the same.

use std::future::pending;
use std::time::Duration;

use futures::executor::block_on;
use futures_timer::Delay;
use opguard::{TimeoutError, timeout_async, timeouts};

/// Stands in for real work: finishes after `ms` milliseconds.
async fn work(ms: u64) -> &'static str {
    Delay::new(Duration::from_millis(ms)).await;
    "done"
}

// The item form: the attribute goes on the function, like a decorator.
timeout_async! {
    #[timeout(label = "refresh_cache", 0.2)]
    async fn refresh_cache(entries: usize) -> usize {
        work(20).await;
        entries
    }
}

fn show<T: std::fmt::Debug>(form: &str, out: Result<T, TimeoutError>) {
    match out {
        Ok(v) => println!("{form:<50} -> Ok({v:?})"),
        Err(e) => println!("{form:<50} -> Err({e})"),
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    // Shorter than the built-in 30 s so that the demo does not wait long.
    opguard::timeouts::set_default(0.3).expect("0.3 s is a valid timeout");

    block_on(async {
        show("timeout_async!(work(10))", timeout_async!(work(10)).await);
        show(
            "timeout_async!(pending())",
            timeout_async!(pending::<()>()).await,
        );

        show(
            "timeout_async!(0.5, work(10))",
            timeout_async!(0.5, work(10)).await,
        );
        show(
            "timeout_async!(0.05, work(500))",
            timeout_async!(0.05, work(500)).await,
        );

        let d = Duration::from_millis(250);
        show(
            "timeout_async!(Duration 250ms, work(10))",
            timeout_async!(d, work(10)).await,
        );
        show(
            "timeout_async!(Duration 250ms, pending())",
            timeout_async!(d, pending::<()>()).await,
        );

        show(
            "timeout_async!(label = \"fetch_price\", 1, ..)",
            timeout_async!(label = "fetch_price", 1, work(10)).await,
        );
        show(
            "timeout_async!(label = \"fetch_price\", 0.05, ..)",
            timeout_async!(label = "fetch_price", 0.05, pending::<f64>()).await,
        );

        show("refresh_cache(128)", refresh_cache(128).await);
        show(
            "timeout_async!(-1, ..)  (invalid)",
            timeout_async!(-1, work(10)).await,
        );
    });

    let s = timeouts::stats();
    println!(
        "\ntimeouts: {} (invalid timeouts: {})",
        s.timeouts, s.invalid
    );
    for site in &s.sites {
        let label = site.label.unwrap_or("-");
        println!(
            "  {label:<12} {}:{}  {}",
            site.file, site.line, site.timeouts
        );
    }
}
