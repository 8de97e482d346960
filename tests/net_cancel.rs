//! The cancel contract (SPEC §5), on both drivers: a dropped op never lets
//! the kernel write into memory the runtime released, never leaks an fd, and
//! never lets an op land on a socket it was not meant for.
//!
//! Each test was shown to fail against a deliberately broken build:
//! `RUSTFLAGS='--cfg ringshard_broken="<name>"' cargo test --test net_cancel`
//! with the name given on each test (see `unexpected_cfgs` in Cargo.toml).

mod common;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::canary::Quarantine;
use common::{assert_fds_return_to, each_driver, fd_count, poll_once, runtime, serial};
use ringshard::net::{TcpListener, TcpStream, UdpSocket};
use ringshard::{
    sleep, spawn, spawn_on, timeout, yield_now, DriverKind, DriverType, Runtime, ShardId,
};

/// `count` connected pairs (ringshard client, ringshard server side).
async fn pairs(listener: &TcpListener, count: usize) -> Vec<(TcpStream, TcpStream)> {
    let addr = listener.local_addr().unwrap();
    let mut pairs = Vec::with_capacity(count);
    for _ in 0..count {
        let client = spawn(TcpStream::connect(addr));
        let (server, _) = listener.accept().await.unwrap();
        pairs.push((client.await.unwrap().unwrap(), server));
    }
    pairs
}

/// Broken build that fails it: `release_on_drop`.
#[test]
fn aborted_reads_never_write_released_buffers_and_release_each_once() {
    let _serial = serial();
    common::raise_fd_limit(8192);
    each_driver(|builder| {
        let baseline = fd_count();
        let quarantine = Arc::new(Quarantine::default());
        let rt = runtime(builder, 1);
        let q = quarantine.clone();
        rt.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let mut peers = Vec::new();
            let mut readers = Vec::new();
            for (client, mut server) in pairs(&listener, 2_000).await {
                let buf = q.buffer(512);
                readers.push(spawn(async move {
                    let _ = server.read(buf).await;
                    unreachable!("no data was sent before the abort");
                }));
                peers.push(client);
            }
            // Every reader submits its read, then all are aborted.
            sleep(Duration::from_millis(20)).await;
            for reader in &readers {
                reader.abort();
            }
            for reader in readers {
                assert!(reader.await.unwrap_err().is_cancelled());
            }
            // Now the peers send: a read still in the kernel would land in
            // a buffer the runtime released.
            for peer in &mut peers {
                let _ = peer.write_all(vec![0x55; 64]).await;
            }
            sleep(Duration::from_millis(200)).await;
            drop(peers);
        });
        drop(rt);
        let (once, corrupted) = quarantine.check();
        assert!(
            corrupted.is_empty(),
            "{} released buffers were written afterwards (first: {:?})",
            corrupted.len(),
            corrupted.first()
        );
        assert_eq!(once, 2_000, "every buffer is released exactly once");
        assert_fds_return_to(baseline);
    });
}

/// Broken build that fails it: `no_shutdown_cancel`.
#[test]
fn dropping_the_runtime_with_pending_accepts_reads_and_timers_is_fast_and_leaks_no_fd() {
    let _serial = serial();
    each_driver(|builder| {
        let baseline = fd_count();
        let rt = runtime(builder, 2);
        rt.block_on(async {
            let on_shard_1 = spawn_on(ShardId::new(1), || async {
                park_everything().await;
            });
            park_everything().await;
            on_shard_1.await.unwrap();
            sleep(Duration::from_millis(20)).await;
        });
        let start = Instant::now();
        drop(rt);
        let took = start.elapsed();
        assert!(took < Duration::from_secs(1), "drop took {took:?}");
        assert_fds_return_to(baseline);
    });
}

