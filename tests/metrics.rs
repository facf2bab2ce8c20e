//! The `metrics` feature records the same counters through the `metrics` facade.
#![cfg(feature = "metrics")]

mod common;

use futures::executor::block_on;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
#[cfg(feature = "tch")]
use metrics_util::{CompositeKey, MetricKind};

#[test]
fn timeouts_are_recorded_with_their_label() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        for _ in 0..2 {
            let _ = block_on(opguard::timeout_async!(
                label = "metered",
                0.001,
                std::future::pending::<()>()
            ));
        }
        let _ = block_on(opguard::timeout_async!(label = "metered", 1, async {}));
    });
    assert_eq!(
        common::timeouts_total(&snapshotter, "metered"),
        DebugValue::Counter(2)
    );
}

/// MPS attempts, errors by kind, fallbacks and pinned sites, per call site.
#[cfg(feature = "tch")]
#[test]
fn mps_events_are_recorded_per_site_and_kind() {
    use metrics::{Key, Label};
    use opguard::safe_mps;
    use tch::{Device, Kind, TchError, Tensor};

    const OP: &str =
        "The operator 'aten::_fft_r2c' is not currently implemented for the MPS device.";
    opguard::mps::set_failure_threshold(100);
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (op_line, device_line) = (line!() + 4, line!() + 11);
    metrics::with_local_recorder(&recorder, || {
        for _ in 0..3 {
            // Pinned after its first op-level error: one attempt in all.
            let _ = safe_mps!(label = "fft", device = Device::Mps, |dev| match dev {
                Device::Mps => Err(TchError::Torch(OP.into())),
                _ => Tensor::f_ones([2], (Kind::Float, dev)),
            });
        }
        for _ in 0..2 {
            // A real device-level error each time.
            let _ = safe_mps!(label = "alloc", device = Device::Mps, |dev| {
                Tensor::f_ones([2], (Kind::Float, dev))
            });
        }
    });
    let snapshot = snapshotter.snapshot().into_hashmap();
    let value = |kind, name: &'static str, labels: Vec<Label>| {
        let key = CompositeKey::new(kind, Key::from_parts(name, labels));
        snapshot
            .get(&key)
            .map(|(_, _, v)| v)
            .unwrap_or_else(|| panic!("{name} not recorded: {:?}", snapshot.keys()))
    };
    let site = |label: &'static str, line: u32| {
        vec![
            Label::new("label", label),
            Label::new("site", format!("tests/metrics.rs:{line}:21")),
        ]
    };
    let with = |mut labels: Vec<Label>, k: &'static str, v: &'static str| {
        labels.push(Label::new(k, v));
        labels
    };
    let counter = MetricKind::Counter;
    assert_eq!(
        value(counter, "opguard_mps_attempts_total", site("fft", op_line)),
        &DebugValue::Counter(1)
    );
    assert_eq!(
        value(
            counter,
            "opguard_mps_errors_total",
            with(site("fft", op_line), "kind", "op")
        ),
        &DebugValue::Counter(1)
    );
    assert_eq!(
        value(
            counter,
            "opguard_mps_fallbacks_total",
            with(site("fft", op_line), "outcome", "ok")
        ),
        &DebugValue::Counter(1)
    );
    assert_eq!(
        value(
            MetricKind::Gauge,
            "opguard_mps_site_pinned",
            site("fft", op_line)
        ),
        &DebugValue::Gauge(1.0.into())
    );
    assert_eq!(
        value(
            counter,
            "opguard_mps_errors_total",
            with(site("alloc", device_line), "kind", "device")
        ),
        &DebugValue::Counter(2)
    );
    assert_eq!(
        value(
            counter,
            "opguard_mps_attempts_total",
            site("alloc", device_line)
        ),
        &DebugValue::Counter(2)
    );
}

/// A CPU retry dropped before it ends (a timeout around the work, say) is
/// recorded as abandoned.
#[cfg(feature = "tch")]
#[test]
fn an_abandoned_cpu_retry_is_recorded_as_such() {
    use opguard::safe_mps;
    use std::future::Future;
    use std::task::Context;
    use tch::{Device, Kind, TchError, Tensor};

    opguard::mps::set_failure_threshold(100);
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let mut cut = Box::pin(safe_mps!(
            label = "cut_short",
            device = Device::Mps,
            async |dev| {
                // PyTorch's real error on MPS; on CPU, a retry that never ends.
                let t = Tensor::f_ones([2], (Kind::Float, dev))?;
                std::future::pending::<()>().await;
                Ok::<_, TchError>(t)
            }
        ));
        let waker = futures::task::noop_waker();
        assert!(
            cut.as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        drop(cut);
    });
    let recorded: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| {
            let labels: Vec<_> = key.key().labels().map(|l| (l.key(), l.value())).collect();
            key.key().name() == "opguard_mps_fallbacks_total"
                && labels.contains(&("label", "cut_short"))
        })
        .map(|(key, _, _, value)| {
            let outcome = key
                .key()
                .labels()
                .find(|l| l.key() == "outcome")
                .map(|l| l.value().to_string());
            (outcome, value)
        })
        .collect();
    assert_eq!(
        recorded,
        [(Some("abandoned".to_string()), DebugValue::Counter(1))]
    );
}

