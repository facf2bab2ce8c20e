//! The kill switch and the default timeout, set in code and by the environment.
//! Environment cases run in a child process each, since variables are read once.

mod common;

use std::future::pending;
use std::time::{Duration, Instant};

use common::rerun_in_child;
use futures::executor::block_on;
use opguard::timeout_async;

async fn pending_for(ms: u64) -> &'static str {
    futures_timer::Delay::new(Duration::from_millis(ms)).await;
    "finished"
}

#[test]
fn kill_switch_in_code_makes_every_form_a_pass_through() {
    if rerun_in_child("kill_switch_in_code_makes_every_form_a_pass_through", &[]) {
        return;
    }
    opguard::timeouts::set_enabled(false);
    assert_eq!(
        block_on(timeout_async!(0.01, pending_for(60))),
        Ok("finished")
    );
    assert_eq!(
        block_on(timeout_async!(label = "off", 0, pending_for(20))),
        Ok("finished")
    );
    assert_eq!(
        block_on(timeout_async!(-1, async { 1 })),
        Ok(1),
        "even a bad timeout passes"
    );
    opguard::timeouts::set_enabled(true);
    assert!(
        block_on(timeout_async!(0.01, pending::<()>()))
            .unwrap_err()
            .is_elapsed()
    );
}

#[test]
fn default_timeout_set_in_code() {
    if rerun_in_child("default_timeout_set_in_code", &[]) {
        return;
    }
    assert_eq!(opguard::timeouts::default(), Duration::from_secs(30));
    opguard::timeouts::set_default(0.05).unwrap();
    let start = Instant::now();
    let err = block_on(timeout_async!(pending::<()>())).unwrap_err();
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(err.duration(), Some(Duration::from_millis(50)));
    let bad = opguard::timeouts::set_default(f64::NAN).unwrap_err();
    assert!(bad.to_string().contains("NaN"));
    assert_eq!(
        opguard::timeouts::default(),
        Duration::from_millis(50),
        "a bad value changes nothing"
    );
}

#[test]
fn default_timeout_from_env() {
    if rerun_in_child(
        "default_timeout_from_env",
        &[("OPGUARD_TIMEOUT_SECS", "0.05")],
    ) {
        return;
    }
    assert_eq!(opguard::timeouts::default(), Duration::from_millis(50));
    let err = block_on(timeout_async!(label = "env_default", pending::<()>())).unwrap_err();
    assert_eq!(err.duration(), Some(Duration::from_millis(50)));
    // Code wins over the environment.
    opguard::timeouts::set_default(Duration::from_secs(9)).unwrap();
    assert_eq!(opguard::timeouts::default(), Duration::from_secs(9));
}

fn assert_default_kept_with_warning(value: &str) {
    common::capture_logs();
    assert_eq!(opguard::timeouts::default(), Duration::from_secs(30));
    let want = format!(
        "WARN OPGUARD_TIMEOUT_SECS={value:?} is not a number of seconds >= 0; keeping the default"
    );
    let logs = common::captured_logs();
    assert!(logs.contains(&want), "no `{want}` in {logs:?}");
    assert_eq!(
        logs.iter()
            .filter(|l| l.contains("OPGUARD_TIMEOUT_SECS"))
            .count(),
        1
    );
    // Read once: asking again warns no more.
    let _ = opguard::timeouts::default();
    assert_eq!(common::captured_logs().len(), logs.len());
}

#[test]
fn garbage_default_timeout_in_env_warns_and_keeps_30s() {
    if rerun_in_child(
        "garbage_default_timeout_in_env_warns_and_keeps_30s",
        &[("OPGUARD_TIMEOUT_SECS", "thirty")],
    ) {
        return;
    }
    assert_default_kept_with_warning("thirty");
}

#[test]
fn empty_default_timeout_in_env_warns_and_keeps_30s() {
    if rerun_in_child(
        "empty_default_timeout_in_env_warns_and_keeps_30s",
        &[("OPGUARD_TIMEOUT_SECS", "")],
    ) {
        return;
    }
    assert_default_kept_with_warning("");
}

#[test]
fn negative_or_overflowing_default_timeout_in_env_warns_and_keeps_30s() {
    if rerun_in_child(
        "negative_or_overflowing_default_timeout_in_env_warns_and_keeps_30s",
        &[("OPGUARD_TIMEOUT_SECS", "-5")],
    ) {
        return;
    }
    assert_default_kept_with_warning("-5");
}

#[test]
fn infinite_default_timeout_in_env_warns_and_keeps_30s() {
    if rerun_in_child(
        "infinite_default_timeout_in_env_warns_and_keeps_30s",
        &[("OPGUARD_TIMEOUT_SECS", "1e400")],
    ) {
        return;
    }
    assert_default_kept_with_warning("1e400");
}

#[test]
fn kill_switch_from_env() {
    if rerun_in_child("kill_switch_from_env", &[("OPGUARD_TIMEOUT_DISABLE", "1")]) {
        return;
    }
    assert!(!opguard::timeouts::enabled());
    assert_eq!(
        block_on(timeout_async!(0.01, pending_for(50))),
        Ok("finished")
    );
    // Code wins over the environment.
    opguard::timeouts::set_enabled(true);
    assert!(block_on(timeout_async!(0.01, pending::<()>())).is_err());
}

#[test]
fn global_kill_switch_from_env() {
    if rerun_in_child(
        "global_kill_switch_from_env",
        &[("OPGUARD_DISABLE", "true")],
    ) {
        return;
    }
    assert!(!opguard::timeouts::enabled());
    assert_eq!(
        block_on(timeout_async!(0.01, pending_for(50))),
        Ok("finished")
    );
}

#[test]
fn garbage_kill_switch_in_env_warns_and_stays_on() {
    if rerun_in_child(
        "garbage_kill_switch_in_env_warns_and_stays_on",
        &[("OPGUARD_TIMEOUT_DISABLE", "maybe")],
    ) {
        return;
    }
    common::capture_logs();
    assert!(opguard::timeouts::enabled());
    let logs = common::captured_logs();
    assert!(
        logs.iter()
            .any(|l| l.starts_with("WARN OPGUARD_TIMEOUT_DISABLE=\"maybe\" is not a flag")),
        "{logs:?}"
    );
    assert!(block_on(timeout_async!(0.01, pending::<()>())).is_err());
}
