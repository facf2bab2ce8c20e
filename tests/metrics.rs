//! The `metrics` feature records the same counters through the `metrics` facade.
#![cfg(feature = "metrics")]

use futures::executor::block_on;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
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
    let key = CompositeKey::new(
        MetricKind::Counter,
        metrics::Key::from_parts(
            "opguard_timeouts_total",
            vec![metrics::Label::new("label", "metered")],
        ),
    );
    let snapshot = snapshotter.snapshot().into_hashmap();
    let (_, _, value) = snapshot.get(&key).expect("the counter was recorded");
    assert_eq!(value, &DebugValue::Counter(2));
}
