//! Multi-producer, single-consumer channels: [`bounded`] and [`unbounded`].
//!
//! Senders are `Clone + Send` and work from any shard or plain thread; the
//! receiver may be moved to any shard and is woken there, without that
//! shard spinning. Values arrive in the order each sender sent them.
//!
//! ```
//! let rt = ringshard::Runtime::builder().worker_threads(2).pin_threads(false).build()?;
//! let sum = rt.block_on(async {
//!     let (tx, mut rx) = ringshard::bounded::<u64>(64);
//!     ringshard::spawn_on(ringshard::ShardId::new(1), move || async move {
//!         for i in 1..=100 {
//!             tx.send(i).await.unwrap();
//!         }
//!     });
//!     let mut sum = 0;
//!     while let Some(v) = rx.recv().await {
//!         sum += v;
//!     }
//!     sum
//! });
//! assert_eq!(sum, 5050);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use crossbeam_queue::SegQueue;
use crossbeam_utils::CachePadded;

use super::ring::{Refusal, Refused, Ring, Wait, MAX_CAPACITY};
use super::thread;
use super::waiters::Waiters;
use crate::sys::atomic::{AtomicWaker, ParkFlag};

/// A channel holding at most `capacity` values: [`Sender::send`] waits while
/// it is full.
///
/// # Panics
///
/// When `capacity` is 0 (as tokio's `channel` does: a channel that can hold
/// nothing could never deliver), or above 2^24 (2^13 on 32-bit targets):
/// the ring of slots is allocated up front.
///
/// ```
/// # let rt = ringshard::Runtime::builder().worker_threads(1).build()?;
/// rt.block_on(async {
///     let (tx, mut rx) = ringshard::channel::mpsc::bounded(1);
///     tx.send("a").await.unwrap();
///     assert!(tx.try_send("b").is_err()); // full
///     assert_eq!(rx.recv().await, Some("a"));
/// });
/// # Ok::<(), std::io::Error>(())
/// ```
#[track_caller]
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    assert!(
        (1..=MAX_CAPACITY).contains(&capacity),
        "ringshard::channel::mpsc::bounded: capacity must be 1..={MAX_CAPACITY}, not {capacity} \
         (the ring is allocated up front; use unbounded beyond)"
    );
    let chan = Arc::new(Chan::new(Bounded(Ring::new(capacity))));
    (Sender { chan: chan.clone() }, Receiver { chan })
}

/// A channel without a bound: [`UnboundedSender::send`] never waits.
///
/// ```
/// let (tx, mut rx) = ringshard::unbounded();
/// let senders: Vec<_> = (0..4)
///     .map(|t| {
///         let tx = tx.clone();
///         std::thread::spawn(move || (0..100).for_each(|i| tx.send(t * 100 + i).unwrap()))
///     })
///     .collect();
/// drop(tx);
/// senders.into_iter().for_each(|t| t.join().unwrap());
/// let mut got = Vec::new();
/// while let Some(v) = rx.blocking_recv() {
///     got.push(v);
/// }
/// assert_eq!(got.len(), 400);
/// ```
pub fn unbounded<T>() -> (UnboundedSender<T>, UnboundedReceiver<T>) {
    let chan = Arc::new(Chan::new(Unbounded::new()));
    (
        UnboundedSender { chan: chan.clone() },
        UnboundedReceiver { chan },
    )
}

/// The queue under a channel. `pop`, `park` and `finished` are called only
/// by the receiver.
trait Queue {
    type Item;
    /// Whether senders can wait for room (bounded queues): a pop then
    /// hands the room it made to the oldest.
    const SENDERS_WAIT: bool;
    /// Adds a value; says how to learn whether the receiver must be woken.
    fn push(&self, value: Self::Item) -> Result<Wake, Refused<Self::Item>>;
    fn pop(&self) -> Option<Self::Item>;
    /// Refuses every later push; values pushed before stay to be taken.
    fn close(&self);
    /// Closed, and no value can arrive any more: every push that got in
    /// before the close is poppable (so a pop after this says the rest).
    fn finished(&self) -> bool;
    /// Marks the receiver as waiting for the next value, if the queue can;
    /// watched by the current shard if `watch` and the queue can.
    fn park(&self, watch: bool) -> Wait;
    /// The receiver found a value after `park`: pushes need not wake it.
    fn unpark(&self) {}
    /// The receiver is going away: no shard may keep watching for it.
    fn unwatch(&self) {}
    fn len(&self) -> usize;
    /// Takes room for a waiting sender (a reservation it will own); only
    /// bounded queues have waiting senders.
    fn grant(&self) -> bool {
        false
    }
}

