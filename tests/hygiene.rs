//! The macros expand the same whatever the caller has in scope, accept every
//! form with and without a trailing comma, and the item form keeps signatures.
#![allow(dead_code, non_camel_case_types, clippy::multiple_bound_locations)]

use std::future::pending;
use std::time::Duration;

use futures::executor::block_on;

// Shadow what a careless expansion would name.
struct Ok;
struct Some;
struct None;
struct Result;
struct Option;
struct Future;
struct Duration_;
mod core {}
mod std_ {}

#[test]
fn every_expression_form_with_and_without_trailing_comma() {
    let d = Duration::from_millis(500);
    assert!(block_on(opguard::timeout_async!(async { 1 })).is_ok());
    assert!(block_on(opguard::timeout_async!(async { 1 },)).is_ok());
    assert!(block_on(opguard::timeout_async!(1, async { 1 })).is_ok());
    assert!(block_on(opguard::timeout_async!(1, async { 1 },)).is_ok());
    assert!(block_on(opguard::timeout_async!(d, async { 1 })).is_ok());
    assert!(block_on(opguard::timeout_async!(d, async { 1 },)).is_ok());
    assert!(block_on(opguard::timeout_async!(label = "h", async { 1 })).is_ok());
    assert!(block_on(opguard::timeout_async!(label = "h", async { 1 },)).is_ok());
    assert!(block_on(opguard::timeout_async!(label = "h", 0.5, async { 1 })).is_ok());
    assert!(block_on(opguard::timeout_async!(label = "h", 0.5, async { 1 },)).is_ok());
    let at = std::time::Instant::now() + d;
    assert!(block_on(opguard::timeout_async!(until = at, async { 1 })).is_ok());
    assert!(block_on(opguard::timeout_async!(until = at, async { 1 },)).is_ok());
    assert!(
        block_on(opguard::timeout_async!(label = "h", until = at, async {
            1
        }))
        .is_ok()
    );
    assert!(
        block_on(opguard::timeout_async!(label = "h", until = at, async {
            1
        },))
        .is_ok()
    );
}

opguard::timeout_async! {
    /// The deadline is an expression of the parameters, evaluated at each call.
    #[timeout(label = "by_deadline", until = deadline)]
    async fn by_deadline(deadline: std::time::Instant, hang: bool) -> u8 {
        if hang {
            pending::<()>().await;
        }
        1
    }
}

#[test]
fn item_form_takes_a_deadline() {
    let soon = std::time::Instant::now() + Duration::from_millis(20);
    assert_eq!(
        block_on(by_deadline(soon, false)),
        std::result::Result::Ok(1)
    );
    let err = block_on(by_deadline(soon, true)).unwrap_err();
    assert!(err.is_deadline(), "{err}");
    assert_eq!(err.label(), std::option::Option::Some("by_deadline"));
    assert!(std::time::Instant::now() >= soon);
}

#[test]
fn labels_may_be_named_constants() {
    const OP: &str = "named_const";
    let err = block_on(opguard::timeout_async!(label = OP, 0.001, pending::<()>())).unwrap_err();
    assert_eq!(err.label(), std::option::Option::Some("named_const"));
}

#[test]
fn takes_anything_into_future() {
    struct Later;
    impl std::future::IntoFuture for Later {
        type Output = u8;
        type IntoFuture = std::future::Ready<u8>;
        fn into_future(self) -> Self::IntoFuture {
            std::future::ready(9)
        }
    }
    assert_eq!(
        block_on(opguard::timeout_async!(1, Later)),
        std::result::Result::Ok(9)
    );
}

#[test]
fn temporaries_in_the_future_expression_live_long_enough() {
    async fn len(s: &str) -> usize {
        s.len()
    }
    let n = block_on(async { opguard::timeout_async!(1, len(&String::from("abc"))).await });
    assert_eq!(n, std::result::Result::Ok(3));
}

