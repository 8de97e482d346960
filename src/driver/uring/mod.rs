//! The io_uring driver: one ring per shard, created on the shard's own thread.
//!
//! # Safety
//!
//! An SQE hands the kernel raw pointers (buffers, sockaddrs, timespecs). The
//! kernel may write through them at any moment until the op's CQE is reaped,
//! even after the future that submitted the op was dropped. The op slab
//! enforces one rule: **an op's resources are freed only after its CQE**.
//!
//! Each slot of the slab is in one of these states (user_data = generation << 32 | index):
//!
//! | state        | who owns the resources            | kernel may write? |
//! |--------------|-----------------------------------|-------------------|
//! | `Submitted`  | the op's future (`Op<T>`)          | yes               |
//! | `Waiting(w)` | the op's future, `w` wakes it      | yes               |
//! | `Completed`  | the op's future; result is stored  | no                |
//! | `Abandoned`  | the slab (boxed orphan)            | yes               |
//!
//! Dropping an `Op<T>` before `Completed` moves its resources into the slot as
//! `Abandoned` (and, for ops that may wait forever, queues an `ASYNC_CANCEL`);
//! the CQE then frees them and gives the orphan the late result. If the ring
//! must be torn down while ops are still in flight after the drain deadline,
//! their resources are leaked rather than freed: a leak is safe, a write into
//! freed memory is not. The eventfd read buffer follows the same rule.

mod accept;
mod behind;
pub(crate) mod file;
pub(crate) mod op;
mod recv;
mod wake;

pub(crate) use self::accept::Accepted;
pub(crate) use self::recv::Buffered;
pub(crate) use self::wake::Wake;

use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring};
use slab::Slab;

use self::accept::Accepts;
use self::behind::TOKEN_BEHIND;
use self::recv::{BufRing, Multishot};
use self::wake::{Targets, TOKEN_WAKE, TOKEN_WAKE_FAILED};
use super::fd::SharedFd;
use super::{DriverStats, Orphan, Ready, Unparker};
use crate::sys::EventFd;

const TOKEN_EVENTFD: u64 = u64::MAX;
const TOKEN_IGNORE: u64 = u64::MAX - 1;
const IORING_ENTER_GETEVENTS: u32 = 1;
/// The longest wait handed to the kernel; a longer park just turns the loop
/// once a day.
const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);
/// How long a shutting-down shard waits for its write-behind sends before it
/// cancels them (see `shutdown`).
const BEHIND_GRACE: Duration = Duration::from_millis(100);

/// The lifecycle of one op, see the module's `# Safety` section.
enum Lifecycle {
    Submitted,
    Waiting(Waker),
    Completed(i32),
    Abandoned(Box<dyn Orphan>),
    /// A socket's multishot recv (see `recv.rs`): many CQEs, and the slot
    /// outlives the final one until the stream has read what it holds.
    Multishot(Box<Multishot>),
    /// A listener's multishot accept (see `accept.rs`).
    Accepts(Box<Accepts>),
}

struct Slot {
    generation: u32,
    state: Lifecycle,
}

impl Slot {
    /// Whether the kernel may still post a CQE for this slot.
    fn in_flight(&self) -> bool {
        match &self.state {
            Lifecycle::Completed(_) => false,
            Lifecycle::Multishot(multishot) => multishot.armed(),
            Lifecycle::Accepts(accepts) => accepts.armed(),
            _ => true,
        }
    }
}

/// Identifies a submitted op; stale keys never match a reused slot.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OpKey {
    index: usize,
    generation: u32,
}

impl OpKey {
    fn user_data(self) -> u64 {
        (u64::from(self.generation) << 32) | self.index as u64
    }

    #[inline]
    fn from_user_data(user_data: u64) -> OpKey {
        OpKey {
            index: (user_data & u64::from(u32::MAX)) as usize,
            generation: (user_data >> 32) as u32,
        }
    }
}

/// Which io_uring features the driver uses. The defaults are the ones the
/// echo benchmark measured as wins (BENCHMARKS.md); `RINGSHARD_URING_TUNE`
/// (comma-separated `name=value`) overrides them, so a benchmark can measure
/// each feature against its absence. Not a stable interface.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tuning {
    /// Setup flags: 0 = SINGLE_ISSUER|DEFER_TASKRUN, 1 = COOP_TASKRUN, 2 = none
    /// (each with SUBMIT_ALL); the kernel may force a later one.
    pub(crate) setup: u8,
    /// When a send tries a non-blocking `send` syscall before the ring:
    /// 0 = never, 1 = always, 2 = when no other task is ready to run (no
    /// batch of SQEs to join).
    pub(crate) direct_send: u8,
    /// Stream reads come from a multishot recv into provided buffers.
    pub(crate) multishot_recv: bool,
    /// Listeners keep a multishot accept armed.
    pub(crate) multishot_accept: bool,
    /// Parked shards are woken with `IORING_OP_MSG_RING` from the waking
    /// shard's ring, when both are uring shards (see `wake.rs`).
    pub(crate) msg_ring: bool,
    /// `fs` runs its calls as native file ops where the kernel has the
    /// opcode (`file.rs`), not on the blocking pool.
    pub(crate) file_ops: bool,
    /// A small `write_all` copies its bytes and returns, the send running
    /// behind it (`behind.rs`).
    pub(crate) write_behind: bool,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            setup: 0,
            direct_send: 2,
            multishot_recv: true,
            multishot_accept: true,
            msg_ring: true,
            file_ops: true,
            write_behind: true,
        }
    }
}