/// What a push says about the receiver.
enum Wake {
    /// It was parked on the value just pushed: wake it.
    Now,
    /// It was not.
    No,
}

/// Bounded channels queue through a [`Ring`].
struct Bounded<T>(Ring<T>);

impl<T> Queue for Bounded<T> {
    type Item = T;
    const SENDERS_WAIT: bool = true;
    fn push(&self, value: T) -> Result<Wake, Refused<T>> {
        match self.0.push(value) {
            Ok(true) => Ok(Wake::Now),
            Ok(false) => Ok(Wake::No),
            Err(refused) => Err(refused),
        }
    }
    fn close(&self) {
        self.0.close();
    }
    fn finished(&self) -> bool {
        // SAFETY: only the receiver asks (`Chan::try_recv`).
        unsafe { self.0.finished() }
    }
    fn pop(&self) -> Option<T> {
        // SAFETY: only the channel's one receiver pops (`Chan::pop` is
        // reached through `&mut Receiver` or its drop).
        unsafe { self.0.pop() }
    }
    fn park(&self, watch: bool) -> Wait {
        // SAFETY: only the receiver parks (`Chan::poll_recv`).
        unsafe { self.0.park(watch) }
    }
    fn unwatch(&self) {
        // SAFETY: only the receiver calls this, from its drop.
        unsafe { self.0.unwatch() }
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn grant(&self) -> bool {
        self.0.reserve().is_ok()
    }
}

/// Unbounded channels queue through a `SegQueue`. To close exactly, each
/// push counts itself in `started` (in steps of [`UNBOUNDED_STEP`],
/// wrapping) before it pushes; bit 0 is the close. One location, so its
/// modification order decides: a push whose increment saw bit 0 clear got
/// in before the close and will arrive, one that saw it set refuses. The
/// close's `fetch_or` returns how many got in (`expected`), and the
/// receiver is finished once it has taken that many.
///
/// Bit 1 is the receiver's park, in the same word for the same reason: the
/// receiver sets it with a read-modify-write that also reads the count, so
/// either a push counted itself first (the receiver sees more started than
/// taken and polls again instead of sleeping) or it counts itself after
/// and its increment sees the bit (it wakes the receiver once its value is
/// in). A send is one read-modify-write on a line only senders write while
/// the receiver is busy, and no fence; the receiver's counts are on its
/// own line.
struct Unbounded<T> {
    queue: SegQueue<T>,
    started: CachePadded<AtomicUsize>,
    /// Receiver only: values taken, and (after the close) how many pushes
    /// got in before it, both counted modulo `UNBOUNDED_COUNT + 1`.
    taken: CachePadded<(AtomicUsize, AtomicUsize)>,
}

/// Bit 0 of `Unbounded::started`: closed.
const UNBOUNDED_CLOSED: usize = 1;
/// Bit 1 of `Unbounded::started`: the receiver waits for a push.
const UNBOUNDED_PARKED: usize = 2;
/// One push in `Unbounded::started`.
const UNBOUNDED_STEP: usize = 4;
/// The bits of the unbounded channel's counts.
const UNBOUNDED_COUNT: usize = usize::MAX >> 2;

impl<T> Unbounded<T> {
    fn new() -> Unbounded<T> {
        Unbounded {
            queue: SegQueue::new(),
            started: CachePadded::new(AtomicUsize::new(0)),
            // `expected` starts with its top bit set, which no count has:
            // `finished` is false until the close sets it.
            taken: CachePadded::new((AtomicUsize::new(0), AtomicUsize::new(usize::MAX))),
        }
    }
}

impl<T> Queue for Unbounded<T> {
    type Item = T;
    const SENDERS_WAIT: bool = false;
    fn push(&self, value: T) -> Result<Wake, Refused<T>> {
        // AcqRel: it orders this push after a park it sees (Acquire), and
        // a close's count after the pushes it counts.
        let before = self.started.fetch_add(UNBOUNDED_STEP, Ordering::AcqRel);
        if before & UNBOUNDED_CLOSED != 0 {
            // The receiver counted the pushes at its close; this one is
            // not among them. (The counter is never taken back: only its
            // value at the close matters.)
            return Err(Refused::Closed(value));
        }
        self.queue.push(value);
        #[cfg(not(ringshard_broken = "unbounded_push_ignores_park"))]
        if before & UNBOUNDED_PARKED != 0 {
            // The receiver parked before this push counted itself: it may
            // be asleep. One of the senders that saw the bit clears it and
            // wakes it, after its own value is in.
            let now = self.started.fetch_and(!UNBOUNDED_PARKED, Ordering::AcqRel);
            if now & UNBOUNDED_PARKED != 0 {
                return Ok(Wake::Now);
            }
        }
        Ok(Wake::No)
    }
    fn park(&self, _watch: bool) -> Wait {
        let now = self.started.fetch_or(UNBOUNDED_PARKED, Ordering::AcqRel);
        let in_flight = if now & UNBOUNDED_CLOSED != 0 {
            // Refused pushes count too: compare with what got in.
            !self.finished()
        } else {
            (now / UNBOUNDED_STEP) & UNBOUNDED_COUNT != self.taken.0.load(Ordering::Relaxed)
        };
        if in_flight {
            // A push counted itself and its value is (nearly) in: take it
            // rather than sleep, and let later pushes wake no one.
            self.unpark();
            return Wait::Arrived;
        }
        Wait::Parked
    }
    fn unpark(&self) {
        if self.started.load(Ordering::Relaxed) & UNBOUNDED_PARKED != 0 {
            self.started.fetch_and(!UNBOUNDED_PARKED, Ordering::Relaxed);
        }
    }
    fn pop(&self) -> Option<T> {
        let value = self.queue.pop()?;
        let taken = &self.taken.0;
        // Only the receiver writes it: a plain load and store.
        let count = taken.load(Ordering::Relaxed).wrapping_add(1) & UNBOUNDED_COUNT;
        taken.store(count, Ordering::Relaxed);
        Some(value)
    }
    fn close(&self) {
        let before = self.started.fetch_or(UNBOUNDED_CLOSED, Ordering::AcqRel);
        debug_assert_eq!(before & UNBOUNDED_CLOSED, 0, "closed once (Chan::close)");
        self.taken.1.store(
            (before / UNBOUNDED_STEP) & UNBOUNDED_COUNT,
            Ordering::Relaxed,
        );
    }
    fn finished(&self) -> bool {
        // Every push that got in is popped (so visible): nothing can come.
        self.taken.0.load(Ordering::Relaxed) == self.taken.1.load(Ordering::Relaxed)
    }
    fn len(&self) -> usize {
        self.queue.len()
    }
}

/// The state both ends share.
struct Chan<Q> {
    queue: Q,
    /// Live `Sender`s; the receiver sees the end once it is 0 and the queue
    /// is empty.
    senders: AtomicUsize,
    /// The receiver was dropped or closed: sends fail.
    closed: AtomicBool,
    /// The receiver was dropped: a value sent into a reservation made
    /// before is dropped at once (one that races the receiver's drop
    /// waits in the ring until the channel goes, as in tokio).
    rx_gone: AtomicBool,
    /// Raised by the receiver after it registered its waker and before it
    /// re-checks the queue; the last sender's drop (and a reservation
    /// given back after a close) wakes it only when it takes this. Pushes
    /// wake it through the queue's own park (`Queue::park`).
    rx_parked: CachePadded<ParkFlag>,
    /// On its own line: the receiver writes it each time it waits, and a
    /// sender reads the line next to it on every send.
    rx_waker: CachePadded<AtomicWaker>,
    /// Senders waiting for room (bounded channels only).
    send_waiters: Waiters,
    /// Senders waiting in `closed()` for the receiver to close or go.
    close_waiters: Waiters,
}

impl<Q: Queue> Chan<Q> {
    fn new(queue: Q) -> Chan<Q> {
        Chan {
            queue,
            senders: AtomicUsize::new(1),
            closed: AtomicBool::new(false),
            rx_gone: AtomicBool::new(false),
            rx_parked: CachePadded::new(ParkFlag::new()),
            rx_waker: CachePadded::new(AtomicWaker::new()),
            send_waiters: Waiters::default(),
            close_waiters: Waiters::default(),
        }
    }

