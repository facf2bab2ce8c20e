//! When timeouts that all fire end, on smol, beside futures-time's: the
//! timeline behind the all-fire row of `benches/scale.rs` on smol.
//!
//!     cargo bench --bench fire_timeline              # 10 000 timeouts, 9 rounds
//!     cargo bench --bench fire_timeline -- --short   # 1 000, 2 rounds, for CI
//!
//! N tasks are spawned at once on smol's `LocalExecutor`, each awaiting a
//! 50 ms timeout around `pending()`. Each task notes when its timeout
//! started (its first poll) and when it ended, and from these each round
//! gives:
//! - starts: from the first timeout's start to the last's;
//! - first end: how long after the first deadline the first timeout ended;
//! - ends: from the first timeout's end to the last's;
//! - last late: how long after the last deadline the last timeout ended,
//!   which is what the round's wall time pays past its deadlines;
//! - pauses: the gaps of more than 10 µs between one timeout's end and the
//!   next, added up: time within "ends" in which none ended.
//!
//! Then the same with one deadline for all (`until =`, futures-time's
//! `Instant`): "ends" is then how fast the executor works through N fired
//! timeouts at once. Beside them, bare tasks that pend once and are all
//! woken at that deadline by one more task (a `smol::Timer`): what the
//! executor itself costs to wake and end N tasks, which neither timer can
//! save. Medians of the warm rounds, the timers taking turns.
//!
//! `OPGUARD_TIMELINE_N` sets N (at least 1). Results go to stdout and
//! `$OPGUARD_BENCH_OUT` (markdown, default `target/bench/fire_timeline.md`).

use std::cell::RefCell;
use std::fmt::Write as _;
use std::future::{pending, poll_fn};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_time::future::FutureExt as _;

/// Every timeout's length.
const FIRE: Duration = Duration::from_millis(50);
/// A gap between two ends longer than this is a pause.
const PAUSE: Duration = Duration::from_micros(10);

#[derive(Clone, Copy, PartialEq)]
enum Timer {
    Opguard,
    FuturesTime,
    /// No timeout: pends once, until the one deadline (for one deadline
    /// for all only).
    Bare,
}

impl Timer {
    fn name(self) -> &'static str {
        match self {
            Timer::Opguard => "opguard",
            Timer::FuturesTime => "futures-time",
            Timer::Bare => "bare, woken at the deadline",
        }
    }
}

/// The wakers of the bare tasks, woken all at once at the deadline.
type Parked = Rc<RefCell<Vec<Waker>>>;

