//! A per-core hyper server: one shard per core, each with its own
//! `SO_REUSEPORT` listener, serving HTTP/1 and HTTP/2 (cleartext, prior
//! knowledge or upgrade-free detection) through `hyper_util`'s auto server.
//! The service keeps `!Send` per-shard state: an `Rc<Cell<u64>>` count of
//! the requests its shard served.
//!
//! ```text
//! cargo run --release --example http_server --features hyper -- --shards 2 --addr 127.0.0.1:8080
//! curl http://127.0.0.1:8080/
//! curl --http2-prior-knowledge http://127.0.0.1:8080/
//! ```
//!
//! Ctrl-C or SIGTERM (or the end of `--for SECS`) shuts it down gracefully:
//! each shard stops accepting, lets open connections finish their requests
//! (up to 5 s), and exits; every shard sees the signal.

use std::cell::Cell;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use ringshard::compat::hyper::{ShardExecutor, ShardTimer};
use ringshard::net::TcpListener;
use ringshard::signal::unix::Signal;
use ringshard::{Runtime, ShardId};

#[path = "shared/stops.rs"]
mod stops;
use stops::Stops;

fn main() -> io::Result<()> {
    let mut shards = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut addr: SocketAddr = "127.0.0.1:8080".parse().expect("valid");
    let mut serve_for = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        match flag.as_str() {
            "--shards" => shards = value.parse().map_err(invalid)?,
            "--addr" => addr = value.parse().map_err(invalid)?,
            "--for" => serve_for = Some(Duration::from_secs_f64(value.parse().map_err(invalid)?)),
            _ => {
                return Err(invalid(format!(
                    "unknown flag {flag}; use --shards N --addr HOST:PORT [--for SECS]"
                )))
            }
        }
    }
    let rt = Runtime::builder().worker_threads(shards).build()?;
    println!(
        "http server on http://{addr}, {shards} shards, {:?}",
        rt.driver_kind()
    );
    let stops = Stops::new(shards)?;
    let served =
        rt.block_on_all(move |shard: ShardId| serve(shard, addr, serve_for, stops.take(shard)));
    let mut total = 0;
    for (shard, served) in served.into_iter().enumerate() {
        let served = served?;
        println!("shard {shard}: {served} requests");
        total += served;
    }
    println!("{total} requests served");
    Ok(())
}

fn invalid(error: impl ToString) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, error.to_string())
}

/// One shard's server; returns how many requests it served.
async fn serve(
    shard: ShardId,
    addr: SocketAddr,
    serve_for: Option<Duration>,
    (mut terminate, mut interrupt): (Signal, Signal),
) -> io::Result<u64> {
    let listener = TcpListener::bind_reuseport(addr)?;
    // Per-shard state: no atomics, no locks.
    let served = Rc::new(Cell::new(0u64));
    let graceful = GracefulShutdown::new();
    let stop = async move {
        let deadline = async {
            match serve_for {
                Some(duration) => ringshard::sleep(duration).await,
                None => std::future::pending().await,
            }
        };
        ringshard::select! {
            () = deadline => {},
            _ = terminate.recv() => eprintln!("shard {}: SIGTERM", shard.index()),
            _ = interrupt.recv() => eprintln!("shard {}: Ctrl-C", shard.index()),
        }
    };
    let mut stop = std::pin::pin!(stop);
    loop {
        let accepted = ringshard::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // EMFILE and friends: keep serving once fds free up.
                eprintln!("shard {}: accept: {error}", shard.index());
                ringshard::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let served = served.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let served = served.clone();
            async move {
                served.set(served.get() + 1);
                let body = match req.uri().path() {
                    "/" => format!(
                        "hello from shard {} (its request {})\n",
                        shard.index(),
                        served.get()
                    ),
                    path => format!("no page at {path}\n"),
                };
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
            }
        });
        let mut builder = auto::Builder::new(ShardExecutor);
        builder.http1().timer(ShardTimer);
        builder.http2().timer(ShardTimer);
        let connection = builder.serve_connection(stream, service).into_owned();
        let connection = graceful.watch(connection);
        ringshard::spawn(async move {
            if let Err(error) = connection.await {
                eprintln!("connection: {error}");
            }
        });
    }
    drop(listener);
    if ringshard::timeout(Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        eprintln!("shard {}: connections still open after 5 s", shard.index());
    }
    Ok(served.get())
}
