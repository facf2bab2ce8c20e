//! Who may try MPS, and what an attempt's outcome tells each breaker: the
//! call site's (op-level errors) and the process's (device-level errors).
//!
//! A call asks its site first, so that a pinned site goes to CPU without
//! touching the process-wide breaker, and in particular without taking its
//! trial. An outcome only moves the breaker it says something about:
//!
//! | outcome | call site | process |
//! |---|---|---|
//! | worked | success (closes it after a trial) | success (resets the streak, closes it after a trial) |
//! | op-level error | failure: pinned to CPU | no verdict: a trial is handed back |
//! | device-level error | no verdict: a trial is handed back | failure: counts toward disabling MPS |
//!
//! A trial that never runs (the site's, when the process says CPU) is handed
//! back too, so that the next call to ask runs it without another cool-down.
//! These are plain functions over two [`Breaker`]s and a clock, so that the
//! unit tests and the loom model drive them directly.

use super::breaker::{Admit, Breaker, Transition};
use super::classify::MpsErrorKind;

/// A call that may try MPS, and which trials it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Admission {
    pub(crate) site_trial: bool,
    pub(crate) global_trial: bool,
}

impl Admission {
    /// Admitted with neither breaker on trial: the common case.
    pub(crate) const PLAIN: Admission = Admission {
        site_trial: false,
        global_trial: false,
    };
}

/// How an MPS attempt went: the tests' one spelling of [`worked`] and
/// [`failed`].
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No MPS error (a value, an ordinary error, or a panic of another kind).
    Worked,
    /// An MPS error of this kind.
    Failed(MpsErrorKind),
}

/// The transitions an outcome caused, for the report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Transitions {
    pub(crate) site: Option<Transition>,
    pub(crate) global: Option<Transition>,
}

/// May this call try MPS? `None`: straight to CPU.
#[inline]
pub(crate) fn admit(
    global: &Breaker,
    site: &Breaker,
    cooldown: impl Fn() -> u64,
    now: impl Fn() -> u64,
) -> Option<Admission> {
    let site_trial = match site.admit(&cooldown, &now) {
        Admit::Cpu => return None,
        Admit::Mps => false,
        Admit::Trial => true,
    };
    let global_trial = match global.admit(&cooldown, &now) {
        Admit::Cpu => {
            if site_trial {
                site.give_back_trial();
            }
            return None;
        }
        Admit::Mps => false,
        Admit::Trial => true,
    };
    Some(Admission {
        site_trial,
        global_trial,
    })
}

/// What an admitted attempt that did not fail with an MPS error changes:
/// both failure streaks end, and a trial it was re-enables its breaker.
#[inline]
pub(crate) fn worked(global: &Breaker, site: &Breaker, admission: Admission) -> Transitions {
    Transitions {
        site: site.on_success(admission.site_trial),
        global: global.on_success(admission.global_trial),
    }
}

/// What an admitted attempt that failed with an MPS error of `kind` changes:
/// an op-level error counts against the call site (and hands back a process
/// trial it held), a device-level one against the process (and hands back a
/// site trial).
pub(crate) fn failed(
    global: &Breaker,
    site: &Breaker,
    admission: Admission,
    kind: MpsErrorKind,
    now: impl FnOnce() -> u64,
    threshold: u32,
) -> Transitions {
    let Admission {
        site_trial,
        global_trial,
    } = admission;
    match kind {
        MpsErrorKind::Op => {
            if global_trial {
                global.give_back_trial();
            }
            Transitions {
                site: site.on_failure(site_trial, now(), 1),
                global: None,
            }
        }
        _ => {
            if site_trial {
                site.give_back_trial();
            }
            Transitions {
                site: None,
                global: global.on_failure(global_trial, now(), threshold),
            }
        }
    }
}

/// Tells both breakers how an admitted attempt went ([`worked`] or
/// [`failed`]).
#[cfg(test)]
pub(crate) fn settle(
    global: &Breaker,
    site: &Breaker,
    admission: Admission,
    verdict: Verdict,
    now: impl FnOnce() -> u64,
    threshold: u32,
) -> Transitions {
    match verdict {
        Verdict::Worked => worked(global, site, admission),
        Verdict::Failed(kind) => failed(global, site, admission, kind, now, threshold),
    }
}

/// The admitted call never ran (its report panicked): its trials go back,
/// for the next call to take.
pub(crate) fn give_back(global: &Breaker, site: &Breaker, admission: Admission) {
    if admission.site_trial {
        site.give_back_trial();
    }
    if admission.global_trial {
        global.give_back_trial();
    }
}

/// The attempt was dropped before its outcome was known (an async call
/// cancelled): its trials start another cool-down.
pub(crate) fn abandon(global: &Breaker, site: &Breaker, admission: Admission, now: u64) {
    if admission.site_trial {
        site.abandon_trial(now);
    }
    if admission.global_trial {
        global.abandon_trial(now);
    }
}

