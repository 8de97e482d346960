//! The op slab's lifecycle, SQE-full and CQ-overflow handling, on real rings.
//!
//! These tests drive the slab with raw NOP and TIMEOUT ops (which have no
//! readiness counterpart, so they are not `Operation`s): [`RawOp`] is the
//! smallest future over `submit` / `poll_op` / `abandon`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use io_uring::{opcode, squeue, types};

use super::{OpKey, UringDriver};
use crate::context;
use crate::driver::{Driver, Orphan};
use crate::{DriverKind, DriverType, Runtime};

/// Resources a raw op keeps until its CQE.
struct Held<T>(T);

impl<T: 'static> Orphan for Held<T> {
    fn complete(self: Box<Self>, _result: i32) {}
}

struct RawOp<T: 'static> {
    key: OpKey,
    held: Option<T>,
    cancel: bool,
}

fn with_uring<R>(f: impl FnOnce(&mut UringDriver) -> R) -> R {
    context::with_current_driver(|_, driver| match driver {
        Driver::Uring(uring) => f(uring),
        _ => panic!("not an io_uring shard"),
    })
    .expect("inside a shard")
}

impl<T: 'static> RawOp<T> {
    /// # Safety
    ///
    /// The SQE's pointers must point into heap memory `held` owns.
    unsafe fn submit(sqe: squeue::Entry, held: T, cancel: bool) -> RawOp<T> {
        // SAFETY: forwarded from this function's contract.
        let key = with_uring(|uring| unsafe { uring.submit(sqe) });
        RawOp {
            key,
            held: Some(held),
            cancel,
        }
    }
}

impl<T: Unpin + 'static> Future for RawOp<T> {
    type Output = (i32, T);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<(i32, T)> {
        let this = self.get_mut();
        match with_uring(|uring| uring.poll_op(this.key, cx.waker())) {
            Some(result) => Poll::Ready((result, this.held.take().expect("polled once"))),
            None => Poll::Pending,
        }
    }
}

impl<T: 'static> Drop for RawOp<T> {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            let orphan: Box<dyn Orphan> = Box::new(Held(held));
            if let Some((orphan, result)) =
                with_uring(|uring| uring.abandon(self.key, orphan, self.cancel))
            {
                orphan.complete(result);
            }
        }
    }
}

async fn nop() -> io::Result<()> {
    // SAFETY: a NOP carries no pointers.
    let (result, ()) = unsafe { RawOp::submit(opcode::Nop::new().build(), (), false) }.await;
    super::op::to_result(result).map(drop)
}

/// A kernel timer of `duration`; `extra` is kept until the kernel is done
/// with the op, even if the future is dropped (no cancel is sent).
async fn timeout_op<T: Unpin + 'static>(duration: Duration, extra: T) -> (io::Result<()>, T) {
    let timespec = Box::new(types::Timespec::from(duration));
    let sqe = opcode::Timeout::new(&*timespec).build();
    // SAFETY: the SQE points at the boxed timespec, held by the op.
    let (result, (_, extra)) = unsafe { RawOp::submit(sqe, (timespec, extra), false) }.await;
    let result = match result {
        r if r >= 0 || r == -libc::ETIME => Ok(()),
        r => Err(io::Error::from_raw_os_error(-r)),
    };
    (result, extra)
}

fn uring(entries: u32) -> Runtime {
    let rt = Runtime::builder()
        .worker_threads(1)
        .driver_type(DriverType::IoUring)
        .io_entries(entries)
        .build()
        .expect("io_uring runtime");
    assert_eq!(rt.driver_kind(), DriverKind::IoUring);
    rt
}

#[test]
fn nop_completes_and_is_counted() {
    let rt = uring(64);
    rt.block_on(async {
        for _ in 0..100 {
            nop().await.unwrap();
        }
    });
    let stats = rt.stats().total();
    assert!(stats.ops_submitted >= 100, "{stats:?}");
    assert!(stats.ops_completed >= 100, "{stats:?}");
}

