//! The readiness side of every op: its non-blocking syscall, and how an
//! [`Op`](crate::driver::op::Op) waits for readiness between attempts.

use std::io;
use std::task::{Context, Poll};

use super::PollDriver;
use crate::buf::{IoBuf, IoBufMut};
use crate::driver::fd::SharedFd;
use crate::driver::op::Direction;
use crate::driver::op::{
    Accept, Connect, Operation, Phase, Readiness, Recv, RecvMsg, Send, SendMsg, State,
};

/// Makes the op's syscall once, without blocking.
pub(crate) trait PollOp {
    /// The readiness the op waits for.
    const DIRECTION: Direction;

    fn syscall(&mut self) -> io::Result<usize>;

    /// Whether a result of `n` shows the socket has nothing more for this
    /// direction (a stream read or write that came up short): the next
    /// attempt waits for readiness instead of first failing with
    /// `WouldBlock`, as tokio does. Edge-triggered epoll reports any later
    /// data or room as a new event.
    fn drained(&mut self, n: usize) -> bool {
        let _ = n;
        false
    }
}

fn check(result: isize) -> io::Result<usize> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result as usize)
    }
}

impl PollOp for Accept {
    const DIRECTION: Direction = Direction::Read;

    fn syscall(&mut self) -> io::Result<usize> {
        self.addr.reset_len();
        let addr = self.addr.as_mut_ptr();
        // SAFETY: `addr` points into the boxed storage, of the size passed
        // in `len`.
        #[cfg(not(target_vendor = "apple"))]
        let fd = unsafe {
            libc::accept4(
                self.fd.raw(),
                addr,
                &mut self.addr.len,
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        // No accept4 on Apple's systems: accept, then set the flags.
        // SAFETY: as above.
        #[cfg(target_vendor = "apple")]
        let fd = unsafe { libc::accept(self.fd.raw(), addr, &mut self.addr.len) };
        let fd = check(fd as isize)?;
        #[cfg(target_vendor = "apple")]
        {
            use std::os::fd::FromRawFd;
            // SAFETY: a successful accept returns a new fd nobody else owns.
            let socket = unsafe { socket2::Socket::from_raw_fd(fd as libc::c_int) };
            socket.set_nonblocking(true)?;
            socket.set_cloexec(true)?;
            std::mem::forget(socket);
        }
        Ok(fd)
    }
}

impl PollOp for Connect {
    const DIRECTION: Direction = Direction::Write;

    fn syscall(&mut self) -> io::Result<usize> {
        if self.started {
            // The connect was in progress and the socket turned writable:
            // its outcome is the socket's pending error. No error is not
            // yet success: a spurious readiness (a stale event on a reused
            // registration) must not report a connect still under way, so
            // a peer address confirms it.
            let socket = socket2::SockRef::from(&self.fd);
            if let Some(error) = socket.take_error()? {
                return Err(error);
            }
            #[cfg(not(ringshard_broken = "connect_unconfirmed"))]
            if let Err(error) = socket.peer_addr() {
                return match error.raw_os_error() {
                    Some(libc::ENOTCONN) => Err(io::ErrorKind::WouldBlock.into()),
                    _ => Err(error),
                };
            }
            return Ok(0);
        }
        // SAFETY: the address is a valid sockaddr of the length passed.
        let rc =
            unsafe { libc::connect(self.fd.raw(), self.addr.as_ptr().cast(), self.addr.len()) };
        if rc == 0 {
            return Ok(0);
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EINPROGRESS) => {
                self.started = true;
                Err(io::ErrorKind::WouldBlock.into())
            }
            // A Unix socket whose listener's backlog is full: no readiness
            // event will ever say it may retry, so report it (as mio does).
            Some(libc::EAGAIN) => Err(io::Error::other(
                "connect: the listener's backlog is full (EAGAIN)",
            )),
            _ => Err(error),
        }
    }
}

impl<B: IoBufMut> PollOp for Recv<B> {
    const DIRECTION: Direction = Direction::Read;

    fn syscall(&mut self) -> io::Result<usize> {
        let (ptr, len) = self.target();
        // SAFETY: `ptr` has `len` writable bytes (see `Recv::target`).
        check(unsafe { libc::recv(self.fd.raw(), ptr.cast(), len, 0) })
    }

    fn drained(&mut self, n: usize) -> bool {
        self.stream && n > 0 && n < self.target().1
    }
}

impl<B: IoBuf> PollOp for Send<B> {
    const DIRECTION: Direction = Direction::Write;

    fn syscall(&mut self) -> io::Result<usize> {
        let (ptr, len) = self.source();
        // SAFETY: `ptr` has `len` initialized bytes (see `Send::source`).
        check(unsafe { libc::send(self.fd.raw(), ptr.cast(), len, libc::MSG_NOSIGNAL) })
    }

    fn drained(&mut self, n: usize) -> bool {
        n < self.source().1
    }
}

impl<B: IoBuf> PollOp for SendMsg<B> {
    const DIRECTION: Direction = Direction::Write;

