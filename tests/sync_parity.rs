//! `CancellationToken` with tokio-util's names and meanings (SPEC §4): the
//! behaviours of tokio-util's `sync_cancellation_token.rs`, written anew,
//! on one shard and with the other side on a second shard.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ringshard::sync::CancellationToken;
use ringshard::{sleep, spawn_on, ShardId};

/// `run_until_cancelled`: the future's output if it ends first; `None`,
/// with the future dropped, once the token is cancelled; a token already
/// cancelled never polls the future.
#[test]
fn run_until_cancelled_gives_the_output_or_none() {
    common::one_and_two_shards(|other| async move {
        let token = CancellationToken::new();
        assert_eq!(token.run_until_cancelled(async { 1 }).await, Some(1));
        // Cancelled from the other shard while the future waits.
        let t = token.clone();
        let canceller = spawn_on(ShardId::new(other), move || async move {
            sleep(Duration::from_millis(5)).await;
            t.cancel();
        });
        let dropped = Arc::new(AtomicBool::new(false));
        struct Guard(Arc<AtomicBool>);
        impl Drop for Guard {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let guard = Guard(dropped.clone());
        let got = token
            .run_until_cancelled(async move {
                let _guard = guard;
                std::future::pending::<u32>().await
            })
            .await;
        assert_eq!(got, None);
        assert!(dropped.load(Ordering::SeqCst), "the future was dropped");
        canceller.await.unwrap();
        // Already cancelled: the future is never polled, even a ready one.
        let polled = AtomicBool::new(false);
        let got = token
            .run_until_cancelled(async {
                polled.store(true, Ordering::SeqCst);
                2
            })
            .await;
        assert_eq!(got, None);
        assert!(!polled.load(Ordering::SeqCst));
        // Not yet cancelled and both ready in one poll: the output wins
        // (biased towards the future, as tokio-util).
        let token = CancellationToken::new();
        let t = token.clone();
        let got = token
            .run_until_cancelled(async move {
                t.cancel();
                3
            })
            .await;
        assert_eq!(got, Some(3));
    });
}

/// `cancelled_owned` is a `'static` future: it can go to another shard.
#[test]
fn cancelled_owned_moves_into_a_task_on_any_shard() {
    common::one_and_two_shards(|other| async move {
        let token = CancellationToken::new();
        let waiting = token.clone().cancelled_owned();
        let waiter = spawn_on(ShardId::new(other), move || waiting);
        sleep(Duration::from_millis(5)).await;
        assert!(!waiter.is_finished());
        token.cancel();
        waiter.await.unwrap();
        // Dropped while waiting (after a poll registered it): nothing is
        // left registered, and a later wait still sees the cancel.
        let token = CancellationToken::new();
        let mut waiting = Box::pin(token.clone().cancelled_owned());
        assert!(common::poll_once(&mut waiting).await.is_pending());
        drop(waiting);
        token.cancel();
        token.clone().cancelled_owned().await;
    });
}

/// A `DropGuard` cancels its token when dropped; disarmed, it gives the
/// token back uncancelled.
#[test]
fn drop_guards_cancel_unless_disarmed() {
    common::one_and_two_shards(|other| async move {
        let token = CancellationToken::new();
        let child = token.child_token();
        let waiter = spawn_on(ShardId::new(other), move || async move {
            child.cancelled().await
        });
        let guard = token.clone().drop_guard();
        assert!(!token.is_cancelled());
        drop(guard);
        assert!(token.is_cancelled());
        waiter.await.unwrap();

        let token = CancellationToken::new();
        let back = token.clone().drop_guard().disarm();
        drop(back);
        assert!(!token.is_cancelled());
    });
}

/// Children are cancelled with their parent, not the other way round; a
/// child of a cancelled token is born cancelled.
#[test]
fn children_follow_their_parent_only() {
    common::one_and_two_shards(|other| async move {
        let parent = CancellationToken::new();
        let child = parent.child_token();
        let grandchild = child.child_token();
        child.cancel();
        assert!(grandchild.is_cancelled() && !parent.is_cancelled());
        let other_child = parent.child_token();
        let waiter = spawn_on(ShardId::new(other), move || async move {
            other_child.cancelled().await;
        });
        parent.cancel();
        waiter.await.unwrap();
        assert!(parent.child_token().is_cancelled());
    });
}
