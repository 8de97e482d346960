//! loom models of the cross-thread protocols, run on the real code (its
//! atomics are loom's under `--cfg loom`, see `sys::atomic`):
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release --lib loom_models
//! ```
//!
//! A blocked thread is `loom::thread::park`: a wake that is lost shows as
//! a deadlock, which loom reports.

use loom::sync::Arc;
use loom::thread;

use crate::channel::ring::{Refused, Ring, Wait};
use crate::sys::atomic::{AtomicUsize, Ordering, ParkFlag};

/// The park handshake of shards (`Core::park` / `Shared::unpark_if_parked`)
/// and of channel receivers (`poll_recv` / `wake_receiver`): a waiter that
/// finds no work after raising its flag blocks, and the waker that
/// published work wakes it. Fails under `ringshard_broken="park_flag_no_fence"`.
#[test]
fn loom_models_park_flag_never_loses_a_wake() {
    loom::model(|| {
        let flag = Arc::new(ParkFlag::new());
        let work = Arc::new(AtomicUsize::new(0));
        let waiter = thread::current();
        let waker = {
            let (flag, work) = (flag.clone(), work.clone());
            thread::spawn(move || {
                work.store(1, Ordering::Relaxed);
                if flag.take() {
                    waiter.unpark();
                }
            })
        };
        flag.raise();
        if work.load(Ordering::Relaxed) == 0 {
            thread::park();
        }
        flag.lower();
        waker.join().unwrap();
    });
}

/// The consumer's side of a bounded channel: pop, else mark the slot
/// parked, look again, and block; the producer that publishes into a
/// parked slot wakes it. Two values through a ring of one: both arrive,
/// in order, and nobody sleeps forever.
#[test]
fn loom_models_ring_push_wakes_a_parked_consumer() {
    loom::model(|| {
        let ring = Arc::new(Ring::<u32>::new(1));
        let consumer = thread::current();
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || {
                for value in 0..2 {
                    let mut value = value;
                    loop {
                        match ring.push(value) {
                            Ok(true) => {
                                consumer.unpark();
                                break;
                            }
                            Ok(false) => break,
                            Err(Refused::Full(back)) => {
                                value = back;
                                thread::yield_now();
                            }
                            Err(Refused::Closed(_)) => unreachable!("never closed"),
                        }
                    }
                }
            })
        };
        let mut got = Vec::new();
        while got.len() < 2 {
            // SAFETY: this thread is the only consumer.
            if let Some(value) = unsafe { ring.pop() } {
                got.push(value);
                continue;
            }
            // SAFETY: as above.
            match unsafe { ring.park(false) } {
                Wait::Arrived => {}
                Wait::Parked => {
                    // SAFETY: as above.
                    match unsafe { ring.pop() } {
                        Some(value) => got.push(value),
                        None => thread::park(),
                    }
                }
                Wait::Watched(_) => unreachable!("not watching"),
            }
        }
        assert_eq!(got, [0, 1]);
        producer.join().unwrap();
    });
}

/// A watched slot: the consumer's shard reads the slot and, before it
/// parks, settles the watch back to parked. Either it sees the value, or
/// the producer sees the parked mark and wakes it.
#[test]
fn loom_models_a_settled_watch_never_loses_the_value() {
    loom::model(|| {
        let ring = Arc::new(Ring::<u32>::new(2));
        let consumer = thread::current();
        // SAFETY: this thread is the only consumer.
        let Wait::Watched(beacon) = (unsafe { ring.park(true) }) else {
            panic!("an empty ring is watched");
        };
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || {
                if ring.push(7).expect("room") {
                    consumer.unpark();
                }
            })
        };
        // The shard: a look at the beacon, then the settle before parking.
        if beacon.still_watching() && beacon.settle() {
            // SAFETY: as above.
            while unsafe { ring.pop() }.is_none() {
                thread::park();
            }
        } else {
            // SAFETY: as above.
            assert_eq!(
                unsafe { ring.pop() },
                Some(7),
                "the word changed: it is there"
            );
        }
        producer.join().unwrap();
    });
}

/// A close racing two pushes: every push that was not refused is received
/// before the ring reads finished, and nothing after.
#[test]
fn loom_models_a_close_racing_pushes_loses_nothing() {
    loom::model(|| {
        let ring = Arc::new(Ring::<u32>::new(4));
        let producers: Vec<_> = (0..2)
            .map(|value| {
                let ring = ring.clone();
                thread::spawn(move || u32::from(ring.push(value).is_ok()))
            })
            .collect();
        ring.close();
        let mut received = 0;
        loop {
            // SAFETY: this thread is the only consumer.
            if unsafe { ring.pop() }.is_some() {
                received += 1;
            // SAFETY: as above.
            } else if unsafe { ring.finished() } {
                break;
            } else {
                // A push claimed before the close is still publishing.
                thread::yield_now();
            }
        }
        let sent: u32 = producers.into_iter().map(|p| p.join().unwrap()).sum();
        assert_eq!(received, sent);
    });
}

/// A waker that raises a loom flag.
struct Flag(crate::sys::atomic::AtomicBool);

impl std::task::Wake for Flag {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
}

/// Polls `future` once with a [`Flag`] waker.
fn poll_once<F: std::future::Future + Unpin>(
    future: &mut F,
    flag: &std::sync::Arc<Flag>,
) -> std::task::Poll<F::Output> {
    let waker = std::task::Waker::from(flag.clone());
    std::pin::Pin::new(future).poll(&mut std::task::Context::from_waker(&waker))
}

/// A oneshot value sent from another thread, or its sender dropped: a
/// receiver that was pending has been woken once the sender is done, and
/// then has the value or the error. (Under loom its waker slot is a loom
/// mutex with `atomic-waker`'s contract: that crate's own atomics are
/// invisible to loom.)
#[test]
fn loom_models_oneshot_send_or_drop_always_wakes_the_receiver() {
    for send in [true, false] {
        loom::model(move || {
            let (tx, mut rx) = crate::channel::oneshot::channel::<u32>();
            let sender = thread::spawn(move || {
                if send {
                    tx.send(7).unwrap();
                } else {
                    drop(tx);
                }
            });
            let flag = std::sync::Arc::new(Flag(crate::sys::atomic::AtomicBool::new(false)));
            let first = poll_once(&mut rx, &flag);
            sender.join().unwrap();
            let got = match first {
                std::task::Poll::Ready(got) => got,
                std::task::Poll::Pending => {
                    assert!(flag.0.load(Ordering::Acquire), "the wake was lost");
                    match poll_once(&mut rx, &flag) {
                        std::task::Poll::Ready(got) => got,
                        std::task::Poll::Pending => panic!("woken, yet still pending"),
                    }
                }
            };
            assert_eq!(got.ok(), send.then_some(7));
        });
    }
}

/// A close racing a send: the value ends up with exactly one side (the
/// receiver's `try_recv`, or the sender's `Err`), never both or neither.
#[test]
fn loom_models_oneshot_close_racing_send_keeps_the_value_once() {
    loom::model(|| {
        let (tx, mut rx) = crate::channel::oneshot::channel::<u32>();
        let sender = thread::spawn(move || tx.send(7).is_err());
        rx.close();
        let sender_kept = sender.join().unwrap();
        let receiver_got = rx.try_recv().is_ok();
        assert!(
            sender_kept != receiver_got,
            "kept {sender_kept}, got {receiver_got}"
        );
    });
}
