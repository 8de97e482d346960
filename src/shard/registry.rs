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

use slab::Slab;

use super::{with_current, RuntimeShared};

/// The tasks registered on one shard. Shard-local.
#[derive(Default)]
pub(crate) struct Registry {
    tasks: RefCell<Slab<Waker>>,
}

/// The stealable tasks of a runtime.
#[derive(Default)]
pub(crate) struct SharedRegistry {
    tasks: Mutex<Slab<Waker>>,
}

impl SharedRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slab<Waker>> {
        self.tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Clones of every registered waker.
    pub(crate) fn wakers(&self) -> Vec<Waker> {
        self.lock().iter().map(|(_, waker)| waker.clone()).collect()
    }
}

impl Registry {
    /// Clones of every registered waker.
    pub(crate) fn wakers(&self) -> Vec<Waker> {
        self.tasks
            .borrow()
            .iter()
            .map(|(_, waker)| waker.clone())
            .collect()
    }
}

/// A task's entry in a registry; leaving it on drop.
pub(crate) enum Registration {
    /// Not polled yet.
    Pending,
    /// In the registry of the shard `uid`.
    Local { uid: u64, key: usize },
    /// In the runtime's registry of stealable tasks.
    Shared {
        runtime: Arc<RuntimeShared>,
        key: usize,
    },
    /// Polled outside a shard (cannot happen through the public API).
    Nowhere,
}

impl Registration {
    /// Registers the task whose waker is `waker` with the current shard (or
    /// its runtime, for a stealable task). Called on the task's first poll.
    pub(crate) fn register(waker: &Waker, stealable: bool) -> Registration {
        with_current(|core| {
            if stealable {
                let key = core.runtime.registry.lock().insert(waker.clone());
                Registration::Shared {
                    runtime: core.runtime.clone(),
                    key,
                }
            } else {
                match core.registry.tasks.try_borrow_mut() {
                    Ok(mut tasks) => Registration::Local {
                        uid: core.uid,
                        key: tasks.insert(waker.clone()),
                    },
                    Err(_) => Registration::Nowhere,
                }
            }
        })
        .unwrap_or(Registration::Nowhere)
    }

    pub(crate) fn is_pending(&self) -> bool {
        matches!(self, Registration::Pending)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        match self {
            &mut Registration::Local { uid, key } => {
                // A shard-bound task is dropped on its shard's thread; were
                // it not, its waker would stay registered (a leak, never a
                // wrong access).
                let waker = with_current(|core| {
                    if core.uid != uid {
                        return None;
                    }
                    core.registry.tasks.try_borrow_mut().ok()?.try_remove(key)
                });
                drop(waker);
            }
            Registration::Shared { runtime, key } => {
                let waker = runtime.registry.lock().try_remove(*key);
                drop(waker);
            }
            Registration::Pending | Registration::Nowhere => {}
        }
    }
}
