//! The steps of one `safe_mps!` call, in order: decide where the work runs,
//! run it, judge the outcome, move the named values, retry once on CPU,
//! report.
//!
//! [`Driver`] is that order as a plain state machine. The macro's expansion
//! is one loop ([`__opguard_drive!`](crate::__opguard_drive)) that asks the
//! driver what to do next ([`Action`]): probe the named values, move them to
//! CPU, or run the body on a device; it reports back, and the driver decides
//! the rest. So the user's body is expanded once, every decision lives here,
//! and the unit tests below drive the same loop with a fake device, a fake
//! tensor and a fake body through every path.
//!
//! Why a loop and not a function that takes the work as a closure: the async
//! form would need an async closure passed to a generic `async fn`, and
//! rustc cannot yet prove such a future `Send` when the closure borrows
//! (rust-lang/rust#100013), so `tokio::spawn` would refuse every async
//! `safe_mps!` that names a tensor. In a loop written out in the caller's
//! async block, the borrows are plain `&mut` and the future is `Send`
//! whenever the named values are.
//!
//! Nothing here needs `tch`: the device is any [`Dev`], which the `tch`
//! feature implements for `tch::Device`.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use super::classify::{MpsErrorKind, mps_error_kind, panic_message};
use super::gate::Admission;
use super::quiet::{self, Payload};
use super::registry;
use super::site::MpsSite;

/// A device, as `safe_mps!` needs to know it.
pub trait Dev: Copy {
    /// The CPU.
    fn cpu() -> Self;
    /// Whether this is Apple's MPS.
    fn is_mps(self) -> bool;
    /// Where work runs when the call names no device: MPS where the machine
    /// has it, else CPU.
    fn preferred() -> Self;
}

/// What the loop does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action<D> {
    /// Tell [`Driver::probed`] whether any named value is on MPS.
    Probe,
    /// Move every named value to CPU, then call [`Driver::moved`].
    MoveToCpu,
    /// Run the body with `dev` = this device, through [`Driver::attempt`] (or
    /// `attempt_async` with [`Driver::mode`]), then call [`Driver::ran`].
    Run(D),
}

/// How a run is wrapped: what happens to its panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Run once, nothing caught: errors and panics go on as they are.
    Once,
    /// The guarded first attempt: its panic is caught and judged, and a
    /// handled MPS panic reaches no panic hook.
    First,
    /// The CPU retry: its panic is caught (and goes on after it is counted),
    /// and `safe_mps!` calls inside it run once on CPU.
    Retry,
}

thread_local! {
    /// Set while a CPU retry runs on this thread: nested calls never fall back.
    static IN_FALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as running a CPU retry until dropped.
struct FallbackScope(bool);

impl FallbackScope {
    fn enter() -> Self {
        FallbackScope(IN_FALLBACK.replace(true))
    }
}

impl Drop for FallbackScope {
    fn drop(&mut self) {
        IN_FALLBACK.set(self.0);
    }
}

/// Where the call stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Asking whether a named value is on MPS.
    Probe,
    /// Moving the named values to CPU, then running once.
    MoveThenOnce,
    /// Running once, nothing judged.
    Once,
    /// The guarded first attempt.
    First,
    /// The first attempt failed with an MPS error: moving, then retrying.
    MoveThenRetry,
    /// The CPU retry.
    Retry,
    /// The value has been handed out.
    Done,
}

/// One `safe_mps!` call: the order of its steps, as a state machine that the
/// macro's loop drives.
#[derive(Debug)]
pub struct Driver<D> {
    site: &'static MpsSite,
    stage: Stage,
    /// The device of the coming run (the retry's is always CPU).
    device: D,
    /// Until the first attempt's outcome is reported.
    admission: Option<Admission>,
    /// Whether the call names values to probe and move.
    named: bool,
}

impl<D: Dev> Driver<D> {
    /// A call at `site`; `forced` is the `device = ..` argument, and `named`
    /// says whether the call names values to move (the tensor form).
    #[inline(always)]
    pub fn new(site: &'static MpsSite, forced: Option<D>, named: bool) -> Self {
        let device = forced.unwrap_or_else(D::preferred);
        // Each case builds the driver whole (no field set afterwards), so
        // that it is made in place, in the caller.
        let (stage, device, admission) = if !registry::enabled() {
            // Once on the preferred device.
            (Stage::Once, device, None)
        } else if IN_FALLBACK.get() {
            (Self::on_cpu(named), D::cpu(), None)
        } else if device.is_mps() && registry::admit_calm(site) {
            // All is well: MPS, with no trial (decided by loads alone, in
            // the caller: the common case on a machine with MPS).
            (Stage::First, device, Some(Admission::PLAIN))
        } else if device.is_mps() || registry::injection_pending() {
            return Self::admitting(site, device, named);
        } else if named {
            (Stage::Probe, device, None)
        } else {
            (Stage::Once, device, None)
        };
        Driver {
            site,
            stage,
            device,
            admission,
            named,
        }
    }

