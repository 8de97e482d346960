//! The io_uring side of every op: its SQE, and how an [`Op`](crate::driver::op::Op)
//! is submitted, polled and abandoned on a ring.

use std::io;
use std::task::{Context, Poll};

use io_uring::{opcode, squeue, types};

use super::{OpKey, UringDriver};
use crate::buf::{IoBuf, IoBufMut};
use crate::context;
use crate::driver::fd::SharedFd;
use crate::driver::op::{
    Accept, Connect, OpCode, Phase, Readiness, Recv, RecvMsg, Send, SendMsg, State,
};
use crate::driver::{Driver, Orphan};

/// Builds the op's SQE. Its pointers point into heap memory the op owns, so
/// they stay valid while the op (or, once abandoned, the slab) keeps it.
pub(crate) trait UringOp {
    fn sqe(&mut self) -> squeue::Entry;

    /// Whether [`try_now`](UringOp::try_now) may make the op without the
    /// ring (so the submit path asks whether it should).
    const TRIES_NOW: bool = false;

    /// Makes the op now with a non-blocking syscall, when that is cheaper
    /// than a trip through the ring; `None` means submit it instead.
    fn try_now(&mut self) -> Option<io::Result<usize>> {
        None
    }
}

impl<T: OpCode> Orphan for T {
    fn complete(self: Box<Self>, result: i32) {
        (*self).complete_orphan(result)
    }
}

fn fd(socket: &SharedFd) -> types::Fd {
    types::Fd(socket.raw())
}

impl UringOp for Accept {
    fn sqe(&mut self) -> squeue::Entry {
        self.addr.reset_len();
        let addr = self.addr.as_mut_ptr();
        opcode::Accept::new(fd(&self.fd), addr, &mut self.addr.len)
            .flags(libc::SOCK_CLOEXEC)
            .build()
    }
}

impl UringOp for Connect {
    fn sqe(&mut self) -> squeue::Entry {
        opcode::Connect::new(fd(&self.fd), self.addr.as_ptr().cast(), self.addr.len()).build()
    }
}

impl<B: IoBufMut> UringOp for Recv<B> {
    fn sqe(&mut self) -> squeue::Entry {
        let (ptr, len) = self.target();
        opcode::Recv::new(fd(&self.fd), ptr, len as u32).build()
    }
}

impl<B: IoBuf> UringOp for Send<B> {
    fn sqe(&mut self) -> squeue::Entry {
        let (ptr, len) = self.source();
        opcode::Send::new(fd(&self.fd), ptr, len as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
    }

    const TRIES_NOW: bool = true;

    /// A socket almost always has room for a send: one `send` syscall is
    /// cheaper than an SQE, its CQE and another turn of the shard's loop.
    fn try_now(&mut self) -> Option<io::Result<usize>> {
        let (ptr, len) = self.source();
        // SAFETY: `ptr` has `len` initialized bytes (see `Send::source`).
        send_now(&self.fd, unsafe { std::slice::from_raw_parts(ptr, len) })
    }
}

impl<B: IoBuf> UringOp for SendMsg<B> {
    fn sqe(&mut self) -> squeue::Entry {
        opcode::SendMsg::new(fd(&self.fd), self.msg())
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
    }

    const TRIES_NOW: bool = true;

