//! Parking: an idle shard sleeps (whatever timeout it is given), and a
//! shard never parks over work it already has.
//!
//! `shard_parks_at_once_over_a_completion_reaped_mid_turn` was shown
//! failing with `RUSTFLAGS='--cfg ringshard_broken="park_over_stranded"'`.

mod common;

use std::time::{Duration, Instant};

use common::{each_driver, runtime};
use ringshard::net::UdpSocket;
use ringshard::time::{interval, MissedTickBehavior};
use ringshard::{sleep, spawn, timeout, DriverType, Runtime};

/// `park_timeout(Duration::MAX)` once overflowed the io_uring timespec
/// into a negative `tv_sec`: every park returned at once (60-130k parks a
/// second).
#[test]
fn idle_shards_with_the_longest_park_timeout_do_not_spin() {
    each_driver(|builder| {
        let rt = runtime(builder.park_timeout(Duration::MAX), 2);
        let before = rt.stats();
        rt.block_on(sleep(Duration::from_millis(300)));
        let after = rt.stats();
        for shard in 0..2 {
            let parks = after.shards()[shard].parks - before.shards()[shard].parks;
            assert!(parks < 50, "shard {shard} parked {parks} times in 300 ms");
        }
    });
}

/// Every duration the API takes saturates: none panics or spins.
#[test]
fn the_longest_durations_neither_panic_nor_fire() {
    each_driver(|builder| {
        let rt = runtime(builder, 1);
        rt.block_on(async {
            let mut every = interval(Duration::MAX);
            every.tick().await; // The first tick is at once.
            assert!(timeout(Duration::from_millis(20), every.tick())
                .await
                .is_err());
            for behavior in [
                MissedTickBehavior::Burst,
                MissedTickBehavior::Delay,
                MissedTickBehavior::Skip,
            ] {
                let start = Instant::now() - Duration::from_secs(5);
                let mut late = ringshard::time::interval_at(start, Duration::from_secs(1));
                late.set_missed_tick_behavior(behavior);
                late.tick().await;
                let mut huge = ringshard::time::interval_at(start, Duration::MAX / 2);
                huge.set_missed_tick_behavior(behavior);
                huge.tick().await;
                assert!(timeout(Duration::from_millis(5), huge.tick())
                    .await
                    .is_err());
            }
            let never = sleep(Duration::MAX);
            assert!(timeout(Duration::from_millis(20), never).await.is_err());
            assert_eq!(timeout(Duration::MAX, async { 7 }).await, Ok(7));
            let far = ringshard::time::sleep_until(Instant::now() + Duration::from_secs(1 << 60));
            assert!(timeout(Duration::from_millis(5), far).await.is_err());
        });
    });
}

/// A push that finds the SQ full submits and reaps in the middle of a
/// turn: a recv that completed there left its waker with the driver, and
/// the shard must not then park waiting for another completion. Twelve
/// recvs through an 8-entry ring, one datagram already waiting for the
/// first: its task must finish at once, not when the unrelated datagram
/// comes 2 s later.
#[test]
fn shard_parks_at_once_over_a_completion_reaped_mid_turn() {
    let rt = Runtime::builder()
        .driver_type(DriverType::IoUring)
        .worker_threads(1)
        .io_entries(8)
        .spin_before_park(Duration::ZERO)
        .build()
        .unwrap();
    rt.block_on(async {
        let sockets: Vec<UdpSocket> = (0..12)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let addrs: Vec<_> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(b"first", addrs[0]).unwrap();
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(2));
            for addr in &addrs[1..] {
                sender.send_to(b"late", addr).unwrap();
            }
        });
        let began = Instant::now();
        let tasks: Vec<_> = sockets
            .into_iter()
            .map(|socket| {
                spawn(async move {
                    let (res, _) = socket.recv_from(Vec::with_capacity(64)).await;
                    res.unwrap();
                    Instant::now()
                })
            })
            .collect();
        let mut tasks = tasks.into_iter();
        let first = tasks.next().unwrap().await.unwrap();
        for task in tasks {
            task.await.unwrap();
        }
        late.join().unwrap();
        let waited = first - began;
        assert!(
            waited < Duration::from_secs(1),
            "the first datagram's task waited {waited:?}, for an unrelated event"
        );
    });
}
