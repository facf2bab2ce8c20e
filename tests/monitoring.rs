//! Logging, counters and alerts around timeouts. These share process-wide
//! state, so each test holds `SERIAL` and uses labels of its own.

mod common;

use std::future::pending;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::executor::block_on;
use opguard::alert::{self, Alert, AlertKind, AlertPolicy};
use opguard::{testing, timeout_async, timeouts};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn every_timeout_is_logged_at_warn_with_label_duration_and_site() {
    let _g = serial();
    common::capture_logs();
    let err = block_on(timeout_async!(label = "logged_op", 0.01, pending::<()>())).unwrap_err();
    let line = format!(
        "WARN '{}' timed out after 10ms at {}:{}:{}",
        "logged_op",
        err.file(),
        err.line(),
        err.column()
    );
    assert!(
        common::captured_logs().contains(&line),
        "no `{line}` in {:?}",
        common::captured_logs()
    );
    assert_eq!(err.file(), "tests/monitoring.rs");
}

#[test]
fn timeouts_are_counted_per_label_and_in_total() {
    let _g = serial();
    let before = timeouts::stats();
    for _ in 0..3 {
        let _ = block_on(timeout_async!(label = "counted_op", 0.001, pending::<()>()));
    }
    // A future that finishes is not a timeout.
    let _ = block_on(timeout_async!(label = "counted_op", 5, async {}));
    let after = timeouts::stats();
    assert_eq!(
        after.timeouts_labelled("counted_op"),
        before.timeouts_labelled("counted_op") + 3
    );
    assert!(after.timeouts >= before.timeouts + 3);
    let sum: u64 = after.sites.iter().map(|s| s.timeouts).sum();
    assert_eq!(after.timeouts, sum, "the total is the sites' sum");
    let site = after
        .sites
        .iter()
        .find(|s| s.label == Some("counted_op"))
        .unwrap();
    assert_eq!(site.file, "tests/monitoring.rs");
}

#[test]
fn invalid_timeouts_are_counted_apart() {
    let _g = serial();
    let before = timeouts::stats();
    let _ = block_on(timeout_async!(-2, async {}));
    let after = timeouts::stats();
    assert_eq!(after.invalid, before.invalid + 1);
    assert_eq!(after.timeouts, before.timeouts, "counted as a timeout too");
}

#[test]
fn reset_sets_every_counter_to_zero() {
    let _g = serial();
    let _ = block_on(timeout_async!(label = "reset_op", 0.001, pending::<()>()));
    assert!(timeouts::stats().timeouts_labelled("reset_op") >= 1);
    testing::reset_timeouts();
    let now = timeouts::stats();
    assert_eq!((now.timeouts, now.invalid), (0, 0));
    assert!(now.sites.is_empty(), "{:?}", now.sites);
}

#[test]
fn an_alert_fires_once_when_timeouts_exceed_the_threshold_in_a_window() {
    let _g = serial();
    common::capture_logs();
    let seen: Arc<Mutex<Vec<Alert>>> = Arc::default();
    let sink = seen.clone();
    alert::set_policy(
        AlertKind::Timeouts,
        AlertPolicy::new(2, Duration::from_secs(3600)),
    );
    alert::set_hook(move |a| sink.lock().unwrap().push(a.clone()));
    for _ in 0..5 {
        let _ = block_on(timeout_async!(
            label = "alerting_op",
            0.001,
            pending::<()>()
        ));
    }
    alert::clear_hook();
    alert::set_policy(AlertKind::Timeouts, AlertPolicy::DEFAULT);

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (seen[0].kind, seen[0].count, seen[0].label),
        (AlertKind::Timeouts, 3, Some("alerting_op"))
    );
    assert!(seen[0].site.starts_with("tests/monitoring.rs:"));
    let logs = common::captured_logs();
    assert!(
        logs.iter().any(|l| l.starts_with("ERROR alert: 3 timeouts within 3600s (threshold 2); the last was 'alerting_op' at tests/monitoring.rs:")),
        "{logs:?}"
    );
}

#[test]
fn no_alert_below_the_threshold() {
    let _g = serial();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    alert::set_policy(
        AlertKind::Timeouts,
        AlertPolicy::new(3, Duration::from_secs(3600)),
    );
    alert::set_hook(move |_| {
        c.fetch_add(1, SeqCst);
    });
    for _ in 0..3 {
        let _ = block_on(timeout_async!(0.001, pending::<()>()));
    }
    alert::clear_hook();
    alert::set_policy(AlertKind::Timeouts, AlertPolicy::DEFAULT);
    assert_eq!(calls.load(SeqCst), 0);
}

#[test]
fn timeout_error_converts_to_io_error_timed_out() {
    let _g = serial();
    let err = block_on(timeout_async!(0.001, pending::<()>())).unwrap_err();
    let io = std::io::Error::from(err.clone());
    assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
    assert_eq!(io.to_string(), err.to_string());
    let bad = block_on(timeout_async!(f32::NAN, async {})).unwrap_err();
    assert_eq!(
        std::io::Error::from(bad).kind(),
        std::io::ErrorKind::InvalidInput
    );
}

#[test]
fn timeout_error_is_a_send_sync_static_error() {
    let _g = serial();
    fn is_error<E: std::error::Error + Send + Sync + 'static>(_: &E) {}
    let err = block_on(timeout_async!(0.001, pending::<()>())).unwrap_err();
    is_error(&err);
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(err);
    assert!(
        boxed
            .to_string()
            .starts_with("future timed out after 1ms at tests/monitoring.rs:")
    );
}
