//! Write-behind sends (`Builder::buffered_writes`, on by default on
//! io_uring): a small `write_all` returns once its bytes are copied, its
//! send running behind it. Bytes still come out whole and in order whatever
//! mix of writes follows, a write shutdown (or the close of a dropped
//! stream) comes after them, a send's error reaches a later write, a
//! runtime dropped with a send stuck behind a peer that does not read
//! neither hangs nor waits out its 5 s (nor leaks the socket with no time
//! at all), a dropped stream's stuck send gets a 5 s linger and no more,
//! and `block_on` sees its sends out before it returns.
//!
//! Each test was shown to fail against a deliberately broken build:
//! `RUSTFLAGS='--cfg ringshard_broken="<name>"' cargo test --test net_write_behind`
//! with the name given on each test.

mod common;

use std::io::Read;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use common::{serial, Rng};
use ringshard::net::TcpStream;
use ringshard::{timeout, DriverType, Runtime};

/// One io_uring shard that never makes a send a direct syscall (on an idle
/// shard a `write_all` would otherwise try one first, which completes in
/// its poll too), so small writes always go behind.
fn runtime() -> Runtime {
    std::env::set_var("RINGSHARD_URING_TUNE", "direct_send=0");
    Runtime::builder()
        .driver_type(DriverType::IoUring)
        .worker_threads(1)
        .pin_threads(false)
        .build()
        .expect("io_uring runtime")
}

/// The byte at offset `at` of the test stream.
fn byte(at: u64) -> u8 {
    (at % 251) as u8
}

fn bytes(from: u64, len: usize) -> Vec<u8> {
    (from..from + len as u64).map(byte).collect()
}

/// A peer with a small receive buffer that reads slowly (pausing every
/// 64 KiB, so the sender's writes queue up behind a full socket), checks
/// every byte against `byte`, and returns how many came before end of
/// stream. It starts reading once `gate` says so (or is dropped).
fn slow_reader(
    gate: std::sync::mpsc::Receiver<()>,
) -> (std::net::SocketAddr, std::thread::JoinHandle<u64>) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(1).unwrap();
    let listener: std::net::TcpListener = socket.into();
    let addr = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let _ = gate.recv();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut at = 0u64;
        let mut buf = vec![0; 1024];
        let mut since_pause = 0;
        loop {
            let n = stream.read(&mut buf).expect("the writer stalled");
            if n == 0 {
                return at;
            }
            for &b in &buf[..n] {
                assert_eq!(b, byte(at), "byte {at} is out of order");
                at += 1;
            }
            since_pause += n;
            if since_pause >= 64 * 1024 {
                since_pause = 0;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    (addr, reader)
}

/// Turns the shard until `thread` is done (20 s at most).
async fn until_finished<T>(thread: &std::thread::JoinHandle<T>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !thread.is_finished() && Instant::now() < deadline {
        ringshard::sleep(Duration::from_millis(5)).await;
    }
}

/// Small `write_all`s (write-behind) mixed with `write`s and large
/// `write_all`s (both lend their buffer to an awaited send), `writev`s and
/// (with the `tokio-io` feature) poll-mode writes, which are direct
/// syscalls, with yields between, 8 MiB in all, into a socket kept full:
/// the peer reads every byte in order.
///
/// Broken build that fails it: `behind_no_wait` (later writes do not wait
/// for the write-behind send in flight), with `--features tokio-io`.
#[test]
fn writes_of_every_kind_keep_their_order_behind_a_full_socket() {
    let _serial = serial();
    let (addr, reader) = slow_reader(std::sync::mpsc::channel().1);
    let finished = &reader;
    let total = runtime().block_on(async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // A small send buffer, so the socket is often full.
        socket2::SockRef::from(&stream)
            .set_send_buffer_size(16 * 1024)
            .unwrap();
        let mut rng = Rng(0x5eed);
        let mut at = 0u64;
        let deadline = Instant::now() + Duration::from_secs(20);
        while at < 8 << 20 {
            assert!(Instant::now() < deadline, "writing 8 MiB took over 20 s");
            match rng.below(10) {
                // The ring takes what this poll queued: a send behind is
                // then in flight while the next write is made.
                8 => ringshard::yield_now().await,
                // A poll-mode write: a direct syscall.
                #[cfg(feature = "tokio-io")]
                9 => {
                    let len = 1 + rng.below(4096) as usize;
                    tokio::io::AsyncWriteExt::write_all(&mut stream, &bytes(at, len))
                        .await
                        .unwrap();
                    at += len as u64;
                }
                0 => {
                    let (res, _) = stream.write(bytes(at, 1 + rng.below(4096) as usize)).await;
                    at += res.unwrap() as u64;
                }
                1 => {
                    let len = 4097 + rng.below(60_000) as usize;
                    let (res, _) = stream.write_all(bytes(at, len)).await;
                    res.unwrap();
                    at += len as u64;
                }
                2 => {
                    let first = 1 + rng.below(2048) as usize;
                    let second = 1 + rng.below(2048) as usize;
                    let bufs = vec![bytes(at, first), bytes(at + first as u64, second)];
                    let (res, _) = stream.writev(bufs).await;
                    at += res.unwrap() as u64;
                }
                _ => {
                    let len = 1 + rng.below(4096) as usize;
                    let (res, _) = stream.write_all(bytes(at, len)).await;
                    res.unwrap();
                    at += len as u64;
                }
            }
        }
        stream.shutdown(Shutdown::Write).unwrap();
        until_finished(finished).await;
        at
    });
    assert_eq!(reader.join().unwrap(), total, "bytes were lost");
}

