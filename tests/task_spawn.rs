//! Tasks: spawn, spawn_on, JoinHandle semantics, panics, cross-thread wakes.

mod common;

use std::cell::Cell;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use common::{each_driver, runtime};
use ringshard::{current_shard, spawn, spawn_on, yield_now, ShardId};

fn quiet_panics() {
    // The panics below are expected; keep the test output readable.
    std::panic::set_hook(Box::new(|_| {}));
}

#[test]
fn panicking_task_gives_is_panic_and_the_shard_keeps_serving() {
    quiet_panics();
    each_driver(|builder| {
        let rt = runtime(builder, 2);
        rt.block_on(async {
            for shard in [ShardId::new(0), ShardId::new(1)] {
                let error = spawn_on(shard, || async {
                    yield_now().await;
                    panic!("boom");
                })
                .await
                .unwrap_err();
                assert!(error.is_panic() && !error.is_cancelled());
                let payload = error.into_panic();
                assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
                // The same shard still runs tasks afterwards.
                let after = spawn_on(shard, || async { current_shard() }).await.unwrap();
                assert_eq!(after, shard);
            }
            let local = spawn(async { panic!("local") }).await.unwrap_err();
            assert!(local.is_panic());
            assert_eq!(spawn(async { 5 }).await.unwrap(), 5);
        });
    });
}

#[test]
fn abort_gives_is_cancelled_and_drops_the_future_on_its_shard() {
    each_driver(|builder| {
        let rt = runtime(builder, 2);
        rt.block_on(async {
            // Local task pending forever.
            let forever = spawn(std::future::pending::<()>());
            yield_now().await;
            assert!(!forever.is_finished());
            forever.abort();
            let error = forever.await.unwrap_err();
            assert!(error.is_cancelled() && !error.is_panic());

            // Remote task sleeping: dropped on shard 1, by shard 1.
            let dropped_on = Arc::new(std::sync::Mutex::new(None));
            struct Guard(Arc<std::sync::Mutex<Option<Option<ShardId>>>>);
            impl Drop for Guard {
                fn drop(&mut self) {
                    let shard = std::panic::catch_unwind(current_shard).ok();
                    *self.0.lock().unwrap() = Some(shard);
                }
            }
            let guard = Guard(dropped_on.clone());
            let sleeper = spawn_on(ShardId::new(1), move || async move {
                let _guard = guard;
                ringshard::sleep(Duration::from_secs(3600)).await;
            });
            ringshard::sleep(Duration::from_millis(10)).await;
            sleeper.abort();
            assert!(sleeper.await.unwrap_err().is_cancelled());
            assert_eq!(*dropped_on.lock().unwrap(), Some(Some(ShardId::new(1))));

            // Aborting a finished task keeps its output.
            let done = spawn(async { 9 });
            while !done.is_finished() {
                yield_now().await;
            }
            done.abort();
            assert_eq!(done.await.unwrap(), 9);
        });
    });
}

#[test]
fn dropped_join_handle_detaches_and_the_task_still_finishes() {
    each_driver(|builder| {
        let rt = runtime(builder, 2);
        let finished = Arc::new(AtomicUsize::new(0));
        rt.block_on({
            let finished = finished.clone();
            async move {
                for shard in 0..2 {
                    let finished = finished.clone();
                    drop(spawn_on(ShardId::new(shard), move || async move {
                        ringshard::sleep(Duration::from_millis(20)).await;
                        finished.fetch_add(1, Ordering::SeqCst);
                    }));
                }
                ringshard::sleep(Duration::from_millis(100)).await;
            }
        });
        assert_eq!(finished.load(Ordering::SeqCst), 2);
    });
}

#[test]
fn spawn_on_builds_a_not_send_future_on_the_target_shard() {
    each_driver(|builder| {
        let rt = runtime(builder, 2);
        let main = std::thread::current().id();
        let (value, shard, thread) = rt.block_on(async {
            spawn_on(ShardId::new(1), || async {
                // Rc and Cell are !Send: the future never leaves shard 1.
                let counter = Rc::new(Cell::new(0));
                for _ in 0..10 {
                    let counter = counter.clone();
                    spawn(async move { counter.set(counter.get() + 1) })
                        .await
                        .unwrap();
                    yield_now().await;
                }
                (counter.get(), current_shard(), std::thread::current().id())
            })
            .await
            .unwrap()
        });
        assert_eq!(value, 10);
        assert_eq!(shard, ShardId::new(1));
        assert_ne!(thread, main);
    });
}

