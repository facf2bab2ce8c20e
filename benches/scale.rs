//! Timeouts at server scale, beside the bare tasks and tokio's timeout (and
//! futures-time's on smol), in one process:
//!
//!     cargo bench --bench scale              # 10 000, 100 000, 1 000 000
//!     cargo bench --bench scale -- --short   # 10 000 and fewer rounds, for CI
//!
//! - finish in time: N tasks spawned at once, each `timeout(30 s, f)` where
//!   `f` pends twice (waking itself) and then finishes: the common case in a
//!   server, a timer started and then cancelled. Overhead per timeout is
//!   (timed round - bare round) / N, from the median of several warm rounds
//!   run in turn (the runtime and the allocator already used).
//! - all fire: `timeout(50 ms, pending())`; overhead is the round minus the
//!   50 ms and the bare round, per timeout. Wall time here is mostly how late
//!   the last deadline fires, so the CPU time of the whole process (every
//!   thread: the executor's, futures-timer's, tokio's) is given beside it,
//!   for both tables.
//!   With two sizes or more, the wall-time overheads at the two smallest
//!   are then split into a fixed part per round and a part per timeout
//!   (overhead x N = fixed + N x per timeout).
//! - one at a time: requests that come one after another, `PACED_GAP`
//!   apart (`OPGUARD_PACED_GAP_US` sets another gap), each under a 30 s
//!   timeout that its future (pending twice) beats, as on a server that is
//!   not busy: CPU time of the whole process per request, over the bare
//!   requests. A 30 s timeout's tick is 16 ms wide, so here about sixteen
//!   requests in a row share a tick; requests 16 ms or more apart would
//!   each have one of their own.
//! - heap: peak heap per pending timeout task, minus a bare pending task's
//!   (a counting global allocator, on only while it measures), with the
//!   timeouts started together (sharing ticks); then the heap in use per
//!   pending timeout when 30 s timeouts start at a steady rate, in real
//!   time, after 31 s of it (about four minutes in all; one rate in the
//!   short mode).
//! - by inner size: finish in time and all fire, at each size, on each
//!   executor (`OPGUARD_SCALE_INNER_EXECS` picks some), with inner futures
//!   that carry more state (0 to 192 bytes more), as request futures do:
//!   where a task's parts fall in tokio's 128-byte-aligned cell moves what
//!   it costs the runtime by more than either timer costs, so one inner
//!   size alone says little.
//! - lateness: 10 000 timeouts of 20 ms each for opguard and tokio, started
//!   at spread times on one runtime while two threads keep both cores busy;
//!   12 runs (`OPGUARD_LATENESS_RUNS`), summed up as opguard's minus tokio's,
//!   and where the slowest come from: the stretches in which the runtime's
//!   thread completed no timeout at all (stalls), and which timer's
//!   timeouts completed first when it went on; then each timer alone on
//!   the runtime, with each timeout's lateness split where its task was
//!   woken (a waker that notes when, and from which thread): the timer's
//!   part and the runtime's.
//!
//! Executors: tokio current-thread; tokio multi-thread (2 workers) with the
//! tasks spawned from outside the runtime and from inside a task; smol's
//! executor. Results go to stdout, `$OPGUARD_BENCH_OUT` (markdown, default
//! `target/bench/scale.md`) and a CSV beside it.

use std::fmt::Write as _;
use std::future::{Future, pending};
use std::io::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

#[path = "../tests/common/load.rs"]
mod load;

use load::{COUNTING, LIVE, PEAK, YieldN as PendN};

#[global_allocator]
static ALLOC: load::Counting = load::Counting;

const LONG: Duration = Duration::from_secs(30);
const FIRE: Duration = Duration::from_millis(50);
const LATE_AFTER: Duration = Duration::from_millis(20);
/// How far apart the requests of the one-at-a-time rounds come.
const PACED_GAP: Duration = Duration::from_millis(1);

#[derive(Clone, Copy, PartialEq, Debug)]
enum Timer {
    Bare,
    Opguard,
    Tokio,
    FuturesTime,
}

impl Timer {
    fn name(self) -> &'static str {
        match self {
            Timer::Bare => "bare",
            Timer::Opguard => "opguard",
            Timer::Tokio => "tokio",
            Timer::FuturesTime => "futures-time",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Work {
    Finish,
    Fire,
    /// Pends until aborted: for the heap of pending timeouts.
    Pend,
}

impl Work {
    /// The seconds a round waits for its timeouts, beside its work: all
    /// fire after [`FIRE`].
    fn waited(self) -> f64 {
        if self == Work::Fire {
            FIRE.as_secs_f64()
        } else {
            0.0
        }
    }
}

fn futures_time(d: Duration) -> futures_time::time::Duration {
    futures_time::time::Duration::from(d)
}

// One `async fn` per timer, so that each task is the size its timer makes it.

async fn bare(work: Work) {
    match work {
        Work::Finish => PendN(2).await,
        Work::Fire => {}
        Work::Pend => pending::<()>().await,
    }
}

async fn with_opguard(work: Work) {
    match work {
        Work::Finish => opguard::timeout_async!(LONG, PendN(2)).await.unwrap(),
        Work::Fire => assert!(
            opguard::timeout_async!(FIRE, pending::<()>())
                .await
                .is_err()
        ),
        Work::Pend => {
            let _ = opguard::timeout_async!(LONG, pending::<()>()).await;
        }
    }
}

async fn with_tokio(work: Work) {
    match work {
        Work::Finish => tokio::time::timeout(LONG, PendN(2)).await.unwrap(),
        Work::Fire => assert!(tokio::time::timeout(FIRE, pending::<()>()).await.is_err()),
        Work::Pend => {
            let _ = tokio::time::timeout(LONG, pending::<()>()).await;
        }
    }
}

async fn with_futures_time(work: Work) {
    use futures_time::future::FutureExt as _;
    match work {
        Work::Finish => PendN(2).timeout(futures_time(LONG)).await.unwrap(),
        Work::Fire => assert!(pending::<()>().timeout(futures_time(FIRE)).await.is_err()),
        Work::Pend => {
            let _ = pending::<()>().timeout(futures_time(LONG)).await;
        }
    }
}

/// `PendN(2)` with `K` more bytes of state, which each poll reads, as a
/// larger request future would: the inner future of the rounds by inner size.
struct Padded<const K: usize> {
    pend: PendN,
    state: [u8; K],
}

impl<const K: usize> Future for Padded<K> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        std::hint::black_box(&self.state);
        Pin::new(&mut self.pend).poll(cx)
    }
}

fn padded<const K: usize>() -> Padded<K> {
    Padded {
        pend: PendN(2),
        state: std::hint::black_box([0; K]),
    }
}

async fn bare_sized<const K: usize>() {
    padded::<K>().await
}

async fn opguard_sized<const K: usize>() {
    opguard::timeout_async!(LONG, padded::<K>()).await.unwrap()
}

async fn tokio_sized<const K: usize>() {
    tokio::time::timeout(LONG, padded::<K>()).await.unwrap()
}

/// A future with `K` bytes of state that never finishes and is never
/// woken: the inner future of the all-fire rounds by inner size.
struct PaddedPending<const K: usize> {
    state: [u8; K],
}

impl<const K: usize> Future for PaddedPending<K> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        std::hint::black_box(&self.state);
        Poll::Pending
    }
}

fn padded_pending<const K: usize>() -> PaddedPending<K> {
    PaddedPending {
        state: std::hint::black_box([0; K]),
    }
}

/// As the bare tasks of the all-fire rounds: done at once.
async fn bare_fire_sized<const K: usize>() {}

async fn opguard_fire_sized<const K: usize>() {
    assert!(
        opguard::timeout_async!(FIRE, padded_pending::<K>())
            .await
            .is_err()
    )
}

async fn tokio_fire_sized<const K: usize>() {
    assert!(
        tokio::time::timeout(FIRE, padded_pending::<K>())
            .await
            .is_err()
    )
}