    /// After the last sender's drop: wakes the receiver if parked.
    fn wake_receiver(&self) {
        // The handshake with `poll_recv` (see `ParkFlag`).
        if self.rx_parked.take() {
            self.rx_waker.wake();
        }
    }

    fn try_send(&self, value: Q::Item) -> Result<(), TrySendError<Q::Item>> {
        match self.queue.push(value) {
            Ok(Wake::Now) => {
                self.rx_waker.wake();
                Ok(())
            }
            Ok(Wake::No) => Ok(()),
            Err(Refused::Full(value)) => Err(TrySendError::Full(value)),
            // A refusal changes nothing the receiver waits on.
            Err(Refused::Closed(value)) => Err(TrySendError::Closed(value)),
        }
    }

    fn pop(&self) -> Option<Q::Item> {
        let value = self.queue.pop()?;
        // The room goes to the oldest waiting sender, if one waits (for an
        // unbounded queue none ever does, and the check's fence is saved).
        if Q::SENDERS_WAIT {
            self.send_waiters.notify_one(|| self.queue.grant());
        }
        Some(value)
    }

    fn try_recv(&self) -> Result<Q::Item, TryRecvError> {
        if let Some(value) = self.pop() {
            return Ok(value);
        }
        // `closed` is the receiver's own word (it alone closes): the
        // producers' line is read only after a close.
        let finished = self.closed.load(Ordering::Relaxed) && self.queue.finished();
        if finished || self.senders.load(Ordering::Acquire) == 0 {
            // A push that raced with the last sender's drop (or with the
            // close) is visible now.
            return self.pop().ok_or(TryRecvError::Disconnected);
        }
        Err(TryRecvError::Empty)
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Q::Item>> {
        match self.try_recv() {
            Ok(value) => return Poll::Ready(Some(value)),
            Err(TryRecvError::Disconnected) => return Poll::Ready(None),
            Err(TryRecvError::Empty) => {}
        }
        self.rx_waker.register(cx.waker());
        // The handshake with `wake_receiver` (see `ParkFlag`): either the
        // last sender's drop sees the flag, or we see the drop.
        self.rx_parked.raise();
        // A bounded queue marks the slot of the next value instead, so its
        // senders need no fence; on a spinning shard, the shard watches
        // that slot and its senders wake no one.
        let wait = self.queue.park(crate::shard::can_watch(cx.waker()));
        match self.try_recv() {
            Ok(value) => {
                self.rx_parked.lower();
                self.queue.unpark();
                Poll::Ready(Some(value))
            }
            Err(TryRecvError::Disconnected) => Poll::Ready(None),
            Err(TryRecvError::Empty) => {
                match wait {
                    Wait::Parked => {}
                    Wait::Watched(beacon) => crate::shard::watch(beacon, cx.waker().clone()),
                    // Published between our pop and our mark, yet not
                    // poppable: a ring's value is never half there, but an
                    // unbounded push may be between its count and its
                    // value; poll again rather than sleep on it.
                    Wait::Arrived => cx.waker().wake_by_ref(),
                }
                Poll::Pending
            }
        }
    }

    fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.queue.close();
            self.send_waiters.notify_all();
            self.close_waiters.notify_all();
        }
    }

