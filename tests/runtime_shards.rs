//! Runtime: shards on their own pinned threads, builder errors, shutdown.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{allowed_cpus, current_cpu, each_driver, runtime};
use ringshard::{Runtime, ShardId};

#[test]
fn two_shards_run_one_thread_each_pinned_to_its_own_core() {
    let cpus = allowed_cpus();
    if cpus.len() < 2 {
        eprintln!("skipped: this machine lets us use {} CPU", cpus.len());
        return;
    }
    each_driver(|builder| {
        let before = allowed_cpus();
        let rt = builder.worker_threads(2).pin_threads(true).build().unwrap();
        assert_eq!(rt.shards(), 2);
        let seen = rt.block_on_all(|shard: ShardId| async move {
            (
                shard,
                std::thread::current().id(),
                allowed_cpus(),
                current_cpu(),
            )
        });
        assert_eq!(seen[0].0, ShardId::new(0));
        assert_eq!(seen[1].0, ShardId::new(1));
        assert_eq!(
            seen[0].1,
            std::thread::current().id(),
            "shard 0 is the caller"
        );
        assert_ne!(seen[0].1, seen[1].1, "one thread per shard");
        for (shard, _, mask, cpu) in &seen {
            assert_eq!(
                mask.len(),
                1,
                "{shard:?} is pinned to exactly one CPU: {mask:?}"
            );
            assert_eq!(mask[0], *cpu, "{shard:?} runs where it is pinned");
        }
        assert_ne!(seen[0].2, seen[1].2, "each shard on its own core");
        assert_eq!(
            allowed_cpus(),
            before,
            "block_on restores the caller's affinity"
        );
    });
}

#[test]
fn bad_builder_settings_are_clear_errors() {
    let cpus = allowed_cpus().len();
    let cases = [
        (Runtime::builder().worker_threads(0), "worker_threads"),
        (Runtime::builder().io_entries(0), "io_entries"),
        (Runtime::builder().io_entries(1 << 20), "io_entries"),
        (
            Runtime::builder()
                .worker_threads(cpus + 1)
                .pin_threads(true),
            "pin_threads(false)",
        ),
        (
            Runtime::builder()
                .worker_threads(100_000)
                .pin_threads(false),
            "worker_threads",
        ),
        (Runtime::builder().thread_name("bad\0name"), "thread_name"),
        // Once a "capacity overflow" panic, and an abort on the allocation.
        (Runtime::builder().queue_size(usize::MAX), "queue_size"),
        (Runtime::builder().queue_size(1 << 40), "queue_size"),
    ];
    for (builder, mention) in cases {
        let error = builder.build().expect_err("bad settings must fail");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{error}");
        assert!(
            error.to_string().contains(mention),
            "{error:?} should mention {mention}"
        );
    }
    // More shards than CPUs is fine when they are not pinned.
    let rt = Runtime::builder()
        .worker_threads(cpus + 1)
        .pin_threads(false)
        .build()
        .unwrap();
    assert_eq!(
        rt.block_on_all(|s: ShardId| async move { s.index() }).len(),
        cpus + 1
    );
}

#[test]
fn shutdown_timeout_returns_within_its_bound_while_tasks_loop_forever() {
    each_driver(|builder| {
        let rt = runtime(builder, 2);
        let release = Arc::new(AtomicBool::new(false));
        let spinning = Arc::new(AtomicBool::new(false));
        rt.block_on({
            let (release, spinning) = (release.clone(), spinning.clone());
            async move {
                for shard in 0..2 {
                    for _ in 0..100 {
                        // Cancellable: they yield.
                        drop(ringshard::spawn_on(ShardId::new(shard), || async {
                            loop {
                                ringshard::yield_now().await;
                            }
                        }));
                    }
                }
                // Not cancellable: never yields until released.
                drop(ringshard::spawn_on(ShardId::new(1), move || async move {
                    spinning.store(true, Ordering::SeqCst);
                    while !release.load(Ordering::SeqCst) {
                        std::hint::spin_loop();
                    }
                }));
            }
        });
        while !spinning.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        let start = Instant::now();
        rt.shutdown_timeout(Duration::from_millis(300));
        let took = start.elapsed();
        release.store(true, Ordering::SeqCst);
        assert!(
            took >= Duration::from_millis(250),
            "returned before the stuck shard: {took:?}"
        );
        assert!(
            took < Duration::from_millis(800),
            "shutdown_timeout(300ms) took {took:?}"
        );
    });
}

#[test]
fn shutdown_cancels_pending_tasks_quickly_and_drops_their_futures() {
    struct Dropped(Arc<AtomicUsize>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    each_driver(|builder| {
        let rt = runtime(builder, 2);
        let dropped = Arc::new(AtomicUsize::new(0));
        let handles = rt.block_on({
            let dropped = dropped.clone();
            async move {
                let mut handles = Vec::new();
                for shard in 0..2 {
                    for _ in 0..500 {
                        let guard = Dropped(dropped.clone());
                        handles.push(ringshard::spawn_on(
                            ShardId::new(shard),
                            move || async move {
                                let _guard = guard;
                                ringshard::sleep(Duration::from_secs(3600)).await;
                            },
                        ));
                    }
                }
                ringshard::sleep(Duration::from_millis(20)).await;
                handles
            }
        });
        let start = Instant::now();
        drop(rt);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "drop took {:?}",
            start.elapsed()
        );
        assert_eq!(dropped.load(Ordering::SeqCst), 1000, "every future dropped");
        for handle in handles {
            assert!(handle.is_finished());
        }
    });
}

#[test]
fn stats_count_per_shard() {
    each_driver(|builder| {
        let rt = runtime(builder, 2);
        rt.block_on_all(|_| async {
            for _ in 0..10 {
                ringshard::spawn(async {}).await.unwrap();
            }
            ringshard::sleep(Duration::from_millis(2)).await;
        });
        // Shards publish their counters as they park (and every 64 turns):
        // allow them a moment.
        let deadline = Instant::now() + Duration::from_secs(1);
        let stats = loop {
            let stats = rt.stats();
            let done = stats
                .shards()
                .iter()
                .all(|s| s.tasks_spawned >= 10 && s.timers_fired >= 1);
            if done || Instant::now() > deadline {
                break stats;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(stats.shards().len(), 2);
        for shard in stats.shards() {
            assert!(shard.tasks_spawned >= 10, "{shard:?}");
            assert!(shard.polls >= 10, "{shard:?}");
            assert!(shard.timers_fired >= 1, "{shard:?}");
            assert!(shard.parks >= 1, "{shard:?}");
        }
        assert!(
            stats.total().remote_wakes >= 1,
            "shard 1's root arrives through its inbox"
        );
    });
}