/// One round on `rt` (of `exec`): `n` tasks spawned at once, each made by
/// `$task!(SPAWN, ARGS..)` with a spawn function for that executor, all
/// awaited; its wall and CPU time.
macro_rules! run_round {
    ($rt:expr, $exec:expr, $n:expr, $task:ident!($($arg:tt)*)) => {{
        let (start, cpu_start) = (Instant::now(), cpu());
        match ($rt, $exec) {
            (Rt::Tokio(rt), Exec::TokioMultiOutside) => {
                let handles: Vec<_> = (0..$n).map(|_| $task!(|f| rt.spawn(f), $($arg)*)).collect();
                rt.block_on(async {
                    for h in handles {
                        h.await.unwrap();
                    }
                });
            }
            (Rt::Tokio(rt), Exec::TokioMultiInside) => {
                rt.block_on(rt.spawn(async move {
                    let handles: Vec<_> =
                        (0..$n).map(|_| $task!(tokio::spawn, $($arg)*)).collect();
                    for h in handles {
                        h.await.unwrap();
                    }
                }))
                .unwrap();
            }
            (Rt::Tokio(rt), _) => rt.block_on(async {
                let handles: Vec<_> = (0..$n).map(|_| $task!(tokio::spawn, $($arg)*)).collect();
                for h in handles {
                    h.await.unwrap();
                }
            }),
            (Rt::Smol(ex), _) => smol::block_on(ex.run(async {
                let tasks: Vec<_> = (0..$n).map(|_| $task!(|f| ex.spawn(f), $($arg)*)).collect();
                for t in tasks {
                    t.await;
                }
            })),
        }
        [start.elapsed(), cpu() - cpu_start]
    }};
}

async fn futures_time_sized<const K: usize>() {
    use futures_time::future::FutureExt as _;
    padded::<K>().timeout(futures_time(LONG)).await.unwrap()
}

async fn futures_time_fire_sized<const K: usize>() {
    use futures_time::future::FutureExt as _;
    assert!(
        padded_pending::<K>()
            .timeout(futures_time(FIRE))
            .await
            .is_err()
    )
}

/// Spawns the task of `timer` whose inner future carries `$k` more bytes,
/// finishing in time or (`work` [`Work::Fire`]) all firing, with `spawn`.
macro_rules! spawn_sized {
    ($spawn:expr, $k:ident, $timer:expr, $work:expr) => {
        match ($timer, $work) {
            (Timer::Opguard, Work::Fire) => $spawn(opguard_fire_sized::<$k>()),
            (Timer::Tokio, Work::Fire) => $spawn(tokio_fire_sized::<$k>()),
            (Timer::FuturesTime, Work::Fire) => $spawn(futures_time_fire_sized::<$k>()),
            (_, Work::Fire) => $spawn(bare_fire_sized::<$k>()),
            (Timer::Opguard, _) => $spawn(opguard_sized::<$k>()),
            (Timer::Tokio, _) => $spawn(tokio_sized::<$k>()),
            (Timer::FuturesTime, _) => $spawn(futures_time_sized::<$k>()),
            _ => $spawn(bare_sized::<$k>()),
        }
    };
}

/// One round of `n` tasks of `timer` whose inner future carries `K` more
/// bytes, finishing in time or (`work` [`Work::Fire`]) all firing: its wall
/// and CPU time.
fn sized_round<const K: usize>(
    rt: &Rt,
    exec: Exec,
    timer: Timer,
    work: Work,
    n: usize,
) -> [Duration; 2] {
    run_round!(rt, exec, n, spawn_sized!(K, timer, work))
}

/// The sizes of the three tasks' futures on `exec` (bare, opguard, the
/// other timer) with `K` more bytes of inner state, finishing in time or
/// all firing.
fn sized_tasks<const K: usize>(exec: Exec, work: Work) -> [usize; 3] {
    use std::mem::size_of_val;
    let smol = exec == Exec::Smol;
    if work == Work::Fire {
        return [
            size_of_val(&bare_fire_sized::<K>()),
            size_of_val(&opguard_fire_sized::<K>()),
            if smol {
                size_of_val(&futures_time_fire_sized::<K>())
            } else {
                size_of_val(&tokio_fire_sized::<K>())
            },
        ];
    }
    [
        size_of_val(&bare_sized::<K>()),
        size_of_val(&opguard_sized::<K>()),
        if smol {
            size_of_val(&futures_time_sized::<K>())
        } else {
            size_of_val(&tokio_sized::<K>())
        },
    ]
}

/// Per timeout, in ns, with `K` more bytes of inner state: the bare task's
/// CPU time, and opguard's and the other timer's overhead over the bare
/// tasks in wall time (less the 50 ms wait, when they fire) and in CPU time.
/// Medians of `rounds` warm rounds, the timers taking turns, on a runtime of
/// their own.
struct Sized {
    bare_cpu: f64,
    wall: [f64; 2],
    cpu: [f64; 2],
}

fn sized_overheads<const K: usize>(exec: Exec, work: Work, n: usize, rounds: usize) -> Sized {
    let rt = runtime(exec);
    let [wall, cpu] = in_turns(&exec.timers(), rounds, |t| {
        sized_round::<K>(&rt, exec, t, work, n)
    });
    let per = |v: f64| v / n as f64 * 1e9;
    Sized {
        bare_cpu: per(cpu[0]),
        wall: [1, 2].map(|i| per(wall[i] - work.waited() - wall[0])),
        cpu: [1, 2].map(|i| per(cpu[i] - cpu[0])),
    }
}

/// The inner sizes the rounds by inner size try, in bytes beyond `PendN`'s.
macro_rules! for_inner_sizes {
    ($mac:ident) => {
        $mac!(0, 8, 16, 24, 32, 48, 64, 96, 128, 192)
    };
}

/// [`sized_round`] finishing in time with `k` more bytes of inner state,
/// `k` one of [`for_inner_sizes`]'s.
fn inner_round(rt: &Rt, exec: Exec, timer: Timer, n: usize, k: usize) -> Duration {
    macro_rules! pick {
        ($($k:literal),*) => {
            match k {
                $($k => sized_round::<$k>(rt, exec, timer, Work::Finish, n)[1],)*
                _ => panic!("inner sizes: {:?}", [$($k),*]),
            }
        };
    }
    for_inner_sizes!(pick)
}

/// Pends under a timeout of `after` ([`steady_heap`]'s tasks). (One
/// `async fn` per timer, as above.)
async fn opguard_after(after: Duration) {
    let _ = opguard::timeout_async!(after, pending::<()>()).await;
}

async fn tokio_after(after: Duration) {
    let _ = tokio::time::timeout(after, pending::<()>()).await;
}

/// Spawns the task of `timer` with `spawn`, which takes any task.
macro_rules! spawn_one {
    ($spawn:expr, $timer:expr, $work:expr) => {
        match $timer {
            Timer::Bare => $spawn(bare($work)),
            Timer::Opguard => $spawn(with_opguard($work)),
            Timer::Tokio => $spawn(with_tokio($work)),
            Timer::FuturesTime => $spawn(with_futures_time($work)),
        }
    };
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Exec {
    TokioCurrent,
    TokioMultiOutside,
    TokioMultiInside,
    Smol,
}

impl Exec {
    const ALL: [Exec; 4] = [
        Exec::TokioCurrent,
        Exec::TokioMultiOutside,
        Exec::TokioMultiInside,
        Exec::Smol,
    ];

    /// Its key in the CSV.
    fn key(self) -> &'static str {
        match self {
            Exec::TokioCurrent => "tokio-current",
            Exec::TokioMultiOutside => "tokio-multi-outside",
            Exec::TokioMultiInside => "tokio-multi-inside",
            Exec::Smol => "smol",
        }
    }

    /// The executor whose [`Exec::key`] is `key`; a panic naming `var`, the
    /// environment variable it came from, for any other.
    fn from_key(key: &str, var: &str) -> Exec {
        Exec::ALL
            .into_iter()
            .find(|e| e.key() == key)
            .unwrap_or_else(|| panic!("{var}: no executor {key:?}"))
    }

    fn name(self) -> &'static str {
        match self {
            Exec::TokioCurrent => "tokio current-thread",
            Exec::TokioMultiOutside => "tokio multi-thread, spawned from outside",
            Exec::TokioMultiInside => "tokio multi-thread, spawned from a task",
            Exec::Smol => "smol",
        }
    }

    /// The timers compared on it: tokio's needs tokio.
    fn timers(self) -> [Timer; 3] {
        match self {
            Exec::Smol => [Timer::Bare, Timer::Opguard, Timer::FuturesTime],
            _ => [Timer::Bare, Timer::Opguard, Timer::Tokio],
        }
    }
}

