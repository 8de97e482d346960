//! Watched words: a cheaper cross-shard wake for a task whose shard is
//! awake.
//!
//! A task about to wait on a value from another shard may, instead of
//! parking on a waker the sender must call, put a *watching* marker in the
//! word the sender will overwrite (a ring slot's `seq`) and hand the shard
//! a [`Beacon`] on that word. The sender then only writes the word; the
//! shard reads it once per turn and on every round of its spin, and wakes
//! the task locally when it changes. One cache line crosses between the
//! cores per message instead of four (the word, the task's header, the
//! inbox slot and the receiver's waker), and nothing is pushed into the
//! inbox: see BENCHMARKS.md for the round trip this buys.
//!
//! Before the shard parks in its driver it *settles* every beacon: it swaps
//! the watching marker for the parked one, after which the sender wakes the
//! task through its waker as usual. If the swap finds the word changed, the
//! task is woken at once instead.

use crate::sys::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Waker;

/// Beacons one shard watches at most; past that, tasks park the usual way
/// (the shard reads every watched word each turn).
pub(crate) const MAX_WATCHES: usize = 16;

/// A word a shard watches for one waiting task.
pub(crate) struct Beacon {
    /// Keeps `word` allocated, and nothing else: the values around it may
    /// be gone by the time the shard reads it.
    _memory: Arc<dyn Send + Sync>,
    word: *const AtomicUsize,
    /// The word's value while the task waits and the shard watches.
    watching: usize,
    /// What settling puts in its place.
    parked: usize,
}

impl Beacon {
    /// # Safety
    ///
    /// `word` must point into `memory`, stay valid for as long as `memory`
    /// is allocated, and be written only atomically.
    pub(crate) unsafe fn new(
        memory: Arc<dyn Send + Sync>,
        word: &AtomicUsize,
        watching: usize,
        parked: usize,
    ) -> Beacon {
        Beacon {
            _memory: memory,
            word,
            watching,
            parked,
        }
    }

    fn word(&self) -> &AtomicUsize {
        // SAFETY: see `new`: `_memory` keeps the word allocated.
        unsafe { &*self.word }
    }

    /// Whether the word still holds the watching marker. Once it does not,
    /// the task must be woken: a value arrived, or the task stopped
    /// waiting here (then the wake is spurious and harmless).
    pub(crate) fn still_watching(&self) -> bool {
        self.word().load(Ordering::Acquire) == self.watching
    }

    /// Hands the wake back to the writer; false if the word changed first
    /// (the task must be woken now).
    pub(crate) fn settle(&self) -> bool {
        self.word()
            .compare_exchange(
                self.watching,
                self.parked,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }
}

/// A shard's watched beacons, each with the waker of its task.
#[derive(Default)]
pub(crate) struct Watches {
    list: Vec<(Beacon, Waker)>,
}

impl Watches {
    pub(crate) fn has_room(&self) -> bool {
        self.list.len() < MAX_WATCHES
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(crate) fn push(&mut self, beacon: Beacon, waker: Waker) {
        self.list.push((beacon, waker));
    }

    /// Removes the first beacon whose word changed, with its waker.
    pub(crate) fn take_changed(&mut self) -> Option<Waker> {
        let index = self
            .list
            .iter()
            .position(|(beacon, _)| !beacon.still_watching())?;
        Some(self.list.swap_remove(index).1)
    }

    /// Settles and removes every beacon; returns the wakers of the tasks
    /// whose word had changed.
    pub(crate) fn settle_all(&mut self) -> Vec<Waker> {
        self.list
            .drain(..)
            .filter_map(|(beacon, waker)| (!beacon.settle()).then_some(waker))
            .collect()
    }

    pub(crate) fn clear(&mut self) -> Vec<(Beacon, Waker)> {
        std::mem::take(&mut self.list)
    }
}
