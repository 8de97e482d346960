//! [`JoinSet`]: a group of tasks whose results come out as they finish.

use std::future::Future as _;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use slab::Slab;

use super::{JoinError, JoinHandle, ShardId};

/// A set of tasks (tokio's `JoinSet`): [`join_next`](JoinSet::join_next)
/// gives each one's result in the order they finish. Dropping the set
/// aborts every task still in it.
///
/// Each task's handle gets its own waker, so a finished task is found
/// without polling the others: `join_next` costs the tasks that woke, not
/// the size of the set.
///
/// ```
/// use ringshard::task::JoinSet;
/// # let rt = ringshard::Runtime::builder().worker_threads(1).build()?;
/// rt.block_on(async {
///     let mut set = JoinSet::new();
///     for i in 0..10u64 {
///         set.spawn(async move { i * i });
///     }
///     let mut sum = 0;
///     while let Some(result) = set.join_next().await {
///         sum += result.unwrap();
///     }
///     assert_eq!(sum, 285);
/// });
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct JoinSet<T> {
    tasks: Slab<Entry<T>>,
    ready: Arc<ReadyList>,
}

struct Entry<T> {
    handle: JoinHandle<T>,
    waker: Waker,
}

/// The tasks that woke since the set last looked, and who to tell.
#[derive(Default)]
struct ReadyList {
    keys: Mutex<Vec<usize>>,
    parent: atomic_waker::AtomicWaker,
}

impl ReadyList {
    fn keys(&self) -> std::sync::MutexGuard<'_, Vec<usize>> {
        self.keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The waker one task's handle is polled with.
struct EntryWaker {
    key: usize,
    ready: Arc<ReadyList>,
}

impl Wake for EntryWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // A stale key (its task left, the slot taken again) only makes one
        // extra poll of whatever is there now.
        self.ready.keys().push(self.key);
        self.ready.parent.wake();
    }
}

impl<T: 'static> Default for JoinSet<T> {
    fn default() -> JoinSet<T> {
        JoinSet::new()
    }
}

impl<T: 'static> JoinSet<T> {
    /// An empty set.
    pub fn new() -> JoinSet<T> {
        JoinSet {
            tasks: Slab::new(),
            ready: Arc::default(),
        }
    }

    /// Tasks in the set (finished ones count until `join_next` returns them).
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether the set holds no task.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    fn insert(&mut self, handle: JoinHandle<T>) {
        let entry = self.tasks.vacant_entry();
        let key = entry.key();
        let waker = Waker::from(Arc::new(EntryWaker {
            key,
            ready: self.ready.clone(),
        }));
        entry.insert(Entry { handle, waker });
        // Polled once by the next `join_next`, which gives it our waker.
        self.ready.keys().push(key);
        self.ready.parent.wake();
    }

    /// Spawns `future` on the current shard (as [`spawn`](crate::spawn))
    /// into the set.
    ///
    /// # Panics
    ///
    /// When called outside a ringshard runtime.
    #[track_caller]
    pub fn spawn<F>(&mut self, future: F)
    where
        F: std::future::Future<Output = T> + 'static,
    {
        self.insert(crate::spawn(future));
    }

    /// Builds a future on `shard` and runs it there (as
    /// [`spawn_on`](crate::spawn_on)), into the set.
    ///
    /// # Panics
    ///
    /// As [`spawn_on`](crate::spawn_on).
    #[track_caller]
    pub fn spawn_on<F, Fut>(&mut self, shard: ShardId, make: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T> + 'static,
        T: Send,
    {
        self.insert(crate::spawn_on(shard, make));
    }

    /// Waits for the next task to finish and gives its result; `None` when
    /// the set is empty. A task aborted (or cancelled by shutdown) gives a
    /// cancelled [`JoinError`], one that panicked a panic one.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a result is taken from the set only when returned.
    pub async fn join_next(&mut self) -> Option<Result<T, JoinError>> {
        std::future::poll_fn(|cx| self.poll_join_next(cx)).await
    }

    /// The poll form of [`join_next`](JoinSet::join_next).
    pub fn poll_join_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, JoinError>>> {
        if self.tasks.is_empty() {
            return Poll::Ready(None);
        }
        // Before taking the list: a wake from now on wakes this task.
        self.ready.parent.register(cx.waker());
        let keys = std::mem::take(&mut *self.ready.keys());
        for (i, &key) in keys.iter().enumerate() {
            let Some(entry) = self.tasks.get_mut(key) else {
                continue;
            };
            let mut task_cx = Context::from_waker(&entry.waker);
            if let Poll::Ready(result) = std::pin::Pin::new(&mut entry.handle).poll(&mut task_cx) {
                self.tasks.remove(key);
                // The keys not looked at yet stay for the next call.
                self.ready.keys().extend_from_slice(&keys[i + 1..]);
                return Poll::Ready(Some(result));
            }
        }
        Poll::Pending
    }

    /// Aborts every task in the set; they stay in it until `join_next`
    /// returns their (cancelled) results.
    pub fn abort_all(&mut self) {
        for (_, entry) in self.tasks.iter() {
            entry.handle.abort();
        }
    }

    /// Aborts every task and waits until all have ended.
    pub async fn shutdown(&mut self) {
        self.abort_all();
        while self.join_next().await.is_some() {}
    }
}

impl<T> Drop for JoinSet<T> {
    /// Aborts every task still in the set.
    fn drop(&mut self) {
        for (_, entry) in self.tasks.iter() {
            entry.handle.abort();
        }
    }
}

impl<T> std::fmt::Debug for JoinSet<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinSet")
            .field("len", &self.tasks.len())
            .finish()
    }
}