    /// `Sender::closed`: waits until the receiver closed or went.
    async fn closed(&self) {
        let mut key = None;
        // Removes the wait if the future is dropped while pending.
        let guard = CloseWait {
            waiters: &self.close_waiters,
            key: &mut key,
        };
        std::future::poll_fn(|cx| self.poll_closed(guard.key, cx)).await;
    }

    /// Ready once the receiver closed or went.
    fn poll_closed(&self, key: &mut Option<usize>, cx: &mut Context<'_>) -> Poll<()> {
        if !self.closed.load(Ordering::Acquire) {
            self.close_waiters.register(key, cx.waker());
            // `close` sets the flag before it wakes the waiters.
            if !self.closed.load(Ordering::Acquire) {
                return Poll::Pending;
            }
        }
        self.close_waiters.remove(key);
        Poll::Ready(())
    }

    /// Whether the receiver sees the end: it closed, or every sender went.
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.senders.load(Ordering::Acquire) == 0
    }

    /// `recv_many`: at least one value (waiting for it), then what is
    /// there, up to `limit`; 0 at the end (or for a `limit` of 0).
    fn poll_recv_many(
        &self,
        cx: &mut Context<'_>,
        buffer: &mut Vec<Q::Item>,
        limit: usize,
    ) -> Poll<usize> {
        if limit == 0 {
            return Poll::Ready(0);
        }
        match self.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(0),
            Poll::Ready(Some(first)) => {
                buffer.push(first);
                let mut taken = 1;
                while taken < limit {
                    match self.pop() {
                        Some(value) => buffer.push(value),
                        None => break,
                    }
                    taken += 1;
                }
                Poll::Ready(taken)
            }
        }
    }

    /// Turns a sender still held into one more, if any is left
    /// (`WeakSender::upgrade`).
    fn upgrade(&self) -> bool {
        self.senders
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n > 0).then(|| n + 1)
            })
            .is_ok()
    }

    fn add_sender(&self) {
        self.senders.fetch_add(1, Ordering::Relaxed);
    }

    fn drop_sender(&self) {
        if self.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.wake_receiver();
        }
    }
}

/// Where a waiting sender stands after queueing.
enum Room {
    /// It holds a grant: use it now.
    Granted,
    /// Queued; it will be woken.
    Waiting,
    /// The channel closed; it is not queued.
    Closed,
}

