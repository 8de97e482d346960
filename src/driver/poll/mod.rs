//! The readiness driver over mio (epoll on Linux, kqueue on BSD/macOS).
//!
//! Sockets are non-blocking. An op first makes its syscall; only on
//! `WouldBlock` does it wait for the socket's readiness, then tries again.
//! A socket is registered with mio (edge-triggered, both directions) on its
//! first op and deregistered when its fd closes. Each registration records
//! whether the socket was last seen readable / writable, and the wakers of
//! the ops waiting on it.
//!
//! Nothing is in flight in the kernel between two polls, so dropping an op
//! frees its resources at once.

pub(crate) mod op;

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use mio::unix::SourceFd;
use slab::Slab;

use super::op::Direction;
use super::{DriverStats, Ready, Unparker};

const WAKE: mio::Token = mio::Token(usize::MAX);
/// The timer fd of a park's exact deadline (see `PollDriver::exact`).
#[cfg(target_os = "linux")]
const TIMER: mio::Token = mio::Token(usize::MAX - 1);

/// One registered socket.
///
/// `readable`/`writable` say a syscall in that direction may not block.
/// Epoll is edge-triggered: it reports a state change once. End of stream
/// (`read_closed`), a closed write side and a socket error are states, not
/// data: once seen they stay, so a short read (which clears `readable`
/// without a `WouldBlock`) never hides the FIN that came with the last
/// bytes. Only a `WouldBlock`, the kernel's own word, clears them.
struct Registration {
    generation: u32,
    readable: bool,
    writable: bool,
    read_closed: bool,
    write_closed: bool,
    error: bool,
    /// Ops waiting on this socket; an entry stays (with `None`) until its op
    /// completes or is dropped, so the key an op holds is never reused.
    waiters: Slab<(Direction, Option<Waker>)>,
}

pub(crate) struct PollDriver {
    poll: mio::Poll,
    events: mio::Events,
    waker: Arc<mio::Waker>,
    registrations: Slab<Registration>,
    /// Waiter entries across all registrations (`ShardStats::ops_in_flight`).
    waiting: usize,
    generation: u32,
    ready: Ready,
    pub(crate) stats: DriverStats,
    /// The timer a park with a deadline between milliseconds waits on,
    /// made with the driver (one fd, like the waker's); `None` if making it
    /// failed (parks then round up to the millisecond, as `epoll_wait` does).
    #[cfg(target_os = "linux")]
    timer: Option<crate::sys::TimerFd>,
}

fn split(token: u64) -> (usize, u32) {
    ((token & u64::from(u32::MAX)) as usize, (token >> 32) as u32)
}

/// The registration `token` names, if it is still the one in its slot.
fn registration_in(
    registrations: &mut Slab<Registration>,
    token: u64,
) -> Option<&mut Registration> {
    let (index, generation) = split(token);
    registrations
        .get_mut(index)
        .filter(|r| r.generation == generation)
}

