//! Tasks: [`spawn`], [`spawn_on`], [`yield_now`], [`JoinHandle`].
//!
//! A task is one `async-task` allocation holding the future, its output and a
//! small header whose metadata names the owning shard. Waking a task calls
//! `shard::schedule`: on the owner's thread the task goes to the
//! local (non-atomic) run queue, from anywhere else to the owner's inbox. That
//! routing is what makes `!Send` futures sound: they are only ever polled and
//! dropped on the thread of the shard that owns them.

pub(crate) mod blocking;
mod join;
mod join_set;

pub use blocking::spawn_blocking;
pub use join::{JoinError, JoinHandle};
pub use join_set::JoinSet;

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::context;
use crate::shard::{self, Registration, Shared};

/// What a task's header carries: the shard that owns (polls and drops) it,
/// whether it is stealable, and the abort request its `JoinHandle` may
/// set. One word, as every task carries it: the owner's `Arc` pointer with
/// the two flags in its low bits (a `Shared` is aligned to more than 4).
/// With a separate flag beside the `Arc` it took 16 bytes, and the task's
/// allocation 80 instead of 72.
pub(crate) struct TaskMeta {
    word: AtomicUsize,
}

/// `TaskMeta`: the `JoinHandle` asked for an abort.
const ABORTED: usize = 1;
/// `TaskMeta`: spawned with `spawn_stealable`: `Send`, may run on any shard
/// of the owner's runtime.
const STEALABLE: usize = 2;
const FLAGS: usize = ABORTED | STEALABLE;

impl TaskMeta {
    fn new(owner: Arc<Shared>, stealable: bool) -> TaskMeta {
        const _: () = assert!(std::mem::align_of::<Shared>() > FLAGS);
        let ptr = Arc::into_raw(owner) as usize;
        TaskMeta {
            word: AtomicUsize::new(ptr | if stealable { STEALABLE } else { 0 }),
        }
    }

    /// The shard that owns the task.
    pub(crate) fn owner(&self) -> Owner<'_> {
        let ptr = (self.word.load(Ordering::Relaxed) & !FLAGS) as *const Shared;
        // SAFETY: `ptr` came from `Arc::into_raw` in `new`, and the count
        // it holds is given back only in `drop`, after every `Owner`
        // borrowed from `self` is gone; `ManuallyDrop` keeps this copy
        // from giving it back.
        Owner(
            ManuallyDrop::new(unsafe { Arc::from_raw(ptr) }),
            PhantomData,
        )
    }

    pub(crate) fn stealable(&self) -> bool {
        self.word.load(Ordering::Relaxed) & STEALABLE != 0
    }

    pub(crate) fn aborted(&self) -> bool {
        self.word.load(Ordering::Acquire) & ABORTED != 0
    }

    pub(crate) fn abort(&self) {
        self.word.fetch_or(ABORTED, Ordering::Release);
    }
}

impl Drop for TaskMeta {
    fn drop(&mut self) {
        let ptr = (*self.word.get_mut() & !FLAGS) as *const Shared;
        // SAFETY: the count taken in `new`, given back once.
        drop(unsafe { Arc::from_raw(ptr) });
    }
}

/// The owner of a task, borrowed from its [`TaskMeta`]: an `Arc` to use
/// (and clone) without owning the count.
pub(crate) struct Owner<'a>(ManuallyDrop<Arc<Shared>>, PhantomData<&'a TaskMeta>);

impl std::ops::Deref for Owner<'_> {
    type Target = Arc<Shared>;
    fn deref(&self) -> &Arc<Shared> {
        &self.0
    }
}

pub(crate) type Runnable = async_task::Runnable<TaskMeta>;

/// The payload of a panic caught in a task.
type Panic = Box<dyn std::any::Any + Send + 'static>;

/// Identifies a shard: `0..runtime.shards()`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(usize);

impl ShardId {
    /// The shard with index `index`.
    ///
    /// ```
    /// assert_eq!(ringshard::ShardId::new(3).index(), 3);
    /// ```
    pub const fn new(index: usize) -> ShardId {
        ShardId(index)
    }

    /// The shard's index, `0..runtime.shards()`.
    pub const fn index(self) -> usize {
        self.0
    }
}

impl fmt::Debug for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShardId({})", self.0)
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard {}", self.0)
    }
}

