//! A per-core TCP echo server: one shard per core, each with its own
//! `SO_REUSEPORT` listener, so connections never cross cores.
//!
//! `cargo run --release --example echo_server -- --shards 2 --port 7000`

use std::io;
use std::time::Duration;

use ringshard::net::TcpListener;
use ringshard::{Runtime, ShardId};

fn main() -> io::Result<()> {
    let mut shards = 1;
    let mut port = 7000u16;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        match flag.as_str() {
            "--shards" => shards = value.parse().map_err(invalid)?,
            "--port" => port = value.parse().map_err(invalid)?,
            _ => {
                return Err(invalid(format!(
                    "unknown flag {flag}; use --shards N --port P"
                )))
            }
        }
    }
    let rt = Runtime::builder().worker_threads(shards).build()?;
    println!(
        "echo server on 0.0.0.0:{port}, {shards} shards, {:?}",
        rt.driver_kind()
    );
    let results = rt.block_on_all(move |shard: ShardId| serve(shard, port));
    for result in results {
        result?;
    }
    Ok(())
}

fn invalid(error: impl ToString) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, error.to_string())
}

/// One shard's accept loop; each connection echoes on this shard.
async fn serve(shard: ShardId, port: u16) -> io::Result<()> {
    let listener = TcpListener::bind_reuseport(("0.0.0.0", port))?;
    loop {
        let (mut stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: keep serving once fds free up.
                eprintln!("shard {}: accept: {error}", shard.index());
                ringshard::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        ringshard::spawn(async move {
            let mut buf = Vec::with_capacity(16 * 1024);
            loop {
                let (res, read) = stream.read(buf).await;
                match res {
                    Ok(n) if n > 0 => {}
                    _ => return,
                }
                let (res, written) = stream.write_all(read).await;
                if res.is_err() {
                    return;
                }
                buf = written;
            }
        });
    }
}
