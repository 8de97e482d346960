//! [`select!`](crate::select): wait on several futures, run the branch of the
//! first that completes, drop the others.

/// Waits on several futures at once and runs the handler of the first to
/// complete; the other futures are dropped before the handler runs. The
/// branch syntax is tokio's:
///
/// ```text
/// <pattern> = <future> (, if <precondition>)? => <handler>,
/// else => <handler>
/// ```
///
/// - Every `<future>` expression is evaluated, in order, before any is
///   polled. A branch whose `<precondition>` is false is never polled.
/// - Branches are polled starting from a random one, so none starves;
///   write `biased;` first to poll them in the order written.
/// - When a future's output does not match its `<pattern>`, that branch is
///   disabled and the others keep running. When every branch is disabled,
///   the `else` handler runs; without `else` that is a panic.
/// - Handlers run in the enclosing function: `return`, `?`, `break` and
///   `continue` act there.
/// - `else` alone is its handler's value. A future expression may borrow
///   a temporary (`() = &mut std::future::ready(()) => ..`).
/// - Up to 32 branches. A pattern's bindings may not be `mut` or `ref`
///   (bind, then `let mut v = v;` in the handler).
///
/// # Cancel safety
///
/// The futures that lost are dropped, so `select!` in a loop is only as
/// safe as they are when dropped. Every ringshard future says what its drop
/// does; [`Receiver::recv`](crate::channel::mpsc::Receiver::recv) loses
/// nothing.
///
/// ```
/// use std::time::Duration;
/// # let rt = ringshard::Runtime::builder().worker_threads(1).build()?;
/// rt.block_on(async {
///     let (tx, mut rx) = ringshard::unbounded::<u32>();
///     tx.send(7).unwrap();
///     let got = ringshard::select! {
///         Some(v) = rx.recv() => v,
///         _ = ringshard::sleep(Duration::from_secs(5)) => 0,
///     };
///     assert_eq!(got, 7);
/// });
/// # Ok::<(), std::io::Error>(())
/// ```
#[macro_export]
macro_rules! select {
    (biased; $($branches:tt)*) => {
        $crate::__select!(@parse [true] []
            [0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31]
            [B0 B1 B2 B3 B4 B5 B6 B7 B8 B9 B10 B11 B12 B13 B14 B15 B16 B17 B18 B19 B20 B21 B22
             B23 B24 B25 B26 B27 B28 B29 B30 B31]
            ; $($branches)*)
    };
    ($($branches:tt)*) => {
        $crate::__select!(@parse [false] []
            [0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31]
            [B0 B1 B2 B3 B4 B5 B6 B7 B8 B9 B10 B11 B12 B13 B14 B15 B16 B17 B18 B19 B20 B21 B22
             B23 B24 B25 B26 B27 B28 B29 B30 B31]
            ; $($branches)*)
    };
}

