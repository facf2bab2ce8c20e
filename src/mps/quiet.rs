//! Keeping handled MPS panics quiet.
//!
//! A panic hook runs before the panic unwinds, so by the time `safe_mps!`
//! catches the panic of a plain tch method, the default hook has already
//! printed "thread ... panicked at ..." with PyTorch's C++ backtrace (and a
//! Rust one under `RUST_BACKTRACE=1`), although the call goes on to succeed
//! on CPU. So the first time `safe_mps!` guards an attempt it puts a hook in
//! front of the one installed then, which stays silent for exactly the panics
//! that `safe_mps!` will handle: an MPS error (as [`is_mps_error`] judges it),
//! raised on a thread while a guarded first attempt runs there. Every other
//! panic goes to the previous hook unchanged.
//!
//! A hook set later with `std::panic::set_hook` replaces opguard's. If it
//! chains to the previous one (`take_hook`), it sees handled MPS panics first
//! and opguard's still silences the default output behind it. If it does
//! not, the next handled MPS panic that opguard's hook did not see puts
//! opguard's hook in front again, wrapping the new one; only that one panic
//! is printed.
//!
//! Built with `panic = "abort"`, nothing is silenced: no panic can be
//! caught there, and the hook's output is the only trace of the one that
//! ends the process.
//!
//! `take_hook` and `set_hook` are two calls, so a hook set by another thread
//! between them is lost; std has no atomic update yet.
//!
//! [`is_mps_error`]: crate::mps::is_mps_error

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe, PanicHookInfo, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};

use super::classify::{is_mps_error, is_mps_panic};

/// A caught panic.
pub(crate) type Payload = Box<dyn std::any::Any + Send + 'static>;

thread_local! {
    /// This thread's [`ATTEMPTING`] and [`SILENCED`] bits: one cell, so
    /// that entering and leaving an attempt is one read and one write.
    static QUIET: Cell<u8> = const { Cell::new(0) };
}

/// Set while a guarded first attempt runs on this thread.
const ATTEMPTING: u8 = 1;
/// Set by opguard's hook when it kept a panic quiet.
const SILENCED: u8 = 2;

/// Whether a panic unwinds, so that `safe_mps!` can catch it. Built with
/// `panic = "abort"`, a panic ends the process once the hook has run: its
/// message is all that is left of it, and opguard's hook is never put in
/// front to silence it.
const UNWINDS: bool = cfg!(panic = "unwind");

/// Whether opguard's hook has been put in front (Relaxed: it only decides
/// whether to install, and installing twice is harmless).
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Marks this thread as running a guarded first attempt until dropped.
pub(crate) struct Attempting {
    /// The bits before, put back when the attempt ends (attempts nest).
    before: u8,
}

impl Attempting {
    #[inline]
    pub(crate) fn enter() -> Self {
        if UNWINDS && !INSTALLED.load(Ordering::Relaxed) {
            install();
        }
        Attempting {
            before: QUIET.replace(ATTEMPTING),
        }
    }

    /// Whether opguard's hook kept a panic of this attempt quiet.
    fn silenced(&self) -> bool {
        QUIET.get() & SILENCED != 0
    }
}

impl Drop for Attempting {
    #[inline]
    fn drop(&mut self) {
        QUIET.set(self.before);
    }
}

/// Runs a guarded first attempt, catching its panic; a handled MPS panic
/// reaches no panic hook but opguard's.
#[inline]
pub(crate) fn attempt<R>(f: impl FnOnce() -> R) -> Result<R, Payload> {
    let scope = Attempting::enter();
    let out = catch_unwind(AssertUnwindSafe(f));
    if let Err(payload) = &out {
        check_seen(scope.silenced(), payload);
    }
    out
}

/// The async twin of [`attempt`]: the attempt is marked on every poll.
#[cfg(any(feature = "tch", test))]
pub(crate) async fn attempt_async<F: std::future::Future>(fut: F) -> Result<F::Output, Payload> {
    use futures::FutureExt;
    use std::future::poll_fn;
    use std::pin::pin;

    let mut fut = pin!(AssertUnwindSafe(fut).catch_unwind());
    let mut silenced = false;
    let out = poll_fn(|cx| {
        let scope = Attempting::enter();
        let poll = fut.as_mut().poll(cx);
        silenced |= scope.silenced();
        poll
    })
    .await;
    if let Err(payload) = &out {
        check_seen(silenced, payload);
    }
    out
}

/// After a caught MPS panic that opguard's hook did not see: put the hook in
/// front again, so that the next one is quiet.
fn check_seen(silenced: bool, payload: &Payload) {
    if !silenced && is_mps_panic(payload.as_ref()) {
        install();
    }
}

/// Puts opguard's hook in front of the current one.
#[cold]
fn install() {
    // take_hook and set_hook panic on a panicking thread (a drop during
    // unwinding); try again on a later call.
    if !UNWINDS || std::thread::panicking() {
        return;
    }
    INSTALLED.store(true, Ordering::Relaxed);
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        if handled_here(info) {
            let _ = QUIET.try_with(|q| q.set(q.get() | SILENCED));
        } else {
            previous(info);
        }
    }));
}

/// Whether `safe_mps!` will catch this panic and fall back.
fn handled_here(info: &PanicHookInfo<'_>) -> bool {
    // try_with: the hook may run while this thread's locals are torn down.
    QUIET
        .try_with(|q| q.get() & ATTEMPTING != 0)
        .unwrap_or(false)
        && info.payload_as_str().is_some_and(is_mps_error)
}
