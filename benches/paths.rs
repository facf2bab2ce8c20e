//! The ready and pending paths of `timeout_async!`, run `OPGUARD_PATHS_N`
//! times each on `futures::executor::block_on`, for counting instructions
//! with callgrind (`scripts/paths_callgrind.sh`): the count of a run with N
//! calls minus that of a run with none, over N, is the cost of one call, the
//! same on every run. It shows what the `test-util` and `tokio` features
//! add to timeouts that use neither clock.

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::executor::block_on;
use opguard::timeout_async;

/// Pends once, waking itself, then is ready.
struct PendOnce(bool);

impl Future for PendOnce {
    type Output = u64;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u64> {
        if self.0 {
            return Poll::Ready(7);
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[inline(never)]
async fn ready() -> u64 {
    black_box(7)
}

fn main() {
    let n: u64 = std::env::var("OPGUARD_PATHS_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let path = std::env::var("OPGUARD_PATHS").unwrap_or_else(|_| "ready".into());
    let mut sum = 0;
    block_on(async {
        for _ in 0..n {
            sum += match path.as_str() {
                "ready" => timeout_async!(30, ready()).await.unwrap(),
                "pending" => timeout_async!(30, PendOnce(false)).await.unwrap(),
                "bare-ready" => ready().await,
                "bare-pending" => PendOnce(false).await,
                other => {
                    panic!("OPGUARD_PATHS={other}: ready, pending, bare-ready or bare-pending")
                }
            };
        }
    });
    black_box(sum);
}
