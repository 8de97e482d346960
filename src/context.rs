//! The one seam between the layers above a shard (drivers' ops, sockets,
//! timers, tasks, channels) and the shard running on this thread.
//!
//! Everything that needs "the current shard" comes through here: the
//! thread-local pointer to its [`Core`] and the few questions the I/O layers
//! ask of it (its driver, whether anything else is runnable, where a socket
//! dropped off its shard goes). `driver/` and `net/` never name the shard
//! module; tokio's `runtime::context` is the model.

use std::cell::Cell;
use std::ptr;

use crate::driver::Driver;
use crate::shard::Core;

thread_local! {
    /// The shard running on this thread, null outside a shard.
    static CURRENT: Cell<*const Core> = const { Cell::new(ptr::null()) };
}

/// Calls `f` with the shard running on this thread, if any.
pub(crate) fn with_current<R>(f: impl FnOnce(&Core) -> R) -> Option<R> {
    let core = CURRENT.with(Cell::get);
    // SAFETY: CURRENT is only non-null between `enter` and the drop of its
    // guard, which borrows the Core for that whole time.
    (!core.is_null()).then(|| f(unsafe { &*core }))
}

/// Whether this thread is running a shard.
pub(crate) fn in_shard() -> bool {
    !CURRENT.with(Cell::get).is_null()
}

/// Makes `core` the current shard until the guard drops.
pub(crate) struct EnterGuard<'a> {
    previous: *const Core,
    _core: &'a Core,
}

pub(crate) fn enter(core: &Core) -> EnterGuard<'_> {
    let previous = CURRENT.with(|current| current.replace(core));
    EnterGuard {
        previous,
        _core: core,
    }
}

impl Drop for EnterGuard<'_> {
    fn drop(&mut self) {
        CURRENT.with(|current| current.set(self.previous));
    }
}

/// Calls `f` with the current shard's uid and driver.
///
/// # Panics
///
/// If the driver is already in use (a call nested in another); the ops
/// never nest, and the few callers that may (drops, wakes) use
/// [`with_free_driver`].
pub(crate) fn with_current_driver<R>(f: impl FnOnce(u64, &mut Driver) -> R) -> Option<R> {
    with_current(|core| f(core.uid(), &mut core.driver().borrow_mut()))
}

/// Calls `f` with the driver of the shard `uid` if that shard runs on this
/// thread and its driver is not already in use.
pub(crate) fn with_driver_of<R>(uid: u64, f: impl FnOnce(&mut Driver) -> R) -> Option<R> {
    if with_current(Core::uid) != Some(uid) {
        return None;
    }
    with_free_driver(f)
}

/// Calls `f` with the current shard's driver, if this thread runs a shard
/// and its driver is not already in use.
pub(crate) fn with_free_driver<R>(f: impl FnOnce(&mut Driver) -> R) -> Option<R> {
    with_current(|core| Some(f(&mut *core.driver().try_borrow_mut().ok()?))).flatten()
}

/// Whether the current shard's run queue is empty: the task being polled
/// is the only work of this turn.
pub(crate) fn nothing_else_ready() -> bool {
    with_current(Core::run_queue_is_empty).unwrap_or(false)
}

/// Hands a socket dropped off its shard (`uid`) to that shard, which
/// releases it at its next turn; see `shard::shared`.
pub(crate) use crate::shard::release_on;