opguard::timeout_async! {
    /// Doc comments and other attributes stay on the function.
    #[inline]
    #[timeout(label = "doubled", 5)]
    #[must_use = "it is a future"]
    pub async fn doubled(x: u32) -> u32 {
        x * 2
    }
}

opguard::timeout_async! {
    #[timeout]
    async fn unit_with_default_timeout() {}
}

opguard::timeout_async! {
    async fn no_attribute_uses_the_default(x: u8) -> u8 { x }
}

opguard::timeout_async! {
    #[timeout(0.01)]
    async fn hangs() -> u8 {
        pending::<u8>().await
    }
}

opguard::timeout_async! {
    #[timeout(Duration::from_secs(1))]
    pub(crate) async fn generic<'a, T: Clone + Send>(items: &'a [T], i: usize) -> std::option::Option<T>
    where
        T: std::fmt::Debug,
    {
        items.get(i).cloned()
    }
}

opguard::timeout_async! {
    #[timeout(1)]
    async fn question_mark(s: &str) -> std::result::Result<i64, std::num::ParseIntError> {
        let v: i64 = s.parse()?;
        if v < 0 {
            return std::result::Result::Ok(0);
        }
        std::result::Result::Ok(v)
    }
}

// Generic parameters whose bounds hold parentheses (`Fn(u8) -> u8`) and
// nested angle brackets, `>>` and `<<` among them.
opguard::timeout_async! {
    #[timeout(1)]
    async fn bounds_with_parentheses_and_angles<
        F: Fn(u8) -> u8 + Send,
        I: Iterator<Item = Vec<u8>>,
        J: From<<I as Iterator>::Item>,
        const N: usize,
    >(
        f: F,
        mut items: I,
    ) -> (u8, std::option::Option<J>) {
        (f(N as u8), items.next().map(J::from))
    }
}

// A where clause of twenty bounds: the splitter takes the where clause
// four tokens at a time, well inside the compiler's limit on macro
// recursion (it failed from about fourteen bounds).
opguard::timeout_async! {
    #[timeout(1)]
    #[allow(clippy::too_many_arguments)]
    async fn a_long_where_clause<
        T0, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13, T14, T15, T16, T17, T18, T19,
    >(
        _: T0, _: T1, _: T2, _: T3, _: T4, _: T5, _: T6, _: T7, _: T8, _: T9,
        _: T10, _: T11, _: T12, _: T13, _: T14, _: T15, _: T16, _: T17, _: T18, _: T19,
    ) -> u8
    where
        T0: Clone + Send,
        T1: Clone + Send,
        T2: Clone + Send,
        T3: Clone + Send,
        T4: Clone + Send,
        T5: Clone + Send,
        T6: Clone + Send,
        T7: Clone + Send,
        T8: Clone + Send,
        T9: Clone + Send,
        T10: Clone + Send,
        T11: Clone + Send,
        T12: Clone + Send,
        T13: Clone + Send,
        T14: Clone + Send,
        T15: Clone + Send,
        T16: Clone + Send,
        T17: Clone + Send,
        T18: Clone + Send,
        T19: Clone + Send,
    {
        20
    }
}

