//! The ping-pongs `shards.rs` and `unpark.rs` both run: `pings` round
//! trips of a number over two capacity-1 channels, ns per round trip.

use std::future::Future;
use std::time::Instant;

use ringshard::ShardId;

/// ns per round trip: shard 0 sends a number to shard 1, which sends it back.
pub fn ringshard(rt: &ringshard::Runtime, pings: u64) -> f64 {
    rt.block_on(async {
        let (ping_tx, mut ping_rx) = ringshard::bounded::<u64>(1);
        let (pong_tx, mut pong_rx) = ringshard::bounded::<u64>(1);
        ringshard::spawn_on(ShardId::new(1), move || async move {
            while let Some(v) = ping_rx.recv().await {
                pong_tx.send(v + 1).await.unwrap();
            }
        });
        let pinger = ringshard::spawn(async move {
            let start = Instant::now();
            for i in 0..pings {
                ping_tx.send(i).await.unwrap();
                assert_eq!(pong_rx.recv().await, Some(i + 1));
            }
            start.elapsed()
        });
        pinger.await.unwrap().as_nanos() as f64 / pings as f64
    })
}

/// tokio the thread-per-core way: a current_thread runtime on each of two
/// threads pinned to CPUs 0 and 1, the same ping-pong between them. For
/// reference: the target compares against `shards.rs`'s `ping_pong_tokio`, whose two
/// tasks share one worker thread and so never cross cores.
pub fn tokio_per_thread(pings: u64) -> f64 {
    let (ping_tx, mut ping_rx) = tokio::sync::mpsc::channel::<u64>(1);
    let (pong_tx, mut pong_rx) = tokio::sync::mpsc::channel::<u64>(1);
    let on_pinned_runtime =
        |cpu: usize, future: std::pin::Pin<Box<dyn Future<Output = f64> + Send>>| {
            std::thread::spawn(move || {
                core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("tokio runtime")
                    .block_on(future)
            })
        };
    let echo = on_pinned_runtime(
        1,
        Box::pin(async move {
            while let Some(v) = ping_rx.recv().await {
                pong_tx.send(v + 1).await.unwrap();
            }
            0.0
        }),
    );
    let pinger = on_pinned_runtime(
        0,
        Box::pin(async move {
            let start = Instant::now();
            for i in 0..pings {
                ping_tx.send(i).await.unwrap();
                assert_eq!(pong_rx.recv().await, Some(i + 1));
            }
            start.elapsed().as_nanos() as f64 / pings as f64
        }),
    );
    let rtt = pinger.join().expect("pinger");
    echo.join().expect("echo");
    rtt
}