enum Rt {
    Tokio(tokio::runtime::Runtime),
    Smol(smol::LocalExecutor<'static>),
}

fn runtime(exec: Exec) -> Rt {
    match exec {
        Exec::TokioCurrent => Rt::Tokio(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        ),
        Exec::TokioMultiOutside | Exec::TokioMultiInside => Rt::Tokio(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
        ),
        Exec::Smol => Rt::Smol(smol::LocalExecutor::new()),
    }
}

/// The process's resource usage so far, every thread's (the executor's,
/// futures-timer's and tokio's).
#[cfg(target_os = "linux")]
fn usage() -> libc::rusage {
    // SAFETY: `getrusage` fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage
}

/// CPU time used so far by every thread of the process, user and system.
fn cpu() -> Duration {
    #[cfg(target_os = "linux")]
    {
        let usage = usage();
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        tv(usage.ru_utime) + tv(usage.ru_stime)
    }
    #[cfg(not(target_os = "linux"))]
    Duration::ZERO
}

/// The process's minor page faults so far; 0 where they are not counted.
fn minor_faults() -> u64 {
    #[cfg(target_os = "linux")]
    return usage().ru_minflt as u64;
    #[cfg(not(target_os = "linux"))]
    0
}

/// One round: `n` tasks spawned at once, all awaited; its wall and CPU time.
fn round(rt: &Rt, exec: Exec, timer: Timer, work: Work, n: usize) -> [Duration; 2] {
    run_round!(rt, exec, n, spawn_one!(timer, work))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The median of values in ms (or any `f64`s).
fn median_f64(v: Vec<f64>) -> f64 {
    quantile(v, 0.5)
}

/// The `q` quantile of `v` (0.5: the median, 0.99: the p99).
fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    at(&v, q)
}

/// The `q` quantile of `sorted`, which is not empty.
fn at(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

/// Overhead per timeout, in ns of wall time and of CPU time, of each timer
/// over the bare tasks: medians of `rounds` warm rounds, the timers taking
/// turns.
fn overheads(exec: Exec, work: Work, n: usize, rounds: usize) -> Vec<(Timer, f64, f64)> {
    let rt = runtime(exec);
    let timers = exec.timers();
    let [wall, cpu] = in_turns(&timers, rounds, |t| round(&rt, exec, t, work, n));
    let per = |v: f64| v / n as f64 * 1e9;
    (1..timers.len())
        .map(|i| {
            (
                timers[i],
                per(wall[i] - work.waited() - wall[0]),
                per(cpu[i] - cpu[0]),
            )
        })
        .collect()
}

/// Medians, in seconds, of each timer's wall and CPU time over `rounds`
/// warm rounds (after one round each to warm up), the timers taking turns.
fn in_turns(
    timers: &[Timer],
    rounds: usize,
    mut round: impl FnMut(Timer) -> [Duration; 2],
) -> [Vec<f64>; 2] {
    let mut wall = vec![Vec::new(); timers.len()];
    let mut cpu = vec![Vec::new(); timers.len()];
    for &t in timers {
        round(t);
    }
    for _ in 0..rounds {
        for (i, &t) in timers.iter().enumerate() {
            let [w, c] = round(t);
            wall[i].push(w);
            cpu[i].push(c);
        }
    }
    [wall, cpu].map(|v| v.into_iter().map(|v| median(v).as_secs_f64()).collect())
}

/// Counts a task as polled once its first poll has returned.
struct FirstPoll<F> {
    inner: Pin<Box<F>>,
    polled: Option<Arc<AtomicUsize>>,
}

impl<F: Future<Output = ()>> Future for FirstPoll<F> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let p = self.inner.as_mut().poll(cx);
        if let Some(polled) = self.polled.take() {
            polled.fetch_add(1, Relaxed);
        }
        p
    }
}

/// Spawns `f` on tokio, counting its first poll in `polled`.
fn spawn_counted<F>(f: F, polled: &Arc<AtomicUsize>) -> tokio::task::JoinHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(FirstPoll {
        inner: Box::pin(f),
        polled: Some(polled.clone()),
    })
}

/// Heap per task of `timer` spawned on tokio current-thread as such, not
/// yet polled: the task's cell, which tokio rounds up to its alignment.
fn cell_per_task(timer: Timer) -> f64 {
    const N: usize = 1_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _in = rt.enter();
    // The runtime's first-use state, and room for N tasks in its list.
    let warm: Vec<_> = (0..N)
        .map(|_| spawn_one!(tokio::spawn, timer, Work::Pend))
        .collect();
    drop(warm);
    LIVE.store(0, Relaxed);
    COUNTING.store(true, Relaxed);
    let handles: Vec<_> = (0..N)
        .map(|_| spawn_one!(tokio::spawn, timer, Work::Pend))
        .collect();
    COUNTING.store(false, Relaxed);
    // The handles' own `Vec`, counted too, is taken off.
    let live = LIVE.load(Relaxed) - std::mem::size_of_val(handles.as_slice()) as isize;
    drop(handles);
    live as f64 / N as f64
}

/// Peak heap per task with `n` pending tasks of `timer` on tokio
/// current-thread, started together, each polled once.
fn heap_per_task(timer: Timer, n: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Made before counting: the runtime's and the timer's first-use state.
    rt.block_on(async {
        let h = spawn_one!(tokio::spawn, timer, Work::Pend);
        tokio::task::yield_now().await;
        h.abort();
    });
    let polled = Arc::new(AtomicUsize::new(0));
    LIVE.store(0, Relaxed);
    PEAK.store(0, Relaxed);
    COUNTING.store(true, Relaxed);
    let handles = rt.block_on(async {
        let handles: Vec<_> = (0..n)
            .map(|_| spawn_one!(|f| spawn_counted(f, &polled), timer, Work::Pend))
            .collect();
        while polled.load(Relaxed) < n {
            tokio::task::yield_now().await;
        }
        handles
    });
    let peak = PEAK.load(Relaxed);
    COUNTING.store(false, Relaxed);
    for h in &handles {
        h.abort();
    }
    drop(handles);
    drop(rt);
    peak as f64 / n as f64
}

/// Counts a task pending until it ends (dropped with its future).
struct Live(Arc<AtomicUsize>);

