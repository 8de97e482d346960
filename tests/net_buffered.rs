//! io_uring's multishot ops, on by default: buffered reads
//! (`Builder::buffered_reads`: one socket cannot drain the shard's buffer
//! ring, a dropped stream gives its buffers back, bytes arrive whole and in
//! order across pauses, a stream dropped off its shard never lets its recv
//! land on another socket) and multishot accept (two tasks accepting on one
//! listener, a peer that resets before it is accepted).
//!
//! Each test was shown to fail against a deliberately broken build:
//! `RUSTFLAGS='--cfg ringshard_broken="<name>"' cargo test --test net_buffered`
//! with the name given on each test. (The fd-reuse hazard of a dropped
//! stream's recv is tested in net_cancel.rs, broken build `close_armed_recv`.)

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{assert_fds_return_to, fd_count, pattern, poll_once, serial};
use ringshard::net::{TcpListener, TcpStream};
use ringshard::{sleep, spawn, timeout, DriverType, Runtime};

fn runtime() -> Runtime {
    Runtime::builder()
        .driver_type(DriverType::IoUring)
        .worker_threads(1)
        .pin_threads(false)
        .build()
        .expect("io_uring runtime")
}

/// 4,000 round trips of 4 KiB on a fresh connection: every byte checked.
async fn echo_round_trips(listener: &TcpListener) {
    let addr = listener.local_addr().unwrap();
    let client = std::thread::spawn(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        let mut got = vec![0; 4096];
        for i in 0..4_000 {
            let message = &pattern()[i % 1000..i % 1000 + 4096];
            stream.write_all(message).unwrap();
            stream.read_exact(&mut got).unwrap();
            assert!(got == message, "echo corrupted");
        }
    });
    let (mut stream, _) = listener.accept().await.unwrap();
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let (res, read) = stream.read(buf).await;
        if res.unwrap() == 0 {
            break;
        }
        let (res, written) = stream.write_all(read).await;
        res.unwrap();
        buf = written;
    }
    client.join().unwrap();
}

/// Broken build that fails it: `no_recv_cap`.
#[test]
fn a_socket_nobody_reads_cannot_drain_the_buffer_ring_and_loses_nothing() {
    let _serial = serial();
    let rt = runtime();
    let flood: Vec<u8> = pattern().iter().cycle().take(4 << 20).copied().collect();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let writer = std::thread::spawn({
            let flood = flood.clone();
            move || {
                let mut stream = std::net::TcpStream::connect(addr).unwrap();
                stream.write_all(&flood).unwrap();
            }
        });
        let (mut flooded, _) = listener.accept().await.unwrap();
        // One small read arms the socket's recv; then nobody reads it.
        let (res, first) = flooded.read(Vec::with_capacity(1)).await;
        assert_eq!(res.unwrap(), 1);
        let deadline = Instant::now() + Duration::from_secs(2);
        while rt.stats().total().recv_pauses == 0 && Instant::now() < deadline {
            sleep(Duration::from_millis(5)).await;
        }
        // Another connection meanwhile reads from the ring, never short.
        echo_round_trips(&listener).await;
        let now = rt.stats().total();
        assert_eq!(
            now.recv_buffer_shortages, 0,
            "one unread socket drained the ring ({now:?})"
        );
        assert!(now.recv_pauses >= 1, "the unread socket was never paused");
        // Everything the flooder sent arrives, whole and in order.
        let mut received = first;
        let mut buf = Vec::with_capacity(64 * 1024);
        while received.len() < flood.len() {
            let (res, read) = flooded.read(buf).await;
            assert!(res.unwrap() > 0, "EOF after {} bytes", received.len());
            received.extend_from_slice(&read);
            buf = read;
        }
        assert!(received == flood, "flooded stream corrupted");
        writer.join().unwrap();
    });
}

/// Broken build that fails it: `leak_recv_buffers`.
#[test]
fn streams_dropped_with_unread_buffers_give_them_back_and_close_their_fds() {
    let _serial = serial();
    let baseline = fd_count();
    let rt = runtime();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // 600 streams, each holding more than 4 KiB it never reads (one or
        // two buffers, the first partly read): over twice the ring.
        for _ in 0..600 {
            let mut client = TcpStream::connect(addr).await.unwrap();
            let (mut server, _) = listener.accept().await.unwrap();
            let (res, _) = client.write_all(pattern()[..8192].to_vec()).await;
            res.unwrap();
            let (res, _) = server.read(Vec::with_capacity(1)).await;
            assert_eq!(res.unwrap(), 1);
            drop(server);
            drop(client);
        }
        echo_round_trips(&listener).await;
        let now = rt.stats().total();
        assert_eq!(
            now.recv_buffer_shortages, 0,
            "dropped streams kept their buffers ({now:?})"
        );
    });
    drop(rt);
    assert_fds_return_to(baseline);
}

