//! `select!` accepts and means what tokio's does (SPEC §4): the behaviours
//! of tokio's `macros_select.rs`, written anew, on one shard and on the
//! second of two.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ringshard::{select, sleep};

/// `else` alone is the value of the `select!`.
#[test]
fn else_alone_is_the_value() {
    common::on_one_then_second_shard(|| async {
        let v: u32 = select! { else => 7 };
        assert_eq!(v, 7);
    });
}

/// A branch's future may borrow a temporary (tokio #6721).
#[test]
fn a_branch_may_borrow_a_temporary() {
    common::on_one_then_second_shard(|| async {
        let v = select! {
            () = &mut std::future::ready(()) => 1,
            () = &mut std::future::pending::<()>() => 2,
        };
        assert_eq!(v, 1);
    });
}

/// `biased;` polls in the order written; a false precondition's future is
/// never polled; a pattern that does not match disables its branch; all
/// disabled runs `else`.
#[test]
fn biased_preconditions_patterns_and_else() {
    common::on_one_then_second_shard(|| async {
        let v = select! {
            biased;
            v = async { 1 } => v,
            v = async { 2 } => v,
        };
        assert_eq!(v, 1);

        let polled = Arc::new(AtomicUsize::new(0));
        let p = polled.clone();
        let v = select! {
            _ = async move { p.fetch_add(1, Ordering::SeqCst) }, if false => 0,
            v = async { 5 } => v,
        };
        assert_eq!(v, 5);
        assert_eq!(
            polled.load(Ordering::SeqCst),
            0,
            "the disabled branch's future never ran"
        );

        let v = select! {
            Some(v) = async { None::<u32> } => v,
            Ok(v) = async { Err::<u32, ()>(()) } => v,
            else => 9,
        };
        assert_eq!(v, 9);

        let v = select! {
            Some(v) = async { None::<u32> } => v,
            v = async {
                sleep(Duration::from_millis(2)).await;
                3
            } => v,
        };
        assert_eq!(
            v, 3,
            "the mismatched branch is disabled, the other still runs"
        );
    });
}

/// Handlers run in the enclosing function: `return`, `?` and `break` act
/// there; the losers are dropped before the handler runs.
#[test]
fn handlers_act_in_the_enclosing_function() {
    common::on_one_then_second_shard(|| async {
        async fn first_even(values: &[u32]) -> Result<u32, &'static str> {
            for &v in values {
                select! {
                    r = async move { if v == 99 { Err("bad") } else { Ok(v) } } => {
                        let v = r?;
                        if v % 2 == 0 {
                            return Ok(v);
                        }
                    }
                    _ = sleep(Duration::from_secs(5)) => break,
                }
            }
            Err("none")
        }
        assert_eq!(first_even(&[1, 3, 4, 5]).await, Ok(4));
        assert_eq!(first_even(&[1, 99, 4]).await, Err("bad"));
        assert_eq!(first_even(&[1, 3]).await, Err("none"));

        struct Loser(Arc<AtomicUsize>);
        impl Drop for Loser {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicUsize::new(0));
        let loser = Loser(dropped.clone());
        let d = dropped.clone();
        select! {
            () = async move {
                let _loser = loser;
                std::future::pending::<()>().await
            } => {}
            () = async {} => assert_eq!(d.load(Ordering::SeqCst), 1, "dropped before the handler"),
        }
    });
}
