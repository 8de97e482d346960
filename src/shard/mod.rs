//! One shard: a thread's run queue, timer wheel and driver, and the loop that
//! turns them.
//!
//! [`Core`] is the part only the shard's thread touches (non-atomic); it is
//! reached through the one thread-local of the crate, in [`crate::context`]. [`Shared`]
//! is the thread-safe door into a shard: its inbox, its parked flag and its
//! counters.
//!
//! One turn of the loop ([`Core::turn`]):
//!
//! 1. drain the inbox into the run queue, fire expired timers;
//! 2. run up to [`BUDGET`] tasks;
//! 3. if anything is runnable, submit and reap without waiting; otherwise park
//!    in the driver until the next timer deadline, an I/O completion or an
//!    unpark. Exactly one driver call either way (none when there is no I/O
//!    in flight and work to do).

mod registry;
mod shared;
mod watch;

pub(crate) use registry::Registration;
pub(crate) use shared::{release_on, shared_of, Config, RuntimeShared, Shared};
pub(crate) use watch::Beacon;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use crossbeam_deque::{Steal, Worker};

use self::registry::Registry;
use self::watch::Watches;
use crate::context::with_current;
use crate::driver::{Driver, Ready};
use crate::task::{Runnable, ShardId};
use crate::time::wheel::{self, TimerKey, Wheel};

/// Inbox checks between two clock reads while spinning.
const SPIN_CHECKS: u32 = 32;

/// Tasks run per turn before the shard looks at its inbox, timers and I/O.
const BUDGET: usize = 61;

/// Source of [`Core::uid`]: tells shards apart even across runtimes.
static NEXT_UID: AtomicU64 = AtomicU64::new(1);

/// Whether a future polled now with `waker` may wait through a [`Beacon`]:
/// this thread runs a shard that spins before parking and has room for
/// one more, and `waker` is the one of the task (or root future) the
/// shard's loop is polling. A future polled by a nested executor inside a
/// task (`futures::executor::block_on(rx.recv())`) has another waker: the
/// shard is blocked under it and would never read the beacon.
pub(crate) fn can_watch(waker: &Waker) -> bool {
    with_current(|core| {
        !core.config.spin.is_zero()
            && core.polling.get() == waker.data()
            && core.watches.borrow().has_room()
    })
    .unwrap_or(false)
}

/// Makes the current shard watch `beacon` and wake `waker` when its word
/// changes. Call only after [`can_watch`] said yes in the same poll; off a
/// shard, `waker` is woken at once (the task polls again and parks the
/// usual way).
pub(crate) fn watch(beacon: Beacon, waker: Waker) {
    let mut pair = Some((beacon, waker));
    with_current(|core| {
        if let Some((beacon, waker)) = pair.take() {
            core.watches.borrow_mut().push(beacon, waker);
        }
    });
    if let Some((_, waker)) = pair {
        waker.wake();
    }
}

/// Where a woken task goes: the local run queue when the waking thread runs
/// the task's shard, otherwise the owner's inbox.
pub(crate) fn schedule(runnable: Runnable) {
    let mut runnable = Some(runnable);
    with_current(|core| {
        let Some(task) = runnable.as_ref() else {
            return;
        };
        let owner = task.metadata().owner();
        // A stealable task may run on any shard of its runtime: it stays
        // where it was woken.
        let here = ptr::eq(Arc::as_ptr(&core.shared), Arc::as_ptr(&owner))
            || (task.metadata().stealable() && core.deque.is_some() && core.same_runtime(&owner));
        if here {
            core.push_local(runnable.take().expect("checked above"));
        }
    });
    let Some(runnable) = runnable else {
        return;
    };
    // Keep the owner alive past the push: once queued, the task (and the
    // Arc in its metadata) may be freed by the owner at any moment.
    let owner = Arc::clone(&runnable.metadata().owner());
    owner.push_remote(runnable);
}

/// A timer registration held by a `Sleep`: the shard it is on and its key.
pub(crate) type TimerRegistration = Option<(u64, TimerKey)>;

/// Shard-local counters, copied into [`Shared`]'s atomics before the shard
/// parks, when `block_on` returns, and every [`STATS_TURNS`] turns of a
/// shard that does not park.
#[derive(Default)]
struct Counters {
    spawned: Cell<u64>,
    polls: Cell<u64>,
    remote_wakes: Cell<u64>,
    steals: Cell<u64>,
    parks: Cell<u64>,
    timers_fired: Cell<u64>,
}

