//! Poll-mode I/O under tokio's and futures' traits (features `tokio-io`,
//! `futures-io`), on both drivers: the codecs and helpers users bring, and
//! the pitfalls peers shipped (a `Pending` write sent later, lost or doubled
//! bytes after a dropped read, errors read as end of stream).

mod common;

use std::io::IoSlice;
use std::net::Shutdown;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use ringshard::net::{TcpListener, TcpStream, UnixStream};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A connected pair on loopback.
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let connect = ringshard::spawn(async move { TcpStream::connect(addr).await.unwrap() });
    let (server, _) = listener.accept().await.unwrap();
    (connect.await.unwrap(), server)
}

/// The byte at position `i` of the test streams: a pattern that shows any
/// loss, duplication or reordering.
fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

#[test]
fn framed_lines_codec_round_trips() {
    let _serial = common::serial();
    use tokio_util::codec::{Framed, LinesCodec};
    common::each_driver(|builder| {
        let rt = common::runtime(builder, 1);
        rt.block_on(async {
            let (client, server) = pair().await;
            let echo = ringshard::spawn(async move {
                let mut lines = Framed::new(server, LinesCodec::new());
                while let Some(line) = lines.next().await {
                    lines.send(line.unwrap().to_uppercase()).await.unwrap();
                }
            });
            let mut lines = Framed::new(client, LinesCodec::new());
            for i in 0..200 {
                let line = format!("line {i} {}", "x".repeat(i * 37));
                lines.send(line.clone()).await.unwrap();
                assert_eq!(lines.next().await.unwrap().unwrap(), line.to_uppercase());
            }
            drop(lines);
            ringshard::timeout(Duration::from_secs(10), echo)
                .await
                .expect("the server sees the end of the stream")
                .unwrap();
        });
    });
}

#[test]
fn futures_io_read_to_end_write_all_close() {
    let _serial = common::serial();
    use futures_util::io::{AsyncReadExt, AsyncWriteExt};
    common::each_driver(|builder| {
        let rt = common::runtime(builder, 1);
        rt.block_on(async {
            let (mut client, mut server) = pair().await;
            let sent: Vec<u8> = (0..1 << 20).map(pattern).collect();
            let expected = sent.clone();
            let writer = ringshard::spawn(async move {
                AsyncWriteExt::write_all(&mut client, &sent).await.unwrap();
                client.close().await.unwrap();
                // The read side still works after the FIN.
                let mut back = Vec::new();
                AsyncReadExt::read_to_end(&mut client, &mut back)
                    .await
                    .unwrap();
                back
            });
            let mut got = Vec::new();
            AsyncReadExt::read_to_end(&mut server, &mut got)
                .await
                .unwrap();
            assert!(got == expected, "1 MiB arrives intact");
            AsyncWriteExt::write_all(&mut server, b"done")
                .await
                .unwrap();
            server.close().await.unwrap();
            assert_eq!(writer.await.unwrap(), b"done");
        });
    });
}

/// A write that returned `Pending` left nothing behind: offered other bytes
/// next, the socket sends exactly the bytes reported written, in order.
#[test]
fn a_pending_write_never_sends_its_bytes_later() {
    let _serial = common::serial();
    common::each_driver(|builder| {
        let rt = common::runtime(builder, 1);
        rt.block_on(async {
            let (mut writer, mut reader) = pair().await;
            socket2::SockRef::from(&writer)
                .set_send_buffer_size(4096)
                .unwrap();
            socket2::SockRef::from(&reader)
                .set_recv_buffer_size(4096)
                .unwrap();
            // Fill the socket until a write says Pending, with 'a's.
            let first = vec![b'a'; 64 * 1024];
            let mut written_a = 0;
            let mut pendings = 0;
            while pendings == 0 {
                std::future::poll_fn(|cx| {
                    match Pin::new(&mut writer).poll_write(cx, &first) {
                        Poll::Ready(n) => written_a += n.unwrap(),
                        Poll::Pending => pendings += 1,
                    }
                    Poll::Ready(())
                })
                .await;
            }
            // Then offer a different buffer, 'b's, while the peer drains.
            let drain = ringshard::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let (res, buf) = reader.read(Vec::with_capacity(65536)).await;
                    if res.unwrap() == 0 {
                        return got;
                    }
                    got.extend_from_slice(&buf);
                }
            });
            let second = vec![b'b'; 100_000];
            AsyncWriteExt::write_all(&mut writer, &second)
                .await
                .unwrap();
            AsyncWriteExt::shutdown(&mut writer).await.unwrap();
            let got = drain.await.unwrap();
            assert_eq!(
                got.len(),
                written_a + second.len(),
                "every byte reported written arrived, no more"
            );
            assert!(got[..written_a].iter().all(|&b| b == b'a'));
            assert!(
                got[written_a..].iter().all(|&b| b == b'b'),
                "no 'a' came after the Pending"
            );
        });
    });
}

