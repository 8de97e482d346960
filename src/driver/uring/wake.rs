//! Waking a uring shard that is parked in `io_uring_enter`.
//!
//! Every parked ring has a read of its eventfd armed, so a write to that
//! eventfd wakes it from any thread. A waker that is itself a uring shard
//! sends an `IORING_OP_MSG_RING` from its own ring instead: the kernel posts
//! a CQE straight into the target's ring, which skips the eventfd's wait
//! queue and the read the target would re-arm. Measured between two pinned
//! rings on the project machine (`benches/unpark.rs`): 31.9 µs per two-wake
//! round trip against 44.2 µs for the eventfd (0.72).
//!
//! The message goes out with `SKIP_SUCCESS`, so only a failed one posts a
//! CQE, into the waker's ring. That CQE's `user_data` names the target in
//! the waker's [`Targets`], and the target gets the eventfd write instead:
//! a wake is never lost.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;

use io_uring::{opcode, squeue, types, IoUring};

use crate::sys::EventFd;

/// `user_data` of the CQE a message posts into the target ring; ignored.
pub(super) const TOKEN_WAKE: u64 = u64::MAX - 2;
/// The targets one ring keeps; more are woken through their eventfd.
const MAX_TARGETS: usize = 64;
/// `user_data` of a message to target `i` is `TOKEN_WAKE_FAILED + i`: its
/// CQE only comes if the message failed. None of these tokens can be an
/// `OpKey` (its index would be near `u32::MAX`).
pub(super) const TOKEN_WAKE_FAILED: u64 = TOKEN_WAKE - MAX_TARGETS as u64;

/// How to wake one uring shard; shared by everything that may wake it.
pub(crate) struct Wake {
    eventfd: EventFd,
    /// A duplicate of the target ring's fd, for `IORING_OP_MSG_RING`; `None`
    /// when the kernel cannot message this ring. Being our own fd, its number
    /// cannot be reused for another file while anyone may still send to it.
    ring: Option<OwnedFd>,
}

impl Wake {
    /// The wake of `ring`, whose parks read `eventfd`. `msg_ring` says
    /// whether other rings may message it (see [`can_message`]).
    pub(super) fn new(eventfd: EventFd, ring: &IoUring, msg_ring: bool) -> std::io::Result<Wake> {
        let ring = if msg_ring {
            Some(ring.as_fd().try_clone_to_owned()?)
        } else {
            None
        };
        Ok(Wake { eventfd, ring })
    }

    /// A wake whose "ring" is really another fd (an eventfd), so every
    /// message to it fails.
    #[cfg(test)]
    pub(super) fn for_test(eventfd: EventFd) -> Arc<Wake> {
        // SAFETY: `eventfd` is open for this whole call.
        let fake = unsafe { std::os::fd::BorrowedFd::borrow_raw(eventfd.raw()) }
            .try_clone_to_owned()
            .expect("dup");
        Arc::new(Wake {
            eventfd,
            ring: Some(fake),
        })
    }

    pub(super) fn eventfd(&self) -> &EventFd {
        &self.eventfd
    }

    /// Wakes the shard: by a message from the calling shard's ring if it
    /// has a free one, otherwise by its eventfd.
    pub(crate) fn unpark(self: &Arc<Wake>) {
        if self.ring.is_some() && super::send_wake_from_current(self) {
            return;
        }
        self.eventfd.notify();
    }
}

/// The targets one ring has messaged, so a failed message finds its
/// eventfd. Holding a target keeps its fds open until this ring's shard
/// exits.
#[derive(Default)]
pub(super) struct Targets {
    targets: Vec<Arc<Wake>>,
    /// Messages are off: the kernel or this ring cannot send them, or one
    /// failed.
    pub(super) off: bool,
}

impl Targets {
    pub(super) fn new(enabled: bool) -> Targets {
        Targets {
            targets: Vec::new(),
            off: !enabled,
        }
    }

    /// The SQE that wakes `target`, if this ring may send it one.
    pub(super) fn message(&mut self, target: &Arc<Wake>) -> Option<squeue::Entry> {
        if self.off {
            return None;
        }
        let ring = target.ring.as_ref()?;
        let index = match self.targets.iter().position(|t| Arc::ptr_eq(t, target)) {
            Some(index) => index,
            None if self.targets.len() < MAX_TARGETS => {
                self.targets.push(target.clone());
                self.targets.len() - 1
            }
            None => return None,
        };
        let sqe = opcode::MsgRingData::new(types::Fd(ring.as_raw_fd()), 0, TOKEN_WAKE, None)
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(TOKEN_WAKE_FAILED + index as u64);
        Some(sqe)
    }

    /// The message of `user_data` failed: wake its target the other way,
    /// and send no more messages from this ring.
    pub(super) fn failed(&mut self, user_data: u64) {
        self.off = true;
        let index = (user_data - TOKEN_WAKE_FAILED) as usize;
        if let Some(target) = self.targets.get(index) {
            target.eventfd.notify();
        }
    }
}

/// Whether rings may message a ring set up like `ring` on this kernel:
/// the kernel has `IORING_OP_MSG_RING` and `SKIP_SUCCESS` (5.18), and, for a
/// `SINGLE_ISSUER` + `DEFER_TASKRUN` target, posts the CQE from the target's
/// own task (6.2; before it, the CQE was posted from the sender's task,
/// which such a ring does not allow).
pub(super) fn can_message(ring: &IoUring, probe: &io_uring::Probe) -> bool {
    probe.is_supported(opcode::MsgRingData::CODE)
        && ring.params().is_feature_skip_cqe_on_success()
        && (!ring.params().is_setup_single_issuer() || kernel_at_least(6, 2))
}

/// Whether the running kernel's release is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    // SAFETY: uname fills the zeroed struct it is given.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is a valid utsname.
    if unsafe { libc::uname(&mut name) } != 0 {
        return false;
    }
    // SAFETY: uname NUL-terminates `release`.
    let release = unsafe { std::ffi::CStr::from_ptr(name.release.as_ptr()) };
    parse_release(&release.to_string_lossy()) >= Some((major, minor))
}

/// `(major, minor)` of a kernel release such as `6.18.0-rc1`.
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::parse_release;

    #[test]
    fn kernel_releases_parse() {
        assert_eq!(parse_release("6.18.0-rc1"), Some((6, 18)));
        assert_eq!(parse_release("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(parse_release("6.1-custom"), Some((6, 1)));
        assert_eq!(parse_release("garbage"), None);
        assert!(parse_release("5.19.0") < Some((6, 2)));
    }
}
