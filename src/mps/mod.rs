//! MPS errors, the fallback registry, and (with the `tch` feature) moving
//! tensors to CPU: everything `safe_mps!` stands on.
//!
//! The registry is process-wide: it counts MPS errors and CPU fallbacks, and
//! disables MPS after repeated failures (a circuit breaker: enabled,
//! disabled, probing), so that a broken MPS device does not make every call
//! fail first and fall back second. See [`stats`], [`reset`],
//! [`set_failure_threshold`], [`set_cooldown`], [`set_safe_mps_enabled`] and
//! [`inject_mps_failures`].

// Without `tch` nothing drives the breaker yet; its tests still run.
#[cfg_attr(not(feature = "tch"), allow(dead_code))]
mod breaker;
mod classify;
#[cfg_attr(not(feature = "tch"), allow(dead_code))]
mod registry;

#[cfg(feature = "tch")]
pub(crate) mod guard;
#[cfg(feature = "tch")]
mod tensors;

pub use breaker::MpsState;
pub use classify::{is_mps_error, is_mps_panic};
pub use registry::{
    DEFAULT_COOLDOWN, DEFAULT_FAILURE_THRESHOLD, MpsStats, inject_mps_failures, reset,
    safe_mps_enabled, set_cooldown, set_failure_threshold, set_safe_mps_enabled, stats,
};
#[cfg(feature = "tch")]
pub use tensors::{MoveToCpu, is_mps_tch_error};
