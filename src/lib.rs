#![doc = include_str!("../README.md")]
//!
//! # Architecture
//!
//! Every shard is one thread pinned to one core. It owns a run queue that no
//! other thread touches, a timer wheel, and an I/O driver (an io_uring ring,
//! or epoll/kqueue through mio where io_uring is refused). The only
//! thread-safe part of a shard is its *inbox*: tasks woken from other
//! threads, and futures sent with [`spawn_on`], arrive there and are drained
//! in batches once per turn of the shard's loop. A shard that has nothing to
//! do parks in its driver until the next timer deadline; a remote wake makes
//! the unpark syscall only when the shard is actually parked.
//!
//! Why: a task that never leaves its core never pays for atomics, locks or
//! cache-line transfers, and may hold `Rc`s and `RefCell`s (`spawn` accepts
//! `!Send` futures). See `ARCHITECTURE.md` for where to start reading.

#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod buf;
pub mod channel;
pub mod compat;
mod context;
mod driver;
pub mod fs;
#[cfg(all(test, loom))]
mod loom_models;
pub mod net;
pub mod runtime;
mod select;
mod shard;
pub mod signal;
pub mod sync;
mod sys;
pub mod task;
pub mod time;

pub use channel::mpsc::{bounded, unbounded};
pub use driver::{DriverKind, DriverType};
pub use runtime::{Builder, Runtime, RuntimeStats, ShardStats};
pub use task::{
    current_shard, spawn, spawn_blocking, spawn_on, spawn_stealable, yield_now, JoinError,
    JoinHandle, ShardId,
};
pub use time::{sleep, timeout};

#[doc(hidden)]
pub use select::__private;

/// The traits and types owned-buffer I/O needs: `use ringshard::prelude::*;`.
pub mod prelude {
    pub use crate::buf::{BufResult, IoBuf, IoBufMut};
}
