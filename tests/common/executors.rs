//! Every executor the crate promises to work on, behind one signature.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Wake, Waker};
use std::thread::{self, Thread};

use futures::task::SpawnExt;

pub type Fut = std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

fn tokio_spawned(rt: tokio::runtime::Runtime, fut: Fut) {
    if let Err(err) = rt.block_on(rt.spawn(fut)) {
        std::panic::resume_unwind(err.into_panic());
    }
}

pub fn tokio_current_thread(fut: Fut) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio_spawned(rt, fut);
}

/// No time driver: tokio's own timers would panic here, ours do not need it.
pub fn tokio_current_thread_no_time(fut: Fut) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    tokio_spawned(rt, fut);
}

pub fn tokio_multi_thread(fut: Fut) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    tokio_spawned(rt, fut);
}

pub fn tokio_multi_thread_no_time(fut: Fut) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    tokio_spawned(rt, fut);
}

pub fn smol(fut: Fut) {
    let ex = smol::Executor::new();
    smol::block_on(ex.run(ex.spawn(fut)));
}

pub fn async_std(fut: Fut) {
    async_std::task::block_on(async_std::task::spawn(fut));
}

pub fn futures_block_on(fut: Fut) {
    futures::executor::block_on(fut);
}

pub fn futures_thread_pool(fut: Fut) {
    let pool = futures::executor::ThreadPool::builder()
        .pool_size(2)
        .create()
        .unwrap();
    // The remote handle re-raises a panic of the task here.
    let handle = pool.spawn_with_handle(fut).unwrap();
    futures::executor::block_on(handle);
}

/// "Any other executor": the smallest one there is, parking the thread.
pub fn hand_rolled(fut: Fut) {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    while fut.as_mut().poll(&mut cx).is_pending() {
        thread::park();
    }
}
