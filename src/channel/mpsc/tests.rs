use std::sync::atomic::AtomicUsize;
use std::task::{Wake, Waker};
use std::thread;

use super::*;

/// A waker that counts its wakes.
#[derive(Default)]
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counter() -> (Arc<Counter>, Waker) {
    let counter = Arc::new(Counter::default());
    (counter.clone(), Waker::from(counter))
}

fn wakes(counter: &Counter) -> usize {
    counter.0.load(Ordering::SeqCst)
}

fn poll<F: Future + Unpin>(future: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(future).poll(&mut Context::from_waker(waker))
}

#[test]
fn full_channel_makes_send_wait_until_a_recv() {
    let (tx, mut rx) = bounded(2);
    tx.try_send(1).unwrap();
    tx.try_send(2).unwrap();
    let (count, waker) = counter();
    let mut send = tx.send(3);
    assert!(poll(&mut send, &waker).is_pending());
    assert!(poll(&mut send, &waker).is_pending());
    assert_eq!(wakes(&count), 0);
    assert_eq!(rx.try_recv(), Ok(1));
    assert_eq!(wakes(&count), 1);
    assert!(matches!(poll(&mut send, &waker), Poll::Ready(Ok(()))));
    drop(send);
    assert_eq!(rx.try_recv(), Ok(2));
    assert_eq!(rx.try_recv(), Ok(3));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
}

#[test]
fn dropped_woken_sender_passes_the_room_on() {
    let (tx, mut rx) = bounded(1);
    tx.try_send(0).unwrap();
    let (first_count, first_waker) = counter();
    let (second_count, second_waker) = counter();
    let mut first = tx.send(1);
    let mut second = tx.send(2);
    assert!(poll(&mut first, &first_waker).is_pending());
    assert!(poll(&mut second, &second_waker).is_pending());
    assert_eq!(rx.try_recv(), Ok(0));
    assert_eq!((wakes(&first_count), wakes(&second_count)), (1, 0));
    drop(first);
    assert_eq!(wakes(&second_count), 1, "the second sender was never woken");
    assert!(matches!(
        poll(&mut second, &second_waker),
        Poll::Ready(Ok(()))
    ));
    drop(second);
    assert_eq!(rx.try_recv(), Ok(2));
}

#[test]
fn dropped_receiver_fails_waiting_senders() {
    let (tx, rx) = bounded(1);
    tx.try_send(String::from("a")).unwrap();
    let (count, waker) = counter();
    let mut send = tx.send(String::from("b"));
    assert!(poll(&mut send, &waker).is_pending());
    drop(rx);
    assert_eq!(wakes(&count), 1);
    match poll(&mut send, &waker) {
        Poll::Ready(Err(SendError(value))) => assert_eq!(value, "b"),
        other => panic!("expected the value back, got {other:?}"),
    }
    assert!(tx.is_closed());
    assert!(matches!(
        tx.try_send(String::new()),
        Err(TrySendError::Closed(_))
    ));
}

#[test]
fn receiver_sees_the_end_after_the_last_value() {
    let (tx, mut rx) = unbounded();
    let tx2 = tx.clone();
    tx.send(1).unwrap();
    drop(tx);
    let (count, waker) = counter();
    let mut recv = rx.recv();
    assert_eq!(poll(&mut recv, &waker), Poll::Ready(Some(1)));
    let mut recv = rx.recv();
    assert!(poll(&mut recv, &waker).is_pending());
    drop(tx2);
    assert_eq!(wakes(&count), 1);
    assert_eq!(poll(&mut recv, &waker), Poll::Ready(None));
}

#[test]
fn values_queued_at_receiver_drop_are_dropped_then() {
    let token = Arc::new(());
    let (tx, rx) = bounded(8);
    for _ in 0..8 {
        tx.try_send(token.clone()).unwrap();
    }
    drop(rx);
    assert_eq!(Arc::strong_count(&token), 1);
    drop(tx);
}

#[test]
#[should_panic(expected = "capacity must be 1..=")]
fn zero_capacity_is_refused() {
    let _ = bounded::<u8>(0);
}

/// Two threads, a one-slot channel: every value arrives, in order, and the
/// blocked sender is always woken.
#[test]
fn stress_one_slot_channel_between_threads() {
    for _ in 0..20 {
        let (tx, mut rx) = bounded(1);
        let sender = thread::spawn(move || {
            for i in 0..5_000u32 {
                tx.blocking_send(i).unwrap();
            }
        });
        for i in 0..5_000u32 {
            assert_eq!(rx.blocking_recv(), Some(i));
        }
        assert_eq!(rx.blocking_recv(), None);
        sender.join().unwrap();
    }
}

