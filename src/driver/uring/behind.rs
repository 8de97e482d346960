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
//! only when no send is in flight (otherwise it is leaked). The `Vec` of
//! buffers holds boxes, so a buffer's address never moves as it grows.

use std::task::Waker;
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types};

use super::super::fd::SharedFd;
use super::wake::TOKEN_WAKE_FAILED;

/// The largest write copied: one buffer of the pool (larger writes lend
/// their own buffer to an awaited send, where a copy would cost more than
/// the second poll it saves).
pub(crate) const BEHIND_MAX: usize = 4096;
/// The most buffers a shard's pool holds (4 MiB); when they are all in
/// flight, writes lend their own buffer to an awaited send.
const POOL_MAX: usize = 1024;
/// The `user_data` of the send from buffer `i` is `TOKEN_BEHIND + i`, just
/// below the wake messages' (see `wake.rs`): a send is found by its buffer,
/// with no slot in the op slab.
pub(crate) const TOKEN_BEHIND: u64 = TOKEN_WAKE_FAILED - POOL_MAX as u64;
/// How long a send whose socket's every handle was dropped may wait for
/// the peer to take its bytes before it is cancelled and the socket closes
/// (as the kernel bounds the life of a closed socket with unsent data).
pub(crate) const LINGER: Duration = super::super::BEHIND_LINGER;
/// How often the pool looks for such sends, while any send is in flight.
pub(crate) const SWEEP: Duration = Duration::from_secs(1);

/// A write-behind send in flight, kept beside its buffer.
struct Behind {
    /// Keeps the socket open until the bytes are out.
    fd: SharedFd,
    /// What is left to send: `buffer[start..end]`.
    start: u16,
    end: u16,
    /// When a sweep first found every other handle of the socket dropped.
    orphaned: Option<Instant>,
    /// Its cancel is queued: its next CQE ends it, even a short send's.
    cancelled: bool,
}

/// The shard's write-behind buffers, made as they are first needed, and
/// the sends in flight from them.
#[derive(Default)]
pub(crate) struct Pool {
    buffers: Vec<Box<[u8; BEHIND_MAX]>>,
    /// The send from each buffer, while it is in flight.
    sends: Vec<Option<Behind>>,
    free: Vec<u16>,
    /// Sends in flight, whose buffers the kernel may read.
    in_flight: usize,
    /// When the next sweep for orphaned sends is due.
    next_sweep: Option<Instant>,
}

impl Pool {
    /// Copies `bytes` into a free buffer and builds their send (with its
    /// `user_data`), or `None`: too many bytes, or every buffer in flight.
    #[inline]
    pub(crate) fn attempt(&mut self, fd: &SharedFd, bytes: &[u8]) -> Option<squeue::Entry> {
        if bytes.is_empty() || bytes.len() > BEHIND_MAX {
            return None;
        }
        let buf = match self.free.pop() {
            Some(buf) => buf,
            None if self.buffers.len() < POOL_MAX => {
                self.buffers.push(Box::new([0; BEHIND_MAX]));
                self.sends.push(None);
                (self.buffers.len() - 1) as u16
            }
            None => return None,
        };
        let index = usize::from(buf);
        self.buffers[index][..bytes.len()].copy_from_slice(bytes);
        self.sends[index] = Some(Behind {
            fd: fd.clone(),
            start: 0,
            end: bytes.len() as u16,
            orphaned: None,
            cancelled: false,
        });
        self.in_flight += 1;
        self.sqe(TOKEN_BEHIND + u64::from(buf))
    }

    /// The send of what is left from the buffer `user_data` names, if a
    /// send from it is in flight. `MSG_WAITALL` has the kernel retry a
    /// short stream send itself (5.19 and later); a kernel that does not
    /// is resubmitted.
    #[inline]
    pub(crate) fn sqe(&self, user_data: u64) -> Option<squeue::Entry> {
        let index = usize::try_from(user_data.checked_sub(TOKEN_BEHIND)?).ok()?;
        let behind = self.sends.get(index)?.as_ref()?;
        let left = &self.buffers[index][usize::from(behind.start)..usize::from(behind.end)];
        let sqe = opcode::Send::new(types::Fd(behind.fd.raw()), left.as_ptr(), left.len() as u32)
            .flags(libc::MSG_NOSIGNAL | libc::MSG_WAITALL)
            .build()
            .user_data(user_data);
        Some(sqe)
    }