/// Each call asks for the recorder in force: a call site's attempts reach
/// a recorder that came after its first calls, and one that is gone no more.
#[cfg(feature = "tch")]
#[test]
fn a_call_sites_attempts_reach_the_recorder_in_force_at_each_call() {
    use metrics::{Key, Label};
    use opguard::safe_mps;
    use tch::{Device, TchError};

    fn admitted(dev: Device) -> Result<Device, TchError> {
        Ok(dev)
    }
    let line = line!() + 2;
    let call = || {
        safe_mps!(label = "late_recorder", device = Device::Mps, |dev| {
            admitted(dev)
        })
    };
    let attempts = |recorder: &DebuggingRecorder| {
        let key = CompositeKey::new(
            MetricKind::Counter,
            Key::from_parts(
                "opguard_mps_attempts_total",
                vec![
                    Label::new("label", "late_recorder"),
                    Label::new("site", format!("tests/metrics.rs:{line}:9")),
                ],
            ),
        );
        let snapshot = recorder.snapshotter().snapshot().into_hashmap();
        match snapshot.get(&key) {
            Some((_, _, DebugValue::Counter(n))) => *n,
            other => panic!("{other:?}"),
        }
    };
    call().unwrap(); // no recorder yet
    let first = DebuggingRecorder::new();
    metrics::with_local_recorder(&first, || {
        call().unwrap();
        call().unwrap();
    });
    call().unwrap(); // the first recorder is no longer in force
    let second = DebuggingRecorder::new();
    metrics::with_local_recorder(&second, || call().unwrap());
    assert_eq!((attempts(&first), attempts(&second)), (2, 1));
}

/// A recorder that panics when asked for the MPS attempts counter: user
/// code, run as a call is admitted to MPS.
#[cfg(feature = "tch")]
struct PanicsOnAttempts;

#[cfg(feature = "tch")]
impl metrics::Recorder for PanicsOnAttempts {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        if key.name() == "opguard_mps_attempts_total" {
            panic!("the recorder failed");
        }
        metrics::Counter::noop()
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

/// MPS is disabled (threshold 1, no cool-down), and the next call is
/// admitted as its trial; the recorder panics as that attempt is recorded,
/// before the work runs. The trial must not stay taken: the call after it
/// tries MPS again. (It was lost, and MPS stayed "probing", on CPU, for the
/// life of the process.) In a child process: the registry is the process's.
#[cfg(feature = "tch")]
#[test]
fn a_recorder_that_panics_on_a_trials_attempt_does_not_keep_mps_off_for_good() {
    use opguard::{mps, safe_mps};
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use tch::{Device, Kind, Tensor};
    const NAME: &str = "a_recorder_that_panics_on_a_trials_attempt_does_not_keep_mps_off_for_good";
    if common::child_passes(NAME, &[], "tried again") {
        return;
    }
    mps::set_failure_threshold(1);
    mps::set_cooldown(0).unwrap();
    let xs = Tensor::ones([2], (Kind::Float, Device::Cpu));
    let call = || {
        let _ = safe_mps!(label = "trial", device = Device::Mps, |dev| xs
            .f_to_device(dev));
    };
    // A real device-level error: MPS disabled.
    call();
    assert_eq!(mps::stats().state, mps::MpsState::Disabled);
    // The trial's attempt meets the panicking recorder.
    let out = catch_unwind(AssertUnwindSafe(|| {
        metrics::with_local_recorder(&PanicsOnAttempts, call)
    }));
    assert!(out.is_err(), "the recorder's panic comes out");
    assert_eq!(
        mps::stats().state,
        mps::MpsState::Disabled,
        "the trial stayed taken"
    );
    // The next call is the trial, and tries MPS.
    call();
    assert_eq!(mps::stats().mps_attempts, 3, "MPS was not tried again");
    println!("tried again");
}