/// How often a busy shard publishes its counters: each publication is a
/// dozen stores, which on a one-connection echo cost more than the rest of
/// the turn's bookkeeping.
const STATS_TURNS: u32 = 64;

fn bump(cell: &Cell<u64>, by: u64) {
    cell.set(cell.get() + by);
}

/// The shard-local half of a shard. Lives on its thread; `!Send` in spirit
/// (it is only ever reached through [`crate::context`]).
pub(crate) struct Core {
    pub(crate) shared: Arc<Shared>,
    pub(crate) runtime: Arc<RuntimeShared>,
    uid: u64,
    config: Config,
    run_queue: RefCell<VecDeque<Runnable>>,
    wheel: RefCell<Wheel>,
    fired: RefCell<Vec<Waker>>,
    /// Stealable tasks ready to run here, which idle shards may take
    /// (work stealing only).
    deque: Option<Worker<Runnable>>,
    /// Every live shard-bound task of this shard, for shutdown.
    registry: Registry,
    /// Words this shard reads for tasks waiting on another shard (see
    /// `watch.rs`).
    watches: RefCell<Watches>,
    driver: RefCell<Driver>,
    ready: RefCell<Ready>,
    /// The waker data of the task or root future the loop is polling now
    /// (null between polls): what [`can_watch`] compares with.
    polling: Cell<*const ()>,
    origin: Instant,
    now: Cell<Instant>,
    /// Work came from another shard since the last spin that found nothing.
    remote_recent: Cell<bool>,
    /// Turns so far, for publishing the counters every `STATS_TURNS`.
    turns: Cell<u32>,
    counters: Counters,
}

impl Core {
    pub(crate) fn new(
        shared: Arc<Shared>,
        runtime: Arc<RuntimeShared>,
        driver: Driver,
        config: Config,
    ) -> Core {
        let origin = Instant::now();
        let deque = config.work_stealing.then(|| {
            let deque = Worker::new_fifo();
            // Set once: each shard makes one Core.
            let _ = shared.stealer.set(deque.stealer());
            deque
        });
        let uid = NEXT_UID.fetch_add(1, Ordering::Relaxed);
        shared::register(uid, &shared);
        Core {
            shared,
            runtime,
            uid,
            run_queue: RefCell::new(VecDeque::with_capacity(config.queue_size)),
            config,
            wheel: RefCell::new(Wheel::new()),
            fired: RefCell::new(Vec::new()),
            deque,
            registry: Registry::default(),
            watches: RefCell::new(Watches::default()),
            driver: RefCell::new(driver),
            ready: RefCell::new(Ready::default()),
            polling: Cell::new(ptr::null()),
            origin,
            now: Cell::new(origin),
            remote_recent: Cell::new(false),
            turns: Cell::new(0),
            counters: Counters::default(),
        }
    }

    /// Tells this shard apart from every other, across runtimes.
    pub(crate) fn uid(&self) -> u64 {
        self.uid
    }

    pub(crate) fn driver(&self) -> &RefCell<Driver> {
        &self.driver
    }

    pub(crate) fn run_queue_is_empty(&self) -> bool {
        self.run_queue.borrow().is_empty()
    }

    pub(crate) fn id(&self) -> ShardId {
        ShardId::new(self.shared.index)
    }

    /// Queues a task spawned on this shard.
    pub(crate) fn spawn_local(&self, runnable: Runnable) {
        bump(&self.counters.spawned, 1);
        self.run_queue.borrow_mut().push_back(runnable);
    }

    /// Queues a stealable task spawned on this shard: in the deque other
    /// shards steal from, waking one of them if it is parked.
    pub(crate) fn spawn_stealable(&self, runnable: Runnable) {
        bump(&self.counters.spawned, 1);
        self.push_local(runnable);
        if self.deque.is_some() {
            let others = self.runtime.shards.iter();
            if let Some(idle) = others
                .filter(|shard| !Arc::ptr_eq(shard, &self.shared))
                .find(|shard| shard.parked.is_raised())
            {
                idle.unpark_if_parked();
            }
        }
    }

