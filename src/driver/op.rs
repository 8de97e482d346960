//! The socket ops, each defined once: the resources it lends the kernel and
//! what its late result means if its future was dropped.
//!
//! Each backend implements every op: `uring/op.rs` builds its SQE,
//! `poll/op.rs` makes the non-blocking syscall. [`Op`] is the future that
//! runs one on whichever driver the current shard has.
//!
//! # Cancel safety
//!
//! Dropping an [`Op`] never frees memory the kernel may still write: on
//! io_uring the op's resources (buffer, address, fd clone) move into the
//! driver's slab and are dropped when the CQE arrives; on the readiness
//! driver nothing is in flight between polls, so they are dropped at once.
//! A late accept's fd is closed ([`OpCode::complete_orphan`]).

use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use socket2::{SockAddr, SockAddrStorage};

use super::fd::SharedFd;
use super::Driver;
use crate::buf::{IoBuf, IoBufMut};
use crate::context;

/// Which readiness an op waits for on the poll driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Read,
    Write,
}

/// What every op defines, whatever the backend: socket ops (this module)
/// and the io_uring file ops (`uring/file.rs`).
pub(crate) trait OpCode: Unpin + 'static {
    /// Whether the op must be leaked, never dropped, where it cannot reach
    /// its driver: it lends the kernel memory (a buffer, an address), or
    /// its fd lives only as long as the op (a file op's `Arc<File>`: its
    /// drop could close the fd while the SQE waits in the queue). Only a
    /// socket op that lends nothing but a `SharedFd` clone (whose close is
    /// deferred to the driver) may say `false`.
    const LENDS_MEMORY: bool = true;

    /// The socket the op works on; `None` for a file op, which only the
    /// io_uring driver runs.
    fn socket(&self) -> Option<&SharedFd>;

    /// Whether the op writes to its socket: it waits for the socket's
    /// write-behind send, and reports that send's error (see
    /// `uring/behind.rs`).
    const WRITES: bool = false;

    /// The op's future was dropped while the kernel has it: its result
    /// will come to [`complete_orphan`](OpCode::complete_orphan).
    fn abandoned(&self) {}

    /// Receives the result of an op whose future was dropped before it
    /// completed, when the kernel is done with it. The default only drops
    /// the resources (freeing a buffer, releasing the fd clone).
    fn complete_orphan(self, result: i32)
    where
        Self: Sized,
    {
        let _ = result;
    }
}

#[cfg(target_os = "linux")]
pub(crate) use super::uring::op::UringOp as UringBackend;

/// Stands in for the io_uring backend on targets without it.
#[cfg(not(target_os = "linux"))]
pub(crate) trait UringBackend {}
#[cfg(not(target_os = "linux"))]
impl<T> UringBackend for T {}

/// A socket op: one both backends implement.
pub(crate) trait Operation: OpCode + UringBackend + super::poll::op::PollOp {}

impl<T: OpCode + UringBackend + super::poll::op::PollOp> Operation for T {}

/// One op and where it is in its life. The op's resources stay in place
/// from its first poll to its result (only the phase beside them changes),
/// so a resubmission (a partial write's rest) reuses them where they are.
///
/// Invariant: `op` is `Some` in every phase but `Done`; in `Done` it is
/// `Some` until the caller takes it.
pub(crate) struct State<T> {
    pub(crate) op: Option<T>,
    pub(crate) phase: Phase,
}

/// The phase of one op.
#[derive(Clone, Copy)]
pub(crate) enum Phase {
    /// Built, not yet handed to the driver (ops start on first poll).
    Idle,
    /// Submitted to the io_uring of shard `uid`.
    #[cfg(target_os = "linux")]
    Uring { uid: u64, key: super::uring::OpKey },
    /// Waiting for readiness on the poll driver of shard `uid`.
    Poll {
        uid: u64,
        token: u64,
        waiter: Option<usize>,
    },
    /// The result was handed out.
    Done,
}

