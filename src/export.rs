//! The `metrics` feature: the same counters, through the `metrics` crate facade.
//!
//! Counters (each with a `label` label, empty when the call had none):
//! - `opguard_timeouts_total`: timeouts that fired.

pub(crate) fn timeout(label: Option<&'static str>) {
    metrics::counter!("opguard_timeouts_total", "label" => label.unwrap_or("")).increment(1);
}
