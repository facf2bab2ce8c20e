//! How late timeouts fire: 1 ms, 10 ms, 100 ms and 1 s, median and p99 of
//! the lateness (time past the deadline), for opguard, tokio's timeout and
//! async-io's timer. (opguard rounds timeouts shorter than a second up to
//! 250 µs ticks, and longer ones to wider ticks, at most a thousandth of the
//! timeout: 1 ms at 1 s, which the 1 s row shows.) Then 30 s: 20 timeouts
//! started 53 ms apart, all pending at once, each timer's on a thread of its
//! own (opguard's tick is 16 ms wide there, and each waits in a staging tick
//! first); the median and the worst.
//!
//!     cargo bench --bench accuracy              # 200 samples each, ~35 s
//!     cargo bench --bench accuracy -- --short   # 20 samples, and 2 s for 30 s, for CI

use std::future::{Future, pending};
use std::pin::Pin;
use std::time::{Duration, Instant};

fn lateness(
    samples: usize,
    deadline: Duration,
    mut once: impl FnMut(Duration),
) -> (Duration, Duration) {
    let mut late: Vec<Duration> = (0..samples)
        .map(|i| {
            // Start at a spread of offsets: back-to-back samples would all
            // start just after a tick and measure the worst case every time.
            std::thread::sleep(Duration::from_micros((i as u64 * 379) % 1000));
            let start = Instant::now();
            once(deadline);
            start.elapsed().saturating_sub(deadline)
        })
        .collect();
    late.sort();
    (
        late[late.len() / 2],
        late[(late.len() * 99 / 100).min(late.len() - 1)],
    )
}

/// The median and the worst of `late`.
fn median_max(mut late: Vec<Duration>) -> (Duration, Duration) {
    late.sort();
    (late[late.len() / 2], late[late.len() - 1])
}

/// The lateness of a timeout of `after` made by `timeout`, once it starts.
async fn late_by<F: Future>(after: Duration, timeout: F) -> Duration {
    let start = Instant::now();
    timeout.await;
    start.elapsed().saturating_sub(after)
}

type Timed = Pin<Box<dyn Future<Output = Duration> + Send>>;

/// `n` timeouts of `after`, started `apart` from one another from `phase`
/// on, all pending at once.
#[derive(Clone, Copy)]
struct Spread {
    n: usize,
    after: Duration,
    apart: Duration,
    phase: Duration,
}

/// How the timeouts of `spread`, each made by `timeout`, on a tokio
/// current-thread runtime of their own, were late.
fn on_tokio(spread: Spread, timeout: fn(Duration) -> Timed) -> Vec<Duration> {
    let Spread { n, after, .. } = spread;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let began = tokio::time::Instant::now() + spread.phase;
    rt.block_on(async {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                tokio::spawn(async move {
                    tokio::time::sleep_until(began + spread.apart * i as u32).await;
                    timeout(after).await
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    })
}

/// As [`on_tokio`], on smol's executor.
fn on_smol(spread: Spread, timeout: fn(Duration) -> Timed) -> Vec<Duration> {
    let Spread { n, after, .. } = spread;
    let ex = smol::LocalExecutor::new();
    let began = Instant::now() + spread.phase;
    smol::block_on(ex.run(async {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                ex.spawn(async move {
                    smol::Timer::at(began + spread.apart * i as u32).await;
                    timeout(after).await
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await);
        }
        out
    }))
}

fn main() {
    let short = std::env::args().any(|a| a == "--short");
    let samples = if short { 20 } else { 200 };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut out =
        String::from("| deadline | timer | median late | p99 late |\n|---:|---|---:|---:|\n");
    for ms in [1, 10, 100, 1000] {
        let samples = match ms {
            100 => samples / 4,
            1000 => (samples / 20).max(1),
            _ => samples,
        };
        let d = Duration::from_millis(ms);
        let rows = [
            (
                "opguard (tokio)",
                lateness(samples, d, |d| {
                    let r = rt.block_on(opguard::timeout_async!(d, pending::<()>()));
                    assert!(r.is_err());
                }),
            ),
            (
                "opguard (smol)",
                lateness(samples, d, |d| {
                    assert!(smol::block_on(opguard::timeout_async!(d, pending::<()>())).is_err());
                }),
            ),
            (
                "tokio::time::timeout",
                lateness(samples, d, |d| {
                    assert!(
                        rt.block_on(async { tokio::time::timeout(d, pending::<()>()).await })
                            .is_err()
                    );
                }),
            ),
            (
                "async-io Timer (smol)",
                lateness(samples, d, |d| {
                    smol::block_on(smol::Timer::after(d));
                }),
            ),
        ];
        for (timer, (median, p99)) in rows {
            let line = format!("| {ms} ms | {timer} | {median:.2?} | {p99:.2?} |\n");
            print!("{line}");
            out.push_str(&line);
        }
    }
    // Long timeouts, all pending at once, each timer's on a thread of its
    // own, their starts a quarter of `apart` after the timer before's.
    let (n, after, apart) = if short {
        (5, Duration::from_secs(2), Duration::from_millis(7))
    } else {
        (20, Duration::from_secs(30), Duration::from_millis(53))
    };
    let q = apart / 4;
    let spread = move |phase| Spread {
        n,
        after,
        apart,
        phase,
    };
    let runs = [
        (
            "opguard (tokio)",
            std::thread::spawn(move || {
                on_tokio(spread(Duration::ZERO), |d| {
                    Box::pin(late_by(d, opguard::timeout_async!(d, pending::<()>())))
                })
            }),
        ),
        (
            "opguard (smol)",
            std::thread::spawn(move || {
                on_smol(spread(q), |d| {
                    Box::pin(late_by(d, opguard::timeout_async!(d, pending::<()>())))
                })
            }),
        ),
        (
            "tokio::time::timeout",
            std::thread::spawn(move || {
                on_tokio(spread(q * 2), |d| {
                    Box::pin(late_by(d, tokio::time::timeout(d, pending::<()>())))
                })
            }),
        ),
        (
            "async-io Timer (smol)",
            std::thread::spawn(move || {
                on_smol(spread(q * 3), |d| {
                    Box::pin(late_by(d, smol::Timer::after(d)))
                })
            }),
        ),
    ];
    for (timer, run) in runs {
        let (median, worst) = median_max(run.join().unwrap());
        let line = format!(
            "| {} s, {n} at once | {timer} | {median:.2?} | {worst:.2?} (worst) |\n",
            after.as_secs()
        );
        print!("{line}");
        out.push_str(&line);
    }
    let path =
        std::env::var("OPGUARD_BENCH_OUT").unwrap_or_else(|_| "target/bench-accuracy.md".into());
    std::fs::write(&path, out).expect("write the results");
    println!("written to {path}");
}