/// The parser and code generator behind [`select!`]. Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __select {
    // `else` alone: it is the value (as in tokio).
    (@parse $biased:tt [] $is:tt $vs:tt ; else => $else:expr $(,)?) => {
        $else
    };
    // `else`, last.
    (@parse $biased:tt $done:tt $is:tt $vs:tt ; else => $else:expr $(,)?) => {
        $crate::__select!(@gen $biased $done ($else))
    };
    // The end, without `else`.
    (@parse $biased:tt $done:tt $is:tt $vs:tt ;) => {
        $crate::__select!(@gen $biased $done (::core::panic!(
            "select!: every branch is disabled and there is no else branch"
        )))
    };
    // A branch: with or without a precondition, a block or an expression
    // handler, with or without a trailing comma.
    (@parse $biased:tt [$($done:tt)*] [$i:tt $($is:tt)*] [$v:ident $($vs:ident)*] ;
        $p:pat = $f:expr, if $c:expr => $h:block, $($rest:tt)*) => {
        $crate::__select!(@parse $biased [$($done)* [$i $v ($p) ($f) ($c) ($h)]]
            [$($is)*] [$($vs)*] ; $($rest)*)
    };
    (@parse $biased:tt [$($done:tt)*] [$i:tt $($is:tt)*] [$v:ident $($vs:ident)*] ;
        $p:pat = $f:expr, if $c:expr => $h:block $($rest:tt)*) => {
        $crate::__select!(@parse $biased [$($done)* [$i $v ($p) ($f) ($c) ($h)]]
            [$($is)*] [$($vs)*] ; $($rest)*)
    };
    (@parse $biased:tt [$($done:tt)*] [$i:tt $($is:tt)*] [$v:ident $($vs:ident)*] ;
        $p:pat = $f:expr, if $c:expr => $h:expr $(, $($rest:tt)*)?) => {
        $crate::__select!(@parse $biased [$($done)* [$i $v ($p) ($f) ($c) ($h)]]
            [$($is)*] [$($vs)*] ; $($($rest)*)?)
    };
    (@parse $biased:tt [$($done:tt)*] [$i:tt $($is:tt)*] [$v:ident $($vs:ident)*] ;
        $p:pat = $f:expr => $h:block, $($rest:tt)*) => {
        $crate::__select!(@parse $biased [$($done)* [$i $v ($p) ($f) (true) ($h)]]
            [$($is)*] [$($vs)*] ; $($rest)*)
    };
    (@parse $biased:tt [$($done:tt)*] [$i:tt $($is:tt)*] [$v:ident $($vs:ident)*] ;
        $p:pat = $f:expr => $h:block $($rest:tt)*) => {
        $crate::__select!(@parse $biased [$($done)* [$i $v ($p) ($f) (true) ($h)]]
            [$($is)*] [$($vs)*] ; $($rest)*)
    };
    (@parse $biased:tt [$($done:tt)*] [$i:tt $($is:tt)*] [$v:ident $($vs:ident)*] ;
        $p:pat = $f:expr => $h:expr $(, $($rest:tt)*)?) => {
        $crate::__select!(@parse $biased [$($done)* [$i $v ($p) ($f) (true) ($h)]]
            [$($is)*] [$($vs)*] ; $($($rest)*)?)
    };
    (@gen [$biased:tt] [] ($else:expr)) => {
        ::core::compile_error!("select! needs at least one branch")
    };
    (@gen [$biased:tt] [$([$i:tt $v:ident ($p:pat) ($f:expr) ($c:expr) ($h:expr)])+] ($else:expr)) => {{
        #[allow(non_camel_case_types, clippy::large_enum_variant)]
        enum __SelectOut<$($v,)+> {
            $($v($v),)+
            Disabled,
        }
        const __COUNT: u32 = [$($i),+].len() as u32;
        let mut __disabled: u64 = 0;
        $(
            if !$c {
                __disabled |= 1 << $i;
            }
        )+
        let __out = {
            // A tuple expression directly in a `let`: temporaries its
            // futures borrow (`&mut std::future::ready(())`) live to the
            // end of this block, as tokio's `select!` lets them.
            let __raw = ($($f,)+);
            let mut __futures = ::core::pin::pin!((
                $(::core::future::IntoFuture::into_future(__raw.$i),)+
            ));
            let __start: u32 = if $biased { 0 } else { $crate::__private::random_below(__COUNT) };
            ::core::future::poll_fn(|__cx| {
                let mut __pending = false;
                for __n in 0..__COUNT {
                    let mut __branch = __start + __n;
                    if __branch >= __COUNT {
                        __branch -= __COUNT;
                    }
                    if __disabled & (1 << __branch) != 0 {
                        continue;
                    }
                    match __branch {
                        $(
                            $i => {
                                // SAFETY: the tuple is pinned, and its fields are
                                // only ever polled in place.
                                let __future = unsafe {
                                    __futures.as_mut().map_unchecked_mut(|__all| &mut __all.$i)
                                };
                                match ::core::future::Future::poll(__future, __cx) {
                                    ::core::task::Poll::Ready(__value) => {
                                        #[allow(unused_variables, unreachable_patterns)]
                                        let __matches = match &__value {
                                            $p => true,
                                            _ => false,
                                        };
                                        if __matches {
                                            return ::core::task::Poll::Ready(__SelectOut::$v(__value));
                                        }
                                        __disabled |= 1 << $i;
                                    }
                                    ::core::task::Poll::Pending => __pending = true,
                                }
                            }
                        )+
                        _ => ::core::unreachable!(),
                    }
                }
                if __pending {
                    ::core::task::Poll::Pending
                } else {
                    ::core::task::Poll::Ready(__SelectOut::Disabled)
                }
            })
            .await
        };
        #[allow(unreachable_patterns, unreachable_code)]
        let __result = match __out {
            $(__SelectOut::$v($p) => $h,)+
            __SelectOut::Disabled => $else,
            _ => ::core::unreachable!("select!: the pattern matched a moment ago"),
        };
        __result
    }};
}

/// What [`select!`](crate::select) expands to needs; not public API.
#[doc(hidden)]
pub mod __private {
    use std::cell::Cell;

    thread_local! {
        static STATE: Cell<u32> = const { Cell::new(0) };
    }

    /// A number in `0..n` (xorshift per thread), for the branch polled first.
    pub fn random_below(n: u32) -> u32 {
        STATE.with(|state| {
            let mut x = state.get();
            if x == 0 {
                // Seeded from the state's address: distinct per thread.
                x = (state as *const Cell<u32> as usize as u32) | 1;
            }
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            state.set(x);
            ((u64::from(x) * u64::from(n)) >> 32) as u32
        })
    }
}
