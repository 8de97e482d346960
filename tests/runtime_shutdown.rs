//! Graceful shutdown with the per-shard task registry, and work stealing.

mod common;

use std::future::Future;
use std::hint::black_box;
use std::io::Read;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use common::{assert_fds_return_to, each_driver, fd_count, raise_fd_limit, runtime, serial};
use ringshard::net::{TcpListener, TcpStream};
use ringshard::{spawn, spawn_on, spawn_stealable, JoinHandle, ShardId};

/// The output of a handle whose runtime is gone (polled once, no executor).
fn poll_now<T>(handle: &mut JoinHandle<T>) -> Poll<Result<T, ringshard::JoinError>> {
    Pin::new(handle).poll(&mut Context::from_waker(Waker::noop()))
}

/// 1,000 open connections served by tasks blocked in `read`, 1,000 sleeping
/// tasks, and tasks waiting on things no queue of their shard holds
/// (another shard's `JoinHandle`, a channel whose sender never sends):
/// shutdown ends within 1 s, every peer sees EOF, no fd is left open, and
/// the handles of the cancelled tasks say so.
#[test]
fn shutdown_with_1000_connections_and_1000_sleepers_is_quick_and_complete() {
    let _serial = serial();
    raise_fd_limit(4_000);
    each_driver(|builder| {
        let baseline = fd_count();
        let rt = runtime(builder, 2);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let peers = std::thread::spawn(move || {
            (0..1000)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect::<Vec<_>>()
        });
        let mut handles: Vec<JoinHandle<()>> = rt.block_on(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            let mut handles = Vec::new();
            for _ in 0..1000 {
                let (mut stream, _): (TcpStream, _) = listener.accept().await.unwrap();
                handles.push(spawn(async move {
                    let _ = stream.read(vec![0u8; 64]).await;
                    unreachable!("the peer never writes");
                }));
            }
            for i in 0..1000 {
                handles.push(spawn_on(ShardId::new(i % 2), || async {
                    ringshard::sleep(Duration::from_secs(3600)).await;
                }));
            }
            // Waiting on a task of the other shard, and on a silent channel.
            let (tx, mut rx) = ringshard::bounded::<u8>(1);
            let stuck = spawn_on(ShardId::new(1), move || async move {
                let _keep = tx;
                std::future::pending::<()>().await
            });
            handles.push(spawn(async move {
                let _ = stuck.await;
            }));
            handles.push(spawn_on(ShardId::new(1), move || async move {
                let _ = rx.recv().await;
            }));
            ringshard::sleep(Duration::from_millis(50)).await;
            handles
        });
        let mut peers = peers.join().unwrap();
        assert!(handles.iter().all(|h| !h.is_finished()));
        let start = Instant::now();
        rt.shutdown_timeout(Duration::from_secs(5));
        let took = start.elapsed();
        assert!(took < Duration::from_secs(1), "shutdown took {took:?}");
        for handle in &mut handles {
            match poll_now(handle) {
                Poll::Ready(Err(error)) => assert!(error.is_cancelled(), "{error:?}"),
                other => panic!("a task outlived shutdown: {other:?}"),
            }
        }
        for peer in &mut peers {
            peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut byte = [0u8; 1];
            assert_eq!(peer.read(&mut byte).unwrap(), 0, "the peer sees EOF");
        }
        // The handles keep their tasks' headers, which name the shard and
        // so keep its unpark eventfd open.
        drop((peers, handles));
        assert_fds_return_to(baseline);
    });
}

/// Burns about `micros` of CPU.
fn burn(micros: u64) -> u64 {
    let start = Instant::now();
    let mut x = 0u64;
    while start.elapsed() < Duration::from_micros(micros) {
        for i in 0..100 {
            x = black_box(x.wrapping_mul(31).wrapping_add(i));
        }
    }
    x
}

