//! [`SharedFd`]: a socket's file descriptor, closed only after the last op
//! that uses it is done.
//!
//! Every in-flight op holds a clone. Dropping a `TcpStream` while a read is in
//! flight therefore does not close the fd: the read's op (abandoned, waiting
//! for its CQE) still owns a clone, and the fd is closed when that CQE
//! arrives. Until then the number cannot be handed to a new socket, so no op
//! ever lands on a socket it was not meant for.

use std::cell::{Cell, RefCell};
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use crate::context;

/// A reference-counted fd, closed when the last clone drops. `!Send`: it
/// belongs to the shard that created it.
#[derive(Clone)]
pub(crate) struct SharedFd {
    inner: Rc<Inner>,
}

struct Inner {
    /// Taken only in `drop`, which hands it to the driver to close.
    fd: ManuallyDrop<OwnedFd>,
    /// Known to be in blocking mode, which the io_uring driver wants: with
    /// `O_NONBLOCK`, a retry the kernel punts to its worker threads would
    /// complete with `EAGAIN` instead of waiting.
    blocking: Cell<bool>,
    /// The driver's state for this socket, made on the first op that needs
    /// it: (shard uid, token). On the readiness driver, the socket's
    /// registration; on io_uring, its multishot recv (buffered reads).
    registration: Cell<Option<(u64, u64)>>,
    /// The registration is an io_uring multishot op armed on the socket.
    multishot: Cell<bool>,
    /// What dropped stream reads left behind (see [`Late`]); `None` in the
    /// common case, so a read checks one word.
    late: RefCell<Option<Box<Late>>>,
    /// A write-behind send is in flight on io_uring (`uring/behind.rs`):
    /// every later write, and a shutdown of the write side, waits for it.
    sending: Cell<bool>,
    /// What a write-behind send leaves to later writes (see [`Sent`]);
    /// `None` in the common case.
    sent: RefCell<Option<Box<Sent>>>,
    /// The write side was shut down (or will be, after the send in
    /// flight): no write goes behind any more, so each fails itself.
    write_shut: Cell<bool>,
}

/// What a write-behind send leaves to the socket's later writes: its error,
/// which the next write reports (the bytes were accepted by the write that
/// made the send, as a kernel socket buffer accepts them), the write waiting
/// for it to complete, and a write shutdown asked for meanwhile, made once
/// the bytes are out.
#[derive(Default)]
struct Sent {
    error: Option<i32>,
    waker: Option<Waker>,
    shutdown_write: bool,
}

/// The bytes of stream reads whose futures were dropped while the kernel
/// was filling their buffer (one-shot recvs on io_uring): the late
/// completion's bytes are kept here for the socket's next read, so a
/// dropped read never loses data. Reads wait while such a recv is still
/// in flight (its cancel was queued with the drop), so bytes come out in
/// the order the socket received them.
#[derive(Default)]
struct Late {
    bytes: Vec<u8>,
    /// How much of `bytes` was read already.
    start: usize,
    /// Dropped reads the kernel has not completed yet.
    in_flight: usize,
    /// The read waiting for them.
    waker: Option<Waker>,
    /// An error a dropped read got from the socket (a reset, say): the
    /// socket reported it once, so the next read reports it, after the
    /// bytes, rather than a clean end.
    error: Option<i32>,
}

impl SharedFd {
    /// Wraps `fd`, whose blocking mode is not known.
    pub(crate) fn new(fd: OwnedFd) -> SharedFd {
        SharedFd::with_mode(fd, false)
    }

    /// Wraps `fd`; `blocking` says it is known to be in blocking mode.
    pub(crate) fn with_mode(fd: OwnedFd, blocking: bool) -> SharedFd {
        SharedFd {
            inner: Rc::new(Inner {
                fd: ManuallyDrop::new(fd),
                blocking: Cell::new(blocking),
                registration: Cell::new(None),
                multishot: Cell::new(false),
                late: RefCell::new(None),
                sending: Cell::new(false),
                sent: RefCell::new(None),
                write_shut: Cell::new(false),
            }),
        }
    }

    pub(crate) fn is_blocking(&self) -> bool {
        self.inner.blocking.get()
    }

    pub(crate) fn set_blocking(&self, blocking: bool) {
        self.inner.blocking.set(blocking);
    }

