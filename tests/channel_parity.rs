//! tokio's names and meanings for the channels (SPEC §4), the behaviours
//! tokio's own `sync_mpsc.rs` and `sync_oneshot.rs` check, written anew:
//! each scenario on one shard, and with its other side on a second shard.
//!
//! Tests shown to fail against a deliberately broken build name it:
//! `RUSTFLAGS='--cfg ringshard_broken="<name>"' cargo test --test channel_parity`.

mod common;

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use ringshard::channel::mpsc::{self, TryRecvError, TrySendError};
use ringshard::channel::oneshot;
use ringshard::{sleep, spawn, spawn_on, yield_now, JoinHandle, Runtime, ShardId};

/// Spawns `f` on shard `other`.
fn on<F, Fut>(other: usize, f: F) -> JoinHandle<Fut::Output>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    spawn_on(ShardId::new(other), f)
}

/// Waits (bounded) until `cond` holds, letting other tasks and shards run.
async fn until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        yield_now().await;
        sleep(Duration::from_micros(200)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Polls `future` once; if it is pending (queued for room), counts that
/// in `queued`; then runs it to its end.
async fn queued_then<F: Future>(future: F, queued: &AtomicUsize) -> F::Output {
    let mut future = pin!(future);
    let first = std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(output) => output,
        Poll::Pending => {
            queued.fetch_add(1, Ordering::SeqCst);
            future.await
        }
    }
}

/// A woken sender owns the room it was woken for: a `try_send` (or a
/// `try_reserve`) that comes after cannot take it (the first
/// defect: `try_send` took the room and the waiter slept again).
#[test]
fn a_woken_sender_owns_the_room_it_was_woken_for() {
    common::one_and_two_shards(|other| async move {
        let (tx, mut rx) = mpsc::bounded::<u32>(1);
        tx.send(1).await.unwrap();
        let waiting = Arc::new(AtomicUsize::new(0));
        let (tx2, w) = (tx.clone(), waiting.clone());
        let sender = on(other, move || async move {
            queued_then(tx2.send(2), &w).await.unwrap();
        });
        until("the sender waits", || waiting.load(Ordering::SeqCst) == 1).await;
        assert_eq!(rx.recv().await, Some(1));
        // The waiting sender was woken for that room.
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        assert!(matches!(tx.try_reserve(), Err(TrySendError::Full(()))));
        sender.await.unwrap();
        assert_eq!(rx.recv().await, Some(2));
        tx.try_send(3).unwrap();
        assert_eq!(rx.recv().await, Some(3));
    });
}

/// A sender that comes just after a waiter was woken (its `send`, not a
/// `try_send`) queues behind it: the woken waiter's value comes first.
/// Failed on 06fcc7d, whose waiters were woken without their room.
#[test]
fn a_newcomer_send_queues_behind_a_woken_waiter() {
    common::one_and_two_shards(|other| async move {
        let (tx, mut rx) = mpsc::bounded::<u32>(1);
        tx.send(1).await.unwrap();
        let queued = Arc::new(AtomicUsize::new(0));
        let (tx2, q) = (tx.clone(), queued.clone());
        let waiter = on(other, move || async move {
            queued_then(tx2.send(2), &q).await.unwrap()
        });
        until("the waiter queues", || queued.load(Ordering::SeqCst) == 1).await;
        assert_eq!(rx.recv().await, Some(1));
        // At once, before the woken waiter runs: a local send.
        let tx3 = tx.clone();
        let newcomer = spawn(async move { tx3.send(3).await.unwrap() });
        yield_now().await;
        assert_eq!(rx.recv().await, Some(2), "the woken waiter's value first");
        assert_eq!(rx.recv().await, Some(3));
        waiter.await.unwrap();
        newcomer.await.unwrap();
    });
}

/// A woken sender whose future is never polled again keeps only the room
/// it was granted: `try_send` still uses the rest, and dropping that
/// future gives its room back.
#[test]
fn a_granted_waiter_that_never_runs_blocks_no_one() {
    common::one_and_two_shards(|_| async move {
        let (tx, mut rx) = mpsc::bounded::<u32>(2);
        tx.send(1).await.unwrap();
        tx.send(2).await.unwrap();
        let mut stuck = Box::pin(tx.send(3));
        assert!(common::poll_once(&mut stuck).await.is_pending());
        assert_eq!(rx.recv().await, Some(1), "the room goes to `stuck`");
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(tx.capacity(), 1, "one room granted, one free");
        tx.try_send(4).unwrap();
        assert!(matches!(tx.try_send(5), Err(TrySendError::Full(5))));
        drop(stuck);
        assert_eq!(tx.capacity(), 1, "the granted room came back");
        tx.try_send(5).unwrap();
        assert_eq!(rx.recv().await, Some(4));
        assert_eq!(rx.recv().await, Some(5));
    });
}