impl<T> Chan<Bounded<T>> {
    /// Whether a sender may take room now: one not waiting when no sender
    /// is queued (a woken sender was granted its room; nobody jumps the
    /// queue).
    fn my_turn(&self) -> bool {
        !self.send_waiters.pending()
    }

    /// Queues the sender (or keeps it queued) for room. Room that came
    /// before the receiver could see it queued is granted to the front
    /// waiter, maybe this one: no wake is lost.
    fn wait_for_room(&self, key: &mut Option<usize>, cx: &mut Context<'_>) -> Room {
        if self.send_waiters.register(key, cx.waker()) {
            // Granted while we looked: the woken waker was the old one.
            return Room::Granted;
        }
        // `close` sets the flag before it wakes the queue (under its lock).
        if self.closed.load(Ordering::Acquire) {
            // Room granted before the close is still ours to use.
            if self.send_waiters.granted(*key) {
                return Room::Granted;
            }
            self.leave(key);
            return Room::Closed;
        }
        if self.queue.0.free() > 0 {
            self.send_waiters.notify_one(|| self.queue.grant());
            if self.send_waiters.granted(*key) {
                return Room::Granted;
            }
        }
        Room::Waiting
    }

    /// A reserved value goes in (even after a close: the reservation was
    /// made before it); the receiver is woken if it waits. Dropped at once
    /// if the receiver is gone.
    fn send_reserved(&self, value: T) {
        if self.rx_gone.load(Ordering::Acquire) {
            self.give_back();
            return drop(value);
        }
        if self.queue.0.push_reserved(value) {
            self.rx_waker.wake();
        }
    }

    /// A reservation given back unused: its room goes to the next waiter;
    /// after a close, the receiver may now see the end.
    fn give_back(&self) {
        self.queue.0.release_reserved();
        self.send_waiters.notify_one(|| self.queue.grant());
        // The release before the look at `closed`, paired with the fence
        // of the receiver's park (`ParkFlag`): either it sees no
        // reservation left, or we see it closed and parked.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.closed.load(Ordering::Acquire) {
            self.wake_receiver();
        }
    }

    /// A finished or dropped waiter's entry goes; a grant it did not use
    /// is given back.
    fn leave(&self, key: &mut Option<usize>) {
        if self.send_waiters.remove(key) {
            self.give_back();
        }
    }
}

/// The sending half of a [`bounded`] channel.
pub struct Sender<T> {
    chan: Arc<Chan<Bounded<T>>>,
}

impl<T> Sender<T> {
    /// Sends `value`, waiting while the channel is full. Fails, giving the
    /// value back, once the receiver is gone.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes drops the value unsent; the
    /// room it was woken for goes to the next waiting sender.
    pub fn send(&self, value: T) -> Send<'_, T> {
        Send {
            chan: &self.chan,
            value: Some(value),
            key: None,
        }
    }

    /// Sends `value` if there is room now, and no sender is waiting for
    /// room (a waiting sender owns the room it is woken for).
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        if !self.chan.my_turn() {
            return Err(if self.chan.closed.load(Ordering::Acquire) {
                TrySendError::Closed(value)
            } else {
                TrySendError::Full(value)
            });
        }
        self.chan.try_send(value)
    }

    /// Waits for room for one value and reserves it: the [`Permit`] sends
    /// without waiting (or gives the room back when dropped). Fails once
    /// the receiver is gone. Waiting senders and reservations are served
    /// in the order they came.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future gives up its place; room it was woken for goes
    /// to the next waiting sender.
    pub fn reserve(&self) -> Reserve<'_, T> {
        Reserve {
            chan: &self.chan,
            key: None,
        }
    }

    /// Reserves room for one value if there is room now (and nobody waits).
    pub fn try_reserve(&self) -> Result<Permit<'_, T>, TrySendError<()>> {
        if !self.chan.my_turn() {
            return Err(if self.chan.closed.load(Ordering::Acquire) {
                TrySendError::Closed(())
            } else {
                TrySendError::Full(())
            });
        }
        match self.chan.queue.0.reserve() {
            Ok(()) => Ok(Permit { chan: &self.chan }),
            Err(Refusal::Full) => Err(TrySendError::Full(())),
            Err(Refusal::Closed) => Err(TrySendError::Closed(())),
        }
    }

    /// Waits until the receiver closes or is dropped.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn closed(&self) {
        self.chan.closed().await
    }

    /// A sender that does not keep the channel open; see [`WeakSender`].
    pub fn downgrade(&self) -> WeakSender<T> {
        WeakSender {
            chan: self.chan.clone(),
        }
    }

    /// [`send`](Sender::send) for plain threads: blocks the thread.
    ///
    /// # Panics
    ///
    /// When called on a shard's thread.
    #[track_caller]
    pub fn blocking_send(&self, value: T) -> Result<(), SendError<T>> {
        thread::block_on("Sender::blocking_send", self.send(value))
    }

    /// Whether the receiver is gone (sends would fail).
    pub fn is_closed(&self) -> bool {
        self.chan.closed.load(Ordering::Acquire)
    }

    /// The room left now (tokio's meaning): the bound less the values
    /// waiting and the room reserved by [`Permit`]s.
    pub fn capacity(&self) -> usize {
        self.chan.queue.0.free()
    }

    /// The channel's bound, as given to [`bounded`].
    pub fn max_capacity(&self) -> usize {
        self.chan.queue.0.capacity()
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Sender<T> {
        self.chan.add_sender();
        Sender {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.chan.drop_sender();
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("len", &self.chan.queue.len())
            .field("max_capacity", &self.max_capacity())
            .finish()
    }
}

/// The future of [`Sender::send`].
#[must_use = "futures do nothing unless awaited"]
pub struct Send<'a, T> {
    chan: &'a Chan<Bounded<T>>,
    value: Option<T>,
    /// Our entry among the channel's waiting senders.
    key: Option<usize>,
}