impl Tuning {
    /// The defaults (with the builder's switches), then
    /// `RINGSHARD_URING_TUNE` applied; unknown names and bad values are
    /// errors, so a benchmark never measures a typo.
    pub(crate) fn from_env(options: super::DriverOptions) -> io::Result<Tuning> {
        let mut tuning = Tuning {
            multishot_recv: options.buffered_reads,
            multishot_accept: options.multishot_accept,
            write_behind: options.buffered_writes,
            ..Tuning::default()
        };
        let Ok(spec) = std::env::var("RINGSHARD_URING_TUNE") else {
            return Ok(tuning);
        };
        for item in spec.split(',').filter(|item| !item.is_empty()) {
            let bad = || {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "RINGSHARD_URING_TUNE: {item:?} is not one of setup=0|1|2, direct_send=0|1|2, \
                         multishot_recv=0|1, multishot_accept=0|1, msg_ring=0|1, \
                         file_ops=0|1, write_behind=0|1"
                    ),
                )
            };
            let (name, value) = item.split_once('=').ok_or_else(bad)?;
            let switch = || match value {
                "0" => Ok(false),
                "1" => Ok(true),
                _ => Err(bad()),
            };
            match name {
                "setup" => tuning.setup = value.parse().ok().filter(|&v| v <= 2).ok_or_else(bad)?,
                "direct_send" => {
                    tuning.direct_send = value.parse().ok().filter(|&v| v <= 2).ok_or_else(bad)?
                }
                "multishot_recv" => tuning.multishot_recv = switch()?,
                "multishot_accept" => tuning.multishot_accept = switch()?,
                "msg_ring" => tuning.msg_ring = switch()?,
                "file_ops" => tuning.file_ops = switch()?,
                "write_behind" => tuning.write_behind = switch()?,
                _ => return Err(bad()),
            }
        }
        Ok(tuning)
    }
}

pub(crate) struct UringDriver {
    ring: IoUring,
    pub(crate) tuning: Tuning,
    ops: Slab<Slot>,
    generation: u32,
    /// How others wake this ring: its eventfd, and its fd for messages.
    wake: Arc<Wake>,
    /// The rings this one has woken with a message.
    targets: Targets,
    /// The eventfd read's target; boxed so its address is stable.
    eventfd_buf: Box<u64>,
    eventfd_armed: bool,
    /// The provided buffers of buffered reads, made on the first one.
    bufs: Option<BufRing>,
    /// Buffered reads are off (by `Tuning`, or the kernel lacks them).
    buffered_off: bool,
    /// A multishot op has delivered a result: the kernel has them, and an
    /// `EINVAL` from one is about its socket, not the kernel.
    multishot_works: bool,
    /// Multishot ops to pause (cancel) once the current reap is done.
    paused: Vec<u64>,
    /// Write-behind sends cut short, resubmitted after the reap as paused
    /// ops are cancelled (a push may reap).
    resends: Vec<u64>,
    /// The buffers of write-behind sends.
    behind: behind::Pool,
    /// The CQEs of one reap batch (see `reap_batches`).
    batch: Vec<(u64, i32, u32)>,
    /// A wake (eventfd read or message) was reaped during this park's own
    /// submission (a full SQ flushes and reaps): the park must not wait.
    woken: bool,
    ready: Ready,
    pub(crate) stats: DriverStats,
    /// The errnos of unexpected enter errors already logged.
    logged_errors: Vec<i32>,
    /// Unexpected enter errors in a row.
    failing: u32,
    /// The features this kernel lacks, which the driver runs without.
    pub(crate) features_off: Vec<&'static str>,
    /// The file opcodes `fs` may submit here.
    pub(crate) file_ops: file::FileOps,
    /// Tests: the next `submit_queued` fails as if the kernel refused.
    #[cfg(test)]
    fail_next_submit: bool,
    /// Tests: the next `enter` fails with this errno.
    #[cfg(test)]
    fail_next_enter: Option<i32>,
}