    /// Takes ownership of `fd`, whose blocking mode is not known.
    ///
    /// # Safety
    ///
    /// `fd` must be an open descriptor owned by nobody else.
    pub(crate) unsafe fn from_raw(fd: RawFd) -> SharedFd {
        // SAFETY: forwarded from this function's contract.
        SharedFd::new(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Whether this is the only clone left.
    pub(crate) fn is_last(&self) -> bool {
        Rc::strong_count(&self.inner) == 1
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.inner.fd.as_raw_fd()
    }

    #[inline]
    pub(crate) fn registration(&self) -> Option<(u64, u64)> {
        self.inner.registration.get()
    }

    pub(crate) fn set_registration(&self, registration: (u64, u64)) {
        self.inner.registration.set(Some(registration));
    }

    /// Records the io_uring multishot op (recv or accept) armed on it.
    pub(crate) fn set_multishot(&self, uid: u64, user_data: u64) {
        self.inner.registration.set(Some((uid, user_data)));
        self.inner.multishot.set(true);
    }

    pub(crate) fn clear_registration(&self) {
        self.inner.registration.set(None);
        self.inner.multishot.set(false);
    }

    /// A stream read on this socket was dropped while in flight; its
    /// result comes to [`late_end`](SharedFd::late_end).
    pub(crate) fn late_begin(&self) {
        self.inner
            .late
            .borrow_mut()
            .get_or_insert_default()
            .in_flight += 1;
    }

    /// A dropped stream read completed: `bytes` is what the kernel wrote
    /// into its buffer (nothing if it failed or was cancelled in time), and
    /// `error` the errno it failed with, if any (not its cancel).
    pub(crate) fn late_end(&self, bytes: &[u8], error: Option<i32>) {
        let mut late = self.inner.late.borrow_mut();
        let Some(state) = late.as_mut() else {
            return;
        };
        state.in_flight = state.in_flight.saturating_sub(1);
        #[cfg(not(ringshard_broken = "drop_late_bytes"))]
        state.bytes.extend_from_slice(bytes);
        #[cfg(ringshard_broken = "drop_late_bytes")]
        let _ = bytes;
        state.error = state.error.or(error);
        let waker = state.waker.take();
        drop(late);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Whether a write may go behind: not after a write shutdown.
    pub(crate) fn may_write_behind(&self) -> bool {
        !self.inner.write_shut.get()
    }

    /// A write-behind send of this socket was submitted.
    pub(crate) fn send_begin(&self) {
        #[cfg(not(ringshard_broken = "behind_no_wait"))]
        debug_assert!(!self.inner.sending.get());
        self.inner.sending.set(true);
    }

    /// A write-behind send completed, failing with `error` if it did: a
    /// write shutdown asked for meanwhile is made now. Returns the waker of
    /// the write waiting for it.
    #[inline]
    pub(crate) fn send_end(&self, error: Option<i32>) -> Option<Waker> {
        self.inner.sending.set(false);
        if error.is_none() && self.inner.sent.borrow().is_none() {
            return None;
        }
        self.send_end_slow(error)
    }

    #[inline(never)]
    fn send_end_slow(&self, error: Option<i32>) -> Option<Waker> {
        let mut sent = self.inner.sent.borrow_mut();
        let state = sent.get_or_insert_default();
        state.error = state.error.or(error);
        let shutdown = std::mem::take(&mut state.shutdown_write);
        if error.is_some() {
            // Bytes a write accepted were not all sent: the close resets
            // the connection rather than end the stream as if they were
            // (and a shutdown asked meanwhile sends no end of stream).
            let _ = socket2::SockRef::from(self).set_linger(Some(std::time::Duration::ZERO));
        } else if shutdown {
            // The peer is gone already if this fails: nothing to report.
            let _ = socket2::SockRef::from(self).shutdown(std::net::Shutdown::Write);
        }
        let waker = state.waker.take();
        if state.error.is_none() {
            *sent = None;
        }
        waker
    }

    /// Ready once no write-behind send is in flight, with the error the
    /// last one failed with (reported once); `Pending` with the waker kept
    /// until then. Every write checks it before its own bytes.
    #[inline]
    pub(crate) fn poll_sent(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // Deliberately broken build for the order test: never wait.
        #[cfg(ringshard_broken = "behind_no_wait")]
        return Poll::Ready(Ok(()));
        #[allow(unreachable_code, reason = "after the broken build's return")]
        if !self.inner.sending.get() && self.inner.sent.borrow().is_none() {
            return Poll::Ready(Ok(()));
        }
        self.poll_sent_slow(cx)
    }

    #[inline(never)]
    fn poll_sent_slow(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut sent = self.inner.sent.borrow_mut();
        let state = sent.get_or_insert_default();
        if self.inner.sending.get() {
            let displaced = match &state.waker {
                Some(current) if current.will_wake(cx.waker()) => None,
                _ => state.waker.replace(cx.waker().clone()),
            };
            drop(sent);
            // Another write waited here: it polls again and waits anew
            // rather than sleep forever.
            if let Some(displaced) = displaced {
                displaced.wake();
            }
            return Poll::Pending;
        }
        let error = state.error.take();
        if state.waker.is_none() && !state.shutdown_write {
            *sent = None;
        }
        match error {
            Some(errno) => Poll::Ready(Err(std::io::Error::from_raw_os_error(errno))),
            None => Poll::Ready(Ok(())),
        }
    }

    /// `shutdown(2)`, made after a write-behind send in flight for the
    /// write side (the peer reads every byte written, then end of stream).
    pub(crate) fn shutdown(&self, how: std::net::Shutdown) -> std::io::Result<()> {
        use std::net::Shutdown;
        let socket = socket2::SockRef::from(self);
        if how != Shutdown::Read {
            self.inner.write_shut.set(true);
        }
        // Deliberately broken build for the shutdown test: at once.
        #[cfg(ringshard_broken = "shutdown_before_behind")]
        return socket.shutdown(how);
        #[allow(unreachable_code, reason = "after the broken build's return")]
        if !self.inner.sending.get() {
            return socket.shutdown(how);
        }
        if how != Shutdown::Write {
            socket.shutdown(Shutdown::Read)?;
        }
        if how != Shutdown::Read {
            self.inner
                .sent
                .borrow_mut()
                .get_or_insert_default()
                .shutdown_write = true;
        }
        Ok(())
    }

    /// Whether dropped reads left anything to read or wait for.
    pub(crate) fn has_late(&self) -> bool {
        self.inner.late.borrow().is_some()
    }

    /// Copies up to `len` bytes that dropped reads left into `dst`:
    /// `Ready(Some(Ok(n)))` with `n > 0`, then the error one of them got
    /// (`Ready(Some(Err(..)))`), `Ready(None)` when there is nothing (the
    /// read goes on as usual), `Pending` while a dropped read is still in
    /// flight.
    ///
    /// # Safety
    ///
    /// `dst` must be valid for `len` bytes of writes.
    pub(crate) unsafe fn poll_late(
        &self,
        cx: &mut Context<'_>,
        dst: *mut u8,
        len: usize,
    ) -> Poll<Option<std::io::Result<usize>>> {
        let mut late = self.inner.late.borrow_mut();
        let Some(state) = late.as_mut() else {
            return Poll::Ready(None);
        };
        let available = &state.bytes[state.start..];
        if !available.is_empty() && len > 0 {
            let n = available.len().min(len);
            // SAFETY: `dst` has room for `len >= n` bytes (the caller's
            // contract), and it cannot overlap our own vector.
            unsafe { std::ptr::copy_nonoverlapping(available.as_ptr(), dst, n) };
            state.start += n;
            if state.start == state.bytes.len() {
                state.bytes.clear();
                state.start = 0;
                if state.in_flight == 0 {
                    *late = None;
                }
            }
            return Poll::Ready(Some(Ok(n)));
        }
        if let Some(errno) = state.error.take() {
            if state.in_flight == 0 {
                *late = None;
            }
            return Poll::Ready(Some(Err(std::io::Error::from_raw_os_error(errno))));
        }
        if state.in_flight > 0 {
            state.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if available.is_empty() {
            *late = None;
        }
        Poll::Ready(None)
    }
}

impl Drop for Inner {
    /// Closes the fd, through its driver when it has a registration there
    /// (which may keep it open until the kernel is done with it).
    fn drop(&mut self) {
        // SAFETY: `fd` is never used again.
        let fd = unsafe { ManuallyDrop::take(&mut self.fd) };
        let Some((uid, token)) = self.registration.take() else {
            return drop(fd);
        };
        let mut fd = Some(fd);
        context::with_driver_of(uid, |driver| {
            driver.release(fd.take().expect("once"), token)
        });
        let Some(fd) = fd else {
            return;
        };
        // Dropped off its shard (say, after `block_on` returned). A readiness
        // registration is closed here (which removes it from epoll); its
        // shard only forgets the token. A multishot op may still sit
        // unsubmitted in the ring, naming this fd number: closing it here
        // would let a new socket take the number and the op. The socket is
        // shut down (the peer sees the close, the op ends) and the fd goes
        // to its shard, which releases it at its next turn, or closes here
        // if that shard has shut down: then nothing is submitted any more.
        if !self.multishot.get() {
            drop(fd);
            return context::release_on(uid, (None, token));
        }
        let _ = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Both);
        #[cfg(ringshard_broken = "leak_dropped_off_shard")]
        return std::mem::forget(fd);
        #[allow(unreachable_code, reason = "after the broken build's return")]
        context::release_on(uid, (Some(fd), token));
    }
}

impl AsFd for SharedFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }
}

impl AsRawFd for SharedFd {
    fn as_raw_fd(&self) -> RawFd {
        self.raw()
    }
}

/// A socket fresh from socket2, which creates them in blocking mode.
impl From<socket2::Socket> for SharedFd {
    fn from(socket: socket2::Socket) -> SharedFd {
        // SAFETY: `into_raw_fd` gives up ownership of an open socket.
        let fd = unsafe { OwnedFd::from_raw_fd(socket.into_raw_fd()) };
        SharedFd::with_mode(fd, true)
    }
}