/// A `write_all` whose send waits behind a full socket (the peer reads
/// nothing until the stream is shut or dropped), then a write
/// shutdown and the stream dropped: the peer reads every byte that
/// `write_all` accepted, then end of stream.
///
/// Broken build that fails it: `shutdown_before_behind` (the shutdown is
/// made at once, ahead of the send in flight).
#[test]
fn a_shutdown_and_a_drop_come_after_the_bytes_written_behind() {
    let _serial = serial();
    for shutdown in [true, false] {
        let (open, gate) = std::sync::mpsc::channel();
        let (addr, reader) = slow_reader(gate);
        let finished = &reader;
        let total = runtime().block_on(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let at = fill(&mut stream).await;
            if shutdown {
                stream.shutdown(Shutdown::Write).unwrap();
            }
            drop(stream);
            open.send(()).unwrap();
            // The shard goes on turning, as a server's does.
            until_finished(finished).await;
            at
        });
        assert_eq!(
            reader.join().unwrap(),
            total,
            "shutdown {shutdown}: bytes were lost"
        );
    }
}

/// The peer resets the connection: the writes go on returning until one
/// reports the error (a write-behind send's, or its own), and none hangs.
#[test]
fn an_error_behind_a_write_reaches_a_later_write() {
    let _serial = serial();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let socket = socket2::Socket::from(stream);
        // Closing with a zero linger sends a reset.
        socket.set_linger(Some(Duration::ZERO)).unwrap();
    });
    runtime().block_on(async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        peer.join().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let error = loop {
            assert!(Instant::now() < deadline, "no write failed in 10 s");
            let write = stream.write_all(bytes(0, 100));
            let (res, _) = timeout(Duration::from_secs(5), write)
                .await
                .expect("a write hung");
            if let Err(error) = res {
                break error;
            }
        };
        assert!(
            matches!(
                error.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "{error:?}"
        );
    });
}

/// Connects to `listener`, fills the socket with write-behind sends until
/// one is stuck, and keeps the stream in a task (so the runtime's shutdown
/// finds its send); returns the peer's socket, which reads nothing.
fn park_a_stuck_send(rt: &Runtime, listener: std::net::TcpListener) -> std::net::TcpStream {
    let addr = listener.local_addr().unwrap();
    rt.block_on(async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let (peer, _) = listener.accept().unwrap();
        fill(&mut stream).await;
        ringshard::spawn(async move {
            let _stream = stream;
            std::future::pending::<()>().await
        });
        peer
    })
}

/// A runtime dropped while a write-behind send waits behind a peer that
/// does not read: the drop gives it a short grace, then cancels it, well
/// inside the 5 s a drop allows.
#[test]
fn a_runtime_dropped_with_a_send_stuck_behind_does_not_wait_it_out() {
    let _serial = serial();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let rt = runtime();
    let _peer = park_a_stuck_send(&rt, listener);
    let start = Instant::now();
    drop(rt);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(3), "the drop took {took:?}");
}

