//! A fallback that `safe_mps!` handles prints nothing through the panic
//! hook: no "thread ... panicked at", no C++ backtrace, no Rust backtrace
//! under `RUST_BACKTRACE=1`. Every other panic still reaches the hooks the
//! program installed, before or after opguard's. Checked on the stderr of a
//! child process, with real tch panics.
#![cfg(feature = "tch")]

mod common;

use std::io::Write;
use std::panic::{self, AssertUnwindSafe, catch_unwind};

use opguard::{mps, safe_mps};
use tch::{Device, Kind, Tensor};

/// Marks the start of each part of the child's run on stderr.
fn part(n: u32) {
    eprintln!("=== part {n}");
    std::io::stderr().flush().unwrap();
}

/// A hook that names itself and the panic's first line, then calls the one before it.
fn chaining_hook(name: &'static str) {
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        let text = info.payload_as_str().unwrap_or("?");
        eprintln!("{name} saw: {}", text.lines().next().unwrap_or(""));
        previous(info);
    }));
}

/// A plain tch method on MPS, which panics here with PyTorch's MPS error.
fn sum_on(dev: Device) -> f64 {
    (Tensor::ones([3], (Kind::Float, dev)) * 2)
        .sum(Kind::Float)
        .double_value(&[])
}

#[test]
fn handled_mps_panics_are_quiet_and_other_panics_reach_every_hook() {
    let Some(out) = common::child_output(
        "handled_mps_panics_are_quiet_and_other_panics_reach_every_hook",
        &[("RUST_BACKTRACE", "1")],
    ) else {
        return child();
    };
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "the child failed:\n{stderr}");
    let parts: Vec<&str> = stderr.split("=== part ").collect();
    assert_eq!(parts.len(), 7, "{stderr}");
    let part = |n: usize| {
        let p = parts[n];
        assert!(p.starts_with(&n.to_string()), "{stderr}");
        p
    };

    // 1: a handled MPS panic, with a hook installed before opguard's: silence.
    let p = part(1);
    assert!(!p.contains("panicked"), "{p}");
    assert!(!p.contains("saw"), "{p}");
    assert!(
        !p.contains("Exception raised from") && !p.contains("stack backtrace"),
        "{p}"
    );
    // 2: an ordinary panic reaches that hook and the default one, backtrace and all.
    let p = part(2);
    assert!(p.contains("early hook saw: ordinary panic one"), "{p}");
    assert!(
        p.contains("panicked at") && p.contains("ordinary panic one"),
        "{p}"
    );
    assert!(p.contains("stack backtrace"), "{p}");
    // 3: an MPS panic that nothing handles (kill switch off) is printed.
    let p = part(3);
    assert!(
        p.contains("early hook saw:") && p.contains("'MPS' backend"),
        "{p}"
    );
    assert!(p.contains("panicked at"), "{p}");
    // 4: a hook set after opguard's, that does not chain, replaces it: the
    // first handled MPS panic reaches it once, then opguard's is in front again.
    let p = part(4);
    assert_eq!(p.matches("late hook saw:").count(), 1, "{p}");
    assert!(!p.contains("panicked at"), "{p}");
    // 5: handled MPS panics are quiet again, async ones too.
    let p = part(5);
    assert!(!p.contains("saw") && !p.contains("panicked"), "{p}");
    // 6: ordinary panics reach the late hook, unchanged.
    let p = part(6);
    assert!(p.contains("late hook saw: ordinary panic two"), "{p}");
}

/// The child's run: prints each part's marker, then does that part.
fn child() {
    // Keep MPS enabled, so that every part below really falls back.
    mps::set_failure_threshold(1000);
    chaining_hook("early hook");

    part(1);
    let v = safe_mps!(label = "quiet", device = Device::Mps, |dev| sum_on(dev));
    assert_eq!(v, 6.0);
    assert_eq!(mps::stats().fallbacks, 1);

    part(2);
    let caught = catch_unwind(|| panic!("ordinary panic one"));
    assert!(caught.is_err());

    part(3);
    mps::set_enabled(false);
    let caught = catch_unwind(|| safe_mps!(device = Device::Mps, |dev| sum_on(dev)));
    assert!(caught.is_err());
    mps::set_enabled(true);

    part(4);
    panic::set_hook(Box::new(|info| {
        let text = info.payload_as_str().unwrap_or("?");
        eprintln!("late hook saw: {}", text.lines().next().unwrap_or(""));
    }));
    for _ in 0..2 {
        let v = safe_mps!(device = Device::Mps, |dev| sum_on(dev));
        assert_eq!(v, 6.0);
    }

    part(5);
    let v = safe_mps!(device = Device::Mps, |dev| sum_on(dev));
    assert_eq!(v, 6.0);
    let v = futures::executor::block_on(safe_mps!(device = Device::Mps, async |dev| sum_on(dev)));
    assert_eq!(v, 6.0);
    assert_eq!(mps::stats().fallbacks, 5, "parts 1, 4 and 5 all fell back");

    part(6);
    let caught = catch_unwind(AssertUnwindSafe(|| panic!("ordinary panic two")));
    assert!(caught.is_err());
}
