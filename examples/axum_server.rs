//! An axum `Router` served on ringshard shards, through
//! `hyper_util::service::TowerToHyperService`: the same per-core layout as
//! `http_server`, with axum's routing and extractors.
//!
//! ```text
//! cargo run --release --example axum_server --features hyper -- --addr 127.0.0.1:8080
//! curl http://127.0.0.1:8080/hello/world
//! ```
//!
//! axum's handlers must be `Send`, so per-shard `!Send` state stays in the
//! connection loop (here: a count of the connections the shard accepted).

use std::io;
use std::net::SocketAddr;

use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use ringshard::compat::hyper::{ShardExecutor, ShardTimer};
use ringshard::net::TcpListener;
use ringshard::{Runtime, ShardId};

fn main() -> io::Result<()> {
    let mut shards = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut addr: SocketAddr = "127.0.0.1:8080".parse().expect("valid");
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        match flag.as_str() {
            "--shards" => shards = value.parse().map_err(invalid)?,
            "--addr" => addr = value.parse().map_err(invalid)?,
            _ => {
                return Err(invalid(format!(
                    "unknown flag {flag}; use --shards N --addr HOST:PORT"
                )))
            }
        }
    }
    let rt = Runtime::builder().worker_threads(shards).build()?;
    println!(
        "axum on http://{addr}, {shards} shards, {:?}",
        rt.driver_kind()
    );
    for result in rt.block_on_all(move |shard: ShardId| serve(shard, addr)) {
        result?;
    }
    Ok(())
}

fn invalid(error: impl ToString) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, error.to_string())
}

fn router(shard: ShardId) -> Router {
    Router::new()
        .route(
            "/",
            get(move || async move { format!("axum on shard {}\n", shard.index()) }),
        )
        .route(
            "/hello/{name}",
            get(|Path(name): Path<String>| async move { format!("hello, {name}\n") }),
        )
}

async fn serve(shard: ShardId, addr: SocketAddr) -> io::Result<()> {
    let listener = TcpListener::bind_reuseport(addr)?;
    let router = router(shard);
    let mut accepted = 0u64;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                eprintln!("shard {}: accept: {error}", shard.index());
                ringshard::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        accepted += 1;
        if accepted.is_power_of_two() {
            eprintln!("shard {}: {accepted} connections", shard.index());
        }
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        ringshard::spawn(async move {
            let mut builder = auto::Builder::new(ShardExecutor);
            builder.http1().timer(ShardTimer);
            let _ = builder.serve_connection(stream, service).await;
        });
    }
}
