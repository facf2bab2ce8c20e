//! What the settings of both guards share: reading the environment (once,
//! warning about values that do not parse) and the kill switches. The
//! settings themselves are in [`crate::timeouts`] and [`crate::mps`].
//!
//! # Atomic orderings
//! Settings are single values that publish nothing else, so they are stored
//! and loaded `Relaxed`. The environment is read through `Lazy`, which
//! synchronizes its own initialisation.

use std::sync::atomic::{AtomicU8, Ordering};

use once_cell::sync::Lazy;

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
