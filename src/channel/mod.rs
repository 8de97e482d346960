//! Channels that work between shards and plain threads: [`mpsc`] (bounded
//! and unbounded) and [`oneshot`].
//!
//! A receiver parks by handing its `std::task::Waker` to the channel, and
//! the waker routes the wake (to the local run queue when the sender runs
//! on the receiver's shard, to that shard's inbox otherwise). So a receiver
//! parked on one shard costs nothing until a sender on another shard wakes
//! it, and the channels work, and are tested, without a runtime. One
//! exception knows of shards: a bounded receiver on a shard that spins
//! before parking lets its shard watch the slot it waits on (see
//! `shard::Beacon`), so the sender wakes no one.
//!
//! The hot path never takes a lock: values go through a lock-free queue
//! (our `Ring` for bounded channels, `crossbeam-queue`'s `SegQueue` for
//! unbounded ones), and a sender reads one flag to learn whether the
//! receiver is parked, writing to it only when it must wake the receiver.

pub mod mpsc;
pub mod oneshot;
pub(crate) mod ring;
mod thread;
mod waiters;

#[cfg(test)]
pub(crate) use thread::block_on as thread_block_on;