    /// A call whose work touches MPS, when the registry has more to say
    /// than "go ahead": trials, a pinned site, MPS disabled, injection.
    #[inline(never)]
    fn admitting(site: &'static MpsSite, device: D, named: bool) -> Self {
        // Straight to CPU, the usual answer here, builds the driver whole,
        // in the caller's place for it (see `new`).
        let Some(admission) = registry::admit(site) else {
            return Driver {
                site,
                stage: Self::on_cpu(named),
                device: D::cpu(),
                admission: None,
                named,
            };
        };
        let mut driver = Driver {
            site,
            stage: Stage::First,
            device,
            admission: Some(admission),
            named,
        };
        driver.admitted();
        driver
    }

    /// The stage of a call sent straight to CPU: the named values first.
    #[inline]
    fn on_cpu(named: bool) -> Stage {
        if named {
            Stage::MoveThenOnce
        } else {
            Stage::Once
        }
    }

    /// Straight to CPU: the named values first, if any.
    #[inline]
    fn once_on_cpu(&mut self) {
        self.device = D::cpu();
        self.stage = Self::on_cpu(self.named);
    }

    /// Work that touches MPS: ask the registry.
    #[inline]
    fn admit(&mut self) {
        let Some(admission) = registry::admit(self.site) else {
            self.once_on_cpu();
            return;
        };
        self.admission = Some(admission);
        self.stage = Stage::First;
        self.admitted();
    }

    /// Admitted to MPS: the first attempt comes, unless an injected failure
    /// stands for it.
    #[inline]
    fn admitted(&mut self) {
        if registry::take_injected() {
            self.failed(MpsErrorKind::Device, registry::INJECTED_MESSAGE);
        }
    }

    /// What to do next.
    #[inline]
    pub fn next(&self) -> Action<D> {
        match self.stage {
            Stage::Probe => Action::Probe,
            Stage::MoveThenOnce | Stage::MoveThenRetry => Action::MoveToCpu,
            Stage::Once | Stage::First => Action::Run(self.device),
            Stage::Retry => Action::Run(D::cpu()),
            Stage::Done => unreachable!("opguard: a finished safe_mps! call was driven on"),
        }
    }

    /// The answer to [`Action::Probe`].
    #[inline]
    pub fn probed(&mut self, on_mps: bool) {
        if self.stage == Stage::Probe {
            if on_mps {
                self.admit();
            } else {
                // Nothing on MPS: no attempt to count, no fallback to make.
                self.stage = Stage::Once;
            }
        }
    }

    /// The named values are on CPU now.
    #[inline]
    pub fn moved(&mut self) {
        self.stage = match self.stage {
            Stage::MoveThenOnce => Stage::Once,
            Stage::MoveThenRetry => Stage::Retry,
            other => other,
        };
    }

    /// How the coming run is wrapped.
    #[inline]
    pub fn mode(&self) -> Mode {
        match self.stage {
            Stage::First => Mode::First,
            Stage::Retry => Mode::Retry,
            _ => Mode::Once,
        }
    }

    /// Whether the coming run's value is judged (so its error text is needed).
    #[inline]
    pub fn judges(&self) -> bool {
        self.mode() != Mode::Once
    }

    /// Runs the body as [`mode`](Self::mode) says.
    #[inline]
    pub fn attempt<R>(&self, body: impl FnOnce() -> R) -> Result<R, Payload> {
        match self.mode() {
            Mode::Once => Ok(body()),
            Mode::First => quiet::attempt(body),
            Mode::Retry => {
                let _scope = FallbackScope::enter();
                catch_unwind(AssertUnwindSafe(body))
            }
        }
    }

    /// The outcome of [`Action::Run`]: `error` is the text of the value if it
    /// is an error (only asked for when [`judges`](Self::judges)). `Some` is
    /// the call's value; `None`: drive on (a fallback). A panic that is not
    /// handled goes on from here, unchanged.
    #[inline(always)]
    pub fn ran<R>(&mut self, out: Result<R, Payload>, error: Option<String>) -> Option<R> {
        if self.stage == Stage::Once {
            // Nothing to judge: the value, or the panic, as it is.
            self.stage = Stage::Done;
            return Some(out.unwrap_or_else(|payload| resume_unwind(payload)));
        }
        match out {
            // The first attempt's value, and no error: MPS worked (what
            // `judge` decides too, here without leaving the caller).
            Ok(value) if self.stage == Stage::First && error.is_none() => {
                self.stage = Stage::Done;
                self.worked();
                Some(value)
            }
            out => self.judged(out, error),
        }
    }

