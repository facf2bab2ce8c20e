//! `timeout_async!` and its hidden helpers (macros and functions that the
//! expansions of both macros call through `$crate::__private`).

/// The label of a `label = ..` argument: a string constant.
#[doc(hidden)]
#[inline(always)]
pub const fn label(label: &'static str) -> Option<&'static str> {
    Some(label)
}

/// Fixes an `async` block's output type, so that `?` inside it infers.
#[doc(hidden)]
#[inline(always)]
pub fn returning<T, F: core::future::Future<Output = T>>(fut: F) -> F {
    fut
}

/// Puts a timeout on a future, inline, on any executor.
///
/// ```text
/// timeout_async!(FUT)                          // the default timeout (30 s unless configured)
/// timeout_async!(SECS, FUT)                    // SECS: integer or float seconds, or a Duration
/// timeout_async!(label = "name", FUT)          // labelled: the label shows in logs, errors, counters
/// timeout_async!(label = "name", SECS, FUT)
/// timeout_async!(until = INSTANT, FUT)         // a deadline, like tokio's `timeout_at`
/// timeout_async!(label = "name", until = INSTANT, FUT)
///
/// timeout_async! {                             // item form, like `@timeout_async(seconds=60)`
///     #[timeout(SECS)]                         // or #[timeout(label = "name", SECS)], #[timeout],
///                                              // #[timeout(until = INSTANT)] (evaluated at each call)
///     VIS async fn NAME(PARAMS) -> T { BODY }
/// }
/// ```
///
/// In the item form the body's value gets the usual coercions to `T`
/// (`&String` to `&str`, `Box<u8>` to `Box<dyn Display>`), and `?` works; an
/// early `return` whose value needs such a coercion spells it out
/// (`return Box::new(x) as _;`), because the body runs inside an `async` block.
/// For the same reason `T` cannot hold `impl Trait` (a compile error says
/// so): put the expression form inside such a function instead.
///
/// With the `tch` feature the item form takes `#[safe_mps(..)]` too (and
/// [`safe_mps!`](crate::safe_mps)'s item form `#[timeout(..)]`): the first
/// attribute listed wraps the other, as stacked decorators do. Under
/// `#[timeout]` first, one deadline covers the attempt on MPS and the retry
/// on CPU; under `#[safe_mps]` first, each attempt has the whole timeout,
/// and a timeout is the result, not an MPS error to fall back from. Either
/// way the function returns `Result<T, TimeoutError>`.
///
/// A trailing comma is accepted. `FUT` is anything that implements
/// [`IntoFuture`]; `SECS` anything that implements
/// [`IntoTimeout`](crate::IntoTimeout); `INSTANT` a [`std::time::Instant`]
/// or, with the `tokio` feature, a `tokio::time::Instant`
/// ([`IntoDeadline`](crate::IntoDeadline)); the label is a string constant.
///
/// The expression forms return a [`Timeout`](crate::Timeout) future that
/// yields `Result<T, `[`TimeoutError`](crate::TimeoutError)`>`, where `T` is
/// the inner output, untouched: an inner `Err(e)` comes back as `Ok(Err(e))`.
/// The item form turns `async fn f(..) -> T` into `async fn f(..) ->
/// Result<T, TimeoutError>`.
///
/// - The inner future is polled first; the timer starts only if it pends, so a
///   future that is ready at once costs no timer and no allocation.
/// - On timeout the inner future is dropped (cancelled), a warning is logged
///   with label, duration and call site, and the counters in
///   [`timeouts::stats`](crate::timeouts::stats) and [`alert`](crate::alert) count it.
/// - A negative, NaN or infinite `SECS` yields an error naming the value,
///   without polling the future; a huge one is just a long timeout; zero times
///   out unless the future is ready at its first poll, and so does an
///   `INSTANT` already past. A deadline's error says it was one
///   ([`TimeoutError::is_deadline`](crate::TimeoutError::is_deadline)) and how
///   long the future had from its first poll.
/// - It never fires before its time, and at most one tick after it (plus the
///   time its task takes to be scheduled): 250 µs for a timeout shorter than
///   a second, from a second up at most a thousandth of its length (16 ms for
///   30 s; see [`tick_of`](crate::tick_of)). A tick fires once the last
///   deadline in it has passed, to a 250th of its width (a microsecond under
///   a second, 64 µs for 30 s): a timeout alone in its tick, as timeouts
///   started apart are, fires at its own deadline.
/// - A timeout from 8 s to 68 minutes still pending 0.1 to 4.2 s before its
///   deadline wakes its task once then (it moves from a tick that timeouts
///   of many deadlines share to its own): the future is polled, and must
///   allow a poll when it cannot go on, as any future must.
/// - In nested timeouts the first tick to come fires; when two deadlines fall
///   within one tick, the earlier one's error reports (one inside a
///   `block_on` of its own, which cannot hand over to the outer timeout, ends
///   with its own). Ticks widen with the timeout: an inner timeout due less
///   than one outer tick after the outer one can fire first from its
///   narrower tick, and name itself.
/// - While the kill switch is off ([`timeouts::set_enabled`](crate::timeouts::set_enabled),
///   `OPGUARD_TIMEOUT_DISABLE`), every form passes its future through as `Ok`.
///
/// A timeout can only fire when the future yields to its executor: work that
/// never awaits cannot be interrupted.
///
/// # Examples
///
/// The default timeout:
/// ```
/// # futures::executor::block_on(async {
/// use opguard::timeout_async;
///
/// let price = timeout_async!(async { 101.5 }).await;
/// assert_eq!(price, Ok(101.5));
/// # });
/// ```
///
/// Seconds, whole or fractional, or a `Duration`:
/// ```
/// # futures::executor::block_on(async {
/// use opguard::timeout_async;
/// use std::time::Duration;
///
/// let never = std::future::pending::<()>();
/// let err = timeout_async!(0.05, never).await.unwrap_err();
/// assert!(err.is_elapsed());
///
/// let quick = async { Ok::<_, std::io::Error>(7) };
/// let out = timeout_async!(Duration::from_millis(250), quick).await;
/// assert_eq!(out.unwrap().unwrap(), 7);
/// # });
/// ```
///
/// A label, which the error, the log line and the counters carry:
/// ```
/// # futures::executor::block_on(async {
/// use opguard::timeout_async;
///
/// let err = timeout_async!(label = "fetch_price", 0.01, std::future::pending::<f64>())
///     .await
///     .unwrap_err();
/// assert_eq!(err.label(), Some("fetch_price"));
/// assert!(err.to_string().starts_with("'fetch_price' timed out after 10ms at "));
/// # });
/// ```
///
/// A deadline shared by several calls, like tokio's `timeout_at`:
/// ```
/// # futures::executor::block_on(async {
/// use opguard::timeout_async;
/// use std::time::{Duration, Instant};
///
/// let deadline = Instant::now() + Duration::from_millis(20);
/// let first = timeout_async!(until = deadline, async { 1 }).await;
/// assert_eq!(first, Ok(1));
/// let err = timeout_async!(until = deadline, std::future::pending::<()>())
///     .await
///     .unwrap_err();
/// assert!(err.is_deadline());
/// assert!(Instant::now() >= deadline);
/// # });
/// ```
///
/// The item form, an attribute on the function (like a Python decorator):
/// ```
/// use opguard::{timeout_async, TimeoutError};
///
/// timeout_async! {
///     /// One pass of the trading loop, never longer than 60 s.
///     #[timeout(label = "trading_loop", 60)]
///     pub async fn trading_loop(ticks: u32) -> u32 {
///         ticks * 2
///     }
/// }
///
/// # futures::executor::block_on(async {
/// let done: Result<u32, TimeoutError> = trading_loop(21).await;
/// assert_eq!(done, Ok(42));
/// # });
/// ```
///
/// An invalid timeout is an error value, not a panic:
/// ```
/// # futures::executor::block_on(async {
/// let err = opguard::timeout_async!(-1, async { 1 }).await.unwrap_err();
/// assert!(err.is_invalid());
/// assert!(err.to_string().contains("-1 seconds is negative"));
/// # });
/// ```
///
/// Misused syntax does not compile, and the message shows the right forms:
/// ```compile_fail
/// let fut = opguard::timeout_async!();
/// ```
#[macro_export]
macro_rules! timeout_async {
    // timeout_async! { #[timeout(..)] async fn f(..) -> T { .. } }, attributes
    // in any order, `#[safe_mps(..)]` among them
    (# $($item:tt)*) => {
        $crate::__opguard_item! { @attrs timeout [] [] # $($item)* }
    };
    // timeout_async! { pub async fn f(..) -> T { .. } }
    ($vis:vis async fn $($item:tt)*) => {
        $crate::__opguard_split_fn! { __opguard_timeout_fn [] [] $vis async fn $($item)* }
    };
    // timeout_async!()
    () => {
        ::core::compile_error! { $crate::__opguard_timeout_forms!("timeout_async! needs a future.") }
    };
    // timeout_async!(label = "name", until = DEADLINE, fut); before the
    // next arm, where `until = DEADLINE` would parse as an assignment.
    (label = $label:expr, until = $deadline:expr, $fut:expr $(,)?) => {
        $crate::__private::timeout_until($crate::__opguard_site!($label), $deadline, $fut)
    };
    // timeout_async!(label = "name", until = DEADLINE) and other misuse of `until`
    (label = $label:expr, until = $($rest:tt)*) => {
        ::core::compile_error! { $crate::__opguard_timeout_forms!(
            "timeout_async!(label = \"name\", until = DEADLINE, ..) takes an Instant, then the future."
        ) }
    };
    // timeout_async!(label = "a", label = "b", ..)
    (label = $label:expr, label = $($rest:tt)*) => {
        ::core::compile_error! { $crate::__opguard_timeout_forms!(
            "timeout_async! takes one label."
        ) }
    };
    // timeout_async!(label = "name", seconds = 30, fut): an option it does
    // not have (Python's `seconds=`, say); before the next arm, where it
    // would parse as an assignment and fail with "cannot find value".
    (label = $label:expr, $option:ident = $($rest:tt)*) => {
        ::core::compile_error! { $crate::__opguard_timeout_forms!(
            "timeout_async! has no `", ::core::stringify!($option), " = ..`: give the timeout by itself, \
            in seconds (integer or float) or as a Duration: timeout_async!(label = \"name\", 30, fut)."
        ) }
    };
    // timeout_async!(label = "name", SECS, fut)
    (label = $label:expr, $timeout:expr, $fut:expr $(,)?) => {
        $crate::__private::timeout($crate::__opguard_site!($label), $timeout, $fut)
    };
    // timeout_async!(label = "name", fut)
    (label = $label:expr, $fut:expr $(,)?) => {
        $crate::__private::timeout_default($crate::__opguard_site!($label), $fut)
    };
    // timeout_async!(label = "name") and other misuse of `label`
    (label $($rest:tt)*) => {
        ::core::compile_error! { $crate::__opguard_timeout_forms!(
            "timeout_async!(label = \"name\", ..) takes a string label, then an optional timeout, then the future."
        ) }
    };
    // timeout_async!(until = DEADLINE, fut)
    (until = $deadline:expr, $fut:expr $(,)?) => {
        $crate::__private::timeout_until($crate::__opguard_site!(), $deadline, $fut)
    };
    // timeout_async!(until = DEADLINE) and other misuse of `until`
    (until = $($rest:tt)*) => {
        ::core::compile_error! { $crate::__opguard_timeout_forms!(
            "timeout_async!(until = DEADLINE, ..) takes an Instant, then the future."
        ) }
    };
    // timeout_async!(seconds = 30, fut), #[timeout(seconds = 30)]: as above
    ($option:ident = $($rest:tt)*) => {
        ::core::compile_error! { $crate::__opguard_timeout_forms!(
            "timeout_async! has no `", ::core::stringify!($option), " = ..`: give the timeout by itself, \
            in seconds (integer or float) or as a Duration: timeout_async!(30, fut), #[timeout(30)]."
        ) }
    };
    // timeout_async!(SECS, fut)
    ($timeout:expr, $fut:expr $(,)?) => {
        $crate::__private::timeout($crate::__opguard_site!(), $timeout, $fut)
    };
    // timeout_async!(fut)
    ($fut:expr $(,)?) => {
        $crate::__private::timeout_default($crate::__opguard_site!(), $fut)
    };
    // anything else, e.g. timeout_async!(30, fut, extra)
    ($($rest:tt)*) => {
        ::core::compile_error! { $crate::__opguard_timeout_forms!(
            "timeout_async! takes at most a label, a timeout and a future."
        ) }
    };
}

/// The text of a `timeout_async!` syntax error: the pieces of `$what`, then the right forms.
#[doc(hidden)]
#[macro_export]
macro_rules! __opguard_timeout_forms {
    ($($what:expr),+) => {
        ::core::concat!(
            $($what,)+
            " The forms are:\n",
            "    timeout_async!(fut)\n",
            "    timeout_async!(30, fut)\n",
            "    timeout_async!(Duration::from_millis(250), fut)\n",
            "    timeout_async!(label = \"name\", 30, fut)\n",
            "    timeout_async!(label = \"name\", fut)\n",
            "    timeout_async!(until = Instant::now() + Duration::from_secs(5), fut)\n",
            "    timeout_async!(label = \"name\", until = deadline, fut)\n",
            "    timeout_async! { #[timeout(30)] async fn name(..) -> T { .. } }",
        )
    };
}

/// A `&'static Site` for this call: one `static` per expansion. With
/// `@ MpsSite`, the `safe_mps!` kind of site.
#[doc(hidden)]
#[macro_export]
macro_rules! __opguard_site {
    (@ $kind:ident) => {
        $crate::__opguard_site!(@new $kind $crate::__private::None)
    };
    (@ $kind:ident $label:expr) => {
        $crate::__opguard_site!(@new $kind $crate::__private::label($label))
    };
    (@new $kind:ident $label:expr) => {{
        static __OPGUARD_SITE: $crate::__private::$kind = $crate::__private::$kind::new(
            $label,
            ::core::file!(),
            ::core::line!(),
            ::core::column!(),
        );
        &__OPGUARD_SITE
    }};
    () => {
        $crate::__opguard_site!(@ Site)
    };
    ($label:expr) => {
        $crate::__opguard_site!(@ Site $label)
    };
}

/// The item form of `timeout_async!`: `@emit` writes the function that
/// `__opguard_item!` took apart, its body under the timeout.
#[doc(hidden)]
#[macro_export]
macro_rules! __opguard_timeout_fn {
    (@emit [$($args:tt)*] [$($head:tt)*] [async] $name:ident [$($gen:tt)*] ( $($params:tt)* ) [$ret:ty] [$($w:tt)*] $body:block) => {
        $($head)* async fn $name $($gen)* ( $($params)* )
            -> $crate::__private::Result<$ret, $crate::TimeoutError>
        $($w)*
        {
            // `returning` gives the block its output type, so that `?` infers;
            // the `let` gives the body's value the usual coercions.
            $crate::__opguard_timeout_fn!(@call [$($args)*]
                $crate::__private::returning::<$ret, _>(async move {
                    let __opguard_out: $ret = $body;
                    __opguard_out
                })
            ).await
        }
    };
    (@emit $args:tt $head:tt [] $($rest:tt)*) => {
        ::core::compile_error! { $crate::__opguard_timeout_forms!(
            "timeout_async! { .. } wraps an `async fn`, e.g. `#[timeout(60)] pub async fn run() -> T { .. }`."
        ) }
    };

    (@call [] $fut:expr) => { $crate::timeout_async!($fut) };
    (@call [$($args:tt)+] $fut:expr) => { $crate::timeout_async!($($args)+, $fut) };
}
