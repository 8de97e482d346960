//! The thread-safe half of a shard and of the runtime.

use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_deque::Stealer;
use crossbeam_queue::SegQueue;
use crossbeam_utils::CachePadded;

use super::registry::SharedRegistry;
use crate::driver::Unparker;
use crate::runtime::ShardStats;
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
    /// Set by `Runtime::shutdown`: when shards must be done draining.
    pub(crate) deadline: OnceLock<Instant>,
    /// The live stealable tasks (shard-bound ones are in each `Core`).
    pub(crate) registry: SharedRegistry,
}

impl RuntimeShared {
    pub(crate) fn new(shards: Vec<Arc<Shared>>) -> RuntimeShared {
        RuntimeShared {
            shards,
            deadline: OnceLock::new(),
            registry: SharedRegistry::default(),
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
        }
    }
}

/// The one thread-safe door into a shard.
pub(crate) struct Shared {
    pub(crate) index: usize,
    /// Tasks woken or spawned from other threads, drained once per turn.
    pub(crate) inbox: SegQueue<Runnable>,
    /// Set while the shard is (about to be) blocked in its driver; a remote
    /// wake makes the unpark syscall only when it flips this from true.
    pub(crate) parked: CachePadded<AtomicBool>,
    /// Set once the shard has dropped its tasks for good.
    closed: AtomicBool,
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
            inbox: SegQueue::new(),
            parked: CachePadded::new(AtomicBool::new(false)),
            closed: AtomicBool::new(false),
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

    /// Wakes the shard if it is parked; no syscall when it is awake.
    pub(crate) fn unpark_if_parked(&self) {
        // Pairs with the fence in `Core::park`.
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::Relaxed) && self.parked.swap(false, Ordering::AcqRel) {
            self.unparker.unpark();
        }
    }

    /// Asks the shard's loop to stop.
    pub(crate) fn request_shutdown(&self) {
        self.shutdown.store(true, Ordering::Release);
        fence(Ordering::SeqCst);
        self.parked.store(false, Ordering::Relaxed);
        self.unparker.unpark();
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
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
