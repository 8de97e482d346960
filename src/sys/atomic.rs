//! The atomics under the cross-thread protocols, and the one handshake they
//! share ([`ParkFlag`]). With `--cfg loom` they are loom's, so the models in
//! `loom_models` run the real code (`.ci/run` runs them).

use std::mem::MaybeUninit;

#[cfg(not(loom))]
pub(crate) use atomic_waker::AtomicWaker;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU8, AtomicUsize};
pub(crate) use std::sync::atomic::Ordering;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU8, AtomicUsize};

/// A flag a waiter raises before it blocks (a shard about to park, a
/// channel receiver about to return `Pending`), and the handshake that
/// makes a wake never lost:
///
/// - the waiter [`raise`](ParkFlag::raise)s it (a SeqCst fence after the
///   store), then looks for work one last time, and blocks only if there
///   is none;
/// - the waker publishes its work, then [`take`](ParkFlag::take)s the flag
///   (a SeqCst fence before the load), and wakes the waiter if it got it.
///
/// The two fences order the store before the last look and the publish
/// before the load: either the waiter sees the work, or the waker sees the
/// flag. A busy waiter costs its wakers one plain load.
pub(crate) struct ParkFlag(AtomicBool);

impl ParkFlag {
    pub(crate) fn new() -> ParkFlag {
        ParkFlag(AtomicBool::new(false))
    }

    /// About to block: raised, then fenced. Look for work after this.
    pub(crate) fn raise(&self) {
        self.0.store(true, Ordering::Relaxed);
        #[cfg(not(ringshard_broken = "park_flag_no_fence"))]
        fence(Ordering::SeqCst);
    }

    /// Not blocking (work was found, or the wait is over).
    pub(crate) fn lower(&self) {
        self.0.store(false, Ordering::Relaxed);
    }

    /// Whether the waiter is raised, without taking it (a hint).
    pub(crate) fn is_raised(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// After publishing work: true, for exactly one waker, if the waiter
    /// was raised and must now be woken.
    pub(crate) fn take(&self) -> bool {
        fence(Ordering::SeqCst);
        self.0.load(Ordering::Relaxed) && self.0.swap(false, Ordering::AcqRel)
    }
}

/// A cell for one value that moves between threads under an external
/// protocol (a ring slot). Loom's cell checks that protocol's accesses.
pub(crate) struct ValueCell<T> {
    #[cfg(not(loom))]
    cell: std::cell::UnsafeCell<MaybeUninit<T>>,
    #[cfg(loom)]
    cell: loom::cell::UnsafeCell<MaybeUninit<T>>,
}

impl<T> ValueCell<T> {
    pub(crate) fn new() -> ValueCell<T> {
        ValueCell {
            #[cfg(not(loom))]
            cell: std::cell::UnsafeCell::new(MaybeUninit::uninit()),
            #[cfg(loom)]
            cell: loom::cell::UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// Stores `value`.
    ///
    /// # Safety
    ///
    /// - No other thread accesses the cell meanwhile, and it holds no value.
    pub(crate) unsafe fn write(&self, value: T) {
        #[cfg(not(loom))]
        // SAFETY: exclusive access, from this function's contract.
        unsafe {
            (*self.cell.get()).write(value);
        }
        #[cfg(loom)]
        // SAFETY: as above.
        self.cell.with_mut(|cell| unsafe {
            (*cell).write(value);
        });
    }

    /// Moves the value out.
    ///
    /// # Safety
    ///
    /// - No other thread accesses the cell meanwhile, and it holds a value
    ///   (written, and not taken since).
    pub(crate) unsafe fn take(&self) -> T {
        #[cfg(not(loom))]
        // SAFETY: exclusive access to an initialized value, from the contract.
        return unsafe { (*self.cell.get()).assume_init_read() };
        #[cfg(loom)]
        // SAFETY: as above.
        self.cell
            .with_mut(|cell| unsafe { (*cell).assume_init_read() })
    }
}

/// A cell shared between threads under an external protocol (the oneshot's
/// value). Loom's cell checks that protocol's accesses.
pub(crate) struct SharedCell<T> {
    #[cfg(not(loom))]
    cell: std::cell::UnsafeCell<T>,
    #[cfg(loom)]
    cell: loom::cell::UnsafeCell<T>,
}

impl<T> SharedCell<T> {
    pub(crate) fn new(value: T) -> SharedCell<T> {
        SharedCell {
            #[cfg(not(loom))]
            cell: std::cell::UnsafeCell::new(value),
            #[cfg(loom)]
            cell: loom::cell::UnsafeCell::new(value),
        }
    }

    /// Calls `f` with a pointer to the value.
    ///
    /// # Safety
    ///
    /// - No other thread accesses the cell while `f` runs.
    pub(crate) unsafe fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        #[cfg(not(loom))]
        return f(self.cell.get());
        #[cfg(loom)]
        self.cell.with_mut(f)
    }
}

/// Under loom, the waker slot of the channels: `atomic-waker`'s own
/// atomics are invisible to loom, and with them the ordering its
/// register/wake pair gives the re-check after a register. This slot gives
/// the same contract (a wake after a register sees the waker; a register
/// after a wake is ordered after it) through a loom mutex, so the models
/// check the channel protocols on top of a correct slot.
#[cfg(loom)]
pub(crate) struct AtomicWaker(loom::sync::Mutex<Option<std::task::Waker>>);

#[cfg(loom)]
impl AtomicWaker {
    pub(crate) fn new() -> AtomicWaker {
        AtomicWaker(loom::sync::Mutex::new(None))
    }

    pub(crate) fn register(&self, waker: &std::task::Waker) {
        *self.0.lock().unwrap() = Some(waker.clone());
    }

    pub(crate) fn wake(&self) {
        let waker = self.0.lock().unwrap().take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    pub(crate) fn take(&self) -> Option<std::task::Waker> {
        self.0.lock().unwrap().take()
    }
}
