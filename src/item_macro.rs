//! Taking a function item apart, for the item forms of the macros.

/// Splits `ATTRS VIS [async] fn NAME GENERICS (PARAMS) [-> RET] [where ..] BODY`
/// and calls back `$crate::$callback! { @emit [ARGS] [ATTRS VIS] [async?] NAME
/// [GENERICS] (PARAMS) [RET] [WHERE] BODY }`, where `ARGS` are the callback's
/// own (from its attribute) and a missing return type is `()`.
///
/// A return type with `impl Trait` in it is refused with a compile error
/// (the macros write the return type where the body's value is typed, which
/// `impl Trait` cannot be).
#[doc(hidden)]
#[macro_export]
macro_rules! __opguard_split_fn {
    // The head, up to the name.
    ($cb:ident $args:tt [$($kept:tt)*] $(#[$attr:meta])* $vis:vis async fn $name:ident $($rest:tt)*) => {
        $crate::__opguard_split_fn! { @generics $cb $args [$($kept)* $(#[$attr])* $vis] [async] $name $($rest)* }
    };
    ($cb:ident $args:tt [$($kept:tt)*] $(#[$attr:meta])* $vis:vis fn $name:ident $($rest:tt)*) => {
        $crate::__opguard_split_fn! { @generics $cb $args [$($kept)* $(#[$attr])* $vis] [] $name $($rest)* }
    };

    // Generic parameters, `<..>`: up to the `>` that closes the first `<`,
    // so that a bound may hold parentheses (`F: Fn(u8) -> u8`) and `<..>`.
    // `[$($open)*]` holds a token for each `<` open inside them; `<<` and
    // `>>` are one token each.
    (@generics $cb:ident $args:tt $head:tt $async:tt $name:ident < $($rest:tt)*) => {
        $crate::__opguard_split_fn! { @angle [$cb $args $head $async $name] [<] [] $($rest)* }
    };
    (@generics $cb:ident $args:tt $head:tt $async:tt $name:ident $($rest:tt)*) => {
        $crate::__opguard_split_fn! { @params $cb $args $head $async $name [] $($rest)* }
    };
    (@angle $f:tt [$($gen:tt)*] [] > $($rest:tt)*) => {
        $crate::__opguard_split_fn! { @generics_end $f [$($gen)* >] $($rest)* }
    };
    (@angle $f:tt [$($gen:tt)*] [$o:tt] >> $($rest:tt)*) => {
        $crate::__opguard_split_fn! { @generics_end $f [$($gen)* >>] $($rest)* }
    };
    (@angle $f:tt [$($gen:tt)*] [$o:tt $($open:tt)*] > $($rest:tt)*) => {
        $crate::__opguard_split_fn! { @angle $f [$($gen)* >] [$($open)*] $($rest)* }
    };
    (@angle $f:tt [$($gen:tt)*] [$o1:tt $o2:tt $($open:tt)*] >> $($rest:tt)*) => {
        $crate::__opguard_split_fn! { @angle $f [$($gen)* >>] [$($open)*] $($rest)* }
    };
    (@angle $f:tt [$($gen:tt)*] [$($open:tt)*] < $($rest:tt)*) => {
        $crate::__opguard_split_fn! { @angle $f [$($gen)* <] [< $($open)*] $($rest)* }
    };
    (@angle $f:tt [$($gen:tt)*] [$($open:tt)*] << $($rest:tt)*) => {
        $crate::__opguard_split_fn! { @angle $f [$($gen)* <<] [< < $($open)*] $($rest)* }
    };
    (@angle $f:tt [$($gen:tt)*] $open:tt $next:tt $($rest:tt)*) => {
        $crate::__opguard_split_fn! { @angle $f [$($gen)* $next] $open $($rest)* }
    };
    (@angle $($rest:tt)*) => {
        ::core::compile_error! {
            "an item form wraps one function whose generic parameters close: `#[..] fn name<T>(..) -> T { .. }`"
        }
    };
    (@generics_end [$cb:ident $args:tt $head:tt $async:tt $name:ident] $gen:tt $($rest:tt)*) => {
        $crate::__opguard_split_fn! { @params $cb $args $head $async $name $gen $($rest)* }
    };

    // The parameter list.
    (@params $cb:ident $args:tt $head:tt $async:tt $name:ident $gen:tt ( $($params:tt)* ) $($rest:tt)*) => {
        $crate::__opguard_split_fn! { @ret $cb $args $head $async $name $gen ( $($params)* ) $($rest)* }
    };
    (@params $($rest:tt)*) => {
        ::core::compile_error! {
            "an item form wraps one function with its parameters in parentheses: `#[..] fn name(..) -> T { .. }`"
        }
    };

    // The return type and where clause. A return type with `impl Trait` in
    // it cannot be taken: the macros write the return type where the body's
    // value is typed, and `impl Trait` is allowed only in the signature.
    (@ret $cb:ident $args:tt $head:tt $async:tt $name:ident $gen:tt $params:tt -> $($rest:tt)*) => {
        $crate::__opguard_split_fn! { @impl [$cb $args $head $async $name $gen $params -> $($rest)*] $($rest)* }
    };
    (@ret $cb:ident $args:tt $head:tt $async:tt $name:ident $gen:tt $params:tt where $($rest:tt)*) => {
        $crate::__opguard_split_fn! { @where $cb $args $head $async $name $gen $params [()] [where] $($rest)* }
    };
    (@ret $cb:ident $args:tt $head:tt $async:tt $name:ident $gen:tt $params:tt $body:block) => {
        $crate::$cb! { @emit $args $head $async $name $gen $params [()] [] $body }
    };
    (@ret $($rest:tt)*) => {
        ::core::compile_error! {
            "an item form wraps one function that ends with its body: `#[..] fn name(..) -> T { .. }`"
        }
    };

    // Looks for `impl` after `->`, inside parentheses and brackets too, but
    // not inside braces (the body, a const argument), up to the where
    // clause or the body; then goes on with the function as it was. (Each
    // token looked at is a step of macro recursion, which is limited: the
    // where clause, which has steps of its own below, is not looked at.)
    (@impl [$($fn:tt)*] where $($rest:tt)*) => {
        $crate::__opguard_split_fn! { @typed $($fn)* }
    };
    (@impl $fn:tt impl $($rest:tt)*) => {
        ::core::compile_error! {
            "an item form cannot wrap a function whose return type has `impl Trait` in it: name the type, or put the expression form of the macro inside the function"
        }
    };
    (@impl $fn:tt { $($inner:tt)* } $($rest:tt)*) => {
        $crate::__opguard_split_fn! { @impl $fn $($rest)* }
    };
    (@impl $fn:tt ( $($inner:tt)* ) $($rest:tt)*) => {
        $crate::__opguard_split_fn! { @impl $fn $($inner)* $($rest)* }
    };
    (@impl $fn:tt [ $($inner:tt)* ] $($rest:tt)*) => {
        $crate::__opguard_split_fn! { @impl $fn $($inner)* $($rest)* }
    };
    (@impl $fn:tt $next:tt $($rest:tt)*) => {
        $crate::__opguard_split_fn! { @impl $fn $($rest)* }
    };
    (@impl [$($fn:tt)*]) => {
        $crate::__opguard_split_fn! { @typed $($fn)* }
    };

    (@typed $cb:ident $args:tt $head:tt $async:tt $name:ident $gen:tt $params:tt -> $ret:ty where $($rest:tt)*) => {
        $crate::__opguard_split_fn! { @where $cb $args $head $async $name $gen $params [$ret] [where] $($rest)* }
    };
    (@typed $cb:ident $args:tt $head:tt $async:tt $name:ident $gen:tt $params:tt -> $ret:ty $body:block) => {
        $crate::$cb! { @emit $args $head $async $name $gen $params [$ret] [] $body }
    };
    (@typed $($rest:tt)*) => {
        ::core::compile_error! {
            "an item form wraps one function that ends with its body: `#[..] fn name(..) -> T { .. }`"
        }
    };
    (@where $cb:ident $args:tt $head:tt $async:tt $name:ident $gen:tt $params:tt $ret:tt [$($w:tt)*] $body:block) => {
        $crate::$cb! { @emit $args $head $async $name $gen $params $ret [$($w)*] $body }
    };
    // Four tokens at a time while the body is still ahead: fewer steps of
    // macro recursion, whose depth is limited, for a long where clause.
    (@where $cb:ident $args:tt $head:tt $async:tt $name:ident $gen:tt $params:tt $ret:tt [$($w:tt)*] $t1:tt $t2:tt $t3:tt $t4:tt $($rest:tt)+) => {
        $crate::__opguard_split_fn! { @where $cb $args $head $async $name $gen $params $ret [$($w)* $t1 $t2 $t3 $t4] $($rest)+ }
    };
    (@where $cb:ident $args:tt $head:tt $async:tt $name:ident $gen:tt $params:tt $ret:tt [$($w:tt)*] $next:tt $($rest:tt)*) => {
        $crate::__opguard_split_fn! { @where $cb $args $head $async $name $gen $params $ret [$($w)* $next] $($rest)* }
    };

    // Not a function.
    ($cb:ident $args:tt $kept:tt $($rest:tt)*) => {
        ::core::compile_error! {
            "an item form wraps one function: `#[..] VIS [async] fn name(..) -> T { .. }`, not `const`, `unsafe` or `extern`"
        }
    };
}