impl Live {
    fn new(count: &Arc<AtomicUsize>) -> Live {
        count.fetch_add(1, Relaxed);
        Live(Arc::clone(count))
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// A pending task as [`steady_heap`] starts them, its future boxed as in
/// [`heap_per_task`]: a timeout of `LONG` around a future that never
/// finishes (none for [`Timer::Bare`]).
fn spawn_live(timer: Timer, live: &Arc<AtomicUsize>, polled: &Arc<AtomicUsize>) {
    let live = Live::new(live);
    let _detached = match timer {
        Timer::Opguard => spawn_counted(
            async move {
                let _live = live;
                opguard_after(LONG).await;
            },
            polled,
        ),
        Timer::Tokio => spawn_counted(
            async move {
                let _live = live;
                tokio_after(LONG).await;
            },
            polled,
        ),
        _ => spawn_counted(
            async move {
                let _live = live;
                pending::<()>().await;
            },
            polled,
        ),
    };
}

/// Heap in use per pending task of `timer` on tokio current-thread, and
/// how many are pending, when timeouts of `LONG` start `rate` a second in
/// real time, as requests that never finish would: measured after `LONG`
/// and a second more, once the first have ended, so that the pending ones
/// are as at any later moment (started over the last `LONG`, each as far
/// along as it is). A bare task ([`Timer::Bare`]) is measured as `n` of
/// them started together.
fn steady_heap(timer: Timer, rate: u32, n: usize) -> (f64, usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (live, polled) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    // Made before counting: the runtime's and the timer's first-use state.
    rt.block_on(async {
        spawn_live(timer, &Arc::new(AtomicUsize::new(0)), &polled);
        tokio::task::yield_now().await;
    });
    LIVE.store(0, Relaxed);
    COUNTING.store(true, Relaxed);
    rt.block_on(async {
        if timer == Timer::Bare {
            (0..n).for_each(|_| spawn_live(timer, &live, &polled));
            while polled.load(Relaxed) < n + 1 {
                tokio::task::yield_now().await;
            }
            return;
        }
        let gap = Duration::from_secs(1) / rate;
        let start = Instant::now();
        let mut started = 0u128;
        loop {
            let since = start.elapsed();
            if since >= LONG + Duration::from_secs(1) {
                break;
            }
            // Those whose start has come, at a steady rate.
            while started <= since.as_nanos() / gap.as_nanos() {
                spawn_live(timer, &live, &polled);
                started += 1;
            }
            tokio::time::sleep(gap.max(Duration::from_millis(1))).await;
        }
    });
    let (heap, pending) = (LIVE.load(Relaxed), live.load(Relaxed));
    COUNTING.store(false, Relaxed);
    drop(rt);
    (heap as f64 / pending as f64, pending)
}

/// Keeps every core busy until dropped.
struct Busy(Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>);

impl Busy {
    fn start(threads: usize) -> Busy {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 1u64;
                    while !stop.load(Relaxed) {
                        for _ in 0..10_000 {
                            x = std::hint::black_box(
                                x.wrapping_mul(6364136223846793005).wrapping_add(1),
                            );
                        }
                    }
                })
            })
            .collect();
        Busy(stop, handles)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(true, Relaxed);
        for h in self.1.drain(..) {
            h.join().unwrap();
        }
    }
}

/// One timeout of the lateness runs: when it completed (since the run
/// began) and how late, and how late its task was woken (the timer's part
/// of the lateness; the rest is the runtime's, from the wake-up to the
/// poll), all in ms.
#[derive(Clone, Copy)]
struct Late {
    done: f64,
    late: f64,
    woken: f64,
    /// Woken from a thread other than the runtime's (futures-timer's).
    remote: bool,
}

/// A future polled with a waker that notes when it is first woken, then
/// wakes the task's: when a timer woke the task, apart from when the
/// runtime then ran it. The same for both timers (one `Arc` clone more per
/// registration, nanoseconds against the milliseconds measured).
struct Stamped<F> {
    fut: Pin<Box<F>>,
    stamp: Option<(Arc<Stamp>, std::task::Waker)>,
}

struct Stamp {
    task: std::sync::Mutex<std::task::Waker>,
    /// When it was first woken, and whether from another thread than the
    /// one that first polled it.
    woken: std::sync::OnceLock<(Instant, bool)>,
    polled_on: std::thread::ThreadId,
}

impl std::task::Wake for Stamp {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let remote = std::thread::current().id() != self.polled_on;
        let _ = self.woken.set((Instant::now(), remote));
        self.task.lock().unwrap().wake_by_ref();
    }
}