#[test]
fn stress_many_threads_into_an_unbounded_channel() {
    let (tx, mut rx) = unbounded::<(usize, u32)>();
    let senders: Vec<_> = (0..4)
        .map(|t| {
            let tx = tx.clone();
            thread::spawn(move || (0..20_000).for_each(|i| tx.send((t, i)).unwrap()))
        })
        .collect();
    drop(tx);
    let mut next = [0u32; 4];
    while let Some((t, i)) = rx.blocking_recv() {
        assert_eq!(i, next[t], "sender {t} out of order");
        next[t] += 1;
    }
    assert_eq!(next, [20_000; 4]);
    senders.into_iter().for_each(|s| s.join().unwrap());
}

/// Runs `f` on a thread and returns its result, failing the test if it
/// takes more than 10 s (a drain that never ends).
fn within<T: std::marker::Send + 'static>(
    f: impl FnOnce() -> T + std::marker::Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .expect("the receiver never saw the end")
}

/// tokio's drain idiom: after `close`, `recv` gives what was sent and then
/// `None`, though a sender still lives; `try_recv` says `Disconnected`.
#[test]
fn close_then_drain_ends_with_none_while_senders_live() {
    let (tx, mut rx) = bounded(4);
    tx.try_send(1).unwrap();
    tx.try_send(2).unwrap();
    rx.close();
    assert!(tx.try_send(3).is_err());
    let (got, mut rx) = within(move || {
        let mut got = Vec::new();
        while let Some(v) = rx.blocking_recv() {
            got.push(v);
        }
        (got, rx)
    });
    assert_eq!(got, [1, 2]);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));

    let (utx, mut urx) = unbounded();
    utx.send(1).unwrap();
    urx.close();
    assert!(utx.send(2).is_err());
    let (got, mut urx) = within(move || ((urx.blocking_recv(), urx.blocking_recv()), urx));
    assert_eq!(got, (Some(1), None));
    assert_eq!(urx.try_recv(), Err(TryRecvError::Disconnected));
    drop((tx, utx));
}

/// Sends racing a close from other threads: every send that returned `Ok`
/// is received before the `None`, none after, on both kinds.
#[test]
fn a_send_racing_the_close_is_refused_or_received_never_lost() {
    for round in 0..200 {
        let (tx, mut rx) = bounded::<u64>(8);
        let (utx, mut urx) = unbounded::<u64>();
        let senders: Vec<_> = (0..3)
            .map(|_| {
                let (tx, utx) = (tx.clone(), utx.clone());
                thread::spawn(move || {
                    let mut sent = (0, 0);
                    for i in 0..50 {
                        if tx.try_send(i).is_ok() {
                            sent.0 += 1;
                        }
                        if utx.send(i).is_ok() {
                            sent.1 += 1;
                        }
                    }
                    sent
                })
            })
            .collect();
        if round % 2 == 0 {
            thread::yield_now();
        }
        rx.close();
        urx.close();
        let received = within(move || {
            let mut received = (0, 0);
            while rx.blocking_recv().is_some() {
                received.0 += 1;
            }
            while urx.blocking_recv().is_some() {
                received.1 += 1;
            }
            received
        });
        let sent = senders
            .into_iter()
            .map(|s| s.join().unwrap())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        assert_eq!(received, sent, "round {round}: sent vs received");
        drop((tx, utx));
    }
}

/// Two threads bounce a value through two unbounded channels: every hop
/// finds the receiver parked or about to, so a push that misses the park
/// (`ringshard_broken = "unbounded_push_ignores_park"`) leaves it asleep.
#[test]
fn unbounded_ping_pong_between_threads_never_loses_a_wake() {
    const TRIPS: u32 = 20_000;
    let (ping_tx, mut ping_rx) = unbounded::<u32>();
    let (pong_tx, mut pong_rx) = unbounded::<u32>();
    let echo = thread::spawn(move || {
        while let Some(v) = ping_rx.blocking_recv() {
            pong_tx.send(v + 1).unwrap();
        }
    });
    let last = within(move || {
        let mut v = 0;
        for _ in 0..TRIPS {
            ping_tx.send(v).unwrap();
            v = pong_rx.blocking_recv().expect("the echo thread lives");
        }
        v
    });
    assert_eq!(last, TRIPS);
    echo.join().unwrap();
}