// The value is only moved, never pinned.
impl<T> Unpin for Send<'_, T> {}

impl<T> Future for Send<'_, T> {
    type Output = Result<(), SendError<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let chan = this.chan;
        let mut value = this.value.take().expect("Send polled after completion");
        let mut granted = chan.send_waiters.granted(this.key);
        loop {
            if granted {
                // Room was taken for us when we were woken: it is ours.
                chan.send_waiters.remove(&mut this.key);
                if chan.rx_gone.load(Ordering::Acquire) {
                    chan.give_back();
                    return Poll::Ready(Err(SendError(value)));
                }
                chan.send_reserved(value);
                return Poll::Ready(Ok(()));
            }
            if this.key.is_none() && chan.my_turn() {
                match chan.try_send(value) {
                    Ok(()) => return Poll::Ready(Ok(())),
                    Err(TrySendError::Closed(back)) => return Poll::Ready(Err(SendError(back))),
                    Err(TrySendError::Full(back)) => value = back,
                }
            }
            match chan.wait_for_room(&mut this.key, cx) {
                Room::Granted => granted = true,
                Room::Closed => return Poll::Ready(Err(SendError(value))),
                Room::Waiting => {
                    this.value = Some(value);
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<T> Drop for Send<'_, T> {
    fn drop(&mut self) {
        self.chan.leave(&mut self.key);
    }
}

/// The future of [`Sender::reserve`].
#[must_use = "futures do nothing unless awaited"]
pub struct Reserve<'a, T> {
    chan: &'a Chan<Bounded<T>>,
    key: Option<usize>,
}

impl<'a, T> Future for Reserve<'a, T> {
    type Output = Result<Permit<'a, T>, SendError<()>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let chan = this.chan;
        let mut granted = chan.send_waiters.granted(this.key);
        loop {
            if granted {
                // The room granted to us becomes the permit's.
                chan.send_waiters.remove(&mut this.key);
                return Poll::Ready(Ok(Permit { chan }));
            }
            if this.key.is_none() && chan.my_turn() {
                match chan.queue.0.reserve() {
                    Ok(()) => return Poll::Ready(Ok(Permit { chan })),
                    Err(Refusal::Closed) => return Poll::Ready(Err(SendError(()))),
                    Err(Refusal::Full) => {}
                }
            }
            match chan.wait_for_room(&mut this.key, cx) {
                Room::Granted => granted = true,
                Room::Closed => return Poll::Ready(Err(SendError(()))),
                Room::Waiting => return Poll::Pending,
            }
        }
    }
}

impl<T> Drop for Reserve<'_, T> {
    fn drop(&mut self) {
        self.chan.leave(&mut self.key);
    }
}

impl<T> fmt::Debug for Reserve<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reserve").finish()
    }
}

/// Room for one value in a bounded channel, from [`Sender::reserve`]:
/// [`send`](Permit::send) never waits and never fails. Dropped unused, the
/// room goes back (to the next waiting sender first).
pub struct Permit<'a, T> {
    chan: &'a Chan<Bounded<T>>,
}