    /// Queues a task woken or spawned on this thread.
    fn push_local(&self, runnable: Runnable) {
        match &self.deque {
            Some(deque) if runnable.metadata().stealable() => deque.push(runnable),
            _ => self.run_queue.borrow_mut().push_back(runnable),
        }
    }

    fn same_runtime(&self, shard: &Arc<Shared>) -> bool {
        self.runtime
            .shards
            .get(shard.index)
            .is_some_and(|ours| Arc::ptr_eq(ours, shard))
    }

    /// The next task to run: shard-bound ones first, then stealable ones.
    fn next_task(&self) -> Option<Runnable> {
        let pop = || {
            let local = self.run_queue.borrow_mut().pop_front();
            local.or_else(|| self.deque.as_ref()?.pop())
        };
        // Once both are dry: a task of this turn may have sent what a
        // watched task waits for, which then runs in this turn too.
        pop().or_else(|| self.check_watches().then(pop)?)
    }

    /// Polls `runnable`, noting its waker's data for [`can_watch`] (a task's
    /// waker points at its header, as the runnable does).
    fn run(&self, runnable: Runnable) {
        let task = Runnable::into_raw(runnable);
        self.polling.set(task.as_ptr());
        // SAFETY: `task` comes from `into_raw` just above and is turned
        // back into a runnable once.
        unsafe { Runnable::from_raw(task) }.run();
        self.polling.set(ptr::null());
    }

    fn has_tasks(&self) -> bool {
        !self.run_queue.borrow().is_empty() || self.deque.as_ref().is_some_and(|d| !d.is_empty())
    }

    /// Takes a batch of stealable tasks from another shard; true if any.
    fn steal(&self) -> bool {
        let Some(deque) = &self.deque else {
            return false;
        };
        let shards = &self.runtime.shards;
        let start = self.shared.index + 1;
        for offset in 0..shards.len() - 1 {
            let victim = &shards[(start + offset) % shards.len()];
            let Some(stealer) = victim.stealer.get() else {
                continue;
            };
            loop {
                match stealer.steal_batch(deque) {
                    Steal::Success(()) => {
                        bump(&self.counters.steals, deque.len() as u64);
                        return true;
                    }
                    Steal::Retry => continue,
                    Steal::Empty => break,
                }
            }
        }
        false
    }

    /// Counts a task that was built here on another shard's behalf (`spawn_on`).
    pub(crate) fn count_spawn(&self) {
        bump(&self.counters.spawned, 1);
    }

    /// Runs `future` to completion on this thread, turning the shard meanwhile.
    pub(crate) fn block_on<F: Future>(&self, future: F) -> F::Output {
        let mut future = pin!(future);
        let root = Arc::new(RootWaker {
            woken: AtomicBool::new(true),
            shared: self.shared.clone(),
        });
        let waker = Waker::from(root.clone());
        let mut cx = Context::from_waker(&waker);
        loop {
            if root.woken.swap(false, Ordering::AcqRel) {
                self.polling.set(waker.data());
                let polled = future.as_mut().poll(&mut cx);
                self.polling.set(ptr::null());
                if let Poll::Ready(output) = polled {
                    // A `write_all` that went behind is sent before the
                    // caller goes on, as it was before it returned (a peer
                    // that takes nothing holds it at most `LINGER`).
                    #[cfg(not(ringshard_broken = "block_on_no_flush"))]
                    self.driver
                        .borrow_mut()
                        .flush(Instant::now() + crate::driver::BEHIND_LINGER);
                    self.flush_stats();
                    return output;
                }
            }
            self.turn(|| root.woken.load(Ordering::Acquire));
        }
    }

    /// The loop of a worker shard: turns until the runtime shuts down.
    pub(crate) fn run_worker(&self) {
        while !self.shared.shutdown.load(Ordering::Acquire) {
            self.turn(|| self.shared.shutdown.load(Ordering::Acquire));
        }
        self.flush_stats();
    }