/// Waiting senders and reservations are served in the order they came.
#[test]
fn waiting_senders_are_served_in_order() {
    common::one_and_two_shards(|other| async move {
        let (tx, mut rx) = mpsc::bounded::<u32>(1);
        tx.send(0).await.unwrap();
        let queued = Arc::new(AtomicUsize::new(0));
        let mut senders = Vec::new();
        for i in 1..=5u32 {
            let (tx, q) = (tx.clone(), queued.clone());
            senders.push(on(other, move || async move {
                queued_then(tx.send(i), &q).await.unwrap();
            }));
            until("the sender queues", || {
                queued.load(Ordering::SeqCst) == i as usize
            })
            .await;
        }
        let mut got = Vec::new();
        for _ in 0..6 {
            got.push(rx.recv().await.unwrap());
        }
        assert_eq!(got, [0, 1, 2, 3, 4, 5]);
        for sender in senders {
            sender.await.unwrap();
        }
    });
}

/// `capacity()` is the free room (reservations count), `max_capacity()`
/// the bound; a permit sends without waiting; a dropped permit gives its
/// room back, to a waiting sender first.
#[test]
fn capacity_reserve_and_permits_mean_what_they_mean_in_tokio() {
    common::one_and_two_shards(|other| async move {
        let (tx, mut rx) = mpsc::bounded::<u32>(3);
        assert_eq!((tx.capacity(), tx.max_capacity()), (3, 3));
        tx.send(1).await.unwrap();
        assert_eq!(tx.capacity(), 2);
        let permit = tx.reserve().await.unwrap();
        assert_eq!(tx.capacity(), 1);
        let second = tx.try_reserve().unwrap();
        assert_eq!(tx.capacity(), 0);
        assert!(matches!(tx.try_send(9), Err(TrySendError::Full(9))));
        // A sender waiting for room while the permits hold it.
        let (tx2, queued) = (tx.clone(), Arc::new(AtomicUsize::new(0)));
        let q = queued.clone();
        let waiter = on(other, move || async move {
            queued_then(tx2.send(3), &q).await.unwrap()
        });
        until("the sender queues", || queued.load(Ordering::SeqCst) == 1).await;
        permit.send(2);
        assert_eq!(tx.max_capacity(), 3);
        // The unused permit's room goes to the waiter.
        drop(second);
        waiter.await.unwrap();
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, Some(3));
        assert_eq!(tx.capacity(), 3);
        // Reserve waits for room.
        for i in 0..3 {
            tx.send(i).await.unwrap();
        }
        let (tx3, queued) = (tx.clone(), Arc::new(AtomicUsize::new(0)));
        let q = queued.clone();
        let reserver = on(other, move || async move {
            let permit = queued_then(tx3.reserve(), &q).await.unwrap();
            permit.send(10);
        });
        until("the reserver queues", || queued.load(Ordering::SeqCst) == 1).await;
        assert!(!reserver.is_finished());
        assert_eq!(rx.recv().await, Some(0));
        reserver.await.unwrap();
        let rest: Vec<u32> = [rx.recv().await, rx.recv().await, rx.recv().await]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(rest, [1, 2, 10]);
        // A permit held across the receiver's close still sends, and the
        // receiver sees the end only after it (as in tokio).
        let permit = tx.reserve().await.unwrap();
        let unused = tx.reserve().await.unwrap();
        rx.close();
        assert!(tx.reserve().await.is_err());
        assert!(matches!(tx.try_reserve(), Err(TrySendError::Closed(()))));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "permits are out");
        permit.send(11);
        assert_eq!(rx.recv().await, Some(11));
        let mut recv = Box::pin(rx.recv());
        assert!(
            common::poll_once(&mut recv).await.is_pending(),
            "a permit is still out"
        );
        drop(unused);
        assert_eq!(recv.await, None, "the last permit went: the end");
    });
}

/// After `close()` with live senders: buffered values are still received,
/// then `recv()` is `None` and `try_recv()` is `Disconnected`; sends fail.
#[test]
fn after_close_the_receiver_drains_then_ends() {
    common::one_and_two_shards(|other| async move {
        let (tx, mut rx) = mpsc::bounded::<u32>(8);
        let (utx, mut urx) = mpsc::unbounded::<u32>();
        let (t, u) = (tx.clone(), utx.clone());
        on(other, move || async move {
            t.send(1).await.unwrap();
            t.send(2).await.unwrap();
            u.send(1).unwrap();
            u.send(2).unwrap();
        })
        .await
        .unwrap();
        rx.close();
        urx.close();
        assert!(rx.is_closed() && urx.is_closed());
        assert!(tx.send(3).await.is_err() && utx.send(3).is_err());
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
        assert_eq!(rx.recv().await, None);
        assert_eq!(urx.recv().await, Some(1));
        assert_eq!(urx.try_recv(), Ok(2));
        assert_eq!(urx.try_recv(), Err(TryRecvError::Disconnected));
        assert_eq!(urx.recv().await, None);
        // The senders are still alive.
        drop((tx, utx));
    });
}

