//! The thread-safe half of a shard and of the runtime.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crossbeam_deque::Stealer;
use crossbeam_queue::SegQueue;
use crossbeam_utils::CachePadded;

use super::registry::SharedRegistry;
use crate::driver::Unparker;
use crate::runtime::ShardStats;
use crate::sys::atomic::ParkFlag;
use crate::task::Runnable;

/// Loop settings every shard gets from the builder.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    pub(crate) queue_size: usize,
    pub(crate) enable_parking: bool,
    pub(crate) park_timeout: Option<Duration>,
    /// Spin before parking after cross-shard work (`Builder::spin_before_park`).
    pub(crate) spin: Duration,
    /// `Builder::work_stealing`.
    pub(crate) work_stealing: bool,
}

/// What every shard can see of the others.
pub(crate) struct RuntimeShared {
    pub(crate) shards: Vec<Arc<Shared>>,
    /// `spawn_blocking`'s pool, made on first use.
    blocking: OnceLock<Arc<crate::task::blocking::Pool>>,
    /// `Builder::max_blocking_threads`.
    max_blocking_threads: usize,
    /// The CPUs the process could run on when the runtime was built (pool
    /// threads run on all of them).
    cpus: Vec<usize>,
    /// Set by `Runtime::shutdown`: when shards must be done draining.
    pub(crate) deadline: OnceLock<Instant>,
    /// The live stealable tasks (shard-bound ones are in each `Core`).
    pub(crate) registry: SharedRegistry,
}

impl RuntimeShared {
    pub(crate) fn new(
        shards: Vec<Arc<Shared>>,
        max_blocking_threads: usize,
        cpus: Vec<usize>,
    ) -> RuntimeShared {
        RuntimeShared {
            shards,
            blocking: OnceLock::new(),
            max_blocking_threads,
            cpus,
            deadline: OnceLock::new(),
            registry: SharedRegistry::default(),
        }
    }
}

impl RuntimeShared {
    /// The blocking pool, made on first use.
    pub(crate) fn blocking_pool(&self) -> Arc<crate::task::blocking::Pool> {
        self.blocking
            .get_or_init(|| {
                Arc::new(crate::task::blocking::Pool::new(
                    self.max_blocking_threads,
                    self.cpus.clone(),
                ))
            })
            .clone()
    }

    /// Lets the blocking pool's idle threads go (runtime shutdown).
    pub(crate) fn shutdown_blocking(&self) {
        if let Some(pool) = self.blocking.get() {
            pool.shutdown();
        }
    }
}

/// Counters of one shard. Written only by the shard (plain stores), read by
/// `Runtime::stats` from any thread.
#[derive(Default)]
pub(crate) struct AtomicStats {
    pub(crate) spawned: AtomicU64,
    pub(crate) polls: AtomicU64,
    pub(crate) remote_wakes: AtomicU64,
    pub(crate) steals: AtomicU64,
    pub(crate) ops_submitted: AtomicU64,
    pub(crate) ops_completed: AtomicU64,
    pub(crate) driver_waits: AtomicU64,
    pub(crate) parks: AtomicU64,
    pub(crate) timers_fired: AtomicU64,
    pub(crate) cq_overflows: AtomicU64,
    pub(crate) recv_buffer_shortages: AtomicU64,
    pub(crate) recv_pauses: AtomicU64,
    pub(crate) driver_errors: AtomicU64,
    pub(crate) ops_in_flight: AtomicU64,
}

impl AtomicStats {
    pub(crate) fn snapshot(&self) -> ShardStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ShardStats {
            tasks_spawned: get(&self.spawned),
            polls: get(&self.polls),
            remote_wakes: get(&self.remote_wakes),
            steals: get(&self.steals),
            ops_submitted: get(&self.ops_submitted),
            ops_completed: get(&self.ops_completed),
            driver_waits: get(&self.driver_waits),
            parks: get(&self.parks),
            timers_fired: get(&self.timers_fired),
            cq_overflows: get(&self.cq_overflows),
            recv_buffer_shortages: get(&self.recv_buffer_shortages),
            recv_pauses: get(&self.recv_pauses),
            driver_errors: get(&self.driver_errors),
            ops_in_flight: get(&self.ops_in_flight),
        }
    }
}

/// A socket dropped off its shard, for the shard to release: its fd (none
/// when it could be closed at once) and its driver token.
pub(crate) type Release = (Option<OwnedFd>, u64);

/// Every live shard by uid, so a socket dropped off its shard can find it.
static SHARDS: Mutex<BTreeMap<u64, Weak<Shared>>> = Mutex::new(BTreeMap::new());

fn shards() -> std::sync::MutexGuard<'static, BTreeMap<u64, Weak<Shared>>> {
    SHARDS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Makes `shared` findable by its `uid` (until [`forget`]).
pub(crate) fn register(uid: u64, shared: &Arc<Shared>) {
    shards().insert(uid, Arc::downgrade(shared));
}

/// The shard `uid` is gone.
pub(crate) fn forget(uid: u64) {
    shards().remove(&uid);
}

/// The shard `uid`, while it lives.
pub(crate) fn shared_of(uid: u64) -> Option<Arc<Shared>> {
    shards().get(&uid).and_then(Weak::upgrade)
}

