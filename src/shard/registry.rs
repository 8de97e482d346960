//! The live tasks of a shard, so shutdown reaches every one of them: also
//! those waiting on something no queue, wheel or driver of the shard holds
//! (another shard's `JoinHandle`, a channel whose sender is gone).
//!
//! A task registers its waker at its first poll and leaves when its future
//! is dropped. Shard-bound tasks go into their shard's registry (no lock:
//! they are only polled and dropped on that thread); stealable tasks, which
//! move between shards, into the runtime's (a mutex, taken twice per task).
//! Shutdown wakes every registered task; its shard then drops it.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use std::task::Waker;

use super::{with_current, Shared};

/// The tasks registered on one shard. Shard-local.
#[derive(Default)]
pub(crate) struct Registry {
    tasks: RefCell<Tasks>,
}

/// The stealable tasks of a runtime.
#[derive(Default)]
pub(crate) struct SharedRegistry {
    tasks: Mutex<Tasks>,
}

impl SharedRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tasks> {
        self.tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Clones of every registered waker.
    pub(crate) fn wakers(&self) -> Vec<Waker> {
        self.lock().wakers()
    }
}

impl Registry {
    /// Clones of every registered waker.
    pub(crate) fn wakers(&self) -> Vec<Waker> {
        self.tasks.borrow().wakers()
    }
}

/// Wakers by key, 16 bytes per live task: a `Slab<Waker>` entry is 24 (its
/// vacant entries hold the next free key beside the waker), so the free
/// keys are kept apart, and only while vacant.
#[derive(Default)]
struct Tasks {
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Tasks {
    fn insert(&mut self, waker: Waker) -> usize {
        match self.free.pop() {
            Some(key) => {
                self.wakers[key] = Some(waker);
                key
            }
            None => {
                self.wakers.push(Some(waker));
                self.wakers.len() - 1
            }
        }
    }

    fn try_remove(&mut self, key: usize) -> Option<Waker> {
        let waker = self.wakers.get_mut(key)?.take()?;
        self.free.push(key);
        Some(waker)
    }

    fn wakers(&self) -> Vec<Waker> {
        self.wakers.iter().flatten().cloned().collect()
    }
}

/// A task's entry in a registry, packed into one word of the task (its
/// key, or a mark), with one more bit the task uses for itself. Which
/// registry the key is in follows from the task: its owner shard's, or the
/// runtime's for a stealable task. The task calls [`leave`] when its
/// future goes.
///
/// [`leave`]: Registration::leave
pub(crate) struct Registration(usize);

/// The task's own bit (`task::CatchUnwind`: its future is gone).
const SPARE: usize = 1 << (usize::BITS - 1);
/// Not polled yet.
const UNREGISTERED: usize = SPARE - 1;
/// Polled outside a shard (cannot happen through the public API), or left.
const NOWHERE: usize = SPARE - 2;

impl Registration {
    pub(crate) const fn pending() -> Registration {
        Registration(UNREGISTERED)
    }

    fn key(&self) -> usize {
        self.0 & !SPARE
    }

    fn set_key(&mut self, key: usize) {
        // A key stays far below the marks (it would need that many tasks
        // alive).
        debug_assert!(key <= NOWHERE);
        self.0 = (self.0 & SPARE) | key.min(NOWHERE);
    }

    pub(crate) fn is_pending(&self) -> bool {
        self.key() == UNREGISTERED
    }

    /// The task's own bit.
    pub(crate) fn spare(&self) -> bool {
        self.0 & SPARE != 0
    }

    pub(crate) fn set_spare(&mut self) {
        self.0 |= SPARE;
    }

    /// Registers the task whose waker is `waker` with the current shard (or
    /// its runtime, for a stealable task). Called on the task's first poll.
    pub(crate) fn register(&mut self, waker: &Waker, stealable: bool) {
        let key = with_current(|core| {
            if stealable {
                Some(core.runtime.registry.lock().insert(waker.clone()))
            } else {
                let mut tasks = core.registry.tasks.try_borrow_mut().ok()?;
                Some(tasks.insert(waker.clone()))
            }
        })
        .flatten();
        self.set_key(key.unwrap_or(NOWHERE));
    }

    /// Leaves the registry of the task owned by `owner`. A shard-bound task
    /// is dropped on its shard's thread, a stealable one on a shard of its
    /// runtime; were it not, its waker would stay registered (a leak, never
    /// a wrong access).
    pub(crate) fn leave(&mut self, owner: &Arc<Shared>, stealable: bool) {
        let key = self.key();
        if key == UNREGISTERED || key == NOWHERE {
            return;
        }
        self.set_key(NOWHERE);
        let waker = with_current(|core| {
            if stealable {
                // A shard of another runtime has another registry. (A
                // stealable task dropped off its runtime's shards, as by a
                // core dropped after a failed shutdown, stays registered
                // until the runtime goes: a leak, never a wrong access.)
                let ours = core.same_runtime(owner);
                return ours.then(|| core.runtime.registry.lock().try_remove(key))?;
            }
            if !Arc::ptr_eq(&core.shared, owner) {
                return None;
            }
            core.registry.tasks.try_borrow_mut().ok()?.try_remove(key)
        });
        drop(waker);
    }
}