/// One task: a timeout that fires, of `FIRE` from its start or at `at`;
/// or, bare, a wait until `parked`'s wakers are woken.
async fn fires(timer: Timer, at: Option<Instant>, parked: &Parked) {
    match (timer, at) {
        (Timer::Bare, _) => {
            let mut pended = false;
            poll_fn(|cx| {
                if std::mem::replace(&mut pended, true) {
                    Poll::Ready(())
                } else {
                    parked.borrow_mut().push(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await
        }
        (Timer::Opguard, None) => {
            assert!(
                opguard::timeout_async!(FIRE, pending::<()>())
                    .await
                    .is_err()
            )
        }
        (Timer::Opguard, Some(at)) => {
            assert!(
                opguard::timeout_async!(until = at, pending::<()>())
                    .await
                    .is_err()
            )
        }
        (Timer::FuturesTime, None) => assert!(
            pending::<()>()
                .timeout(futures_time::time::Duration::from(FIRE))
                .await
                .is_err()
        ),
        (Timer::FuturesTime, Some(at)) => assert!(
            pending::<()>()
                .timeout(futures_time::time::Instant::from(at))
                .await
                .is_err()
        ),
    }
}

/// One round's measures, in µs: starts, first end, ends, last late, pauses.
type Measures = [f64; 5];

/// One round of `n` tasks: each timeout's start and end, then the measures.
fn round(ex: &smol::LocalExecutor<'_>, timer: Timer, shared: bool, n: usize) -> Measures {
    let log = Rc::new(RefCell::new(Vec::with_capacity(n)));
    let at = shared.then(|| Instant::now() + FIRE);
    let parked = Parked::default();
    smol::block_on(ex.run(async {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let (log, parked) = (Rc::clone(&log), Rc::clone(&parked));
                ex.spawn(async move {
                    let start = Instant::now();
                    fires(timer, at, &parked).await;
                    log.borrow_mut().push((start, Instant::now()));
                })
            })
            .collect();
        if timer == Timer::Bare {
            let (parked, at) = (Rc::clone(&parked), at.expect("bare tasks share a deadline"));
            ex.spawn(async move {
                smol::Timer::at(at).await;
                // Every bare task has parked by then (spawned first, they
                // ran first); one that had not would never be woken.
                while parked.borrow().len() < n {
                    smol::future::yield_now().await;
                }
                let wakers = std::mem::take(&mut *parked.borrow_mut());
                wakers.into_iter().for_each(Waker::wake);
            })
            .detach();
        }
        for task in tasks {
            task.await;
        }
    }));
    let log = log.borrow();
    let due = |start: Instant| at.unwrap_or(start + FIRE);
    let first_start = log.iter().map(|t| t.0).min().expect("a task");
    let last_start = log.iter().map(|t| t.0).max().expect("a task");
    let mut ends: Vec<Instant> = log.iter().map(|t| t.1).collect();
    ends.sort();
    let (first_end, last_end) = (ends[0], ends[n - 1]);
    let pauses: Duration = ends
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|gap| *gap > PAUSE)
        .sum();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let signed = |a: Instant, b: Instant| {
        if a >= b { us(a - b) } else { -us(b - a) }
    };
    [
        us(last_start - first_start),
        signed(first_end, due(first_start)),
        us(last_end - first_end),
        signed(last_end, due(last_start)),
        us(pauses),
    ]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let short = std::env::args().any(|a| a == "--short");
    let n = match std::env::var("OPGUARD_TIMELINE_N") {
        Err(_) => {
            if short {
                1_000
            } else {
                10_000
            }
        }
        Ok(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("OPGUARD_TIMELINE_N={v:?}: expected a number of timeouts, 1 or more");
                std::process::exit(2);
            }
        },
    };
    let rounds = if short { 2 } else { 9 };
    let ex = smol::LocalExecutor::new();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n### When {n} timeouts of 50 ms that all fire end, on smol (medians of {rounds} rounds, µs)\n\n\
         | deadlines | timer | starts | first end | ends | last late | pauses |\n\
         |---|---|---:|---:|---:|---:|---:|"
    );
    for shared in [false, true] {
        let timers: &[Timer] = if shared {
            &[Timer::Opguard, Timer::FuturesTime, Timer::Bare]
        } else {
            &[Timer::Opguard, Timer::FuturesTime]
        };
        // One warm-up round each, then the timers take turns.
        for &t in timers {
            round(&ex, t, shared, n);
        }
        let mut all = vec![Vec::new(); timers.len()];
        for _ in 0..rounds {
            for (i, &t) in timers.iter().enumerate() {
                all[i].push(round(&ex, t, shared, n));
            }
        }
        for (i, t) in timers.iter().enumerate() {
            let m: Vec<f64> = (0..5)
                .map(|k| median(all[i].iter().map(|r| r[k]).collect()))
                .collect();
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
                if shared {
                    "one for all"
                } else {
                    "50 ms from each start"
                },
                t.name(),
                m[0],
                m[1],
                m[2],
                m[3],
                m[4]
            );
        }
    }
    print!("{md}");
    let out = std::env::var("OPGUARD_BENCH_OUT")
        .unwrap_or_else(|_| "target/bench/fire_timeline.md".into());
    if let Some(dir) = std::path::Path::new(&out).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&out, md).expect("the bench's output file");
    println!("written to {out}");
}
