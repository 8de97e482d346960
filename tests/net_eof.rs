//! End of stream is never lost, on both drivers: a peer's last bytes and
//! its FIN may arrive together (one epoll event), and every read after the
//! data must still return `Ok(0)`.
//!
//! Shown failing with `RUSTFLAGS='--cfg ringshard_broken="epoll_eof_not_sticky"'
//! cargo test --test net_eof` (epoll reads after the data wait forever).

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use common::{each_driver, pattern, runtime};
use ringshard::net::{TcpListener, TcpStream};
use ringshard::{sleep, spawn, timeout};

/// How long a read that should see the end may take.
const BOUND: Duration = Duration::from_secs(5);

/// The stream is registered with epoll by its `connect`; the peer's
/// bytes and FIN then come in one event while nobody reads, and the first
/// read comes up short.
#[test]
fn eof_sent_with_the_last_bytes_is_seen_by_every_later_read() {
    each_driver(|builder| {
        let rt = runtime(builder, 1);
        rt.block_on(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let peer = std::thread::spawn(move || {
                let (mut peer, _) = listener.accept().unwrap();
                peer.write_all(b"hello").unwrap();
                peer.shutdown(Shutdown::Write).unwrap();
                // Hold the socket until the client is done.
                let mut rest = Vec::new();
                peer.read_to_end(&mut rest).unwrap();
            });
            let mut stream = TcpStream::connect(addr).await.unwrap();
            // Both the bytes and the FIN arrive, and their event is
            // collected, before the first read.
            sleep(Duration::from_millis(50)).await;
            let (res, buf) = stream.read(Vec::with_capacity(64)).await;
            assert_eq!(res.unwrap(), 5);
            assert_eq!(&buf[..], b"hello");
            for attempt in 0..3 {
                let read = timeout(BOUND, stream.read(Vec::with_capacity(64))).await;
                let (res, _) =
                    read.unwrap_or_else(|_| panic!("read {attempt} after the data hung"));
                assert_eq!(
                    res.unwrap(),
                    0,
                    "read {attempt} after the data sees the end"
                );
            }
            drop(stream);
            peer.join().unwrap();
        });
    });
}

#[test]
fn twenty_peers_sending_then_closing_all_reach_eof() {
    const PEERS: usize = 20;
    const BYTES: usize = 2 << 20;
    each_driver(|builder| {
        let rt = runtime(builder, 1);
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let peers: Vec<_> = (0..PEERS)
                .map(|_| {
                    std::thread::spawn(move || {
                        let mut peer = std::net::TcpStream::connect(addr).unwrap();
                        let mut sent = 0;
                        while sent < BYTES {
                            let chunk = (BYTES - sent).min(pattern().len());
                            peer.write_all(&pattern()[..chunk]).unwrap();
                            sent += chunk;
                        }
                        // Closing both sides: the FIN follows the last bytes.
                    })
                })
                .collect();
            let mut readers = Vec::new();
            for _ in 0..PEERS {
                let (mut stream, _) = listener.accept().await.unwrap();
                readers.push(spawn(async move {
                    let mut total = 0;
                    let mut buf = Vec::with_capacity(64 * 1024);
                    loop {
                        // A slow reader: the last bytes and the FIN come
                        // in one event while it sleeps.
                        sleep(Duration::from_millis(1)).await;
                        buf.clear();
                        let (res, back) = stream.read(buf).await;
                        buf = back;
                        match res.expect("read") {
                            0 => return total,
                            n => total += n,
                        }
                    }
                }));
            }
            let mut reached = 0;
            let deadline = ringshard::time::Instant::now() + Duration::from_secs(20);
            for reader in readers {
                if let Ok(total) = ringshard::time::timeout_at(deadline, reader).await {
                    assert_eq!(total.unwrap(), BYTES);
                    reached += 1;
                }
            }
            assert_eq!(reached, PEERS, "streams that saw EOF");
            peers.into_iter().for_each(|p| p.join().unwrap());
        });
    });
}