impl<T> State<T> {
    pub(crate) fn new(op: T) -> State<T> {
        State {
            op: Some(op),
            phase: Phase::Idle,
        }
    }

    /// The op, which every phase before its result keeps.
    pub(crate) fn op_mut(&mut self) -> &mut T {
        self.op
            .as_mut()
            .expect("an op keeps its resources until taken")
    }

    /// Ends the op with `result`, its resources kept for the caller.
    pub(crate) fn finish(&mut self, result: io::Result<usize>) -> Poll<io::Result<usize>> {
        self.phase = Phase::Done;
        Poll::Ready(result)
    }

    /// The op was polled where its driver is not: an error if it has not
    /// started; if it is in flight (on another shard's driver), it keeps
    /// waiting rather than touch that driver.
    pub(crate) fn off_driver(
        &mut self,
        error: impl FnOnce() -> io::Error,
    ) -> Poll<io::Result<usize>> {
        match self.phase {
            Phase::Idle => self.finish(Err(error())),
            _ => Poll::Pending,
        }
    }
}

/// The future of one op: resolves to its result and its resources back.
///
/// `!Send`: an op belongs to the driver of the shard that started it.
pub(crate) struct Op<T: Operation> {
    state: State<T>,
    _shard_bound: PhantomData<*const ()>,
}

impl<T: Operation> Op<T> {
    pub(crate) fn new(op: T) -> Op<T> {
        Op {
            state: State::new(op),
            _shard_bound: PhantomData,
        }
    }

    /// Polls the op to its result, keeping its resources in place (see
    /// [`Op::resources`], [`Op::restart`], [`Op::take`]).
    pub(crate) fn poll_result(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let state = &mut self.state;
        if let Phase::Done = state.phase {
            return Poll::Ready(Err(io::Error::other("an op polled after its result")));
        }
        let polled = context::with_current_driver(|uid, driver| match driver {
            #[cfg(target_os = "linux")]
            Driver::Uring(uring) => super::uring::op::poll(uring, uid, state, cx),
            Driver::Poll(poll) => super::poll::op::poll(poll, uid, state, cx),
        });
        polled.unwrap_or_else(|| state.off_driver(outside_shard))
    }

    /// The op's resources, to adjust between a result and a
    /// [`restart`](Op::restart).
    pub(crate) fn resources(&mut self) -> &mut T {
        self.state.op_mut()
    }

    /// Makes a completed op start again on its next poll, with the same
    /// resources.
    pub(crate) fn restart(&mut self) {
        debug_assert!(matches!(self.state.phase, Phase::Done));
        self.state.phase = Phase::Idle;
    }

    /// Whether the op has not started (or was restarted).
    pub(crate) fn is_idle(&self) -> bool {
        matches!(self.state.phase, Phase::Idle)
    }

    /// Hands out the resources of an op that is not in flight: completed,
    /// or never started (which it then never does).
    pub(crate) fn take(&mut self) -> T {
        debug_assert!(matches!(self.state.phase, Phase::Done | Phase::Idle));
        self.state.phase = Phase::Done;
        self.state
            .op
            .take()
            .expect("an op's resources are taken once")
    }
}

fn outside_shard() -> io::Error {
    io::Error::other("ringshard I/O must run on a ringshard shard (inside block_on or a task)")
}

impl<T: Operation> Future for Op<T> {
    type Output = (io::Result<usize>, T);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let result = std::task::ready!(this.poll_result(cx));
        Poll::Ready((result, this.take()))
    }
}

impl<T: Operation> Drop for Op<T> {
    fn drop(&mut self) {
        match self.state.phase {
            Phase::Idle | Phase::Done => {}
            #[cfg(target_os = "linux")]
            Phase::Uring { uid, key } => {
                let op = self.state.op.take().expect("in flight with its resources");
                super::uring::op::abandon(uid, key, op)
            }
            Phase::Poll {
                uid, token, waiter, ..
            } => {
                if let Some(waiter) = waiter {
                    context::with_driver_of(uid, |driver| {
                        if let Driver::Poll(poll) = driver {
                            poll.remove_waiter(token, waiter);
                        }
                    });
                }
            }
        }
    }
}