    /// As for [`Send`].
    fn try_now(&mut self) -> Option<io::Result<usize>> {
        // SAFETY: the message points into memory the op owns.
        let sent = unsafe {
            libc::sendmsg(
                self.fd.raw(),
                self.msg(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        sent_now(sent)
    }
}

/// A direct non-blocking `send` of `bytes`; `None` when the socket had no
/// room.
pub(crate) fn send_now(fd: &SharedFd, bytes: &[u8]) -> Option<io::Result<usize>> {
    // SAFETY: `bytes` is readable for its length during the call.
    let sent = unsafe {
        libc::send(
            fd.raw(),
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    sent_now(sent)
}

/// The result of a direct send; `None` when the socket had no room.
fn sent_now(sent: isize) -> Option<io::Result<usize>> {
    if sent >= 0 {
        return Some(Ok(sent as usize));
    }
    let error = io::Error::last_os_error();
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => None,
        _ => Some(Err(error)),
    }
}

impl<B: IoBufMut> UringOp for RecvMsg<B> {
    fn sqe(&mut self) -> squeue::Entry {
        opcode::RecvMsg::new(fd(&self.fd), self.msg()).build()
    }
}

impl<const WRITE: bool> UringOp for Readiness<WRITE> {
    /// A one-shot poll: error and hang-up complete it too (the kernel always
    /// reports them), and the caller's next syscall says which.
    fn sqe(&mut self) -> squeue::Entry {
        let mask = if WRITE {
            libc::POLLOUT
        } else {
            libc::POLLIN | libc::POLLRDHUP
        };
        opcode::PollAdd::new(fd(&self.fd), mask as u32).build()
    }
}

/// Puts the socket in blocking mode once: io_uring never blocks the
/// submitter either way, but with `O_NONBLOCK` a retry the kernel punts to
/// its worker threads completes with `EAGAIN` (or a connect with
/// `EINPROGRESS`) instead of waiting.
pub(crate) fn make_blocking(fd: &SharedFd) -> io::Result<()> {
    if fd.is_blocking() {
        return Ok(());
    }
    let off: libc::c_int = 0;
    // SAFETY: FIONBIO reads one c_int from a live local.
    if unsafe { libc::ioctl(fd.raw(), libc::FIONBIO, &off) } < 0 {
        return Err(io::Error::last_os_error());
    }
    fd.set_blocking(true);
    Ok(())
}

/// A CQE result as an `io::Result`.
pub(crate) fn to_result(result: i32) -> io::Result<usize> {
    if result < 0 {
        Err(io::Error::from_raw_os_error(-result))
    } else {
        Ok(result as usize)
    }
}

/// Submits the op on its first poll, then waits for its CQE. The op stays
/// in `state` throughout; its result leaves it there, in `Phase::Done`.
pub(crate) fn poll<T: OpCode + UringOp>(
    uring: &mut UringDriver,
    uid: u64,
    state: &mut State<T>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let key = match state.phase {
        Phase::Uring { uid: owner, key } if owner == uid => key,
        Phase::Idle => {
            let op = state.op_mut();
            if T::WRITES {
                // After the socket's write-behind send, and its error.
                match op.socket().map(|fd| fd.poll_sent(cx)) {
                    Some(Poll::Pending) => return Poll::Pending,
                    Some(Poll::Ready(Err(error))) => return state.finish(Err(error)),
                    _ => {}
                }
            }
            let op = state.op_mut();
            if let Some(Err(error)) = op.socket().map(make_blocking) {
                return state.finish(Err(error));
            }
            if T::TRIES_NOW && uring.sends_directly() {
                if let Some(result) = op.try_now() {
                    return state.finish(result);
                }
            }
            let sqe = op.sqe();
            // SAFETY: the SQE points into heap memory `op` owns (see
            // `UringOp`); `op` stays in `state` and moves into the slab if
            // its future is dropped before the CQE.
            let key = unsafe { uring.submit(sqe) };
            state.phase = Phase::Uring { uid, key };
            key
        }
        // In flight on another shard's ring, or done.
        _ => return Poll::Pending,
    };
    match uring.poll_op(key, cx.waker()) {
        Some(result) => state.finish(to_result(result)),
        None => Poll::Pending,
    }
}

/// The op's future was dropped in flight: its resources go to the slab until
/// the CQE, and the op is cancelled.
pub(crate) fn abandon<T: OpCode>(uid: u64, key: OpKey, op: T) {
    // Deliberately broken build for the cancel tests: free the resources at
    // once and send no cancel, as a careless runtime would.
    #[cfg(ringshard_broken = "release_on_drop")]
    {
        let _ = (uid, key);
        drop(op);
        return;
    }
    let mut op = Some(op);
    let done = context::with_driver_of(uid, |driver| match driver {
        Driver::Uring(uring) => {
            let op = op.take().expect("taken once");
            // Only an op the driver still holds gets its late result.
            if uring.holds(key) {
                op.abandoned();
            }
            uring.abandon(key, Box::new(op), true)
        }
        #[allow(unreachable_patterns, reason = "one backend on some targets")]
        _ => None,
    });
    if let Some(Some((orphan, result))) = done {
        orphan.complete(result);
    }
    let Some(op) = op else {
        return;
    };
    // Not on its shard, or its driver is busy. An op that lends only its
    // fd is dropped (so its fd clone is released); if it held the last
    // one the socket is going away, and a shutdown ends the poll the
    // kernel may still hold on it, so the peer sees the close now.
    if !T::LENDS_MEMORY {
        if let Some(fd) = op.socket().filter(|fd| fd.is_last()) {
            let _ = socket2::SockRef::from(fd).shutdown(std::net::Shutdown::Both);
        }
        return drop(op);
    }
    // The kernel may still write into the resources: they are leaked, never
    // freed (and what a read received there is lost with them).
    std::mem::forget(op);
}
