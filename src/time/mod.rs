//! Time: [`sleep`], [`sleep_until`], [`timeout`], [`interval`].
//!
//! Every shard has its own timer wheel (1 µs ticks, see `wheel.rs`); a
//! [`Sleep`] registers on the wheel of the shard that polls it. A shard with
//! nothing else to do parks until exactly the next deadline. Timers never fire
//! early: a deadline is rounded *up* to the next microsecond tick. On the
//! epoll driver the park itself is in milliseconds (`epoll_wait`), so a
//! sleep there wakes up to 1 ms late.

pub(crate) mod wheel;

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

pub use std::time::Instant;

use crate::context;
use crate::shard::TimerRegistration;

/// Roughly 30 years: what a deadline that overflows `Instant` becomes.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

/// `at + by`, saturated: a deadline past what `Instant` holds is
/// [`far_future`]. Every deadline computation goes through this.
fn add(at: Instant, by: Duration) -> Instant {
    at.checked_add(by).unwrap_or_else(far_future)
}

/// Waits until `duration` has elapsed.
///
/// # Cancel safety
///
/// Dropping the future removes its timer; nothing else is lost.
///
/// # Panics
///
/// When polled outside a ringshard runtime.
///
/// ```
/// use std::time::Duration;
/// # let rt = ringshard::Runtime::builder().worker_threads(1).build()?;
/// rt.block_on(async {
///     let start = ringshard::time::Instant::now();
///     ringshard::sleep(Duration::from_millis(5)).await;
///     assert!(start.elapsed() >= Duration::from_millis(5));
/// });
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(add(Instant::now(), duration))
}

/// Waits until `deadline`. See [`sleep`].
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        registration: None,
    }
}

/// The future of [`sleep`] and [`sleep_until`]. It is `Send` and `Unpin`; if
/// it moves to another shard it re-registers there.
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    deadline: Instant,
    registration: TimerRegistration,
}

impl Sleep {
    /// The instant this sleep completes at (or after).
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the deadline has passed.
    pub fn is_elapsed(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Moves the deadline; the sleep can be awaited again afterwards.
    pub fn reset(&mut self, deadline: Instant) {
        self.cancel();
        self.deadline = deadline;
    }

    fn cancel(&mut self) {
        if self.registration.is_some() {
            context::with_current(|core| core.cancel_sleep(&mut self.registration));
            // Registered elsewhere (or no shard here): forget it; the stale
            // entry only causes one spurious wake.
            self.registration = None;
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        context::with_current(|core| core.poll_sleep(this.deadline, &mut this.registration, cx))
            .expect("ringshard::time::Sleep polled outside a ringshard runtime")
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        // Outside its shard the entry stays and fires as a harmless wake.
        self.cancel();
    }
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// The error of a [`timeout`] whose deadline passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed(());

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for std::io::Error {
    fn from(elapsed: Elapsed) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::TimedOut, elapsed)
    }
}

/// Runs `future` for at most `duration`: `Ok(output)`, or `Err(Elapsed)` when
/// the deadline passes first. The future is polled first, so one that is
/// ready is never reported as timed out.
///
/// # Cancel safety
///
/// Dropping the `Timeout` (or its expiring) drops the inner future; it is as
/// cancel-safe as that future.
///
/// ```
/// use std::time::Duration;
/// # let rt = ringshard::Runtime::builder().worker_threads(1).build()?;
/// rt.block_on(async {
///     let slow = ringshard::sleep(Duration::from_secs(60));
///     assert!(ringshard::timeout(Duration::from_millis(2), slow).await.is_err());
///     assert_eq!(ringshard::timeout(Duration::from_secs(1), async { 5 }).await, Ok(5));
/// });
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    Timeout {
        future,
        sleep: sleep(duration),
    }
}

/// Like [`timeout`], with an absolute deadline.
pub fn timeout_at<F: Future>(deadline: Instant, future: F) -> Timeout<F> {
    Timeout {
        future,
        sleep: sleep_until(deadline),
    }
}

