//! Inline guards for code that must not hang and tensor work that must not crash.
//!
//! - [`timeout_async!`] puts a timeout on any future, inline, on any executor
//!   (tokio, smol, async-std, `futures::executor`, ...): it races the future
//!   against a [`futures_timer::Delay`], which needs nothing from the runtime.
//!
//! Around it: logging through [`log`] (target `opguard`), counters in
//! [`timeouts`], alerts in [`alert`] when timeouts come too often, a kill switch
//! and a default timeout in code or environment variables (also [`timeouts`]), and,
//! with the `metrics` feature, the same counters through the `metrics` facade.
//!
//! ```
//! use opguard::timeout_async;
//! use std::time::Duration;
//!
//! # futures::executor::block_on(async {
//! // Whole or fractional seconds, a Duration, or the default (30 s).
//! let quote = timeout_async!(label = "fetch_quote", 0.5, async { 101.25 }).await;
//! assert_eq!(quote, Ok(101.25));
//!
//! let hung = timeout_async!(Duration::from_millis(20), std::future::pending::<()>()).await;
//! let err = hung.unwrap_err();
//! assert!(err.is_elapsed());
//! // The error converts into io::Error with kind TimedOut.
//! assert_eq!(std::io::Error::from(err).kind(), std::io::ErrorKind::TimedOut);
//! # });
//! ```
//!
//! See [`timeout_async!`] for the grammar of every form, a deadline
//! (`until = INSTANT`, like tokio's `timeout_at`) among them.
//!
//! With the `tch` feature, `safe_mps!` runs tensor work written with
//! [`tch`](https://docs.rs/tch) on Apple's MPS and, on an MPS error, moves the
//! named tensors to CPU and runs the work once more there. (The example runs
//! with the `tch` feature; it forces MPS, so on a machine without it the
//! fallback runs for real.)
//!
#![cfg_attr(feature = "tch", doc = "```")]
#![cfg_attr(not(feature = "tch"), doc = "```ignore")]
//! use opguard::safe_mps;
//! use tch::{Device, Kind, Tensor};
//!
//! let xs = Tensor::ones([2, 3], (Kind::Float, Device::Cpu));
//! // Tried on MPS (forced here), retried on CPU after PyTorch's MPS error.
//! let sum = safe_mps!(label = "sum", device = Device::Mps, |dev| {
//!     xs.f_to_device(dev)?.f_sum(Kind::Float)
//! });
//! assert_eq!(sum.unwrap().double_value(&[]), 6.0);
//! ```
//!
//! # The MPS registry
//! A process-wide registry ([`mps`]) remembers what went wrong, so that MPS
//! trouble costs one failure and not one per call: a call site whose op MPS
//! cannot run stays on CPU (other sites keep MPS), and repeated device-level
//! errors disable MPS for a cool-down. Without `tch`, [`mps::is_mps_error`]
//! and [`mps::mps_error_kind`] judge PyTorch's error texts.
//!
//! ```
//! use opguard::mps::{self, MpsErrorKind, MpsState, mps_error_kind};
//!
//! // Disable MPS after 5 device-level errors in a row, for 10 minutes.
//! mps::set_failure_threshold(5);
//! mps::set_cooldown(600).unwrap();
//! let s = mps::stats();
//! assert_eq!(s.state, MpsState::Enabled);
//! assert_eq!(s.fallbacks, 0);
//!
//! let text = "The operator 'aten::_fft_r2c' is not currently implemented for the MPS device.";
//! assert_eq!(mps_error_kind(text), Some(MpsErrorKind::Op));
//! ```
//!
//! # Configuration
//! Each guard has a kill switch and its settings, in code or in environment
//! variables read once, when first needed: [`timeouts`]
//! (`OPGUARD_TIMEOUT_SECS`, `OPGUARD_TIMEOUT_DISABLE`) and [`mps`]
//! (`OPGUARD_SAFE_MPS_DISABLE` and the registry's settings).
//! `OPGUARD_DISABLE` turns both guards off. A setting made in code wins:
//!
//! ```
//! # futures::executor::block_on(async {
//! use opguard::{mps, timeout_async, timeouts};
//!
//! timeouts::set_default(0.5).unwrap(); // for `timeout_async!(fut)`
//! assert_eq!(timeouts::default(), std::time::Duration::from_millis(500));
//!
//! // Off: every timeout passes its future through, as if it were not there.
//! timeouts::set_enabled(false);
//! let out = timeout_async!(0.01, async { "no timer" }).await;
//! assert_eq!(out, Ok("no timer"));
//! timeouts::set_enabled(true);
//!
//! // `safe_mps!`'s switch reads the same way.
//! assert!(mps::enabled());
//! # });
//! ```
//!
//! # Testing code that times out
//! A test of "this call gives up after 30 s" need not take 30 s:
//! - with the `test-util` feature, `test_clock::TestClock` is a clock a
//!   test moves by hand or lets jump to the next deadline, on any executor;
//! - with the `tokio` feature, a timeout that starts in a tokio runtime whose
//!   clock is paused (`#[tokio::test(start_paused = true)]`,
//!   `tokio::time::pause`) follows tokio's clock, so `tokio::time::advance`
//!   and auto-advance move it.
//!
//! Both are meant for `[dev-dependencies]`; the README shows each in a
//! runnable test.
//!
//! # Features
//! - `tch`: `safe_mps!`, the `MoveToCpu` trait and the tensor side of [`mps`].
//! - `metrics`: the counters also go to the `metrics` facade.
//! - `test-util`: the `test_clock` module.
//! - `tokio`: follow tokio's paused clock (one more clock read when a timeout
//!   starts).
//!
//! # Logging
//! Every timeout is a warn line with its label, duration and call site, and
//! so is every MPS error; an alert is an error line. Install any `log` logger
//! (`env_logger`, ...) to see them.
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod clock;
mod contain;
#[cfg(any(feature = "test-util", feature = "tokio"))]
mod controlled;
mod duration;
mod error;
mod item_macro;
mod report;
mod safe_mps_macro;
mod site;
mod timeout;
mod timeout_macro;
mod timer;

pub mod alert;
mod config;
#[cfg(feature = "metrics")]
mod export;
pub mod mps;
#[cfg(feature = "test-util")]
pub mod test_clock;
pub mod testing;
pub mod timeouts;

pub use crate::duration::{IntoDeadline, IntoTimeout, InvalidTimeout};
pub use crate::error::TimeoutError;
pub use crate::timeout::Timeout;
pub use crate::timer::tick_of;

// The README's examples run as doctests (they need the `tch` feature).
#[cfg(all(doctest, feature = "tch"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

// Not public API. Referenced by the macros' expansions only; may change at any time.
#[doc(hidden)]
pub mod __private {
    pub use core::option::Option::{self, None, Some};
    pub use core::result::Result::{self, Err, Ok};

    pub use crate::site::Site;
    pub use crate::timeout::{timeout, timeout_default, timeout_until};
    pub use crate::timeout_macro::{label, returning};

    #[cfg(feature = "tch")]
    pub use crate::mps::call::attempt_async;
    pub use crate::mps::call::{Action, Driver};
    pub use crate::mps::site::MpsSite;
    #[cfg(feature = "tch")]
    pub use crate::safe_mps_macro::MoveNamed;
    pub use crate::safe_mps_macro::{Classify, ErrorOfOther, ErrorOfResult, Timed};
    #[cfg(feature = "tch")]
    pub use tch::Device;
}
