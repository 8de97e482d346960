//! The readiness driver over mio (epoll on Linux, kqueue on BSD/macOS).
//!
//! For now it parks and unparks; socket ops arrive with the readiness backend
//! of the networking work.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::{DriverStats, Unparker};

const WAKE: mio::Token = mio::Token(usize::MAX);

pub(crate) struct PollDriver {
    poll: mio::Poll,
    events: mio::Events,
    waker: Arc<mio::Waker>,
    pub(crate) stats: DriverStats,
}

impl PollDriver {
    pub(crate) fn new() -> io::Result<PollDriver> {
        let poll = mio::Poll::new()?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKE)?);
        Ok(PollDriver {
            poll,
            events: mio::Events::with_capacity(256),
            waker,
            stats: DriverStats::default(),
        })
    }

    pub(crate) fn unparker(&self) -> Unparker {
        Unparker::Poll(self.waker.clone())
    }

    /// Nothing is registered besides the waker, so there is nothing to reap.
    pub(crate) fn poll_nowait(&mut self) {}

    pub(crate) fn park(&mut self, timeout: Option<Duration>) {
        self.stats.enters += 1;
        // EINTR is a spurious wake; the shard loop simply turns again.
        let _ = self.poll.poll(&mut self.events, timeout);
    }
}