impl<F: Future> Future for Stamped<F> {
    type Output = (F::Output, Option<(Instant, bool)>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let (stamp, waker) = this.stamp.get_or_insert_with(|| {
            let stamp = Arc::new(Stamp {
                task: std::sync::Mutex::new(cx.waker().clone()),
                woken: std::sync::OnceLock::new(),
                polled_on: std::thread::current().id(),
            });
            let waker = std::task::Waker::from(Arc::clone(&stamp));
            (stamp, waker)
        });
        {
            let mut task = stamp.task.lock().unwrap();
            if !task.will_wake(cx.waker()) {
                task.clone_from(cx.waker());
            }
        }
        match this.fut.as_mut().poll(&mut Context::from_waker(waker)) {
            Poll::Ready(out) => Poll::Ready((out, stamp.woken.get().copied())),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn stamped<F: Future>(fut: F) -> Stamped<F> {
    Stamped {
        fut: Box::pin(fut),
        stamp: None,
    }
}

/// `n` opguard and `n` tokio timeouts of 20 ms started at spread times on one
/// tokio current-thread runtime while both cores are busy, or only those of
/// the timers `with` says (opguard's, tokio's; the other's list stays
/// empty): each one's completion and lateness, opguard's then tokio's.
fn lateness(n: usize, with: [bool; 2]) -> [Vec<Late>; 2] {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _busy = Busy::start(2);
    let spread_us = 200_000u64;
    let began = Instant::now();
    let (og, tk) = rt.block_on(async {
        let spawn = |timer: Timer, i: usize| {
            // Spread over 200 ms, interleaved between the two timers.
            let offset = Duration::from_micros((i as u64 * 7919) % spread_us);
            tokio::spawn(async move {
                tokio::time::sleep(offset).await;
                let start = Instant::now();
                let (fired, woken) = match timer {
                    Timer::Opguard => {
                        let (out, woken) =
                            stamped(opguard::timeout_async!(LATE_AFTER, pending::<()>())).await;
                        (out.is_err(), woken)
                    }
                    _ => {
                        let (out, woken) =
                            stamped(tokio::time::timeout(LATE_AFTER, pending::<()>())).await;
                        (out.is_err(), woken)
                    }
                };
                assert!(fired);
                let done = Instant::now();
                let (woken, remote) = woken.expect("a timeout that fired woke its task");
                let after =
                    |t: Instant| (t - start).as_secs_f64() * 1e3 - LATE_AFTER.as_secs_f64() * 1e3;
                Late {
                    done: (done - began).as_secs_f64() * 1e3,
                    late: after(done),
                    woken: after(woken),
                    remote,
                }
            })
        };
        let count = |on: bool| if on { n } else { 0 };
        let og: Vec<_> = (0..count(with[0]))
            .map(|i| spawn(Timer::Opguard, i))
            .collect();
        let tk: Vec<_> = (0..count(with[1]))
            .map(|i| spawn(Timer::Tokio, i + 1))
            .collect();
        let mut a = Vec::new();
        for h in og {
            a.push(h.await.unwrap());
        }
        let mut b = Vec::new();
        for h in tk {
            b.push(h.await.unwrap());
        }
        (a, b)
    });
    [og, tk]
}

/// (p50, p99, max, min) of the lateness, in ms.
fn late_stats(v: &[Late]) -> [f64; 4] {
    let mut v: Vec<f64> = v.iter().map(|l| l.late).collect();
    v.sort_by(f64::total_cmp);
    [at(&v, 0.5), at(&v, 0.99), v[v.len() - 1], v[0]]
}

/// A stretch of at least this long in which no timeout of either timer
/// completed, where about 100 complete in a usual millisecond: a stall.
const STALL_MS: f64 = 2.0;
/// The completions in this long after a stall are its burst.
const BURST_MS: f64 = 1.0;

/// Where one run's slowest timeouts come from: the stalls of the runtime's
/// thread and what ran first when it went on.
struct Stalls {
    /// How many stalls, and the longest, in ms.
    count: usize,
    longest: f64,
    /// Per timer (opguard, tokio): of its slowest 1 % (at or past its p99),
    /// how many completed in a stall's burst, and how many there were.
    tail_in_burst: [(usize, usize); 2],
    /// For each burst with both timers in it: opguard's median completion
    /// minus tokio's, in ms.
    lags: Vec<f64>,
}

/// The stalls of one run, given each timer's timeouts and its p99.
fn stalls(og: &[Late], tk: &[Late], p99: [f64; 2]) -> Stalls {
    let mut all: Vec<(f64, bool)> = og.iter().map(|l| (l.done, true)).collect();
    all.extend(tk.iter().map(|l| (l.done, false)));
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Where each stall ends: the first completion after the gap.
    let ends: Vec<(f64, f64)> = all
        .windows(2)
        .filter(|w| w[1].0 - w[0].0 >= STALL_MS)
        .map(|w| (w[1].0, w[1].0 - w[0].0))
        .collect();
    let in_burst = |done: f64| {
        ends.iter()
            .any(|&(end, _)| (end..end + BURST_MS).contains(&done))
    };
    let tail = |v: &[Late], p99: f64| {
        let slow: Vec<&Late> = v.iter().filter(|l| l.late >= p99).collect();
        (slow.iter().filter(|l| in_burst(l.done)).count(), slow.len())
    };
    let lags = ends
        .iter()
        .filter_map(|&(end, _)| {
            let burst = |ours: bool| -> Vec<f64> {
                all.iter()
                    .filter(|&&(d, o)| o == ours && (end..end + BURST_MS).contains(&d))
                    .map(|&(d, _)| d)
                    .collect()
            };
            let (o, t) = (burst(true), burst(false));
            (!o.is_empty() && !t.is_empty()).then(|| median_f64(o) - median_f64(t))
        })
        .collect();
    Stalls {
        count: ends.len(),
        longest: ends.iter().map(|e| e.1).fold(0.0, f64::max),
        tail_in_burst: [tail(og, p99[0]), tail(tk, p99[1])],
        lags,
    }
}

/// How far apart requests one at a time come: `PACED_GAP`, or
/// `OPGUARD_PACED_GAP_US` microseconds (20 000, say, gives each request a
/// tick of its own).
fn paced_gap() -> Duration {
    match std::env::var("OPGUARD_PACED_GAP_US") {
        Ok(us) => Duration::from_micros(
            us.parse()
                .unwrap_or_else(|_| panic!("OPGUARD_PACED_GAP_US: not a number of µs: {us:?}")),
        ),
        Err(_) => PACED_GAP,
    }
}

/// CPU time of one round of `n` requests one at a time, [`paced_gap`] apart.
fn paced_round(rt: &Rt, timer: Timer, n: usize) -> Duration {
    let one = async move || match timer {
        Timer::Bare => bare(Work::Finish).await,
        Timer::Opguard => with_opguard(Work::Finish).await,
        Timer::Tokio => with_tokio(Work::Finish).await,
        Timer::FuturesTime => with_futures_time(Work::Finish).await,
    };
    let gap = paced_gap();
    let start = cpu();
    match rt {
        Rt::Tokio(rt) => rt.block_on(async {
            for _ in 0..n {
                one().await;
                tokio::time::sleep(gap).await;
            }
        }),
        Rt::Smol(ex) => smol::block_on(ex.run(async {
            for _ in 0..n {
                one().await;
                smol::Timer::after(gap).await;
            }
        })),
    }
    cpu() - start
}

/// CPU per request, in ns, of each timer over the bare requests, one at a
/// time: medians of `rounds` rounds, the timers taking turns.
fn paced(exec: Exec, n: usize, rounds: usize) -> Vec<(Timer, f64)> {
    let rt = runtime(exec);
    let timers = exec.timers();
    let mut cpu = vec![Vec::new(); timers.len()];
    for _ in 0..rounds {
        for (i, &t) in timers.iter().enumerate() {
            cpu[i].push(paced_round(&rt, t, n));
        }
    }
    let cpu: Vec<f64> = cpu.into_iter().map(|v| median(v).as_secs_f64()).collect();
    (1..timers.len())
        .map(|i| (timers[i], (cpu[i] - cpu[0]) / n as f64 * 1e9))
        .collect()
}

type Say = fn(&mut String, String);

fn paced_table(md: &mut String, csv: &mut String, short: bool, say: Say) {
    let (n, rounds) = if short { (200, 1) } else { (1_000, 7) };
    say(
        md,
        format!(
            "\n### One at a time ({n} requests {} µs apart, each under a 30 s timeout, the future pends twice): CPU per request over the bare requests\n",
            paced_gap().as_micros()
        ),
    );
    say(
        md,
        "| executor | opguard | tokio (futures-time on smol) |".into(),
    );
    say(md, "|---|---:|---:|".into());
    for exec in [Exec::TokioCurrent, Exec::Smol] {
        let res = paced(exec, n, rounds);
        say(
            md,
            format!(
                "| {} | {:.2} µs | {:.2} µs ({}) |",
                exec.name(),
                res[0].1 / 1e3,
                res[1].1 / 1e3,
                res[1].0.name()
            ),
        );
        for (t, c) in res {
            let _ = writeln!(csv, "PacedCpu,{n},{},{},{c:.1}", exec.key(), t.name());
        }
    }
}

fn heap_table(md: &mut String, csv: &mut String, sizes: &[usize], short: bool, say: Say) {
    say(
        md,
        "\n### Heap per pending timeout (tokio current-thread, peak, minus a bare pending task)\n"
            .into(),
    );
    say(md, "Started together:\n".into());
    say(
        md,
        "| timeouts | opguard | tokio | opguard / tokio |".into(),
    );
    say(md, "|---:|---:|---:|---:|".into());
    for &n in sizes {
        let bare = heap_per_task(Timer::Bare, n);
        let og = heap_per_task(Timer::Opguard, n) - bare;
        let tk = heap_per_task(Timer::Tokio, n) - bare;
        say(
            md,
            format!("| {n} | {og:.0} B | {tk:.0} B | {:.2}x |", og / tk),
        );
        let _ = writeln!(csv, "Heap,{n},tokio-current,opguard,{og:.1}");
        let _ = writeln!(csv, "Heap,{n},tokio-current,tokio,{tk:.1}");
    }
    say(
        md,
        format!(
            "\nTimeouts of {} s started at a steady rate, in real time, as pending after {0} s and \
             one more (heap in use, not the peak; a bare pending task's taken off):\n",
            LONG.as_secs()
        ),
    );
    say(
        md,
        "| started per second | pending | opguard | tokio | opguard / tokio |".into(),
    );
    say(md, "|---:|---:|---:|---:|---:|".into());
    let rates: &[u32] = if short {
        &[100]
    } else {
        &[10, 100, 1_000, 10_000]
    };
    for &rate in rates {
        let (og, n) = steady_heap(Timer::Opguard, rate, 0);
        let (tk, _) = steady_heap(Timer::Tokio, rate, 0);
        let (bare, _) = steady_heap(Timer::Bare, rate, n);
        let (og, tk) = (og - bare, tk - bare);
        say(
            md,
            format!("| {rate} | {n} | {og:.0} B | {tk:.0} B | {:.2}x |", og / tk),
        );
        let _ = writeln!(csv, "HeapSteady,{rate},tokio-current,opguard,{og:.1}");
        let _ = writeln!(csv, "HeapSteady,{rate},tokio-current,tokio,{tk:.1}");
    }
    say(
        md,
        format!(
            "\nThe table boxes each task's future, to count what the timers add. In a tokio task as \
             such, without the box, a task's memory is its cell, which tokio rounds up to 128 bytes: \
             {:.0} B for a bare task, {:.0} B with opguard's timeout, {:.0} B with tokio's (1 000 \
             tasks spawned, not yet polled; once pending, an opguard timeout also keeps its \
             waker, 16 B, in its tick).",
            cell_per_task(Timer::Bare),
            cell_per_task(Timer::Opguard),
            cell_per_task(Timer::Tokio),
        ),
    );
    let sizes_line = format!(
        "\n`size_of` with a 4-byte inner future: opguard `Timeout` {} B, tokio `Timeout` {} B \
         (the inner future alone: {} B).",
        std::mem::size_of::<opguard::Timeout<PendN>>(),
        std::mem::size_of::<tokio::time::Timeout<PendN>>(),
        std::mem::size_of::<PendN>(),
    );
    say(md, sizes_line);
}

fn inner_table(md: &mut String, csv: &mut String, sizes: &[usize], short: bool, say: Say) {
    // Which executors: `OPGUARD_SCALE_INNER_EXECS=tokio-current,smol` (keys
    // as in the CSV); all four unless told.
    let execs: Vec<Exec> = match std::env::var("OPGUARD_SCALE_INNER_EXECS") {
        Ok(keys) => keys
            .split(',')
            .map(|key| Exec::from_key(key, "OPGUARD_SCALE_INNER_EXECS"))
            .collect(),
        Err(_) => Exec::ALL.to_vec(),
    };
    let mut means = Vec::new();
    // Every size of the main tables, so that the means stand beside each of
    // their rows; fewer rounds where a round takes long.
    for &n in sizes {
        let rounds = if short {
            1
        } else if n >= 1_000_000 {
            3
        } else if n >= 100_000 {
            7
        } else {
            11
        };
        for &exec in &execs {
            let finish = inner_finish_rows(md, csv, exec, n, rounds, say);
            let fire = inner_fire_rows(md, csv, exec, n, rounds, say);
            means.push((n, exec, finish, fire));
        }
    }
    say(
        md,
        "\n### By the size of the inner future, the means over its sizes above: opguard's overhead \
         over the other timer's\n"
            .into(),
    );
    say(
        md,
        "| timeouts | executor | finish in time, CPU | all fire | all fire, CPU |".into(),
    );
    say(md, "|---:|---|---:|---:|---:|".into());
    for (n, exec, [og, ot], [og_fire, ot_fire, og_cpu, ot_cpu]) in means {
        say(
            md,
            format!(
                "| {n} | {} ({}) | {} | {} | {} |",
                exec.name(),
                exec.timers()[2].name(),
                ratio(og, ot),
                ratio(og_fire, ot_fire),
                ratio(og_cpu, ot_cpu)
            ),
        );
    }
}

/// Splits each timer's wall-time overhead of the all-fire rounds, at the
/// two smallest sizes, into a fixed part per round and a part per timeout,
/// from overhead x N = fixed + N x per timeout: a straight line through two
/// sizes. What does not grow in step with N reads as fixed, and weighs on
/// the overhead per timeout at 10 000 ten times as much as at 100 000; on
/// smol that is mostly the backlog of fired timeouts the executor has yet
/// to end (`benches/fire_timeline.rs` times it).
fn fit_table(md: &mut String, csv: &mut String, walls: &[(usize, Exec, Timer, f64)], say: Say) {
    let mut sizes: Vec<usize> = walls.iter().map(|w| w.0).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let [n1, n2] = match sizes[..] {
        [n1, n2, ..] => [n1, n2],
        _ => return,
    };
    say(
        md,
        format!(
            "\nThe same wall-time overheads at {n1} and {n2}, split as overhead x N = fixed + N x per timeout:\n"
        ),
    );
    say(
        md,
        "| executor | opguard: fixed | opguard: per timeout | other: fixed | other: per timeout | per timeout, opguard / other |"
            .into(),
    );
    say(md, "|---|---:|---:|---:|---:|---:|".into());
    let total = |n: usize, exec: Exec, t: Timer| {
        walls
            .iter()
            .find(|w| w.0 == n && w.1 == exec && w.2 == t)
            .map(|w| w.3 * n as f64)
    };
    for exec in Exec::ALL {
        let timers = exec.timers();
        let fits: Vec<(Timer, f64, f64)> = timers[1..]
            .iter()
            .filter_map(|&t| {
                let (a, b) = (total(n1, exec, t)?, total(n2, exec, t)?);
                let per = (b - a) / (n2 - n1) as f64;
                Some((t, a - per * n1 as f64, per))
            })
            .collect();
        let [(og, og_fixed, og_per), (other, other_fixed, other_per)] = fits[..] else {
            continue;
        };
        say(
            md,
            format!(
                "| {} | {:.2} ms | {og_per:.0} ns | {:.2} ms ({}) | {other_per:.0} ns | {} |",
                exec.name(),
                og_fixed / 1e6,
                other_fixed / 1e6,
                other.name(),
                if og_per > 0.0 {
                    ratio(og_per, other_per)
                } else {
                    "n/a".into()
                },
            ),
        );
        for (t, fixed, per) in [(og, og_fixed, og_per), (other, other_fixed, other_per)] {
            let _ = writeln!(
                csv,
                "FireFixed,{n1}-{n2},{},{},{fixed:.1}",
                exec.key(),
                t.name()
            );
            let _ = writeln!(
                csv,
                "FirePerTimeout,{n1}-{n2},{},{},{per:.1}",
                exec.key(),
                t.name()
            );
        }
    }
}

/// `a` over `b` as a ratio; "n/a" where `b`, an overhead in ns, is too
/// small to compare with.
fn ratio(a: f64, b: f64) -> String {
    if b > 1.0 {
        format!("{:.2}x", a / b)
    } else {
        "n/a".into()
    }
}

fn inner_finish_rows(
    md: &mut String,
    csv: &mut String,
    exec: Exec,
    n: usize,
    rounds: usize,
    say: Say,
) -> [f64; 2] {
    let other = exec.timers()[2].name();
    say(
        md,
        format!(
            "\n### Finish in time by the size of the inner future ({n} timeouts, {}): CPU \
             overhead per timeout over the bare tasks\n",
            exec.name()
        ),
    );
    say(
        md,
        format!(
            "| inner future | tasks' futures: bare, opguard, {other} | bare task | opguard | \
             {other} | opguard / {other} |"
        ),
    );
    say(md, "|---:|---:|---:|---:|---:|---:|".into());
    let (mut og_sum, mut other_sum, mut rows) = (0.0, 0.0, 0);
    macro_rules! row {
        ($($k:literal),*) => {$({
            let r = sized_overheads::<$k>(exec, Work::Finish, n, rounds);
            let ([og, ot], bare) = (r.cpu, r.bare_cpu);
            let [b, o, t] = sized_tasks::<$k>(exec, Work::Finish);
            say(
                md,
                format!(
                    "| {} B | {b}, {o}, {t} B | {bare:.0} ns | {og:.0} ns | {ot:.0} ns | {} |",
                    std::mem::size_of::<Padded<$k>>(),
                    ratio(og, ot)
                ),
            );
            let _ = writeln!(csv, "Inner{},{n},{},opguard,{og:.1}", $k, exec.key());
            let _ = writeln!(csv, "Inner{},{n},{},{other},{ot:.1}", $k, exec.key());
            (og_sum, other_sum, rows) = (og_sum + og, other_sum + ot, rows + 1);
        })*};
    }
    for_inner_sizes!(row);
    let (og, ot) = (og_sum / rows as f64, other_sum / rows as f64);
    say(
        md,
        format!(
            "| mean over these sizes | | | {og:.0} ns | {ot:.0} ns | {} |",
            ratio(og, ot)
        ),
    );
    [og, ot]
}

fn inner_fire_rows(
    md: &mut String,
    csv: &mut String,
    exec: Exec,
    n: usize,
    rounds: usize,
    say: Say,
) -> [f64; 4] {
    let other = exec.timers()[2].name();
    say(
        md,
        format!(
            "\n### All fire by the size of the inner future ({n} timeouts, {}): overhead per \
             timeout over the bare tasks\n",
            exec.name()
        ),
    );
    say(
        md,
        format!(
            "| inner future | tasks' futures: bare, opguard, {other} | opguard | {other} | \
             opguard / {other} | CPU: opguard | CPU: {other} | CPU ratio |"
        ),
    );
    say(md, "|---:|---:|---:|---:|---:|---:|---:|---:|".into());
    let (mut sum, mut rows) = ([0.0; 4], 0);
    macro_rules! row {
        ($($k:literal),*) => {$({
            let r = sized_overheads::<$k>(exec, Work::Fire, n, rounds);
            let ([og, ot], [og_cpu, ot_cpu]) = (r.wall, r.cpu);
            let [b, o, t] = sized_tasks::<$k>(exec, Work::Fire);
            say(
                md,
                format!(
                    "| {} B | {b}, {o}, {t} B | {og:.0} ns | {ot:.0} ns | {} | {og_cpu:.0} ns | {ot_cpu:.0} ns | {} |",
                    std::mem::size_of::<PaddedPending<$k>>(),
                    ratio(og, ot),
                    ratio(og_cpu, ot_cpu)
                ),
            );
            let key = exec.key();
            let _ = writeln!(csv, "InnerFire{},{n},{key},opguard,{og:.1}", $k);
            let _ = writeln!(csv, "InnerFire{},{n},{key},{other},{ot:.1}", $k);
            let _ = writeln!(csv, "InnerFireCpu{},{n},{key},opguard,{og_cpu:.1}", $k);
            let _ = writeln!(csv, "InnerFireCpu{},{n},{key},{other},{ot_cpu:.1}", $k);
            for (s, v) in sum.iter_mut().zip([og, ot, og_cpu, ot_cpu]) {
                *s += v;
            }
            rows += 1;
        })*};
    }
    for_inner_sizes!(row);
    let [og, ot, og_cpu, ot_cpu] = sum.map(|s| s / rows as f64);
    say(
        md,
        format!(
            "| mean over these sizes | | {og:.0} ns | {ot:.0} ns | {} | {og_cpu:.0} ns | {ot_cpu:.0} ns | {} |",
            ratio(og, ot),
            ratio(og_cpu, ot_cpu)
        ),
    );
    [og, ot, og_cpu, ot_cpu]
}

fn lateness_table(md: &mut String, csv: &mut String, short: bool, say: Say) {
    // Single runs swing by milliseconds on a shared machine: many runs, the
    // first few in the table and all of them in the summary below it.
    let (n, runs) = if short { (1_000, 1) } else { (10_000, 12) };
    let runs = std::env::var("OPGUARD_LATENESS_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(runs);
    let shown = runs.min(3);
    say(
        md,
        format!(
            "\n### Lateness under load ({n} timeouts of 20 ms each for each timer, both cores busy, {runs} runs, the first {shown} shown)\n"
        ),
    );
    say(
        md,
        "| run | timer | p50 | p99 | max | min (never below 0) |".into(),
    );
    say(md, "|---:|---|---:|---:|---:|---:|".into());
    // opguard's minus tokio's, per run: p50 and p99.
    let mut diffs = Vec::new();
    let mut all_stalls = Vec::new();
    for run in 1..=runs {
        let [og_runs, tk_runs] = lateness(n, [true, true]);
        let both = [
            (Timer::Opguard, late_stats(&og_runs)),
            (Timer::Tokio, late_stats(&tk_runs)),
        ];
        all_stalls.push(stalls(&og_runs, &tk_runs, [both[0].1[1], both[1].1[1]]));
        for (t, [p50, p99, max, min]) in both {
            if run <= shown {
                say(
                    md,
                    format!(
                        "| {run} | {} | {p50:.2} ms | {p99:.2} ms | {max:.2} ms | {min:.3} ms |",
                        t.name()
                    ),
                );
            }
            assert!(min >= 0.0, "{} fired {min} ms early", t.name());
            for (q, v) in [("p50", p50), ("p99", p99), ("max", max)] {
                let _ = writeln!(csv, "Lateness_{q},{n},tokio-current,{},{v:.3}", t.name());
            }
        }
        let [(_, og), (_, tk)] = both;
        diffs.push((og[0] - tk[0], og[1] - tk[1]));
    }
    let p99s: Vec<f64> = diffs.iter().map(|d| d.1).collect();
    let at_or_below = p99s.iter().filter(|d| **d <= 0.0).count();
    say(
        md,
        format!(
            "\nOver all {runs} runs, opguard minus tokio: p99 at or below tokio's in {at_or_below} of {runs}; \
             p99 difference median {:+.2} ms, mean {:+.2} ms; p50 difference median {:+.3} ms.",
            median_f64(p99s.clone()),
            p99s.iter().sum::<f64>() / runs as f64,
            median_f64(diffs.iter().map(|d| d.0).collect()),
        ),
    );
    // Where the tail comes from, over all runs.
    let share = |i: usize| {
        let (hit, of) = all_stalls.iter().fold((0, 0), |(h, o), s| {
            (h + s.tail_in_burst[i].0, o + s.tail_in_burst[i].1)
        });
        100.0 * hit as f64 / of.max(1) as f64
    };
    let lags: Vec<f64> = all_stalls
        .iter()
        .flat_map(|s| s.lags.iter().copied())
        .collect();
    let later = lags.iter().filter(|l| **l > 0.0).count();
    say(
        md,
        format!(
            "Where the slowest come from: stalls, stretches of {STALL_MS} ms or more in which no timeout \
             of either timer completed (a median of {} per run, the longest {:.1} ms). Of each timer's \
             slowest 1 % (at or past its p99), {:.0} % of opguard's and {:.0} % of tokio's completed \
             in the first {BURST_MS} ms after a stall. In those first ms, where both had timeouts \
             completing, opguard's median completion came {:+.2} ms after tokio's (median over {} \
             stalls; later in {later} of them).",
            median_f64(all_stalls.iter().map(|s| s.count as f64).collect()),
            all_stalls.iter().map(|s| s.longest).fold(0.0, f64::max),
            share(0),
            share(1),
            if lags.is_empty() {
                0.0
            } else {
                median_f64(lags.clone())
            },
            lags.len(),
        ),
    );
    lateness_alone(md, csv, n, runs, say);
}

/// The same timeouts with each timer alone on the runtime, taking turns
/// (opguard's run, then tokio's, `runs` times), as a program that uses one
/// timer has it: on a shared runtime the two timers' tasks queue behind
/// each other when it goes on after a stall.
fn lateness_alone(md: &mut String, csv: &mut String, n: usize, runs: usize, say: Say) {
    say(
        md,
        format!(
            "\nEach timer alone on the runtime ({n} timeouts of 20 ms, both cores busy, the two taking turns, {runs} runs each):\n"
        ),
    );
    say(
        md,
        "| timer | p50: median of runs | p99: median | p99: worst run | max: median | min (never below 0) |".into(),
    );
    say(md, "|---|---:|---:|---:|---:|---:|".into());
    let mut stats: [Vec<[f64; 4]>; 2] = [Vec::new(), Vec::new()];
    // Each timer's lateness split in two, over all its runs: its own part
    // (to the task's wake-up) and the runtime's (from it to the poll); for
    // all timeouts, and for each run's slowest 1 % (at or past its p99).
    let mut split: [Split; 2] = Default::default();
    for _ in 0..runs {
        let [og, _] = lateness(n, [true, false]);
        let [_, tk] = lateness(n, [false, true]);
        for (i, v) in [og, tk].iter().enumerate() {
            let run = late_stats(v);
            split[i].add(v, run[1]);
            stats[i].push(run);
        }
    }
    let p99_at_or_below = (0..runs)
        .filter(|&r| stats[0][r][1] <= stats[1][r][1])
        .count();
    for (t, s) in [Timer::Opguard, Timer::Tokio].into_iter().zip(&stats) {
        let of = |i: usize| median_f64(s.iter().map(|r| r[i]).collect());
        let worst = s.iter().map(|r| r[1]).fold(0.0, f64::max);
        let min = s.iter().map(|r| r[3]).fold(f64::INFINITY, f64::min);
        assert!(min >= 0.0, "{} fired {min} ms early", t.name());
        say(
            md,
            format!(
                "| {} | {:.2} ms | {:.2} ms | {worst:.2} ms | {:.2} ms | {min:.3} ms |",
                t.name(),
                of(0),
                of(1),
                of(2),
            ),
        );
        for (q, i) in [("p50", 0), ("p99", 1), ("max", 2)] {
            let _ = writeln!(
                csv,
                "Lateness_alone_{q},{n},tokio-current,{},{:.3}",
                t.name(),
                of(i)
            );
        }
    }
    say(
        md,
        format!(
            "\nopguard's p99 at or below tokio's in {p99_at_or_below} of {runs} pairs of runs (opguard's run and the tokio run after it)."
        ),
    );
    say(
        md,
        "\nThe same runs, each timeout's lateness split where its task was woken: the timer's part (from the deadline to the wake-up) and the runtime's (from the wake-up to the task's poll), in ms:\n".into(),
    );
    say(
        md,
        "| timer | to the wake-up: p50 | p99 | wake-up to poll: p50 | p99 | slowest 1 %: to the wake-up, median | wake-up to poll, median | woken from another thread: all | slowest 1 % |".into(),
    );
    say(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|".into());
    for (t, mut s) in [Timer::Opguard, Timer::Tokio].into_iter().zip(split) {
        for v in [&mut s.woken, &mut s.run] {
            v.sort_by(f64::total_cmp);
        }
        let share = |n: usize, of: usize| 100.0 * n as f64 / of as f64;
        let (remote, tail_remote) = (
            share(s.remote, s.woken.len()),
            share(s.tail_remote, s.tail_woken.len()),
        );
        say(
            md,
            format!(
                "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {remote:.1} % | {tail_remote:.1} % |",
                t.name(),
                at(&s.woken, 0.5),
                at(&s.woken, 0.99),
                at(&s.run, 0.5),
                at(&s.run, 0.99),
                median_f64(s.tail_woken),
                median_f64(s.tail_run),
            ),
        );
    }
}

/// One timer's lateness over its runs, split where the task was woken:
/// for every timeout, and for each run's slowest 1 %.
#[derive(Default)]
struct Split {
    woken: Vec<f64>,
    run: Vec<f64>,
    tail_woken: Vec<f64>,
    tail_run: Vec<f64>,
    /// How many were woken from another thread than the runtime's, of all
    /// and of the slowest.
    remote: usize,
    tail_remote: usize,
}

impl Split {
    fn add(&mut self, run: &[Late], p99: f64) {
        for l in run {
            self.woken.push(l.woken);
            self.run.push(l.late - l.woken);
            self.remote += usize::from(l.remote);
            if l.late >= p99 {
                self.tail_remote += usize::from(l.remote);
                self.tail_woken.push(l.woken);
                self.tail_run.push(l.late - l.woken);
            }
        }
    }
}

fn main() {
    // Counting only while the heap is measured: the timed rounds pay no counter.
    COUNTING.store(false, Relaxed);
    // Rounds of one timer only, for profilers and callgrind:
    // `OPGUARD_SCALE_ONE=opguard,finish,20000,2` (timer, work: finish, fire,
    // paced, or innerK for finish in time with K more bytes of inner state,
    // N, rounds; then, optionally, the executor's key as in the CSV, tokio's
    // current-thread runtime unless told). Timers joined by `+`
    // (`bare+opguard+tokio`) take turns in one process, round by round, as
    // in the full bench; each round then prints its wall time and the page
    // faults it took (`scripts/scale_turns.sh` counts each round's work).
    if let Ok(one) = std::env::var("OPGUARD_SCALE_ONE") {
        let args: Vec<&str> = one.split(',').collect();
        let turns: Vec<Timer> = args[0]
            .split('+')
            .map(|name| {
                [Timer::Bare, Timer::Opguard, Timer::Tokio]
                    .into_iter()
                    .find(|t| t.name() == name)
                    .expect("bare, opguard or tokio, or some joined by `+`")
            })
            .collect();
        let (n, rounds) = (args[2].parse().unwrap(), args[3].parse().unwrap());
        // A second thread, idle, unless `OPGUARD_SCALE_THREADED=0`: in the
        // full bench futures-timer's thread runs from the first opguard
        // round on, and glibc's allocator takes its locking paths (atomic)
        // in every malloc and free once a process has more than one thread.
        // With it, every timer's run is alike in that, as in the full bench.
        if std::env::var("OPGUARD_SCALE_THREADED").as_deref() != Ok("0") {
            std::thread::spawn(|| {
                loop {
                    std::thread::park();
                }
            });
        }
        let exec = args.get(4).map_or(Exec::TokioCurrent, |key| {
            Exec::from_key(key, "OPGUARD_SCALE_ONE")
        });
        let rt = runtime(exec);
        for _ in 0..rounds {
            for &timer in &turns {
                let faults = minor_faults();
                let wall = match args[1] {
                    "paced" => paced_round(&rt, timer, n),
                    "fire" => round(&rt, exec, timer, Work::Fire, n)[0],
                    inner if inner.starts_with("inner") => {
                        let k = inner["inner".len()..].parse().expect("innerK: K a number");
                        inner_round(&rt, exec, timer, n, k)
                    }
                    _ => round(&rt, exec, timer, Work::Finish, n)[0],
                };
                if turns.len() > 1 {
                    eprintln!(
                        "{:8} {:8.1} ms {:7} page faults",
                        timer.name(),
                        wall.as_secs_f64() * 1e3,
                        minor_faults() - faults,
                    );
                }
            }
        }
        return;
    }
    let short = std::env::args().any(|a| a == "--short");
    let sizes: Vec<usize> = match std::env::var("OPGUARD_SCALE_N") {
        Ok(n) => n.split(',').map(|n| n.parse().unwrap()).collect(),
        Err(_) if short => vec![10_000],
        Err(_) => vec![10_000, 100_000, 1_000_000],
    };
    // Which parts to run: `OPGUARD_SCALE_PARTS=finish,fire,paced,heap,inner,lateness`.
    let parts = std::env::var("OPGUARD_SCALE_PARTS")
        .unwrap_or_else(|_| "finish,fire,paced,heap,inner,lateness".into());
    let part = |name: &str| parts.split(',').any(|p| p == name);
    let mut md = String::new();
    let mut csv = String::from("table,timeouts,executor,timer,value\n");
    let say: Say = |md: &mut String, line: String| {
        println!("{line}");
        std::io::stdout().flush().ok();
        md.push_str(&line);
        md.push('\n');
    };

    for (work, title) in [
        (
            Work::Finish,
            "Finish in time (30 s timeout, the future pends twice)",
        ),
        (
            Work::Fire,
            "All fire (50 ms timeout, the future never finishes)",
        ),
    ] {
        if !part(if work == Work::Finish {
            "finish"
        } else {
            "fire"
        }) {
            continue;
        }
        say(
            &mut md,
            format!("\n### {title}: overhead per timeout over the bare tasks\n"),
        );
        say(
            &mut md,
            "| timeouts | executor | opguard | tokio (futures-time on smol) | opguard / other \
             | CPU: opguard | CPU: other | CPU ratio |"
                .into(),
        );
        say(&mut md, "|---:|---|---:|---:|---:|---:|---:|---:|".into());
        let mut walls = Vec::new();
        for &n in &sizes {
            let rounds = if short {
                3
            } else if n >= 1_000_000 {
                5
            } else {
                11
            };
            for exec in Exec::ALL {
                let res = overheads(exec, work, n, rounds);
                let ((og, og_cpu), (other, other_cpu)) =
                    ((res[0].1, res[0].2), (res[1].1, res[1].2));
                say(
                    &mut md,
                    format!(
                        "| {n} | {} | {og:.0} ns | {other:.0} ns ({}) | {} | {og_cpu:.0} ns | {other_cpu:.0} ns | {} |",
                        exec.name(),
                        res[1].0.name(),
                        ratio(og, other),
                        ratio(og_cpu, other_cpu),
                    ),
                );
                for (t, v, c) in res {
                    walls.push((n, exec, t, v));
                    let _ = writeln!(csv, "{work:?},{n},{},{},{v:.1}", exec.key(), t.name());
                    let _ = writeln!(csv, "{work:?}Cpu,{n},{},{},{c:.1}", exec.key(), t.name());
                }
            }
        }
        if work == Work::Fire {
            fit_table(&mut md, &mut csv, &walls, say);
        }
    }

    if part("paced") {
        paced_table(&mut md, &mut csv, short, say);
    }
    if part("heap") {
        heap_table(&mut md, &mut csv, &sizes, short, say);
    }
    if part("inner") {
        inner_table(&mut md, &mut csv, &sizes, short, say);
    }
    if part("lateness") {
        lateness_table(&mut md, &mut csv, short, say);
    }

    let path =
        std::env::var("OPGUARD_BENCH_OUT").unwrap_or_else(|_| "target/bench/scale.md".into());
    if let Some(dir) = std::path::Path::new(&path).parent() {
        std::fs::create_dir_all(dir).ok();
    }
    std::fs::write(&path, md).expect("write the results");
    let csv_path = std::path::Path::new(&path).with_extension("csv");
    std::fs::write(&csv_path, csv).expect("write the results");
    println!("written to {path} and {}", csv_path.display());
}
