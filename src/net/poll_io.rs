//! Poll-mode I/O on stream sockets: what the ecosystem's traits
//! (`tokio::io::AsyncRead`, `futures_io::AsyncWrite`, `hyper::rt::Read`, ...)
//! are built on (`crate::compat`).
//!
//! Those traits lend the caller's memory for one call only, so nothing here
//! ever leaves it with the kernel: every byte moves in a syscall made during
//! the call, and between calls the socket only *waits for readiness*
//! ([`Readiness`]: a one-shot `POLL_ADD` on io_uring, the registration's
//! edge on epoll), which lends the kernel nothing but the fd.
//!
//! - A read first takes what dropped owned-buffer reads left on the socket
//!   (`SharedFd::poll_late`), then, on io_uring with buffered reads, copies
//!   from the socket's multishot recv chunks (the same path as
//!   [`read`](crate::net::TcpStream::read), so the two modes mix), otherwise
//!   makes a non-blocking `recv` straight into the caller's buffer.
//! - A write makes a non-blocking `send` (`sendmsg` for vectored writes) from
//!   the caller's buffer; `WouldBlock` means nothing was written, and the
//!   call returns `Pending` after arming the wait. No write is ever left in
//!   flight, so a caller that offers other bytes next time sends exactly
//!   those. Queued io_uring submissions (a dropped owned-buffer send) are
//!   handed to the kernel first, so they are never overtaken, and a
//!   write-behind send of an owned-buffer `write_all` is waited for (its
//!   error, if it got one, is this write's).
//! - Shutdown is `shutdown(SHUT_WR)`: the peer reads end of stream.
//! - Off a shard (after `block_on` returned, say) every call is an error.
//!
//! Errors are returned as they are, never turned into an end of stream.
#![cfg_attr(
    not(any(feature = "tokio-io", feature = "futures-io", feature = "hyper")),
    allow(dead_code, reason = "used by the compat features")
)]

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::context;
use crate::driver::fd::SharedFd;
use crate::driver::op::{Direction, Op, Readiness};
use crate::driver::Driver;

/// The readiness waits a stream (or half) has armed, made on the first
/// `WouldBlock`: a stream that never uses poll-mode I/O pays one word.
#[derive(Default)]
pub(crate) struct PollIo {
    waits: Option<Box<Waits>>,
}

#[derive(Default)]
struct Waits {
    read: Option<Op<Readiness<false>>>,
    write: Option<Op<Readiness<true>>>,
    /// The broken build's write left in flight with a copy of its bytes
    /// (what a staging-buffer compat layer does).
    #[cfg(ringshard_broken = "staged_poll_write")]
    staged: Option<Op<crate::driver::op::Send<Vec<u8>>>>,
}

fn outside_shard() -> io::Error {
    io::Error::other(
        "ringshard sockets do I/O only on their shard (inside block_on or a task of that shard)",
    )
}

/// Waits on `slot` if a readiness wait is armed there: `Ready(Ok)` once it
/// completed (or when none is armed), and the caller tries its syscall.
fn poll_wait<const WRITE: bool>(
    slot: &mut Option<Op<Readiness<WRITE>>>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    let Some(op) = slot.as_mut() else {
        return Poll::Ready(Ok(()));
    };
    let (result, _) = std::task::ready!(Pin::new(op).poll(cx));
    *slot = None;
    match result {
        // The revents: ready, hung up or failed; the syscall says which.
        Ok(_) => Poll::Ready(Ok(())),
        // Cancelled under us (the shard is shutting down): try the syscall,
        // which reports the socket's real state.
        Err(error) if error.raw_os_error() == Some(libc::ECANCELED) => Poll::Ready(Ok(())),
        Err(error) => Poll::Ready(Err(error)),
    }
}

/// Arms a readiness wait after a syscall said `WouldBlock`, and polls it
/// once (which submits it): `Pending` in the normal case.
fn arm<const WRITE: bool>(
    slot: &mut Option<Op<Readiness<WRITE>>>,
    fd: &SharedFd,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    let direction = if WRITE {
        Direction::Write
    } else {
        Direction::Read
    };
    let noted = context::with_current_driver(|uid, driver| match driver {
        #[cfg(target_os = "linux")]
        Driver::Uring(_) => Ok(()),
        Driver::Poll(poll) => poll.would_block(uid, fd, direction),
    })
    .unwrap_or_else(|| Err(outside_shard()));
    noted?;
    *slot = Some(Op::new(Readiness { fd: fd.clone() }));
    poll_wait(slot, cx)
}