/// A stream dropped while its write-behind send waits behind a peer that
/// reads nothing: the send gets its linger (5 s), then is cancelled and the
/// socket closed, rather than held open for as long as the peer stalls.
///
/// Broken build that fails it: `behind_no_linger` (orphaned sends are
/// never swept).
#[test]
fn a_dropped_stream_whose_peer_reads_nothing_closes_after_its_linger() {
    let _serial = serial();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    runtime().block_on(async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let (_peer, _) = listener.accept().unwrap();
        fill(&mut stream).await;
        let open = common::fd_count();
        drop(stream);
        let start = Instant::now();
        ringshard::sleep(Duration::from_secs(1)).await;
        assert_eq!(common::fd_count(), open, "closed before its linger");
        while common::fd_count() >= open && start.elapsed() < Duration::from_secs(12) {
            ringshard::sleep(Duration::from_millis(50)).await;
        }
        let took = start.elapsed();
        assert!(
            common::fd_count() < open,
            "the socket was still open after {took:?}"
        );
        assert!(
            took >= Duration::from_secs(4),
            "closed after {took:?}, before its linger"
        );
    });
}

/// Small writes of the test stream's bytes until one has to wait (it sent
/// nothing) and the socket has no room: the write before it is then in
/// flight behind a full socket. Returns the bytes written.
async fn fill(stream: &mut TcpStream) -> u64 {
    socket2::SockRef::from(&*stream)
        .set_send_buffer_size(16 * 1024)
        .unwrap();
    let mut at = 0u64;
    loop {
        let write = stream.write_all(bytes(at, 4096));
        match timeout(Duration::from_millis(50), write).await {
            Ok((res, _)) => at += res.unwrap() as u64,
            // It only waited for the send before it: a slow turn (under
            // valgrind, say) unless the socket is full.
            Err(_) if !writable(stream) => return at,
            Err(_) => {}
        }
        assert!(at < 64 << 20, "the socket never filled");
    }
}

/// Whether the socket has room to write (`poll` for `POLLOUT`, no wait).
fn writable(stream: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut fd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the call only.
    unsafe { libc::poll(&mut fd, 1, 0) > 0 && fd.revents & libc::POLLOUT != 0 }
}

/// A shutdown whose timeout is shorter than the sends' grace still cancels
/// a send stuck behind a peer that reads nothing, and closes its socket
/// instead of leaking it.
///
/// Broken build that fails it: `behind_no_final_cancel`.
#[test]
fn a_shutdown_with_no_time_left_still_closes_a_stuck_sends_socket() {
    let _serial = serial();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let baseline = common::fd_count();
    let rt = runtime();
    let peer = park_a_stuck_send(&rt, listener);
    rt.shutdown_timeout(Duration::ZERO);
    // The listener went with the block, the peer's socket stays: one more.
    common::assert_fds_return_to(baseline);
    drop(peer);
}

/// `block_on` returns right after `write_all`s that went behind into a full
/// socket: it sees their sends out first (as the writes would have been
/// before they returned), so a reader that starts only after it returns
/// gets every byte. A shard that does not turn does not move a send
/// waiting for room (`DEFER_TASKRUN`).
///
/// Broken build that fails it: `block_on_no_flush`.
#[test]
fn block_on_sees_its_sends_out_of_a_full_socket_before_it_returns() {
    let _serial = serial();
    let (open, gate) = std::sync::mpsc::channel();
    let (addr, reader) = slow_reader(gate);
    let rt = runtime();
    let (stream, total) = rt.block_on(async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let total = fill(&mut stream).await;
        // The reader starts in 200 ms, while `block_on` returns.
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let _ = open.send(());
        });
        (stream, total)
    });
    stream.shutdown(Shutdown::Write).unwrap();
    // The shard turns no more: the reader's end of stream needs the sends
    // to have gone out already.
    let read = reader.join().unwrap();
    drop(stream);
    drop(rt);
    assert_eq!(read, total, "bytes were lost");
}

/// `block_on` returns right after a `write_all` that went behind: its bytes
/// were handed to the kernel, so a peer the caller then waits on gets them
/// while the shard does not turn.
///
/// Broken build that fails it: `block_on_no_flush`.
#[test]
fn block_on_hands_a_write_behind_to_the_kernel_before_it_returns() {
    let _serial = serial();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let rt = runtime();
    let stream = rt.block_on(async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let (res, _) = stream.write_all(bytes(0, 100)).await;
        res.unwrap();
        stream
    });
    let (mut peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut got = vec![0; 100];
    peer.read_exact(&mut got).expect("the bytes never left");
    assert_eq!(got, bytes(0, 100));
    drop(stream);
}