#[test]
fn vectored_writes_send_every_slice() {
    let _serial = common::serial();
    common::each_driver(|builder| {
        let rt = common::runtime(builder, 1);
        rt.block_on(async {
            let (mut writer, mut reader) = pair().await;
            assert!(writer.is_write_vectored());
            let parts: Vec<Vec<u8>> = (0..300)
                .map(|i| (0..(i * 97) % 5000 + 1).map(|j| pattern(i + j)).collect())
                .collect();
            let expected: Vec<u8> = parts.concat();
            let total = expected.len();
            let read = ringshard::spawn(async move {
                let mut got = Vec::new();
                reader.read_to_end(&mut got).await.unwrap();
                got
            });
            let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
            let mut slices = &mut slices[..];
            let mut sent = 0;
            let mut calls = 0;
            while !slices.is_empty() {
                let n = writer.write_vectored(slices).await.unwrap();
                assert!(n > 0);
                sent += n;
                calls += 1;
                IoSlice::advance_slices(&mut slices, n);
            }
            AsyncWriteExt::shutdown(&mut writer).await.unwrap();
            assert_eq!(sent, total);
            assert!(calls < 300, "slices go out together ({calls} calls)");
            assert!(read.await.unwrap() == expected, "every slice, in order");
        });
    });
}

/// Reads dropped by a timeout, over and over, while the peer sends in
/// bursts: the bytes come out exactly once, in order.
#[test]
fn reads_dropped_by_timeouts_lose_and_duplicate_nothing() {
    let _serial = common::serial();
    common::each_driver(|builder| {
        let rt = common::runtime(builder, 1);
        rt.block_on(async {
            let (mut reader, mut writer) = pair().await;
            const TOTAL: usize = 300_000;
            // The reader's timeouts so far: the sender pauses until one more
            // has dropped a read (a fixed pause is not always long enough:
            // under valgrind the reader can stay behind the sender).
            let dropped = std::rc::Rc::new(std::cell::Cell::new(0usize));
            let seen = dropped.clone();
            let send = ringshard::spawn(async move {
                let mut at = 0;
                let mut bursts = 0;
                while at < TOTAL {
                    let n = (at % 7919 + 1).min(TOTAL - at);
                    let chunk: Vec<u8> = (at..at + n).map(pattern).collect();
                    AsyncWriteExt::write_all(&mut writer, &chunk).await.unwrap();
                    at += n;
                    bursts += 1;
                    // Pauses longer than the reader's timeout, until the
                    // reader has dropped a read (bounded: 3 s).
                    if bursts % 8 == 0 {
                        let before = seen.get();
                        for _ in 0..1000 {
                            ringshard::sleep(Duration::from_millis(3)).await;
                            if seen.get() > before {
                                break;
                            }
                        }
                    }
                }
            });
            let mut got = Vec::with_capacity(TOTAL);
            let mut buf = vec![0u8; 3000];
            let mut timeouts = 0;
            let deadline = Instant::now() + Duration::from_secs(30);
            while got.len() < TOTAL {
                assert!(Instant::now() < deadline, "stalled at {}", got.len());
                match ringshard::timeout(
                    Duration::from_millis(1),
                    AsyncReadExt::read(&mut reader, &mut buf),
                )
                .await
                {
                    Ok(n) => {
                        let n = n.unwrap();
                        assert!(n > 0, "no early end of stream");
                        got.extend_from_slice(&buf[..n]);
                    }
                    Err(_) => {
                        timeouts += 1;
                        dropped.set(timeouts);
                    }
                }
            }
            send.await.unwrap();
            assert!(timeouts > 0, "some reads were dropped");
            let expected: Vec<u8> = (0..TOTAL).map(pattern).collect();
            assert!(
                got == expected,
                "exactly once, in order ({timeouts} dropped reads)"
            );
        });
    });
}

