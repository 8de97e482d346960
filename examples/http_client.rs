//! A hyper HTTP/1 client on one shard: GETs a URL's path N times over one
//! keep-alive connection and prints the first body and the latency spread.
//!
//! ```text
//! cargo run --release --example http_server --features hyper -- --addr 127.0.0.1:8080 &
//! cargo run --release --example http_client --features hyper -- --addr 127.0.0.1:8080 --requests 1000
//! ```
//!
//! `--http2` uses one HTTP/2 connection instead.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use ringshard::compat::hyper::{ShardExecutor, ShardTimer};
use ringshard::net::TcpStream;
use ringshard::Runtime;

fn main() -> io::Result<()> {
    let mut addr: SocketAddr = "127.0.0.1:8080".parse().expect("valid");
    let mut requests = 100u32;
    let mut path = String::from("/");
    let mut http2 = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--http2" {
            http2 = true;
            continue;
        }
        let value = args.next().unwrap_or_default();
        match flag.as_str() {
            "--addr" => addr = value.parse().map_err(invalid)?,
            "--requests" => requests = value.parse().map_err(invalid)?,
            "--path" => path = value,
            _ => {
                return Err(invalid(format!(
                    "unknown flag {flag}; use --addr HOST:PORT --requests N --path P [--http2]"
                )))
            }
        }
    }
    let rt = Runtime::builder().worker_threads(1).build()?;
    rt.block_on(async move {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut sender = if http2 {
            let (sender, conn) = hyper::client::conn::http2::Builder::new(ShardExecutor)
                .timer(ShardTimer)
                .handshake(stream)
                .await
                .map_err(io::Error::other)?;
            ringshard::spawn(conn);
            Sender::Http2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(stream)
                .await
                .map_err(io::Error::other)?;
            ringshard::spawn(conn);
            Sender::Http1(sender)
        };
        let mut latencies = Vec::with_capacity(requests as usize);
        let mut first = None;
        for _ in 0..requests {
            let started = Instant::now();
            let req = Request::get(path.as_str())
                .body(Empty::<Bytes>::new())
                .map_err(io::Error::other)?;
            let response = sender.send(req).await.map_err(io::Error::other)?;
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(io::Error::other)?;
            latencies.push(started.elapsed());
            first.get_or_insert(body.to_bytes());
        }
        if let Some(first) = first {
            print!("first body: {}", String::from_utf8_lossy(&first));
        }
        latencies.sort();
        if !latencies.is_empty() {
            let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
            println!(
                "{requests} requests: p50 {:?}, p99 {:?}, max {:?}",
                at(0.5),
                at(0.99),
                at(1.0)
            );
        }
        Ok(())
    })
}

/// One connection of either version.
enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    async fn send(
        &mut self,
        req: Request<Empty<Bytes>>,
    ) -> hyper::Result<hyper::Response<hyper::body::Incoming>> {
        match self {
            Sender::Http1(sender) => sender.send_request(req).await,
            Sender::Http2(sender) => sender.send_request(req).await,
        }
    }
}

fn invalid(error: impl ToString) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, error.to_string())
}
