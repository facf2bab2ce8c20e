//! Taking a function item apart, for the item forms of the macros.

/// Splits `ATTRS VIS [async] fn NAME GENERICS (PARAMS) [-> RET] [where ..] BODY`
/// and calls back `$crate::$callback! { @emit [ARGS] [ATTRS VIS] [async?] NAME
/// [GENERICS] (PARAMS) [RET] [WHERE] BODY }`, where `ARGS` are the callback's
/// own (from its attribute) and a missing return type is `()`.
///
/// Limits of `macro_rules!`: a generic bound written with `Fn(..)` sugar
/// belongs in the where clause, since `(` ends the generics.
#[doc(hidden)]
#[macro_export]
macro_rules! __opguard_split_fn {
    // The head, up to the name.
    ($cb:ident $args:tt [$($kept:tt)*] $(#[$attr:meta])* $vis:vis async fn $name:ident $($rest:tt)*) => {
        $crate::__opguard_split_fn! { @generics $cb $args [$($kept)* $(#[$attr])* $vis] [async] $name [] $($rest)* }
    };
    ($cb:ident $args:tt [$($kept:tt)*] $(#[$attr:meta])* $vis:vis fn $name:ident $($rest:tt)*) => {
        $crate::__opguard_split_fn! { @generics $cb $args [$($kept)* $(#[$attr])* $vis] [] $name [] $($rest)* }
    };

    // Generic parameters: everything before the parameter list.
    (@generics $cb:ident $args:tt $head:tt $async:tt $name:ident $gen:tt ( $($params:tt)* ) $($rest:tt)*) => {
        $crate::__opguard_split_fn! { @ret $cb $args $head $async $name $gen ( $($params)* ) $($rest)* }
    };
    (@generics $cb:ident $args:tt $head:tt $async:tt $name:ident [$($gen:tt)*] $next:tt $($rest:tt)*) => {
        $crate::__opguard_split_fn! { @generics $cb $args $head $async $name [$($gen)* $next] $($rest)* }
    };

    // The return type and where clause.
    (@ret $cb:ident $args:tt $head:tt $async:tt $name:ident $gen:tt $params:tt -> $ret:ty where $($rest:tt)*) => {
        $crate::__opguard_split_fn! { @where $cb $args $head $async $name $gen $params [$ret] [where] $($rest)* }
    };
    (@ret $cb:ident $args:tt $head:tt $async:tt $name:ident $gen:tt $params:tt -> $ret:ty $body:block) => {
        $crate::$cb! { @emit $args $head $async $name $gen $params [$ret] [] $body }
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
    (@where $cb:ident $args:tt $head:tt $async:tt $name:ident $gen:tt $params:tt $ret:tt [$($w:tt)*] $body:block) => {
        $crate::$cb! { @emit $args $head $async $name $gen $params $ret [$($w)*] $body }
    };
    (@where $cb:ident $args:tt $head:tt $async:tt $name:ident $gen:tt $params:tt $ret:tt [$($w:tt)*] $next:tt $($rest:tt)*) => {
        $crate::__opguard_split_fn! { @where $cb $args $head $async $name $gen $params $ret [$($w)* $next] $($rest)* }
    };

    // Not a function.
    ($cb:ident $args:tt $kept:tt $($rest:tt)*) => {
        ::core::compile_error! {
            "an item form wraps one function: `#[..] VIS [async] fn name(..) -> T { .. }`"
        }
    };
}
