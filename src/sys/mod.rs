//! Thin wrappers over the OS. Every platform must provide:
//!
//! * [`allowed_cpus`]: the CPUs the calling thread may run on, in order;
//! * [`pin_current_thread`] and [`AffinityGuard`]: pin the calling thread to one
//!   CPU and restore its previous affinity afterwards;
//! * [`EventFd`] (Linux): the counter the io_uring driver parks on.
//! * [`TimerFd`] (Linux): the epoll driver's exact park deadline.
//!
//! [`atomic`] holds the atomics of the cross-thread protocols (loom's under
//! `--cfg loom`).

pub(crate) mod atomic;

use std::io;

/// The CPUs the calling thread may run on (its affinity mask), in ascending order.
pub(crate) fn allowed_cpus() -> Vec<usize> {
    core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|id| id.id).collect())
        .unwrap_or_default()
}

/// Pins the calling thread to `cpu`.
pub(crate) fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "could not pin thread to CPU {cpu}"
        )))
    }
}

/// Lets the calling thread run on every CPU of `cpus` (Linux; elsewhere a
/// no-op).
pub(crate) fn set_current_affinity(cpus: &[usize]) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        if cpus.is_empty() {
            return Ok(());
        }
        // SAFETY: cpu_set_t is plain data; all-zero is a valid empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &cpu in cpus.iter().filter(|&&cpu| cpu < libc::CPU_SETSIZE as usize) {
            // SAFETY: `cpu` is below CPU_SETSIZE and `set` is a valid set.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        // SAFETY: `set` is a valid cpu_set_t of the size passed.
        let rc =
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cpus;
    Ok(())
}

/// Pins the calling thread to one CPU and restores its previous affinity on drop.
pub(crate) struct AffinityGuard {
    #[cfg(target_os = "linux")]
    previous: Option<libc::cpu_set_t>,
}

impl AffinityGuard {
    pub(crate) fn pin(cpu: usize) -> AffinityGuard {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: cpu_set_t is plain data; all-zero is a valid empty set.
            let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            // SAFETY: `set` is a valid, writable cpu_set_t of the size we pass.
            let rc = unsafe {
                libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set)
            };
            let previous = (rc == 0).then_some(set);
            // Pinning is best effort: a restricted cgroup may refuse it.
            let _ = pin_current_thread(cpu);
            AffinityGuard { previous }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = pin_current_thread(cpu);
            AffinityGuard {}
        }
    }
}

impl Drop for AffinityGuard {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some(set) = &self.previous {
            // SAFETY: `set` is the mask sched_getaffinity filled in.
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
        }
    }
}

/// A close-on-exec eventfd.
#[cfg(target_os = "linux")]
pub(crate) struct EventFd(std::os::fd::OwnedFd);

#[cfg(target_os = "linux")]
impl EventFd {
    pub(crate) fn new() -> io::Result<EventFd> {
        use std::os::fd::FromRawFd;
        // SAFETY: eventfd has no memory arguments.
        // Blocking on purpose: some kernels complete an io_uring read of an
        // O_NONBLOCK eventfd with -EAGAIN at once instead of waiting, which
        // would make every park return immediately. `notify` never blocks in
        // practice: it writes at most once per park.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        Ok(EventFd(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
    }

    pub(crate) fn raw(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.0.as_raw_fd()
    }

    /// Adds one to the counter, waking a ring parked on a read of it.
    pub(crate) fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64.
        unsafe { libc::write(self.raw(), (&one as *const u64).cast(), 8) };
    }
}

/// A one-shot timer the epoll driver parks on for a deadline finer than
/// `epoll_wait`'s whole milliseconds (Linux).
#[cfg(target_os = "linux")]
pub(crate) struct TimerFd(std::os::fd::OwnedFd);

#[cfg(target_os = "linux")]
impl TimerFd {
    pub(crate) fn new() -> io::Result<TimerFd> {
        use std::os::fd::FromRawFd;
        // SAFETY: timerfd_create has no memory arguments.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by timerfd_create and is owned by
        // nobody else.
        Ok(TimerFd(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
    }

    pub(crate) fn raw(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.0.as_raw_fd()
    }

    /// Arms the timer to expire once, `after` from now (a zero `after`
    /// would disarm it: the least is a nanosecond).
    pub(crate) fn set(&self, after: std::time::Duration) -> io::Result<()> {
        let after = after.max(std::time::Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: libc::time_t::try_from(after.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: libc::c_long::from(after.subsec_nanos() as i32),
            },
        };
        // SAFETY: `spec` is a live itimerspec; the old value is not asked for.
        if unsafe { libc::timerfd_settime(self.raw(), 0, &spec, std::ptr::null_mut()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads the expirations away, so the next one is a new event.
    pub(crate) fn clear(&self) {
        let mut count: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64 (non-blocking).
        unsafe { libc::read(self.raw(), (&mut count as *mut u64).cast(), 8) };
    }
}