/// Spawns `future` on the current shard. The future may be `!Send`: it never
/// leaves this shard.
///
/// Dropping the returned [`JoinHandle`] detaches the task; it keeps running.
/// A panic inside the task is caught and returned as a [`JoinError`].
///
/// # Panics
///
/// When called outside a ringshard runtime.
///
/// ```
/// let rt = ringshard::Runtime::builder().worker_threads(1).build()?;
/// let out = rt.block_on(async {
///     let shared = std::rc::Rc::new(20); // !Send is fine
///     ringshard::spawn(async move { *shared + 22 }).await
/// });
/// assert_eq!(out.unwrap(), 42);
/// # Ok::<(), std::io::Error>(())
/// ```
#[track_caller]
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    context::with_current(|core| {
        let (runnable, handle) = create(core.shared.clone(), future, false);
        core.spawn_local(runnable);
        handle
    })
    .expect("ringshard::spawn called outside a ringshard runtime")
}

/// Spawns a `Send` future that idle shards may steal and run when the
/// runtime was built with [`work_stealing(true)`]; without it, the same as
/// [`spawn`]. For CPU-bound work: I/O objects are bound to their shard and
/// are not `Send`, so they cannot be in a stealable task.
///
/// [`work_stealing(true)`]: crate::Builder::work_stealing
///
/// # Panics
///
/// When called outside a ringshard runtime.
///
/// ```
/// let rt = ringshard::Runtime::builder()
///     .worker_threads(2)
///     .pin_threads(false)
///     .work_stealing(true)
///     .build()?;
/// let sum: u64 = rt.block_on(async {
///     let tasks: Vec<_> = (0..100u64)
///         .map(|i| ringshard::spawn_stealable(async move { (0..1000).map(|x| x * i).sum::<u64>() }))
///         .collect();
///     let mut sum = 0;
///     for task in tasks {
///         sum += task.await.unwrap();
///     }
///     sum
/// });
/// assert_eq!(sum, 499_500 * 4950);
/// # Ok::<(), std::io::Error>(())
/// ```
#[track_caller]
pub fn spawn_stealable<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    context::with_current(|core| {
        let (runnable, handle) = create(core.shared.clone(), future, true);
        core.spawn_stealable(runnable);
        handle
    })
    .expect("ringshard::spawn_stealable called outside a ringshard runtime")
}

/// Builds a future with `make` on shard `shard` and runs it there (seastar's
/// `submit_to`). The closure must be `Send`; the future it returns may be
/// `!Send`; its output comes back through the `Send` [`JoinHandle`].
///
/// A shard that has stopped (its loop panicked, or the runtime is shutting
/// down) runs nothing more: the handle then gives a cancelled [`JoinError`].
///
/// # Panics
///
/// When called outside a ringshard runtime, or when `shard` is not a shard of
/// the current runtime.
///
/// ```
/// use ringshard::{Runtime, ShardId};
/// let rt = Runtime::builder().worker_threads(2).pin_threads(false).build()?;
/// let on = rt.block_on(async {
///     ringshard::spawn_on(ShardId::new(1), || async { ringshard::current_shard() }).await
/// });
/// assert_eq!(on.unwrap(), ShardId::new(1));
/// # Ok::<(), std::io::Error>(())
/// ```
#[track_caller]
pub fn spawn_on<F, Fut>(shard: ShardId, make: F) -> JoinHandle<Fut::Output>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    context::with_current(|core| {
        let Some(target) = core.runtime.shards.get(shard.index()) else {
            panic!(
                "ringshard::spawn_on: {shard} does not exist (the runtime has {} shards)",
                core.runtime.shards.len()
            );
        };
        if Arc::ptr_eq(target, &core.shared) {
            return spawn(make());
        }
        // The future is built on the target by the task's first poll, so
        // nothing `!Send` ever exists on this thread.
        let lazy = async move {
            context::with_current(|core| core.count_spawn());
            make().await
        };
        let (runnable, handle) = create(target.clone(), lazy, false);
        target.push_new(runnable);
        handle
    })
    .expect("ringshard::spawn_on called outside a ringshard runtime")
}

/// Runs `future` as a detached task of the shard `uid`, if it still runs;
/// otherwise (or if it closes first) the future is dropped unpolled here.
pub(crate) fn spawn_detached_on<F>(uid: u64, future: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    if let Some(target) = crate::shard::shared_of(uid) {
        let (runnable, handle) = create(target.clone(), future, false);
        target.push_new(runnable);
        drop(handle);
    }
}

