//! Echo correctness over TCP, UDP and Unix streams, every byte checked, on
//! both drivers.

mod common;

use std::time::Duration;

use common::{each_driver, pattern, runtime, Rng};
use ringshard::net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};
use ringshard::{spawn, spawn_on, ShardId};

const MAX_MESSAGE: usize = 64 * 1024;

async fn echo_stream_tcp(mut stream: TcpStream) {
    let mut buf = Vec::with_capacity(MAX_MESSAGE);
    loop {
        let (res, read) = stream.read(buf).await;
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let (res, written) = stream.write_all(read).await;
        if res.is_err() {
            return;
        }
        buf = written;
    }
}

/// One client: `messages` round trips of random sizes; returns bytes checked.
async fn tcp_client(addr: std::net::SocketAddr, seed: u64, messages: usize) -> u64 {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).unwrap();
    let mut rng = Rng(seed);
    let mut checked = 0u64;
    let mut out = Vec::with_capacity(MAX_MESSAGE);
    for _ in 0..messages {
        let size = 1 + rng.below(MAX_MESSAGE as u64) as usize;
        let start = rng.below((pattern().len() - size) as u64) as usize;
        out.clear();
        out.extend_from_slice(&pattern()[start..start + size]);
        let (res, sent) = stream.write_all(out).await;
        assert_eq!(res.expect("write_all"), size);
        out = sent;
        // read_exact fills the capacity: a buffer of exactly `size`.
        let (res, got) = stream.read_exact(Vec::with_capacity(size)).await;
        assert_eq!(res.expect("read_exact"), size);
        assert!(got == pattern()[start..start + size], "echo corrupted");
        checked += size as u64;
    }
    checked
}

#[test]
fn tcp_echo_256_connections_1000_random_messages_every_byte_checked() {
    common::raise_fd_limit(2048);
    each_driver(|builder| {
        let rt = runtime(builder, 2);
        let conns = 256;
        let messages = 1000;
        let total = rt.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = spawn(async move {
                for _ in 0..conns {
                    let (stream, _) = listener.accept().await.expect("accept");
                    stream.set_nodelay(true).unwrap();
                    spawn(echo_stream_tcp(stream));
                }
            });
            let clients = spawn_on(ShardId::new(1), move || async move {
                let handles: Vec<_> = (0..conns)
                    .map(|i| spawn(tcp_client(addr, 1 + i as u64, messages)))
                    .collect();
                let mut total = 0;
                for handle in handles {
                    total += handle.await.unwrap();
                }
                total
            });
            server.await.unwrap();
            clients.await.unwrap()
        });
        eprintln!("checked {total} bytes");
        assert!(total > (conns * messages) as u64);
    });
}

#[test]
fn udp_echo_10000_datagrams_every_byte_checked() {
    each_driver(|builder| {
        let rt = runtime(builder, 1);
        rt.block_on(async {
            let server = UdpSocket::bind("127.0.0.1:0").unwrap();
            let server_addr = server.local_addr().unwrap();
            spawn(async move {
                let mut buf = Vec::with_capacity(2048);
                loop {
                    let (res, got) = server.recv_from(buf).await;
                    let Ok((_, peer)) = res else { return };
                    let (res, sent) = server.send_to(got, peer).await;
                    res.unwrap();
                    buf = sent;
                }
            });
            let client = UdpSocket::bind("127.0.0.1:0").unwrap();
            client.connect(server_addr).await.unwrap();
            let mut rng = Rng(7);
            for i in 0..10_000u32 {
                let size = 4 + rng.below(1400) as usize;
                let start = rng.below((pattern().len() - size) as u64) as usize;
                let mut msg = i.to_le_bytes().to_vec();
                msg.extend_from_slice(&pattern()[start..start + size - 4]);
                let (res, msg) = client.send(msg).await;
                assert_eq!(res.unwrap(), size);
                let (res, got) = ringshard::timeout(
                    Duration::from_secs(5),
                    client.recv(Vec::with_capacity(2048)),
                )
                .await
                .expect("datagram lost");
                assert_eq!(res.unwrap(), size);
                assert_eq!(got, msg, "datagram {i} corrupted");
            }
        });
    });
}

#[test]
fn unix_stream_echo_every_byte_checked() {
    each_driver(|builder| {
        let rt = runtime(builder, 1);
        let path = std::env::temp_dir().join(format!(
            "ringshard-echo-{}-{:?}.sock",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_file(&path);
        let listener_path = path.clone();
        rt.block_on(async move {
            let listener = UnixListener::bind(&listener_path).unwrap();
            spawn(async move {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut buf = Vec::with_capacity(MAX_MESSAGE);
                loop {
                    let (res, got) = stream.read(buf).await;
                    if !matches!(res, Ok(n) if n > 0) {
                        return;
                    }
                    let (res, sent) = stream.write_all(got).await;
                    res.unwrap();
                    buf = sent;
                }
            });
            let mut client = UnixStream::connect(&listener_path).await.unwrap();
            let mut rng = Rng(11);
            for _ in 0..1000 {
                let size = 1 + rng.below(MAX_MESSAGE as u64) as usize;
                let start = rng.below((pattern().len() - size) as u64) as usize;
                let (res, _) = client
                    .write_all(pattern()[start..start + size].to_vec())
                    .await;
                res.unwrap();
                let (res, got) = client.read_exact(Vec::with_capacity(size)).await;
                res.unwrap();
                assert!(got == pattern()[start..start + size], "echo corrupted");
            }
        });
        std::fs::remove_file(&path).unwrap();
    });
}