#[cfg(all(test, not(opguard_loom)))]
mod tests {
    use super::*;
    use crate::mps::breaker::MpsState;

    const COOL: u64 = 10;
    const OP: Verdict = Verdict::Failed(MpsErrorKind::Op);
    const DEVICE: Verdict = Verdict::Failed(MpsErrorKind::Device);
    const PLAIN: Admission = Admission {
        site_trial: false,
        global_trial: false,
    };

    fn at(t: u64) -> impl Fn() -> u64 {
        move || t
    }

    #[test]
    fn an_op_error_pins_the_site_and_leaves_the_process_alone() {
        let (global, site, other) = (Breaker::new(), Breaker::new(), Breaker::new());
        let a = admit(&global, &site, || COOL, at(0)).unwrap();
        let t = settle(&global, &site, a, OP, at(0), 3);
        assert_eq!(t.site, Some(Transition::Disabled { failures: 1 }));
        assert_eq!(t.global, None);
        assert_eq!(admit(&global, &site, || COOL, at(1)), None, "pinned");
        assert_eq!(admit(&global, &other, || COOL, at(1)), Some(PLAIN));
        assert_eq!((global.state(), global.streak()), (MpsState::Enabled, 0));
    }

    #[test]
    fn device_errors_count_for_the_process_and_never_pin_a_site() {
        let (global, site) = (Breaker::new(), Breaker::new());
        for i in 0..2 {
            let a = admit(&global, &site, || COOL, at(i)).unwrap();
            assert_eq!(
                settle(&global, &site, a, DEVICE, at(i), 3),
                Transitions::default()
            );
        }
        let a = admit(&global, &site, || COOL, at(2)).unwrap();
        let t = settle(&global, &site, a, DEVICE, at(2), 3);
        assert_eq!(t.global, Some(Transition::Disabled { failures: 3 }));
        assert_eq!(site.state(), MpsState::Enabled);
        assert_eq!(admit(&global, &site, || COOL, at(3)), None, "MPS disabled");
    }

    #[test]
    fn a_pinned_site_tries_mps_once_after_the_cooldown() {
        let (global, site) = (Breaker::new(), Breaker::new());
        let a = admit(&global, &site, || COOL, at(0)).unwrap();
        settle(&global, &site, a, OP, at(0), 3);
        assert_eq!(admit(&global, &site, || COOL, at(COOL - 1)), None);
        let trial = admit(&global, &site, || COOL, at(COOL)).unwrap();
        assert!(trial.site_trial && !trial.global_trial);
        assert_eq!(admit(&global, &site, || COOL, at(COOL)), None, "one trial");
        // It fails again: pinned for another cool-down.
        let t = settle(&global, &site, trial, OP, at(COOL), 3);
        assert_eq!(t.site, Some(Transition::TrialFailed));
        assert_eq!(admit(&global, &site, || COOL, at(2 * COOL - 1)), None);
        // The next trial works: unpinned.
        let trial = admit(&global, &site, || COOL, at(2 * COOL)).unwrap();
        let t = settle(&global, &site, trial, Verdict::Worked, at(2 * COOL), 3);
        assert_eq!(t.site, Some(Transition::Enabled));
        assert_eq!(admit(&global, &site, || COOL, at(2 * COOL)), Some(PLAIN));
    }

    #[test]
    fn a_site_trial_refused_by_the_process_is_kept_for_later() {
        let (global, site, other) = (Breaker::new(), Breaker::new(), Breaker::new());
        let a = admit(&global, &site, || COOL, at(0)).unwrap();
        settle(&global, &site, a, OP, at(0), 1);
        let a = admit(&global, &other, || COOL, at(0)).unwrap();
        settle(&global, &other, a, DEVICE, at(0), 1);
        assert_eq!(global.state(), MpsState::Disabled);
        // Both cool-downs are over. Another site takes the process trial...
        let a = admit(&global, &other, || COOL, at(COOL)).unwrap();
        assert!(a.global_trial && !a.site_trial);
        // ...so the pinned site goes to CPU, and hands its own trial back.
        assert_eq!(admit(&global, &site, || COOL, at(COOL)), None);
        assert_eq!(site.state(), MpsState::Disabled);
        settle(&global, &other, a, Verdict::Worked, at(COOL), 1);
        // Its trial is there for its next call, with no new cool-down.
        let a = admit(&global, &site, || COOL, at(COOL)).unwrap();
        assert!(a.site_trial && !a.global_trial);
    }

