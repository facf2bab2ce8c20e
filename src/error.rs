//! The error a guarded future yields: it timed out, its timeout was invalid,
//! or its timer could not run.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::time::Duration;

use crate::duration::InvalidTimeout;
use crate::site::Site;

/// A `timeout_async!` that did not let its future finish.
///
/// Either the deadline passed ([`is_elapsed`](Self::is_elapsed)), and the inner
/// future was dropped, or the timeout given to the macro was not a valid
/// duration ([`is_invalid`](Self::is_invalid)), and the inner future was never
/// polled. Rarely, the process's timer thread could not run
/// ([`is_no_timer`](Self::is_no_timer)): the deadline could not be kept, so the
/// inner future was dropped rather than left without one. The error names the call site and, when given, the label, so that in
/// nested timeouts it tells which one fired:
///
/// ```text
/// 'fetch_price' timed out after 250ms at examples/quickstart.rs:31:9
/// invalid timeout at src/main.rs:8:5: -1 seconds is negative; give a number of seconds >= 0 or a Duration
/// ```
///
/// It converts into [`std::io::Error`] with kind [`TimedOut`](io::ErrorKind::TimedOut)
/// (or [`InvalidInput`](io::ErrorKind::InvalidInput) for an invalid timeout, and
/// [`Other`](io::ErrorKind::Other) when no timer could run).
#[derive(Clone)]
pub struct TimeoutError {
    // Boxed: one pointer, so that `Result<T, TimeoutError>` stays small on
    // the fast path; the allocation happens only when a timeout fails.
    inner: Box<Inner>,
}

#[derive(Clone)]
struct Inner {
    kind: Kind,
    site: &'static Site,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Elapsed(Duration),
    /// A deadline (`until = ..`) passed; how long it was from the first poll.
    Deadline(Duration),
    Invalid(InvalidTimeout),
    NoTimer(Duration, Missing),
}

/// What was missing when a deadline could not be kept.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Missing {
    /// futures-timer's helper thread.
    Thread,
    /// The test clock it waited on: every handle was dropped.
    #[cfg(feature = "test-util")]
    TestClock,
    /// The tokio runtime whose paused clock it followed: it shut down.
    #[cfg(feature = "tokio")]
    TokioRuntime,
}

impl Missing {
    /// Why the deadline could not be kept, for the error's message.
    fn why(self) -> &'static str {
        match self {
            Missing::Thread => "the timer thread (futures-timer's) is not running",
            #[cfg(feature = "test-util")]
            Missing::TestClock => {
                "every handle of the test clock it waited on was dropped, so nothing can move \
                 that clock to its deadline (keep a `TestClock` while timeouts wait on it)"
            }
            #[cfg(feature = "tokio")]
            Missing::TokioRuntime => {
                "the tokio runtime whose paused clock it followed has shut down"
            }
        }
    }
}

impl TimeoutError {
    fn new(site: &'static Site, kind: Kind) -> Self {
        TimeoutError {
            inner: Box::new(Inner { kind, site }),
        }
    }

    pub(crate) fn elapsed(site: &'static Site, after: Duration) -> Self {
        Self::new(site, Kind::Elapsed(after))
    }

    pub(crate) fn deadline(site: &'static Site, had: Duration) -> Self {
        Self::new(site, Kind::Deadline(had))
    }

    pub(crate) fn no_timer(site: &'static Site, after: Duration, missing: Missing) -> Self {
        Self::new(site, Kind::NoTimer(after, missing))
    }

    pub(crate) fn invalid(site: &'static Site, bad: InvalidTimeout) -> Self {
        Self::new(site, Kind::Invalid(bad))
    }

    /// The deadline passed before the future finished, whether it was given
    /// as a timeout or as an instant (`until = ..`).
    pub fn is_elapsed(&self) -> bool {
        matches!(self.inner.kind, Kind::Elapsed(_) | Kind::Deadline(_))
    }

    /// The deadline was given as an instant, `timeout_async!(until = .., ..)`,
    /// and it passed; [`duration`](Self::duration) is then how long the future
    /// had, from its first poll to the deadline (zero for an instant already
    /// past).
    pub fn is_deadline(&self) -> bool {
        matches!(self.inner.kind, Kind::Deadline(_))
    }

    /// The timeout given to the macro was negative, NaN or infinite.
    pub fn is_invalid(&self) -> bool {
        matches!(self.inner.kind, Kind::Invalid(_))
    }

    /// No timer could run, so the deadline could not be kept: futures-timer's
    /// helper thread, which every timeout in the process relies on, could not
    /// be spawned (a thread or memory limit) or has died. The inner future was
    /// dropped. For one second after such a failure, timeouts fail this way at
    /// once; then the next one tries afresh, and succeeds if the limit was
    /// lifted.
    ///
    /// With the `test-util` feature, also a timeout that waited on a
    /// `TestClock` moved by hand whose every handle was dropped: no one can
    /// move that clock to its deadline any more. With the `tokio` feature,
    /// also a timeout that followed a paused tokio runtime's clock and was
    /// polled after that runtime shut down.
    pub fn is_no_timer(&self) -> bool {
        matches!(self.inner.kind, Kind::NoTimer(..))
    }

    /// The timeout that elapsed (or could not be kept), or for a deadline
    /// form how long the future had; `None` for an invalid timeout. Exact to
    /// the nanosecond under 78 hours; a longer one is kept to the
    /// millisecond (to the second past 8 900 years), to keep a started
    /// timeout small.
    pub fn duration(&self) -> Option<Duration> {
        match self.inner.kind {
            Kind::Elapsed(d) | Kind::Deadline(d) | Kind::NoTimer(d, _) => Some(d),
            Kind::Invalid(_) => None,
        }
    }

