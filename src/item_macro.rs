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

/// The item forms of both macros: gathers `#[timeout(..)]` and
/// `#[safe_mps(..)]` among the function's attributes, keeps the others, has
/// `__opguard_split_fn!` take the function apart, then wraps its body in
/// each, the first listed outermost (as with attribute macros, or Python's
/// decorators). `$own` is the macro the item was given to: without its own
/// attribute, it wraps the whole with its defaults.
#[doc(hidden)]
#[macro_export]
macro_rules! __opguard_item {
    (@attrs $own:ident [$($kept:tt)*] [$($w:tt)*] # [timeout $(( $($args:tt)* ))?] $($rest:tt)*) => {
        $crate::__opguard_item! { @attrs $own [$($kept)*] [$($w)* (timeout [$($($args)*)?])] $($rest)* }
    };
    (@attrs $own:ident [$($kept:tt)*] [$($w:tt)*] # [safe_mps $(( $($args:tt)* ))?] $($rest:tt)*) => {
        $crate::__opguard_item! { @attrs $own [$($kept)*] [$($w)* (safe_mps [$($($args)*)?])] $($rest)* }
    };
    // Doc comment lines four at a time: each step is one of macro recursion,
    // whose depth is limited, and a long doc comment is many lines.
    (@attrs $own:ident [$($kept:tt)*] $w:tt # [doc = $d1:literal] # [doc = $d2:literal] # [doc = $d3:literal] # [doc = $d4:literal] $($rest:tt)*) => {
        $crate::__opguard_item! { @attrs $own [$($kept)* #[doc = $d1] #[doc = $d2] #[doc = $d3] #[doc = $d4]] $w $($rest)* }
    };
    (@attrs $own:ident [$($kept:tt)*] $w:tt # $attr:tt $($rest:tt)*) => {
        $crate::__opguard_item! { @attrs $own [$($kept)* # $attr] $w $($rest)* }
    };
    // The attributes are done: the macro's own wrapper, outermost, if its
    // attribute was not there.
    (@attrs timeout $kept:tt [$((safe_mps $args:tt))?] $($rest:tt)*) => {
        $crate::__opguard_split_fn! { __opguard_item [(timeout []) $((safe_mps $args))?] $kept $($rest)* }
    };
    (@attrs safe_mps $kept:tt [$((timeout $args:tt))?] $($rest:tt)*) => {
        $crate::__opguard_split_fn! { __opguard_item [(safe_mps []) $((timeout $args))?] $kept $($rest)* }
    };
    (@attrs $own:ident $kept:tt $w:tt $($rest:tt)*) => {
        $crate::__opguard_split_fn! { __opguard_item $w $kept $($rest)* }
    };

    // One wrapper: the macro's own item form.
    (@emit [(timeout $args:tt)] $($f:tt)*) => {
        $crate::__opguard_timeout_fn! { @emit $args $($f)* }
    };
    (@emit [(safe_mps $args:tt)] $($f:tt)*) => {
        $crate::__opguard_with_tch! { $crate::__opguard_safe_mps! { @emit $args $($f)* } }
    };
    // A timeout around MPS work: one deadline for the attempt on MPS and
    // the retry on CPU together.
    (@emit [(timeout $t:tt) (safe_mps [$($s:tt)*])] $head:tt [async] $name:ident $gen:tt $params:tt [$ret:ty] $w:tt $body:block) => {
        $crate::__opguard_with_tch! {
            $crate::__opguard_timeout_fn! { @emit $t $head [async] $name $gen $params [$ret] $w {
                $crate::__opguard_safe_mps! { @item [async] [$ret] $body [] [] $($s)* }
            } }
        }
    };
    // MPS work around a timeout: each attempt has the whole timeout. A
    // timeout's error is no MPS error: it does not fall back, it is returned.
    (@emit [(safe_mps [$($s:tt)*]) (timeout [$($t:tt)*])] [$($head:tt)*] [async] $name:ident [$($gen:tt)*] ( $($params:tt)* ) [$ret:ty] [$($w:tt)*] $body:block) => {
        $crate::__opguard_with_tch! {
            $($head)* async fn $name $($gen)* ( $($params)* )
                -> $crate::__private::Result<$ret, $crate::TimeoutError>
            $($w)*
            {
                $crate::__private::Timed::into_inner($crate::__opguard_safe_mps! { @item [async]
                    [$crate::__private::Timed<$ret>]
                    {
                        // Not `async move`: the body may run twice, so it
                        // borrows the parameters rather than taking them.
                        $crate::__private::Timed($crate::__opguard_timeout_fn!(@call [$($t)*]
                            $crate::__private::returning::<$ret, _>(async {
                                let __opguard_out: $ret = $body;
                                __opguard_out
                            })
                        ).await)
                    }
                    [] [] $($s)*
                })
            }
        }
    };
    (@emit [(timeout $t:tt) (safe_mps $s:tt)] $head:tt [] $($rest:tt)*) => {
        $crate::__opguard_item! { @not_async }
    };
    (@emit [(safe_mps $s:tt) (timeout $t:tt)] $head:tt [] $($rest:tt)*) => {
        $crate::__opguard_item! { @not_async }
    };
    (@not_async) => {
        ::core::compile_error! {
            "`#[timeout(..)]`, like `timeout_async! { .. }`, wraps an `async fn`: `#[timeout(60)] #[safe_mps([xs])] async fn name(xs: Tensor) -> T { .. }`"
        }
    };
    (@emit $w:tt $($rest:tt)*) => {
        ::core::compile_error! {
            "an item form takes at most one `#[timeout(..)]` and one `#[safe_mps(..)]`, the first listed outermost: \
            `timeout_async! { #[timeout(60)] #[safe_mps([xs])] async fn name(xs: Tensor) -> T { .. } }`"
        }
    };
}
