//! The `metrics` feature: the same counters, through the `metrics` crate facade.
//!
//! Every metric has a `label` label (empty when the call had none); the MPS
//! ones also have `site` (`file:line:column` of the `safe_mps!` call).
//!
//! - `opguard_timeouts_total`: timeouts that fired.
//! - `opguard_mps_attempts_total`: `safe_mps!` calls that tried MPS.
//! - `opguard_mps_errors_total`: MPS attempts that failed, with `kind` = `op`
//!   or `device`.
//! - `opguard_mps_fallbacks_total`: CPU retries after an MPS error, with
//!   `outcome` = `ok` or `failed`.
//! - `opguard_mps_site_pinned` (gauge): 1 while op-level MPS errors keep the
//!   call site on CPU, 0 once it uses MPS again.

use crate::mps::MpsErrorKind;
use crate::mps::site::MpsSite;

pub(crate) fn timeout(label: Option<&'static str>) {
    metrics::counter!("opguard_timeouts_total", "label" => label.unwrap_or("")).increment(1);
}

pub(crate) fn mps_attempt(site: &'static MpsSite) {
    metrics::counter!(
        "opguard_mps_attempts_total",
        "label" => site.label().unwrap_or(""),
        "site" => site.name()
    )
    .increment(1);
}

pub(crate) fn mps_error(site: &'static MpsSite, kind: MpsErrorKind) {
    let kind = match kind {
        MpsErrorKind::Op => "op",
        _ => "device",
    };
    metrics::counter!(
        "opguard_mps_errors_total",
        "label" => site.label().unwrap_or(""),
        "site" => site.name(),
        "kind" => kind
    )
    .increment(1);
}

pub(crate) fn fallback(site: &'static MpsSite, ok: bool) {
    let outcome = if ok { "ok" } else { "failed" };
    metrics::counter!(
        "opguard_mps_fallbacks_total",
        "label" => site.label().unwrap_or(""),
        "site" => site.name(),
        "outcome" => outcome
    )
    .increment(1);
}

pub(crate) fn site_pinned(site: &'static MpsSite, pinned: bool) {
    metrics::gauge!(
        "opguard_mps_site_pinned",
        "label" => site.label().unwrap_or(""),
        "site" => site.name()
    )
    .set(if pinned { 1.0 } else { 0.0 });
}
