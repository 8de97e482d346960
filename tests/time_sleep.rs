//! Time: sleeps, timeouts and intervals fire in deadline order, never early,
//! and an idle shard parks instead of spinning.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use common::{each_driver, runtime, thread_cpu_time};
use ringshard::time::{interval, sleep, sleep_until, timeout, Instant, MissedTickBehavior};
use ringshard::{spawn, spawn_on, ShardId};

#[test]
fn sleeps_fire_in_deadline_order_and_never_early() {
    each_driver(|builder| {
        let rt = runtime(builder, 1);
        rt.block_on(async {
            // Far enough ahead that every task is polled (and its timer
            // registered) before the first deadline, however slow the
            // machine (sanitizers, emulation): a deadline already past at
            // the first poll is ready at once, out of order with timers
            // registered a turn earlier.
            let base = Instant::now() + Duration::from_millis(300);
            let woke = Rc::new(RefCell::new(Vec::new()));
            // Deadlines 1 ms apart, spawned in a scrambled order.
            let handles: Vec<_> = (0..150u64)
                .map(|i| (i * 37) % 150)
                .map(|ms| {
                    let woke = woke.clone();
                    let deadline = base + Duration::from_millis(ms) + Duration::from_micros(300);
                    spawn(async move {
                        sleep_until(deadline).await;
                        let now = Instant::now();
                        assert!(now >= deadline, "woke {:?} early", deadline - now);
                        woke.borrow_mut().push(ms);
                    })
                })
                .collect();
            for handle in handles {
                handle.await.unwrap();
            }
            let order = woke.borrow().clone();
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(order, sorted, "woken out of deadline order");
        });
    });
}

#[test]
fn sleep_durations_are_honoured_across_wheel_levels() {
    each_driver(|builder| {
        let rt = runtime(builder, 2);
        rt.block_on_all(|_| async {
            for ms in [0u64, 1, 2, 63, 64, 65, 130, 300] {
                let start = Instant::now();
                sleep(Duration::from_millis(ms)).await;
                let took = start.elapsed();
                assert!(
                    took >= Duration::from_millis(ms),
                    "sleep({ms} ms) took {took:?}"
                );
            }
        });
    });
}

#[test]
fn timeouts_fire_in_deadline_order_and_never_early() {
    each_driver(|builder| {
        let rt = runtime(builder, 1);
        rt.block_on(async {
            let start = Instant::now();
            let order = Rc::new(RefCell::new(Vec::new()));
            let handles: Vec<_> = [30u64, 10, 20, 5]
                .into_iter()
                .map(|ms| {
                    let order = order.clone();
                    spawn(async move {
                        let result =
                            timeout(Duration::from_millis(ms), sleep(Duration::from_secs(3600)))
                                .await;
                        assert!(result.is_err());
                        assert!(
                            start.elapsed() >= Duration::from_millis(ms),
                            "timeout {ms} early"
                        );
                        order.borrow_mut().push(ms);
                    })
                })
                .collect();
            for handle in handles {
                handle.await.unwrap();
            }
            assert_eq!(*order.borrow(), vec![5, 10, 20, 30]);
            // A future that finishes first is not timed out.
            let quick = timeout(Duration::from_millis(200), sleep(Duration::from_millis(5))).await;
            assert_eq!(quick, Ok(()));
            assert_eq!(timeout(Duration::ZERO, async { 7 }).await, Ok(7));
        });
    });
}

#[test]
fn intervals_tick_on_schedule_and_never_early() {
    each_driver(|builder| {
        let rt = runtime(builder, 1);
        rt.block_on(async {
            let period = Duration::from_millis(5);
            let mut ticks = interval(period);
            let first = ticks.tick().await;
            for i in 1..=20u32 {
                let scheduled = ticks.tick().await;
                assert_eq!(scheduled, first + period * i, "tick {i} off schedule");
                assert!(Instant::now() >= scheduled, "tick {i} early");
            }
            // Delay: after a stall the next tick is one period after it.
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            std::thread::sleep(Duration::from_millis(20));
            ticks.tick().await;
            let stalled = Instant::now();
            ticks.tick().await;
            assert!(Instant::now() >= stalled + period - Duration::from_millis(1));
        });
    });
}

#[test]
fn a_shard_that_only_sleeps_parks_instead_of_spinning() {
    each_driver(|builder| {
        let rt = runtime(builder, 2);
        let used = rt.block_on(async {
            let remote = spawn_on(ShardId::new(1), || async {
                let before = thread_cpu_time();
                sleep(Duration::from_millis(300)).await;
                thread_cpu_time() - before
            });
            let before = thread_cpu_time();
            sleep(Duration::from_millis(300)).await;
            let local = thread_cpu_time() - before;
            (local, remote.await.unwrap())
        });
        for (shard, cpu) in [("shard 0", used.0), ("shard 1", used.1)] {
            eprintln!("{shard} used {cpu:?} of CPU over a 300 ms sleep");
            assert!(
                cpu < Duration::from_millis(10),
                "{shard} used {cpu:?} while sleeping"
            );
        }
    });
}

#[test]
fn far_future_sleeps_are_cancelled_cleanly() {
    each_driver(|builder| {
        let rt = runtime(builder, 1);
        rt.block_on(async {
            let huge = sleep(Duration::MAX);
            assert!(timeout(Duration::from_millis(2), huge).await.is_err());
            let mut long = sleep(Duration::from_secs(86_400 * 1000));
            long.reset(Instant::now() + Duration::from_millis(3));
            long.await;
        });
    });
}