    /// [`ran`](Self::ran) for a guarded run.
    fn judged<R>(&mut self, out: Result<R, Payload>, error: Option<String>) -> Option<R> {
        match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::First => self.judge(out, error),
            Stage::Retry => Some(self.finish(out, error)),
            _ => unreachable!("opguard: a safe_mps! call reported a run it was not asked for"),
        }
    }

    /// Judges the first attempt: its value, a fallback (`None`), or a panic
    /// that goes on unchanged.
    fn judge<R>(&mut self, out: Result<R, Payload>, error: Option<String>) -> Option<R> {
        match out {
            Ok(value) => match error.as_deref().and_then(mps_error_kind) {
                Some(kind) => {
                    self.failed(kind, error.as_deref().unwrap_or(""));
                    None
                }
                None => {
                    self.worked();
                    Some(value)
                }
            },
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                match message.and_then(mps_error_kind) {
                    Some(kind) => {
                        self.failed(kind, message.unwrap_or(""));
                        None
                    }
                    None => {
                        // Not MPS's fault: MPS worked, and the panic goes on.
                        self.worked();
                        resume_unwind(payload)
                    }
                }
            }
        }
    }

    #[inline]
    fn worked(&mut self) {
        if let Some(admission) = self.admission.take() {
            registry::worked(self.site, admission);
        }
    }

    /// The first attempt failed with an MPS error: report it, then move and retry.
    #[cold]
    fn failed(&mut self, kind: MpsErrorKind, message: &str) {
        if let Some(admission) = self.admission.take() {
            registry::failed(self.site, admission, kind, message);
        }
        self.stage = if self.named {
            Stage::MoveThenRetry
        } else {
            Stage::Retry
        };
    }

    /// Ends the call with the retry's outcome; its panic goes on unchanged.
    fn finish<R>(&self, out: Result<R, Payload>, error: Option<String>) -> R {
        match out {
            Ok(value) => {
                registry::fell_back(self.site, error.is_none());
                value
            }
            Err(payload) => {
                registry::fell_back(self.site, false);
                resume_unwind(payload)
            }
        }
    }
}

impl<D> Drop for Driver<D> {
    #[inline]
    fn drop(&mut self) {
        if self.stage != Stage::Done {
            self.dropped_early();
        }
    }
}

impl<D> Driver<D> {
    /// Dropped before the call ended: its future cancelled, or a panic on
    /// the way (in moving the named values, say).
    #[cold]
    fn dropped_early(&mut self) {
        // The first attempt, before its outcome was known.
        if let Some(admission) = self.admission.take() {
            registry::abandoned(self.site, admission);
        }
        if matches!(self.stage, Stage::MoveThenRetry | Stage::Retry) {
            registry::fallback_abandoned(self.site);
        }
    }
}

/// The async twin of [`Driver::attempt`], for a body that awaits. Only
/// `safe_mps!`'s async form (feature `tch`) and the tests call it.
#[cfg(any(feature = "tch", test))]
pub async fn attempt_async<F: Future>(mode: Mode, body: F) -> Result<F::Output, Payload> {
    use futures::FutureExt;
    use std::future::poll_fn;
    use std::pin::pin;

    match mode {
        Mode::Once => Ok(body.await),
        Mode::First => quiet::attempt_async(body).await,
        Mode::Retry => {
            let mut body = pin!(AssertUnwindSafe(body).catch_unwind());
            // The nesting rule holds on every poll.
            poll_fn(|cx| {
                let _scope = FallbackScope::enter();
                body.as_mut().poll(cx)
            })
            .await
        }
    }
}

/// The loop of one `safe_mps!` call (see [`Driver`]): `probe` says whether a
/// named value is on MPS, `move_to_cpu` moves them, and `run` runs the body
/// on `$dev` through `$driver`'s `attempt` (or `attempt_async(..).await` in
/// an async block), giving a `Result<T, Payload>`. Yields the call's value.
#[doc(hidden)]
#[macro_export]
macro_rules! __opguard_drive {
    (
        $new:expr,
        probe: $probe:expr,
        move_to_cpu: $move:block,
        run: |$driver:ident, $dev:ident| $run:expr $(,)?
    ) => {{
        #[allow(unused_imports)]
        use $crate::__private::{ErrorOfOther as _, ErrorOfResult as _};
        let mut $driver = $new;
        loop {
            match $driver.next() {
                $crate::__private::Action::Probe => $driver.probed($probe),
                $crate::__private::Action::MoveToCpu => {
                    $move;
                    $driver.moved()
                }
                $crate::__private::Action::Run($dev) => {
                    let __opguard_out = $run;
                    let __opguard_error = match &__opguard_out {
                        $crate::__private::Ok(__opguard_value) if $driver.judges() => {
                            (&$crate::__private::Classify(__opguard_value)).error_message()
                        }
                        _ => $crate::__private::None,
                    };
                    if let $crate::__private::Some(__opguard_value) =
                        $driver.ran(__opguard_out, __opguard_error)
                    {
                        break __opguard_value;
                    }
                }
            }
        }
    }};
}