impl UringDriver {
    /// Creates the ring with the best setup flags the kernel accepts.
    pub(crate) fn new(options: super::DriverOptions) -> io::Result<UringDriver> {
        let tuning = Tuning::from_env(options)?;
        let mut entries = options.entries;
        let ring = loop {
            match setup(entries, tuning.setup) {
                Ok(ring) => break ring,
                // Without CAP_IPC_LOCK the ring's memory counts against
                // RLIMIT_MEMLOCK: a smaller ring may fit where this one did not.
                Err(error) if error.raw_os_error() == Some(libc::ENOMEM) && entries > 16 => {
                    entries /= 2
                }
                Err(error) => return Err(error),
            }
        };
        let probe = probe_opcodes(&ring)?;
        let msg_ring = tuning.msg_ring && wake::can_message(&ring, &probe);
        // What the kernel refused of what the tuning asked for.
        let mut features_off = Vec::new();
        if tuning.setup == 0 && !ring.params().is_setup_single_issuer() {
            features_off.push("SINGLE_ISSUER|DEFER_TASKRUN");
        }
        if tuning.msg_ring && !msg_ring {
            features_off.push("MSG_RING wakes");
        }
        if entries < options.entries {
            eprintln!(
                "ringshard: io_uring ring sized down from {} to {entries} entries to fit \
                 RLIMIT_MEMLOCK (raise `ulimit -l` for the full size)",
                options.entries
            );
        }
        if !ring.params().is_feature_ext_arg() || !ring.params().is_feature_nodrop() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring on this kernel lacks IORING_FEAT_EXT_ARG or IORING_FEAT_NODROP \
                 (needs Linux 5.11+)",
            ));
        }
        Ok(UringDriver {
            tuning,
            ops: Slab::with_capacity(entries as usize),
            generation: 0,
            wake: Arc::new(Wake::new(EventFd::new()?, &ring, msg_ring)?),
            targets: Targets::new(msg_ring),
            eventfd_buf: Box::new(0),
            eventfd_armed: false,
            bufs: None,
            buffered_off: !tuning.multishot_recv,
            multishot_works: false,
            paused: Vec::new(),
            resends: Vec::new(),
            behind: behind::Pool::default(),
            batch: Vec::new(),
            woken: false,
            ready: Ready::default(),
            stats: DriverStats::default(),
            logged_errors: Vec::new(),
            failing: 0,
            features_off,
            file_ops: file::FileOps::probed(&probe, tuning.file_ops),
            #[cfg(test)]
            fail_next_submit: false,
            #[cfg(test)]
            fail_next_enter: None,
            ring,
        })
    }

    pub(crate) fn unparker(&self) -> Unparker {
        Unparker::Uring(self.wake.clone())
    }

    /// Wakes the ring of `target` with a message from this ring; false if
    /// this ring cannot, and the caller must use the target's eventfd.
    pub(crate) fn send_wake(&mut self, target: &Arc<Wake>) -> bool {
        let Some(sqe) = self.targets.message(target) else {
            return false;
        };
        // SAFETY: a MSG_RING carries no pointers.
        unsafe { self.push(sqe) };
        self.stats.enters += 1;
        // Without GETEVENTS: this only hands the queue to the kernel. Should
        // it fail (EBUSY, EAGAIN), the message stays queued for the shard's
        // next enter, which may be far off, while the target already saw
        // its parked flag cleared: the caller wakes it by its eventfd too.
        self.submit_queued()
    }

    /// Hands queued SQEs to the kernel now (poll-mode writes do this first,
    /// so their direct syscall never goes ahead of a queued send). Returns
    /// whether nothing is left queued.
    pub(crate) fn flush_submissions(&mut self) -> bool {
        if self.ring.submission().is_empty() {
            return true;
        }
        self.stats.enters += 1;
        if !self.submit_queued() {
            // Left queued (the kernel's EBUSY under a full CQ, say); the
            // shard's next turn reaps and submits them.
            self.stats.driver_errors += 1;
        }
        self.ring.submission().is_empty()
    }

    /// Hands the queued SQEs to the kernel without waiting; false if the
    /// kernel refused.
    fn submit_queued(&mut self) -> bool {
        let result = self.ring.submit();
        #[cfg(test)]
        let result = match std::mem::take(&mut self.fail_next_submit) {
            true => Err(io::Error::from_raw_os_error(libc::EBUSY)),
            false => result,
        };
        result.is_ok()
    }

    /// Submits `sqe` as a new op; its resources must stay valid until the
    /// op completes (see `op::Op`, which owns them).
    ///
    /// # Safety
    ///
    /// Every pointer in `sqe` must stay valid until the op's CQE is reaped.
    pub(crate) unsafe fn submit(&mut self, sqe: squeue::Entry) -> OpKey {
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        let index = self.ops.insert(Slot {
            generation,
            state: Lifecycle::Submitted,
        });
        let key = OpKey { index, generation };
        // SAFETY: forwarded from this function's contract.
        unsafe { self.push(sqe.user_data(key.user_data())) };
        key
    }

    /// The op's result once its CQE arrived; otherwise records the waker.
    pub(crate) fn poll_op(&mut self, key: OpKey, waker: &Waker) -> Option<i32> {
        let slot = self
            .ops
            .get_mut(key.index)
            .filter(|s| s.generation == key.generation)?;
        match &mut slot.state {
            Lifecycle::Completed(result) => {
                let result = *result;
                self.ops.remove(key.index);
                Some(result)
            }
            Lifecycle::Waiting(current) if current.will_wake(waker) => None,
            state => {
                *state = Lifecycle::Waiting(waker.clone());
                None
            }
        }
    }

    /// The op's future was dropped: keep `orphan` until the CQE. If the op has
    /// already completed, the orphan and its result come back to the caller.
    pub(crate) fn abandon(
        &mut self,
        key: OpKey,
        orphan: Box<dyn Orphan>,
        cancel: bool,
    ) -> Option<(Box<dyn Orphan>, i32)> {
        let Some(slot) = self
            .ops
            .get_mut(key.index)
            .filter(|s| s.generation == key.generation)
        else {
            // Only `shutdown` removes a slot the future did not consume: the
            // op was still in flight at the drain deadline. Leak, never free.
            std::mem::forget(orphan);
            return None;
        };
        if let Lifecycle::Completed(result) = slot.state {
            self.ops.remove(key.index);
            return Some((orphan, result));
        }
        slot.state = Lifecycle::Abandoned(orphan);
        if cancel {
            self.cancel(key.user_data());
        }
        None
    }

    /// Ops in the slab: submitted and not yet consumed, multishot ops
    /// included.
    pub(crate) fn in_flight(&self) -> u64 {
        (self.ops.len() + self.behind.in_flight_count()) as u64
    }

    /// Turns the ring until no write-behind send is in flight, or
    /// `deadline`: `block_on` does before it returns, as a send waiting for
    /// room moves on only when this thread enters the ring
    /// (`DEFER_TASKRUN`), and its `write_all` has returned. What completes
    /// meanwhile is kept for the shard's next turn.
    pub(crate) fn drain_behind(&mut self, deadline: Instant) {
        self.flush_submissions();
        while self.behind.busy() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            self.enter(1, Some((deadline - now).min(Duration::from_millis(10))));
            self.reap();
        }
    }

    /// Whether the slab still holds the op `key` (shutdown drops what was
    /// still in flight at its deadline).
    pub(crate) fn holds(&self, key: OpKey) -> bool {
        self.ops
            .get(key.index)
            .is_some_and(|slot| slot.generation == key.generation)
    }

    /// Whether no SQE waits to be submitted.
    pub(crate) fn submission_empty(&mut self) -> bool {
        self.ring.submission().is_empty()
    }

    /// Queues an `ASYNC_CANCEL` of the op `user_data`.
    fn cancel(&mut self, user_data: u64) {
        let sqe = opcode::AsyncCancel::new(user_data)
            .build()
            .user_data(TOKEN_IGNORE);
        // SAFETY: an ASYNC_CANCEL carries no pointers.
        unsafe { self.push(sqe) };
    }

    /// Whether a send tries a direct `send` syscall before the ring
    /// (`Tuning::direct_send`).
    pub(crate) fn sends_directly(&mut self) -> bool {
        // Never ahead of queued SQEs: one may be a dropped send on this
        // socket (with its cancel), whose bytes must not come after ours.
        self.submission_empty()
            && match self.tuning.direct_send {
                0 => false,
                1 => true,
                _ => crate::context::nothing_else_ready(),
            }
    }

    /// The first send of a `write_all`, which the caller has checked comes
    /// after every other send of the socket ([`SharedFd::poll_sent`]): a
    /// direct `send` syscall where a send would make one
    /// ([`sends_directly`](UringDriver::sends_directly)), otherwise a
    /// write-behind send (`behind.rs`). Both complete the write in this
    /// poll; a send queued behind a shard about to park would end its wait
    /// with its own completion, so the direct one goes first.
    ///
    /// `Some(Ok(n))`: `n` bytes were written (all of them behind, maybe
    /// fewer directly). `Some(Err(_))`: the direct send failed. `None`: the
    /// caller sends them through the ring (the socket had no room for a
    /// direct send; for a write-behind send they were too many, the pool
    /// had no free buffer, or the switch is off).
    pub(crate) fn write_first(&mut self, fd: &SharedFd, bytes: &[u8]) -> Option<io::Result<usize>> {
        if self.sends_directly() {
            return op::send_now(fd, bytes);
        }
        self.write_behind(fd, bytes).then_some(Ok(bytes.len()))
    }

    /// Copies `bytes` and queues their send behind the caller (see
    /// [`write_first`](UringDriver::write_first)); false when it did not.
    fn write_behind(&mut self, fd: &SharedFd, bytes: &[u8]) -> bool {
        if !self.tuning.write_behind || !fd.may_write_behind() || op::make_blocking(fd).is_err() {
            return false;
        }
        let Some(sqe) = self.behind.attempt(fd, bytes) else {
            return false;
        };
        // SAFETY: the SQE points into a pool buffer, which stays out of the
        // pool until the send's final CQE (or is leaked with the pool).
        unsafe { self.push(sqe) };
        fd.send_begin();
        true
    }

    /// A buffered read of a stream socket into `dst[..len]` (see `recv.rs`):
    /// arms the socket's multishot recv on first use, then copies what it
    /// received.
    pub(crate) fn read_buffered(
        &mut self,
        uid: u64,
        fd: &SharedFd,
        dst: *mut u8,
        len: usize,
        waker: &Waker,
    ) -> Buffered {
        if len == 0 {
            return Buffered::Fallback;
        }
        loop {
            let key = match multishot_key(uid, fd) {
                Ok(Some(key)) => key,
                Err(error) => return Buffered::Ready(Err(error)),
                // A socket with a slot always reads through it (it may hold
                // bytes); only arming a new recv depends on the switch.
                Ok(None) if self.buffered_off => return Buffered::Fallback,
                Ok(None) => {
                    if self.bufs.is_none() {
                        match BufRing::new(&self.ring) {
                            Ok(bufs) => self.bufs = Some(bufs),
                            Err(_) => {
                                // No provided buffer rings on this kernel.
                                self.buffered_off = true;
                                return Buffered::Fallback;
                            }
                        }
                    }
                    let sqe = opcode::RecvMulti::new(types::Fd(fd.raw()), recv::GROUP).build();
                    let state = Lifecycle::Multishot(Box::default());
                    // SAFETY: the SQE's only pointers are to provided
                    // buffers, which live while any recv is armed.
                    unsafe { self.arm(uid, fd, sqe, state) }
                }
            };
            let Some(Lifecycle::Multishot(multishot)) = state_of(&mut self.ops, key) else {
                fd.clear_registration();
                continue;
            };
            let bufs = self.bufs.as_mut().expect("made above");
            let copied = multishot.copy_to(bufs, dst, len);
            if copied > 0 {
                return Buffered::Ready(Ok(copied));
            }
            let Some(end) = multishot.end else {
                self.ready.wakers.extend(multishot.set_waker(waker));
                return Buffered::Pending;
            };
            // The recv is over and everything it received was read.
            self.ops.remove(key.index);
            fd.clear_registration();
            match end {
                recv::STOPPED => continue,
                // The ring ran dry: this read goes straight to the socket.
                result if result == -libc::ENOBUFS => {
                    self.stats.recv_buffer_shortages += 1;
                    return Buffered::Fallback;
                }
                // A kernel without multishot recv (before 6.0), or a socket
                // that cannot recv: the plain recv says which.
                result if result == -libc::EINVAL => {
                    self.buffered_off |= !self.multishot_works;
                    return Buffered::Fallback;
                }
                result => return Buffered::Ready(op::to_result(result)),
            }
        }
    }

    /// Submits `sqe` as the multishot op of `fd`, its slot starting in `state`.
    ///
    /// # Safety
    ///
    /// As for [`UringDriver::submit`].
    unsafe fn arm(
        &mut self,
        uid: u64,
        fd: &SharedFd,
        sqe: squeue::Entry,
        state: Lifecycle,
    ) -> OpKey {
        // SAFETY: forwarded from this function's contract.
        let key = unsafe { self.submit(sqe) };
        self.ops[key.index].state = state;
        fd.set_multishot(uid, key.user_data());
        key
    }

    /// An accept on `listener` through its multishot accept, armed on first use.
    pub(crate) fn accept_multishot(
        &mut self,
        uid: u64,
        listener: &SharedFd,
        waker: &Waker,
    ) -> Accepted {
        loop {
            let key = match multishot_key(uid, listener) {
                Ok(Some(key)) => key,
                Err(error) => return Accepted::Ready(Err(error)),
                Ok(None) if !self.tuning.multishot_accept => return Accepted::Fallback,
                Ok(None) => {
                    let sqe = opcode::AcceptMulti::new(types::Fd(listener.raw()))
                        .flags(libc::SOCK_CLOEXEC)
                        .build();
                    let state = Lifecycle::Accepts(Box::default());
                    // SAFETY: the SQE carries no pointers.
                    unsafe { self.arm(uid, listener, sqe, state) }
                }
            };
            let Some(Lifecycle::Accepts(accepts)) = state_of(&mut self.ops, key) else {
                listener.clear_registration();
                continue;
            };
            if let Some(fd) = accepts.pop() {
                return Accepted::Ready(Ok(std::os::fd::IntoRawFd::into_raw_fd(fd)));
            }
            let Some(end) = accepts.end else {
                self.ready.wakers.extend(accepts.set_waker(waker));
                return Accepted::Pending;
            };
            self.ops.remove(key.index);
            listener.clear_registration();
            match end {
                recv::STOPPED => continue,
                // A kernel without multishot accept (before 5.19), or a
                // socket that is not listening: the plain accept says which.
                result if result == -libc::EINVAL => {
                    self.tuning.multishot_accept &= self.multishot_works;
                    return Accepted::Fallback;
                }
                result => return Accepted::Ready(op::to_result(result).map(|fd| fd as RawFd)),
            }
        }
    }

    /// The socket `fd` is being closed; `user_data` is its multishot recv
    /// or accept. The fd closes once the kernel is done with it.
    pub(crate) fn release(&mut self, fd: OwnedFd, user_data: u64) {
        let key = OpKey::from_user_data(user_data);
        let armed = match state_of(&mut self.ops, key) {
            Some(Lifecycle::Accepts(accepts)) => {
                accepts.discard();
                let armed = accepts.armed();
                if armed {
                    accepts.orphan_fd = Some(fd);
                }
                armed
            }
            Some(Lifecycle::Multishot(multishot)) => {
                if let Some(bufs) = self.bufs.as_mut() {
                    multishot.discard(bufs);
                }
                let armed = multishot.armed();
                // Deliberately broken build for the fd-reuse test: close the
                // fd while the recv may not even have reached the kernel.
                #[cfg(ringshard_broken = "close_armed_recv")]
                drop(fd);
                #[cfg(not(ringshard_broken = "close_armed_recv"))]
                if armed {
                    multishot.orphan_fd = Some(fd);
                }
                armed
            }
            _ => return,
        };
        if armed {
            self.cancel(user_data);
        } else {
            self.ops.remove(key.index);
        }
    }

    /// Submits queued SQEs and reaps completions without waiting. Makes no
    /// syscall when nothing is queued and no op is in flight.
    pub(crate) fn poll_nowait(&mut self) {
        if self.ring.submission().is_empty() && self.ops.is_empty() {
            self.reap();
            return;
        }
        self.enter(0, None);
        self.reap();
    }

    /// Submits and waits for one completion, an unpark, or `timeout`.
    ///
    /// It does not wait when completions reaped earlier in the turn (a
    /// push that found the SQ full submits and reaps) left wakers to run
    /// or a wake to honour: the CQEs that would end the wait are already
    /// consumed, and the woken task would sit until an unrelated event.
    pub(crate) fn park(&mut self, timeout: Option<Duration>) {
        // Only a wake reaped from here on can be one this park would miss:
        // one reaped earlier in the turn came before the shard raised its
        // park flag, and its work was seen by the shard's last look.
        self.woken = false;
        if !self.eventfd_armed {
            let buf: *mut u64 = &mut *self.eventfd_buf;
            let sqe = opcode::Read::new(types::Fd(self.wake.eventfd().raw()), buf.cast(), 8)
                .build()
                .user_data(TOKEN_EVENTFD);
            // SAFETY: `eventfd_buf` is boxed and owned by the driver; it is
            // only freed once no read is armed (see `shutdown`).
            unsafe { self.push(sqe) };
            self.eventfd_armed = true;
        }
        // Write-behind sends in flight: orphaned ones are swept (at most
        // every second), so the park wakes to sweep again.
        let mut timeout = timeout;
        if self.behind.busy() {
            self.sweep_behind();
            timeout = Some(timeout.map_or(behind::SWEEP, |t| t.min(behind::SWEEP)));
        }
        let stranded = !self.ready.is_empty() || self.woken;
        #[cfg(ringshard_broken = "park_over_stranded")]
        let stranded = false;
        self.woken = false;
        self.enter(if stranded { 0 } else { 1 }, timeout);
        self.reap();
    }

    /// Cancels the write-behind sends that have waited [`behind::LINGER`]
    /// since their socket's last handle was dropped (see `behind.rs`).
    pub(crate) fn sweep_behind(&mut self) {
        if !self.behind.busy() {
            return;
        }
        for user_data in self.behind.sweep(Instant::now()) {
            self.cancel(user_data);
        }
    }

    /// One `io_uring_enter` that submits everything queued and reaps
    /// (`GETEVENTS`, which `DEFER_TASKRUN` needs to post completions).
    fn enter(&mut self, want: u32, timeout: Option<Duration>) {
        self.stats.enters += 1;
        let result = match timeout {
            Some(timeout) if want > 0 => {
                // A `tv_sec` past `i64::MAX` turns negative, and the kernel
                // adds the timeout to its clock: either way a huge timeout
                // would expire at once and the shard would spin.
                let ts = types::Timespec::from(timeout.min(MAX_TIMEOUT));
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(want as usize, &args)
            }
            _ => {
                let to_submit = self.ring.submission().len() as u32;
                // SAFETY: no extended argument is passed.
                unsafe {
                    self.ring.submitter().enter::<libc::sigset_t>(
                        to_submit,
                        want,
                        IORING_ENTER_GETEVENTS,
                        None,
                    )
                }
            }
        };
        #[cfg(test)]
        let result = match self.fail_next_enter.take() {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => result,
        };
        if let Err(error) = result {
            match error.raw_os_error() {
                // Timeout, signal, or completions must be reaped before more
                // can be submitted: the caller reaps next and turns again.
                Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN) => {}
                _ => return self.enter_failed(&error, want > 0),
            }
        }
        self.failing = 0;
    }

    /// An `io_uring_enter` error the loop does not expect: `EBADR` (the
    /// kernel dropped completions under memory pressure), `ENOMEM`, `ENXIO`
    /// (the ring is being torn down), ... The shard must not die of it: it
    /// is counted (`ShardStats::driver_errors`) and logged once per errno,
    /// and the caller turns again. No op can be failed for it: the kernel
    /// may still own their memory, and `EBADR` does not say which
    /// completion was lost.
    #[cold]
    fn enter_failed(&mut self, error: &io::Error, parking: bool) {
        self.stats.driver_errors += 1;
        let errno = error.raw_os_error().unwrap_or(0);
        if !self.logged_errors.contains(&errno) {
            self.logged_errors.push(errno);
            let what = match errno {
                libc::EBADR => "; the kernel dropped completions, some ops may never complete",
                _ => "",
            };
            eprintln!("ringshard: io_uring_enter failed: {error}{what} (counted in ShardStats::driver_errors; logged once)");
        }
        // A park that failed waits a little instead of spinning; so does
        // any enter that keeps failing (a push retrying a full SQ, a CQ
        // overflow flush), rather than spin its core.
        self.failing += 1;
        if parking || self.failing > 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Pushes an SQE, flushing the submission queue to the kernel when it is full.
    ///
    /// # Safety
    ///
    /// Every pointer in `sqe` must stay valid until its CQE is reaped.
    unsafe fn push(&mut self, sqe: squeue::Entry) {
        loop {
            // SAFETY: forwarded from this function's contract.
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                self.stats.submitted += 1;
                return;
            }
            // Deliberately broken build for the SQ-full test: drop the SQE.
            #[cfg(ringshard_broken = "drop_sq_full")]
            return;
            // SQ full: hand the queued entries to the kernel, and reap so a
            // full CQ cannot keep the kernel from taking them.
            self.enter(0, None);
            self.reap();
        }
    }

    /// Moves every CQE into the slab, flushing the kernel's overflow backlog.
    fn reap(&mut self) {
        self.reap_batches();
        // Cancels for paused multishot ops, pushed only now: a push may
        // enter and reap, which must not happen in the middle of a batch
        // (later CQEs of a socket would be taken before earlier ones).
        while let Some(user_data) = self.paused.pop() {
            self.cancel(user_data);
        }
        while let Some(user_data) = self.resends.pop() {
            if let Some(sqe) = self.behind.sqe(user_data) {
                // SAFETY: the SQE points into a pool buffer, which stays
                // out of the pool until the send's final CQE.
                unsafe { self.push(sqe) };
            }
        }
    }

    fn reap_batches(&mut self) {
        const BATCH: usize = 64;
        loop {
            // Most reaps find nothing: skip filling the batch.
            if self.ring.completion().is_empty() && !self.ring.submission().cq_overflow() {
                break;
            }
            // The batch's memory is kept between reaps (an array would be
            // zeroed each time).
            let mut batch = std::mem::take(&mut self.batch);
            batch.clear();
            batch.reserve(BATCH);
            for cqe in self.ring.completion().take(BATCH) {
                batch.push((cqe.user_data(), cqe.result(), cqe.flags()));
            }
            for &(user_data, result, flags) in &batch {
                self.complete(user_data, result, flags);
            }
            let count = batch.len();
            self.batch = batch;
            if count == BATCH {
                continue;
            }
            if !self.ring.submission().cq_overflow() {
                break;
            }
            // The kernel holds completions that did not fit in the CQ; an
            // enter with GETEVENTS flushes them into the ring we just emptied.
            self.stats.cq_overflows += 1;
            self.enter(0, None);
            // Deliberately broken build for the overflow test: lose what
            // overflowed, as a kernel without IORING_FEAT_NODROP would.
            #[cfg(ringshard_broken = "drop_cq_overflow")]
            {
                self.ring.completion().for_each(drop);
                break;
            }
        }
    }

    fn complete(&mut self, user_data: u64, result: i32, flags: u32) {
        match user_data {
            TOKEN_EVENTFD => {
                self.eventfd_armed = false;
                self.woken = true;
            }
            TOKEN_WAKE => self.woken = true,
            TOKEN_IGNORE => {}
            TOKEN_WAKE_FAILED..TOKEN_WAKE => self.targets.failed(user_data),
            TOKEN_BEHIND..TOKEN_WAKE_FAILED => {
                self.stats.completed += 1;
                match self
                    .behind
                    .complete(user_data, result, &mut self.ready.wakers)
                {
                    behind::Completion::Resend => self.resends.push(user_data),
                    // The last fd clone is dropped outside the driver, as
                    // its close goes through the driver.
                    behind::Completion::Done(fd) => self.ready.fds.extend(fd),
                }
            }
            _ => {
                let OpKey { index, generation } = OpKey::from_user_data(user_data);
                let Some(slot) = self
                    .ops
                    .get_mut(index)
                    .filter(|s| s.generation == generation)
                else {
                    return;
                };
                self.stats.completed += 1;
                if let Lifecycle::Accepts(accepts) = &mut slot.state {
                    self.multishot_works |= result >= 0;
                    let pause = accepts.complete(result, flags, &mut self.ready.wakers);
                    if accepts.orphan_fd.is_some() && !accepts.armed() {
                        self.ops.remove(index);
                    } else if pause {
                        self.paused.push(user_data);
                    }
                    return;
                }
                if let Lifecycle::Multishot(multishot) = &mut slot.state {
                    self.multishot_works |= result > 0;
                    let bufs = self.bufs.as_mut().expect("armed only with a buffer ring");
                    let pause = multishot.complete(bufs, result, flags, &mut self.ready.wakers);
                    if multishot.orphan_fd.is_some() && !multishot.armed() {
                        // The stream is gone and the kernel is done: the
                        // slot goes, and its fd closes.
                        self.ops.remove(index);
                    } else if pause {
                        self.stats.recv_pauses += 1;
                        self.paused.push(user_data);
                    }
                    return;
                }
                match std::mem::replace(&mut slot.state, Lifecycle::Completed(result)) {
                    Lifecycle::Waiting(waker) => self.ready.wakers.push(waker),
                    Lifecycle::Abandoned(orphan) => {
                        self.ops.remove(index);
                        self.ready.orphans.push((orphan, result));
                    }
                    Lifecycle::Submitted
                    | Lifecycle::Completed(_)
                    | Lifecycle::Multishot(_)
                    | Lifecycle::Accepts(_) => {}
                }
            }
        }
    }

    pub(crate) fn take_ready(&mut self, out: &mut Ready) {
        // The shard hands back emptied vectors: swapping keeps both
        // allocations, with no copy.
        fn take<T>(out: &mut Vec<T>, from: &mut Vec<T>) {
            if out.is_empty() {
                std::mem::swap(out, from);
            } else {
                out.append(from);
            }
        }
        take(&mut out.wakers, &mut self.ready.wakers);
        take(&mut out.orphans, &mut self.ready.orphans);
        take(&mut out.fds, &mut self.ready.fds);
    }

    pub(crate) fn wake_all(&mut self, out: &mut Ready) {
        for (_, slot) in self.ops.iter_mut() {
            if let Lifecycle::Multishot(multishot) = &mut slot.state {
                out.wakers.extend(multishot.waker.take());
            }
            if let Lifecycle::Accepts(accepts) = &mut slot.state {
                out.wakers.extend(accepts.waker.take());
            }
            if let Lifecycle::Waiting(_) = slot.state {
                if let Lifecycle::Waiting(waker) =
                    std::mem::replace(&mut slot.state, Lifecycle::Submitted)
                {
                    out.wakers.push(waker);
                }
            }
        }
    }

    /// Cancels every op in flight and the eventfd read, then reaps until all
    /// have completed or `deadline` passes. What is still in flight after
    /// that is leaked, never freed under the kernel.
    pub(crate) fn shutdown(&mut self, deadline: Instant, out: &mut Ready) {
        let keys: Vec<u64> = self
            .ops
            .iter()
            .filter(|(_, slot)| slot.in_flight())
            .map(|(index, slot)| {
                OpKey {
                    index,
                    generation: slot.generation,
                }
                .user_data()
            })
            .chain(self.eventfd_armed.then_some(TOKEN_EVENTFD))
            .collect();
        // Deliberately broken build for the shutdown test: cancel nothing.
        #[cfg(ringshard_broken = "no_shutdown_cancel")]
        let keys: Vec<u64> = keys.into_iter().filter(|_| false).collect();
        for user_data in keys {
            self.cancel(user_data);
        }
        // Submitted and reaped at once, even past the deadline: most cancels
        // (the eventfd read's, an idle recv's) complete right away, and what
        // completes need not be leaked.
        self.enter(0, None);
        self.reap();
        // Write-behind sends are not cancelled at first: their writes have
        // returned, so their bytes go out if the socket takes them. One
        // still waiting after the grace has a peer that is not reading.
        // The grace ends before the deadline, so their cancels have time.
        let start = Instant::now();
        let grace =
            (start + BEHIND_GRACE).min(start + deadline.saturating_duration_since(start) / 2);
        let mut behind_cancelled = false;
        loop {
            let pending = self.eventfd_armed
                || self.behind.busy()
                || self.ops.iter().any(|(_, s)| s.in_flight());
            let now = Instant::now();
            if !pending || now >= deadline {
                break;
            }
            if now >= grace && !behind_cancelled {
                behind_cancelled = true;
                for user_data in self.behind.cancel_all(false) {
                    self.cancel(user_data);
                }
            }
            self.enter(1, Some((deadline - now).min(Duration::from_millis(10))));
            self.reap();
        }
        // Past the deadline: whatever is still sending is cancelled now, and
        // what completes at once is not leaked. (Not in the broken build
        // for the no-time-left test.)
        #[cfg(not(ringshard_broken = "behind_no_final_cancel"))]
        if self.behind.busy() {
            for user_data in self.behind.cancel_all(true) {
                self.cancel(user_data);
            }
            self.enter(0, None);
            self.reap();
        }
        self.take_ready(out);
        self.leak_in_flight();
    }

    /// Forgets every resource the kernel may still write into: abandoned
    /// ops and an armed eventfd read. Closing the ring does not stop the
    /// kernel synchronously, so freeing them would be a use-after-free.
    fn leak_in_flight(&mut self) {
        let mut armed = false;
        for slot in self.ops.drain() {
            armed |= matches!(&slot.state, Lifecycle::Multishot(m) if m.armed());
            match slot.state {
                Lifecycle::Abandoned(orphan) => std::mem::forget(orphan),
                Lifecycle::Multishot(multishot) if multishot.armed() => std::mem::forget(multishot),
                Lifecycle::Accepts(mut accepts) if accepts.armed() => {
                    accepts.discard();
                    std::mem::forget(accepts.orphan_fd.take());
                }
                _ => {}
            }
        }
        self.behind.release();
        if let Some(bufs) = self.bufs.take() {
            // A recv still armed may pick a buffer: `bufs` is dropped
            // without freeing (a `BufRing` only frees in `unregister`).
            if !armed {
                // SAFETY: no recv is armed.
                unsafe { bufs.unregister(&self.ring) };
            }
        }
        if self.eventfd_armed {
            self.eventfd_armed = false;
            std::mem::forget(std::mem::replace(&mut self.eventfd_buf, Box::new(0)));
        }
    }
}