/// Fails without the fix in `Inner::drop` (closing the fd when its shard
/// cannot be reached): the stream's RecvMulti, still in the submission
/// queue, is armed on the new socket that took its fd number.
#[test]
fn stream_dropped_off_its_shard_never_lets_its_recv_steal_from_a_new_socket() {
    let _serial = serial();
    let rt = runtime();
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = std_listener.local_addr().unwrap();
    for round in 0..20u32 {
        let mut old = rt.block_on(TcpStream::connect(addr)).unwrap();
        let (_old_peer, _) = std_listener.accept().unwrap();
        // The read arms the recv; block_on returns before any enter.
        rt.block_on(async {
            let mut read = Box::pin(old.read(Vec::with_capacity(4096)));
            assert!(poll_once(&mut read).await.is_pending());
        });
        // Dropped outside the runtime: its driver cannot be reached.
        drop(old);
        let new = std::net::TcpStream::connect(addr).unwrap();
        let (mut new_peer, _) = std_listener.accept().unwrap();
        let message: Vec<u8> = (0..4096u32).map(|i| (i * 13 + round) as u8).collect();
        new_peer.write_all(&message).unwrap();
        rt.block_on(async {
            let mut new = TcpStream::from_std(new).unwrap();
            let (res, got) = timeout(
                Duration::from_secs(2),
                new.read_exact(Vec::with_capacity(message.len())),
            )
            .await
            .expect("the new socket lost bytes to the dropped stream's recv");
            res.unwrap();
            assert!(got == message, "the new socket's bytes were corrupted");
        });
    }
}

/// Fails without waking a displaced waker (`recv::set_waker`): task A
/// waits in `accept`, task B's accept replaces A's waker and is dropped, and
/// the next connection wakes nobody.
#[test]
fn two_tasks_accepting_on_one_listener_lose_no_wakeup() {
    let _serial = serial();
    let rt = runtime();
    rt.block_on(async {
        let listener = std::rc::Rc::new(TcpListener::bind("127.0.0.1:0").unwrap());
        let addr = listener.local_addr().unwrap();
        for _ in 0..20 {
            let first = spawn({
                let listener = listener.clone();
                async move { listener.accept().await.map(|(_, peer)| peer) }
            });
            sleep(Duration::from_millis(2)).await;
            {
                let mut second = Box::pin(listener.accept());
                assert!(poll_once(&mut second).await.is_pending());
            }
            let client = std::net::TcpStream::connect(addr).unwrap();
            let peer = timeout(Duration::from_secs(2), first)
                .await
                .expect("the waiting acceptor was never woken")
                .unwrap()
                .unwrap();
            assert_eq!(peer, client.local_addr().unwrap());
        }
    });
}

/// Fails without skipping connections whose peer address is gone: a peer
/// that resets right after connecting makes `getpeername` fail (ENOTCONN)
/// for a connection the multishot accept took, and `accept` returned that
/// error instead of the next connection.
#[test]
fn a_peer_that_resets_before_accept_does_not_fail_accept() {
    let _serial = serial();
    let rt = runtime();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Arm the multishot accept.
        let _first = std::net::TcpStream::connect(addr).unwrap();
        let _ = listener.accept().await.unwrap();
        for _ in 0..20 {
            let reset = std::net::TcpStream::connect(addr).unwrap();
            socket2::SockRef::from(&reset)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(reset); // RST
            sleep(Duration::from_millis(5)).await;
            let good = std::net::TcpStream::connect(addr).unwrap();
            let (_stream, peer) = listener.accept().await.expect("accept failed");
            if peer != good.local_addr().unwrap() {
                // The reset one still had an address: fine, take the next.
                let (_stream, peer) = listener.accept().await.expect("accept failed");
                assert_eq!(peer, good.local_addr().unwrap());
            }
        }
    });
}
