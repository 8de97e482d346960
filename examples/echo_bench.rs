//! The echo benchmark: a per-core ringshard echo server and a load
//! generator in one process, the server on the first CPUs and the load on
//! the last one. Prints a progress line each second, then QPS and latency
//! percentiles.
//!
//! ```sh
//! cargo run --release --example echo_bench
//! cargo run --release --example echo_bench -- --conns 256 --size 4096 --duration 10
//! cargo run --release --example echo_bench -- --driver epoll
//! cargo run --release --example echo_bench -- --addr 127.0.0.1:7000   # load another server
//! ```

#[path = "../benches/support/mod.rs"]
mod support;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use ringshard::net::TcpListener;
use ringshard::{DriverType, Runtime, ShardId};

struct Options {
    conns: usize,
    size: usize,
    duration: Duration,
    shards: usize,
    driver: DriverType,
    addr: Option<SocketAddr>,
    rate: Option<u64>,
}

const USAGE: &str = "flags: --conns N (64) --size BYTES (64) --duration SECS (5) \
                     --shards N (1) --driver auto|uring|epoll (auto) --addr HOST:PORT \
                     --rate REQ_PER_SEC (closed loop)";

fn parse() -> io::Result<Options> {
    let mut options = Options {
        conns: 64,
        size: 64,
        duration: Duration::from_secs(5),
        shards: 1,
        driver: DriverType::Auto,
        addr: None,
        rate: None,
    };
    let invalid =
        |what: String| io::Error::new(io::ErrorKind::InvalidInput, format!("{what}; {USAGE}"));
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| invalid(format!("{flag} needs a value")))?;
        let bad = |_: ()| invalid(format!("bad value {value:?} for {flag}"));
        match flag.as_str() {
            "--conns" => options.conns = value.parse().map_err(|_| bad(()))?,
            "--size" => options.size = value.parse().map_err(|_| bad(()))?,
            "--duration" => {
                options.duration = Duration::from_secs_f64(value.parse().map_err(|_| bad(()))?)
            }
            "--shards" => options.shards = value.parse().map_err(|_| bad(()))?,
            "--addr" => options.addr = Some(value.parse().map_err(|_| bad(()))?),
            "--rate" => options.rate = Some(value.parse().map_err(|_| bad(()))?),
            "--driver" => {
                options.driver = match value.as_str() {
                    "auto" => DriverType::Auto,
                    "uring" => DriverType::IoUring,
                    "epoll" => DriverType::Epoll,
                    _ => return Err(bad(())),
                }
            }
            _ => return Err(invalid(format!("unknown flag {flag}"))),
        }
    }
    if options.conns == 0 || options.size == 0 || options.shards == 0 {
        return Err(invalid(
            "--conns, --size and --shards must be at least 1".into(),
        ));
    }
    Ok(options)
}

fn main() -> io::Result<()> {
    let options = parse()?;
    let cpus = support::allowed_cpus();
    let load_cpu = *cpus.last().expect("at least one CPU");
    let addr = match options.addr {
        Some(addr) => addr,
        None => start_server(&options, &cpus)?,
    };
    support::pin_to(&[load_cpu])?;
    println!(
        "load: {} connections x {} bytes for {:?} against {addr}{}, load generator on CPU {load_cpu}",
        options.conns,
        options.size,
        options.duration,
        options.rate.map_or(String::new(), |r| format!(" at {r} req/s"))
    );
    let report = support::run(&support::Load {
        addr,
        conns: options.conns,
        size: options.size,
        duration: options.duration,
        warmup: Duration::from_millis(500),
        rate: options.rate,
        progress: true,
    })?;
    println!(
        "{:.0} req/s   latency us: p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
        report.qps(),
        report.percentile_us(0.5),
        report.percentile_us(0.99),
        report.percentile_us(0.999),
        report.latency.max() as f64 / 1000.0,
    );
    Ok(())
}

/// Starts the echo server on its own thread, its shards pinned to the first
/// CPUs (all but the load generator's, when there are enough).
fn start_server(options: &Options, cpus: &[usize]) -> io::Result<SocketAddr> {
    let server_cpus: Vec<usize> = if cpus.len() > options.shards {
        cpus[..options.shards].to_vec()
    } else {
        cpus.to_vec()
    };
    let pin = server_cpus.len() >= options.shards;
    let (tx, rx) = std::sync::mpsc::channel();
    let shards = options.shards;
    let driver = options.driver;
    std::thread::spawn(move || {
        let started = (|| {
            support::pin_to(&server_cpus)?;
            let rt = Runtime::builder()
                .worker_threads(shards)
                .pin_threads(pin)
                .driver_type(driver)
                .build()?;
            // Shard 0 picks a free port; the others join it with SO_REUSEPORT.
            let first = TcpListener::bind_reuseport("127.0.0.1:0")?;
            let addr = first.local_addr()?;
            Ok::<_, io::Error>((rt, first, addr))
        })();
        let (rt, first, addr) = match started {
            Ok(started) => started,
            Err(error) => return tx.send(Err(error)).unwrap(),
        };
        println!(
            "server: {shards} shard(s) on CPUs {server_cpus:?}, driver {:?}, {addr}",
            rt.driver_kind()
        );
        tx.send(Ok(addr)).unwrap();
        rt.block_on(async move {
            for index in 1..shards {
                ringshard::spawn_on(ShardId::new(index), move || async move {
                    if let Ok(listener) = TcpListener::bind_reuseport(addr) {
                        let _ = serve(listener).await;
                    }
                });
            }
            let _ = serve(first).await;
        });
    });
    rx.recv().map_err(io::Error::other)?
}

async fn serve(listener: TcpListener) -> io::Result<()> {
    loop {
        let (mut stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                ringshard::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        stream.set_nodelay(true)?;
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