/// Hands a socket dropped off its shard to shard `uid`. Once that shard
/// stopped taking releases (or is gone), nothing can submit to its driver
/// any more, and the fd simply closes here.
pub(crate) fn release_on(uid: u64, release: Release) {
    let shard = shards().get(&uid).and_then(Weak::upgrade);
    match shard {
        Some(shard) => shard.release(release),
        None => drop(release),
    }
}

/// The one thread-safe door into a shard.
pub(crate) struct Shared {
    pub(crate) index: usize,
    /// Sockets dropped off this shard, released at its next turn; `None`
    /// once the shard has shut its driver down.
    releases: Mutex<Option<Vec<Release>>>,
    /// `releases` holds something: checked once a turn without the lock.
    pub(crate) has_releases: AtomicBool,
    /// Tasks woken or spawned from other threads, drained once per turn.
    pub(crate) inbox: SegQueue<Runnable>,
    /// Raised while the shard is (about to be) blocked in its driver; a
    /// remote wake makes the unpark syscall only when it takes it.
    pub(crate) parked: CachePadded<ParkFlag>,
    /// Set once the shard has dropped its tasks for good.
    closed: AtomicBool,
    /// `push_new`s between their check of `closed` and their push.
    pushing_new: AtomicUsize,
    pub(crate) shutdown: AtomicBool,
    unparker: Unparker,
    /// The other end of the shard's deque of stealable tasks (work
    /// stealing only), set once the shard's thread made the deque.
    pub(crate) stealer: OnceLock<Stealer<Runnable>>,
    pub(crate) stats: CachePadded<AtomicStats>,
}

impl Shared {
    pub(crate) fn new(index: usize, unparker: Unparker) -> Shared {
        Shared {
            index,
            releases: Mutex::new(Some(Vec::new())),
            has_releases: AtomicBool::new(false),
            inbox: SegQueue::new(),
            parked: CachePadded::new(ParkFlag::new()),
            closed: AtomicBool::new(false),
            pushing_new: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            unparker,
            stealer: OnceLock::new(),
            stats: CachePadded::new(AtomicStats::default()),
        }
    }

    /// Hands a task to this shard from another thread.
    pub(crate) fn push_remote(&self, runnable: Runnable) {
        if self.closed.load(Ordering::Acquire) {
            // The shard has exited: its thread is the only one allowed to
            // drop the (possibly !Send) future, so the task is leaked.
            std::mem::forget(runnable);
            return;
        }
        self.inbox.push(runnable);
        self.unpark_if_parked();
    }

    fn lock_releases(&self) -> std::sync::MutexGuard<'_, Option<Vec<Release>>> {
        self.releases
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a socket dropped off this shard for its next turn (waking it
    /// if parked); closes it at once if the shard has shut down.
    fn release(&self, release: Release) {
        let mut releases = self.lock_releases();
        let Some(queue) = releases.as_mut() else {
            drop(releases);
            return drop(release);
        };
        queue.push(release);
        self.has_releases.store(true, Ordering::Release);
        drop(releases);
        self.unpark_if_parked();
    }

    /// The sockets to release now; with `last`, the shard stops taking
    /// them (later ones close where they are dropped).
    pub(crate) fn take_releases(&self, last: bool) -> Vec<Release> {
        let mut releases = self.lock_releases();
        self.has_releases.store(false, Ordering::Relaxed);
        match last {
            true => releases.take().unwrap_or_default(),
            false => releases.as_mut().map(std::mem::take).unwrap_or_default(),
        }
    }

    /// Hands a task that was never polled to this shard from another
    /// thread (`spawn_on`). If the shard has stopped, the task is dropped
    /// here (its future is only the `Send` closure that would build the
    /// real one), so its handle says cancelled instead of waiting forever.
    ///
    /// The check and the push are one step against [`close`](Shared::close):
    /// `pushing_new` counts pushes in progress (SeqCst against the close's
    /// store), and the closing shard waits for them before its last drain.
    pub(crate) fn push_new(&self, runnable: Runnable) {
        self.pushing_new.fetch_add(1, Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst) {
            self.pushing_new.fetch_sub(1, Ordering::Release);
            return drop(runnable);
        }
        self.inbox.push(runnable);
        self.pushing_new.fetch_sub(1, Ordering::Release);
        self.unpark_if_parked();
    }

    /// After `close`: waits out the `push_new`s that saw the shard open (a
    /// few instructions each).
    pub(crate) fn wait_for_new_pushes(&self) {
        // A pusher preempted mid-push gets the CPU back after a while.
        let mut spins = 0u32;
        while self.pushing_new.load(Ordering::SeqCst) != 0 {
            spins += 1;
            if spins % 64 == 0 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// Wakes the shard if it is parked; no syscall when it is awake.
    pub(crate) fn unpark_if_parked(&self) {
        // The handshake with `Core::park` (see `ParkFlag`).
        if self.parked.take() {
            self.unparker.unpark();
        }
    }

    /// Asks the shard's loop to stop.
    pub(crate) fn request_shutdown(&self) {
        self.shutdown.store(true, Ordering::Release);
        fence(Ordering::SeqCst);
        self.parked.lower();
        self.unparker.unpark();
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Tasks that raced with `close` are leaked for the same reason as in
        // `push_remote`: this may not be the shard's thread.
        while let Some(runnable) = self.inbox.pop() {
            std::mem::forget(runnable);
        }
    }
}
