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
/// OPTIONS, each optional, in this order:
///           label = "name",   (shows in logs, counters and alerts)
///           device = DEVICE,  (the device of the first attempt; forces MPS
///                              where tch::utils::has_mps() says no)
///
/// safe_mps! {                                    // item form
///     #[safe_mps(label = "name", device = DEVICE, [t1, t2])]
///     VIS [async] fn NAME(PARAMS) -> T { BODY }  // t1, t2: parameters, or `self`
/// }                                              // each option optional: #[safe_mps([t1])], #[safe_mps]
/// ```
///
/// Every form takes the same options, and a trailing comma after the last
/// argument (and inside the tensor list). In the item form the body does not
/// see `dev`: it runs on its parameters where they are, and `device = ..`
/// says that the work is MPS work even when they are on CPU (the body moves
/// them, say). Its return type is written where the body's value is typed,
/// so it cannot hold `impl Trait` (a compile error says so): put the
/// expression form inside such a function instead. An `async fn` may carry
/// `#[timeout(..)]` too, before or after `#[safe_mps(..)]`: see
/// [`timeout_async!`](crate::timeout_async)'s item form.
///
/// Each named value implements [`MoveToCpu`](crate::mps::MoveToCpu) (tensors,
/// containers of them, a model's [`VarStore`](tch::nn::VarStore), your own
/// structs) and is a place the macro can borrow mutably: a `mut` binding, a
/// `&mut` reference, or a field reached through one. The work may run twice,
/// so it borrows what it uses rather than consuming it.
///
/// What happens, in order:
/// 1. The first attempt runs on the preferred device: the `device = ..` given,
///    else MPS when `tch::utils::has_mps()`, else CPU. Work that touches no
///    MPS (the device is not MPS and no named value is on MPS) runs once,
///    untouched by the registry, and errors propagate.
/// 2. If it fails with an MPS error, either way tch reports one (an `Err`
///    whose text [`is_mps_error`](crate::mps::is_mps_error), or the panic of a
///    plain tensor method), the macro logs a warning (label, the error's
///    first line, call site), moves the named values to CPU, and runs the
///    work once more with `dev = Device::Cpu`. Any other error or panic
///    propagates untouched, and so does one from the CPU retry. There is no
///    second retry. A handled MPS panic prints nothing through the panic
///    hook: the warning is its only trace. Built with `panic = "abort"`, a panic
///    cannot be caught: a plain method's MPS error ends the process (its
///    panic is printed), and only the `f_` methods' errors fall back, so
///    write MPS work with those there.
/// 3. The value is the work's own: `T`, or `Result<T, E>`. A CPU retry's
///    results stay on CPU.
///
/// The process-wide registry ([`mps`](crate::mps)) remembers failures, so that
/// MPS trouble costs one failure rather than one per call. An *op-level* MPS
/// error (an operator, dtype or layout MPS does not support, see
/// [`MpsErrorKind`](crate::mps::MpsErrorKind)) pins this call site to CPU: its
/// next calls go straight there, with no MPS attempt and no warning, while
/// every other call site keeps MPS; after the cool-down one call tries MPS
/// again. Repeated *device-level* errors (MPS missing, out of memory, ...)
/// disable MPS for every call until the cool-down ends and one trial call
/// tries it again. A `safe_mps!` inside a CPU retry runs on CPU once and
/// never falls back. With the kill switch off
/// ([`set_enabled`](crate::mps::set_enabled),
/// `OPGUARD_SAFE_MPS_DISABLE`), the work runs once on the preferred device
/// and errors propagate.
///
/// # A model on `dev`
///
/// Put the model on the device inside the work, with `vs.set_device(dev)`,
/// and name its `VarStore`: when that fails on MPS (tch panics inside
/// `set_device`, holding the store's lock), the fallback repairs the store,
/// moves every variable and its gradient to CPU, and the retry trains on
/// CPU, the optimizer too. An optimizer whose state (Adam's moments) was
/// already made on MPS keeps it there: build a new one after a fallback.
///
/// ```no_run
/// # use opguard::safe_mps;
/// # use tch::{nn::{self, Module, OptimizerConfig}, Device, Kind, Tensor};
/// # let mut vs = nn::VarStore::new(Device::Cpu);
/// # let net = nn::linear(vs.root(), 2, 1, Default::default());
/// # let mut opt = nn::Adam::default().build(&vs, 1e-3).unwrap();
/// # let (xs, ys) = (Tensor::ones([4, 2], (Kind::Float, Device::Cpu)), Tensor::ones([4, 1], (Kind::Float, Device::Cpu)));
/// let loss = safe_mps!(label = "train_step", [vs] => |dev| {
///     vs.set_device(dev);
///     let loss = net.forward(&xs.f_to_device(dev)?).f_mse_loss(&ys.f_to_device(dev)?, tch::Reduction::Mean)?;
///     opt.backward_step(&loss);
///     loss.f_double_value(&[])
/// });
/// ```
///
/// # Async, and multi-thread runtimes
///
/// The async forms give a future. tch's `Tensor` is `Send` but not `Sync`,
/// so a future whose work holds a `&Tensor` across an `.await` is not
/// `Send`, and `tokio::spawn` on a multi-thread runtime refuses it. Named
/// values are held by `&mut`, so `[xs] => async ..` is `Send` when `xs` is:
/// move owned tensors into the task and name them. Otherwise run synchronous
/// work with `spawn_blocking` or `block_in_place`, or keep the future on one
/// thread (`LocalSet`, `spawn_local`); `examples/async_tensors.rs` shows all
/// four.
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
    // safe_mps! { #[safe_mps(..)] fn f(..) -> T { .. } }, attributes in any
    // order, `#[timeout(..)]` among them
    (# $($item:tt)*) => {
        $crate::__opguard_item! { @attrs safe_mps [] [] # $($item)* }
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

/// Its tokens with the `tch` feature; without it, the error `safe_mps!`
/// gives, for a `#[safe_mps(..)]` in `timeout_async!`'s item form.
#[cfg(feature = "tch")]
#[doc(hidden)]
#[macro_export]
macro_rules! __opguard_with_tch {
    ($($tokens:tt)*) => {
        $($tokens)*
    };
}

/// Its tokens with the `tch` feature; without it, the error `safe_mps!`
/// gives, for a `#[safe_mps(..)]` in `timeout_async!`'s item form.
#[cfg(not(feature = "tch"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __opguard_with_tch {
    ($($tokens:tt)*) => {
        $crate::safe_mps! {}
    };
}

/// The text of a `safe_mps!` syntax error: the pieces of `$what`, then the right forms.
#[doc(hidden)]
#[macro_export]
macro_rules! __opguard_safe_mps_forms {
    ($($what:expr),+) => {
        ::core::concat!(
            $($what,)+
            " The forms are:\n",
            "    safe_mps!(|dev| net.forward(&xs.to_device(dev)))\n",
            "    safe_mps!([xs, ys] => xs.matmul(&ys))\n",
            "    safe_mps!([vs, xs] => |dev| ..)\n",
            "    safe_mps!(async |dev| ..)  or  safe_mps!([xs] => async ..)\n",
            "    with options first: safe_mps!(label = \"name\", device = Device::Mps, |dev| ..)\n",
            "    safe_mps! { #[safe_mps(label = \"name\", device = Device::Mps, [xs])] fn name(xs: &Tensor) -> T { .. } }",
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
    // An option it does not have, or one given twice: name it.
    (@opts $label:tt $device:tt $option:ident = $($rest:tt)*) => {
        ::core::compile_error! { $crate::__opguard_safe_mps_forms!(
            "safe_mps! has no `", ::core::stringify!($option), " = ..` here: its options are \
            `label = \"name\"` and `device = DEVICE`, each at most once, before the work."
        ) }
    };
    (@opts $label:tt $device:tt [$($t:expr),* $(,)?] => $($rest:tt)+) => {
        $crate::__opguard_safe_mps! { @work $label $device [$($t),*] $($rest)+ }
    };
    (@opts $label:tt $device:tt $($rest:tt)+) => {
        $crate::__opguard_safe_mps! { @work $label $device [] $($rest)+ }
    };

    // The work, with an optional trailing comma.
    (@work $l:tt $d:tt $t:tt async |$dev:pat_param| -> $ret:ty $body:block $(,)?) => {
        $crate::__opguard_safe_mps! { @async $l $d $t $dev [$ret] $body }
    };
    (@work $l:tt $d:tt $t:tt async |$dev:pat_param| $body:expr $(,)?) => {
        $crate::__opguard_safe_mps! { @async $l $d $t $dev [] $body }
    };
    (@work $l:tt $d:tt [$($t:expr),+] async $body:expr $(,)?) => {
        $crate::__opguard_safe_mps! { @async $l $d [$($t),+] _ [] $body }
    };
    (@work $l:tt $d:tt $t:tt |$dev:pat_param| -> $ret:ty $body:block $(,)?) => {
        $crate::__opguard_safe_mps! { @sync $l $d $t $dev [$ret] $body }
    };
    (@work $l:tt $d:tt $t:tt |$dev:pat_param| $body:expr $(,)?) => {
        $crate::__opguard_safe_mps! { @sync $l $d $t $dev [] $body }
    };
    (@work $l:tt $d:tt [$($t:expr),+] $body:expr $(,)?) => {
        $crate::__opguard_safe_mps! { @sync $l $d [$($t),+] _ [] $body }
    };
    (@work $($rest:tt)*) => {
        ::core::compile_error! { $crate::__opguard_safe_mps_forms!(
            "safe_mps! takes `|dev| ..` or `[tensors] => ..` after its options."
        ) }
    };

    // Synchronous: the loop of `mps::call`, with the body expanded once, in
    // a closure of its own (where `?` and `return` land).
    (@sync $label:tt $device:tt $t:tt $dev:tt [$($ret:ty)?] $body:tt) => {
        $crate::__opguard_safe_mps! { @loop $label $device $t
            |__opguard_driver, __opguard_device| __opguard_driver.attempt(|| $(-> $ret)? {
                let $dev = __opguard_device;
                $body
            })
        }
    };
    // Asynchronous: the same loop in an async block; the body is an async
    // block of its own, awaited in place.
    (@async $label:tt $device:tt [$($t:expr),*] $dev:tt [$($ret:ty)?] $body:tt) => {
        async {
            $crate::__opguard_safe_mps! { @loop $label $device [$($t),*]
                |__opguard_driver, __opguard_device| $crate::__private::attempt_async(
                    __opguard_driver.mode(),
                    $crate::__opguard_safe_mps!(@block [$($ret)?] {
                        // Borrow the named values mutably, so that the body's
                        // future holds `&mut` (Send for a tensor), not `&`.
                        $( $t.__opguard_hold(); )*
                        let $dev = __opguard_device;
                        $body
                    }),
                )
                .await
            }
        }
    };
    // The loop itself: `run` runs the body on `$v` through `$d`.
    (@loop [$($label:expr)?] [$($device:expr)?] [$($t:expr),*] |$d:ident, $v:ident| $run:expr) => {{
        #[allow(unused_imports)]
        use $crate::__private::MoveNamed as _;
        $crate::__opguard_drive!(
            $crate::__private::Driver::new(
                $crate::__opguard_site!(@ MpsSite $($label)?),
                $crate::__opguard_safe_mps!(@device $($device)?),
                $crate::__opguard_safe_mps!(@named $($t),*),
            ),
            probe: false $(|| $t.__opguard_is_on_mps())*,
            move_to_cpu: { $( $t.__opguard_move_to_cpu(); )* },
            run: |$d, $v| $run,
        )
    }};

    (@block [] $block:block) => { async $block };
    (@block [$ret:ty] $block:block) => { $crate::__private::returning::<$ret, _>(async $block) };
    (@named) => { false };
    (@named $($t:expr),+) => { true };
    (@device) => { $crate::__private::None::<$crate::__private::Device> };
    (@device $device:expr) => { $crate::__private::Some::<$crate::__private::Device>($device) };

    // Item form: the function that `__opguard_item!` took apart.
    (@emit [$($args:tt)*] [$($head:tt)*] [$($async:tt)?] $name:ident [$($gen:tt)*] ( $($params:tt)* ) [$ret:ty] [$($w:tt)*] $body:block) => {
        $($head)* $($async)? fn $name $($gen)* ( $($params)* ) -> $ret $($w)* {
            $crate::__opguard_safe_mps! { @item [$($async)?] [$ret] $body [] [] $($args)* }
        }
    };
    // The attribute's arguments, each optional, in this order, commas after
    // each: a label, a device, a list of parameters.
    (@item $a:tt $r:tt $b:block [] $d:tt label = $label:expr $(, $($rest:tt)*)?) => {
        $crate::__opguard_safe_mps! { @item $a $r $b [$label] $d $($($rest)*)? }
    };
    (@item $a:tt $r:tt $b:block $l:tt [] device = $device:expr $(, $($rest:tt)*)?) => {
        $crate::__opguard_safe_mps! { @item $a $r $b $l [$device] $($($rest)*)? }
    };
    (@item $a:tt $r:tt $b:block $l:tt $d:tt [$($t:ident),* $(,)?] $(,)?) => {
        $crate::__opguard_safe_mps! { @item_body $a $r $b $l $d [$($t),*] }
    };
    (@item $a:tt $r:tt $b:block $l:tt $d:tt) => {
        $crate::__opguard_safe_mps! { @item_body $a $r $b $l $d [] }
    };
    (@item $($rest:tt)*) => {
        ::core::compile_error! { $crate::__opguard_safe_mps_forms!(
            "#[safe_mps(..)] takes, each optional and in this order: `label = \"name\"`, `device = DEVICE`, a list of parameters `[xs, ys]`."
        ) }
    };
    (@item_body [] [$ret:ty] $body:block $l:tt $d:tt [$($t:ident),*]) => {{
        $crate::__opguard_safe_mps! { @rebind $($t)* }
        $crate::__opguard_safe_mps! { @sync $l $d [$($t),*] _ [$ret] $body }
    }};
    (@item_body [async] [$ret:ty] $body:block $l:tt $d:tt [$($t:ident),*]) => {{
        $crate::__opguard_safe_mps! { @rebind $($t)* }
        $crate::__opguard_safe_mps! { @async $l $d [$($t),*] _ [$ret] $body }.await
    }};
    // Named parameters are bound again as `mut`, so that one taken by value
    // can be moved in place; `self` cannot be, and needs not: a method's
    // `&mut self` is borrowed as it is.
    (@rebind) => {};
    (@rebind self $($t:ident)*) => {
        $crate::__opguard_safe_mps! { @rebind $($t)* }
    };
    (@rebind $t0:ident $($t:ident)*) => {
        #[allow(unused_mut)]
        let mut $t0 = $t0;
        $crate::__opguard_safe_mps! { @rebind $($t)* }
    };
}

/// Wraps a value so that `(&Classify(&v)).error_message()` picks, at compile
/// time, [`ErrorOfResult`] for a `Result` whose error is `Display`, and
/// [`ErrorOfOther`] for anything else (autoref specialisation).
#[derive(Debug)]
pub struct Classify<'a, T>(pub &'a T);

/// The error text of a `Result`'s `Err`.
pub trait ErrorOfResult {
    /// The error's text, if the value is an `Err`.
    fn error_message(&self) -> Option<String>;
}

impl<T, E: std::fmt::Display> ErrorOfResult for Classify<'_, Result<T, E>> {
    #[inline]
    fn error_message(&self) -> Option<String> {
        self.0.as_ref().err().map(ToString::to_string)
    }
}

/// The value of MPS work with a timeout inside it (`#[safe_mps(..)]` listed
/// before `#[timeout(..)]`): a timeout's error is no MPS error, and the
/// work's own error, when it finished in time, is looked at as usual.
#[derive(Debug)]
pub struct Timed<T>(pub Result<T, crate::TimeoutError>);

impl<T> Timed<T> {
    /// The timeout's result.
    #[inline]
    pub fn into_inner(self) -> Result<T, crate::TimeoutError> {
        self.0
    }
}

impl<T, E: std::fmt::Display> ErrorOfResult for Classify<'_, Timed<Result<T, E>>> {
    #[inline]
    fn error_message(&self) -> Option<String> {
        match &(self.0).0 {
            Ok(Err(e)) => Some(e.to_string()),
            _ => None,
        }
    }
}