/// The steps through every path, with a fake device, a fake tensor and a
/// fake work; the registry is the real one (each test has its own call
/// site, and the tests take turns with the process-wide state).
#[cfg(all(test, not(opguard_loom)))]
mod tests {
    use super::*;
    use crate::mps::{self, MpsSiteStats, MpsState};
    use crate::testing;
    use std::cell::{Cell, RefCell};
    use std::future::poll_fn;
    use std::panic::panic_any;
    use std::sync::{Mutex, MutexGuard};
    use std::time::Duration;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Fake {
        Cpu,
        Mps,
    }
    use Fake::{Cpu, Mps};

    impl Dev for Fake {
        fn cpu() -> Self {
            Cpu
        }
        fn is_mps(self) -> bool {
            self == Mps
        }
        fn preferred() -> Self {
            Cpu // like a machine without MPS
        }
    }

    /// What the fake body does on a device.
    #[derive(Clone, Copy)]
    enum Out {
        Value(u32),
        Error(&'static str),
        Panic(&'static str),
    }

    const OP: &str =
        "The operator 'aten::_fft_r2c' is not currently implemented for the MPS device.";
    const DEVICE: &str = "PyTorch is not linked with support for mps devices";
    const OTHER: &str = "mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)";

    type Value = Result<u32, String>;

    /// A fake tensor: where it is.
    struct Tensor(Cell<Fake>);

    /// What the loop asked the work to do.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Step {
        Probe,
        MoveToCpu,
        Run(Fake),
    }

    fn body_value(out: Out) -> Value {
        match out {
            Out::Value(v) => Ok(v),
            Out::Error(e) => Err(e.to_string()),
            Out::Panic(p) => panic_any(p.to_string()),
        }
    }

    /// Runs one call through the macro's loop, with a fake work that names
    /// `tensor`; returns its outcome and the steps the loop asked for.
    fn call(
        site: &'static MpsSite,
        forced: Option<Fake>,
        tensor: &Tensor,
        body: impl Fn(Fake) -> Out,
    ) -> (Result<Value, Payload>, Vec<Step>) {
        call_naming(site, forced, Some(tensor), body)
    }

    /// [`call`] for the device form: nothing named, so nothing to probe or move.
    fn call_unnamed(
        site: &'static MpsSite,
        forced: Option<Fake>,
        body: impl Fn(Fake) -> Out,
    ) -> (Result<Value, Payload>, Vec<Step>) {
        call_naming(site, forced, None, body)
    }

    fn call_naming(
        site: &'static MpsSite,
        forced: Option<Fake>,
        tensor: Option<&Tensor>,
        body: impl Fn(Fake) -> Out,
    ) -> (Result<Value, Payload>, Vec<Step>) {
        let steps = RefCell::new(Vec::new());
        let out = catch_unwind(AssertUnwindSafe(|| {
            crate::__opguard_drive!(
                Driver::new(site, forced, tensor.is_some()),
                probe: {
                    steps.borrow_mut().push(Step::Probe);
                    tensor.is_some_and(|t| t.0.get() == Mps)
                },
                move_to_cpu: {
                    steps.borrow_mut().push(Step::MoveToCpu);
                    if let Some(t) = tensor {
                        t.0.set(Cpu);
                    }
                },
                run: |driver, dev| {
                    steps.borrow_mut().push(Step::Run(dev));
                    driver.attempt(|| body_value(body(dev)))
                },
            )
        }));
        (out, steps.into_inner())
    }

    /// The async twin of [`call`], on `futures`' `block_on`; the body yields
    /// once before it answers, as real async work would.
    fn call_async(
        site: &'static MpsSite,
        forced: Option<Fake>,
        tensor: &Tensor,
        body: impl Fn(Fake) -> Out,
    ) -> (Result<Value, Payload>, Vec<Step>) {
        let steps = RefCell::new(Vec::new());
        let out = catch_unwind(AssertUnwindSafe(|| {
            futures::executor::block_on(async {
                crate::__opguard_drive!(
                    Driver::new(site, forced, true),
                    probe: {
                        steps.borrow_mut().push(Step::Probe);
                        tensor.0.get() == Mps
                    },
                    move_to_cpu: {
                        steps.borrow_mut().push(Step::MoveToCpu);
                        tensor.0.set(Cpu);
                    },
                    run: |driver, dev| {
                        steps.borrow_mut().push(Step::Run(dev));
                        attempt_async(driver.mode(), async {
                            yield_once().await;
                            body_value(body(dev))
                        })
                        .await
                    },
                )
            })
        }));
        (out, steps.into_inner())
    }