    fn syscall(&mut self) -> io::Result<usize> {
        // SAFETY: the message points into memory the op owns.
        check(unsafe { libc::sendmsg(self.fd.raw(), self.msg(), libc::MSG_NOSIGNAL) })
    }
}

impl<B: IoBufMut> PollOp for RecvMsg<B> {
    const DIRECTION: Direction = Direction::Read;

    fn syscall(&mut self) -> io::Result<usize> {
        // SAFETY: the message points into memory the op owns.
        check(unsafe { libc::recvmsg(self.fd.raw(), self.msg(), 0) })
    }
}

/// The registration says the socket is ready: the caller's own syscall
/// comes next. (Poll-mode I/O reports its `WouldBlock` to
/// [`PollDriver::would_block`] before waiting, so a readiness seen before
/// that syscall cannot complete the wait.)
impl<const WRITE: bool> PollOp for Readiness<WRITE> {
    const DIRECTION: Direction = if WRITE {
        Direction::Write
    } else {
        Direction::Read
    };

    fn syscall(&mut self) -> io::Result<usize> {
        Ok(0)
    }
}

/// The socket's token on this driver (shard `uid`), registering it on first
/// use; an error if it belongs to another shard's driver.
fn token_of(driver: &mut PollDriver, uid: u64, fd: &SharedFd) -> io::Result<u64> {
    match fd.registration() {
        Some((owner, token)) if owner == uid => Ok(token),
        Some(_) => Err(io::Error::other(
            "this socket belongs to another shard; I/O objects stay on the shard that made them",
        )),
        None => driver.register(fd.raw()).inspect(|&token| {
            fd.set_registration((uid, token));
        }),
    }
}

impl PollDriver {
    /// A syscall of poll-mode I/O on `fd` said `WouldBlock`: the next wait
    /// in `direction` waits for a new event. Registers the socket if this
    /// is its first use (epoll then reports at once a readiness that came
    /// after the syscall).
    pub(crate) fn would_block(
        &mut self,
        uid: u64,
        fd: &SharedFd,
        direction: Direction,
    ) -> io::Result<()> {
        let token = token_of(self, uid, fd)?;
        self.clear_ready(token, direction);
        Ok(())
    }

    /// A poll-mode stream syscall came up short (see [`PollOp::drained`]).
    pub(crate) fn drained_fd(&mut self, uid: u64, fd: &SharedFd, direction: Direction) {
        if let Some((owner, token)) = fd.registration() {
            if owner == uid {
                self.drained(token, direction);
            }
        }
    }

    /// Whether `fd` may be ready in `direction` (true when unknown).
    pub(crate) fn may_be_ready(&mut self, uid: u64, fd: &SharedFd, direction: Direction) -> bool {
        match fd.registration() {
            Some((owner, token)) if owner == uid => self.is_ready(token, direction),
            _ => true,
        }
    }
}

/// Registers the op's socket on its first poll, then alternates syscall and
/// waiting for readiness until the syscall does not say `WouldBlock`.
pub(crate) fn poll<T: Operation>(
    driver: &mut PollDriver,
    uid: u64,
    state: &mut State<T>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if let Phase::Idle = state.phase {
        let token = match state.op_mut().socket() {
            Some(fd) => token_of(driver, uid, fd),
            None => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the readiness driver runs socket ops only",
            )),
        };
        match token {
            Ok(token) => {
                state.phase = Phase::Poll {
                    uid,
                    token,
                    waiter: None,
                }
            }
            Err(error) => return state.finish(Err(error)),
        }
    }
    let Phase::Poll {
        uid: owner,
        token,
        waiter,
    } = &mut state.phase
    else {
        return Poll::Pending;
    };
    if *owner != uid {
        return Poll::Pending;
    }
    let op = state
        .op
        .as_mut()
        .expect("an op keeps its resources until taken");
    loop {
        if !driver.is_ready(*token, T::DIRECTION) {
            driver.set_waiter(*token, T::DIRECTION, waiter, cx.waker());
            return Poll::Pending;
        }
        match op.syscall() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                driver.clear_ready(*token, T::DIRECTION)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            result => {
                if let Some(waiter) = waiter.take() {
                    driver.remove_waiter(*token, waiter);
                }
                if matches!(result, Ok(n) if op.drained(n)) {
                    driver.drained(*token, T::DIRECTION);
                }
                return state.finish(result);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write readiness that comes while the connect is still under way
    /// (a stale event, say) has no pending error either: it must not be
    /// taken for success. Fails under `ringshard_broken="connect_unconfirmed"`.
    #[test]
    fn a_readiness_without_a_connection_is_not_a_connect() {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let addr: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut connect = Connect {
            fd: SharedFd::from(socket),
            addr: Box::new(addr.into()),
            // As if `connect` had said EINPROGRESS and the socket then
            // turned writable.
            started: true,
        };
        let error = connect.syscall().expect_err("nothing is connected");
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
    }
}