impl<T> Permit<'_, T> {
    /// Sends `value` into the reserved room. After the receiver's
    /// `close()` it is still received (the receiver sees the end only once
    /// every permit is used or dropped, as in tokio); if the receiver was
    /// dropped, `value` is dropped at once.
    pub fn send(self, value: T) {
        let chan = self.chan;
        std::mem::forget(self);
        chan.send_reserved(value);
    }
}

impl<T> Drop for Permit<'_, T> {
    fn drop(&mut self) {
        self.chan.give_back();
    }
}

impl<T> fmt::Debug for Permit<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").finish()
    }
}

/// A sender's wait in `closed()`, removed however the future ends.
struct CloseWait<'a> {
    waiters: &'a Waiters,
    key: &'a mut Option<usize>,
}

impl Drop for CloseWait<'_> {
    fn drop(&mut self) {
        self.waiters.remove(self.key);
    }
}

/// A weak sender type (`$weak`) for a sender type (`$strong`).
macro_rules! weak_sender {
    ($(#[$doc:meta])* $weak:ident, $strong:ident, $queue:ident) => {
        $(#[$doc])*
        pub struct $weak<T> {
            chan: Arc<Chan<$queue<T>>>,
        }

        impl<T> $weak<T> {
            #[doc = concat!("A `", stringify!($strong), "`, if one still lives.")]
            pub fn upgrade(&self) -> Option<$strong<T>> {
                self.chan.upgrade().then(|| $strong {
                    chan: self.chan.clone(),
                })
            }
        }

        impl<T> Clone for $weak<T> {
            fn clone(&self) -> $weak<T> {
                $weak {
                    chan: self.chan.clone(),
                }
            }
        }

        impl<T> fmt::Debug for $weak<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($weak)).finish()
            }
        }
    };
}

weak_sender!(
    /// A [`Sender`] that does not count: the channel ends (the receiver
    /// sees `None`) once every `Sender` is gone, whatever `WeakSender`s
    /// remain. [`upgrade`](WeakSender::upgrade) gives a `Sender` while one
    /// lives.
    WeakSender,
    Sender,
    Bounded
);

/// The sending half of an [`unbounded`] channel.
pub struct UnboundedSender<T> {
    chan: Arc<Chan<Unbounded<T>>>,
}

impl<T> UnboundedSender<T> {
    /// Sends `value` without waiting. Fails, giving the value back, once the
    /// receiver is gone.
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        self.chan.try_send(value).map_err(|error| match error {
            TrySendError::Closed(value) | TrySendError::Full(value) => SendError(value),
        })
    }

    /// Whether the receiver is gone (sends would fail).
    pub fn is_closed(&self) -> bool {
        self.chan.closed.load(Ordering::Acquire)
    }

    /// Waits until the receiver closes or is dropped.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn closed(&self) {
        self.chan.closed().await
    }

    /// A sender that does not keep the channel open; see
    /// [`WeakUnboundedSender`].
    pub fn downgrade(&self) -> WeakUnboundedSender<T> {
        WeakUnboundedSender {
            chan: self.chan.clone(),
        }
    }
}

weak_sender!(
    /// An [`UnboundedSender`] that does not count, as [`WeakSender`].
    WeakUnboundedSender,
    UnboundedSender,
    Unbounded
);

impl<T> Clone for UnboundedSender<T> {
    fn clone(&self) -> UnboundedSender<T> {
        self.chan.add_sender();
        UnboundedSender {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Drop for UnboundedSender<T> {
    fn drop(&mut self) {
        self.chan.drop_sender();
    }
}

impl<T> fmt::Debug for UnboundedSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnboundedSender")
            .field("len", &self.chan.queue.len())
            .finish()
    }
}

/// The receiving half of a [`bounded`] channel.
pub struct Receiver<T> {
    chan: Arc<Chan<Bounded<T>>>,
}

/// The receiving half of an [`unbounded`] channel.
pub struct UnboundedReceiver<T> {
    chan: Arc<Chan<Unbounded<T>>>,
}

/// Both receivers' methods, one definition.
macro_rules! receiver {
    ($name:ident, $flavour:ident) => {
        impl<T> $name<T> {
            /// Receives the next value, waiting for one. `None` once every
            /// sender is gone and the channel is empty.
            ///
            /// # Cancel safety
            ///
            /// Cancel safe: a value leaves the channel only when the future
            /// returns it.
            pub fn recv(&mut self) -> Recv<'_, T> {
                Recv {
                    chan: RecvChan::$flavour(&self.chan),
                }
            }

            /// Receives a value if one is ready.
            pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
                self.chan.try_recv()
            }

            /// Polls for the next value, as [`recv`](Self::recv).
            pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
                self.chan.poll_recv(cx)
            }

