//! [`Runtime`] and [`Builder`]: start N shards, pin them, run root futures,
//! shut them down.

mod builder;
mod stats;

pub use builder::Builder;
pub use stats::{RuntimeStats, ShardStats};

use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::panic::resume_unwind;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use crate::context;
use crate::driver::DriverKind;
use crate::shard::{Core, RuntimeShared};
use crate::sys::AffinityGuard;
use crate::task::{spawn_on, ShardId};

/// How long `Drop` waits for the shards to cancel their tasks and drain I/O.
const DROP_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct Worker {
    thread: Option<thread::JoinHandle<()>>,
    start: Option<mpsc::Sender<Arc<RuntimeShared>>>,
}

/// A thread-per-core runtime: shard 0 runs on the thread that calls
/// [`block_on`](Runtime::block_on), shards `1..n` on their own pinned threads.
///
/// The runtime is bound to the thread that built it (shard 0's io_uring ring
/// belongs to that thread), so it is neither `Send` nor `Sync`:
///
/// ```compile_fail
/// let rt = ringshard::Runtime::new().unwrap();
/// std::thread::spawn(move || rt.block_on(async {}));
/// ```
pub struct Runtime {
    shared: Arc<RuntimeShared>,
    core: Core,
    workers: Vec<Worker>,
    done: mpsc::Receiver<usize>,
    kind: DriverKind,
    /// Optional driver features the kernel refused (logged once at build).
    features_off: Vec<&'static str>,
    cpu0: Option<usize>,
    shut_down: bool,
    _not_send: PhantomData<*const ()>,
}

impl Runtime {
    /// A runtime with one shard per CPU the process may run on and the
    /// default settings of [`Builder`].
    pub fn new() -> io::Result<Runtime> {
        Builder::new().build()
    }

    /// A [`Builder`] to configure a runtime.
    pub fn builder() -> Builder {
        Builder::new()
    }

    fn from_parts(
        shared: Arc<RuntimeShared>,
        core: Core,
        workers: Vec<Worker>,
        done: mpsc::Receiver<usize>,
        kind: DriverKind,
        cpu0: Option<usize>,
    ) -> Runtime {
        Runtime {
            shared,
            core,
            workers,
            done,
            kind,
            features_off: Vec::new(),
            cpu0,
            shut_down: false,
            _not_send: PhantomData,
        }
    }

    /// Runs `future` to completion on the calling thread, which acts as
    /// shard 0 meanwhile (pinned to shard 0's CPU when `pin_threads` is on;
    /// its previous affinity is restored on return). Tasks spawned on shard 0
    /// run only while some `block_on` runs.
    ///
    /// # Panics
    ///
    /// When called from inside a shard (use `.await` there), and when
    /// `future` panics.
    ///
    /// ```
    /// let rt = ringshard::Runtime::builder().worker_threads(1).build()?;
    /// assert_eq!(rt.block_on(async { 42 }), 42);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[track_caller]
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        assert!(
            !context::in_shard(),
            "Runtime::block_on called from inside a ringshard shard; await the future instead"
        );
        let _affinity = self.cpu0.map(AffinityGuard::pin);
        let _enter = context::enter(&self.core);
        self.core.block_on(future)
    }

    /// Runs one root future per shard, `make(shard)` built on that shard
    /// (shard 0 on the calling thread), and returns the outputs in shard
    /// order: the way to write a per-core server.
    ///
    /// # Panics
    ///
    /// A panic in any shard's future is resumed on the calling thread.
    ///
    /// ```
    /// use ringshard::{Runtime, ShardId};
    /// let rt = Runtime::builder().worker_threads(2).pin_threads(false).build()?;
    /// let outs: Vec<u16> = rt.block_on_all(|shard: ShardId| async move { shard.index() as u16 });
    /// assert_eq!(outs, vec![0, 1]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn block_on_all<F, Fut>(&self, make: F) -> Vec<Fut::Output>
    where
        F: Fn(ShardId) -> Fut + Send + Sync + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        let make = Arc::new(make);
        let shards = self.shards();
        self.block_on(async move {
            let others: Vec<_> = (1..shards)
                .map(|index| {
                    let make = make.clone();
                    spawn_on(ShardId::new(index), move || make(ShardId::new(index)))
                })
                .collect();
            let mut outputs = Vec::with_capacity(shards);
            outputs.push(make(ShardId::new(0)).await);
            for (index, handle) in others.into_iter().enumerate() {
                match handle.await {
                    Ok(output) => outputs.push(output),
                    Err(error) => match error.try_into_panic() {
                        Ok(panic) => resume_unwind(panic),
                        Err(_) => panic!(
                            "block_on_all: the future of shard {} was cancelled",
                            index + 1
                        ),
                    },
                }
            }
            outputs
        })
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shared.shards.len()
    }

    /// The driver the shards actually run.
    pub fn driver_kind(&self) -> DriverKind {
        self.kind
    }

    /// A snapshot of every shard's counters.
    pub fn stats(&self) -> RuntimeStats {
        RuntimeStats::new(
            self.shared
                .shards
                .iter()
                .map(|s| s.stats.snapshot())
                .collect(),
        )
    }

    /// Shuts down gracefully: every shard cancels (drops) its tasks, cancels
    /// and drains in-flight I/O, closes its driver. Every live task is
    /// reached, however it waits: each shard keeps a registry of its tasks
    /// (and the runtime one of stealable tasks), and shutdown wakes them all
    /// so their shard drops them. Their `JoinHandle`s then report
    /// [`is_cancelled`](crate::JoinError::is_cancelled). Returns once all shards
    /// are done or `timeout` has passed, whichever comes first; a shard stuck
    /// in a task that never yields is left running detached. Dropping the
    /// runtime does the same with a 5 s timeout.
    ///
    /// ```
    /// use std::time::Duration;
    /// let rt = ringshard::Runtime::builder().worker_threads(1).build()?;
    /// rt.block_on(async { ringshard::spawn(std::future::pending::<()>()); });
    /// rt.shutdown_timeout(Duration::from_secs(1));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn shutdown_timeout(mut self, timeout: Duration) {
        self.shutdown(timeout);
    }

    fn shutdown(&mut self, timeout: Duration) {
        if self.shut_down {
            return;
        }
        self.shut_down = true;
        // `Duration::MAX` means no deadline: a far one.
        let now = Instant::now();
        let deadline = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30));
        let _ = self.shared.deadline.set(deadline);
        for shard in &self.shared.shards[1..] {
            shard.request_shutdown();
        }
        {
            let _enter = context::enter(&self.core);
            self.core.shutdown(deadline);
        }
        let mut running = self.workers.iter().filter(|w| w.thread.is_some()).count();
        while running > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(index) = self.done.recv_timeout(left) else {
                break;
            };
            if let Some(thread) = self.workers[index - 1].thread.take() {
                let _ = thread.join();
            }
            running -= 1;
        }
        // Shards still running past the deadline are detached.
        self.workers.clear();
        // Blocking closures are not waited for (see `spawn_blocking`).
        self.shared.shutdown_blocking();
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.shutdown(DROP_TIMEOUT);
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("shards", &self.shards())
            .field("driver", &self.kind)
            .field("features_off", &self.features_off)
            .finish()
    }
}
