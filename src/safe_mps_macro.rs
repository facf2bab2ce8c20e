//! `safe_mps!` and its hidden helpers.

/// Runs tensor work on MPS and, on an MPS error, moves the tensors to CPU and
/// runs it once more there.
///
/// ```text
/// safe_mps!(OPTIONS |dev| EXPR)                  // device form: EXPR runs with dev = MPS, then CPU
/// safe_mps!(OPTIONS |dev| -> T { BODY })
/// safe_mps!(OPTIONS [t1, t2, ..] => EXPR)        // tensor form: t1, t2 move to CPU before the retry
/// safe_mps!(OPTIONS [t1, t2, ..] => |dev| EXPR)  // both
/// safe_mps!(OPTIONS async |dev| EXPR)            // async: a future; EXPR may .await
/// safe_mps!(OPTIONS [t1, ..] => async EXPR)
/// safe_mps!(OPTIONS [t1, ..] => async |dev| EXPR)
///
/// OPTIONS:  label = "name",   (shows in logs, counters and alerts)
///           device = DEVICE,  (the device to try first; forces MPS where
///                              tch::utils::has_mps() says no)
///
/// safe_mps! {                                    // item form, like `@safe_mps_op`
///     #[safe_mps(label = "name", [t1, t2])]      // or #[safe_mps([t1])], #[safe_mps]
///     VIS [async] fn NAME(PARAMS) -> T { BODY }  // t1, t2: parameters
/// }
/// ```
///
/// A trailing comma inside the tensor list is accepted. Each named value
/// implements [`MoveToCpu`](crate::MoveToCpu) (tensors, containers of them, a
/// model's [`VarStore`](tch::nn::VarStore), your own structs) and is a place
/// the macro can borrow mutably: a `mut` binding, a `&mut` reference, or a
/// field reached through one.
///
/// The work may run twice, so it borrows what it uses rather than consuming
/// it.
///
/// What happens, in order:
/// 1. The first attempt runs on the preferred device: the `device = ..` given,
///    else MPS when `tch::utils::has_mps()`, else CPU. (The tensor form runs
///    its tensors wherever they are.) Work with nothing on MPS runs once.
/// 2. If it fails with an MPS error, either way tch reports one (an `Err`
///    whose text [`is_mps_error`](crate::is_mps_error), or the panic of a
///    plain tensor method), the macro logs a warning (label, the error's
///    first line, call site), moves the named tensors to CPU, and runs the
///    work once more with `dev = Device::Cpu`. Any other error or panic
///    propagates untouched, and so does one from the CPU retry. There is no
///    second retry.
/// 3. The value is the work's own: `T`, or `Result<T, E>`. A CPU retry's
///    results stay on CPU.
///
/// The process-wide registry ([`mps`](crate::mps)) disables MPS after
/// repeated failures: then calls go straight to CPU (tensors moved first)
/// until a cool-down passes and one trial call tries MPS again. A `safe_mps!`
/// inside a CPU retry runs on CPU once and never falls back. With the kill
/// switch off ([`set_safe_mps_enabled`](crate::mps::set_safe_mps_enabled),
/// `OPGUARD_SAFE_MPS_DISABLE`), the work runs once on the preferred device
/// and errors propagate.
///
/// # Examples
///
/// The device form, forcing MPS so that the fallback runs for real on a
/// machine without it:
/// ```
/// use opguard::safe_mps;
/// use tch::{Device, Kind, Tensor};
///
/// let xs = Tensor::ones([2, 3], (Kind::Float, Device::Cpu));
/// let sum = safe_mps!(label = "sum", device = Device::Mps, |dev| {
///     xs.f_to_device(dev)?.f_sum(Kind::Float)
/// });
/// assert_eq!(sum.unwrap().double_value(&[]), 6.0);
/// ```
///
/// The tensor form, with a plain (panicking) tensor method:
/// ```
/// use opguard::safe_mps;
/// use tch::{Device, Kind, Tensor};
///
/// let mut xs = Tensor::ones([2, 2], (Kind::Float, Device::Cpu));
/// let mut ys = Tensor::eye(2, (Kind::Float, Device::Cpu));
/// let product = safe_mps!([xs, ys] => xs.matmul(&ys));
/// assert_eq!(product.device(), Device::Cpu);
/// ```
///
/// The async form:
/// ```
/// use opguard::safe_mps;
/// use tch::{Device, Kind, Tensor};
///
/// # futures::executor::block_on(async {
/// let xs = Tensor::ones([4], (Kind::Float, Device::Cpu));
/// let doubled = safe_mps!(async |dev| {
///     futures_timer::Delay::new(std::time::Duration::from_millis(1)).await;
///     xs.to_device(dev) * 2
/// })
/// .await;
/// assert_eq!(doubled.sum(Kind::Float).double_value(&[]), 8.0);
/// # });
/// ```
///
/// The item form:
/// ```
/// use opguard::safe_mps;
/// use tch::{Kind, Tensor};
///
/// safe_mps! {
///     /// Normalises features; falls back to CPU on an MPS error.
///     #[safe_mps(label = "normalise", [xs])]
///     fn normalise(xs: &Tensor) -> Tensor {
///         (xs - xs.mean(Kind::Float)) / xs.std(true)
///     }
/// }
///
/// let xs = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
/// assert_eq!(normalise(&xs).size(), vec![3]);
/// ```
///
/// Misuse does not compile:
/// ```compile_fail
/// let y = opguard::safe_mps!(1 + 1); // neither `|dev|` nor `[tensors] =>`
/// ```
#[cfg(feature = "tch")]
#[macro_export]
macro_rules! safe_mps {
    // safe_mps! { #[safe_mps(..)] fn f(..) -> T { .. } }, attributes in any order
    (# $($item:tt)*) => {
        $crate::__opguard_safe_mps! { @attrs [] # $($item)* }
    };
    // safe_mps! { pub fn f(..) -> T { .. } }
    ($vis:vis fn $($item:tt)*) => {
        $crate::__opguard_split_fn! { __opguard_safe_mps [] [] $vis fn $($item)* }
    };
    // safe_mps! { pub async fn f(..) -> T { .. } }
    ($vis:vis async fn $($item:tt)*) => {
        $crate::__opguard_split_fn! { __opguard_safe_mps [] [] $vis async fn $($item)* }
    };
    // safe_mps!()
    () => {
        ::core::compile_error! { $crate::__opguard_safe_mps_forms!("safe_mps! needs the work to guard.") }
    };
    // Everything else: options first, then the work.
    ($($input:tt)+) => {
        $crate::__opguard_safe_mps! { @opts [] [] $($input)+ }
    };
}

/// Without the `tch` feature, `safe_mps!` says which feature to enable.
#[cfg(not(feature = "tch"))]
#[macro_export]
macro_rules! safe_mps {
    ($($input:tt)*) => {
        ::core::compile_error! {
            "safe_mps! needs the `tch` feature of opguard: opguard = { version = \"..\", features = [\"tch\"] }"
        }
    };
}

/// The text of a `safe_mps!` syntax error: `$what`, then the right forms.
#[doc(hidden)]
#[macro_export]
macro_rules! __opguard_safe_mps_forms {
    ($what:literal) => {
        ::core::concat!(
            $what,
            " The forms are:\n",
            "    safe_mps!(|dev| net.forward(&xs.to_device(dev)))\n",
            "    safe_mps!([xs, ys] => xs.matmul(&ys))\n",
            "    safe_mps!([vs, xs] => |dev| ..)\n",
            "    safe_mps!(async |dev| ..)  or  safe_mps!([xs] => async ..)\n",
            "    with options first: safe_mps!(label = \"name\", device = Device::Mps, |dev| ..)\n",
            "    safe_mps! { #[safe_mps(label = \"name\", [xs])] fn name(xs: &Tensor) -> T { .. } }",
        )
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __opguard_safe_mps {
    // Options, each at most once, before the work.
    (@opts [] $device:tt label = $label:expr, $($rest:tt)+) => {
        $crate::__opguard_safe_mps! { @opts [$label] $device $($rest)+ }
    };
    (@opts $label:tt [] device = $device:expr, $($rest:tt)+) => {
        $crate::__opguard_safe_mps! { @opts $label [$device] $($rest)+ }
    };
    (@opts $label:tt $device:tt [$($t:expr),* $(,)?] => $($rest:tt)+) => {
        $crate::__opguard_safe_mps! { @work $label $device [$($t),*] $($rest)+ }
    };
    (@opts $label:tt $device:tt $($rest:tt)+) => {
        $crate::__opguard_safe_mps! { @work $label $device [] $($rest)+ }
    };

    // The work.
    (@work $l:tt $d:tt $t:tt async |$dev:pat_param| -> $ret:ty $body:block) => {
        $crate::__opguard_safe_mps! { @async $l $d $t $dev [$ret] $body }
    };
    (@work $l:tt $d:tt $t:tt async |$dev:pat_param| $body:expr) => {
        $crate::__opguard_safe_mps! { @async $l $d $t $dev [] $body }
    };
    (@work $l:tt $d:tt [$($t:expr),+] async $body:expr) => {
        $crate::__opguard_safe_mps! { @async $l $d [$($t),+] _ [] $body }
    };
    (@work $l:tt $d:tt $t:tt |$dev:pat_param| -> $ret:ty $body:block) => {
        $crate::__opguard_safe_mps! { @sync $l $d $t $dev [$ret] $body }
    };
    (@work $l:tt $d:tt $t:tt |$dev:pat_param| $body:expr) => {
        $crate::__opguard_safe_mps! { @sync $l $d $t $dev [] $body }
    };
    (@work $l:tt $d:tt [$($t:expr),+] $body:expr) => {
        $crate::__opguard_safe_mps! { @sync $l $d [$($t),+] _ [] $body }
    };
    (@work $($rest:tt)*) => {
        ::core::compile_error! { $crate::__opguard_safe_mps_forms!(
            "safe_mps! takes `|dev| ..` or `[tensors] => ..` after its options."
        ) }
    };

    // Synchronous: a block.
    (@sync $($rest:tt)*) => {
        $crate::__opguard_safe_mps! { @steps sync $($rest)* }
    };
    // Asynchronous: the same steps in an async block.
    (@async $($rest:tt)*) => {
        async { $crate::__opguard_safe_mps! { @steps async $($rest)* } }
    };

    // The steps: decide, first attempt, judge, move, retry once on CPU. The
    // body is expanded twice, so the named values are borrowed by one step
    // at a time.
    (@steps $mode:ident [$($label:expr)?] [$($device:expr)?] [$($t:expr),*] $dev:tt [$($ret:ty)?] $body:tt) => {{
        #[allow(unused_imports)]
        use $crate::__private::{ErrorOfOther as _, ErrorOfResult as _, MoveNamed as _};
        let mut __opguard_guard = $crate::__private::MpsGuard::begin(
            $crate::__opguard_site!($($label)?),
            $crate::__opguard_safe_mps!(@device $($device)?),
            $crate::__opguard_safe_mps!(@tensor_form $($t),*),
        );
        let __opguard_first = match __opguard_guard.first_device() {
            $crate::__private::Some(__opguard_device) => {
                if __opguard_guard.to_cpu_first() {
                    $( $t.__opguard_move_to_cpu(); )*
                }
                let __opguard_out = $crate::__opguard_safe_mps!(@run $mode __opguard_guard [$($ret)?] {
                    let $dev = __opguard_device;
                    $body
                });
                __opguard_guard.judge(__opguard_out, |__opguard_v| {
                    (&$crate::__private::Classify(__opguard_v)).error_message()
                })
            }
            $crate::__private::None => $crate::__private::Err(__opguard_guard.injected()),
        };
        match __opguard_first {
            $crate::__private::Ok(__opguard_value) => __opguard_value,
            $crate::__private::Err(__opguard_fallback) => {
                $( $t.__opguard_move_to_cpu(); )*
                let __opguard_out = $crate::__opguard_safe_mps!(
                    @retry $mode __opguard_guard __opguard_fallback [$($ret)?] {
                        let $dev = $crate::__private::Device::Cpu;
                        $body
                    }
                );
                __opguard_guard.finish(__opguard_out, |__opguard_v| {
                    (&$crate::__private::Classify(__opguard_v)).error_message()
                })
            }
        }
    }};
    (@run sync $guard:ident [$($ret:ty)?] $block:block) => {
        $guard.run(|| $(-> $ret)? { $block })
    };
    (@run async $guard:ident [$($ret:ty)?] $block:block) => {
        $guard.run_async($crate::__opguard_safe_mps!(@block [$($ret)?] $block)).await
    };
    (@retry sync $guard:ident $fallback:ident [$($ret:ty)?] $block:block) => {
        $guard.retry($fallback, || $(-> $ret)? { $block })
    };
    (@retry async $guard:ident $fallback:ident [$($ret:ty)?] $block:block) => {
        $guard.retry_async($fallback, $crate::__opguard_safe_mps!(@block [$($ret)?] $block)).await
    };

    (@block [] $block:block) => { async $block };
    (@block [$ret:ty] $block:block) => { $crate::__private::returning::<$ret, _>(async $block) };
    (@device) => { $crate::__private::None };
    (@device $device:expr) => { $crate::__private::Some($device) };
    (@tensor_form) => { false };
    (@tensor_form $($t:expr),+) => { true };

    // Item form: take out `#[safe_mps]` or `#[safe_mps(ARGS)]`, keep the other attributes.
    (@attrs [$($kept:tt)*] # [safe_mps $(( $($args:tt)* ))?] $($rest:tt)*) => {
        $crate::__opguard_split_fn! { __opguard_safe_mps [$($($args)*)?] [$($kept)*] $($rest)* }
    };
    (@attrs [$($kept:tt)*] # $attr:tt $($rest:tt)*) => {
        $crate::__opguard_safe_mps! { @attrs [$($kept)* # $attr] $($rest)* }
    };
    (@attrs [$($kept:tt)*] $($rest:tt)*) => {
        $crate::__opguard_split_fn! { __opguard_safe_mps [] [$($kept)*] $($rest)* }
    };
    (@emit [$($args:tt)*] [$($head:tt)*] [$($async:tt)?] $name:ident [$($gen:tt)*] ( $($params:tt)* ) [$ret:ty] [$($w:tt)*] $body:block) => {
        $($head)* $($async)? fn $name $($gen)* ( $($params)* ) -> $ret $($w)* {
            $crate::__opguard_safe_mps! { @item [$($async)?] [$ret] $body $($args)* }
        }
    };
    // The attribute's arguments: an optional label, then an optional list of parameters.
    (@item $async:tt $ret:tt $body:block label = $label:expr, [$($t:ident),* $(,)?]) => {
        $crate::__opguard_safe_mps! { @item_body $async $ret $body [label = $label,] [$($t),*] }
    };
    (@item $async:tt $ret:tt $body:block label = $label:expr $(,)?) => {
        $crate::__opguard_safe_mps! { @item_body $async $ret $body [label = $label,] [] }
    };
    (@item $async:tt $ret:tt $body:block [$($t:ident),* $(,)?]) => {
        $crate::__opguard_safe_mps! { @item_body $async $ret $body [] [$($t),*] }
    };
    (@item $async:tt $ret:tt $body:block) => {
        $crate::__opguard_safe_mps! { @item_body $async $ret $body [] [] }
    };
    (@item $($rest:tt)*) => {
        ::core::compile_error! { $crate::__opguard_safe_mps_forms!(
            "#[safe_mps(..)] takes an optional `label = \"name\"`, then an optional list of parameters `[xs, ys]`."
        ) }
    };
    (@item_body [] [$ret:ty] $body:block [$($opts:tt)*] [$($t:ident),*]) => {{
        $( #[allow(unused_mut)] let mut $t = $t; )*
        $crate::safe_mps!($($opts)* [$($t),*] => |_| -> $ret $body)
    }};
    (@item_body [async] [$ret:ty] $body:block [$($opts:tt)*] [$($t:ident),*]) => {{
        $( #[allow(unused_mut)] let mut $t = $t; )*
        $crate::safe_mps!($($opts)* [$($t),*] => async |_| -> $ret $body).await
    }};
}