    /// A call of the device form, MPS forced, through the async loop with
    /// `body` as its work, polled once: it must pend. Handed back to be dropped.
    fn pending_call<F: Future<Output = Value>>(
        site: &'static MpsSite,
        body: impl Fn(Fake) -> F,
    ) -> std::pin::Pin<Box<impl Future<Output = Value>>> {
        let mut fut = Box::pin(async move {
            crate::__opguard_drive!(
                Driver::new(site, Some(Mps), false),
                probe: false,
                move_to_cpu: {},
                run: |driver, dev| attempt_async(driver.mode(), body(dev)).await,
            )
        });
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        fut
    }

    async fn yield_once() {
        let mut yielded = false;
        poll_fn(|cx| {
            if yielded {
                std::task::Poll::Ready(())
            } else {
                yielded = true;
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }
        })
        .await
    }

    macro_rules! site {
        () => {{
            static SITE: MpsSite = MpsSite::new(Some("unit"), file!(), line!(), column!());
            &SITE
        }};
    }

    static SERIAL: Mutex<()> = Mutex::new(());

    /// Takes the process-wide registry, at its defaults, with a long cool-down.
    fn fresh() -> MutexGuard<'static, ()> {
        let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        mps::set_enabled(true);
        mps::set_failure_threshold(3);
        mps::set_cooldown(Duration::from_secs(3600)).unwrap();
        testing::reset_mps();
        guard
    }

    fn stats(site: &MpsSite) -> MpsSiteStats {
        site.stats()
    }

    fn on(dev: Fake) -> Tensor {
        Tensor(Cell::new(dev))
    }

    fn value(out: Result<Value, Payload>) -> Value {
        out.unwrap_or_else(|p| resume_unwind(p))
    }

    fn payload_text(out: Result<Value, Payload>) -> String {
        let p = out.expect_err("a panic");
        panic_message(p.as_ref()).unwrap().to_string()
    }

    #[test]
    fn work_with_nothing_on_mps_runs_once_and_is_not_counted() {
        let _g = fresh();
        let site = site!();
        let t = on(Cpu);
        let (out, steps) = call(site, None, &t, |_| Out::Error(DEVICE));
        assert_eq!(value(out), Err(DEVICE.to_string()), "no fallback");
        assert_eq!(steps, [Step::Probe, Step::Run(Cpu)]);
        assert_eq!(stats(site).mps_attempts, 0);
        assert_eq!(mps::stats().consecutive_failures, 0);
    }

    #[test]
    fn with_nothing_named_there_is_nothing_to_probe_or_move() {
        let _g = fresh();
        let (site, other) = (site!(), site!());
        let (out, steps) = call_unnamed(site, None, |_| Out::Value(1));
        assert_eq!((value(out), steps), (Ok(1), vec![Step::Run(Cpu)]));
        let op = |dev| match dev {
            Mps => Out::Error(OP),
            Cpu => Out::Value(2),
        };
        let (out, steps) = call_unnamed(site, Some(Mps), op);
        assert_eq!(value(out), Ok(2));
        assert_eq!(steps, [Step::Run(Mps), Step::Run(Cpu)]);
        let (_, steps) = call_unnamed(site, Some(Mps), op);
        assert_eq!(steps, [Step::Run(Cpu)], "pinned: straight to CPU");
        assert_eq!(stats(site).skipped, 1);
        testing::inject_mps_failures(1);
        let (out, steps) = call_unnamed(other, None, |_| Out::Value(3));
        assert_eq!((value(out), steps), (Ok(3), vec![Step::Run(Cpu)]));
        assert_eq!(stats(other).fallbacks, 1);
    }

    #[test]
    fn mps_work_that_succeeds_runs_once_and_counts_an_attempt() {
        let _g = fresh();
        let site = site!();
        let (out, steps) = call(site, Some(Mps), &on(Cpu), |_| Out::Value(7));
        assert_eq!(value(out), Ok(7));
        assert_eq!(steps, [Step::Run(Mps)], "no probe: the device says MPS");
        let s = stats(site);
        assert_eq!((s.mps_attempts, s.mps_errors(), s.fallbacks), (1, 0, 0));
    }

    #[test]
    fn a_named_value_on_mps_makes_cpu_work_guarded() {
        let _g = fresh();
        let site = site!();
        let t = on(Mps);
        let (out, steps) = call(site, None, &t, |_| match t.0.get() {
            Mps => Out::Error(DEVICE),
            Cpu => Out::Value(1),
        });
        assert_eq!(value(out), Ok(1));
        use Step::{MoveToCpu, Probe, Run};
        assert_eq!(steps, [Probe, Run(Cpu), MoveToCpu, Run(Cpu)]);
        assert_eq!(t.0.get(), Cpu);
        assert_eq!(stats(site).device_errors, 1);
    }