/// Owned-buffer and poll-mode I/O on one socket, alternately, both ways;
/// including owned reads dropped mid-flight (on io_uring one-shot reads the
/// kernel then holds their buffer) before a poll-mode read.
#[test]
fn owned_and_poll_mode_io_mix_on_one_socket() {
    let _serial = common::serial();
    common::each_driver(|builder| {
        let rt = common::runtime(builder, 1);
        rt.block_on(async {
            let (mut a, mut b) = pair().await;
            const ROUNDS: usize = 200;
            let peer = ringshard::spawn(async move {
                let mut at = 0;
                for round in 0..ROUNDS {
                    let chunk: Vec<u8> = (at..at + 1000 + round).map(pattern).collect();
                    at += chunk.len();
                    if round % 2 == 0 {
                        AsyncWriteExt::write_all(&mut b, &chunk).await.unwrap();
                    } else {
                        b.write_all(chunk).await.0.unwrap();
                    }
                    if round % 3 == 0 {
                        ringshard::sleep(Duration::from_micros(500)).await;
                    }
                }
                b.shutdown(Shutdown::Write).unwrap();
                at
            });
            let mut got = Vec::new();
            let mut round = 0;
            loop {
                round += 1;
                let n = match round % 3 {
                    0 => {
                        let (res, buf) = a.read(Vec::with_capacity(777)).await;
                        got.extend_from_slice(&buf);
                        res.unwrap()
                    }
                    1 => {
                        // An owned read dropped while it waits.
                        let dropped = ringshard::timeout(
                            Duration::from_micros(50),
                            a.read(Vec::with_capacity(512)),
                        )
                        .await;
                        match dropped {
                            Ok((res, buf)) => {
                                got.extend_from_slice(&buf);
                                res.unwrap()
                            }
                            Err(_) => continue,
                        }
                    }
                    _ => {
                        let mut buf = [0u8; 1500];
                        let n = AsyncReadExt::read(&mut a, &mut buf).await.unwrap();
                        got.extend_from_slice(&buf[..n]);
                        n
                    }
                };
                if n == 0 {
                    break;
                }
            }
            let total = peer.await.unwrap();
            let expected: Vec<u8> = (0..total).map(pattern).collect();
            assert!(got == expected, "{} of {total} bytes, in order", got.len());
        });
    });
}

/// A reset is an error to a poll-mode read, never an end of stream; and
/// `shutdown` sends FIN.
#[test]
fn errors_are_errors_and_shutdown_sends_fin() {
    let _serial = common::serial();
    common::each_driver(|builder| {
        let rt = common::runtime(builder, 1);
        rt.block_on(async {
            let (mut a, b) = pair().await;
            socket2::SockRef::from(&b)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(b);
            let mut buf = [0u8; 64];
            let error = AsyncReadExt::read(&mut a, &mut buf)
                .await
                .expect_err("a reset is not Ok(0)");
            assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);

            let (mut a, mut b) = pair().await;
            AsyncWriteExt::write_all(&mut a, b"last words")
                .await
                .unwrap();
            AsyncWriteExt::shutdown(&mut a).await.unwrap();
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"last words");
            // Writes after the shutdown fail; reads still work.
            assert!(AsyncWriteExt::write_all(&mut a, b"more").await.is_err());
            AsyncWriteExt::write_all(&mut b, b"reply").await.unwrap();
            drop(b);
            let mut got = Vec::new();
            a.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"reply");
        });
    });
}

/// The owned halves and Unix streams carry the traits too.
#[test]
fn halves_and_unix_streams() {
    let _serial = common::serial();
    common::each_driver(|builder| {
        let rt = common::runtime(builder, 1);
        rt.block_on(async {
            let (a, mut b) = pair().await;
            let (mut read, mut write) = a.into_split();
            let echo = ringshard::spawn(async move {
                let mut buf = vec![0u8; 10_000];
                loop {
                    let n = AsyncReadExt::read(&mut b, &mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    AsyncWriteExt::write_all(&mut b, &buf[..n]).await.unwrap();
                }
            });
            let data: Vec<u8> = (0..200_000).map(pattern).collect();
            let expected = data.clone();
            let writer = ringshard::spawn(async move {
                AsyncWriteExt::write_all(&mut write, &data).await.unwrap();
                AsyncWriteExt::shutdown(&mut write).await.unwrap();
            });
            let mut got = Vec::new();
            read.read_to_end(&mut got).await.unwrap();
            assert!(got == expected);
            writer.await.unwrap();
            echo.await.unwrap();

            let (mut x, mut y) = UnixStream::pair().unwrap();
            AsyncWriteExt::write_all(&mut x, b"over unix")
                .await
                .unwrap();
            AsyncWriteExt::shutdown(&mut x).await.unwrap();
            let mut got = Vec::new();
            y.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"over unix");
        });
    });
}

