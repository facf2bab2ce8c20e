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
//!   `outcome` = `ok`, `failed`, or `abandoned` (dropped before they ended).
//! - `opguard_mps_site_pinned` (gauge): 1 while op-level MPS errors keep the
//!   call site on CPU, 0 once it uses MPS again.

use std::fmt::Display;

use metrics::{Key, Label, Level, Metadata};

use crate::mps::MpsErrorKind;
use crate::mps::site::MpsSite;
use crate::site::Site;

/// What the metrics of one `safe_mps!` call site need, made once per site:
/// its name, and the key of its attempts counter, which nearly every call
/// records. `metrics::counter!` with labels that are not literals builds its
/// key at each call (a `Vec` of labels allocated, hashed and freed); the
/// attempts key is built and hashed here once, and only the recorder's own
/// lookup is left per call. Every call still asks for the recorder in force
/// (a thread-local one, or one installed later, sees it).
pub(crate) struct SiteKeys {
    name: &'static str,
    attempts: Key,
}

impl SiteKeys {
    pub(crate) fn new(label: Option<&'static str>, at: &impl Display) -> SiteKeys {
        let name: &'static str = Box::leak(at.to_string().into_boxed_str());
        let labels: &'static [Label] = Box::leak(Box::new([
            Label::from_static_parts("label", label.unwrap_or("")),
            Label::from_static_parts("site", name),
        ]));
        SiteKeys {
            name,
            attempts: Key::from_static_parts("opguard_mps_attempts_total", labels),
        }
    }
}

/// What `metrics::counter!` gives its recorder: this module as target.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The key of a `timeout_async!` call site's counter, made once per site
/// ([`Site::timeouts_key`]), as [`SiteKeys`] are: a burst of timeouts that
/// fire (an overloaded server's) then builds no key per timeout, as
/// `metrics::counter!` would, and its labels are static, so a recorder that
/// keeps a copy of the key copies no labels.
pub(crate) fn timeouts_key(label: Option<&'static str>) -> Key {
    let labels: &'static [Label] = Box::leak(Box::new([Label::from_static_parts(
        "label",
        label.unwrap_or(""),
    )]));
    Key::from_static_parts("opguard_timeouts_total", labels)
}

pub(crate) fn timeout(site: &'static Site) {
    let key = site.timeouts_key();
    metrics::with_recorder(|recorder| recorder.register_counter(key, &METADATA)).increment(1);
}

pub(crate) fn mps_attempt(site: &'static MpsSite) {
    let key = &site.keys().attempts;
    metrics::with_recorder(|recorder| recorder.register_counter(key, &METADATA)).increment(1);
}

pub(crate) fn mps_error(site: &'static MpsSite, kind: MpsErrorKind) {
    let kind = match kind {
        MpsErrorKind::Op => "op",
        _ => "device",
    };
    metrics::counter!(
        "opguard_mps_errors_total",
        "label" => site.label().unwrap_or(""),
        "site" => site.keys().name,
        "kind" => kind
    )
    .increment(1);
}

pub(crate) fn fallback(site: &'static MpsSite, ok: bool) {
    fallback_outcome(site, if ok { "ok" } else { "failed" });
}

pub(crate) fn fallback_abandoned(site: &'static MpsSite) {
    fallback_outcome(site, "abandoned");
}

fn fallback_outcome(site: &'static MpsSite, outcome: &'static str) {
    metrics::counter!(
        "opguard_mps_fallbacks_total",
        "label" => site.label().unwrap_or(""),
        "site" => site.keys().name,
        "outcome" => outcome
    )
    .increment(1);
}

pub(crate) fn site_pinned(site: &'static MpsSite, pinned: bool) {
    metrics::gauge!(
        "opguard_mps_site_pinned",
        "label" => site.label().unwrap_or(""),
        "site" => site.keys().name
    )
    .set(if pinned { 1.0 } else { 0.0 });
}