/// A socket address the kernel fills in (accept, recvfrom), boxed by its owner.
pub(crate) struct AddrBuf {
    storage: libc::sockaddr_storage,
    pub(crate) len: libc::socklen_t,
}

impl AddrBuf {
    pub(crate) fn new() -> Box<AddrBuf> {
        Box::new(AddrBuf {
            // SAFETY: an all-zero sockaddr_storage is a valid empty address.
            storage: unsafe { std::mem::zeroed() },
            len: std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        })
    }

    /// Where the kernel writes the address; `len` must be reset to the
    /// storage's size before each use.
    pub(crate) fn as_mut_ptr(&mut self) -> *mut libc::sockaddr {
        (&mut self.storage as *mut libc::sockaddr_storage).cast()
    }

    /// Makes the whole storage available to the next write.
    pub(crate) fn reset_len(&mut self) {
        self.len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    }

    /// The address the kernel wrote.
    pub(crate) fn to_sockaddr(&self) -> SockAddr {
        let mut storage = SockAddrStorage::zeroed();
        // SAFETY: SockAddrStorage is a transparent sockaddr_storage, and the
        // kernel initialized `len` bytes of ours with an address of the
        // family it records there.
        unsafe {
            *storage.view_as::<libc::sockaddr_storage>() = self.storage;
            SockAddr::new(storage, self.len)
        }
    }
}

/// `accept4(fd, addr, SOCK_NONBLOCK | SOCK_CLOEXEC)`.
pub(crate) struct Accept {
    pub(crate) fd: SharedFd,
    pub(crate) addr: Box<AddrBuf>,
}

impl OpCode for Accept {
    fn socket(&self) -> Option<&SharedFd> {
        Some(&self.fd)
    }

    /// The connection was accepted after nobody wanted it: close it, so the
    /// peer sees EOF instead of a half-open socket and no fd leaks.
    fn complete_orphan(self, result: i32) {
        if result >= 0 {
            // SAFETY: a successful accept returns a new fd nobody else owns.
            let fd = unsafe { SharedFd::from_raw(result) };
            // Deliberately broken build for the cancel tests: leak it.
            #[cfg(ringshard_broken = "leak_late_accept")]
            std::mem::forget(fd);
            #[cfg(not(ringshard_broken = "leak_late_accept"))]
            drop(fd);
        }
    }
}

/// `connect(fd, addr)`; `started` records, on the poll driver, that the
/// connect is in progress and only its outcome remains to be read.
pub(crate) struct Connect {
    pub(crate) fd: SharedFd,
    pub(crate) addr: Box<SockAddr>,
    pub(crate) started: bool,
}

impl OpCode for Connect {
    fn socket(&self) -> Option<&SharedFd> {
        Some(&self.fd)
    }
}

/// `recv(fd, buf[offset..capacity])`; the result sets the buffer's length to
/// `offset + n`.
pub(crate) struct Recv<B> {
    pub(crate) fd: SharedFd,
    pub(crate) buf: B,
    pub(crate) offset: usize,
    /// A byte stream (not datagrams): a short read means the socket is
    /// drained, which the readiness driver uses to skip a futile retry.
    pub(crate) stream: bool,
}

impl<B: IoBufMut> Recv<B> {
    /// Where the kernel writes, and how much.
    pub(crate) fn target(&mut self) -> (*mut u8, usize) {
        let total = self.buf.bytes_total();
        let offset = self.offset.min(total);
        // SAFETY: `offset <= total`, inside the buffer's writable memory.
        let ptr = unsafe { self.buf.write_ptr().add(offset) };
        (ptr, (total - offset).min(i32::MAX as usize))
    }