/// On the current shard: 10 listeners with a pending accept, 50 connections
/// with pending reads on both ends, 500 one-hour sleeps; returns once all
/// are parked.
async fn park_everything() {
    for _ in 0..10 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        spawn(async move {
            let _ = listener.accept().await;
        });
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    for (mut client, mut server) in pairs(&listener, 50).await {
        spawn(async move {
            let _ = client.read(Vec::with_capacity(64)).await;
        });
        spawn(async move {
            let _ = server.read(Vec::with_capacity(64)).await;
        });
    }
    for _ in 0..500 {
        spawn(sleep(Duration::from_secs(3600)));
    }
    yield_now().await;
}

/// Waits (yielding to the shard) until `client` reads EOF, or fails.
async fn expect_eof(client: &mut std::net::TcpStream) {
    use std::io::Read;
    client.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match client.read(&mut [0; 16]) {
            Ok(0) => return,
            Ok(n) => panic!("read {n} bytes, expected EOF"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "no EOF: the late accept leaked");
                sleep(Duration::from_millis(1)).await;
            }
            Err(e) => panic!("expected EOF, got {e}"),
        }
    }
}

/// Broken build that fails it: `leak_late_accept`.
#[test]
fn accept_completing_after_its_future_dropped_closes_the_connection() {
    let _serial = serial();
    // (builder, whether the dropped accept was in the kernel): a one-shot
    // io_uring accept completes after the drop and its orphan must close
    // the connection; a multishot accept or epoll keeps it for the next accept.
    let configs = [
        (
            common::one_shot(Runtime::builder().driver_type(DriverType::IoUring)),
            true,
        ),
        (Runtime::builder().driver_type(DriverType::IoUring), false),
        (Runtime::builder().driver_type(DriverType::Epoll), false),
    ];
    for (builder, in_kernel) in configs {
        eprintln!("-- {builder:?}");
        let rt = runtime(builder, 1);
        rt.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let baseline = fd_count();
            for _ in 0..1_000 {
                let mut accept = Box::pin(listener.accept());
                assert!(poll_once(&mut accept).await.is_pending());
                // The connection is in the backlog before the accept reaches
                // the kernel (io_uring submits at the end of the turn).
                let mut client = std::net::TcpStream::connect(addr).unwrap();
                drop(accept);
                match in_kernel {
                    // The accept completes after the drop: the orphan closes it.
                    true => expect_eof(&mut client).await,
                    // The connection waits (in the backlog, or accepted by
                    // the multishot accept), and the next accept hands it out.
                    false => {
                        let (stream, peer) = listener.accept().await.unwrap();
                        assert_eq!(peer, client.local_addr().unwrap());
                        drop(stream);
                        expect_eof(&mut client).await;
                    }
                }
            }
            sleep(Duration::from_millis(10)).await;
            assert_eq!(fd_count(), baseline, "fds leaked");
        });
    }
}

/// Broken build that fails it: `leak_queued_accepts`.
#[test]
fn listener_dropped_with_unclaimed_connections_closes_every_one() {
    let _serial = serial();
    each_driver(|builder| {
        let baseline = fd_count();
        let rt = runtime(builder, 1);
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let _first = std::net::TcpStream::connect(addr).unwrap();
            let (accepted, _) = listener.accept().await.unwrap();
            // Nobody accepts these: they wait in the kernel's backlog, or
            // (multishot accept) were accepted into the listener's queue.
            let mut clients: Vec<std::net::TcpStream> = (0..20)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect();
            sleep(Duration::from_millis(20)).await;
            drop(listener);
            drop(accepted);
            for client in &mut clients {
                expect_closed(client).await;
            }
        });
        drop(rt);
        assert_fds_return_to(baseline);
    });
}

/// Waits (yielding to the shard) until `client` sees its connection closed
/// (EOF, or a reset from a listener closed with it in the backlog), or fails.
async fn expect_closed(client: &mut std::net::TcpStream) {
    use std::io::Read;
    client.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match client.read(&mut [0; 16]) {
            Ok(0) => return,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "no EOF: an unclaimed connection leaked"
                );
                sleep(Duration::from_millis(1)).await;
            }
            other => panic!("unexpected read result {other:?}"),
        }
    }
}