impl PollDriver {
    pub(crate) fn new() -> io::Result<PollDriver> {
        let poll = mio::Poll::new()?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKE)?);
        #[cfg(target_os = "linux")]
        let timer = crate::sys::TimerFd::new()
            .and_then(|timer| {
                let fd = timer.raw();
                poll.registry()
                    .register(&mut SourceFd(&fd), TIMER, mio::Interest::READABLE)?;
                Ok(timer)
            })
            .ok();
        Ok(PollDriver {
            poll,
            events: mio::Events::with_capacity(256),
            waker,
            registrations: Slab::new(),
            waiting: 0,
            generation: 0,
            ready: Ready::default(),
            stats: DriverStats::default(),
            #[cfg(target_os = "linux")]
            timer,
        })
    }

    pub(crate) fn unparker(&self) -> Unparker {
        Unparker::Poll(self.waker.clone())
    }

    /// Makes `fd` non-blocking and registers it for both directions; the
    /// token names it from now on.
    pub(crate) fn register(&mut self, fd: RawFd) -> io::Result<u64> {
        let on: libc::c_int = 1;
        // SAFETY: FIONBIO reads one c_int from a live local.
        if unsafe { libc::ioctl(fd, libc::FIONBIO, &on) } < 0 {
            return Err(io::Error::last_os_error());
        }
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        let entry = self.registrations.vacant_entry();
        let token = (u64::from(generation) << 32) | entry.key() as u64;
        self.poll.registry().register(
            &mut SourceFd(&fd),
            mio::Token(token as usize),
            mio::Interest::READABLE | mio::Interest::WRITABLE,
        )?;
        // Assume ready: the first attempt is the syscall itself.
        entry.insert(Registration {
            generation,
            readable: true,
            writable: true,
            read_closed: false,
            write_closed: false,
            error: false,
            waiters: Slab::new(),
        });
        Ok(token)
    }

    /// Forgets `fd`'s registration; called just before the fd closes.
    pub(crate) fn deregister(&mut self, fd: RawFd, token: u64) {
        if self.registration(token).is_some() {
            self.forget(token);
            // Closing the fd removes it from epoll anyway; deregistering
            // first also covers an fd a child process still holds open.
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
    }

    /// Forgets the registration of an fd already closed elsewhere (closing
    /// removed it from epoll; its number may already name a new socket,
    /// which must keep its own registration).
    pub(crate) fn forget(&mut self, token: u64) {
        if self.registration(token).is_some() {
            let (index, _) = split(token);
            let registration = self.registrations.remove(index);
            self.waiting -= registration.waiters.len();
            for (_, (_, waker)) in registration.waiters {
                self.ready.wakers.extend(waker);
            }
        }
    }

    fn registration(&mut self, token: u64) -> Option<&mut Registration> {
        registration_in(&mut self.registrations, token)
    }

    /// Whether the socket may be ready in `direction` (no `WouldBlock` seen
    /// since its last event).
    pub(crate) fn is_ready(&mut self, token: u64, direction: Direction) -> bool {
        match self.registration(token) {
            Some(r) => match direction {
                Direction::Read => r.readable,
                Direction::Write => r.writable,
            },
            // Deregistered under the op: let it try, the syscall reports EBADF.
            None => true,
        }
    }

    /// The syscall said `WouldBlock`: wait for the next event.
    pub(crate) fn clear_ready(&mut self, token: u64, direction: Direction) {
        if let Some(r) = self.registration(token) {
            r.error = false;
            match direction {
                Direction::Read => (r.readable, r.read_closed) = (false, false),
                Direction::Write => (r.writable, r.write_closed) = (false, false),
            }
        }
    }

    /// A stream op came up short: the socket has nothing more in that
    /// direction for now, unless it is closed or failed, which stays
    /// ready (the next syscall returns the end or the error).
    pub(crate) fn drained(&mut self, token: u64, direction: Direction) {
        if let Some(r) = self.registration(token) {
            match direction {
                Direction::Read => r.readable = r.read_closed || r.error,
                Direction::Write => r.writable = r.write_closed || r.error,
            }
        }
    }

    /// Records `waker` for the op holding `waiter` (allocating the key once).
    pub(crate) fn set_waiter(
        &mut self,
        token: u64,
        direction: Direction,
        waiter: &mut Option<usize>,
        waker: &Waker,
    ) {
        let Some(r) = registration_in(&mut self.registrations, token) else {
            // Deregistered under the op: let it run again (outside this
            // borrow of the driver) and see the syscall's error.
            self.ready.wakers.push(waker.clone());
            return;
        };
        match waiter.and_then(|key| r.waiters.get_mut(key)) {
            Some((_, Some(current))) if current.will_wake(waker) => {}
            Some(slot) => *slot = (direction, Some(waker.clone())),
            None => {
                *waiter = Some(r.waiters.insert((direction, Some(waker.clone()))));
                self.waiting += 1;
            }
        }
    }

    /// The op holding `waiter` completed or was dropped.
    pub(crate) fn remove_waiter(&mut self, token: u64, waiter: usize) {
        if let Some(r) = registration_in(&mut self.registrations, token) {
            if r.waiters.try_remove(waiter).is_some() {
                self.waiting -= 1;
            }
        }
    }

    /// Ops waiting for readiness.
    pub(crate) fn in_flight(&self) -> u64 {
        self.waiting as u64
    }

    /// Collects readiness without blocking. Makes no syscall when no socket
    /// is registered.
    pub(crate) fn poll_nowait(&mut self) {
        if !self.registrations.is_empty() {
            self.poll_events(Some(Duration::ZERO));
        }
    }

    /// Waits for readiness or `timeout`, unless wakers made earlier in the
    /// turn (a deregistration wakes its waiters) are still to run.
    pub(crate) fn park(&mut self, timeout: Option<Duration>) {
        let stranded = !self.ready.wakers.is_empty();
        let timeout = if stranded {
            Some(Duration::ZERO)
        } else {
            self.exact(timeout)
        };
        self.poll_events(timeout);
    }

    /// `epoll_wait` counts whole milliseconds, rounding a timeout up: a
    /// deadline between them would wake up to a millisecond late. On Linux
    /// such a deadline goes on a timer fd instead, whose expiry ends the
    /// wait, and the wait's own timeout (a millisecond later) is a
    /// backstop. Returns the timeout to wait with.
    fn exact(&mut self, timeout: Option<Duration>) -> Option<Duration> {
        #[cfg(target_os = "linux")]
        if let Some(after) = timeout.filter(|t| !t.is_zero() && t.subsec_nanos() % 1_000_000 != 0) {
            if self
                .timer
                .as_ref()
                .is_some_and(|timer| timer.set(after).is_ok())
            {
                return Some(after.saturating_add(Duration::from_millis(1)));
            }
        }
        timeout
    }

    fn poll_events(&mut self, timeout: Option<Duration>) {
        self.stats.enters += 1;
        // EINTR is a spurious wake; the shard loop simply turns again.
        if let Err(error) = self.poll.poll(&mut self.events, timeout) {
            if error.kind() != io::ErrorKind::Interrupted {
                // Counted, logged once, and never a panic (see the uring
                // driver's `enter_failed`).
                self.stats.driver_errors += 1;
                if self.stats.driver_errors == 1 {
                    eprintln!("ringshard: epoll_wait failed: {error} (counted in ShardStats::driver_errors; logged once)");
                }
            }
            return;
        }
        for event in self.events.iter() {
            if event.token() == WAKE {
                continue;
            }
            #[cfg(target_os = "linux")]
            if event.token() == TIMER {
                if let Some(timer) = &self.timer {
                    timer.clear();
                }
                continue;
            }
            // By index only (mio tokens are `usize`, which may not hold the
            // generation): a stale event on a reused slot is only a
            // spurious readiness, and the op's syscall sorts it out.
            let index = event.token().0 & (u32::MAX as usize);
            let Some(r) = self.registrations.get_mut(index) else {
                continue;
            };
            self.stats.completed += 1;
            let failed = event.is_error();
            #[cfg(not(ringshard_broken = "epoll_eof_not_sticky"))]
            {
                r.error |= failed;
                r.read_closed |= event.is_read_closed();
                r.write_closed |= event.is_write_closed();
            }
            let readable = failed || event.is_readable() || event.is_read_closed();
            let writable = failed || event.is_writable() || event.is_write_closed();
            r.readable |= readable;
            r.writable |= writable;
            for (_, (direction, waker)) in r.waiters.iter_mut() {
                let wake = match direction {
                    Direction::Read => readable,
                    Direction::Write => writable,
                };
                if wake {
                    self.ready.wakers.extend(waker.take());
                }
            }
        }
    }

    pub(crate) fn take_ready(&mut self, out: &mut Ready) {
        out.wakers.append(&mut self.ready.wakers);
    }

    /// Wakes every op still waiting, so its task can be dropped.
    pub(crate) fn wake_all(&mut self, out: &mut Ready) {
        self.take_ready(out);
        for (_, r) in self.registrations.iter_mut() {
            for (_, (_, waker)) in r.waiters.iter_mut() {
                out.wakers.extend(waker.take());
            }
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The time left on the park timer (zero when disarmed).
    fn armed(driver: &PollDriver) -> Duration {
        let Some(timer) = &driver.timer else {
            return Duration::ZERO;
        };
        // SAFETY: an all-zero itimerspec is valid; timerfd_gettime fills it.
        let mut spec: libc::itimerspec = unsafe { std::mem::zeroed() };
        // SAFETY: `spec` is a live itimerspec.
        assert_eq!(unsafe { libc::timerfd_gettime(timer.raw(), &mut spec) }, 0);
        Duration::new(spec.it_value.tv_sec as u64, spec.it_value.tv_nsec as u32)
    }

    /// A park deadline between milliseconds goes on the timer (epoll_wait
    /// would round it up by up to a millisecond); whole milliseconds, no
    /// deadline and no wait stay epoll_wait's own.
    #[test]
    fn a_deadline_between_milliseconds_is_set_on_the_timer() {
        let mut driver = PollDriver::new().unwrap();
        assert_eq!(driver.exact(None), None);
        assert_eq!(driver.exact(Some(Duration::ZERO)), Some(Duration::ZERO));
        let whole = Duration::from_millis(2);
        assert_eq!(driver.exact(Some(whole)), Some(whole));
        assert_eq!(armed(&driver), Duration::ZERO);
        let between = Duration::from_micros(1_300);
        assert_eq!(
            driver.exact(Some(between)),
            Some(between + Duration::from_millis(1))
        );
        let left = armed(&driver);
        assert!(left > Duration::ZERO && left <= between, "{left:?}");
        // A park "forever" (`park_timeout(Duration::MAX)`) neither panics
        // nor shortens.
        assert_eq!(driver.exact(Some(Duration::MAX)), Some(Duration::MAX));
        // It fires, and the park it ends reads it away.
        driver.park(Some(between));
        assert_eq!(armed(&driver), Duration::ZERO);
    }
}
