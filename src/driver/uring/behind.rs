//! Write-behind sends: a small `write_all` copies its bytes into a buffer
//! of the shard's and returns at once, as a write into a kernel socket
//! buffer does; the send runs on the ring behind it.
//!
//! An awaited send costs its task a second poll per write: the task is
//! woken by the send's CQE only to hand the caller its buffer back, and on
//! a request-response stream that second poll finds nothing else to do.
//! Copied, the write completes in the poll that made it; the CQE only
//! recycles the copy. It is the mirror of buffered reads (`recv.rs`), which
//! copy out of the shard's buffers for the same reason.
//!
//! # Order and errors
//!
//! A socket has at most one write-behind send in flight
//! ([`SharedFd::sending`]), and every later write on it, whatever its kind,
//! waits for that send before its own bytes ([`SharedFd::poll_sent`]); a
//! short send is resubmitted from where it stopped, so bytes go out in the
//! order they were written. An error the send gets (a reset, say) is
//! reported by the socket's next write, as a kernel socket reports an error
//! after accepting bytes. A write shutdown asked for meanwhile is made once
//! the bytes are out, so the peer reads them all before end of stream; the
//! in-flight send holds a clone of the fd, so dropping the stream closes it
//! only after that.
//!
//! # Safety
//!
//! The kernel reads a buffer from the send's submission until its final
//! CQE; a buffer goes back to the pool only then. The pool's memory is freed
//! only when no send is in flight (otherwise it is leaked).

use io_uring::{opcode, squeue, types};

use super::super::fd::SharedFd;

/// The largest write copied: one buffer of the pool (larger writes lend
/// their own buffer to an awaited send, where a copy would cost more than
/// the second poll it saves).
pub(crate) const BEHIND_MAX: usize = 4096;
/// The most buffers a shard's pool holds (4 MiB); when they are all in
/// flight, writes lend their own buffer to an awaited send.
const POOL_MAX: usize = 1024;

/// A write-behind send in flight: its slot's state in the op slab.
pub(crate) struct Behind {
    /// Keeps the socket open until the bytes are out.
    pub(crate) fd: SharedFd,
    buf: u16,
    /// What is left to send: `buf[start..end]`.
    start: u16,
    end: u16,
}

/// The shard's write-behind buffers, made as they are first needed.
#[derive(Default)]
pub(crate) struct Pool {
    buffers: Vec<Box<[u8; BEHIND_MAX]>>,
    free: Vec<u16>,
    /// Sends in flight, whose buffers the kernel may read.
    in_flight: usize,
}

/// What a write-behind attempt did.
pub(crate) enum Attempt {
    /// The bytes were copied and their send queued.
    Queued(squeue::Entry, Behind),
    /// Not written: too large, or the pool is all in flight.
    Declined,
}

impl Pool {
    /// Copies `bytes` into a free buffer and builds their send, or declines.
    pub(crate) fn attempt(&mut self, fd: &SharedFd, bytes: &[u8]) -> Attempt {
        if bytes.is_empty() || bytes.len() > BEHIND_MAX {
            return Attempt::Declined;
        }
        let buf = match self.free.pop() {
            Some(buf) => buf,
            None if self.buffers.len() < POOL_MAX => {
                self.buffers.push(Box::new([0; BEHIND_MAX]));
                (self.buffers.len() - 1) as u16
            }
            None => return Attempt::Declined,
        };
        self.buffers[usize::from(buf)][..bytes.len()].copy_from_slice(bytes);
        let behind = Behind {
            fd: fd.clone(),
            buf,
            start: 0,
            end: bytes.len() as u16,
        };
        self.in_flight += 1;
        Attempt::Queued(self.sqe(&behind), behind)
    }

    /// The send of what is left of `behind` (its user data is the
    /// caller's). `MSG_WAITALL` has the kernel retry a short stream send
    /// itself (5.19 and later); a kernel that does not is resubmitted.
    pub(crate) fn sqe(&self, behind: &Behind) -> squeue::Entry {
        let buffer = &self.buffers[usize::from(behind.buf)];
        let left = &buffer[usize::from(behind.start)..usize::from(behind.end)];
        opcode::Send::new(types::Fd(behind.fd.raw()), left.as_ptr(), left.len() as u32)
            .flags(libc::MSG_NOSIGNAL | libc::MSG_WAITALL)
            .build()
    }

    /// Takes the CQE of `behind`'s send: `true` when something is left to
    /// send (after a short send; the caller resubmits [`Pool::sqe`] under
    /// the same user data), `false` when `behind` is done, its buffer back
    /// in the pool and its socket told (`SharedFd::send_end`; the waker it
    /// returns goes to `wakers`).
    pub(crate) fn complete(
        &mut self,
        behind: &mut Behind,
        result: i32,
        wakers: &mut Vec<std::task::Waker>,
    ) -> bool {
        let error = match result {
            sent if sent > 0 => {
                let left = usize::from(behind.end - behind.start);
                let sent = (sent as usize).min(left);
                behind.start += sent as u16;
                if sent < left {
                    return true;
                }
                None
            }
            // A retry the kernel asks for: the same bytes again.
            error if error == -libc::EINTR || error == -libc::EAGAIN => return true,
            // A stream send of some bytes that sent none: the socket is
            // shut for writing.
            0 => Some(libc::EPIPE),
            error => Some(-error),
        };
        self.free.push(behind.buf);
        self.in_flight -= 1;
        wakers.extend(behind.fd.send_end(error));
        false
    }

    /// Whether the kernel may still read one of the buffers.
    pub(crate) fn busy(&self) -> bool {
        self.in_flight > 0
    }

    /// Frees the buffers, or leaks them if a send may still read one.
    pub(crate) fn release(&mut self) {
        if self.busy() {
            std::mem::forget(std::mem::take(&mut self.buffers));
        }
    }
}