    #[test]
    fn an_mps_error_value_moves_the_tensors_and_retries_once_on_cpu() {
        let _g = fresh();
        let site = site!();
        let t = on(Mps);
        let (out, steps) = call(site, Some(Mps), &t, |dev| match dev {
            Mps => Out::Error(DEVICE),
            Cpu => Out::Value(2),
        });
        assert_eq!(value(out), Ok(2));
        assert_eq!(steps, [Step::Run(Mps), Step::MoveToCpu, Step::Run(Cpu)]);
        assert_eq!(t.0.get(), Cpu);
        let s = stats(site);
        assert_eq!((s.device_errors, s.op_errors, s.fallbacks), (1, 0, 1));
        assert!(!s.pinned);
        assert_eq!(mps::stats().consecutive_failures, 1);
    }

    #[test]
    fn an_op_error_pins_its_site_and_the_next_call_goes_straight_to_cpu() {
        let _g = fresh();
        let (site, other) = (site!(), site!());
        let body = |dev| match dev {
            Mps => Out::Error(OP),
            Cpu => Out::Value(3),
        };
        let (out, steps) = call(site, Some(Mps), &on(Mps), body);
        assert_eq!(value(out), Ok(3));
        assert_eq!(steps, [Step::Run(Mps), Step::MoveToCpu, Step::Run(Cpu)]);
        let (out, steps) = call(site, Some(Mps), &on(Mps), body);
        assert_eq!(value(out), Ok(3));
        assert_eq!(steps, [Step::MoveToCpu, Step::Run(Cpu)], "no MPS attempt");
        let s = stats(site);
        assert_eq!((s.mps_attempts, s.op_errors, s.skipped), (1, 1, 1));
        assert_eq!((s.pinned, s.times_pinned), (true, 1));
        // Other sites and MPS as a whole are untouched.
        let (_, steps) = call(other, Some(Mps), &on(Cpu), |_| Out::Value(0));
        assert_eq!(steps, [Step::Run(Mps)]);
        let g = mps::stats();
        assert_eq!((g.state, g.consecutive_failures), (MpsState::Enabled, 0));
    }

    #[test]
    fn a_pinned_site_tries_mps_once_after_the_cooldown_and_is_unpinned_when_it_works() {
        let _g = fresh();
        let site = site!();
        let broken = Cell::new(true);
        let body = |dev| match (dev, broken.get()) {
            (Mps, true) => Out::Error(OP),
            _ => Out::Value(4),
        };
        let _ = call(site, Some(Mps), &on(Cpu), body);
        assert!(stats(site).pinned);
        mps::set_cooldown(0).unwrap();
        // The trial fails: pinned again.
        let (_, steps) = call(site, Some(Mps), &on(Cpu), body);
        assert_eq!(steps, [Step::Run(Mps), Step::MoveToCpu, Step::Run(Cpu)]);
        assert_eq!(stats(site).times_pinned, 2);
        // The next trial works: MPS again from then on.
        broken.set(false);
        let (_, steps) = call(site, Some(Mps), &on(Cpu), body);
        assert_eq!(steps, [Step::Run(Mps)]);
        let s = stats(site);
        assert_eq!((s.pinned, s.mps_attempts, s.op_errors), (false, 3, 2));
    }

    #[test]
    fn an_injected_failure_replaces_the_first_attempt() {
        let _g = fresh();
        let site = site!();
        testing::inject_mps_failures(1);
        // Preferred CPU and nothing on MPS: the injection makes it an MPS call.
        let (out, steps) = call(site, None, &on(Cpu), |_| Out::Value(5));
        assert_eq!(value(out), Ok(5));
        assert_eq!(steps, [Step::MoveToCpu, Step::Run(Cpu)]);
        let s = stats(site);
        assert_eq!((s.mps_attempts, s.device_errors, s.fallbacks), (1, 1, 1));
        assert_eq!(mps::stats().injected_pending, 0);
    }

    #[test]
    fn device_errors_disable_mps_and_later_calls_everywhere_go_to_cpu() {
        let _g = fresh();
        mps::set_failure_threshold(2);
        let (site, other) = (site!(), site!());
        for _ in 0..2 {
            let _ = call(site, Some(Mps), &on(Cpu), |dev| match dev {
                Mps => Out::Error(DEVICE),
                Cpu => Out::Value(6),
            });
        }
        assert_eq!(mps::stats().state, MpsState::Disabled);
        let (out, steps) = call(other, Some(Mps), &on(Mps), |_| Out::Value(6));
        assert_eq!(value(out), Ok(6));
        assert_eq!(steps, [Step::MoveToCpu, Step::Run(Cpu)]);
        assert_eq!((stats(other).skipped, stats(other).mps_attempts), (1, 0));
        assert!(!stats(site).pinned, "device errors never pin a site");
    }

