//! Shard messaging beside tokio's multi_thread runtime (2 workers) in the
//! same process: channel throughput from one shard to another, and the
//! round trip of a ping-pong between two shards.
//!
//! `taskset -c 0,1 cargo bench --bench shards [-- --rounds N]`. Rounds
//! alternate between the runtimes; the median round is reported with the
//! ratio ringshard / tokio for time per message (< 1: ringshard faster).
//!
//! ringshard: sender on shard 1, receiver on shard 0, each pinned. tokio:
//! sender and receiver spawned on the runtime, wherever its scheduler puts
//! them (that is what a tokio user gets).

#[path = "common/ping_pong.rs"]
mod ping_pong;

use std::time::{Duration, Instant};

use ringshard::ShardId;

const MESSAGES: u64 = 1_000_000;
const PINGS: u64 = 100_000;
const CAPACITY: usize = 1024;

fn ringshard_rt() -> ringshard::Runtime {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    ringshard::Runtime::builder()
        .worker_threads(2)
        .pin_threads(cpus >= 2)
        .build()
        .expect("ringshard runtime")
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The receiving task of every throughput run (the channels' `recv` have
/// the same shape in both runtimes but no common trait).
macro_rules! sum_received {
    ($rx:ident) => {
        async move {
            let mut sum = 0;
            while let Some(v) = $rx.recv().await {
                sum += v;
            }
            sum
        }
    };
}

/// ns per message, `MESSAGES` through a bounded channel, shard 1 → shard 0.
fn throughput_ringshard(rt: &ringshard::Runtime, bounded: bool) -> f64 {
    rt.block_on(async move {
        let start = Instant::now();
        let receiver = if bounded {
            let (tx, mut rx) = ringshard::bounded::<u64>(CAPACITY);
            ringshard::spawn_on(ShardId::new(1), move || async move {
                for i in 0..MESSAGES {
                    tx.send(i).await.unwrap();
                }
            });
            ringshard::spawn(sum_received!(rx))
        } else {
            let (tx, mut rx) = ringshard::unbounded::<u64>();
            ringshard::spawn_on(ShardId::new(1), move || async move {
                for i in 0..MESSAGES {
                    tx.send(i).unwrap();
                }
            });
            ringshard::spawn(sum_received!(rx))
        };
        assert_eq!(receiver.await.unwrap(), MESSAGES * (MESSAGES - 1) / 2);
        start.elapsed().as_nanos() as f64 / MESSAGES as f64
    })
}

fn throughput_tokio(rt: &tokio::runtime::Runtime, bounded: bool) -> f64 {
    rt.block_on(async move {
        let start = Instant::now();
        let receiver = if bounded {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(CAPACITY);
            tokio::spawn(async move {
                for i in 0..MESSAGES {
                    tx.send(i).await.unwrap();
                }
            });
            tokio::spawn(sum_received!(rx))
        } else {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
            tokio::spawn(async move {
                for i in 0..MESSAGES {
                    tx.send(i).unwrap();
                }
            });
            tokio::spawn(sum_received!(rx))
        };
        assert_eq!(receiver.await.unwrap(), MESSAGES * (MESSAGES - 1) / 2);
        start.elapsed().as_nanos() as f64 / MESSAGES as f64
    })
}

fn ping_pong_tokio(rt: &tokio::runtime::Runtime) -> f64 {
    rt.block_on(async {
        let (ping_tx, mut ping_rx) = tokio::sync::mpsc::channel::<u64>(1);
        let (pong_tx, mut pong_rx) = tokio::sync::mpsc::channel::<u64>(1);
        tokio::spawn(async move {
            while let Some(v) = ping_rx.recv().await {
                pong_tx.send(v + 1).await.unwrap();
            }
        });
        let pinger = tokio::spawn(async move {
            let start = Instant::now();
            for i in 0..PINGS {
                ping_tx.send(i).await.unwrap();
                assert_eq!(pong_rx.recv().await, Some(i + 1));
            }
            start.elapsed()
        });
        pinger.await.unwrap().as_nanos() as f64 / PINGS as f64
    })
}

/// ns per round trip of two cache lines bounced between threads pinned
/// to CPUs 0 and 1, nothing else: the floor under any cross-shard round
/// trip. On a VM it moves with where the host puts the two vCPUs (measured
/// 47 to 381 ns on the project machine), and a cross-shard ping-pong moves
/// with it; tokio's multi_thread ping-pong, whose two tasks share a worker,
/// does not. Printed before and after the runs so each run says which
/// placement it had.
fn line_round_trip() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    const TRIPS: u64 = 200_000;
    let lines = Arc::new([
        crossbeam_utils::CachePadded::new(AtomicU64::new(0)),
        crossbeam_utils::CachePadded::new(AtomicU64::new(0)),
    ]);
    let echo = {
        let lines = lines.clone();
        std::thread::spawn(move || {
            core_affinity::set_for_current(core_affinity::CoreId { id: 1 });
            for i in 1..=TRIPS {
                while lines[0].load(Ordering::Acquire) != i {
                    std::hint::spin_loop();
                }
                lines[1].store(i, Ordering::Release);
            }
        })
    };
    let start = std::thread::spawn(move || {
        core_affinity::set_for_current(core_affinity::CoreId { id: 0 });
        let start = Instant::now();
        for i in 1..=TRIPS {
            lines[0].store(i, Ordering::Release);
            while lines[1].load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
        }
        start.elapsed()
    });
    let elapsed = start.join().expect("pinger");
    echo.join().expect("echo");
    elapsed.as_nanos() as f64 / TRIPS as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn compare(
    name: &str,
    rounds: usize,
    mut ours: impl FnMut() -> f64,
    mut theirs: impl FnMut() -> f64,
) {
    let only = std::env::var("SHARDS_BENCH_ONLY").unwrap_or_default();
    if !name.starts_with(only.as_str()) {
        return;
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        a.push(ours());
        b.push(theirs());
    }
    let (a, b) = (median(a), median(b));
    println!(
        "{name:<28} ringshard {a:>8.1} ns   tokio {b:>8.1} ns   ringshard/tokio {:.3}",
        a / b
    );
}

fn main() {
    let mut rounds = 5;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--rounds" {
            rounds = args.next().and_then(|v| v.parse().ok()).unwrap_or(rounds);
        }
    }
    let floor_before = line_round_trip();
    let ours = ringshard_rt();
    let theirs = tokio_rt();
    println!(
        "shard messaging, {rounds} rounds, median; ringshard {:?} 2 shards pinned, tokio multi_thread 2 workers",
        ours.driver_kind()
    );
    compare(
        "bounded(1024) per message",
        rounds,
        || throughput_ringshard(&ours, true),
        || throughput_tokio(&theirs, true),
    );
    compare(
        "unbounded per message",
        rounds,
        || throughput_ringshard(&ours, false),
        || throughput_tokio(&theirs, false),
    );
    compare(
        "ping-pong round trip",
        rounds,
        || ping_pong::ringshard(&ours, PINGS),
        || ping_pong_tokio(&theirs),
    );
    compare(
        "ping-pong, tokio per thread",
        rounds,
        || ping_pong::ringshard(&ours, PINGS),
        || ping_pong::tokio_per_thread(PINGS),
    );
    for (index, stats) in ours.stats().shards().iter().enumerate() {
        println!(
            "ringshard shard {index}: remote wakes {}, parks {}, driver waits {}",
            stats.remote_wakes, stats.parks, stats.driver_waits
        );
    }
    println!(
        "cross-core floor: two lines bounced CPU 0 <-> 1, {floor_before:.1} ns per round trip before the runs, {:.1} ns after",
        line_round_trip()
    );
    std::thread::sleep(Duration::from_millis(10));
}
