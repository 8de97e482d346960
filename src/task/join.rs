use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_task::FallibleTask;

use super::{Panic, TaskMeta};

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
    /// `None` once aborted. A `Cell` so `abort` can take `&self`.
    task: Cell<Option<FallibleTask<Result<T, Panic>, TaskMeta>>>,
}

impl<T> JoinHandle<T> {
    pub(super) fn new(task: FallibleTask<Result<T, Panic>, TaskMeta>) -> JoinHandle<T> {
        JoinHandle {
            task: Cell::new(Some(task)),
        }
    }

    /// Cancels the task: its future is dropped (on its own shard) at the
    /// next opportunity, and awaiting this handle gives a cancelled
    /// [`JoinError`]. A task that already finished keeps its output.
    pub fn abort(&self) {
        if let Some(task) = self.task.take() {
            if task.is_finished() {
                self.task.set(Some(task));
            }
            // Dropping a `FallibleTask` cancels the task.
        }
    }

    /// Whether the task has finished (completed, panicked or was aborted).
    pub fn is_finished(&self) -> bool {
        match self.task.take() {
            Some(task) => {
                let finished = task.is_finished();
                self.task.set(Some(task));
                finished
            }
            None => true,
        }
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let slot = self.get_mut().task.get_mut();
        let Some(task) = slot.as_mut() else {
            return Poll::Ready(Err(JoinError::cancelled()));
        };
        let output = match Pin::new(task).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(value))) => Ok(value),
            Poll::Ready(Some(Err(panic))) => Err(JoinError(Repr::Panic(panic))),
            Poll::Ready(None) => Err(JoinError::cancelled()),
        };
        *slot = None;
        Poll::Ready(output)
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().take() {
            task.detach();
        }
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle").field("finished", &self.is_finished()).finish()
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
