//! Multishot accept: one accept armed on a listener, posting a CQE per
//! connection, instead of one accept SQE per connection.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::task::Waker;

/// Accepted connections a listener may hold unclaimed before its accept is
/// paused (the rest wait in the kernel's backlog).
pub(crate) const CAP: usize = 64;

/// One listener's multishot accept: connections accepted that nobody took yet.
#[derive(Default)]
pub(crate) struct Accepts {
    fds: VecDeque<OwnedFd>,
    /// Set by the final CQE (no `F_MORE`): `-errno`, or [`super::recv::STOPPED`].
    pub(crate) end: Option<i32>,
    paused: bool,
    pub(crate) waker: Option<Waker>,
    /// The listener was dropped while armed: its fd, closed at the final CQE.
    pub(crate) orphan_fd: Option<OwnedFd>,
}

/// What a multishot accept found.
pub(crate) enum Accepted {
    Ready(io::Result<RawFd>),
    Pending,
    /// Accept with a single-shot accept this time.
    Fallback,
}

impl Accepts {
    pub(crate) fn armed(&self) -> bool {
        self.end.is_none()
    }

    /// Takes one CQE; the waker goes to `wakers` (run outside the driver).
    /// Returns whether to pause (cancel) the accept now.
    pub(crate) fn complete(&mut self, result: i32, flags: u32, wakers: &mut Vec<Waker>) -> bool {
        if result >= 0 {
            // SAFETY: a successful accept returns a new fd nobody else owns;
            // a dropped listener's late connections close with it.
            let fd = unsafe { OwnedFd::from_raw_fd(result) };
            if self.orphan_fd.is_none() {
                self.fds.push_back(fd);
            }
        }
        if !io_uring::cqueue::more(flags) {
            self.end = Some(if result >= 0 {
                super::recv::STOPPED
            } else {
                result
            });
        }
        wakers.extend(self.waker.take());
        let pause = self.armed() && !self.paused && self.fds.len() >= CAP;
        self.paused |= pause;
        pause
    }

    /// Keeps `waker`; returns a different one it displaced (another task
    /// accepting on the same listener), to be woken so it polls again.
    pub(crate) fn set_waker(&mut self, waker: &Waker) -> Option<Waker> {
        super::recv::set_waker(&mut self.waker, waker)
    }

    /// The next accepted connection, if one waits.
    pub(crate) fn pop(&mut self) -> Option<OwnedFd> {
        self.fds.pop_front()
    }

    /// Closes every connection nobody took (the listener is gone).
    pub(crate) fn discard(&mut self) {
        // Deliberately broken build for the listener-drop test: leak them.
        #[cfg(ringshard_broken = "leak_queued_accepts")]
        self.fds.drain(..).for_each(std::mem::forget);
        self.fds.clear();
    }
}
