//! A channel for one value: [`channel`].
//!
//! ```
//! let rt = ringshard::Runtime::builder().worker_threads(2).pin_threads(false).build()?;
//! let got = rt.block_on(async {
//!     let (tx, rx) = ringshard::channel::oneshot::channel();
//!     std::thread::spawn(move || tx.send(7).unwrap());
//!     rx.await
//! });
//! assert_eq!(got, Ok(7));
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::sys::atomic::{AtomicU8, AtomicWaker, Ordering, SharedCell};

/// A sender and a receiver for one value.
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let inner = Arc::new(Inner {
        state: AtomicU8::new(0),
        value: SharedCell::new(None),
        rx_waker: AtomicWaker::new(),
        tx_waker: AtomicWaker::new(),
    });
    (
        Sender {
            inner: Some(inner.clone()),
        },
        Receiver {
            inner,
            done: false,
            refused: false,
        },
    )
}

// State bits. Each is set once, never cleared.
/// The sender wrote `value`; from then on only the receiver touches it.
const VALUE: u8 = 1;
/// The sender was dropped without sending.
const TX_GONE: u8 = 2;
/// The receiver was dropped or closed; a sender that sets `VALUE` after
/// this takes its value back.
const RX_GONE: u8 = 4;

struct Inner<T> {
    state: AtomicU8,
    /// Written by the sender before it sets `VALUE`, read by the receiver
    /// after it sees `VALUE`, or by the sender again if `RX_GONE` was set
    /// before its `VALUE`.
    value: SharedCell<Option<T>>,
    rx_waker: AtomicWaker,
    /// The sender waiting in [`Sender::closed`], woken when the receiver
    /// closes or goes.
    tx_waker: AtomicWaker,
}

// SAFETY: `value` is touched by one side at a time, as the state bits say
// (see `Inner::value`), with Release/Acquire on `state` between them; so
// sharing `Inner` needs only `T: Send`.
unsafe impl<T: Send> Sync for Inner<T> {}

/// Sends the one value. `Send`; dropping it unsent makes the receiver
/// return [`RecvError`].
pub struct Sender<T> {
    inner: Option<Arc<Inner<T>>>,
}

impl<T> Sender<T> {
    /// Sends `value`; gives it back if the receiver is gone.
    pub fn send(mut self, value: T) -> Result<(), T> {
        let inner = self.inner.take().expect("the sender is consumed by send");
        // SAFETY: `VALUE` is not set (only this consuming call sets it), so
        // the receiver does not touch `value`.
        unsafe { inner.value.with_mut(|slot| *slot = Some(value)) };
        let state = inner.state.fetch_or(VALUE, Ordering::AcqRel);
        if state & RX_GONE != 0 {
            // SAFETY: the receiver left before our `VALUE`, so it will never
            // read `value`; the Acquire above orders us after its exit.
            let value = unsafe { inner.value.with_mut(|slot| (*slot).take()) };
            return Err(value.expect("the value was just written"));
        }
        inner.rx_waker.wake();
        Ok(())
    }