#[test]
fn ten_thousand_ops_through_eight_entries_all_complete() {
    let rt = uring(8);
    let done = rt.block_on(async {
        let handles: Vec<_> = (0..10_000)
            .map(|i| {
                crate::spawn(async move {
                    if i % 2 == 0 {
                        nop().await.unwrap();
                    } else {
                        timeout_op(Duration::from_millis(1), ()).await.0.unwrap();
                    }
                    i
                })
            })
            .collect();
        let mut sum = 0u64;
        for handle in handles {
            sum += handle.await.unwrap();
        }
        sum
    });
    assert_eq!(done, (0..10_000).sum::<u64>());
    let stats = rt.stats().total();
    assert!(stats.ops_completed >= 10_000, "{stats:?}");
}

#[test]
fn completion_burst_beyond_the_cq_loses_nothing_and_shows_overflow() {
    // CQ of 16 entries; 5,000 timers the kernel fires together while the
    // shard is not reaping.
    let rt = uring(8);
    let fired = rt.block_on(async {
        let handles: Vec<_> = (0..5_000)
            .map(|_| {
                crate::spawn(async { timeout_op(Duration::from_millis(20), ()).await.0.is_ok() })
            })
            .collect();
        let mut fired = 0;
        for handle in handles {
            fired += usize::from(handle.await.unwrap());
        }
        fired
    });
    assert_eq!(fired, 5_000);
    let stats = rt.stats().total();
    assert!(stats.cq_overflows > 0, "no overflow seen: {stats:?}");
}

/// Counts its drops: a resource the kernel "uses" until the CQE.
struct Canary(Arc<AtomicUsize>);