    /// Records `n` more bytes received.
    pub(crate) fn commit(&mut self, n: usize) {
        // SAFETY: the kernel initialized `n` bytes after `offset`, within
        // the length `target` gave it.
        #[cfg(not(ringshard_broken = "recv_offset"))]
        unsafe {
            self.buf.set_init(self.offset + n)
        };
        // Deliberately broken build for the echo tests: forget the offset.
        #[cfg(ringshard_broken = "recv_offset")]
        // SAFETY: as above; `n` bytes are initialized only by chance here.
        unsafe {
            self.buf.set_init(n)
        };
    }
}

impl<B: IoBufMut> OpCode for Recv<B> {
    fn socket(&self) -> Option<&SharedFd> {
        Some(&self.fd)
    }

    /// A dropped stream read keeps its bytes for the socket's next read.
    fn abandoned(&self) {
        if self.stream {
            self.fd.late_begin();
        }
    }

    fn complete_orphan(mut self, result: i32) {
        if !self.stream {
            // A datagram whose read was dropped is dropped with it.
            return;
        }
        let received = usize::try_from(result).unwrap_or(0);
        // Our own cancel is no error of the socket's.
        let error =
            (result < 0 && -result != libc::ECANCELED && -result != libc::EINTR).then_some(-result);
        let (ptr, len) = self.target();
        // SAFETY: the kernel wrote `received <= len` bytes at `ptr`, where
        // `target` pointed the SQE, and is done with the buffer.
        let bytes = unsafe { std::slice::from_raw_parts(ptr, received.min(len)) };
        self.fd.late_end(bytes, error);
    }
}

/// `send(fd, buf[offset..len], MSG_NOSIGNAL)`.
pub(crate) struct Send<B> {
    pub(crate) fd: SharedFd,
    pub(crate) buf: B,
    pub(crate) offset: usize,
}

impl<B: IoBuf> Send<B> {
    /// What the kernel reads, and how much.
    pub(crate) fn source(&self) -> (*const u8, usize) {
        let len = self.buf.bytes_init();
        let offset = self.offset.min(len);
        // SAFETY: `offset <= len`, inside the buffer's initialized bytes.
        let ptr = unsafe { self.buf.read_ptr().add(offset) };
        (ptr, (len - offset).min(i32::MAX as usize))
    }
}

impl<B: IoBuf> OpCode for Send<B> {
    const WRITES: bool = true;

    fn socket(&self) -> Option<&SharedFd> {
        Some(&self.fd)
    }
}

/// The most iovecs one `sendmsg` takes (`UIO_MAXIOV`; `IOV_MAX` elsewhere).
#[cfg(target_os = "linux")]
const MAX_IOVECS: usize = libc::UIO_MAXIOV as usize;
#[cfg(not(target_os = "linux"))]
const MAX_IOVECS: usize = libc::IOV_MAX as usize;

/// `sendmsg(fd, {addr, iovecs}, MSG_NOSIGNAL)`: `writev` on a stream (never
/// raising SIGPIPE, unlike writev(2)) and `send_to` on a datagram socket.
pub(crate) struct SendMsg<B> {
    pub(crate) fd: SharedFd,
    pub(crate) bufs: Vec<B>,
    iovecs: Vec<libc::iovec>,
    addr: Option<Box<SockAddr>>,
    msg: Box<libc::msghdr>,
}

