//! The cost of `timeout_async!` beside the bare future, tokio's timeout,
//! async-io's `Timer` raced with `or`, futures-time's `timeout` (on
//! async-io's timer too), and a futures-timer `Delay` created up front and
//! raced with `select`, on tokio, smol and futures' executor.
//!
//!     cargo bench --bench timeout
//!
//! - `ready/*`: the future is ready at its first poll.
//! - `pending_once/*`: the future pends once (waking itself), then is ready.
//!
//! Executors: `tokio` is criterion's `block_on` on a current-thread runtime;
//! `tokio_task` runs the same loop in a task spawned on that runtime, as
//! tokio code runs (a self-wake then goes to the run queue instead of
//! through the driver's wake-up, which costs a few hundred noisy ns);
//! `smol` and `futures` are criterion's `block_on` on those.

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::async_executor::AsyncExecutor;
use criterion::async_executor::{FuturesExecutor, SmolExecutor};
use criterion::measurement::WallTime;
use criterion::{Bencher, BenchmarkGroup, Criterion, criterion_group, criterion_main};
use futures::future::{Either, select};
use opguard::timeout_async;
use smol::future::FutureExt as _;

const LONG: Duration = Duration::from_secs(30);

/// A future that is ready at its first poll: an `async fn` with no await.
async fn quote(v: u64) -> u64 {
    black_box(v)
}

/// Pends once, waking itself, then yields its value.
struct PendOnce(Option<u64>, bool);

impl Future for PendOnce {
    type Output = u64;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u64> {
        if self.1 {
            Poll::Ready(self.0.take().expect("polled after completion"))
        } else {
            self.1 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

fn pend_once(v: u64) -> PendOnce {
    PendOnce(Some(v), false)
}

/// The value out of a timed future's output, as a caller would take it.
///
/// Every variant hands `black_box` a plain `u64`: `black_box` on a 16-byte
/// `Result` or `Option` makes the harness spill it and reload it, a
/// store-forwarding stall of about 5 ns that any wrapper pays in the same way
/// and that says nothing about the wrapper.
trait Value {
    fn value(self) -> u64;
}

impl Value for u64 {
    #[inline(always)]
    fn value(self) -> u64 {
        self
    }
}

impl Value for Option<u64> {
    #[inline(always)]
    fn value(self) -> u64 {
        self.unwrap_or(u64::MAX)
    }
}

impl<E> Value for Result<u64, E> {
    #[inline(always)]
    fn value(self) -> u64 {
        self.unwrap_or(u64::MAX)
    }
}

/// The naive race: a `Delay` made before the future is polled.
async fn eager_delay<F: Future + Unpin>(fut: F) -> Option<F::Output> {
    match select(fut, futures_timer::Delay::new(LONG)).await {
        Either::Left((v, _)) => Some(v),
        Either::Right(_) => None,
    }
}

/// async-io's timer raced with `or`, as smol users write it.
async fn async_io_or<F: Future<Output = u64>>(fut: F) -> Option<u64> {
    async { Some(fut.await) }
        .or(async {
            smol::Timer::after(LONG).await;
            None
        })
        .await
}

/// Runs a benchmark's loop of awaits on one executor.
trait Runner {
    fn run<F, Fut>(&self, b: &mut Bencher<'_>, routine: F)
    where
        F: Fn() -> Fut + Copy + Send + 'static,
        Fut: Future<Output = u64> + Send;
}

/// Criterion's own `block_on` on an executor (made afresh for each benchmark).
struct BlockOn<M>(M);

impl<E: AsyncExecutor, M: Fn() -> E> Runner for BlockOn<M> {
    fn run<F, Fut>(&self, b: &mut Bencher<'_>, routine: F)
    where
        F: Fn() -> Fut + Copy + Send + 'static,
        Fut: Future<Output = u64> + Send,
    {
        b.to_async((self.0)()).iter(routine);
    }
}

/// The loop inside a task spawned on a tokio runtime.
struct TokioTask<'a>(&'a tokio::runtime::Runtime);

impl Runner for TokioTask<'_> {
    fn run<F, Fut>(&self, b: &mut Bencher<'_>, routine: F)
    where
        F: Fn() -> Fut + Copy + Send + 'static,
        Fut: Future<Output = u64> + Send,
    {
        b.iter_custom(|iters| {
            let task = self.0.spawn(async move {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(routine().await);
                }
                start.elapsed()
            });
            self.0.block_on(task).expect("the benchmark task panicked")
        });
    }
}

macro_rules! variants {
    ($g:expr, $runner:expr, $make:ident) => {{
        let (g, r) = (&mut *$g, &$runner);
        g.bench_function("bare", |b| {
            r.run(b, || async { $make(black_box(1)).await.value() })
        });
        g.bench_function("opguard", |b| {
            r.run(b, || async {
                timeout_async!(LONG, $make(black_box(1))).await.value()
            })
        });
        g.bench_function("futures_timer_eager", |b| {
            r.run(b, || async {
                eager_delay(std::pin::pin!($make(black_box(1))))
                    .await
                    .value()
            })
        });
        g.bench_function("async_io_or", |b| {
            r.run(b, || async {
                async_io_or($make(black_box(1))).await.value()
            })
        });
        g.bench_function("futures_time", |b| {
            r.run(b, || async {
                futures_time::future::FutureExt::timeout(
                    $make(black_box(1)),
                    futures_time::time::Duration::from(LONG),
                )
                .await
                .value()
            })
        });
    }};
}

macro_rules! tokio_timeout {
    ($g:expr, $runner:expr, $make:ident) => {{
        let (g, r) = (&mut *$g, &$runner);
        g.bench_function("tokio_timeout", |b| {
            r.run(b, || async {
                tokio::time::timeout(LONG, $make(black_box(1)))
                    .await
                    .value()
            })
        });
    }};
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn group<'c>(c: &'c mut Criterion, path: &str, exec: &str) -> BenchmarkGroup<'c, WallTime> {
    c.benchmark_group(format!("{path}/{exec}"))
}

macro_rules! path {
    ($c:expr, $path:literal, $make:ident) => {{
        let rt = tokio_rt();
        let mut g = group($c, $path, "tokio");
        variants!(&mut g, BlockOn(|| &rt), $make);
        tokio_timeout!(&mut g, BlockOn(|| &rt), $make);
        g.finish();
        let mut g = group($c, $path, "tokio_task");
        variants!(&mut g, TokioTask(&rt), $make);
        tokio_timeout!(&mut g, TokioTask(&rt), $make);
        g.finish();
        let mut g = group($c, $path, "smol");
        variants!(&mut g, BlockOn(|| SmolExecutor), $make);
        g.finish();
        let mut g = group($c, $path, "futures");
        variants!(&mut g, BlockOn(|| FuturesExecutor), $make);
        g.finish();
    }};
}

fn ready_path(c: &mut Criterion) {
    path!(c, "ready", quote);
}

fn pending_path(c: &mut Criterion) {
    path!(c, "pending_once", pend_once);
}

criterion_group!(benches, ready_path, pending_path);
criterion_main!(benches);