    /// Whether the receiver is gone (a send would fail).
    pub fn is_closed(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|inner| inner.state.load(Ordering::Acquire) & RX_GONE != 0)
    }

    /// Waits until the receiver closes or is dropped (tokio's
    /// `Sender::closed`): a sender can stop working on a value nobody
    /// will take.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn closed(&mut self) {
        std::future::poll_fn(|cx| self.poll_closed(cx)).await
    }

    /// Polls for the receiver's close; `Ready` once it closed or went.
    pub fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(inner) = self.inner.as_ref() else {
            return Poll::Ready(());
        };
        if inner.state.load(Ordering::Acquire) & RX_GONE != 0 {
            return Poll::Ready(());
        }
        inner.tx_waker.register(cx.waker());
        // The receiver may have gone before it could see our waker.
        if inner.state.load(Ordering::Acquire) & RX_GONE != 0 {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            inner.state.fetch_or(TX_GONE, Ordering::AcqRel);
            inner.rx_waker.wake();
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("oneshot::Sender")
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Receives the one value: await it. `Send`.
///
/// # Cancel safety
///
/// Dropping it drops a value already sent; the sender of a value not yet
/// sent gets it back from `send`.
pub struct Receiver<T> {
    inner: Arc<Inner<T>>,
    /// The value (or the error) was returned.
    done: bool,
    /// We set `RX_GONE` before the sender set `VALUE`: the value, if it
    /// comes, is the sender's.
    refused: bool,
}

impl<T> Receiver<T> {
    /// The value, if it was sent.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        if self.done {
            return Err(TryRecvError::Closed);
        }
        let state = self.inner.state.load(Ordering::Acquire);
        if state & VALUE != 0 && !self.refused {
            self.done = true;
            // SAFETY: `VALUE` is set (Acquire), so the sender is done with
            // `value`, and it was set before any `RX_GONE` of ours, so the
            // sender will not take it back.
            let value = unsafe { self.inner.value.with_mut(|slot| (*slot).take()) };
            return value.ok_or(TryRecvError::Closed);
        }
        if state & (TX_GONE | RX_GONE) != 0 {
            return Err(TryRecvError::Closed);
        }
        Err(TryRecvError::Empty)
    }

    /// Refuses the value: the sender's `send` fails from now on. A value
    /// sent before this can still be taken with `try_recv`.
    pub fn close(&mut self) {
        let state = self.inner.state.fetch_or(RX_GONE, Ordering::AcqRel);
        self.inner.tx_waker.wake();
        if state & (VALUE | RX_GONE) == 0 {
            self.refused = true;
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match this.try_recv() {
            Ok(value) => return Poll::Ready(Ok(value)),
            Err(TryRecvError::Closed) => return Poll::Ready(Err(RecvError(()))),
            Err(TryRecvError::Empty) => {}
        }
        this.inner.rx_waker.register(cx.waker());
        // The sender may have finished before it could see our waker.
        match this.try_recv() {
            Ok(value) => Poll::Ready(Ok(value)),
            Err(TryRecvError::Closed) => Poll::Ready(Err(RecvError(()))),
            Err(TryRecvError::Empty) => Poll::Pending,
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let state = self.inner.state.fetch_or(RX_GONE, Ordering::AcqRel);
        self.inner.tx_waker.wake();
        if state & VALUE != 0 && !self.refused {
            // SAFETY: the value was sent before any refusal: it is ours, and
            // the sender is done with it.
            // Dropped here rather than with the last `Arc`, which may be on
            // the sender's thread.
            drop(unsafe { self.inner.value.with_mut(|slot| (*slot).take()) });
        }
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("oneshot::Receiver")
            .field("done", &self.done)
            .finish()
    }
}

/// The sender was dropped without sending (or the value was refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvError(());

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("oneshot sender dropped without sending")
    }
}

impl std::error::Error for RecvError {}

/// Why [`Receiver::try_recv`] gave no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// Not sent yet.
    Empty,
    /// The sender is gone without sending, or the value was already taken.
    Closed,
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryRecvError::Empty => f.write_str("oneshot value not sent yet"),
            TryRecvError::Closed => f.write_str("oneshot channel closed"),
        }
    }
}

impl std::error::Error for TryRecvError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_sent_is_received() {
        let (tx, mut rx) = channel();
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        tx.send(5).unwrap();
        assert_eq!(rx.try_recv(), Ok(5));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    }

    #[test]
    fn dropped_sender_closes() {
        let (tx, mut rx) = channel::<u8>();
        drop(tx);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    }

    #[test]
    fn send_to_dropped_receiver_returns_the_value() {
        let (tx, rx) = channel();
        drop(rx);
        assert!(tx.is_closed());
        assert_eq!(tx.send(String::from("back")), Err(String::from("back")));
    }

    #[test]
    fn close_after_send_keeps_the_value() {
        let (tx, mut rx) = channel();
        tx.send(3).unwrap();
        rx.close();
        assert_eq!(rx.try_recv(), Ok(3));
    }

    #[test]
    fn close_before_send_refuses_it() {
        let (tx, mut rx) = channel();
        rx.close();
        assert_eq!(tx.send(3), Err(3));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    }

    #[test]
    fn value_left_unreceived_is_dropped_once() {
        let token = Arc::new(());
        let (tx, rx) = channel();
        tx.send(token.clone()).unwrap();
        drop(rx);
        assert_eq!(Arc::strong_count(&token), 1);
    }

    #[test]
    fn send_and_drop_race_neither_leaks_nor_double_drops() {
        let token = Arc::new(());
        for _ in 0..2_000 {
            let (tx, rx) = channel();
            let value = token.clone();
            let sender = std::thread::spawn(move || {
                let _ = tx.send(value);
            });
            drop(rx);
            sender.join().unwrap();
        }
        assert_eq!(Arc::strong_count(&token), 1);
    }
}