/// Spawns 10,000 CPU-bound stealable tasks on shard 0 and counts where they ran.
fn run_stealable(work_stealing: bool) -> ([usize; 2], u64) {
    let rt = runtime(
        ringshard::Runtime::builder().work_stealing(work_stealing),
        2,
    );
    let ran: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    rt.block_on({
        let ran = ran.clone();
        async move {
            let tasks: Vec<_> = (0..10_000)
                .map(|_| {
                    let ran = ran.clone();
                    spawn_stealable(async move {
                        burn(20);
                        ran[ringshard::current_shard().index()].fetch_add(1, Ordering::Relaxed);
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
        }
    });
    let counts = [
        ran[0].load(Ordering::Relaxed),
        ran[1].load(Ordering::Relaxed),
    ];
    (counts, rt.stats().total().steals)
}

#[test]
fn stealable_tasks_run_on_both_shards_only_with_work_stealing_on() {
    // Its runtimes' fds would disturb another test's count.
    let _serial = serial();
    let (counts, steals) = run_stealable(true);
    assert_eq!(counts[0] + counts[1], 10_000);
    assert!(
        counts[1] > 0 && steals > 0,
        "nothing was stolen: ran {counts:?}, {steals} steals"
    );
    eprintln!("work stealing on: ran {counts:?}, {steals} steals");
    let (counts, steals) = run_stealable(false);
    assert_eq!(counts, [10_000, 0], "a task moved with work stealing off");
    assert_eq!(steals, 0);
}

/// A stolen task woken from a plain thread still completes, and tasks that
/// are stolen and never finish are dropped by shutdown.
#[test]
fn stolen_tasks_survive_foreign_wakes_and_shutdown() {
    let _serial = serial();
    let rt = runtime(ringshard::Runtime::builder().work_stealing(true), 2);
    let (handles, stuck) = rt.block_on(async {
        let mut handles = Vec::new();
        let mut stuck = Vec::new();
        for i in 0..2_000u32 {
            let (tx, rx) = ringshard::channel::oneshot::channel::<u32>();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(5));
                let _ = tx.send(i);
            });
            handles.push(spawn_stealable(async move {
                burn(5);
                rx.await.unwrap()
            }));
            stuck.push(spawn_stealable(async move {
                burn(5);
                std::future::pending::<()>().await
            }));
        }
        let mut sum = 0;
        for handle in &mut handles {
            sum += handle.await.unwrap();
        }
        assert_eq!(sum, (0..2_000).sum::<u32>());
        (handles.len(), stuck)
    });
    assert_eq!(handles, 2_000);
    let start = Instant::now();
    rt.shutdown_timeout(Duration::from_secs(5));
    assert!(start.elapsed() < Duration::from_secs(1));
    for mut handle in stuck {
        assert!(matches!(poll_now(&mut handle), Poll::Ready(Err(e)) if e.is_cancelled()));
    }
}

/// A waker that panics when woken: a user bug that escapes the per-task
/// catch, because the shard's loop (firing a timer) calls it.
struct PanicOnWake;

impl std::task::Wake for PanicOnWake {
    fn wake(self: Arc<Self>) {
        panic!("PanicOnWake woken");
    }
}

/// A worker shard whose loop panics is closed: its tasks' handles resolve
/// as cancelled, `spawn_on` to it gives a cancelled handle at once, and
/// dropping the runtime does not wait out its deadline. (Before: the
/// handles waited forever, and `Drop` waited 5 s for the dead shard.)
#[test]
fn a_shard_whose_loop_panicked_is_closed_and_its_handles_resolve() {
    let _serial = serial();
    each_driver(|builder| {
        let rt = runtime(builder, 2);
        rt.block_on(async {
            let victim = spawn_on(ShardId::new(1), || async {
                let mut timer = Box::pin(ringshard::sleep(Duration::from_millis(10)));
                let waker = Waker::from(Arc::new(PanicOnWake));
                // The timer now holds the panicking waker.
                assert!(timer
                    .as_mut()
                    .poll(&mut Context::from_waker(&waker))
                    .is_pending());
                std::future::pending::<()>().await;
                drop(timer);
            });
            let outcome = ringshard::timeout(Duration::from_secs(5), victim).await;
            let error = outcome
                .expect("the dead shard's task handle resolves")
                .unwrap_err();
            assert!(error.is_cancelled());
            let late = spawn_on(ShardId::new(1), || async { 1 });
            let outcome = ringshard::timeout(Duration::from_secs(5), late).await;
            let error = outcome
                .expect("spawn_on to a dead shard resolves")
                .unwrap_err();
            assert!(error.is_cancelled());
        });
        let began = Instant::now();
        drop(rt);
        assert!(
            began.elapsed() < Duration::from_secs(2),
            "drop took {:?}",
            began.elapsed()
        );
    });
}