pin_project_lite::pin_project! {
    /// The future of [`timeout`].
    #[must_use = "futures do nothing unless awaited"]
    #[derive(Debug)]
    pub struct Timeout<F> {
        #[pin]
        future: F,
        sleep: Sleep,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        match Pin::new(this.sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed(()))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// What an [`Interval`] does when ticks were missed (the task was late).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissedTickBehavior {
    /// Fire the missed ticks back to back, then keep the original schedule.
    #[default]
    Burst,
    /// Restart the schedule from now: the next tick is one period later.
    Delay,
    /// Skip the missed ticks; keep the original phase.
    Skip,
}

/// Ticks every `period`, the first tick at once. Same as
/// `interval_at(Instant::now(), period)`.
///
/// # Panics
///
/// If `period` is zero (as tokio's `interval`).
///
/// ```
/// use std::time::Duration;
/// # let rt = ringshard::Runtime::builder().worker_threads(1).build()?;
/// rt.block_on(async {
///     let mut every = ringshard::time::interval(Duration::from_millis(2));
///     let first = every.tick().await;
///     let second = every.tick().await;
///     assert!(second - first >= Duration::from_millis(2));
/// });
/// # Ok::<(), std::io::Error>(())
/// ```
#[track_caller]
pub fn interval(period: Duration) -> Interval {
    interval_at(Instant::now(), period)
}

/// Ticks at `start`, then every `period`.
///
/// # Panics
///
/// If `period` is zero.
#[track_caller]
pub fn interval_at(start: Instant, period: Duration) -> Interval {
    assert!(
        !period.is_zero(),
        "ringshard::time::interval: period must be non-zero"
    );
    Interval {
        sleep: sleep_until(start),
        period,
        missed: MissedTickBehavior::Burst,
    }
}

/// A stream of ticks, see [`interval`].
#[derive(Debug)]
pub struct Interval {
    sleep: Sleep,
    period: Duration,
    missed: MissedTickBehavior,
}

impl Interval {
    /// Waits for the next tick and returns its scheduled instant.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped `tick()` consumes no tick.
    pub async fn tick(&mut self) -> Instant {
        poll_fn(|cx| self.poll_tick(cx)).await
    }

    /// Polls for the next tick.
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Instant> {
        if Pin::new(&mut self.sleep).poll(cx).is_pending() {
            return Poll::Pending;
        }
        let scheduled = self.sleep.deadline();
        let now = Instant::now();
        let on_time = add(scheduled, self.period);
        let next = if now <= on_time {
            on_time
        } else {
            match self.missed {
                MissedTickBehavior::Burst => on_time,
                MissedTickBehavior::Delay => add(now, self.period),
                MissedTickBehavior::Skip => {
                    let late = (now - scheduled).as_nanos();
                    let periods = u32::try_from(late / self.period.as_nanos() + 1);
                    match periods.ok().and_then(|n| self.period.checked_mul(n)) {
                        Some(skip) => add(scheduled, skip),
                        None => far_future(),
                    }
                }
            }
        };
        self.sleep.reset(next);
        Poll::Ready(scheduled)
    }

    /// The period between ticks.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// What happens when ticks were missed; the default is `Burst`.
    pub fn set_missed_tick_behavior(&mut self, behavior: MissedTickBehavior) {
        self.missed = behavior;
    }

    /// Restarts the schedule: the next tick is one period from now.
    pub fn reset(&mut self) {
        self.sleep.reset(add(Instant::now(), self.period));
    }

    /// Restarts the schedule from now: the next tick is at once, the ones
    /// after it a period apart.
    pub fn reset_immediately(&mut self) {
        self.sleep.reset(Instant::now());
    }

    /// Restarts the schedule: the next tick is `after` from now.
    pub fn reset_after(&mut self, after: Duration) {
        self.sleep.reset(add(Instant::now(), after));
    }

    /// Restarts the schedule: the next tick is at `deadline` (at once if
    /// it has passed), the ones after it a period apart.
    pub fn reset_at(&mut self, deadline: Instant) {
        self.sleep.reset(deadline);
    }
}
