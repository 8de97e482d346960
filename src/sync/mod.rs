//! Synchronization between tasks on any shard: [`CancellationToken`].

mod cancellation;

pub use cancellation::{
    CancellationToken, DropGuard, WaitForCancellation, WaitForCancellationOwned,
};
