//! `Op<T>`: the future of one io_uring op and the owner of its resources `T`.
//!
//! The networking ops are built on this; the core runtime itself only needs
//! `nop`, which the tests use to drive the slab through every state.

#![cfg_attr(
    not(test),
    allow(dead_code, reason = "the socket ops of the networking layer use it")
)]

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use io_uring::{opcode, squeue};

use super::{OpKey, UringDriver};
use crate::driver::{Driver, Orphan};
use crate::shard;

/// The resources an op lends the kernel (buffers, addresses, fds).
pub(crate) trait OpResources: 'static {
    /// Whether dropping the future should also queue an `ASYNC_CANCEL`
    /// (ops that may wait forever: accept, recv, poll).
    const CANCEL_ON_DROP: bool = false;

    /// Receives the result of an op whose future was dropped before it
    /// completed. The default frees the resources; an accept closes its fd.
    fn complete_orphan(self, result: i32)
    where
        Self: Sized,
    {
        let _ = result;
    }
}

impl OpResources for () {}

impl<T: OpResources> Orphan for T {
    fn complete(self: Box<Self>, result: i32) {
        (*self).complete_orphan(result)
    }
}

/// The future of one submitted op. Resolves to the raw CQE result and the
/// resources back.
///
/// `!Send`: the key only means something to the ring of the shard that
/// submitted it, so the future must never be polled or dropped elsewhere.
pub(crate) struct Op<T: OpResources> {
    key: OpKey,
    resources: Option<T>,
    _shard_bound: std::marker::PhantomData<*const ()>,
}

fn with_uring<R>(f: impl FnOnce(&mut UringDriver) -> R) -> io::Result<R> {
    shard::with_driver(|driver| match driver {
        Driver::Uring(uring) => Ok(f(uring)),
        #[allow(unreachable_patterns, reason = "only one backend on some targets")]
        _ => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this shard does not run io_uring",
        )),
    })
    .unwrap_or_else(|| {
        Err(io::Error::other(
            "io_uring ops must run inside a ringshard shard",
        ))
    })
}

impl<T: OpResources> Op<T> {
    /// Submits `sqe`, whose pointers point into `resources`.
    ///
    /// # Safety
    ///
    /// Every pointer in `sqe` must point into heap memory owned by
    /// `resources` (so it stays put when `resources` moves) or be otherwise
    /// valid until the op completes.
    pub(crate) unsafe fn submit(sqe: squeue::Entry, resources: T) -> io::Result<Op<T>> {
        // SAFETY: forwarded from this function's contract; `resources` is
        // kept by the returned `Op` or, once dropped, by the slab.
        let key = with_uring(|uring| unsafe { uring.submit(sqe) })?;
        Ok(Op {
            key,
            resources: Some(resources),
            _shard_bound: std::marker::PhantomData,
        })
    }
}

impl<T: OpResources + Unpin> Future for Op<T> {
    type Output = (i32, T);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<(i32, T)> {
        let this = self.get_mut();
        let key = this.key;
        match with_uring(|uring| uring.poll_op(key, cx.waker())) {
            Ok(Some(result)) => {
                let resources = this.resources.take().expect("Op polled after completion");
                Poll::Ready((result, resources))
            }
            Ok(None) => Poll::Pending,
            Err(_) => unreachable!("an Op is only created on a uring shard"),
        }
    }
}

impl<T: OpResources> Drop for Op<T> {
    fn drop(&mut self) {
        let Some(resources) = self.resources.take() else {
            return;
        };
        let key = self.key;
        let mut orphan: Option<Box<dyn Orphan>> = Some(Box::new(resources));
        let abandoned = with_uring(|uring| {
            let orphan = orphan.take().expect("taken once");
            uring.abandon(key, orphan, T::CANCEL_ON_DROP)
        });
        match abandoned {
            Ok(Some((orphan, result))) => orphan.complete(result),
            Ok(None) => {}
            // Dropped outside its shard (the shard is gone): the kernel may
            // still write into the resources, so they are leaked, not freed.
            Err(_) => std::mem::forget(orphan),
        }
    }
}

/// `IORING_OP_NOP`: completes at once with result 0.
pub(crate) async fn nop() -> io::Result<()> {
    // SAFETY: a NOP carries no pointers.
    let op = unsafe { Op::submit(opcode::Nop::new().build(), ())? };
    let (result, ()) = op.await;
    if result < 0 {
        Err(io::Error::from_raw_os_error(-result))
    } else {
        Ok(())
    }
}

/// `IORING_OP_TIMEOUT` resources: the timespec the kernel reads, boxed so
/// its address survives moves, plus whatever the caller wants kept alive.
pub(crate) struct TimeoutResources<T> {
    timespec: Box<io_uring::types::Timespec>,
    pub(crate) extra: T,
}

impl<T: 'static> OpResources for TimeoutResources<T> {}

/// A kernel-side timer op of `duration`; resolves once the kernel fires it.
/// `extra` is kept until the kernel is done with the op, even if the future
/// is dropped (the tests use it to watch the lifecycle).
pub(crate) async fn timeout_op<T: Unpin + 'static>(
    duration: std::time::Duration,
    extra: T,
) -> (io::Result<()>, T) {
    let resources = TimeoutResources {
        timespec: Box::new(io_uring::types::Timespec::from(duration)),
        extra,
    };
    let sqe = opcode::Timeout::new(&*resources.timespec).build();
    // SAFETY: the SQE points at the boxed timespec, owned by `resources`.
    let op = match unsafe { Op::submit(sqe, resources) } {
        Ok(op) => op,
        Err(_) => unreachable!("timeout_op is only used on uring shards"),
    };
    let (result, resources) = op.await;
    let result = match result {
        r if r >= 0 || r == -libc::ETIME => Ok(()),
        r => Err(io::Error::from_raw_os_error(-r)),
    };
    (result, resources.extra)
}
