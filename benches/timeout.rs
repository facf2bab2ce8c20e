//! The cost of `timeout_async!` beside the bare future, tokio's timeout,
//! async-io's `Timer` raced with `or`, and a futures-timer `Delay` created up
//! front and raced with `select`, on tokio, smol and futures' executor.
//!
//!     cargo bench --bench timeout
//!
//! - `ready/*`: the future is ready at its first poll.
//! - `pending_once/*`: the future pends once (waking itself), then is ready.

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use criterion::async_executor::{FuturesExecutor, SmolExecutor};
use criterion::{Criterion, criterion_group, criterion_main};
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

macro_rules! variants {
    ($c:expr, $group:literal, $exec_name:literal, $exec:expr, $make:ident) => {{
        let mut g = $c.benchmark_group(concat!($group, "/", $exec_name));
        g.bench_function("bare", |b| {
            b.to_async($exec)
                .iter(|| async { black_box($make(black_box(1)).await) })
        });
        g.bench_function("opguard", |b| {
            b.to_async($exec)
                .iter(|| async { black_box(timeout_async!(LONG, $make(black_box(1))).await) })
        });
        g.bench_function("futures_timer_eager", |b| {
            b.to_async($exec).iter(|| async {
                black_box(eager_delay(std::pin::pin!($make(black_box(1)))).await)
            })
        });
        g.bench_function("async_io_or", |b| {
            b.to_async($exec)
                .iter(|| async { black_box(async_io_or($make(black_box(1))).await) })
        });
        g
    }};
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn with_tokio_timeout(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    pending: bool,
) {
    g.bench_function("tokio_timeout", |b| {
        b.to_async(rt).iter(|| async {
            if pending {
                black_box(tokio::time::timeout(LONG, pend_once(black_box(1))).await)
            } else {
                black_box(tokio::time::timeout(LONG, quote(black_box(1))).await)
            }
        })
    });
}

fn ready_path(c: &mut Criterion) {
    let rt = tokio_rt();
    let mut g = variants!(c, "ready", "tokio", &rt, quote);
    with_tokio_timeout(&mut g, &rt, false);
    g.finish();
    variants!(c, "ready", "smol", SmolExecutor, quote).finish();
    variants!(c, "ready", "futures", FuturesExecutor, quote).finish();
}

fn pending_path(c: &mut Criterion) {
    let rt = tokio_rt();
    let mut g = variants!(c, "pending_once", "tokio", &rt, pend_once);
    with_tokio_timeout(&mut g, &rt, true);
    g.finish();
    variants!(c, "pending_once", "smol", SmolExecutor, pend_once).finish();
    variants!(c, "pending_once", "futures", FuturesExecutor, pend_once).finish();
}

criterion_group!(benches, ready_path, pending_path);
criterion_main!(benches);