    /// One turn of the loop, see the module docs. `woken` tells whether the
    /// caller's root future wants polling (it counts as runnable work).
    fn turn(&self, woken: impl Fn() -> bool) {
        self.drain_inbox();
        if self.shared.has_releases.load(Ordering::Acquire) {
            self.release_dropped(false);
        }
        self.check_watches();
        self.fire_timers();
        for _ in 0..BUDGET {
            let Some(runnable) = self.next_task() else {
                break;
            };
            bump(&self.counters.polls, 1);
            self.run(runnable);
        }
        let runnable = self.has_tasks() || woken() || self.steal();
        if runnable || !self.config.enable_parking {
            self.driver.borrow_mut().poll_nowait();
        } else {
            self.park(&woken);
        }
        self.dispatch_ready();
        self.shrink_run_queue();
        // A busy shard publishes its counters every so many turns (a
        // parking one always does, before it blocks).
        let turns = self.turns.get().wrapping_add(1);
        self.turns.set(turns);
        if turns % STATS_TURNS == 0 {
            self.driver.borrow_mut().maintain();
            self.flush_stats();
        }
    }

    /// Gives back the memory a burst of spawns grew the run queue to, once
    /// the burst has drained: a queue stays at most four times its
    /// configured size while empty (100,000 spawned tasks would otherwise
    /// keep 8 bytes each of queue for the runtime's life).
    fn shrink_run_queue(&self) {
        let mut queue = self.run_queue.borrow_mut();
        if queue.is_empty() && queue.capacity() > 4 * self.config.queue_size.max(1) {
            queue.shrink_to(self.config.queue_size);
        }
    }

    /// Releases the sockets dropped off this shard (see `fd.rs`) through
    /// the driver; with `last`, stops taking more.
    fn release_dropped(&self, last: bool) {
        let releases = self.shared.take_releases(last);
        let mut driver = self.driver.borrow_mut();
        for (fd, token) in releases {
            driver.release_dropped(fd, token);
        }
    }

    fn drain_inbox(&self) {
        let mut count = 0;
        while let Some(runnable) = self.shared.inbox.pop() {
            self.push_local(runnable);
            count += 1;
        }
        if count > 0 {
            self.remote_recent.set(true);
            bump(&self.counters.remote_wakes, count);
        }
    }

    /// Wakes the tasks whose watched word changed; true if any.
    fn check_watches(&self) -> bool {
        let mut count = 0;
        loop {
            // The waker runs outside the borrow: it may poll nothing, but
            // it schedules, and a custom waker may do anything.
            let changed = self.watches.borrow_mut().take_changed();
            let Some(waker) = changed else { break };
            waker.wake();
            count += 1;
        }
        if count > 0 {
            self.remote_recent.set(true);
            bump(&self.counters.remote_wakes, count);
        }
        count > 0
    }

    /// Settles every watched word before parking; true if a task was woken
    /// (its word had changed) and the shard must not park.
    fn settle_watches(&self) -> bool {
        if self.watches.borrow().is_empty() {
            return false;
        }
        let wakers = self.watches.borrow_mut().settle_all();
        let woke = !wakers.is_empty();
        wakers.into_iter().for_each(Waker::wake);
        woke
    }

    fn fire_timers(&self) {
        // No clock read when there is no timer: `now` may then lag, which
        // only makes `poll_sleep` register a timer that fires next turn.
        if self.wheel.borrow().is_empty() {
            return;
        }
        let now = Instant::now();
        self.now.set(now);
        let mut fired = self.fired.borrow_mut();
        let count = self
            .wheel
            .borrow_mut()
            .advance(self.tick_floor(now), &mut fired);
        if count > 0 {
            bump(&self.counters.timers_fired, count as u64);
            let wakers = std::mem::take(&mut *fired);
            drop(fired);
            let mut wakers = wakers;
            wakers.drain(..).for_each(Waker::wake);
            *self.fired.borrow_mut() = wakers;
        }
    }

    /// Parks in the driver until the next timer deadline (capped by
    /// `park_timeout`) unless work arrived since the turn began.
    fn park(&self, woken: &impl Fn() -> bool) {
        if self.spin(woken) || self.settle_watches() {
            return;
        }
        let timeout = self.park_duration();
        // The handshake with `Shared::unpark_if_parked` (see `ParkFlag`):
        // either the waker sees the flag, or we see what it pushed.
        self.shared.parked.raise();
        let work =
            !self.shared.inbox.is_empty() || self.shared.has_releases.load(Ordering::Relaxed);
        if work || woken() || timeout == Some(Duration::ZERO) {
            self.shared.parked.lower();
            self.driver.borrow_mut().poll_nowait();
            return;
        }
        bump(&self.counters.parks, 1);
        // Counters are published before blocking, so `stats()` never waits
        // on a sleeping shard.
        self.flush_stats();
        self.driver.borrow_mut().park(timeout);
        self.shared.parked.lower();
    }