    #[test]
    fn cpu_only_work_never_takes_the_trial_nor_resets_the_streak() {
        let _g = fresh();
        let site = site!();
        let failing = |dev| match dev {
            Mps => Out::Error(DEVICE),
            Cpu => Out::Value(0),
        };
        let _ = call(site, Some(Mps), &on(Cpu), failing);
        // A CPU-only success between two failures does not break the streak.
        let _ = call(site!(), None, &on(Cpu), |_| Out::Value(0));
        assert_eq!(mps::stats().consecutive_failures, 1);
        mps::set_failure_threshold(2);
        let _ = call(site, Some(Mps), &on(Cpu), failing);
        assert_eq!(mps::stats().state, MpsState::Disabled);
        // Past the cool-down, CPU-only work runs without taking the trial.
        mps::set_cooldown(0).unwrap();
        let (_, steps) = call(site!(), None, &on(Cpu), |_| Out::Value(0));
        assert_eq!(steps, [Step::Probe, Step::Run(Cpu)]);
        assert_eq!(mps::stats().state, MpsState::Disabled, "still no trial");
        // MPS work does take it.
        let (_, steps) = call(site!(), Some(Mps), &on(Cpu), |_| Out::Value(0));
        assert_eq!(steps, [Step::Run(Mps)]);
        assert_eq!(mps::stats().state, MpsState::Enabled);
    }

    #[test]
    fn a_failing_retry_returns_its_own_error_and_never_retries_again() {
        let _g = fresh();
        let site = site!();
        let (out, steps) = call(site, Some(Mps), &on(Cpu), |dev| match dev {
            Mps => Out::Error(DEVICE),
            Cpu => Out::Error(OTHER),
        });
        assert_eq!(value(out), Err(OTHER.to_string()));
        assert_eq!(steps.len(), 3);
        let s = stats(site);
        assert_eq!((s.fallbacks, s.failed_fallbacks), (0, 1));
    }

    #[test]
    fn an_mps_panic_falls_back_like_an_mps_error() {
        let _g = fresh();
        let site = site!();
        let (out, steps) = call(site, Some(Mps), &on(Mps), |dev| match dev {
            Mps => Out::Panic(OP),
            Cpu => Out::Value(8),
        });
        assert_eq!(value(out), Ok(8));
        assert_eq!(steps, [Step::Run(Mps), Step::MoveToCpu, Step::Run(Cpu)]);
        assert!(stats(site).pinned, "judged op-level from the panic's text");
    }

    #[test]
    fn another_panic_goes_on_unchanged_after_one_attempt() {
        let _g = fresh();
        let site = site!();
        let (out, steps) = call(site, Some(Mps), &on(Cpu), |_| Out::Panic(OTHER));
        assert_eq!(payload_text(out), OTHER);
        assert_eq!(steps, [Step::Run(Mps)]);
        let s = stats(site);
        assert_eq!((s.mps_attempts, s.mps_errors()), (1, 0));
    }

    #[test]
    fn a_panicking_retry_goes_on_unchanged_and_counts_as_failed() {
        let _g = fresh();
        let site = site!();
        let (out, steps) = call(site, Some(Mps), &on(Cpu), |dev| match dev {
            Mps => Out::Error(DEVICE),
            Cpu => Out::Panic(OTHER),
        });
        assert_eq!(payload_text(out), OTHER);
        assert_eq!(steps.len(), 3);
        assert_eq!(stats(site).failed_fallbacks, 1);
    }

    #[test]
    fn a_panic_of_a_run_once_call_goes_on_and_nothing_is_counted() {
        let _g = fresh();
        let site = site!();
        let (out, steps) = call(site, None, &on(Cpu), |_| Out::Panic(DEVICE));
        assert_eq!(payload_text(out), DEVICE);
        assert_eq!(steps, [Step::Probe, Step::Run(Cpu)]);
        assert_eq!(stats(site).mps_errors(), 0);
    }

    #[test]
    fn with_the_kill_switch_off_the_work_runs_once_where_it_was_asked() {
        let _g = fresh();
        mps::set_enabled(false);
        let site = site!();
        let (out, steps) = call(site, Some(Mps), &on(Mps), |_| Out::Error(DEVICE));
        mps::set_enabled(true);
        assert_eq!(value(out), Err(DEVICE.to_string()));
        assert_eq!(steps, [Step::Run(Mps)]);
        assert_eq!(stats(site).mps_attempts, 0);
    }