/// Values that are not a `Result` carry no error text: only panics count.
pub trait ErrorOfOther {
    /// Always `None`.
    #[inline]
    fn error_message(&self) -> Option<String> {
        None
    }
}

impl<T> ErrorOfOther for &Classify<'_, T> {}

/// Moves a value named in `[..] =>` to CPU, or asks whether it is on MPS.
/// Methods, so that a `&mut` binding works without `mut`; the bound is
/// checked after the method is found, so that a wrong type gets
/// `MoveToCpu`'s own message.
#[cfg(feature = "tch")]
pub trait MoveNamed {
    /// [`MoveToCpu::move_to_cpu`](crate::mps::MoveToCpu::move_to_cpu).
    #[inline]
    fn __opguard_move_to_cpu(&mut self)
    where
        Self: crate::mps::MoveToCpu,
    {
        crate::mps::MoveToCpu::move_to_cpu(self);
    }

    /// Nothing; a mutable use of the named value inside the async work, so
    /// that the work's future captures it by `&mut` (`Send` for a tensor)
    /// rather than by `&` (which needs `Sync`, and a tensor is not).
    #[inline(always)]
    fn __opguard_hold(&mut self) {}

    /// [`MoveToCpu::is_on_mps`](crate::mps::MoveToCpu::is_on_mps).
    #[inline]
    fn __opguard_is_on_mps(&self) -> bool
    where
        Self: crate::mps::MoveToCpu,
    {
        crate::mps::MoveToCpu::is_on_mps(self)
    }
}

#[cfg(feature = "tch")]
impl<T: ?Sized> MoveNamed for T {}