    /// Spins up to `Config::spin` (or the next timer) waiting for the
    /// inbox, after cross-shard work; true if work arrived. What this turn
    /// queued for the driver is submitted first, so spinning delays no I/O
    /// submission.
    fn spin(&self, woken: &impl Fn() -> bool) -> bool {
        if self.config.spin.is_zero() || !self.remote_recent.replace(false) {
            return false;
        }
        self.driver.borrow_mut().poll_nowait();
        // What that reaped must run before any parking.
        self.dispatch_ready();
        if self.has_tasks() || woken() {
            return true;
        }
        let limit = self
            .park_duration()
            .map_or(self.config.spin, |until| until.min(self.config.spin));
        let start = Instant::now();
        loop {
            for _ in 0..SPIN_CHECKS {
                if !self.shared.inbox.is_empty() || woken() {
                    self.remote_recent.set(true);
                    return true;
                }
                if self.shared.has_releases.load(Ordering::Relaxed) {
                    return true;
                }
                if self.check_watches() {
                    return true;
                }
                std::hint::spin_loop();
            }
            if start.elapsed() >= limit {
                return false;
            }
        }
    }

    fn park_duration(&self) -> Option<Duration> {
        let deadline = self.wheel.borrow().next_deadline().map(|tick| {
            match self.origin.checked_add(wheel::tick_start(tick)) {
                Some(at) => at.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            }
        });
        match (deadline, self.config.park_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Wakes the tasks whose ops completed and finishes orphaned ops, outside
    /// the driver borrow (both may re-enter the shard).
    fn dispatch_ready(&self) {
        let mut ready = std::mem::take(&mut *self.ready.borrow_mut());
        self.driver.borrow_mut().take_ready(&mut ready);
        if ready.is_empty() {
            *self.ready.borrow_mut() = ready;
            return;
        }
        ready.wakers.drain(..).for_each(Waker::wake);
        if !ready.orphans.is_empty() || !ready.fds.is_empty() {
            complete_orphans(&mut ready);
        }
        *self.ready.borrow_mut() = ready;
    }

    fn flush_stats(&self) {
        let driver = self.driver.borrow().stats();
        let stats = &self.shared.stats;
        let c = &self.counters;
        stats.spawned.store(c.spawned.get(), Ordering::Relaxed);
        stats.polls.store(c.polls.get(), Ordering::Relaxed);
        stats
            .remote_wakes
            .store(c.remote_wakes.get(), Ordering::Relaxed);
        stats.parks.store(c.parks.get(), Ordering::Relaxed);
        stats.steals.store(c.steals.get(), Ordering::Relaxed);
        stats
            .timers_fired
            .store(c.timers_fired.get(), Ordering::Relaxed);
        stats
            .ops_submitted
            .store(driver.submitted, Ordering::Relaxed);
        stats
            .ops_completed
            .store(driver.completed, Ordering::Relaxed);
        stats.driver_waits.store(driver.enters, Ordering::Relaxed);
        stats
            .cq_overflows
            .store(driver.cq_overflows, Ordering::Relaxed);
        stats
            .recv_buffer_shortages
            .store(driver.recv_buffer_shortages, Ordering::Relaxed);
        stats
            .recv_pauses
            .store(driver.recv_pauses, Ordering::Relaxed);
        stats
            .driver_errors
            .store(driver.driver_errors, Ordering::Relaxed);
        stats
            .ops_in_flight
            .store(driver.in_flight, Ordering::Relaxed);
    }

    /// The wheel's tick that `instant` is in.
    fn tick_floor(&self, instant: Instant) -> u64 {
        wheel::tick_floor(instant.saturating_duration_since(self.origin))
    }

    /// The first tick at or after `instant`: a timer there never fires early.
    fn tick_ceil(&self, instant: Instant) -> u64 {
        wheel::tick_ceil(instant.saturating_duration_since(self.origin))
    }

    /// Polls a sleep until `deadline`: ready once the shard's clock has
    /// reached it (never before), otherwise registered on this shard's wheel.
    pub(crate) fn poll_sleep(
        &self,
        deadline: Instant,
        registration: &mut TimerRegistration,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        let mut wheel = self.wheel.borrow_mut();
        if self.now.get() >= deadline {
            if let Some((uid, key)) = registration.take() {
                if uid == self.uid {
                    wheel.cancel(key);
                }
            }
            return Poll::Ready(());
        }
        if let Some((uid, key)) = *registration {
            if uid == self.uid {
                if wheel.update_waker(key, cx.waker()) {
                    return Poll::Pending;
                }
                // Fired, yet the shard's clock is short of the deadline: it
                // lay beyond the wheel's horizon. Check the real clock.
                if Instant::now() >= deadline {
                    *registration = None;
                    return Poll::Ready(());
                }
            }
        }
        // First poll, or moved here from another shard. Registering is safe
        // without reading the clock: the wheel only fires at ticks the real
        // clock has passed, and the tick is rounded up from the deadline.
        let key = wheel.insert(self.tick_ceil(deadline), cx.waker().clone());
        *registration = Some((self.uid, key));
        Poll::Pending
    }

    /// Removes a sleep's timer if it is registered on this shard.
    pub(crate) fn cancel_sleep(&self, registration: &mut TimerRegistration) {
        if let Some((uid, key)) = *registration {
            if uid == self.uid {
                *registration = None;
                // The waker is dropped after the borrow ends.
                let waker = self.wheel.borrow_mut().cancel(key);
                drop(waker);
            }
        }
    }

    /// Cancels every task of this shard and drains its in-flight I/O until
    /// `deadline`. Tasks are dropped here, on their own thread.
    pub(crate) fn shutdown(&self, deadline: Instant) {
        let mut ready = Ready::default();
        // Watched words are dropped with their wakers: every task is
        // dropped below anyway.
        let watches = self.watches.borrow_mut().clear();
        drop(watches);
        // Every live task, however it waits, is woken to be dropped below.
        let mut registered = self.registry.wakers();
        registered.extend(self.runtime.registry.wakers());
        registered.into_iter().for_each(Waker::wake);
        loop {
            let mut progressed = false;
            while let Some(runnable) = self.pop_any() {
                drop_quietly(runnable);
                progressed = true;
            }
            let mut wakers = Vec::new();
            self.wheel.borrow_mut().drain(&mut wakers);
            self.driver.borrow_mut().wake_all(&mut ready);
            wakers.append(&mut ready.wakers);
            progressed |= !wakers.is_empty();
            // Waking (not just dropping) schedules each task so its future is
            // dropped on the next pass, which abandons and cancels its ops.
            wakers.into_iter().for_each(Waker::wake);
            if !progressed || Instant::now() >= deadline {
                break;
            }
        }
        // Sockets dropped off the shard: their multishot ops are
        // cancelled and drained with the rest.
        self.release_dropped(false);
        self.driver.borrow_mut().shutdown(deadline, &mut ready);
        // Nothing is submitted from here on: later drops close at once.
        self.release_dropped(true);
        ready.wakers.drain(..).for_each(Waker::wake);
        complete_orphans(&mut ready);
        self.shared.close();
        // A `spawn_on` that saw the shard open finishes its push first, so
        // the drain below reaches it (see `Shared::push_new`).
        self.shared.wait_for_new_pushes();
        while let Some(runnable) = self.pop_any() {
            drop_quietly(runnable);
        }
        self.flush_stats();
    }

    fn pop_any(&self) -> Option<Runnable> {
        self.next_task().or_else(|| self.shared.inbox.pop())
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        shared::forget(self.uid);
        // A shard dropped without `shutdown` (its thread unwinding): its
        // driver is being dropped, which submits nothing more.
        drop(self.shared.take_releases(true));
    }
}

/// Hands late results to orphaned ops (closing an fd, freeing a buffer), and
/// drops the fd clones the driver let go of; a panic in one must not take
/// the shard down.
fn complete_orphans(ready: &mut Ready) {
    for (orphan, result) in ready.orphans.drain(..) {
        let _ = catch_unwind(AssertUnwindSafe(move || orphan.complete(result)));
    }
    ready.fds.clear();
}

/// Drops a task's future; a panic in its `Drop` must not take the shard down.
fn drop_quietly(runnable: Runnable) {
    let _ = catch_unwind(AssertUnwindSafe(move || drop(runnable)));
}

/// The waker of a `block_on` root future: a flag plus an unpark.
struct RootWaker {
    woken: AtomicBool,
    shared: Arc<Shared>,
}

impl Wake for RootWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.shared.unpark_if_parked();
    }
}
