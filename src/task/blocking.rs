//! [`spawn_blocking`]: a thread pool for work that would stall a shard.
//!
//! One pool per runtime, made on the first call; at most
//! `Builder::max_blocking_threads` threads (default 512), each exiting after
//! 10 s without work. Pool threads run on every CPU the process had when the
//! runtime was built, never pinned to a shard's core, and never on a shard
//! thread.
//!
//! The closure's result comes back through a oneshot to a small task on the
//! calling shard, whose [`JoinHandle`] is the caller's: it is `Send`, so any
//! shard may await it, and a panic in the closure is resumed in that task,
//! which makes it the handle's `JoinError`.

use std::collections::VecDeque;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::JoinHandle;
use crate::channel::oneshot;
use crate::context;

/// The default of `Builder::max_blocking_threads`.
pub(crate) const DEFAULT_MAX_THREADS: usize = 512;

/// How long an idle pool thread waits for work before it exits.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send>;

/// Runs `f` on the runtime's blocking pool and resolves to its result.
///
/// Use it for calls that block (std file I/O, DNS, a synchronous library)
/// or burn CPU long enough to stall the shard's other tasks.
///
/// # Cancel safety
///
/// Aborting the handle (or dropping it after an abort) before the closure
/// started skips it; one that started runs to its end on its pool thread
/// and its result is dropped. Merely dropping the handle detaches: the
/// closure still runs. At runtime shutdown the handle resolves as
/// cancelled at once; closures still running finish on their threads,
/// which exit afterwards (shutdown does not wait for them), and queued ones
/// are skipped.
///
/// The closure runs outside any shard: `spawn` and `spawn_blocking` called
/// from inside it panic (tokio's blocking threads enter their runtime).
///
/// # Panics
///
/// When called outside a ringshard runtime.
///
/// ```
/// # let rt = ringshard::Runtime::builder().worker_threads(1).build()?;
/// let sum = rt.block_on(async {
///     ringshard::spawn_blocking(|| (1..=100u64).sum::<u64>()).await
/// });
/// assert_eq!(sum.unwrap(), 5050);
/// # Ok::<(), std::io::Error>(())
/// ```
#[track_caller]
pub fn spawn_blocking<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let pool = context::with_current(|core| core.runtime.blocking_pool())
        .expect("ringshard::spawn_blocking called outside a ringshard runtime");
    let result = submit(&pool, f);
    super::spawn(async move {
        match result.await {
            Ok(Ok(value)) => value,
            Ok(Err(panic)) => resume_unwind(panic),
            Err(_) => panic!("ringshard::spawn_blocking: no pool thread could be started"),
        }
    })
}

/// Queues `f` on `pool`; its outcome (a panic caught) comes on the
/// receiver. A job whose receiver is gone before a thread takes it is
/// skipped, as tokio skips an aborted blocking task.
fn submit<F, T>(pool: &Arc<Pool>, f: F) -> oneshot::Receiver<std::thread::Result<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    pool.submit(Box::new(move || {
        if tx.is_closed() {
            return;
        }
        let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
    }));
    rx
}

/// Runs `f` on the current runtime's blocking pool and resolves to its
/// result, without a task of its own (what `fs` uses); an error only if the
/// pool could not start a single thread (the OS refused to create one). A
/// panic in `f` is resumed in the caller. Dropping the future before a pool
/// thread took `f` skips it; after, `f` runs to its end.
///
/// # Panics
///
/// Outside a ringshard runtime.
pub(crate) async fn run<F, T>(f: F) -> std::io::Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let pool = context::with_current(|core| core.runtime.blocking_pool())
        .expect("ringshard: blocking work (fs, spawn_blocking) needs a ringshard runtime");
    match submit(&pool, f).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(panic)) => resume_unwind(panic),
        Err(_) => Err(std::io::Error::other(
            "ringshard: no blocking pool thread could be started",
        )),
    }
}

/// The pool of one runtime.
pub(crate) struct Pool {
    state: Mutex<State>,
    work: Condvar,
    max_threads: usize,
    /// The CPUs pool threads may run on.
    cpus: Vec<usize>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    threads: usize,
    /// Threads waiting for work and not yet claimed by a `submit`.
    idle: usize,
    /// Wakes sent to idle threads not yet taken (each claims one thread).
    notified: usize,
    /// The runtime shut down: idle threads exit.
    shutdown: bool,
}

impl Pool {
    pub(crate) fn new(max_threads: usize, cpus: Vec<usize>) -> Pool {
        Pool {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            max_threads,
            cpus,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `job` and makes sure a thread will take it.
    fn submit(self: &Arc<Pool>, job: Job) {
        let mut state = self.lock();
        state.queue.push_back(job);
        if state.idle > 0 {
            state.idle -= 1;
            state.notified += 1;
            self.work.notify_one();
            return;
        }
        if state.threads >= self.max_threads {
            // A busy thread takes it when it is done with its job.
            return;
        }
        state.threads += 1;
        drop(state);
        let pool = self.clone();
        let spawned = std::thread::Builder::new()
            .name("ringshard-blocking".into())
            .spawn(move || pool.run());
        if spawned.is_err() {
            let mut state = self.lock();
            state.threads -= 1;
            if state.threads == 0 {
                // Nobody will ever run them: drop them (outside the lock, as
                // they are the caller's), so their handles say so instead
                // of waiting for ever.
                let orphans = std::mem::take(&mut state.queue);
                drop(state);
                drop(orphans);
            }
        }
    }

    /// A pool thread: runs jobs until it has waited `KEEP_ALIVE` for one.
    fn run(&self) {
        // Never stay pinned to the core of the shard that spawned us.
        let _ = crate::sys::set_current_affinity(&self.cpus);
        let mut state = self.lock();
        loop {
            if let Some(job) = state.queue.pop_front() {
                drop(state);
                // A panic here (a result's `Drop`, the closure's own is
                // caught) must not take the thread's count with it.
                let _ = catch_unwind(AssertUnwindSafe(job));
                state = self.lock();
                continue;
            }
            if state.shutdown {
                break;
            }
            state.idle += 1;
            let claimed = loop {
                let (guard, waited) = self
                    .work
                    .wait_timeout(state, KEEP_ALIVE)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                state = guard;
                if state.notified > 0 {
                    state.notified -= 1;
                    break true;
                }
                if waited.timed_out() || state.shutdown {
                    state.idle -= 1;
                    break false;
                }
                // Spurious: wait again.
            };
            if !claimed && state.queue.is_empty() {
                break;
            }
        }
        state.threads -= 1;
    }

    /// The runtime is shutting down: idle threads exit now, busy ones after
    /// their job (and the queue).
    pub(crate) fn shutdown(&self) {
        let mut state = self.lock();
        state.shutdown = true;
        self.work.notify_all();
    }
}
