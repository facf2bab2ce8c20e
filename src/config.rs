//! What the settings of both guards share: reading the environment (once,
//! warning about values that do not parse) and the kill switches. The
//! settings themselves are in [`crate::timeouts`] and [`crate::mps`].
//!
//! # Atomic orderings
//! Settings are single values that publish nothing else, so they are stored
//! and loaded `Relaxed`. The environment is read through [`FromEnv`], a
//! `OnceCell` that publishes the value read with its own synchronisation.
//!
//! # Warnings
//! A value that does not parse is warned about through `log`, whose logger is
//! user code: it may start a timeout, which reads the settings. So a setting
//! is stored before its warnings are logged, and nothing of ours is held
//! then (a `Lazy` would be, being initialised, and that read would deadlock).

use std::sync::atomic::{AtomicU8, Ordering};

use once_cell::sync::OnceCell;

pub(crate) const ENV_TIMEOUT_SECS: &str = "OPGUARD_TIMEOUT_SECS";
pub(crate) const ENV_TIMEOUT_DISABLE: &str = "OPGUARD_TIMEOUT_DISABLE";
pub(crate) const ENV_DISABLE: &str = "OPGUARD_DISABLE";

/// What reading the environment has to warn about, logged once the value
/// read is stored (see [`FromEnv`]).
pub(crate) type Warnings = Vec<String>;

/// A setting read from the environment once, on first use, by `read`, which
/// notes what it warns about in its `Warnings`; they are logged after the
/// value is stored, with nothing of ours held (see "Warnings" above).
pub(crate) struct FromEnv<T> {
    cell: OnceCell<T>,
    read: fn(&mut Warnings) -> T,
}

impl<T> FromEnv<T> {
    pub(crate) const fn new(read: fn(&mut Warnings) -> T) -> Self {
        FromEnv {
            cell: OnceCell::new(),
            read,
        }
    }

    #[inline]
    pub(crate) fn get(&self) -> &T {
        match self.cell.get() {
            Some(value) => value,
            None => self.read_env(),
        }
    }

    #[cold]
    #[inline(never)]
    fn read_env(&self) -> &T {
        let mut warnings = Warnings::new();
        let value = (self.read)(&mut warnings);
        match self.cell.try_insert(value) {
            Ok(value) => {
                for warning in warnings {
                    log::warn!(target: "opguard", "{warning}");
                }
                value
            }
            // Another thread read it at the same time, stored it first and
            // warns.
            Err((value, _)) => value,
        }
    }
}

/// Reads `name`; `None` when unset. Warns about values that are not Unicode.
pub(crate) fn env_var(name: &str, warnings: &mut Warnings) -> Option<String> {
    match std::env::var(name) {
        Ok(value) => Some(value),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(raw)) => {
            warnings.push(format!("{name}={raw:?} is not valid Unicode; ignoring it"));
            None
        }
    }
}

/// Reads `name` with `parse`; warns, naming both, and gives `None` when it fails.
pub(crate) fn env_parse<T>(
    name: &str,
    expected: &str,
    parse: impl FnOnce(&str) -> Option<T>,
    warnings: &mut Warnings,
) -> Option<T> {
    let raw = env_var(name, warnings)?;
    let parsed = parse(raw.trim());
    if parsed.is_none() {
        warnings.push(format!(
            "{name}={raw:?} is not {expected}; keeping the default"
        ));
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
    env: FromEnv<bool>,
}

const UNSET: u8 = 0;
const ON: u8 = 1;
const OFF: u8 = 2;

impl Switch {
    pub(crate) const fn new(env: fn(&mut Warnings) -> bool) -> Self {
        Switch {
            code: AtomicU8::new(UNSET),
            env: FromEnv::new(env),
        }
    }

    #[inline]
    pub(crate) fn enabled(&self) -> bool {
        match self.code.load(Ordering::Relaxed) {
            ON => true,
            OFF => false,
            _ => *self.env.get(),
        }
    }

    pub(crate) fn set(&self, enabled: bool) {
        self.code
            .store(if enabled { ON } else { OFF }, Ordering::Relaxed);
    }
}

/// Whether the environment leaves the switch named `var` on.
pub(crate) fn enabled_by_env(var: &str, warnings: &mut Warnings) -> bool {
    let disabled = env_parse(var, FLAG, parse_flag, warnings)
        .or_else(|| env_parse(ENV_DISABLE, FLAG, parse_flag, warnings))
        .unwrap_or(false);
    if disabled {
        warnings.push(format!("{var} or {ENV_DISABLE} is set: the guard is off"));
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
        static S: Switch = Switch::new(|_| true);
        assert!(S.enabled());
        S.set(false);
        assert!(!S.enabled());
        S.set(true);
        assert!(S.enabled());
    }
}