/// Broken builds that fail it: `release_on_drop` (the read, never
/// cancelled, is submitted after its fd number went to the new stream), and
/// `close_armed_recv` (with buffered reads: the stream's multishot recv,
/// still in the submission queue, is armed on the new stream).
#[test]
fn read_dropped_in_flight_never_steals_bytes_from_a_stream_reusing_its_fd() {
    let _serial = serial();
    each_driver(|builder| {
        let rt = runtime(builder, 1);
        rt.block_on(async {
            let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = std_listener.local_addr().unwrap();
            let mut reused = 0;
            for round in 0..50 {
                let mut old = TcpStream::connect(addr).await.unwrap();
                let (_old_peer, _) = std_listener.accept().unwrap();
                let old_fd = std::os::fd::AsRawFd::as_raw_fd(&old);
                {
                    let mut read = Box::pin(old.read(Vec::with_capacity(4096)));
                    assert!(poll_once(&mut read).await.is_pending());
                }
                drop(old);
                // Same turn: the dropped read's SQE has not reached the
                // kernel yet. A runtime that closed the fd now would hand
                // its number to this socket and the read to it.
                let new = std::net::TcpStream::connect(addr).unwrap();
                let (mut new_peer, _) = std_listener.accept().unwrap();
                let mut new = TcpStream::from_std(new).unwrap();
                if std::os::fd::AsRawFd::as_raw_fd(&new) == old_fd {
                    reused += 1;
                }
                let message: Vec<u8> = (0..4096u32).map(|i| (i * 7 + round) as u8).collect();
                std::io::Write::write_all(&mut new_peer, &message).unwrap();
                let (res, got) = timeout(
                    Duration::from_secs(2),
                    new.read_exact(Vec::with_capacity(message.len())),
                )
                .await
                .expect("the new stream lost bytes to the old read");
                res.unwrap();
                assert!(got == message, "the new stream's bytes were corrupted");
            }
            eprintln!("fd number reused in {reused} of 50 rounds");
        });
    });
}

/// Broken build that fails it: `drop_sq_full`.
#[test]
fn ten_thousand_concurrent_ops_through_io_entries_8_all_complete_correctly() {
    let _serial = serial();
    each_driver(|builder| {
        let rt = runtime(builder.io_entries(8), 1);
        let kind = rt.driver_kind();
        rt.block_on(async {
            let sockets = 100;
            let per_socket = 100;
            let received = Rc::new(RefCell::new(vec![0u8; sockets * per_socket]));
            let mut addrs: Vec<SocketAddr> = Vec::new();
            let mut receivers = Vec::new();
            for _ in 0..sockets {
                let socket = Rc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
                addrs.push(socket.local_addr().unwrap());
                for _ in 0..per_socket {
                    let socket = socket.clone();
                    let received = received.clone();
                    receivers.push(spawn(async move {
                        let (res, buf) = socket.recv_from(Vec::with_capacity(16)).await;
                        assert_eq!(res.unwrap().0, 4);
                        let id = u32::from_le_bytes(buf[..4].try_into().unwrap());
                        received.borrow_mut()[id as usize] += 1;
                    }));
                }
            }
            yield_now().await;
            let sender = Rc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
            let senders: Vec<_> = (0..(sockets * per_socket) as u32)
                .map(|id| {
                    let sender = sender.clone();
                    let to = addrs[id as usize % sockets];
                    spawn(async move {
                        let (res, _) = sender.send_to(id.to_le_bytes().to_vec(), to).await;
                        assert_eq!(res.unwrap(), 4);
                    })
                })
                .collect();
            let all = async {
                for handle in senders.into_iter().chain(receivers) {
                    handle.await.unwrap();
                }
            };
            timeout(Duration::from_secs(20), all)
                .await
                .expect("ops never completed");
            assert!(received.borrow().iter().all(|&n| n == 1));
        });
        if kind == DriverKind::IoUring {
            let stats = rt.stats().total();
            assert!(stats.ops_completed >= 20_000, "{stats:?}");
        }
    });
}