    #[test]
    fn an_op_error_in_the_process_trial_hands_that_trial_back() {
        let (global, site, other) = (Breaker::new(), Breaker::new(), Breaker::new());
        let a = admit(&global, &other, || COOL, at(0)).unwrap();
        settle(&global, &other, a, DEVICE, at(0), 1);
        let trial = admit(&global, &site, || COOL, at(COOL)).unwrap();
        assert!(trial.global_trial);
        settle(&global, &site, trial, OP, at(COOL), 1);
        assert_eq!(global.state(), MpsState::Disabled);
        let next = admit(&global, &other, || COOL, at(COOL)).unwrap();
        assert!(
            next.global_trial,
            "the next call is the process trial at once"
        );
    }

    #[test]
    fn a_device_error_in_a_site_trial_hands_that_trial_back() {
        let (global, site) = (Breaker::new(), Breaker::new());
        let a = admit(&global, &site, || COOL, at(0)).unwrap();
        settle(&global, &site, a, OP, at(0), 3);
        let trial = admit(&global, &site, || COOL, at(COOL)).unwrap();
        settle(&global, &site, trial, DEVICE, at(COOL), 3);
        assert_eq!(global.streak(), 1);
        let next = admit(&global, &site, || COOL, at(COOL)).unwrap();
        assert!(next.site_trial, "the op was not judged: tried again");
    }

    #[test]
    fn abandoned_trials_start_another_cooldown() {
        let (global, site) = (Breaker::new(), Breaker::new());
        let a = admit(&global, &site, || COOL, at(0)).unwrap();
        settle(&global, &site, a, OP, at(0), 1);
        let trial = admit(&global, &site, || COOL, at(COOL)).unwrap();
        abandon(&global, &site, trial, COOL);
        assert_eq!(admit(&global, &site, || COOL, at(2 * COOL - 1)), None);
        assert!(
            admit(&global, &site, || COOL, at(2 * COOL))
                .unwrap()
                .site_trial
        );
    }
}

/// Call sites and the process-wide breaker together, under loom:
///
///     RUSTFLAGS="--cfg opguard_loom" cargo test --release --lib loom
#[cfg(opguard_loom)]
mod loom_tests {
    use super::*;
    use crate::mps::breaker::MpsState;
    use loom::sync::Arc;
    use loom::thread;

    const COOL: u64 = 10;

    fn at(t: u64) -> impl Fn() -> u64 {
        move || t
    }

    /// Two threads fail op-level at one site at once: it is pinned exactly
    /// once, and the process-wide breaker never moves.
    #[test]
    fn loom_racing_op_errors_pin_a_site_once() {
        loom::model(|| {
            let b = Arc::new((Breaker::new(), Breaker::new()));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let b = b.clone();
                    thread::spawn(move || {
                        let (global, site) = (&b.0, &b.1);
                        admit(global, site, || COOL, at(0)).map(|a| {
                            settle(global, site, a, Verdict::Failed(MpsErrorKind::Op), at(0), 1)
                        })
                    })
                })
                .collect();
            let pinned = threads
                .into_iter()
                .filter_map(|t| t.join().unwrap())
                .filter(|t| t.site.is_some())
                .count();
            assert_eq!(pinned, 1);
            assert_eq!(b.1.state(), MpsState::Disabled);
            assert_eq!(b.0.state(), MpsState::Enabled);
        });
    }

    /// A pinned site and a disabled process, both past their cool-downs; a
    /// caller at the site and a caller elsewhere race. Whatever the
    /// interleaving, no trial is lost: once both have reported success, the
    /// site and the process are both enabled, or a trial is still there for
    /// the next caller to take.
    #[test]
    fn loom_site_and_process_trials_are_never_lost() {
        loom::model(|| {
            let b = Arc::new((Breaker::new(), Breaker::new(), Breaker::new()));
            // Pin the site (op) and disable the process (device), at time 0.
            b.1.on_failure(false, 0, 1);
            b.0.on_failure(false, 0, 1);
            let racer = |which: usize| {
                let b = b.clone();
                thread::spawn(move || {
                    let (global, site) = (&b.0, if which == 1 { &b.1 } else { &b.2 });
                    if let Some(a) = admit(global, site, || COOL, at(COOL)) {
                        settle(global, site, a, Verdict::Worked, at(COOL), 1);
                    }
                })
            };
            let (t1, t2) = (racer(1), racer(2));
            t1.join().unwrap();
            t2.join().unwrap();
            // One of them held the process trial and settled it.
            assert_eq!(b.0.state(), MpsState::Enabled);
            // The site is enabled, or its trial was handed back for its next call.
            assert_ne!(b.1.state(), MpsState::Probing);
            if let Some(a) = admit(&b.0, &b.1, || COOL, at(COOL)) {
                settle(&b.0, &b.1, a, Verdict::Worked, at(COOL), 1);
            }
            assert_eq!(b.1.state(), MpsState::Enabled);
        });
    }
}