impl<B: IoBuf> SendMsg<B> {
    pub(crate) fn new(fd: SharedFd, bufs: Vec<B>, addr: Option<SockAddr>) -> SendMsg<B> {
        let mut iovecs: Vec<libc::iovec> = bufs
            .iter()
            .map(|buf| libc::iovec {
                iov_base: buf.read_ptr().cast_mut().cast(),
                iov_len: buf.bytes_init(),
            })
            .collect();
        let addr = addr.map(Box::new);
        // SAFETY: an all-zero msghdr is a valid empty message.
        let mut msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        if let Some(addr) = &addr {
            msg.msg_name = addr.as_ptr().cast_mut().cast();
            msg.msg_namelen = addr.len();
        }
        msg.msg_iov = iovecs.as_mut_ptr();
        msg.msg_iovlen = iovecs.len().min(MAX_IOVECS) as _;
        SendMsg {
            fd,
            bufs,
            iovecs,
            addr,
            msg,
        }
    }

    /// The message the kernel reads; every pointer in it points into heap
    /// memory this op owns.
    pub(crate) fn msg(&self) -> *const libc::msghdr {
        debug_assert!(
            self.iovecs.is_empty() || self.msg.msg_iov == self.iovecs.as_ptr().cast_mut()
        );
        debug_assert!(self.addr.is_some() || self.msg.msg_name.is_null());
        &*self.msg
    }
}

impl<B: IoBuf> OpCode for SendMsg<B> {
    const WRITES: bool = true;

    fn socket(&self) -> Option<&SharedFd> {
        Some(&self.fd)
    }
}

/// `recvmsg(fd, {addr, buf})`: `recv_from` on a datagram socket.
pub(crate) struct RecvMsg<B> {
    pub(crate) fd: SharedFd,
    pub(crate) buf: B,
    addr: Box<AddrBuf>,
    iovec: Box<libc::iovec>,
    msg: Box<libc::msghdr>,
}

impl<B: IoBufMut> RecvMsg<B> {
    pub(crate) fn new(fd: SharedFd, mut buf: B) -> RecvMsg<B> {
        let mut addr = AddrBuf::new();
        let mut iovec = Box::new(libc::iovec {
            iov_base: buf.write_ptr().cast(),
            iov_len: buf.bytes_total(),
        });
        // SAFETY: an all-zero msghdr is a valid empty message.
        let mut msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        msg.msg_name = addr.as_mut_ptr().cast();
        msg.msg_namelen = addr.len;
        msg.msg_iov = &mut *iovec;
        msg.msg_iovlen = 1;
        RecvMsg {
            fd,
            buf,
            addr,
            iovec,
            msg,
        }
    }

    /// The message the kernel fills; every pointer in it points into heap
    /// memory this op owns.
    pub(crate) fn msg(&mut self) -> *mut libc::msghdr {
        debug_assert!(std::ptr::eq(self.msg.msg_iov, &*self.iovec));
        &mut *self.msg
    }

    /// Records `n` bytes received; returns the sender's address.
    pub(crate) fn commit(&mut self, n: usize) -> SockAddr {
        // SAFETY: the kernel initialized `n` bytes of the buffer.
        unsafe { self.buf.set_init(n) };
        self.addr.len = self.msg.msg_namelen;
        self.addr.to_sockaddr()
    }
}

impl<B: IoBufMut> OpCode for RecvMsg<B> {
    fn socket(&self) -> Option<&SharedFd> {
        Some(&self.fd)
    }
}

/// Waits until the socket is readable (`WRITE == false`) or writable: the
/// wait of poll-mode I/O (`net/poll_io.rs`), whose syscalls are made by the
/// caller straight from or into its own memory. Completes with the readiness
/// seen (io_uring: the `revents` of a one-shot `POLL_ADD`), after which the
/// caller tries its syscall again. It lends the kernel nothing but the fd.
pub(crate) struct Readiness<const WRITE: bool> {
    pub(crate) fd: SharedFd,
}

impl<const WRITE: bool> OpCode for Readiness<WRITE> {
    // The broken build for the off-shard drop test treats it like an op
    // that lends memory: leaked with its fd clone, as it once was.
    const LENDS_MEMORY: bool = cfg!(ringshard_broken = "leak_readiness");

    fn socket(&self) -> Option<&SharedFd> {
        Some(&self.fd)
    }
}
