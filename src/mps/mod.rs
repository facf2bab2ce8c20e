//! MPS errors, the fallback registry, and (with the `tch` feature) moving
//! tensors to CPU: everything `safe_mps!` stands on.
//!
//! The registry is process-wide and remembers two things, so that MPS
//! trouble costs one failure and not one per call:
//!
//! - **Call sites** that hit an op-level MPS error (an operator, dtype or
//!   layout MPS does not support: see [`MpsErrorKind`]) are pinned to CPU:
//!   their next calls go straight there, with no MPS attempt and no warning,
//!   while every other call site keeps using MPS. After the cool-down one
//!   call at the site tries MPS again.
//! - **MPS as a whole** is disabled after repeated device-level errors (MPS
//!   missing, out of memory, ...): a circuit breaker, enabled, disabled,
//!   probing. While it is disabled every call goes straight to CPU; after the
//!   cool-down one trial call tries MPS again.
//!
//! Only work that ran on MPS moves either of them. [`stats`] reads the
//! counters, in total and per call site (as [`crate::timeouts::stats`] reads
//! the timeouts'). For tests, see [`crate::testing`].
//!
//! # Settings
//! In code, or from the environment:
//!
//! | in code | variable | default |
//! |---|---|---|
//! | [`set_failure_threshold`] | `OPGUARD_MPS_FAILURE_THRESHOLD`: consecutive device-level MPS failures that disable MPS (>= 1) | `3` |
//! | [`set_cooldown`] | `OPGUARD_MPS_COOLDOWN_SECS`: seconds MPS stays disabled, or a call site pinned, before one trial call | `60` |
//! | [`set_enabled`] | `OPGUARD_SAFE_MPS_DISABLE`: `1`/`true`/`yes`/`on`: `safe_mps!` runs the work once and propagates errors | on |
//! | | `OPGUARD_DISABLE`: the same for every opguard macro | on |
//!
//! Variables are read once, on first use; a value that does not parse is
//! logged at warn level, naming the variable and the value, and the default
//! stays. A setting made in code wins over its variable.

// Without `tch` nothing calls the steps; their unit tests still run.
#[cfg_attr(not(feature = "tch"), allow(dead_code))]
pub(crate) mod breaker;
#[cfg_attr(not(feature = "tch"), allow(dead_code, unreachable_pub))]
pub(crate) mod call;
mod classify;
#[cfg_attr(not(feature = "tch"), allow(dead_code))]
mod gate;
#[cfg_attr(not(feature = "tch"), allow(dead_code))]
mod quiet;
#[cfg_attr(not(feature = "tch"), allow(dead_code))]
pub(crate) mod registry;
#[cfg_attr(not(feature = "tch"), allow(dead_code, unreachable_pub))]
pub(crate) mod site;
#[cfg_attr(not(feature = "tch"), allow(dead_code))]
mod tally;

#[cfg(feature = "tch")]
mod tensors;

pub use breaker::MpsState;
pub use classify::{MpsErrorKind, is_mps_error, is_mps_panic, mps_error_kind};
pub use registry::{
    DEFAULT_COOLDOWN, DEFAULT_FAILURE_THRESHOLD, MpsStats, enabled, set_cooldown, set_enabled,
    set_failure_threshold, stats,
};
pub use site::MpsSiteStats;
#[cfg(feature = "tch")]
pub use tensors::{MoveToCpu, is_mps_tch_error};
