//! Many concurrent timeouts at once: wall time, memory per pending timeout,
//! and the heap still allocated once all are gone, measured with a counting
//! global allocator.
//!
//!     cargo bench --bench scale              # 10 000, 100 000 and 1 000 000
//!     cargo bench --bench scale -- --short   # 10 000, for CI
//!
//! Half the timeouts fire (the inner future never finishes; 100 ms timeout),
//! half complete (the inner future yields a few times, then finishes; 10 s
//! timeout). `opguard` runs on tokio multi-thread, smol and a futures
//! ThreadPool; tokio's own timeout runs on tokio, beside it.

use std::io::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

#[path = "../tests/common/load.rs"]
mod load;

use load::{FIRE_AFTER, LIVE, PEAK, Tally, Timer, run};

#[global_allocator]
static ALLOC: load::Counting = load::Counting;

fn mb(bytes: isize) -> f64 {
    bytes as f64 / 1e6
}

fn main() {
    let short = std::env::args().any(|a| a == "--short");
    let sizes: &[usize] = if short {
        &[10_000]
    } else {
        &[10_000, 100_000, 1_000_000]
    };
    let cases = [
        ("opguard", "tokio", Timer::Opguard),
        ("opguard", "smol", Timer::Opguard),
        ("opguard", "threadpool", Timer::Opguard),
        ("tokio::time::timeout", "tokio", Timer::Tokio),
    ];
    let mut out = String::new();
    let mut csv =
        String::from("timeouts,timer,executor,wall_ms,peak_bytes_per_timeout,heap_left_mb\n");
    out.push_str("| timeouts | timer | executor | wall time | peak bytes per timeout | heap left after |\n|---:|---|---|---:|---:|---:|\n");
    // Warm up once: lazily created globals (runtimes, timer threads) are not leaks.
    for (_, executor, timer) in cases {
        run(executor, timer, 1000, Box::leak(Box::default()));
    }
    std::thread::sleep(FIRE_AFTER * 2);
    for &n in sizes {
        for (name, executor, timer) in cases {
            let tally: &'static Tally = Box::leak(Box::default());
            let base = LIVE.load(Relaxed);
            PEAK.store(base, Relaxed);
            let start = Instant::now();
            run(executor, timer, n, tally);
            let wall = start.elapsed();
            let counts = (tally.fired.load(Relaxed), tally.completed.load(Relaxed));
            assert_eq!(counts, (n / 2, n / 2), "each resolves once, the right way");
            // Let every tick that is still pending fire and free itself.
            std::thread::sleep(FIRE_AFTER * 2);
            let left = LIVE.load(Relaxed) - base;
            let peak = PEAK.load(Relaxed) - base;
            let line = format!(
                "| {n} | {name} | {executor} | {:.0} ms | {:.0} | {:.2} MB |\n",
                wall.as_secs_f64() * 1e3,
                peak as f64 / n as f64,
                mb(left),
            );
            csv.push_str(&format!(
                "{n},{name},{executor},{:.3},{:.1},{:.3}\n",
                wall.as_secs_f64() * 1e3,
                peak as f64 / n as f64,
                mb(left),
            ));
            print!("{line}");
            std::io::stdout().flush().ok();
            out.push_str(&line);
        }
    }
    let path =
        std::env::var("OPGUARD_BENCH_OUT").unwrap_or_else(|_| "target/bench-scale.md".into());
    std::fs::write(&path, out).expect("write the results");
    let csv_path = std::path::Path::new(&path).with_extension("csv");
    std::fs::write(&csv_path, csv).expect("write the results");
    println!("written to {path} and {}", csv_path.display());
}
