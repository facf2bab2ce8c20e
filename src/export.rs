//! The `metrics` feature: the same counters, through the `metrics` crate facade.
//!
//! Counters (each with a `label` label, empty when the call had none):
//! - `opguard_timeouts_total`: timeouts that fired.

pub(crate) fn timeout(label: Option<&'static str>) {
    metrics::counter!("opguard_timeouts_total", "label" => label.unwrap_or("")).increment(1);
}

/// - `opguard_mps_fallbacks_total`: CPU retries after an MPS error, with
///   `outcome` = `ok` or `failed`.
pub(crate) fn fallback(label: Option<&'static str>, ok: bool) {
    let outcome = if ok { "ok" } else { "failed" };
    metrics::counter!(
        "opguard_mps_fallbacks_total",
        "label" => label.unwrap_or(""),
        "outcome" => outcome
    )
    .increment(1);
}
