//! The I/O driver a shard parks in: io_uring (`uring/`) or readiness (`poll/`).
//!
//! The backend is a value chosen at `build()` ([`Driver`] is an enum), never a
//! type parameter. What every backend provides:
//!
//! * `new(entries)` → the driver and its [`Unparker`];
//! * `poll_nowait()`: submit what is queued and collect completions, never blocking;
//! * `park(timeout)`: the same, but wait for at least one event or the timeout;
//! * `take_ready()`: the wakers and orphaned resources completions produced;
//! * `shutdown(deadline)`: cancel everything in flight and drain it;
//! * every op of [`op`]: `uring/op.rs` and `poll/op.rs` implement each one.

pub(crate) mod fd;
pub(crate) mod op;
pub(crate) mod poll;
#[cfg(target_os = "linux")]
pub(crate) mod uring;

/// How long `block_on` waits, before it returns, for write-behind sends a
/// peer is slow to take (the linger of an orphaned one, `uring/behind.rs`).
pub(crate) const BEHIND_LINGER: std::time::Duration = std::time::Duration::from_secs(5);

use std::io;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

/// Which driver the runtime should use. See [`crate::runtime::Builder::driver_type`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum DriverType {
    /// io_uring when the kernel lets us create the real ring, otherwise the
    /// readiness driver of the platform. `RINGSHARD_DRIVER=uring|epoll`
    /// overrides this choice.
    #[default]
    Auto,
    /// io_uring or an error naming why it cannot start.
    IoUring,
    /// epoll (Linux only).
    Epoll,
    /// kqueue (BSD and macOS only).
    Kqueue,
}

/// The driver a runtime actually runs, see [`crate::Runtime::driver_kind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DriverKind {
    /// io_uring.
    IoUring,
    /// epoll through mio.
    Epoll,
    /// kqueue through mio.
    Kqueue,
}

/// Counters a driver keeps; the shard copies them into its stats.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DriverStats {
    pub(crate) submitted: u64,
    pub(crate) completed: u64,
    pub(crate) enters: u64,
    pub(crate) cq_overflows: u64,
    pub(crate) recv_buffer_shortages: u64,
    pub(crate) recv_pauses: u64,
    pub(crate) driver_errors: u64,
    /// A gauge: ops the driver holds now.
    pub(crate) in_flight: u64,
}

/// Resources of an op whose future was dropped before its completion; they
/// are kept until the kernel is done, then handed the late result (an accept
/// closes the fd it got, a buffer is simply freed).
pub(crate) trait Orphan {
    fn complete(self: Box<Self>, result: i32);
}

/// What completions produced, handled by the shard outside the driver borrow.
#[derive(Default)]
pub(crate) struct Ready {
    pub(crate) wakers: Vec<Waker>,
    pub(crate) orphans: Vec<(Box<dyn Orphan>, i32)>,
    /// Fd clones the driver let go of, dropped outside it (the last one's
    /// close goes through the driver).
    pub(crate) fds: Vec<fd::SharedFd>,
}

impl Ready {
    pub(crate) fn is_empty(&self) -> bool {
        self.wakers.is_empty() && self.orphans.is_empty() && self.fds.is_empty()
    }
}

/// Wakes a parked shard from any thread.
#[derive(Clone)]
pub(crate) enum Unparker {
    #[cfg(target_os = "linux")]
    Uring(Arc<uring::Wake>),
    Poll(Arc<mio::Waker>),
}

impl Unparker {
    pub(crate) fn unpark(&self) {
        match self {
            #[cfg(target_os = "linux")]
            Unparker::Uring(wake) => wake.unpark(),
            Unparker::Poll(waker) => {
                // A failed wake only happens if the poll instance is gone,
                // i.e. the shard has exited; nothing is left to wake.
                let _ = waker.wake();
            }
        }
    }
}

/// The builder's settings for each shard's driver.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DriverOptions {
    /// io_uring submission queue entries.
    pub(crate) entries: u32,
    /// io_uring stream reads through provided buffers (`Builder::buffered_reads`).
    pub(crate) buffered_reads: bool,
    /// io_uring small writes copied and sent behind (`Builder::buffered_writes`).
    pub(crate) buffered_writes: bool,
    /// io_uring listeners keep a multishot accept armed (`Builder::multishot_accept`).
    pub(crate) multishot_accept: bool,
}

/// One shard's driver.
#[allow(
    clippy::large_enum_variant,
    reason = "one per shard, built once and never moved on a hot path"
)]
pub(crate) enum Driver {
    #[cfg(target_os = "linux")]
    Uring(uring::UringDriver),
    Poll(poll::PollDriver),
}