/// Makes a task owned by `owner`. A `stealable` one must be `Send` with a
/// `Send` output (`spawn_stealable`'s bounds).
fn create<F>(owner: Arc<Shared>, future: F, stealable: bool) -> (Runnable, JoinHandle<F::Output>)
where
    F: Future + 'static,
    F::Output: 'static,
{
    let meta = TaskMeta::new(owner, stealable);
    let builder = async_task::Builder::new().metadata(meta);
    // SAFETY: `spawn_unchecked` needs, for a future that is not `Send`, that
    // it is polled and dropped only on one thread: `shard::schedule` routes
    // every wake of a shard-bound task to the owner's own queue, runnables
    // are only run or dropped by the owner's thread, and a shard that has
    // exited leaks (never drops) what still reaches it. Only stealable tasks,
    // whose future and output are `Send`, move between threads. The future and output are `'static`; the
    // metadata pointer the wrapper keeps lives in the same allocation as the
    // wrapper and outlives it.
    let (runnable, task) = unsafe {
        builder.spawn_unchecked(
            move |meta: &TaskMeta| CatchUnwind {
                future: ManuallyDrop::new(future),
                meta,
                registration: Registration::pending(),
            },
            shard::schedule,
        )
    };
    let waker = runnable.waker();
    (runnable, JoinHandle::new(task, waker))
}

/// Runs a task's future with panics caught, also dropping it inside the
/// catch (async-task aborts the process if a future's `Drop` panics in its
/// hands). Checks the abort flag before every poll.
///
/// Every task carries one, so it is kept small: whether the future is
/// still there is the spare bit of `registration`, not an `Option` (which
/// costs a word for most futures).
struct CatchUnwind<F> {
    /// Dropped in place when it completes, panics or is aborted, once the
    /// spare bit of `registration` says it is gone.
    future: ManuallyDrop<F>,
    /// This task's metadata, in the same allocation.
    meta: *const TaskMeta,
    /// The task's entry in its shard's registry of live tasks, made at the
    /// first poll and left when the future goes; its spare bit: the future
    /// is gone.
    registration: Registration,
}

/// Why a task's wrapper finished without an output.
pub(crate) enum Failure {
    Panic(Panic),
    Aborted,
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Failure>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `future` is structurally pinned: it is never moved out of
        // its `ManuallyDrop`, only polled in place and dropped in place.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: the metadata outlives the wrapper (see `create`).
        let meta = unsafe { &*this.meta };
        if meta.aborted() {
            let _ = this.drop_future();
            return Poll::Ready(Err(Failure::Aborted));
        }
        if this.registration.spare() {
            // async-task never polls a task again once it is ready.
            debug_assert!(false, "task polled after completion");
            return Poll::Ready(Err(Failure::Aborted));
        }
        if this.registration.is_pending() {
            this.registration.register(cx.waker(), meta.stealable());
        }
        let future = &mut this.future;
        let polled = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: see above; the future is pinned with `self`, and
            // still there (the spare bit is clear).
            unsafe { Pin::new_unchecked(&mut **future) }.poll(cx)
        }));
        match polled {
            Ok(Poll::Ready(output)) => {
                // As soon as it is done: what it holds goes now, not when
                // the handle does. A `Drop` that panics fails the task.
                match this.drop_future() {
                    Ok(()) => Poll::Ready(Ok(output)),
                    Err(panic) => Poll::Ready(Err(Failure::Panic(panic))),
                }
            }
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => {
                let _ = this.drop_future();
                Poll::Ready(Err(Failure::Panic(panic)))
            }
        }
    }
}

impl<F> CatchUnwind<F> {
    /// Drops the future in place, once, and leaves the registry; a panic in
    /// its `Drop` is caught and returned.
    fn drop_future(&mut self) -> Result<(), Panic> {
        if self.registration.spare() {
            return Ok(());
        }
        // Marked first: a `Drop` that panics is not run again.
        self.registration.set_spare();
        let future = &mut self.future;
        // SAFETY: the future is there (the bit was clear) and is never
        // touched again (the bit is set); dropping in place keeps the pin.
        let dropped = catch_unwind(AssertUnwindSafe(|| unsafe { ManuallyDrop::drop(future) }));
        // SAFETY: the metadata outlives the wrapper (see `create`).
        let meta = unsafe { &*self.meta };
        self.registration.leave(&meta.owner(), meta.stealable());
        dropped
    }
}

impl<F> Drop for CatchUnwind<F> {
    fn drop(&mut self) {
        let _ = self.drop_future();
    }
}

/// Returns the shard the caller runs on.
///
/// # Panics
///
/// When called outside a ringshard runtime.
pub fn current_shard() -> ShardId {
    context::with_current(|core| core.id())
        .expect("ringshard::current_shard called outside a ringshard runtime")
}

/// Yields to the other tasks of the shard once: the task goes to the back of
/// the run queue.
///
/// ```
/// # let rt = ringshard::Runtime::builder().worker_threads(1).build()?;
/// rt.block_on(async { ringshard::yield_now().await });
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

/// The future of [`yield_now`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
