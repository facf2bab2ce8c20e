//! Shared by the integration tests: executors, cases, a log capture, child processes.
#![allow(dead_code, unreachable_pub)]

pub mod cases;
pub mod executors;
pub mod mps;

use std::sync::{Mutex, Once};

/// A logger that keeps every record as `LEVEL message`, for assertions.
pub fn captured_logs() -> Vec<String> {
    LOGS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Forgets the records captured so far (for tests that hold their own lock
/// on the process-wide state and read only their own lines).
pub fn clear_logs() {
    LOGS.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

/// Installs the capturing logger (once per process).
pub fn capture_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        log::set_logger(&Capture).expect("no other logger in tests");
        log::set_max_level(log::LevelFilter::Trace);
    });
}

/// Runs `hook` on this thread for each record logged here after the line
/// is kept, as a logger with side effects would (`None` removes it).
pub fn on_log_here(hook: Option<Box<dyn Fn()>>) {
    ON_LOG.set(hook);
}

static LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());
thread_local! {
    static ON_LOG: std::cell::RefCell<Option<Box<dyn Fn()>>> =
        const { std::cell::RefCell::new(None) };
}
struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        LOGS.lock().unwrap_or_else(|p| p.into_inner()).push(format!(
            "{} {}",
            record.level(),
            record.args()
        ));
        ON_LOG.with_borrow(|hook| {
            if let Some(hook) = hook {
                hook();
            }
        });
    }
    fn flush(&self) {}
}

/// Runs test `name` again in a child process with `envs` set, so that
/// settings read once per process start fresh. Returns `true` in the parent
/// (after asserting the child passed) and `false` in the child, which then
/// runs the test body.
pub fn rerun_in_child(name: &str, envs: &[(&str, &str)]) -> bool {
    match child_output(name, envs) {
        None => false,
        Some(out) => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("1 passed"),
                "child run of {name} with {envs:?} failed:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            true
        }
    }
}

/// In the parent: runs test `name` in a child process with `envs` set and
/// output not captured, and returns what it printed. In the child: `None`.
pub fn child_output(name: &str, envs: &[(&str, &str)]) -> Option<std::process::Output> {
    let cmd = child_command(name, envs)?;
    Some(
        spawn_child(cmd)
            .wait_with_output()
            .expect("the test binary runs again"),
    )
}

/// Like [`child_output`], for a child that might hang: it is killed after
/// `limit`, and the test fails saying so.
pub fn child_output_within(
    name: &str,
    envs: &[(&str, &str)],
    limit: std::time::Duration,
) -> Option<std::process::Output> {
    let cmd = child_command(name, envs)?;
    let mut child = spawn_child(cmd);
    let start = std::time::Instant::now();
    while child
        .try_wait()
        .expect("the child can be waited on")
        .is_none()
    {
        if start.elapsed() > limit {
            child.kill().ok();
            let out = child.wait_with_output().expect("the child's output");
            panic!(
                "`{name}` hung: still running after {limit:?}; it printed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Some(child.wait_with_output().expect("the child's output"))
}

/// In the parent: runs test `name` in a child process with `envs` set (killed
/// should it hang for 30 s), asserts that it exited cleanly and printed
/// `marker`, and returns `true`. In the child: `false`, to run the test.
pub fn child_passes(name: &str, envs: &[(&str, &str)], marker: &str) -> bool {
    match child_output_within(name, envs, std::time::Duration::from_secs(30)) {
        Some(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains(marker),
                "the child failed ({}):\n{stdout}\n{stderr}",
                out.status
            );
            true
        }
        None => false,
    }
}

fn spawn_child(mut cmd: std::process::Command) -> std::process::Child {
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the test binary runs again")
}

fn child_command(name: &str, envs: &[(&str, &str)]) -> Option<std::process::Command> {
    const MARK: &str = "OPGUARD_TEST_CHILD";
    if std::env::var(MARK).as_deref() == Ok(name) {
        return None;
    }
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(MARK, name);
    for var in [
        "OPGUARD_TIMEOUT_SECS",
        "OPGUARD_TIMEOUT_DISABLE",
        "OPGUARD_DISABLE",
        "OPGUARD_SAFE_MPS_DISABLE",
        "OPGUARD_MPS_FAILURE_THRESHOLD",
        "OPGUARD_MPS_COOLDOWN_SECS",
        "RUST_BACKTRACE",
        // A child that checks a thread cannot start needs the default stack.
        "RUST_MIN_STACK",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(envs.iter().copied());
    Some(cmd)
}

/// Polls `fut` once with `waker`.
pub fn poll_with<F: std::future::Future + ?Sized>(
    fut: std::pin::Pin<&mut F>,
    waker: &std::task::Waker,
) -> std::task::Poll<F::Output> {
    fut.poll(&mut std::task::Context::from_waker(waker))
}

/// A `block_on` that, unlike futures', runs inside another executor's poll
/// (as pollster's does): polls `fut`, and parks the thread until woken.
pub fn park_on<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(out) = poll_with(fut.as_mut(), &waker) {
            return out;
        }
        std::thread::park();
    }
}

/// What the debugging recorder holds for `opguard_timeouts_total` with
/// this `label`.
#[cfg(feature = "metrics")]
pub fn timeouts_total(
    snapshotter: &metrics_util::debugging::Snapshotter,
    label: &'static str,
) -> metrics_util::debugging::DebugValue {
    let key = metrics_util::CompositeKey::new(
        metrics_util::MetricKind::Counter,
        metrics::Key::from_parts(
            "opguard_timeouts_total",
            vec![metrics::Label::new("label", label)],
        ),
    );
    let mut snapshot = snapshotter.snapshot().into_hashmap();
    let (_, _, value) = snapshot.remove(&key).expect("the counter was recorded");
    value
}

/// A waker that panics when woken: `Waker::from(Arc::new(PanickingWaker))`.
pub struct PanickingWaker;

impl std::task::Wake for PanickingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        panic!("this waker panics");
    }
}