/// Off its shard a socket refuses poll-mode I/O with an error, even with a
/// readiness wait armed (which once left the call pending for ever).
#[test]
fn poll_mode_io_off_a_shard_is_an_error() {
    let _serial = common::serial();
    common::each_driver(|builder| {
        let rt = common::runtime(builder, 1);
        let (mut a, _b) = rt.block_on(async {
            let (mut a, b) = pair().await;
            // Arm a read wait (buffered reads: the multishot recv).
            std::future::poll_fn(|cx| {
                let mut storage = [0u8; 8];
                let mut buf = tokio::io::ReadBuf::new(&mut storage);
                assert!(
                    tokio::io::AsyncRead::poll_read(Pin::new(&mut a), cx, &mut buf).is_pending()
                );
                Poll::Ready(())
            })
            .await;
            (a, b)
        });
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut storage = [0u8; 8];
        let mut buf = tokio::io::ReadBuf::new(&mut storage);
        match tokio::io::AsyncRead::poll_read(Pin::new(&mut a), &mut cx, &mut buf) {
            Poll::Ready(Err(error)) => assert!(error.to_string().contains("shard"), "{error}"),
            other => panic!("expected an error, got {other:?}"),
        }
        match Pin::new(&mut a).poll_write(&mut cx, b"x") {
            Poll::Ready(Err(error)) => assert!(error.to_string().contains("shard"), "{error}"),
            other => panic!("expected an error, got {other:?}"),
        }
    });
}

/// A stream whose poll-mode read and write both wait for readiness (a
/// `POLL_ADD` each on one-shot io_uring), dropped off its shard (after
/// `block_on` returned, and after the runtime is gone): its fd closes and
/// the peer reads every byte, then the end. The waits once kept the fd
/// open for ever, leaked with their fd clone: fails under
/// `ringshard_broken="leak_readiness"`.
#[test]
fn a_waiting_poll_mode_stream_dropped_off_its_shard_closes() {
    use std::io::Read;
    let _serial = common::serial();
    common::each_driver(|builder| {
        for after_runtime in [false, true] {
            let baseline = common::fd_count();
            let rt = common::runtime(builder.clone(), 1);
            let with_runtime = common::fd_count();
            let (stream, mut peer, written) = rt.block_on(async {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
                let (mut stream, _) = listener.accept().await.unwrap();
                socket2::SockRef::from(&stream)
                    .set_send_buffer_size(4096)
                    .unwrap();
                let mut written = 0;
                let chunk = vec![7u8; 64 * 1024];
                std::future::poll_fn(|cx| {
                    let mut storage = [0u8; 16];
                    let mut buf = tokio::io::ReadBuf::new(&mut storage);
                    let read = tokio::io::AsyncRead::poll_read(Pin::new(&mut stream), cx, &mut buf);
                    assert!(read.is_pending(), "the peer sent nothing");
                    loop {
                        match Pin::new(&mut stream).poll_write(cx, &chunk) {
                            Poll::Ready(n) => written += n.unwrap(),
                            Poll::Pending => return Poll::Ready(()),
                        }
                    }
                })
                .await;
                (stream, peer, written)
            });
            let rt = if after_runtime {
                drop(rt);
                drop(stream);
                None
            } else {
                drop(stream);
                Some(rt)
            };
            peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut got = Vec::new();
            peer.read_to_end(&mut got)
                .expect("the peer reads to the end, not into its timeout");
            assert_eq!(got.len(), written);
            if let Some(rt) = rt {
                // The shard's next turn releases what went back to it.
                rt.block_on(ringshard::sleep(Duration::from_millis(20)));
                common::assert_fds_return_to(with_runtime + 1);
                drop(rt);
            }
            drop(peer);
            common::assert_fds_return_to(baseline);
        }
    });
}