#[test]
fn waker_woken_a_million_times_from_four_threads_completes() {
    const THREADS: usize = 4;
    const WAKES: usize = 1_000_000;
    each_driver(|builder| {
        let rt = runtime(builder, 2);
        let polls = rt.block_on(async {
            spawn_on(ShardId::new(1), || async {
                let done = Arc::new(AtomicUsize::new(0));
                let mut threads = Vec::new();
                let mut polls = 0usize;
                poll_fn(|cx| {
                    polls += 1;
                    if threads.is_empty() {
                        for _ in 0..THREADS {
                            let (waker, done) = (cx.waker().clone(), done.clone());
                            threads.push(std::thread::spawn(move || {
                                for i in 0..WAKES / THREADS {
                                    if i % 2 == 0 {
                                        waker.wake_by_ref();
                                    } else {
                                        // A clone woken by value: exercises clone and drop across threads.
                                        std::hint::black_box(waker.clone()).wake();
                                    }
                                }
                                done.fetch_add(1, Ordering::SeqCst);
                                waker.wake();
                            }));
                        }
                    }
                    if done.load(Ordering::SeqCst) == THREADS {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                })
                .await;
                for thread in threads {
                    thread.join().expect("a waking thread panicked");
                }
                polls
            })
            .await
            .unwrap()
        });
        assert!(polls >= 2, "the task was woken: {polls} polls");
    });
}

#[test]
fn a_million_tasks_spawned_and_joined() {
    const TASKS: u64 = 1_000_000;
    each_driver(|builder| {
        let rt = runtime(builder, 1);
        let sum = rt.block_on(async {
            let handles: Vec<_> = (0..TASKS).map(|i| spawn(async move { i })).collect();
            let mut sum = 0;
            for handle in handles {
                sum += handle.await.unwrap();
            }
            sum
        });
        assert_eq!(sum, TASKS * (TASKS - 1) / 2);
        assert!(rt.stats().total().tasks_spawned >= TASKS);
    });
}

#[test]
fn remote_spawns_and_wakes_are_not_lost() {
    each_driver(|builder| {
        let rt = runtime(builder, 2);
        let ran = Arc::new(AtomicUsize::new(0));
        rt.block_on({
            let ran = ran.clone();
            async move {
                let handles: Vec<_> = (0..20_000)
                    .map(|i| {
                        let ran = ran.clone();
                        spawn_on(ShardId::new(i % 2), move || async move {
                            yield_now().await;
                            ran.fetch_add(1, Ordering::SeqCst);
                            i
                        })
                    })
                    .collect();
                for (i, handle) in handles.into_iter().enumerate() {
                    assert_eq!(handle.await.unwrap(), i);
                }
            }
        });
        assert_eq!(ran.load(Ordering::SeqCst), 20_000);
    });
}

#[test]
fn yield_now_lets_other_tasks_run() {
    each_driver(|builder| {
        let rt = runtime(builder, 1);
        rt.block_on(async {
            let flag = Rc::new(Cell::new(false));
            let other = spawn({
                let flag = flag.clone();
                async move { flag.set(true) }
            });
            while !flag.get() {
                yield_now().await;
            }
            other.await.unwrap();
        });
    });
}

#[test]
fn join_handles_are_send_and_runtime_calls_outside_panic_clearly() {
    fn assert_send<T: Send>() {}
    assert_send::<ringshard::JoinHandle<u32>>();
    assert_send::<ringshard::time::Sleep>();
    assert_send::<ShardId>();
    quiet_panics();
    let outside = std::panic::catch_unwind(|| spawn(async {})).unwrap_err();
    let message = outside
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| outside.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(message.contains("outside a ringshard runtime"), "{message}");
}

/// A future that is ready at once and panics when dropped.
struct ReadyThenPanicOnDrop(Rc<Cell<usize>>);

impl std::future::Future for ReadyThenPanicOnDrop {
    type Output = u32;
    fn poll(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> Poll<u32> {
        Poll::Ready(7)
    }
}

impl Drop for ReadyThenPanicOnDrop {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
        panic!("drop of a finished future");
    }
}

/// A future whose `Drop` panics after it completed fails its task with
/// that panic (the output is dropped), runs its `Drop` once, and leaves the
/// shard running.
#[test]
fn a_finished_future_whose_drop_panics_fails_its_task_once() {
    each_driver(|builder| {
        let rt = runtime(builder, 1);
        rt.block_on(async {
            let drops = Rc::new(Cell::new(0));
            let error = spawn(ReadyThenPanicOnDrop(drops.clone()))
                .await
                .unwrap_err();
            assert!(error.is_panic(), "{error:?}");
            assert_eq!(drops.get(), 1, "dropped once");
            assert_eq!(spawn(async { 5 }).await.unwrap(), 5);
        });
    });
}