/// Runs a non-blocking syscall until it does not say `WouldBlock`, waiting
/// for readiness in between; `Interrupted` retries at once.
fn poll_syscall<const WRITE: bool, R>(
    slot: &mut Option<Op<Readiness<WRITE>>>,
    fd: &SharedFd,
    cx: &mut Context<'_>,
    mut syscall: impl FnMut() -> io::Result<R>,
) -> Poll<io::Result<R>> {
    loop {
        std::task::ready!(poll_wait(slot, cx))?;
        match syscall() {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                std::task::ready!(arm(slot, fd, cx))?;
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            result => return Poll::Ready(result),
        }
    }
}

fn check(result: isize) -> io::Result<usize> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result as usize)
    }
}

/// What the driver said about a buffered read.
enum Buffered {
    Done(Poll<io::Result<usize>>),
    /// Read from the socket directly this time.
    Direct,
    /// The readiness driver knows a read would block: wait first.
    Wait,
}

/// On io_uring with buffered reads, copies what the socket's multishot recv
/// received into `dst[..len]` (arming it on first use).
///
/// `waiting`: a readiness wait is armed for this read. On io_uring the
/// buffered path still goes first (an owned read may have armed the
/// multishot recv since, and its chunks come before anything newer); on
/// epoll the wait is polled.
fn read_buffered(
    fd: &SharedFd,
    cx: &mut Context<'_>,
    dst: *mut u8,
    len: usize,
    waiting: bool,
) -> Buffered {
    let polled = context::with_current_driver(|uid, driver| match driver {
        #[cfg(target_os = "linux")]
        Driver::Uring(uring) => {
            use crate::driver::uring::Buffered as B;
            match uring.read_buffered(uid, fd, dst, len, cx.waker()) {
                B::Ready(result) => Buffered::Done(Poll::Ready(result)),
                B::Pending => Buffered::Done(Poll::Pending),
                B::Fallback => Buffered::Direct,
            }
        }
        Driver::Poll(poll) => {
            // Skip a syscall the registration knows would block (the last
            // read came up short and no event came since).
            if waiting || poll.may_be_ready(uid, fd, Direction::Read) {
                Buffered::Direct
            } else {
                Buffered::Wait
            }
        }
    });
    polled.unwrap_or_else(|| Buffered::Done(Poll::Ready(Err(outside_shard()))))
}

impl PollIo {
    fn waits(&mut self) -> &mut Waits {
        self.waits.get_or_insert_default()
    }

    /// Reads into `dst[..len]`: `Ready(Ok(0))` is the end of the stream (or
    /// `len == 0`).
    ///
    /// # Safety
    ///
    /// `dst` must be valid for writes of `len` bytes for the whole call.
    pub(crate) unsafe fn poll_read(
        &mut self,
        fd: &SharedFd,
        cx: &mut Context<'_>,
        dst: *mut u8,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        if len == 0 {
            return Poll::Ready(Ok(0));
        }
        if !context::in_shard() {
            return Poll::Ready(Err(outside_shard()));
        }
        if fd.has_late() {
            // SAFETY: forwarded from this function's contract.
            match unsafe { fd.poll_late(cx, dst, len) } {
                Poll::Ready(Some(result)) => return Poll::Ready(result),
                Poll::Ready(None) => {}
                Poll::Pending => return Poll::Pending,
            }
        }
        let waiting = self.waits.as_ref().is_some_and(|w| w.read.is_some());
        let read_first = read_buffered(fd, cx, dst, len, waiting);
        let read = &mut self.waits().read;
        match read_first {
            Buffered::Done(polled) => {
                // The buffered path has the socket now: a readiness wait
                // armed before is stale (dropping it cancels it).
                *read = None;
                return polled;
            }
            Buffered::Direct => {}
            Buffered::Wait => {
                *read = Some(Op::new(Readiness { fd: fd.clone() }));
            }
        }
        let polled = poll_syscall(read, fd, cx, || {
            // SAFETY: `dst` has `len` writable bytes (this function's
            // contract); the kernel writes only during the call.
            check(unsafe { libc::recv(fd.raw(), dst.cast(), len, libc::MSG_DONTWAIT) })
        });
        if let Poll::Ready(Ok(n)) = polled {
            if n > 0 && n < len {
                drained(fd, Direction::Read);
            }
        }
        polled
    }

