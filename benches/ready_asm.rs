//! The machine code of a ready future with and without `timeout_async!`
//! around it, for `scripts/ready_asm.sh` to compare: functions that each
//! poll one future once, the inner future ready at its first poll. In the
//! first pair the compiler can see that it is ready (an `async fn` with no
//! await); in the second it cannot (its `poll` is not inlined and returns
//! an opaque value), so the timer's branch must be there. Built with the
//! bench profile (release); `main` calls them all so that none is dropped.
//!
//!     bash scripts/ready_asm.sh

use std::future::Future;
use std::hint::black_box;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

/// Ready at its first poll: an `async fn` with no await.
#[inline(never)]
async fn quote() -> u64 {
    black_box(7)
}

/// `timeout_async!(30, quote()).await`, polled once.
#[inline(never)]
#[unsafe(no_mangle)]
pub fn opguard_ready_path(cx: &mut Context<'_>) -> u64 {
    let fut = pin!(async { opguard::timeout_async!(30, quote()).await.unwrap() });
    match fut.poll(cx) {
        Poll::Ready(v) => v,
        Poll::Pending => 0,
    }
}

/// `quote().await`, polled once.
#[inline(never)]
#[unsafe(no_mangle)]
pub fn bare_ready_path(cx: &mut Context<'_>) -> u64 {
    let fut = pin!(async { quote().await });
    match fut.poll(cx) {
        Poll::Ready(v) => v,
        Poll::Pending => 0,
    }
}

/// Ready at its first poll, which the compiler cannot see.
struct Opaque;

impl Future for Opaque {
    type Output = u64;
    #[inline(never)]
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<u64> {
        black_box(Poll::Ready(7))
    }
}

/// `timeout_async!(30, Opaque).await`, polled once.
#[inline(never)]
#[unsafe(no_mangle)]
pub fn opguard_opaque_path(cx: &mut Context<'_>) -> u64 {
    let fut = pin!(async { opguard::timeout_async!(30, Opaque).await.unwrap() });
    match fut.poll(cx) {
        Poll::Ready(v) => v,
        Poll::Pending => 0,
    }
}

/// `Opaque.await`, polled once.
#[inline(never)]
#[unsafe(no_mangle)]
pub fn bare_opaque_path(cx: &mut Context<'_>) -> u64 {
    // The same shape as the timed one: an async block awaiting the future.
    #[allow(clippy::redundant_async_block)]
    let fut = pin!(async { Opaque.await });
    match fut.poll(cx) {
        Poll::Ready(v) => v,
        Poll::Pending => 0,
    }
}

fn main() {
    let mut cx = Context::from_waker(Waker::noop());
    let (a, b) = (opguard_ready_path(&mut cx), bare_ready_path(&mut cx));
    assert_eq!(a, b);
    let (a, b) = (opguard_opaque_path(&mut cx), bare_opaque_path(&mut cx));
    assert_eq!(a, b);
}