impl Drop for Canary {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn abandoned_op_keeps_its_resources_until_the_cqe_then_frees_them_once() {
    let rt = uring(64);
    let released = Arc::new(AtomicUsize::new(0));
    rt.block_on({
        let released = released.clone();
        async move {
            let handles: Vec<_> = (0..100)
                .map(|_| {
                    let canary = Canary(released.clone());
                    crate::spawn(async move {
                        // Long enough that none completes before the aborts,
                        // however slow the machine (emulation, sanitizers).
                        let _ = timeout_op(Duration::from_secs(2), canary).await;
                    })
                })
                .collect();
            // Let every task run and submit its op (a turn runs at most 61).
            crate::sleep(Duration::from_millis(5)).await;
            for handle in &handles {
                handle.abort();
            }
            for handle in handles {
                assert!(handle.await.unwrap_err().is_cancelled());
            }
            // The futures are gone, the kernel still holds the ops.
            assert_eq!(released.load(Ordering::SeqCst), 0, "freed before the CQE");
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while released.load(Ordering::SeqCst) < 100 && std::time::Instant::now() < deadline {
                crate::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(
                released.load(Ordering::SeqCst),
                100,
                "not freed after the CQE"
            );
        }
    });
    drop(rt);
    assert_eq!(released.load(Ordering::SeqCst), 100, "freed more than once");
}

#[test]
fn shutdown_drains_ops_in_flight() {
    let rt = uring(64);
    let released = Arc::new(AtomicUsize::new(0));
    rt.block_on({
        let released = released.clone();
        async move {
            for _ in 0..50 {
                let canary = Canary(released.clone());
                crate::spawn(async move {
                    let _ = timeout_op(Duration::from_secs(3600), canary).await;
                });
            }
            crate::sleep(Duration::from_millis(5)).await;
        }
    });
    let start = std::time::Instant::now();
    rt.shutdown_timeout(Duration::from_secs(2));
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(released.load(Ordering::SeqCst), 50);
}

fn options() -> crate::driver::DriverOptions {
    crate::driver::DriverOptions {
        entries: 8,
        buffered_reads: false,
        buffered_writes: false,
        multishot_accept: false,
    }
}

/// Drains a test driver as a shard does before dropping it: a park left
/// its eventfd read armed, which a drop would leak (by design).
fn close(mut driver: UringDriver) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    driver.shutdown(deadline, &mut crate::driver::Ready::default());
}

/// Whether `eventfd`'s counter is non-zero, without blocking.
fn eventfd_readable(eventfd: &crate::sys::EventFd) -> bool {
    let mut poll = libc::pollfd {
        fd: eventfd.raw(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no timeout.
    unsafe { libc::poll(&mut poll, 1, 0) == 1 }
}

#[test]
fn a_message_wakes_a_parked_ring_without_its_eventfd() {
    let mut waker = UringDriver::new(options()).expect("ring");
    let mut target = UringDriver::new(options()).expect("ring");
    if target.targets.off {
        // Probed off (before 6.2 for our rings): the fallback is the
        // eventfd, which every park test covers.
        assert!(!target.tuning.msg_ring || target.features_off.contains(&"MSG_RING wakes"));
        assert!(
            !waker.send_wake(&target.wake.clone()),
            "no message when off"
        );
        eprintln!("MSG_RING is off on this kernel: message path not tested");
        close(waker);
        close(target);
        return;
    }
    assert!(waker.send_wake(&target.wake.clone()));
    let began = std::time::Instant::now();
    // The message's CQE ends the park long before its timeout.
    target.park(Some(Duration::from_secs(20)));
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "park was not woken"
    );
    assert!(!eventfd_readable(target.wake.eventfd()));
    // Success posts nothing into the sender's ring.
    waker.poll_nowait();
    assert!(!waker.targets.off);
    close(waker);
    close(target);
}

#[test]
fn a_failed_message_falls_back_to_the_eventfd_and_turns_messages_off() {
    let mut waker = UringDriver::new(options()).expect("ring");
    if waker.targets.off {
        eprintln!("MSG_RING is off on this kernel: nothing to test");
        close(waker);
        return;
    }
    // A "ring" fd that is not a ring: the message fails with EBADFD.
    let not_a_ring = crate::sys::EventFd::new().expect("eventfd");
    let not_a_ring = super::Wake::for_test(not_a_ring);
    assert!(waker.send_wake(&not_a_ring));
    assert!(!eventfd_readable(not_a_ring.eventfd()));
    // The failure's CQE arrives in the sender's ring.
    waker.park(Some(Duration::from_secs(20)));
    assert!(eventfd_readable(not_a_ring.eventfd()), "the wake was lost");
    assert!(waker.targets.off);
    assert!(!waker.send_wake(&not_a_ring));
    close(waker);
}

#[test]
fn a_message_the_kernel_did_not_take_is_not_counted_as_a_wake() {
    let mut waker = UringDriver::new(options()).expect("ring");
    let target = UringDriver::new(options()).expect("ring");
    if target.targets.off {
        eprintln!("MSG_RING is off on this kernel: nothing to test");
        return;
    }
    waker.fail_next_submit = true;
    // The caller (`Wake::unpark`) writes the eventfd when this says false.
    assert!(
        !waker.send_wake(&target.wake.clone()),
        "a refused submit must fall back to the eventfd"
    );
    assert!(waker.send_wake(&target.wake.clone()));
    close(waker);
    close(target);
}

/// An unexpected `io_uring_enter` errno once panicked the shard; it is
/// counted and the driver goes on.
#[test]
fn an_unexpected_enter_error_is_counted_not_a_panic() {
    let mut driver = UringDriver::new(options()).expect("ring");
    for (round, errno) in [libc::EBADR, libc::ENXIO, libc::EBADR]
        .into_iter()
        .enumerate()
    {
        driver.fail_next_enter = Some(errno);
        driver.park(Some(Duration::from_millis(1)));
        assert_eq!(driver.stats.driver_errors, round as u64 + 1);
    }
    assert_eq!(
        driver.logged_errors,
        [libc::EBADR, libc::ENXIO],
        "once per errno"
    );
    // Still a working ring.
    driver.park(Some(Duration::from_millis(1)));
    close(driver);
}
