//! A per-core echo server that shuts down gracefully: on SIGTERM or Ctrl-C
//! every shard stops accepting (its listener closes, so new connections are
//! refused), lets the connections it has finish (up to `--grace SECS`,
//! default 5), aborts what is left, and the process exits 0.
//!
//! ```text
//! cargo run --release --example graceful_shutdown -- --shards 2 --port 7000
//! ```

use std::io;
use std::time::Duration;

use ringshard::net::TcpListener;
use ringshard::signal::unix::Signal;
use ringshard::task::JoinSet;
use ringshard::{Runtime, ShardId};

#[path = "shared/stops.rs"]
mod stops;
use stops::Stops;

fn main() -> io::Result<()> {
    let mut shards = 1;
    let mut port = 7000u16;
    let mut grace = Duration::from_secs(5);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        match flag.as_str() {
            "--shards" => shards = value.parse().map_err(invalid)?,
            "--port" => port = value.parse().map_err(invalid)?,
            "--grace" => grace = Duration::from_secs_f64(value.parse().map_err(invalid)?),
            _ => {
                return Err(invalid(format!(
                    "unknown flag {flag}; use --shards N --port P --grace SECS"
                )))
            }
        }
    }
    let rt = Runtime::builder().worker_threads(shards).build()?;
    println!(
        "echo server on 127.0.0.1:{port}, {shards} shards, {:?}",
        rt.driver_kind()
    );
    let stops = Stops::new(shards)?;
    for result in
        rt.block_on_all(move |shard: ShardId| serve(shard, port, grace, stops.take(shard)))
    {
        let (finished, aborted) = result?;
        println!("a shard closed: {finished} connections finished in the drain, {aborted} aborted");
    }
    Ok(())
}

fn invalid(error: impl ToString) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, error.to_string())
}

/// One shard: accept until a signal, then drain. Returns how many
/// connections finished and how many were cut at the deadline.
async fn serve(
    shard: ShardId,
    port: u16,
    grace: Duration,
    (mut terminate, mut interrupt): (Signal, Signal),
) -> io::Result<(usize, usize)> {
    let listener = TcpListener::bind_reuseport(("127.0.0.1", port))?;
    let mut connections = JoinSet::new();
    loop {
        let accepted = ringshard::select! {
            accepted = listener.accept() => accepted,
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            // Reap finished connections as we go.
            Some(_) = connections.join_next() => continue,
        };
        let Ok((mut stream, _)) = accepted else {
            ringshard::sleep(Duration::from_millis(10)).await;
            continue;
        };
        connections.spawn(async move {
            let mut buf = Vec::with_capacity(16 * 1024);
            loop {
                let (res, back) = stream.read(buf).await;
                if !matches!(res, Ok(n) if n > 0) {
                    return;
                }
                let (res, back) = stream.write_all(back).await;
                if res.is_err() {
                    return;
                }
                buf = back;
                buf.clear();
            }
        });
    }
    drop(listener);
    eprintln!(
        "shard {}: stopping; {} connections open, {grace:?} to finish",
        shard.index(),
        connections.len()
    );
    let mut finished = 0;
    let drained = ringshard::timeout(grace, async {
        while connections.join_next().await.is_some() {
            finished += 1;
        }
    })
    .await;
    let aborted = connections.len();
    if drained.is_err() {
        connections.shutdown().await;
    }
    Ok((finished, aborted))
}
