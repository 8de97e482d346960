//! A UDP echo server and a client on two shards: the client sends numbered
//! datagrams, checks each echo, and prints the round-trip rate.
//!
//! `cargo run --release --example udp_echo -- 100000`

use std::io;
use std::time::Instant;

use ringshard::net::UdpSocket;
use ringshard::{spawn, spawn_on, Runtime, ShardId};

fn main() -> io::Result<()> {
    let count: u32 = match std::env::args().nth(1) {
        Some(arg) => arg
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "usage: udp_echo [COUNT]"))?,
        None => 100_000,
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shards = cpus.min(2);
    let rt = Runtime::builder().worker_threads(shards).build()?;
    let (sent, elapsed) = rt.block_on(async move {
        let server = UdpSocket::bind("127.0.0.1:0")?;
        let addr = server.local_addr()?;
        spawn(async move {
            let mut buf = Vec::with_capacity(2048);
            loop {
                let (res, got) = server.recv_from(buf).await;
                let Ok((_, peer)) = res else { return };
                let (_, back) = server.send_to(got, peer).await;
                buf = back;
            }
        });
        // The client runs on the last shard.
        let client = spawn_on(ShardId::new(shards - 1), move || async move {
            let socket = UdpSocket::bind("127.0.0.1:0")?;
            socket.connect(addr).await?;
            let start = Instant::now();
            let mut buf = Vec::with_capacity(2048);
            for i in 0..count {
                buf.clear();
                buf.extend_from_slice(&i.to_le_bytes());
                buf.extend_from_slice(b" ringshard udp echo");
                let (res, sent) = socket.send(buf).await;
                res?;
                let (res, back) = socket.recv(Vec::with_capacity(2048)).await;
                res?;
                if back != sent {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "echo corrupted"));
                }
                buf = sent;
            }
            Ok::<_, io::Error>((count, start.elapsed()))
        });
        client.await?
    })?;
    println!(
        "{sent} datagrams echoed in {elapsed:?}: {:.0} round trips/s on {:?}",
        f64::from(sent) / elapsed.as_secs_f64(),
        rt.driver_kind()
    );
    Ok(())
}