impl Drop for UringDriver {
    /// Normally `shutdown` has drained everything; a driver dropped without
    /// it (a shard thread unwinding) leaks what is in flight rather than
    /// freeing it under the kernel.
    fn drop(&mut self) {
        self.leak_in_flight();
    }
}

/// Wakes `target` with a message from the calling thread's shard, if that
/// shard runs a uring driver not in use right now (see `wake.rs`).
fn send_wake_from_current(target: &Arc<Wake>) -> bool {
    crate::context::with_free_driver(|driver| match driver {
        super::Driver::Uring(driver) => driver.send_wake(target),
        super::Driver::Poll(_) => false,
    })
    .unwrap_or(false)
}

/// The state of the op `key`, if its slot in `ops` still holds it.
#[inline]
fn state_of(ops: &mut Slab<Slot>, key: OpKey) -> Option<&mut Lifecycle> {
    ops.get_mut(key.index)
        .filter(|s| s.generation == key.generation)
        .map(|s| &mut s.state)
}

/// The key of `fd`'s multishot op, if it has one on shard `uid`; an error
/// if the socket belongs to another shard.
#[inline]
fn multishot_key(uid: u64, fd: &SharedFd) -> io::Result<Option<OpKey>> {
    match fd.registration() {
        Some((owner, user_data)) if owner == uid => Ok(Some(OpKey::from_user_data(user_data))),
        Some(_) => Err(io::Error::other(
            "this socket belongs to another shard; I/O objects stay on the shard that made them",
        )),
        None => Ok(None),
    }
}