    /// What was wrong with the timeout; `None` when it was valid.
    pub fn invalid_timeout(&self) -> Option<InvalidTimeout> {
        match self.inner.kind {
            Kind::Elapsed(_) | Kind::Deadline(_) | Kind::NoTimer(..) => None,
            Kind::Invalid(bad) => Some(bad),
        }
    }

    /// The `label = "..."` given to the macro, if any.
    pub fn label(&self) -> Option<&'static str> {
        self.inner.site.label()
    }

    /// The source file of the macro call.
    pub fn file(&self) -> &'static str {
        self.inner.site.file()
    }

    /// The line of the macro call.
    pub fn line(&self) -> u32 {
        self.inner.site.line()
    }

    /// The column of the macro call.
    pub fn column(&self) -> u32 {
        self.inner.site.column()
    }
}

impl TimeoutError {
    /// "'label' VERB", or "future VERB" without a label.
    fn subject(&self, f: &mut fmt::Formatter<'_>, verb: &str) -> fmt::Result {
        match self.label() {
            Some(label) => write!(f, "'{label}' {verb}"),
            None => write!(f, "future {verb}"),
        }
    }
}

impl fmt::Display for TimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.inner.kind {
            Kind::Elapsed(after) => {
                self.subject(f, "timed out")?;
                write!(f, " after {after:?} at {}", self.inner.site)
            }
            Kind::Deadline(had) => {
                self.subject(f, "timed out")?;
                write!(
                    f,
                    " at its deadline (`until`), {had:?} after it started, at {}",
                    self.inner.site
                )
            }
            Kind::Invalid(bad) => {
                f.write_str("invalid timeout")?;
                if let Some(label) = self.label() {
                    write!(f, " for '{label}'")?;
                }
                write!(f, " at {}: {bad}", self.inner.site)
            }
            Kind::NoTimer(after, missing) => {
                self.subject(f, "could not keep")?;
                write!(
                    f,
                    " its {after:?} timeout at {}: {}",
                    self.inner.site,
                    missing.why()
                )
            }
        }
    }
}

/// The readable message, as `Display` gives it, so that `.unwrap()`,
/// `{:?}` in a log line and `io::Error`'s `Debug` say what timed out, after
/// how long and where. `{:#?}` gives the fields.
impl fmt::Debug for TimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !f.alternate() {
            return fmt::Display::fmt(self, f);
        }
        let mut d = f.debug_struct("TimeoutError");
        match self.inner.kind {
            Kind::Elapsed(after) => d.field("elapsed", &after),
            Kind::Deadline(had) => d.field("deadline_after", &had),
            Kind::Invalid(bad) => d.field("invalid", &bad),
            Kind::NoTimer(after, missing) => d.field("no_timer", &after).field("missing", &missing),
        };
        d.field("label", &self.label())
            .field("site", &format_args!("{}", self.inner.site))
            .finish()
    }
}

impl PartialEq for TimeoutError {
    /// Equal when the same call site failed the same way.
    fn eq(&self, other: &Self) -> bool {
        self.inner.kind == other.inner.kind && std::ptr::eq(self.inner.site, other.inner.site)
    }
}

impl StdError for TimeoutError {}

impl From<TimeoutError> for io::Error {
    fn from(err: TimeoutError) -> io::Error {
        let kind = match err.inner.kind {
            Kind::Elapsed(_) | Kind::Deadline(_) => io::ErrorKind::TimedOut,
            Kind::Invalid(_) => io::ErrorKind::InvalidInput,
            Kind::NoTimer(..) => io::ErrorKind::Other,
        };
        io::Error::new(kind, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static SITE: Site = Site::new(Some("fetch"), "src/main.rs", 3, 5);

    #[test]
    fn debug_reads_as_the_message_and_alternate_shows_the_fields() {
        let err = TimeoutError::elapsed(&SITE, Duration::from_millis(250));
        let message = "'fetch' timed out after 250ms at src/main.rs:3:5";
        assert_eq!(err.to_string(), message);
        assert_eq!(format!("{err:?}"), message);
        let fields = format!("{err:#?}");
        assert!(fields.starts_with("TimeoutError {"), "{fields}");
        assert!(fields.contains("elapsed: 250ms"), "{fields}");
        // What `.unwrap()` prints, and what an `io::Error` made from it shows.
        let result: Result<(), _> = Err(TimeoutError::elapsed(&SITE, Duration::from_millis(250)));
        let unwrapped =
            std::panic::catch_unwind(|| std::hint::black_box(result).unwrap()).unwrap_err();
        let unwrapped = unwrapped.downcast_ref::<String>().unwrap();
        assert!(unwrapped.ends_with(message), "{unwrapped}");
        let io = format!("{:?}", io::Error::from(err));
        assert!(io.contains(message), "{io}");
    }

    #[test]
    fn a_passed_deadline_says_it_was_one_and_how_long_it_had() {
        let err = TimeoutError::deadline(&SITE, Duration::from_millis(40));
        assert_eq!(
            err.to_string(),
            "'fetch' timed out at its deadline (`until`), 40ms after it started, at src/main.rs:3:5"
        );
        assert!(err.is_elapsed() && err.is_deadline());
        assert_eq!(err.duration(), Some(Duration::from_millis(40)));
        assert_eq!(io::Error::from(err).kind(), io::ErrorKind::TimedOut);
        let plain = TimeoutError::elapsed(&SITE, Duration::from_millis(40));
        assert!(plain.is_elapsed() && !plain.is_deadline());
    }
}