/// Broken build that fails it: `drop_cq_overflow`.
#[test]
fn completion_burst_beyond_the_cq_loses_nothing_and_shows_in_stats() {
    let _serial = serial();
    each_driver(|builder| {
        let rt = runtime(builder.io_entries(8), 1);
        let kind = rt.driver_kind();
        let done = Arc::new(AtomicUsize::new(0));
        let counted = done.clone();
        rt.block_on(async move {
            let mut addrs = Vec::new();
            let mut receivers = Vec::new();
            for _ in 0..50 {
                let socket = Rc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
                addrs.push(socket.local_addr().unwrap());
                for _ in 0..100 {
                    let socket = socket.clone();
                    let counted = counted.clone();
                    receivers.push(spawn(async move {
                        let (res, _) = socket.recv_from(Vec::with_capacity(16)).await;
                        res.unwrap();
                        counted.fetch_add(1, Ordering::Relaxed);
                    }));
                }
            }
            sleep(Duration::from_millis(10)).await;
            // A plain thread sends all 5,000 datagrams at once, so their
            // completions arrive together: far more than the 16-entry CQ.
            let burst = std::thread::spawn(move || {
                let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                for i in 0..5_000 {
                    socket.send_to(&[1, 2, 3, 4], addrs[i % 50]).unwrap();
                }
            });
            let all = async {
                for handle in receivers {
                    handle.await.unwrap();
                }
            };
            timeout(Duration::from_secs(20), all)
                .await
                .expect("completions were lost");
            burst.join().unwrap();
        });
        assert_eq!(done.load(Ordering::Relaxed), 5_000);
        if kind == DriverKind::IoUring {
            let stats = rt.stats().total();
            assert!(stats.cq_overflows > 0, "no overflow seen: {stats:?}");
        }
    });
}

/// Sockets handed out of `block_on` and dropped after it (their shard is
/// not turning), or after the runtime: on io_uring their multishot ops
/// once made the drop shut them down and leak the fd for good. Now the
/// shard releases them at its next turn, and a runtime that is gone lets
/// them close at once. Fails under `ringshard_broken="leak_dropped_off_shard"`.
#[test]
fn sockets_dropped_off_their_shard_close_their_fds() {
    let _serial = serial();
    each_driver(|builder| {
        for after_runtime in [false, true] {
            let baseline = fd_count();
            let rt = runtime(builder.clone(), 1);
            let with_runtime = fd_count();
            let (listener, stream, peer) = rt.block_on(async {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let peer = std::net::TcpStream::connect(addr).unwrap();
                let (mut stream, _) = listener.accept().await.unwrap();
                // Arms the listener's multishot accept for the next one,
                // and the stream's multishot recv.
                let mut next = Box::pin(listener.accept());
                assert!(poll_once(&mut next).await.is_pending());
                drop(next);
                std::io::Write::write_all(&mut &peer, b"x").unwrap();
                let (res, _) = stream.read(Vec::with_capacity(8)).await;
                assert_eq!(res.unwrap(), 1);
                (listener, stream, peer)
            });
            if after_runtime {
                drop(rt);
                drop((listener, stream));
            } else {
                drop((listener, stream));
                // The shard's next turn releases them.
                rt.block_on(sleep(Duration::from_millis(20)));
                assert_fds_return_to(with_runtime + 1);
                drop(rt);
            }
            drop(peer);
            assert_fds_return_to(baseline);
        }
    });
}

