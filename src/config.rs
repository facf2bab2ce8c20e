//! Settings from code and from the environment: default timeout, kill switches.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `OPGUARD_TIMEOUT_SECS` | default timeout of `timeout_async!(fut)`, in seconds (fractions allowed) | `30` |
//! | `OPGUARD_TIMEOUT_DISABLE` | `1`/`true`/`yes`/`on`: every `timeout_async!` passes its future through | off |
//! | `OPGUARD_DISABLE` | the same for every opguard macro | off |
//!
//! Each variable is read once, the first time it is needed. A value that does
//! not parse is logged at warn level, naming the variable and the value, and
//! the built-in default stays. A setting made in code wins over the variable.
//!
//! # Atomic orderings
//! Settings are single values that publish nothing else, so they are stored
//! and loaded `Relaxed`. The environment is read through `Lazy`, which
//! synchronizes its own initialisation.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use once_cell::sync::Lazy;

use crate::duration::{IntoTimeout, InvalidTimeout};

/// The built-in default of `timeout_async!(fut)`: 30 seconds.
pub const BUILTIN_DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) const ENV_TIMEOUT_SECS: &str = "OPGUARD_TIMEOUT_SECS";
pub(crate) const ENV_TIMEOUT_DISABLE: &str = "OPGUARD_TIMEOUT_DISABLE";
pub(crate) const ENV_DISABLE: &str = "OPGUARD_DISABLE";

/// Reads `name`; `None` when unset. Warns about values that are not Unicode.
pub(crate) fn env_var(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(value) => Some(value),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(raw)) => {
            log::warn!(target: "opguard", "{name}={raw:?} is not valid Unicode; ignoring it");
            None
        }
    }
}

/// Reads `name` with `parse`; warns, naming both, and gives `None` when it fails.
pub(crate) fn env_parse<T>(
    name: &str,
    expected: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Option<T> {
    let raw = env_var(name)?;
    let parsed = parse(raw.trim());
    if parsed.is_none() {
        log::warn!(target: "opguard", "{name}={raw:?} is not {expected}; keeping the default");
    }
    parsed
}

/// Parses a yes/no flag as the kill switches read it.
pub(crate) fn parse_flag(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

const FLAG: &str = "a flag (1/true/yes/on or 0/false/no/off)";

/// A kill switch: on unless its variable, or `OPGUARD_DISABLE`, says off, or code turns it off.
pub(crate) struct Switch {
    /// `UNSET`, `ON` or `OFF`: what code said last.
    code: AtomicU8,
    env: Lazy<bool>,
}

const UNSET: u8 = 0;
const ON: u8 = 1;
const OFF: u8 = 2;

impl Switch {
    pub(crate) const fn new(env: fn() -> bool) -> Self {
        Switch {
            code: AtomicU8::new(UNSET),
            env: Lazy::new(env),
        }
    }

    #[inline]
    pub(crate) fn enabled(&self) -> bool {
        match self.code.load(Ordering::Relaxed) {
            ON => true,
            OFF => false,
            _ => *self.env,
        }
    }

    pub(crate) fn set(&self, enabled: bool) {
        self.code
            .store(if enabled { ON } else { OFF }, Ordering::Relaxed);
    }
}

/// Whether the environment leaves the switch named `var` on.
pub(crate) fn enabled_by_env(var: &str) -> bool {
    let disabled = env_parse(var, FLAG, parse_flag)
        .or_else(|| env_parse(ENV_DISABLE, FLAG, parse_flag))
        .unwrap_or(false);
    if disabled {
        log::warn!(target: "opguard", "{var} or {ENV_DISABLE} is set: the guard is off");
    }
    !disabled
}

static TIMEOUTS: Switch = Switch::new(|| enabled_by_env(ENV_TIMEOUT_DISABLE));

/// Turns every `timeout_async!` into a pass-through (`false`) or back (`true`).
///
/// The kill switch for rollback: while off, `timeout_async!(secs, fut)` yields
/// `Ok(fut.await)` and arms no timer, whatever `secs` is. It wins over
/// `OPGUARD_TIMEOUT_DISABLE`. A future already waiting on its timer keeps it.
///
/// ```
/// opguard::set_timeouts_enabled(false);
/// assert!(!opguard::timeouts_enabled());
/// opguard::set_timeouts_enabled(true);
/// ```
pub fn set_timeouts_enabled(enabled: bool) {
    TIMEOUTS.set(enabled);
}

/// Whether `timeout_async!` enforces timeouts (see [`set_timeouts_enabled`]).
pub fn timeouts_enabled() -> bool {
    TIMEOUTS.enabled()
}

/// Nanoseconds of the default set in code; `NOT_SET` when none was.
static CODE_DEFAULT: AtomicU64 = AtomicU64::new(NOT_SET);
const NOT_SET: u64 = u64::MAX;

static ENV_DEFAULT: Lazy<Duration> = Lazy::new(|| {
    env_parse(ENV_TIMEOUT_SECS, "a number of seconds >= 0", |raw| {
        raw.parse::<f64>().ok()?.into_timeout().ok()
    })
    .unwrap_or(BUILTIN_DEFAULT_TIMEOUT)
});

/// Sets the timeout of `timeout_async!(fut)`, the form without one.
///
/// Takes what the macro takes: seconds or a `Duration`. It wins over
/// `OPGUARD_TIMEOUT_SECS`. Values past about 584 years are held as 584 years.
///
/// ```
/// # fn main() -> Result<(), opguard::InvalidTimeout> {
/// opguard::set_default_timeout(45)?;
/// assert_eq!(opguard::default_timeout(), std::time::Duration::from_secs(45));
/// assert!(opguard::set_default_timeout(-1).is_err());
/// # Ok(()) }
/// ```
pub fn set_default_timeout(timeout: impl IntoTimeout) -> Result<(), InvalidTimeout> {
    let timeout = timeout.into_timeout()?;
    let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(NOT_SET - 1);
    CODE_DEFAULT.store(nanos.min(NOT_SET - 1), Ordering::Relaxed);
    Ok(())
}

/// The timeout of `timeout_async!(fut)`: set in code, else `OPGUARD_TIMEOUT_SECS`, else 30 s.
pub fn default_timeout() -> Duration {
    match CODE_DEFAULT.load(Ordering::Relaxed) {
        NOT_SET => *ENV_DEFAULT,
        nanos => Duration::from_nanos(nanos),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_both_ways_and_reject_garbage() {
        for on in ["1", "true", "YES", "On"] {
            assert_eq!(parse_flag(on), Some(true), "{on}");
        }
        for off in ["0", "false", "No", "OFF"] {
            assert_eq!(parse_flag(off), Some(false), "{off}");
        }
        for bad in ["", "2", "maybe", "tru e"] {
            assert_eq!(parse_flag(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_switch_set_in_code_wins_over_its_environment() {
        static S: Switch = Switch::new(|| true);
        assert!(S.enabled());
        S.set(false);
        assert!(!S.enabled());
        S.set(true);
        assert!(S.enabled());
    }
}
