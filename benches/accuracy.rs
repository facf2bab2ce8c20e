//! How late timeouts fire: 1 ms, 10 ms, 100 ms and 1 s, median and p99 of
//! the lateness (time past the deadline), for opguard, tokio's timeout and
//! async-io's timer. (opguard rounds timeouts shorter than a second up to
//! 250 µs ticks, and longer ones to wider ticks, at most a thousandth of the
//! timeout: 1 ms at 1 s, which the last row shows.)
//!
//!     cargo bench --bench accuracy              # 200 samples each
//!     cargo bench --bench accuracy -- --short   # 20 samples, for CI

use std::future::pending;
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
    let path =
        std::env::var("OPGUARD_BENCH_OUT").unwrap_or_else(|_| "target/bench-accuracy.md".into());
    std::fs::write(&path, out).expect("write the results");
    println!("written to {path}");
}
