//! The machine code of a ready future with and without `timeout_async!`
//! around it, for `scripts/ready_asm.sh` to compare: two functions that each
//! poll one future once, the inner future ready at its first poll. Built
//! with the bench profile (release); `main` calls both so that neither is
//! dropped.
//!
//!     bash scripts/ready_asm.sh

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
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

fn main() {
    let mut cx = Context::from_waker(Waker::noop());
    let (a, b) = (opguard_ready_path(&mut cx), bare_ready_path(&mut cx));
    assert_eq!(a, b);
}
