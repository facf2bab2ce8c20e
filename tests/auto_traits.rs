//! The crate's types have the auto traits users rely on (`Send` and `Sync`
//! for multi-thread runtimes, `Unpin`, `UnwindSafe` and `RefUnwindSafe` for
//! `catch_unwind`), with every feature: a feature adds to the crate and
//! never takes a trait away, so code that compiles with one set of features
//! compiles with more. These are checked when the tests compile (the suite
//! compiles them with no feature and with all).

use std::future::Ready;
use std::panic::{RefUnwindSafe, UnwindSafe};

fn all_auto_traits<T: Send + Sync + Unpin + UnwindSafe + RefUnwindSafe>() {}

#[test]
fn a_timeout_has_its_futures_auto_traits_with_every_feature() {
    all_auto_traits::<opguard::Timeout<Ready<u8>>>();
    all_auto_traits::<opguard::TimeoutError>();
    all_auto_traits::<opguard::InvalidTimeout>();
}

#[test]
fn counters_and_alerts_can_be_sent_shared_and_kept_across_a_panic() {
    all_auto_traits::<opguard::timeouts::TimeoutStats>();
    all_auto_traits::<opguard::timeouts::TimeoutSiteStats>();
    all_auto_traits::<opguard::alert::Alert>();
    all_auto_traits::<opguard::alert::AlertPolicy>();
    all_auto_traits::<opguard::alert::AlertKind>();
}

#[cfg(feature = "test-util")]
#[test]
fn a_test_clock_and_a_future_bound_to_it_can_be_sent_shared_and_kept_across_a_panic() {
    all_auto_traits::<opguard::test_clock::TestClock>();
    all_auto_traits::<opguard::test_clock::Bound<Ready<u8>>>();
}

#[cfg(feature = "tch")]
#[test]
fn the_mps_counters_can_be_sent_shared_and_kept_across_a_panic() {
    all_auto_traits::<opguard::mps::MpsStats>();
    all_auto_traits::<opguard::mps::MpsSiteStats>();
    all_auto_traits::<opguard::mps::MpsState>();
    all_auto_traits::<opguard::mps::MpsErrorKind>();
}
