//! Many concurrent timeouts, half firing and half completing, on the
//! executors the crate promises, for the soak test; the memory test and the
//! scale bench share its counting allocator and futures. Heap use is measured
//! with [`Counting`], installed as the global allocator by the binary that
//! includes this file.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::{Future, pending};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::SpawnExt;

/// Counts live and peak heap bytes while [`COUNTING`] is on (from the
/// start); off, it is the system allocator plus one relaxed load, so that a
/// timed run pays no shared counter.
pub struct Counting;
pub static COUNTING: AtomicBool = AtomicBool::new(true);
pub static LIVE: AtomicIsize = AtomicIsize::new(0);
pub static PEAK: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to `System`, only counting on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            let now = LIVE.fetch_add(layout.size() as isize, Relaxed) + layout.size() as isize;
            PEAK.fetch_max(now, Relaxed);
        }
        // SAFETY: the caller's promises are `System`'s.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Relaxed) {
            LIVE.fetch_sub(layout.size() as isize, Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// The firing half's timeout.
pub const FIRE_AFTER: Duration = Duration::from_millis(100);
/// The completing half's timeout, far above how long they take.
pub const COMPLETE_WITHIN: Duration = Duration::from_secs(10);
const TASKS: usize = 1000;

/// Yields `n` times (waking itself), then finishes.
pub struct YieldN(pub u32);
impl Future for YieldN {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 == 0 {
            return Poll::Ready(());
        }
        self.0 -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// How many resolved each way; a timeout that resolves the wrong way panics.
#[derive(Debug, Default)]
pub struct Tally {
    pub fired: AtomicUsize,
    pub completed: AtomicUsize,
}

async fn share(first: usize, n: usize, tally: &'static Tally) {
    let all = (first..first + n).map(|i| async move {
        let fired = if i % 2 == 0 {
            opguard::timeout_async!(COMPLETE_WITHIN, YieldN(3))
                .await
                .is_err()
        } else {
            opguard::timeout_async!(FIRE_AFTER, pending::<()>())
                .await
                .is_err()
        };
        assert_eq!(fired, i % 2 == 1, "timeout #{i} resolved the wrong way");
        if fired {
            &tally.fired
        } else {
            &tally.completed
        }
        .fetch_add(1, Relaxed);
    });
    futures::future::join_all(all).await;
}

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

fn shares(n: usize, tally: &'static Tally) -> impl Iterator<Item = Task> {
    let per = n.div_ceil(TASKS).max(1);
    (0..n)
        .step_by(per)
        .map(move |first| Box::pin(share(first, per.min(n - first), tally)) as Task)
}

/// Runs `n` timeouts on `executor` ("tokio", "smol" or "threadpool"), two threads each.
pub fn run(executor: &str, n: usize, tally: &'static Tally) {
    match executor {
        "tokio" => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let handles: Vec<_> = shares(n, tally).map(tokio::spawn).collect();
                for h in handles {
                    h.await.unwrap();
                }
            });
        }
        "smol" => {
            let ex = smol::Executor::new();
            let (stop, done) = smol::channel::unbounded::<()>();
            std::thread::scope(|s| {
                // A second thread runs the executor too, as tokio's and the pool's two do.
                s.spawn(|| smol::block_on(ex.run(done.recv())));
                smol::block_on(ex.run(async {
                    let tasks: Vec<_> = shares(n, tally).map(|f| ex.spawn(f)).collect();
                    for t in tasks {
                        t.await;
                    }
                }));
                drop(stop);
            });
        }
        "threadpool" => {
            let pool = futures::executor::ThreadPool::builder()
                .pool_size(2)
                .create()
                .unwrap();
            let handles: Vec<_> = shares(n, tally)
                .map(|f| pool.spawn_with_handle(f).unwrap())
                .collect();
            futures::executor::block_on(futures::future::join_all(handles));
        }
        other => panic!("unknown executor {other}"),
    }
}
