use std::any::Any;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use async_task::{FallibleTask, Task};

use super::{Failure, Panic, TaskMeta};

/// An owned permission to await a task's output, like tokio's.
///
/// Awaiting it gives `Ok(output)`, or a [`JoinError`] when the task panicked
/// or was cancelled (by [`abort`](JoinHandle::abort) or runtime shutdown).
/// Dropping it *detaches* the task, which keeps running.
///
/// ```
/// # let rt = ringshard::Runtime::builder().worker_threads(1).build()?;
/// rt.block_on(async {
///     let handle = ringshard::spawn(async { 7 });
///     assert_eq!(handle.await.unwrap(), 7);
///
///     let forever = ringshard::spawn(std::future::pending::<()>());
///     forever.abort();
///     assert!(forever.await.unwrap_err().is_cancelled());
/// });
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct JoinHandle<T> {
    /// `None` once the output was taken.
    task: Option<FallibleTask<Result<T, Failure>, TaskMeta>>,
    /// Wakes the task so it sees an abort request.
    waker: Waker,
    /// The task's metadata (for `abort`); its allocation lives while `task`
    /// does.
    aborted: *const TaskMeta,
}

// SAFETY: `aborted` points at an atomic inside the task allocation that
// `task` keeps alive; the other fields are `Send`/`Sync` when `T: Send`, as
// async-task's handles are.
unsafe impl<T: Send> Send for JoinHandle<T> {}
// SAFETY: as above; `&JoinHandle` only reads atomics and wakes.
unsafe impl<T: Send> Sync for JoinHandle<T> {}

impl<T> JoinHandle<T> {
    pub(super) fn new(task: Task<Result<T, Failure>, TaskMeta>, waker: Waker) -> JoinHandle<T> {
        let aborted: *const TaskMeta = task.metadata();
        JoinHandle {
            task: Some(task.fallible()),
            waker,
            aborted,
        }
    }

    /// Cancels the task: its future is dropped on its own shard at its next
    /// turn, and awaiting this handle then gives a cancelled [`JoinError`]
    /// (after the drop). A task that already finished keeps its output.
    pub fn abort(&self) {
        if let Some(task) = &self.task {
            if !task.is_finished() {
                // SAFETY: `task` is alive, so is the allocation `aborted` is in.
                unsafe { &*self.aborted }.abort();
                self.waker.wake_by_ref();
            }
        }
    }

    /// Whether the task has finished (completed, panicked or was cancelled).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|task| task.is_finished())
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(task) = this.task.as_mut() else {
            panic!("JoinHandle polled after it returned the task's result");
        };
        let output = match Pin::new(task).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(value))) => Ok(value),
            Poll::Ready(Some(Err(Failure::Panic(panic)))) => Err(JoinError(Repr::Panic(panic))),
            Poll::Ready(Some(Err(Failure::Aborted)) | None) => Err(JoinError::cancelled()),
        };
        this.task = None;
        Poll::Ready(output)
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.detach();
        }
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Why a task did not produce its output.
pub struct JoinError(Repr);

enum Repr {
    Cancelled,
    Panic(Panic),
}

impl JoinError {
    fn cancelled() -> JoinError {
        JoinError(Repr::Cancelled)
    }

    /// The task was cancelled ([`JoinHandle::abort`] or runtime shutdown).
    pub fn is_cancelled(&self) -> bool {
        matches!(self.0, Repr::Cancelled)
    }

    /// The task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.0, Repr::Panic(_))
    }

    /// The panic's payload, for `std::panic::resume_unwind`.
    ///
    /// # Panics
    ///
    /// If the task was cancelled rather than panicked; see
    /// [`try_into_panic`](JoinError::try_into_panic).
    #[track_caller]
    pub fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        self.try_into_panic()
            .expect("JoinError::into_panic called on a cancelled task's error")
    }

    /// The panic's payload, or the error back if the task was cancelled.
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send + 'static>, JoinError> {
        match self.0 {
            Repr::Panic(panic) => Ok(panic),
            Repr::Cancelled => Err(self),
        }
    }
}

fn panic_message(panic: &Panic) -> Option<&str> {
    panic
        .downcast_ref::<&'static str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Cancelled => f.write_str("task was cancelled"),
            Repr::Panic(panic) => match panic_message(panic) {
                Some(message) => write!(f, "task panicked with message {message:?}"),
                None => f.write_str("task panicked"),
            },
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Cancelled => f.write_str("JoinError::Cancelled"),
            Repr::Panic(panic) => write!(f, "JoinError::Panic({:?})", panic_message(panic)),
        }
    }
}

impl std::error::Error for JoinError {}

impl From<JoinError> for io::Error {
    fn from(error: JoinError) -> io::Error {
        io::Error::other(error.to_string())
    }
}
