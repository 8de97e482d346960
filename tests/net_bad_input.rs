//! Bad input and extreme values, on both drivers: each gives a clear error
//! or a documented result, never a panic inside the runtime, a hang or a
//! signal.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use common::{each_driver, runtime};
use ringshard::net::{TcpListener, TcpStream, UdpSocket};
use ringshard::{sleep, spawn, timeout, Runtime};

/// How long anything here may take.
const BOUND: Duration = Duration::from_secs(5);

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => payload
            .downcast::<&str>()
            .map(|text| text.to_string())
            .unwrap_or_default(),
    }
}

#[test]
fn the_longest_durations_everywhere_a_duration_goes() {
    each_driver(|builder| {
        let rt = runtime(builder.park_timeout(Duration::MAX), 2);
        rt.block_on(async {
            assert!(timeout(Duration::from_millis(5), sleep(Duration::MAX))
                .await
                .is_err());
            assert_eq!(timeout(Duration::MAX, async { 1 }).await, Ok(1));
            let mut every = ringshard::time::interval(Duration::MAX);
            every.tick().await;
            every.reset();
            assert!(timeout(Duration::from_millis(5), every.tick())
                .await
                .is_err());
        });
        let began = Instant::now();
        rt.shutdown_timeout(Duration::MAX);
        assert!(
            began.elapsed() < BOUND,
            "shutdown took {:?}",
            began.elapsed()
        );
    });
    let error = Runtime::builder()
        .spin_before_park(Duration::MAX)
        .build()
        .expect_err("a spin longer than a second is refused");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("spin_before_park"), "{error}");
}

#[test]
fn zero_capacity_buffers_give_zero_at_once() {
    each_driver(|builder| {
        let rt = runtime(builder, 1);
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let _peer = std::net::TcpStream::connect(addr).unwrap();
            let (mut stream, _) = listener.accept().await.unwrap();
            let (res, buf) = timeout(BOUND, stream.read(Vec::new()))
                .await
                .expect("read hung");
            assert_eq!(res.unwrap(), 0);
            assert!(buf.is_empty());
            let (res, _) = timeout(BOUND, stream.read_exact(Vec::new()))
                .await
                .expect("hung");
            assert_eq!(res.unwrap(), 0);
            let (res, _) = timeout(BOUND, stream.write(Vec::new()))
                .await
                .expect("hung");
            assert_eq!(res.unwrap(), 0);
            let (res, _) = timeout(BOUND, stream.write_all(Vec::new()))
                .await
                .expect("hung");
            assert_eq!(res.unwrap(), 0);
        });
    });
}

/// A datagram longer than the buffer fills it and the rest is discarded
/// (the count says how much was placed, as std's `recv_from`); the next
/// datagram arrives whole.
#[test]
fn a_datagram_longer_than_the_buffer_is_truncated_and_the_next_is_intact() {
    each_driver(|builder| {
        let rt = runtime(builder, 1);
        rt.block_on(async {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            let addr = socket.local_addr().unwrap();
            let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            sender.send_to(&[7u8; 3000], addr).unwrap();
            sender.send_to(b"next", addr).unwrap();
            let (res, buf) = socket.recv_from(Vec::with_capacity(1000)).await;
            let (n, from) = res.unwrap();
            assert_eq!((n, buf.len()), (1000, 1000));
            assert_eq!(from, sender.local_addr().unwrap());
            assert!(buf.iter().all(|&b| b == 7));
            let (res, buf) = socket.recv_from(Vec::with_capacity(1000)).await;
            assert_eq!(res.unwrap().0, 4);
            assert_eq!(&buf[..], b"next");
        });
    });
}

#[test]
fn connect_refused_and_address_in_use_are_their_error_kinds() {
    each_driver(|builder| {
        let rt = runtime(builder, 1);
        rt.block_on(async {
            // A port nobody listens on: bound, then closed.
            let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = free.local_addr().unwrap();
            drop(free);
            let error = timeout(BOUND, TcpStream::connect(addr))
                .await
                .expect("connect hung")
                .expect_err("nobody listens");
            assert_eq!(
                error.kind(),
                std::io::ErrorKind::ConnectionRefused,
                "{error}"
            );

            let taken = TcpListener::bind("127.0.0.1:0").unwrap();
            let Err(error) = TcpListener::bind(taken.local_addr().unwrap()) else {
                panic!("the address is taken");
            };
            assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse, "{error}");
            let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
            let Err(error) = UdpSocket::bind(udp.local_addr().unwrap()) else {
                panic!("the address is taken");
            };
            assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse, "{error}");
        });
    });
}

/// Writing to a peer that reset the connection is an `io::Error` (EPIPE
/// or ECONNRESET), never a SIGPIPE that kills the process.
#[test]
fn writing_to_a_reset_peer_is_an_error_not_a_signal() {
    each_driver(|builder| {
        let rt = runtime(builder, 1);
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let peer = std::net::TcpStream::connect(addr).unwrap();
            let (mut stream, _) = listener.accept().await.unwrap();
            // SO_LINGER 0: closing sends a RST.
            socket2::SockRef::from(&peer)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(peer);
            sleep(Duration::from_millis(20)).await;
            let mut failed = None;
            for _ in 0..100 {
                let (res, _) = timeout(BOUND, stream.write_all(vec![1u8; 64 * 1024]))
                    .await
                    .expect("write hung");
                if let Err(error) = res {
                    failed = Some(error);
                    break;
                }
            }
            let error = failed.expect("writes to a reset peer fail");
            assert!(
                matches!(
                    error.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ),
                "{error:?}"
            );
            let (res, _) = timeout(BOUND, stream.read(Vec::with_capacity(16)))
                .await
                .expect("read hung");
            // The reset was reported once; then the stream reads as ended.
            assert!(matches!(res, Ok(0) | Err(_)));
        });
    });
}

#[test]
fn nested_runtimes_and_spawn_outside_a_runtime_panic_clearly() {
    let panic = catch_unwind(|| {
        spawn(async {});
    })
    .expect_err("spawn outside a runtime panics");
    assert!(panic_text(panic).contains("outside a ringshard runtime"));

    each_driver(|builder| {
        let rt = runtime(builder, 1);
        let text = rt.block_on(async {
            let inner = Runtime::builder().worker_threads(1).build().unwrap();
            let panic = catch_unwind(AssertUnwindSafe(|| inner.block_on(async {})))
                .expect_err("block_on inside a shard panics");
            drop(inner);
            panic_text(panic)
        });
        assert!(text.contains("inside a ringshard shard"), "{text}");
        // The outer runtime is unharmed.
        assert_eq!(rt.block_on(async { 5 }), 5);
    });
}