    #[test]
    fn a_call_inside_a_retry_runs_once_on_cpu() {
        let _g = fresh();
        let (outer, inner) = (site!(), site!());
        let inner_steps = RefCell::new(Vec::new());
        let (out, _) = call(outer, Some(Mps), &on(Cpu), |dev| {
            let (out, steps) = call(inner, Some(Mps), &on(Mps), |d| match d {
                Mps => Out::Error(DEVICE),
                Cpu => Out::Value(9),
            });
            inner_steps.borrow_mut().push(steps);
            match (dev, value(out)) {
                (Mps, _) => Out::Error(DEVICE),
                (Cpu, v) => Out::Value(v.unwrap()),
            }
        });
        assert_eq!(value(out), Ok(9));
        use Step::{MoveToCpu, Run};
        assert_eq!(
            inner_steps.into_inner(),
            [
                vec![Run(Mps), MoveToCpu, Run(Cpu)], // in the outer first attempt
                vec![MoveToCpu, Run(Cpu)],           // in the outer retry
            ]
        );
        assert_eq!(stats(inner).mps_attempts, 1);
    }

    #[test]
    fn async_steps_follow_the_same_paths() {
        let _g = fresh();
        let (site, pinned) = (site!(), site!());
        let t = on(Mps);
        let (out, steps) = call_async(site, None, &t, |dev| match dev {
            Mps => Out::Value(0),
            Cpu if t.0.get() == Mps => Out::Error(DEVICE),
            Cpu => Out::Value(10),
        });
        assert_eq!(value(out), Ok(10));
        use Step::{MoveToCpu, Probe, Run};
        assert_eq!(steps, [Probe, Run(Cpu), MoveToCpu, Run(Cpu)]);
        let op = |dev| match dev {
            Mps => Out::Panic(OP),
            Cpu => Out::Value(11),
        };
        let _ = call_async(pinned, Some(Mps), &on(Cpu), op);
        let (out, steps) = call_async(pinned, Some(Mps), &on(Cpu), op);
        assert_eq!(value(out), Ok(11));
        assert_eq!(steps, [MoveToCpu, Run(Cpu)]);
        let (out, _) = call_async(site!(), Some(Mps), &on(Cpu), |_| Out::Panic(OTHER));
        assert_eq!(payload_text(out), OTHER);
    }

    #[test]
    fn a_trial_whose_future_is_dropped_starts_another_cooldown() {
        let _g = fresh();
        let site = site!();
        let _ = call(site, Some(Mps), &on(Cpu), |_| Out::Error(OP));
        mps::set_cooldown(0).unwrap();
        // The trial starts, pends for ever, and is dropped.
        let fut = pending_call(site, |_| std::future::pending());
        assert_eq!(stats(site).mps_attempts, 2, "the trial ran");
        assert_eq!(site.pin.state(), MpsState::Probing);
        mps::set_cooldown(Duration::from_secs(3600)).unwrap();
        drop(fut);
        assert_eq!(site.pin.state(), MpsState::Disabled, "abandoned");
        let (_, steps) = call(site, Some(Mps), &on(Cpu), |_| Out::Value(0));
        assert_eq!(steps, [Step::MoveToCpu, Step::Run(Cpu)], "pinned again");
    }

    #[test]
    fn a_cpu_retry_dropped_before_it_ends_counts_as_abandoned() {
        let _g = fresh();
        let site = site!();
        // The attempt on MPS fails; the retry on CPU pends for ever, and is dropped.
        let fut = pending_call(site, |dev| async move {
            match dev {
                Mps => body_value(Out::Error(DEVICE)),
                Cpu => std::future::pending().await,
            }
        });
        assert_eq!(stats(site).abandoned_fallbacks, 0, "still running");
        drop(fut);
        let s = stats(site);
        assert_eq!(
            (
                s.device_errors,
                s.fallbacks,
                s.failed_fallbacks,
                s.abandoned_fallbacks
            ),
            (1, 0, 0, 1)
        );
        assert_eq!(mps::stats().abandoned_fallbacks, 1);
    }

    #[test]
    fn a_panic_moving_the_named_values_abandons_the_retry() {
        let _g = fresh();
        let site = site!();
        let moving = || -> () { panic_any("the move") };
        let out = catch_unwind(|| {
            crate::__opguard_drive!(
                Driver::new(site, Some(Mps), true),
                probe: true,
                move_to_cpu: { moving() },
                run: |driver, _dev| driver.attempt(|| body_value(Out::Error(DEVICE))),
            )
        });
        assert_eq!(payload_text(out), "the move");
        let s = stats(site);
        assert_eq!((s.device_errors, s.abandoned_fallbacks), (1, 1));
        // A call that ends, however it ends, is not abandoned.
        let _ = call(site, Some(Mps), &on(Cpu), |_| Out::Panic(OTHER));
        let _ = call(site, Some(Mps), &on(Cpu), |_| Out::Error(DEVICE));
        let _ = call(site, Some(Mps), &on(Cpu), |_| Out::Value(1));
        assert_eq!(stats(site).abandoned_fallbacks, 1);
    }
}
