//! The steps of one `safe_mps!` call, which the macro strings together:
//! decide the first device, run, judge, move the tensors, retry once on CPU.
//!
//! The macro expands the user's body twice (first attempt, CPU retry) and
//! calls these steps between them, so that the tensors it moves are borrowed
//! by one step at a time.

use std::any::Any;
use std::cell::Cell;
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::pin;

use futures::FutureExt;
use once_cell::sync::Lazy;
use tch::Device;

use super::breaker::Admit;
use super::classify::{is_mps_error, is_mps_panic};
use super::registry;
use crate::site::Site;

/// A caught panic.
pub type Payload = Box<dyn Any + Send + 'static>;

static HAS_MPS: Lazy<bool> = Lazy::new(tch::utils::has_mps);

thread_local! {
    /// Set while a CPU retry runs on this thread: nested calls never fall back.
    static IN_FALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as running a CPU retry until dropped.
struct FallbackScope(bool);

impl FallbackScope {
    fn enter() -> Self {
        FallbackScope(IN_FALLBACK.replace(true))
    }
}

impl Drop for FallbackScope {
    fn drop(&mut self) {
        IN_FALLBACK.set(self.0);
    }
}

#[derive(Clone, Copy, Debug)]
enum Plan {
    /// Run once on `device`, errors propagate; tensors go to CPU first if asked.
    Once { device: Device, to_cpu_first: bool },
    /// Try `device`; an MPS error leads to one CPU retry.
    Guarded { device: Device },
    /// An injected failure stands for the first attempt.
    Injected,
}

/// Proof that the first attempt failed with an MPS error: the retry needs one.
#[derive(Debug)]
pub struct Fallback(());

/// One `safe_mps!` call in progress.
#[derive(Debug)]
pub struct MpsGuard {
    site: &'static Site,
    plan: Plan,
    /// This call is the breaker's trial and has not reported yet.
    trial: bool,
}

impl MpsGuard {
    /// Decides how the call runs. `forced` is the `device = ..` argument;
    /// `tensor_form` says the body uses named tensors that may be on MPS.
    #[inline]
    pub fn begin(site: &'static Site, forced: Option<Device>, tensor_form: bool) -> Self {
        let once = |device, to_cpu_first| MpsGuard {
            site,
            plan: Plan::Once {
                device,
                to_cpu_first,
            },
            trial: false,
        };
        let first = forced.unwrap_or_else(|| if *HAS_MPS { Device::Mps } else { Device::Cpu });
        if !registry::safe_mps_enabled() {
            return once(first, false);
        }
        if IN_FALLBACK.get() {
            return once(Device::Cpu, true);
        }
        let wants_mps = first == Device::Mps
            || (tensor_form && forced.is_none())
            || registry::injection_pending();
        if !wants_mps {
            return once(first, false);
        }
        let trial = match registry::admit() {
            Admit::Cpu => {
                registry::record_skip();
                return once(Device::Cpu, true);
            }
            Admit::Mps => false,
            Admit::Trial => true,
        };
        let plan = if registry::take_injected() {
            Plan::Injected
        } else {
            Plan::Guarded { device: first }
        };
        MpsGuard { site, plan, trial }
    }

    /// The device of the first attempt; `None` when an injected failure
    /// replaces it (then call [`injected`](Self::injected)).
    #[inline]
    pub fn first_device(&self) -> Option<Device> {
        match self.plan {
            Plan::Once { device, .. } | Plan::Guarded { device } => Some(device),
            Plan::Injected => None,
        }
    }

    /// Whether the named tensors go to CPU before the first attempt.
    #[inline]
    pub fn to_cpu_first(&self) -> bool {
        matches!(
            self.plan,
            Plan::Once {
                to_cpu_first: true,
                ..
            }
        )
    }

    /// Runs an attempt, catching a panic.
    #[inline]
    pub fn run<R>(&self, attempt: impl FnOnce() -> R) -> Result<R, Payload> {
        catch_unwind(AssertUnwindSafe(attempt))
    }

    /// Runs an async attempt, catching a panic.
    pub async fn run_async<F: Future>(&self, attempt: F) -> Result<F::Output, Payload> {
        AssertUnwindSafe(attempt).catch_unwind().await
    }

    /// Judges the first attempt: its value, a propagated panic, or a fallback.
    ///
    /// `error` gives the text of the value's error, if the value is one.
    #[inline]
    pub fn judge<R>(
        &mut self,
        out: Result<R, Payload>,
        error: impl FnOnce(&R) -> Option<String>,
    ) -> Result<R, Fallback> {
        if let Plan::Once { .. } = self.plan {
            return out.or_else(|payload| resume_unwind(payload));
        }
        match out {
            Ok(value) => match error(&value) {
                Some(message) if is_mps_error(&message) => Err(self.failed(&message)),
                _ => {
                    self.succeeded();
                    Ok(value)
                }
            },
            Err(payload) if is_mps_panic(payload.as_ref()) => {
                let message = super::classify::panic_message(payload.as_ref()).unwrap_or("");
                Err(self.failed(message))
            }
            Err(payload) => {
                // Not MPS's fault: MPS worked, and the panic goes on unchanged.
                self.succeeded();
                resume_unwind(payload)
            }
        }
    }

    /// Reports the injected failure that replaced the first attempt.
    #[cold]
    pub fn injected(&mut self) -> Fallback {
        self.failed("injected MPS failure (opguard fault injection)")
    }

    /// Runs the CPU retry, catching a panic; nested `safe_mps!` calls inside
    /// it run on CPU once and never fall back again.
    pub fn retry<R>(&self, _: Fallback, attempt: impl FnOnce() -> R) -> Result<R, Payload> {
        let _scope = FallbackScope::enter();
        catch_unwind(AssertUnwindSafe(attempt))
    }

    /// The async CPU retry; the nesting rule holds on every poll.
    pub async fn retry_async<F: Future>(
        &self,
        _: Fallback,
        attempt: F,
    ) -> Result<F::Output, Payload> {
        let mut attempt = pin!(AssertUnwindSafe(attempt).catch_unwind());
        poll_fn(|cx| {
            let _scope = FallbackScope::enter();
            attempt.as_mut().poll(cx)
        })
        .await
    }

    /// Ends the call with the retry's value, counting how it went; a panic
    /// of the retry propagates unchanged.
    pub fn finish<R>(self, out: Result<R, Payload>, error: impl FnOnce(&R) -> Option<String>) -> R {
        match out {
            Ok(value) => {
                registry::record_fallback(self.site, error(&value).is_none());
                value
            }
            Err(payload) => {
                registry::record_fallback(self.site, false);
                resume_unwind(payload)
            }
        }
    }

    fn succeeded(&mut self) {
        registry::record_success(std::mem::take(&mut self.trial));
    }

    #[cold]
    fn failed(&mut self, message: &str) -> Fallback {
        registry::record_failure(self.site, std::mem::take(&mut self.trial), message);
        Fallback(())
    }
}

impl Drop for MpsGuard {
    fn drop(&mut self) {
        // The trial's future was dropped before it could report.
        if self.trial {
            registry::abandon_trial();
        }
    }
}

/// Wraps a value so that `(&Classify(&v)).error_message()` picks, at compile
/// time, [`ErrorOfResult`] for a `Result` whose error is `Display`, and
/// [`ErrorOfOther`] for anything else (autoref specialisation).
#[derive(Debug)]
pub struct Classify<'a, T>(pub &'a T);

/// The error text of a `Result`'s `Err`.
pub trait ErrorOfResult {
    /// The error's text, if the value is an `Err`.
    fn error_message(&self) -> Option<String>;
}

impl<T, E: std::fmt::Display> ErrorOfResult for Classify<'_, Result<T, E>> {
    #[inline]
    fn error_message(&self) -> Option<String> {
        self.0.as_ref().err().map(ToString::to_string)
    }
}

/// Values that are not a `Result` carry no error text: only panics count.
pub trait ErrorOfOther {
    /// Always `None`.
    #[inline]
    fn error_message(&self) -> Option<String> {
        None
    }
}

impl<T> ErrorOfOther for &Classify<'_, T> {}