    /// Takes the CQE of the send `user_data`: `Resend` when something is
    /// left to send (after a short send; the caller resubmits
    /// [`Pool::sqe`]), `Done` when the send is over, its buffer back in the
    /// pool and its socket told (`SharedFd::send_end`; the waker it returns
    /// goes to `wakers`), with its fd clone if that is the last one (to drop
    /// outside the driver).
    pub(crate) fn complete(
        &mut self,
        user_data: u64,
        result: i32,
        wakers: &mut Vec<Waker>,
    ) -> Completion {
        let index = (user_data - TOKEN_BEHIND) as usize;
        let Some(behind) = self.sends.get_mut(index).and_then(Option::as_mut) else {
            debug_assert!(
                false,
                "a CQE for write-behind buffer {index}, which sends nothing"
            );
            return Completion::Done(None);
        };
        let error = match result {
            sent if sent > 0 => {
                let left = usize::from(behind.end - behind.start);
                let sent = (sent as usize).min(left);
                behind.start += sent as u16;
                match () {
                    _ if sent == left => None,
                    // A cancelled send reports what it sent before the
                    // cancel: the rest is dropped with it.
                    _ if behind.cancelled => Some(libc::ECANCELED),
                    _ => return Completion::Resend,
                }
            }
            // A cancelled send may end so too.
            _ if behind.cancelled => Some(libc::ECANCELED),
            // A retry the kernel asks for: the same bytes again.
            error if error == -libc::EINTR => return Completion::Resend,
            // The socket was made non-blocking behind our back: blocking
            // again, the retry waits for room instead of failing at once.
            error if error == -libc::EAGAIN => {
                behind.fd.set_blocking(false);
                if super::op::make_blocking(&behind.fd).is_ok() {
                    return Completion::Resend;
                }
                Some(libc::EAGAIN)
            }
            // A stream send of some bytes that sent none: the socket is
            // shut for writing.
            0 => Some(libc::EPIPE),
            error => Some(-error),
        };
        let behind = self.sends[index].take().expect("matched above");
        self.free.push(index as u16);
        self.in_flight -= 1;
        wakers.extend(behind.fd.send_end(error));
        Completion::Done(behind.fd.is_last().then_some(behind.fd))
    }

    /// Whether the kernel may still read one of the buffers.
    pub(crate) fn busy(&self) -> bool {
        self.in_flight > 0
    }

    /// Sends in flight.
    pub(crate) fn in_flight_count(&self) -> usize {
        self.in_flight
    }

    /// Marks every send in flight cancelled; returns their `user_data`, to
    /// cancel: those not cancelled yet, or with `again` every one (a cancel
    /// that found the send running in the kernel's workers may miss).
    pub(crate) fn cancel_all(&mut self, again: bool) -> Vec<u64> {
        let mut cancels = Vec::new();
        for (index, send) in self.sends.iter_mut().enumerate() {
            if let Some(behind) = send.as_mut().filter(|b| again || !b.cancelled) {
                behind.cancelled = true;
                cancels.push(TOKEN_BEHIND + index as u64);
            }
        }
        cancels
    }

    /// At most every [`SWEEP`]: marks cancelled, and returns to cancel, the
    /// sends whose socket has had no other handle for [`LINGER`] (its
    /// owner dropped it and the peer takes nothing). Cheap when nothing is
    /// in flight or the sweep is not due.
    pub(crate) fn sweep(&mut self, now: Instant) -> Vec<u64> {
        if self.in_flight == 0 {
            self.next_sweep = None;
            return Vec::new();
        }
        match self.next_sweep {
            Some(due) if now < due => return Vec::new(),
            _ => self.next_sweep = Some(now + SWEEP),
        }
        let mut cancels = Vec::new();
        for (index, send) in self.sends.iter_mut().enumerate() {
            let Some(behind) = send.as_mut().filter(|b| !b.cancelled) else {
                continue;
            };
            if !behind.fd.is_last() {
                behind.orphaned = None;
                continue;
            }
            let since = *behind.orphaned.get_or_insert(now);
            // Deliberately broken build for the linger test: never.
            #[cfg(ringshard_broken = "behind_no_linger")]
            let since = now;
            if now.saturating_duration_since(since) >= LINGER {
                behind.cancelled = true;
                cancels.push(TOKEN_BEHIND + index as u64);
            }
        }
        cancels
    }

    /// Frees the buffers, or, if a send may still read one, leaks them with
    /// the sends' fd clones (their sockets stay open, never reused under a
    /// send).
    pub(crate) fn release(&mut self) {
        if self.busy() {
            std::mem::forget(std::mem::take(&mut self.buffers));
            std::mem::forget(std::mem::take(&mut self.sends));
            self.free.clear();
            self.in_flight = 0;
        }
    }
}

/// What a write-behind send's CQE left to do.
pub(crate) enum Completion {
    /// Send the rest ([`Pool::sqe`]).
    Resend,
    /// Over; the last fd clone, if it was.
    Done(Option<SharedFd>),
}
