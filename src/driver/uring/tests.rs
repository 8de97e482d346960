//! The op slab's lifecycle, SQ-full and CQ-overflow handling, on real rings.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::op::{nop, timeout_op};
use crate::{DriverKind, DriverType, Runtime};

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
                        let _ = timeout_op(Duration::from_millis(100), canary).await;
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
            crate::sleep(Duration::from_millis(200)).await;
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