/// Checks that the kernel has every opcode the driver submits (a kernel, or
/// a seccomp-like filter such as gVisor's, may lack some): missing ones are
/// an `Unsupported` error naming them, so `Auto` falls back to epoll.
fn probe_opcodes(ring: &IoUring) -> io::Result<io_uring::Probe> {
    let needed = [
        ("READ", opcode::Read::CODE),
        ("RECV", opcode::Recv::CODE),
        ("SEND", opcode::Send::CODE),
        ("RECVMSG", opcode::RecvMsg::CODE),
        ("SENDMSG", opcode::SendMsg::CODE),
        ("ACCEPT", opcode::Accept::CODE),
        ("CONNECT", opcode::Connect::CODE),
        ("ASYNC_CANCEL", opcode::AsyncCancel::CODE),
        ("POLL_ADD", opcode::PollAdd::CODE),
    ];
    let mut probe = io_uring::Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    let missing: Vec<&str> = needed
        .iter()
        .filter(|(_, code)| !probe.is_supported(*code))
        .map(|(name, _)| *name)
        .collect();
    if missing.is_empty() {
        return Ok(probe);
    }
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "io_uring on this kernel lacks the opcodes {}",
            missing.join(", ")
        ),
    ))
}

/// Ring setup, best flags first; a flag set the kernel rejects with EINVAL is
/// dropped and the next one tried.
fn setup(entries: u32, first: u8) -> io::Result<IoUring> {
    let cq_entries = entries.saturating_mul(2);
    type Configure = fn(&mut io_uring::Builder);
    let attempts: [Configure; 4] = [
        |b| {
            b.setup_single_issuer()
                .setup_defer_taskrun()
                .setup_submit_all();
        },
        |b| {
            b.setup_coop_taskrun()
                .setup_taskrun_flag()
                .setup_submit_all();
        },
        |b| {
            b.setup_submit_all();
        },
        |_| {},
    ];
    let mut last = None;
    for configure in attempts.into_iter().skip(usize::from(first)) {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(cq_entries).setup_clamp();
        configure(&mut builder);
        match builder.build(entries) {
            Ok(ring) => return Ok(ring),
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => last = Some(error),
            Err(error) => return Err(error),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL)))
}

#[cfg(test)]
mod tests;
