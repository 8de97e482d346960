//! `spawn_blocking` and `JoinSet` (SPEC §7), on both drivers.

mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringshard::task::JoinSet;
use ringshard::ShardId;

/// 64 closures that sleep 100 ms each run side by side (sequentially they
/// would take 6.4 s), and the shard they were spawned from keeps its 10 ms
/// interval ticking meanwhile.
#[test]
fn sixty_four_blocking_closures_run_side_by_side_while_the_shard_ticks() {
    let every_cpu = common::allowed_cpus();
    common::each_driver(|builder| {
        let rt = common::runtime(builder, 1);
        let every_cpu = every_cpu.clone();
        rt.block_on(async move {
            let ticks = Rc::new(Cell::new(0u32));
            let counter = ticks.clone();
            let ticker = ringshard::spawn(async move {
                let mut interval = ringshard::time::interval(Duration::from_millis(10));
                loop {
                    interval.tick().await;
                    counter.set(counter.get() + 1);
                }
            });
            let started = Instant::now();
            let handles: Vec<_> = (0..64)
                .map(|i| {
                    ringshard::spawn_blocking(move || {
                        std::thread::sleep(Duration::from_millis(100));
                        let name = std::thread::current().name().map(str::to_owned);
                        (i, name, common::allowed_cpus())
                    })
                })
                .collect();
            for (i, handle) in handles.into_iter().enumerate() {
                let (got, name, cpus) = handle.await.unwrap();
                assert_eq!(got, i);
                assert_eq!(
                    name.as_deref(),
                    Some("ringshard-blocking"),
                    "never on a shard thread"
                );
                assert_eq!(cpus, every_cpu, "not pinned to the shard's core");
            }
            let took = started.elapsed();
            assert!(took < Duration::from_millis(1500), "{took:?}");
            assert!(
                ticks.get() >= 5,
                "the interval ticked {} times in {took:?}",
                ticks.get()
            );
            ticker.abort();
        });
    });
}

#[test]
fn a_panicking_closure_is_a_join_error_and_handles_await_from_any_shard() {
    let rt = common::runtime(ringshard::Runtime::builder(), 2);
    rt.block_on(async {
        let error = ringshard::spawn_blocking(|| -> u32 { panic!("boom") })
            .await
            .expect_err("a panic");
        assert!(error.is_panic());
        // Made on shard 1, awaited on shard 0.
        let handle = ringshard::spawn_on(ShardId::new(1), || async {
            // In a tuple: the handle itself travels back, not its result.
            (ringshard::spawn_blocking(|| 41 + 1),)
        })
        .await
        .unwrap();
        assert_eq!(handle.0.await.unwrap(), 42);
    });
}

/// `max_blocking_threads(2)`: never more than two closures at once, and the
/// rest wait their turn rather than fail.
#[test]
fn the_pool_keeps_to_max_blocking_threads() {
    let rt = common::runtime(ringshard::Runtime::builder().max_blocking_threads(2), 1);
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (running, most) = (running.clone(), most.clone());
                ringshard::spawn_blocking(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for handle in handles {
            handle.await.unwrap();
        }
    });
    assert_eq!(most.load(Ordering::SeqCst), 2);
    let error = ringshard::Runtime::builder()
        .max_blocking_threads(0)
        .build()
        .expect_err("zero threads");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
}

/// Counts its drops.
struct Guard(Arc<AtomicUsize>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_join_set_collects_101_results_from_two_shards_and_its_drop_aborts() {
    common::each_driver(|builder| {
        let rt = common::runtime(builder, 2);
        rt.block_on(async {
            let mut set = JoinSet::new();
            for i in 0..101u64 {
                if i % 2 == 0 {
                    set.spawn(async move {
                        ringshard::sleep(Duration::from_millis(i % 7)).await;
                        (i, 0)
                    });
                } else {
                    set.spawn_on(ShardId::new(1), move || async move {
                        ringshard::sleep(Duration::from_millis(i % 5)).await;
                        (i, ringshard::current_shard().index())
                    });
                }
            }
            assert_eq!(set.len(), 101);
            let mut got = Vec::new();
            while let Some(result) = set.join_next().await {
                got.push(result.unwrap());
            }
            assert!(set.is_empty());
            got.sort();
            let expected: Vec<(u64, usize)> = (0..101).map(|i| (i, (i % 2) as usize)).collect();
            assert_eq!(got, expected);

            // Dropping a set aborts what it holds: every guard is dropped.
            let dropped = Arc::new(AtomicUsize::new(0));
            let mut set = JoinSet::new();
            for i in 0..10 {
                let guard = Guard(dropped.clone());
                if i % 2 == 0 {
                    set.spawn(async move {
                        let _guard = guard;
                        ringshard::sleep(Duration::from_secs(3600)).await;
                    });
                } else {
                    set.spawn_on(ShardId::new(1), move || async move {
                        let _guard = guard;
                        ringshard::sleep(Duration::from_secs(3600)).await;
                    });
                }
            }
            ringshard::sleep(Duration::from_millis(20)).await;
            assert_eq!(dropped.load(Ordering::SeqCst), 0);
            drop(set);
            let deadline = Instant::now() + Duration::from_secs(5);
            while dropped.load(Ordering::SeqCst) < 10 && Instant::now() < deadline {
                ringshard::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(dropped.load(Ordering::SeqCst), 10, "every task was aborted");
        });
    });
}

#[test]
fn join_set_abort_all_and_shutdown() {
    let rt = common::runtime(ringshard::Runtime::builder(), 1);
    rt.block_on(async {
        let mut set = JoinSet::new();
        for _ in 0..5 {
            set.spawn(std::future::pending::<()>());
        }
        set.spawn(async {});
        set.abort_all();
        let mut cancelled = 0;
        let mut finished = 0;
        while let Some(result) = set.join_next().await {
            match result {
                Ok(()) => finished += 1,
                Err(error) if error.is_cancelled() => cancelled += 1,
                Err(error) => panic!("{error}"),
            }
        }
        assert_eq!(cancelled + finished, 6);
        assert!(cancelled >= 5);
        for _ in 0..3 {
            set.spawn(std::future::pending::<()>());
        }
        ringshard::timeout(Duration::from_secs(5), set.shutdown())
            .await
            .expect("shutdown ends");
        assert!(set.is_empty());
        assert!(set.join_next().await.is_none());
    });
}

/// A closure whose handle was aborted before a pool thread took it is
/// skipped (as tokio does); the pool keeps its thread after a panic.
#[test]
fn an_aborted_queued_closure_is_skipped() {
    let rt = common::runtime(ringshard::Runtime::builder().max_blocking_threads(1), 1);
    let ran = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let busy = ringshard::spawn_blocking(|| std::thread::sleep(Duration::from_millis(100)));
        let flag = ran.clone();
        let queued = ringshard::spawn_blocking(move || {
            flag.fetch_add(1, Ordering::SeqCst);
        });
        queued.abort();
        assert!(queued.await.unwrap_err().is_cancelled());
        busy.await.unwrap();
        // The one thread is still there for the next closure, after a panic too.
        assert!(ringshard::spawn_blocking(|| panic!("x"))
            .await
            .unwrap_err()
            .is_panic());
        assert_eq!(ringshard::spawn_blocking(|| 5).await.unwrap(), 5);
    });
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "the aborted closure never ran"
    );
}
