//! The fallback registry's settings and configuration, without libtorch.

mod common;

use std::time::Duration;

use common::rerun_in_child;
use opguard::mps::{self, MpsState};
use opguard::testing;

#[test]
fn defaults_and_injection_bookkeeping() {
    if rerun_in_child("defaults_and_injection_bookkeeping", &[]) {
        return;
    }
    let s = mps::stats();
    assert_eq!(s.state, MpsState::Enabled);
    assert_eq!(
        (s.failure_threshold, s.cooldown),
        (3, Duration::from_secs(60))
    );
    testing::inject_mps_failures(2);
    testing::inject_mps_failures(3);
    assert_eq!(mps::stats().injected_pending, 5);
    testing::inject_mps_failures(u32::MAX);
    assert_eq!(
        mps::stats().injected_pending,
        u32::MAX,
        "saturates, never wraps"
    );
    testing::reset_mps();
    assert_eq!(mps::stats().injected_pending, 0);
}

#[test]
fn settings_in_code() {
    if rerun_in_child("settings_in_code", &[]) {
        return;
    }
    mps::set_failure_threshold(5);
    mps::set_cooldown(1.5).unwrap();
    let s = mps::stats();
    assert_eq!(
        (s.failure_threshold, s.cooldown),
        (5, Duration::from_millis(1500))
    );
    common::capture_logs();
    mps::set_failure_threshold(0);
    assert_eq!(mps::stats().failure_threshold, 1, "at least one failure");
    let want =
        "WARN mps::set_failure_threshold(0): MPS is disabled after at least 1 failure; using 1";
    let logs = common::captured_logs();
    assert!(logs.iter().any(|l| l == want), "no `{want}` in {logs:?}");
    let err = mps::set_cooldown(-3).unwrap_err();
    assert!(err.to_string().contains("-3 seconds is negative"));
    assert_eq!(mps::stats().cooldown, Duration::from_millis(1500));
    assert!(mps::enabled());
    mps::set_enabled(false);
    assert!(!mps::enabled());
}

#[test]
fn settings_from_env() {
    let env = [
        ("OPGUARD_MPS_FAILURE_THRESHOLD", "7"),
        ("OPGUARD_MPS_COOLDOWN_SECS", "0.25"),
        ("OPGUARD_SAFE_MPS_DISABLE", "yes"),
    ];
    if rerun_in_child("settings_from_env", &env) {
        return;
    }
    let s = mps::stats();
    assert_eq!(
        (s.failure_threshold, s.cooldown),
        (7, Duration::from_millis(250))
    );
    assert!(!mps::enabled());
}

#[test]
fn global_kill_switch_disables_safe_mps() {
    if rerun_in_child(
        "global_kill_switch_disables_safe_mps",
        &[("OPGUARD_DISABLE", "1")],
    ) {
        return;
    }
    assert!(!mps::enabled());
}

#[test]
fn garbage_in_env_warns_naming_variable_and_value_and_keeps_defaults() {
    let env = [
        ("OPGUARD_MPS_FAILURE_THRESHOLD", "0"),
        ("OPGUARD_MPS_COOLDOWN_SECS", "soon"),
        ("OPGUARD_SAFE_MPS_DISABLE", "perhaps"),
    ];
    if rerun_in_child(
        "garbage_in_env_warns_naming_variable_and_value_and_keeps_defaults",
        &env,
    ) {
        return;
    }
    common::capture_logs();
    let s = mps::stats();
    assert_eq!(
        (s.failure_threshold, s.cooldown),
        (3, Duration::from_secs(60))
    );
    assert!(mps::enabled());
    let logs = common::captured_logs();
    for want in [
        "WARN OPGUARD_MPS_FAILURE_THRESHOLD=\"0\" is not a whole number >= 1; keeping the default",
        "WARN OPGUARD_MPS_COOLDOWN_SECS=\"soon\" is not a number of seconds >= 0; keeping the default",
        "WARN OPGUARD_SAFE_MPS_DISABLE=\"perhaps\" is not a flag (1/true/yes/on or 0/false/no/off); keeping the default",
    ] {
        assert!(logs.iter().any(|l| l == want), "no `{want}` in {logs:?}");
    }
}

#[test]
fn huge_numbers_in_env_warn_and_keep_defaults() {
    let env = [
        ("OPGUARD_MPS_FAILURE_THRESHOLD", "99999999999999999999"),
        ("OPGUARD_MPS_COOLDOWN_SECS", "1e999"),
    ];
    if rerun_in_child("huge_numbers_in_env_warn_and_keep_defaults", &env) {
        return;
    }
    common::capture_logs();
    let s = mps::stats();
    assert_eq!(
        (s.failure_threshold, s.cooldown),
        (3, Duration::from_secs(60))
    );
    let logs = common::captured_logs();
    assert!(
        logs.iter()
            .any(|l| l.contains("OPGUARD_MPS_FAILURE_THRESHOLD=\"99999999999999999999\"")),
        "{logs:?}"
    );
    assert!(
        logs.iter()
            .any(|l| l.contains("OPGUARD_MPS_COOLDOWN_SECS=\"1e999\"")),
        "{logs:?}"
    );
}