/// `recv_many` waits for one value, then takes what is there up to its
/// limit, appending; 0 for a limit of 0 and at the end.
#[test]
fn recv_many_takes_what_is_there_up_to_its_limit() {
    common::one_and_two_shards(|other| async move {
        let (tx, mut rx) = mpsc::bounded::<u32>(16);
        let (utx, mut urx) = mpsc::unbounded::<u32>();
        let mut buffer = vec![100];
        assert_eq!(rx.recv_many(&mut buffer, 0).await, 0);
        let (t, u) = (tx.clone(), utx.clone());
        let sender = on(other, move || async move {
            sleep(Duration::from_millis(5)).await;
            for i in 0..10 {
                t.send(i).await.unwrap();
                u.send(i).unwrap();
            }
        });
        // Waits for the first value.
        let n = rx.recv_many(&mut buffer, 4).await;
        assert!((1..=4).contains(&n), "{n}");
        sender.await.unwrap();
        while buffer.len() < 11 {
            assert!(rx.recv_many(&mut buffer, 4).await <= 4);
        }
        assert_eq!(buffer, [100, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let mut ubuffer = Vec::new();
        while ubuffer.len() < 10 {
            urx.recv_many(&mut ubuffer, 100).await;
        }
        assert_eq!(ubuffer, (0..10).collect::<Vec<_>>());
        drop((tx, utx));
        assert_eq!(rx.recv_many(&mut buffer, 4).await, 0);
        assert_eq!(urx.recv_many(&mut ubuffer, 4).await, 0);
    });
}

/// `Sender::closed` resolves once the receiver closes or goes, on either
/// kind; `Receiver::is_closed` says the channel ended for sends.
#[test]
fn senders_learn_the_receiver_closed() {
    common::one_and_two_shards(|other| async move {
        let (tx, mut rx) = mpsc::bounded::<u32>(1);
        let (utx, urx) = mpsc::unbounded::<u32>();
        let (t, u) = (tx.clone(), utx.clone());
        let waiters = on(other, move || async move {
            let bounded = spawn(async move { t.closed().await });
            let unbounded = spawn(async move { u.closed().await });
            bounded.await.unwrap();
            unbounded.await.unwrap();
        });
        sleep(Duration::from_millis(5)).await;
        assert!(!waiters.is_finished());
        assert!(!rx.is_closed());
        rx.close();
        drop(urx);
        waiters.await.unwrap();
        tx.closed().await;
        utx.closed().await;
        assert!(rx.is_closed());
        // Every sender gone is closed too.
        let (tx, rx) = mpsc::bounded::<u32>(1);
        drop(tx);
        assert!(rx.is_closed());
    });
}

/// A `WeakSender` does not keep the channel open; it upgrades while a
/// `Sender` lives.
#[test]
fn weak_senders_upgrade_only_while_a_sender_lives() {
    common::one_and_two_shards(|other| async move {
        let (tx, mut rx) = mpsc::bounded::<u32>(4);
        let weak = tx.downgrade();
        let (utx, mut urx) = mpsc::unbounded::<u32>();
        let uweak = utx.downgrade();
        let (w, uw) = (weak.clone(), uweak.clone());
        on(other, move || async move {
            w.upgrade().unwrap().send(1).await.unwrap();
            uw.upgrade().unwrap().send(1).unwrap();
        })
        .await
        .unwrap();
        drop((tx, utx));
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(
            rx.recv().await,
            None,
            "the weak sender does not keep it open"
        );
        assert_eq!(urx.recv().await, Some(1));
        assert_eq!(urx.recv().await, None);
        assert!(weak.upgrade().is_none() && uweak.upgrade().is_none());
    });
}

/// Counts drops; the one made with `panics` panics in its `Drop`.
struct Noisy {
    drops: Arc<AtomicUsize>,
    panics: bool,
}

impl Drop for Noisy {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        if self.panics {
            panic!("a value that panics in Drop");
        }
    }
}

/// Sends one value into a channel of either kind.
type SendFn = Box<dyn Fn(Noisy)>;

/// Dropping the receiver drops every buffered value now, even when one
/// value's `Drop` panics (the panic goes on after). Broken build that
/// fails it: `receiver_drop_stops_on_panic`.
#[test]
fn a_dropped_receiver_drops_every_value_even_past_a_panic() {
    for bounded in [true, false] {
        let drops = Arc::new(AtomicUsize::new(0));
        let value = |panics| Noisy {
            drops: drops.clone(),
            panics,
        };
        let (sender, receiver): (SendFn, Box<dyn std::any::Any>) = if bounded {
            let (tx, rx) = mpsc::bounded(8);
            (
                Box::new(move |v| tx.try_send(v).map_err(drop).unwrap()),
                Box::new(rx),
            )
        } else {
            let (tx, rx) = mpsc::unbounded();
            (
                Box::new(move |v| tx.send(v).map_err(drop).unwrap()),
                Box::new(rx),
            )
        };
        sender(value(true));
        for _ in 0..4 {
            sender(value(false));
        }
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(receiver)));
        assert!(dropped.is_err(), "the value's panic comes through");
        assert_eq!(
            drops.load(Ordering::SeqCst),
            5,
            "bounded {bounded}: every value dropped with the receiver, the senders still alive"
        );
        drop(sender);
    }
}

