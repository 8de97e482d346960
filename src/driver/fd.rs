//! [`SharedFd`]: a socket's file descriptor, closed only after the last op
//! that uses it is done.
//!
//! Every in-flight op holds a clone. Dropping a `TcpStream` while a read is in
//! flight therefore does not close the fd: the read's op (abandoned, waiting
//! for its CQE) still owns a clone, and the fd is closed when that CQE
//! arrives. Until then the number cannot be handed to a new socket, so no op
//! ever lands on a socket it was not meant for.

use std::cell::Cell;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use crate::shard;

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

    pub(crate) fn raw(&self) -> RawFd {
        self.inner.fd.as_raw_fd()
    }

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
        shard::with_driver_of(uid, |driver| {
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
            return shard::release_on(uid, (None, token));
        }
        let _ = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Both);
        #[cfg(ringshard_broken = "leak_dropped_off_shard")]
        return std::mem::forget(fd);
        #[allow(unreachable_code, reason = "after the broken build's return")]
        shard::release_on(uid, (Some(fd), token));
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