/// `$($m)::+! { <a doc comment of 128 lines> $($item)* }`: one `#[doc]`
/// line doubled seven times.
macro_rules! with_128_doc_lines {
    ($($m:ident)::+ { $($item:tt)* }) => {
        with_128_doc_lines! { @double [#[doc = "."]] [x x x x x x x] $($m)::+ { $($item)* } }
    };
    (@double [$($d:tt)*] [] $($m:ident)::+ { $($item:tt)* }) => {
        $($m)::+! { $($d)* $($item)* }
    };
    (@double [$($d:tt)*] [x $($n:tt)*] $($m:ident)::+ { $($item:tt)* }) => {
        with_128_doc_lines! { @double [$($d)* $($d)*] [$($n)*] $($m)::+ { $($item)* } }
    };
}

// A doc comment of 128 lines, each a `#[doc]` attribute: the item forms read
// them four at a time, well inside the compiler's limit on macro recursion
// (from about 110 lines, it stopped them).
with_128_doc_lines! {
    opguard::timeout_async {
        #[timeout(1)]
        async fn a_long_doc_comment() -> u8 {
            128
        }
    }
}

struct Trader {
    name: String,
}

impl Trader {
    opguard::timeout_async! {
        #[timeout(label = "trader_name", 1)]
        async fn name(&self) -> &str {
            &self.name
        }
    }
}

#[test]
fn item_form_keeps_the_signature_and_times_the_body() {
    assert_eq!(block_on(doubled(21)), std::result::Result::Ok(42));
    assert_eq!(
        block_on(unit_with_default_timeout()),
        std::result::Result::Ok(())
    );
    assert_eq!(
        block_on(no_attribute_uses_the_default(4)),
        std::result::Result::Ok(4)
    );
    let err = block_on(hangs()).unwrap_err();
    assert_eq!(
        err.duration(),
        std::option::Option::Some(Duration::from_millis(10))
    );
    assert_eq!(
        block_on(generic(&["a", "b"], 1)),
        std::result::Result::Ok(std::option::Option::Some("b"))
    );
    assert_eq!(
        block_on(question_mark("12")).unwrap(),
        std::result::Result::Ok(12)
    );
    assert_eq!(
        block_on(question_mark("-3")).unwrap(),
        std::result::Result::Ok(0)
    );
    assert!(block_on(question_mark("x")).unwrap().is_err());
    assert_eq!(
        block_on(bounds_with_parentheses_and_angles::<_, _, Vec<u8>, 2>(
            |x| x + 40,
            vec![vec![7u8]].into_iter(),
        )),
        std::result::Result::Ok((42, std::option::Option::Some(vec![7])))
    );
    assert_eq!(
        block_on(a_long_where_clause(
            0u8, 1u8, 2u8, 3u8, 4u8, 5u8, 6u8, 7u8, 8u8, 9u8, 10u8, 11u8, 12u8, 13u8, 14u8, 15u8,
            16u8, 17u8, 18u8, 19u8,
        )),
        std::result::Result::Ok(20)
    );
    assert_eq!(block_on(a_long_doc_comment()), std::result::Result::Ok(128));
    let t = Trader {
        name: "desk".into(),
    };
    assert_eq!(block_on(t.name()), std::result::Result::Ok("desk"));
}

opguard::timeout_async! {
    #[timeout(1)]
    async fn early_return_with_coercion(flag: bool) -> Box<dyn std::fmt::Display> {
        if flag {
            // An early `return` that needs a coercion spells it out (see the docs).
            return Box::new(1u8) as _;
        }
        Box::new("two")
    }
}

#[test]
fn returns_and_tails_get_coercions() {
    assert_eq!(
        block_on(early_return_with_coercion(true))
            .unwrap()
            .to_string(),
        "1"
    );
    assert_eq!(
        block_on(early_return_with_coercion(false))
            .unwrap()
            .to_string(),
        "two"
    );
}

// The same doc comment on `safe_mps!`'s item form.
#[cfg(feature = "tch")]
with_128_doc_lines! {
    opguard::safe_mps {
        #[safe_mps([xs])]
        fn a_long_doc_comment_on_tensor_work(xs: &tch::Tensor) -> i64 {
            xs.dim() as i64
        }
    }
}

/// Every form of `safe_mps!`, each with and without a trailing comma, with
/// `Ok`, `Some`, `None`, `Result` and `Option` shadowed around it.
#[cfg(feature = "tch")]
#[test]
fn every_safe_mps_form_with_and_without_trailing_comma() {
    use opguard::safe_mps;
    use tch::{Device, Kind, Tensor};

    let cpu = Device::Cpu;
    let mut xs = Tensor::ones([2], (Kind::Float, cpu));
    let sum = |t: Tensor| t.sum(Kind::Float).double_value(&[]);
    let forms = [
        sum(safe_mps!(|dev| xs.to_device(dev))),
        sum(safe_mps!(|dev| xs.to_device(dev),)),
        sum(safe_mps!(|dev| -> Tensor { xs.to_device(dev) })),
        sum(safe_mps!(|dev| -> Tensor { xs.to_device(dev) },)),
        sum(safe_mps!([xs] => xs.shallow_clone())),
        sum(safe_mps!([xs] => xs.shallow_clone(),)),
        sum(safe_mps!([xs,] => xs.shallow_clone())),
        sum(safe_mps!([xs] => |dev| xs.to_device(dev))),
        sum(safe_mps!([xs] => |dev| xs.to_device(dev),)),
        sum(safe_mps!(label = "h", |dev| xs.to_device(dev))),
        sum(safe_mps!(label = "h", |dev| xs.to_device(dev),)),
        sum(safe_mps!(device = cpu, |dev| xs.to_device(dev))),
        sum(safe_mps!(device = cpu, |dev| xs.to_device(dev),)),
        sum(safe_mps!(label = "h", device = cpu, [xs] => |dev| xs.to_device(dev))),
        sum(safe_mps!(label = "h", device = cpu, [xs] => |dev| xs.to_device(dev),)),
        sum(block_on(safe_mps!(async |dev| xs.to_device(dev)))),
        sum(block_on(safe_mps!(async |dev| xs.to_device(dev),))),
        sum(block_on(safe_mps!(async |dev| -> Tensor {
            xs.to_device(dev)
        },))),
        sum(block_on(safe_mps!([xs] => async xs.shallow_clone()))),
        sum(block_on(safe_mps!([xs] => async xs.shallow_clone(),))),
        sum(block_on(safe_mps!([xs] => async |dev| xs.to_device(dev),))),
        sum(block_on(
            safe_mps!(label = "h", device = cpu, [xs] => async |dev| xs.to_device(dev),),
        )),
    ];
    assert_eq!(forms, [2.0; 22]);

    safe_mps! { fn bare(xs: &Tensor) -> Tensor { xs * 2 } }
    safe_mps! { #[safe_mps] fn plain(xs: &Tensor) -> Tensor { xs * 2 } }
    safe_mps! { #[safe_mps(label = "h",)] fn labelled(xs: &Tensor) -> Tensor { xs * 2 } }
    safe_mps! { #[safe_mps(device = Device::Cpu)] fn on_cpu(xs: &Tensor) -> Tensor { xs * 2 } }
    safe_mps! { #[safe_mps(device = Device::Cpu,)] fn on_cpu_comma(xs: &Tensor) -> Tensor { xs * 2 } }
    safe_mps! { #[safe_mps([xs])] fn listed(xs: &Tensor) -> Tensor { xs * 2 } }
    safe_mps! { #[safe_mps([xs],)] fn listed_comma(xs: &Tensor) -> Tensor { xs * 2 } }
    safe_mps! {
        #[safe_mps(label = "h", device = Device::Cpu, [xs, ys,],)]
        fn everything(xs: &Tensor, ys: &Tensor) -> Tensor { xs + ys }
    }
    safe_mps! {
        #[safe_mps(label = "h", device = Device::Cpu, [xs])]
        async fn everything_async(xs: &Tensor) -> Tensor { xs * 2 }
    }
    let items = [
        bare(&xs),
        plain(&xs),
        labelled(&xs),
        on_cpu(&xs),
        on_cpu_comma(&xs),
        listed(&xs),
        listed_comma(&xs),
        everything(&xs, &xs),
        block_on(everything_async(&xs)),
    ];
    assert!(items.into_iter().all(|t| sum(t) == 4.0));
    assert_eq!(a_long_doc_comment_on_tensor_work(&xs), 1);
}