            /// Waits for at least one value, then appends to `buffer` what
            /// is there, up to `limit` values; returns how many. 0 means the
            /// channel ended (or `limit` was 0).
            ///
            /// # Cancel safety
            ///
            /// Cancel safe: values leave the channel only when the future
            /// returns them.
            pub async fn recv_many(&mut self, buffer: &mut Vec<T>, limit: usize) -> usize {
                std::future::poll_fn(|cx| self.chan.poll_recv_many(cx, buffer, limit)).await
            }

            /// Whether the channel ended for sends: the receiver closed it,
            /// or every sender is gone (values may still wait in it).
            pub fn is_closed(&self) -> bool {
                self.chan.is_closed()
            }

            /// [`recv`](Self::recv) for plain threads: blocks the thread.
            ///
            /// # Panics
            ///
            /// When called on a shard's thread.
            #[track_caller]
            pub fn blocking_recv(&mut self) -> Option<T> {
                thread::block_on(concat!(stringify!($name), "::blocking_recv"), self.recv())
            }

            /// Closes the channel: sends fail from now on; values already
            /// sent can still be received, and then `recv` returns `None`
            /// (and `try_recv` says `Disconnected`) even while senders
            /// live, as in tokio:
            /// `rx.close(); while let Some(v) = rx.recv().await { .. }`
            /// drains the channel and ends. A send that raced with the
            /// close either fails or is received: none is lost.
            pub fn close(&mut self) {
                self.chan.close();
            }

            /// Values waiting in the channel.
            pub fn len(&self) -> usize {
                self.chan.queue.len()
            }

            /// Whether no value waits in the channel.
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }
        }

        impl<T> Drop for $name<T> {
            fn drop(&mut self) {
                self.chan.rx_gone.store(true, Ordering::Release);
                self.chan.close();
                self.chan.queue.unwatch();
                // Our waker (and the task it keeps alive) goes now, not
                // with the last sender.
                #[cfg(not(ringshard_broken = "receiver_keeps_waker"))]
                drop(self.chan.rx_waker.take());
                // Values still queued are dropped now, not when the last
                // sender goes; if one's `Drop` panics, the guard drops the
                // rest as the panic unwinds.
                #[cfg(not(ringshard_broken = "receiver_drop_stops_on_panic"))]
                let drain = Drain(&self.chan.queue);
                // Deliberately broken build: no guard, a panic stops it.
                #[cfg(ringshard_broken = "receiver_drop_stops_on_panic")]
                let drain = (&self.chan.queue,);
                while drain.0.pop().is_some() {}
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("len", &self.len())
                    .finish()
            }
        }
    };
}

receiver!(Receiver, Bounded);
receiver!(UnboundedReceiver, Unbounded);

/// Drops what is left in a queue, even while a panic unwinds.
struct Drain<'a, Q: Queue>(&'a Q);

impl<Q: Queue> Drop for Drain<'_, Q> {
    fn drop(&mut self) {
        while self.0.pop().is_some() {}
    }
}

enum RecvChan<'a, T> {
    Bounded(&'a Chan<Bounded<T>>),
    Unbounded(&'a Chan<Unbounded<T>>),
}

/// The future of `recv` on either receiver.
#[must_use = "futures do nothing unless awaited"]
pub struct Recv<'a, T> {
    chan: RecvChan<'a, T>,
}

impl<T> Future for Recv<'_, T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        match self.chan {
            RecvChan::Bounded(chan) => chan.poll_recv(cx),
            RecvChan::Unbounded(chan) => chan.poll_recv(cx),
        }
    }
}

/// A send failed because the receiver is gone; the value is returned.
#[derive(PartialEq, Eq, Clone, Copy)]
pub struct SendError<T>(pub T);

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("channel closed")
    }
}

impl<T> std::error::Error for SendError<T> {}

/// Why [`Sender::try_send`] failed; the value is returned.
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum TrySendError<T> {
    /// The channel is full.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

impl<T> TrySendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(value) | TrySendError::Closed(value) => value,
        }
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("channel full"),
            TrySendError::Closed(_) => f.write_str("channel closed"),
        }
    }
}

impl<T> std::error::Error for TrySendError<T> {}

/// Why `try_recv` returned no value.
#[derive(PartialEq, Eq, Clone, Copy, Debug)]
pub enum TryRecvError {
    /// No value now; senders remain.
    Empty,
    /// No value, and every sender is gone.
    Disconnected,
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryRecvError::Empty => f.write_str("channel empty"),
            TryRecvError::Disconnected => f.write_str("channel closed"),
        }
    }
}

impl std::error::Error for TryRecvError {}

#[cfg(test)]
mod tests;
