//! Faults from the network, injected by a proxy between a ringshard client
//! and a ringshard echo server (tests/common/proxy.rs), on both drivers:
//! echoed bytes are exact, or the stream ends with an `io::Error` (or EOF)
//! after an exact prefix. Every wait is bounded.

mod common;

use std::time::Duration;

use common::proxy::{Fault, Proxy};
use common::{each_driver, pattern, runtime, Rng};
use ringshard::net::{TcpListener, TcpStream};
use ringshard::{spawn, timeout};

const BOUND: Duration = Duration::from_secs(30);

async fn echo_server(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        spawn(common::echo(stream, 16 * 1024));
    }
}

/// How the client's stream ended.
#[derive(Debug, PartialEq)]
enum End {
    /// Every byte echoed.
    Complete,
    /// EOF after this many bytes.
    Eof(usize),
    /// An `io::Error` after this many bytes.
    Error(usize),
}

/// Sends `total` bytes of the pattern in random-sized messages through
/// `fault` and reads the echo; checks every byte it gets.
fn run(fault: Fault, total: usize) -> Vec<End> {
    let ends = std::cell::RefCell::new(Vec::new());
    each_driver(|builder| {
        let rt = runtime(builder, 1);
        let end = rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let upstream = listener.local_addr().unwrap();
            let server = spawn(echo_server(listener));
            let proxy = Proxy::start(upstream, fault);
            let stream = TcpStream::connect(proxy.addr()).await.unwrap();
            let (mut reader, mut writer) = stream.into_split();
            let sent = &pattern()[..total];
            let writer = spawn(async move {
                let mut rng = Rng(total as u64);
                let mut at = 0;
                while at < total {
                    let size = (1 + rng.below(4096) as usize).min(total - at);
                    let (res, _) = writer.write_all(sent[at..at + size].to_vec()).await;
                    if res.is_err() {
                        return;
                    }
                    at += size;
                }
                // Keep the write half (and so the socket) open until the
                // reader is done.
                std::future::pending::<()>().await;
            });
            let read_all = async {
                let mut got = Vec::with_capacity(total);
                let mut buf = Vec::with_capacity(8192);
                while got.len() < total {
                    buf.clear();
                    let (res, back) = reader.read(buf).await;
                    buf = back;
                    match res {
                        Ok(0) => return (got.len(), End::Eof(got.len())),
                        Ok(_) => {
                            assert_eq!(&buf[..], &sent[got.len()..got.len() + buf.len()]);
                            got.extend_from_slice(&buf);
                        }
                        Err(_) => return (got.len(), End::Error(got.len())),
                    }
                }
                (got.len(), End::Complete)
            };
            let (_, end) = timeout(BOUND, read_all)
                .await
                .unwrap_or_else(|_| panic!("{fault:?}: the client hung"));
            writer.abort();
            server.abort();
            drop(proxy);
            end
        });
        ends.borrow_mut().push(end);
    });
    ends.into_inner()
}

#[test]
fn one_byte_segments_arrive_exact() {
    assert!(run(Fault::Split, 8 * 1024)
        .iter()
        .all(|end| *end == End::Complete));
}

#[test]
fn delayed_chunks_arrive_exact() {
    let ends = run(Fault::Delay(Duration::from_millis(2)), 64 * 1024);
    assert!(ends.iter().all(|end| *end == End::Complete), "{ends:?}");
}

#[test]
fn a_peer_that_stops_reading_for_a_while_gets_everything_after() {
    let ends = run(Fault::Stall(Duration::from_millis(500)), 120 * 1024);
    assert!(ends.iter().all(|end| *end == End::Complete), "{ends:?}");
}

#[test]
fn a_half_close_mid_stream_ends_with_the_exact_prefix_then_eof() {
    let ends = run(Fault::HalfClose(10_000), 64 * 1024);
    assert!(ends.iter().all(|end| *end == End::Eof(10_000)), "{ends:?}");
}

#[test]
fn a_reset_mid_stream_is_an_error_or_eof_after_an_exact_prefix() {
    let ends = run(Fault::Reset(10_000), 64 * 1024);
    for end in ends {
        match end {
            End::Error(n) | End::Eof(n) => assert!(n <= 10_000, "{n} bytes after the reset"),
            End::Complete => panic!("a reset stream cannot complete"),
        }
    }
}

#[test]
fn a_clean_proxy_changes_nothing() {
    let ends = run(Fault::None, 128 * 1024);
    assert!(ends.iter().all(|end| *end == End::Complete), "{ends:?}");
}