/// A waker that counts its clones alive.
struct CountedWake;

impl Wake for CountedWake {
    fn wake(self: Arc<Self>) {}
}

/// Dropping a receiver drops the waker it registered (and so the task it
/// keeps alive) at once, not when the last sender goes. Broken build that
/// fails it: `receiver_keeps_waker`.
#[test]
fn a_dropped_receiver_lets_go_of_its_waker() {
    let wake = Arc::new(CountedWake);
    let waker = Waker::from(wake.clone());
    let mut cx = Context::from_waker(&waker);
    let (tx, mut rx) = mpsc::bounded::<u32>(1);
    let (utx, mut urx) = mpsc::unbounded::<u32>();
    assert!(rx.poll_recv(&mut cx).is_pending());
    assert!(urx.poll_recv(&mut cx).is_pending());
    drop(waker);
    assert!(Arc::strong_count(&wake) > 1, "the receivers hold the waker");
    drop((rx, urx));
    assert_eq!(Arc::strong_count(&wake), 1, "the senders still live");
    drop((tx, utx));
}

/// `oneshot::Sender::closed` resolves when the receiver closes or goes;
/// `is_closed` says so.
#[test]
fn a_oneshot_sender_learns_the_receiver_went() {
    common::one_and_two_shards(|other| async move {
        let (mut tx, rx) = oneshot::channel::<u32>();
        let (mut tx2, mut rx2) = oneshot::channel::<u32>();
        let waiter = on(other, move || async move {
            tx.closed().await;
            assert!(tx.is_closed());
            tx2.closed().await;
            assert!(tx2.send(1).is_err());
        });
        sleep(Duration::from_millis(5)).await;
        assert!(!waiter.is_finished());
        drop(rx);
        rx2.close();
        waiter.await.unwrap();
    });
}

/// A deliberate difference (ARCHITECTURE.md): polling a oneshot receiver
/// again after it completed gives `Err` (tokio panics); the runtime never
/// panics on use.
#[test]
fn a_completed_oneshot_receiver_polled_again_is_an_error_not_a_panic() {
    let rt = common::runtime(Runtime::builder(), 1);
    rt.block_on(async {
        let (tx, mut rx) = oneshot::channel::<u32>();
        tx.send(5).unwrap();
        assert_eq!((&mut rx).await, Ok(5));
        assert!((&mut rx).await.is_err());
        assert_eq!(rx.try_recv(), Err(oneshot::TryRecvError::Closed));
    });
}

/// Many senders on two shards racing `try_send`, `send` and permits into a
/// small channel: every value arrives once, per sender in order.
#[test]
fn racing_senders_and_permits_lose_and_duplicate_nothing() {
    common::one_and_two_shards(|other| async move {
        let (tx, mut rx) = mpsc::bounded::<(u32, u32)>(2);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut senders = Vec::new();
        for s in 0..6u32 {
            let tx = tx.clone();
            let shard = if s % 2 == 0 { 0 } else { other };
            senders.push(on(shard, move || async move {
                for i in 0..300u32 {
                    match i % 3 {
                        0 => tx.send((s, i)).await.unwrap(),
                        1 => tx.reserve().await.unwrap().send((s, i)),
                        _ => {
                            let mut v = (s, i);
                            loop {
                                match tx.try_send(v) {
                                    Ok(()) => break,
                                    Err(TrySendError::Full(back)) => {
                                        v = back;
                                        yield_now().await;
                                    }
                                    Err(TrySendError::Closed(_)) => panic!("closed"),
                                }
                            }
                        }
                    }
                }
            }));
        }
        drop(tx);
        let s2 = seen.clone();
        let receiver = spawn(async move {
            while let Some(v) = rx.recv().await {
                s2.lock().unwrap().push(v);
            }
        });
        for sender in senders {
            sender.await.unwrap();
        }
        receiver.await.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 6 * 300);
        for s in 0..6 {
            let mine: Vec<u32> = seen.iter().filter(|v| v.0 == s).map(|v| v.1).collect();
            assert_eq!(mine, (0..300).collect::<Vec<_>>(), "sender {s}");
        }
    });
}