impl Driver {
    /// Creates the driver of `kind` on the calling (shard) thread.
    pub(crate) fn new(kind: DriverKind, options: DriverOptions) -> io::Result<(Driver, Unparker)> {
        match kind {
            #[cfg(target_os = "linux")]
            DriverKind::IoUring => {
                let driver = uring::UringDriver::new(options)?;
                let unparker = driver.unparker();
                Ok((Driver::Uring(driver), unparker))
            }
            #[cfg(not(target_os = "linux"))]
            DriverKind::IoUring => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring is only available on Linux",
            )),
            DriverKind::Epoll | DriverKind::Kqueue => {
                let driver = poll::PollDriver::new()?;
                let unparker = driver.unparker();
                Ok((Driver::Poll(driver), unparker))
            }
        }
    }

    pub(crate) fn poll_nowait(&mut self) {
        match self {
            #[cfg(target_os = "linux")]
            Driver::Uring(driver) => driver.poll_nowait(),
            Driver::Poll(driver) => driver.poll_nowait(),
        }
    }

    pub(crate) fn park(&mut self, timeout: Option<Duration>) {
        match self {
            #[cfg(target_os = "linux")]
            Driver::Uring(driver) => driver.park(timeout),
            Driver::Poll(driver) => driver.park(timeout),
        }
    }

    /// Moves what completions produced into `out`.
    pub(crate) fn take_ready(&mut self, out: &mut Ready) {
        match self {
            #[cfg(target_os = "linux")]
            Driver::Uring(driver) => driver.take_ready(out),
            Driver::Poll(driver) => driver.take_ready(out),
        }
    }

    /// Hands the kernel what is queued and sees the write-behind sends
    /// out (up to `deadline`): `block_on` does before it returns, as its
    /// shard may not turn again for a while (see `UringDriver::drain_behind`).
    pub(crate) fn flush(&mut self, deadline: std::time::Instant) {
        #[cfg(target_os = "linux")]
        if let Driver::Uring(driver) = self {
            driver.drain_behind(deadline);
        }
        let _ = deadline;
    }

    /// The driver's periodic chores on a busy shard (one that parks does
    /// them as it parks): io_uring's sweep of orphaned write-behind sends.
    pub(crate) fn maintain(&mut self) {
        #[cfg(target_os = "linux")]
        if let Driver::Uring(driver) = self {
            driver.sweep_behind();
        }
    }

    /// Wakes every op still waiting, so its task can be dropped (cancelling the op).
    pub(crate) fn wake_all(&mut self, out: &mut Ready) {
        match self {
            #[cfg(target_os = "linux")]
            Driver::Uring(driver) => driver.wake_all(out),
            Driver::Poll(driver) => driver.wake_all(out),
        }
    }

    /// Cancels what is in flight and drains it until `deadline`.
    pub(crate) fn shutdown(&mut self, deadline: Instant, out: &mut Ready) {
        match self {
            #[cfg(target_os = "linux")]
            Driver::Uring(driver) => driver.shutdown(deadline, out),
            Driver::Poll(_) => {}
        }
    }

    /// Closes a socket that has a registration (`token`) with this driver:
    /// the readiness driver forgets it; io_uring cancels its multishot recv
    /// and closes the fd once the kernel is done with it.
    pub(crate) fn release(&mut self, fd: std::os::fd::OwnedFd, token: u64) {
        match self {
            #[cfg(target_os = "linux")]
            Driver::Uring(driver) => driver.release(fd, token),
            Driver::Poll(driver) => {
                use std::os::fd::AsRawFd;
                driver.deregister(fd.as_raw_fd(), token);
            }
        }
    }

    /// Releases a socket that was dropped off this shard: `fd` as
    /// [`release`](Driver::release) does, or, when it was closed where it
    /// was dropped, only its registration.
    pub(crate) fn release_dropped(&mut self, fd: Option<std::os::fd::OwnedFd>, token: u64) {
        match (self, fd) {
            (driver, Some(fd)) => driver.release(fd, token),
            (Driver::Poll(driver), None) => driver.forget(token),
            #[cfg(target_os = "linux")]
            (Driver::Uring(_), None) => {}
        }
    }

    /// The optional features the kernel refused, which this driver runs
    /// without (empty on the readiness driver).
    pub(crate) fn features_off(&self) -> Vec<&'static str> {
        match self {
            #[cfg(target_os = "linux")]
            Driver::Uring(driver) => driver.features_off.clone(),
            Driver::Poll(_) => Vec::new(),
        }
    }

    pub(crate) fn stats(&self) -> DriverStats {
        match self {
            #[cfg(target_os = "linux")]
            Driver::Uring(driver) => DriverStats {
                in_flight: driver.in_flight(),
                ..driver.stats
            },
            Driver::Poll(driver) => DriverStats {
                in_flight: driver.in_flight(),
                ..driver.stats
            },
        }
    }
}