    /// Writes some of `buf`; `Pending` means nothing was written.
    pub(crate) fn poll_write(
        &mut self,
        fd: &SharedFd,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if !context::in_shard() {
            return Poll::Ready(Err(outside_shard()));
        }
        // Deliberately broken build for the pitfall test: stage a copy in
        // an owned-buffer send, return Pending while it is in flight, and
        // report its result to whatever buffer the next call brings.
        #[cfg(ringshard_broken = "staged_poll_write")]
        {
            let staged = self.waits().staged.get_or_insert_with(|| {
                Op::new(crate::driver::op::Send {
                    fd: fd.clone(),
                    buf: buf.to_vec(),
                    offset: 0,
                })
            });
            let (result, _) = std::task::ready!(Pin::new(staged).poll(cx));
            self.waits().staged = None;
            return Poll::Ready(result);
        }
        #[allow(unreachable_code, reason = "after the broken build's return")]
        std::task::ready!(fd.poll_sent(cx))?;
        if !flush_submissions(cx) {
            return Poll::Pending;
        }
        let write = &mut self.waits().write;
        poll_syscall(write, fd, cx, || {
            // SAFETY: `buf` is `buf.len()` initialized bytes, read only
            // during the call.
            check(unsafe {
                libc::send(
                    fd.raw(),
                    buf.as_ptr().cast(),
                    buf.len(),
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            })
        })
    }

    /// Writes from every slice of `bufs` in order, in one `sendmsg`; returns
    /// the bytes written in total. `Pending` means nothing was written.
    pub(crate) fn poll_write_vectored(
        &mut self,
        fd: &SharedFd,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // Empty slices first would make a zero-length write of a non-empty
        // list; the kernel takes at most IOV_MAX slices per call, the rest
        // goes next time, as a short write.
        let Some(first) = bufs.iter().position(|b| !b.is_empty()) else {
            return Poll::Ready(Ok(0));
        };
        let bufs = &bufs[first..];
        let bufs = &bufs[..bufs.len().min(IOV_MAX)];
        if !context::in_shard() {
            return Poll::Ready(Err(outside_shard()));
        }
        std::task::ready!(fd.poll_sent(cx))?;
        if !flush_submissions(cx) {
            return Poll::Pending;
        }
        let write = &mut self.waits().write;
        poll_syscall(write, fd, cx, || {
            // SAFETY: an all-zero msghdr is valid (no name, no control).
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            // `IoSlice` is ABI-compatible with `iovec` on Unix; the kernel
            // only reads through it, during the call.
            msg.msg_iov = bufs.as_ptr().cast_mut().cast();
            msg.msg_iovlen = bufs.len() as _;
            // SAFETY: `msg` points at `bufs.len()` valid iovecs.
            check(unsafe { libc::sendmsg(fd.raw(), &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) })
        })
    }

    /// Sends FIN (`shutdown(SHUT_WR)`), after whatever io_uring has queued
    /// and the socket's write-behind send.
    pub(crate) fn poll_shutdown(
        &mut self,
        fd: &SharedFd,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        if !context::in_shard() {
            return Poll::Ready(Err(outside_shard()));
        }
        std::task::ready!(fd.poll_sent(cx))?;
        if !flush_submissions(cx) {
            return Poll::Pending;
        }
        let result = fd.shutdown(std::net::Shutdown::Write);
        Poll::Ready(match result {
            // The peer is gone already: the write side is shut all the same.
            Err(error) if error.raw_os_error() == Some(libc::ENOTCONN) => Ok(()),
            other => other,
        })
    }
}

/// The most slices one `sendmsg` takes (Linux's and the BSDs' `IOV_MAX`).
const IOV_MAX: usize = 1024;

/// Hands queued io_uring submissions to the kernel before a direct write;
/// false (with the task woken to try again next turn) when some stay
/// queued, so the write must not go ahead of them.
fn flush_submissions(cx: &mut Context<'_>) -> bool {
    #[cfg(target_os = "linux")]
    {
        let flushed = context::with_free_driver(|driver| match driver {
            Driver::Uring(uring) => uring.flush_submissions(),
            Driver::Poll(_) => true,
        });
        if flushed == Some(false) {
            cx.waker().wake_by_ref();
            return false;
        }
    }
    let _ = cx;
    true
}

/// A stream read came up short: on epoll the next read waits for an event
/// instead of first failing with `WouldBlock`.
fn drained(fd: &SharedFd, direction: Direction) {
    context::with_current_driver(|uid, driver| {
        if let Driver::Poll(poll) = driver {
            poll.drained_fd(uid, fd, direction);
        }
    });
}