/// A reader that races every read against a short timer drops many reads
/// in flight. Unbuffered on io_uring the kernel had written into their
/// buffers: those bytes once went with them (half of a 150,000-byte
/// stream). Every mode now returns them to the next read, in order. Fails
/// under `ringshard_broken="drop_late_bytes"`.
#[test]
fn reads_dropped_in_flight_lose_no_byte_in_any_mode() {
    let _serial = serial();
    const TOTAL: usize = 150_000;
    let data: Vec<u8> = common::pattern()
        .iter()
        .cycle()
        .take(TOTAL)
        .copied()
        .collect();
    let data = Arc::new(data);
    each_driver(|builder| {
        let sent = data.clone();
        let rt = runtime(builder, 1);
        let (received, dropped) = rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let peer = std::thread::spawn(move || {
                let mut peer = std::net::TcpStream::connect(addr).unwrap();
                peer.set_nodelay(true).unwrap();
                for (i, chunk) in sent.chunks(1000).enumerate() {
                    std::io::Write::write_all(&mut peer, chunk).unwrap();
                    // Gaps the reader's timers (1 ms ticks) fall into.
                    if i % 2 == 0 {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            });
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut received = Vec::with_capacity(TOTAL);
            let mut dropped = 0;
            let mut rng = common::Rng(7);
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                assert!(Instant::now() < deadline, "the stream never ended");
                let wait = Duration::from_micros(50 + rng.below(400));
                ringshard::select! {
                    read = stream.read(Vec::with_capacity(4096)) => {
                        let (res, buf) = read;
                        if res.expect("read") == 0 {
                            break;
                        }
                        received.extend_from_slice(&buf);
                    }
                    _ = sleep(wait) => dropped += 1,
                }
            }
            peer.join().unwrap();
            (received, dropped)
        });
        eprintln!("{dropped} reads dropped");
        assert!(dropped > 10, "the test must drop reads ({dropped})");
        assert_eq!(received.len(), TOTAL, "bytes received");
        assert!(received == *data, "bytes out of order");
    });
}

/// The deterministic form: a read whose recv completed (the shard reaped
/// it) but whose future was dropped before it saw the result. Its bytes
/// come back, first and in order, from the next read. Fails on the old
/// code in one-shot mode (the bytes were freed with the orphaned buffer),
/// and under `ringshard_broken="drop_late_bytes"`.
#[test]
fn a_read_completed_but_dropped_hands_its_bytes_to_the_next_read() {
    let _serial = serial();
    each_driver(|builder| {
        let rt = runtime(builder, 1);
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let mut peer = std::net::TcpStream::connect(addr).unwrap();
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut read = Box::pin(stream.read(Vec::with_capacity(64)));
            assert!(poll_once(&mut read).await.is_pending());
            std::io::Write::write_all(&mut peer, b"first").unwrap();
            // The shard turns and reaps the recv; nobody polls `read`.
            sleep(Duration::from_millis(50)).await;
            drop(read);
            std::io::Write::write_all(&mut peer, b"second").unwrap();
            let mut got = Vec::new();
            while got.len() < 11 {
                let read = timeout(Duration::from_secs(5), stream.read(Vec::with_capacity(64)));
                let (res, buf) = read.await.expect("the next read hung");
                assert!(res.unwrap() > 0);
                got.extend_from_slice(&buf);
            }
            assert_eq!(got, b"firstsecond");
        });
    });
}

/// A read dropped after its recv failed with a reset: the next read
/// reports the reset, not an end of stream (the socket reports its error
/// only once, to the recv that took it).
#[test]
fn a_reset_seen_by_a_dropped_read_is_reported_by_the_next_read() {
    let _serial = serial();
    each_driver(|builder| {
        let rt = runtime(builder, 1);
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let peer = std::net::TcpStream::connect(addr).unwrap();
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut read = Box::pin(stream.read(Vec::with_capacity(64)));
            assert!(poll_once(&mut read).await.is_pending());
            socket2::SockRef::from(&peer)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(peer);
            // The shard reaps the failed recv; nobody polls `read`.
            sleep(Duration::from_millis(50)).await;
            drop(read);
            let next = timeout(Duration::from_secs(5), stream.read(Vec::with_capacity(64)));
            let (res, _) = next.await.expect("the next read hung");
            let error = res.expect_err("a reset is not an end of stream");
            assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
        });
    });
}
