//! hyper "hello" servers side by side: hyper on one ringshard shard (the
//! compat layer's poll-mode I/O) and hyper on tokio `current_thread`
//! (`hyper_util::rt::TokioIo`), the same `hyper_util` auto server (HTTP/1
//! and h2c) in both. Each runs in its own child process pinned to the first
//! CPU; `wrk` (HTTP/1) and `h2load` (HTTP/2) load it from the last CPU, at
//! 64 and 256 connections, alternating servers over rounds. Reports medians
//! and spreads of requests/s, p99 latency and the server's CPU time per
//! request (utime + stime of the child from /proc/<pid>/stat, read around
//! the load run, divided by the requests it completed).
//!
//! ```sh
//! apt-get install wrk nghttp2-client      # the load generators
//! cargo bench --bench http --features hyper -- --rounds 7 --duration 3
//! ```
//!
//! Run without `--bench` it makes one short pass (skipping a load generator
//! that is not installed).

#[path = "support/mod.rs"]
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::server::conn::auto;

const HELLO: &str = "Hello, World!";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        let kind = args[i + 1].clone();
        let cpu: usize = args[i + 2].parse().expect("cpu");
        support::pin_to(&[cpu]).expect("pin server");
        return match kind.as_str() {
            "ringshard" => serve_ringshard(),
            "tokio" => serve_tokio(),
            other => panic!("unknown server {other}"),
        };
    }
    let full = args.iter().any(|a| a == "--bench");
    let value = |name: &str| support::flag::<f64>(&args, name);
    let rounds = value("--rounds").map_or(if full { 3 } else { 1 }, |v| v as usize);
    let duration =
        Duration::from_secs_f64(value("--duration").unwrap_or(if full { 3.0 } else { 0.5 }));
    let cpus = support::allowed_cpus();
    let (server_cpu, load_cpu) = (cpus[0], *cpus.last().unwrap());
    let mut loads = Vec::new();
    for tool in [Tool::Wrk, Tool::H2load] {
        if tool.installed() {
            loads.extend([(tool, 64), (tool, 256)]);
        } else {
            println!(
                "{} is not installed (apt-get install wrk nghttp2-client): skipped",
                tool.name()
            );
        }
    }
    println!(
        "hyper hello, servers on CPU {server_cpu}, load on CPU {load_cpu}, {rounds} rounds of {duration:?}"
    );
    let kinds = ["ringshard", "tokio"];
    for (tool, conns) in loads {
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); kinds.len()];
        for round in 0..rounds {
            // Alternate which server goes first.
            let order: Vec<usize> = if round % 2 == 0 {
                vec![0, 1]
            } else {
                vec![1, 0]
            };
            for k in order {
                let server = Server::start(kinds[k], server_cpu);
                samples[k].push(server.measure(tool, conns, duration, load_cpu));
            }
        }
        println!("\n{} at {conns} connections:", tool.name());
        for (k, kind) in kinds.iter().enumerate() {
            let s = &samples[k];
            println!(
                "  {kind:>9}: {:>8.0} req/s  p99 {:>7.0} us  cpu/req {:>6.0} ns   (cpu/req range {:.0}..{:.0})",
                median(s.iter().map(|s| s.qps)),
                median(s.iter().map(|s| s.p99_us)),
                median(s.iter().map(|s| s.cpu_ns)),
                min(s.iter().map(|s| s.cpu_ns)),
                max(s.iter().map(|s| s.cpu_ns)),
            );
        }
        // Round by round ratios, ringshard / tokio, for the spread.
        let ratios: Vec<f64> = samples[0]
            .iter()
            .zip(&samples[1])
            .map(|(r, t)| r.cpu_ns / t.cpu_ns)
            .collect();
        println!(
            "  ringshard/tokio cpu per request: median {:.2}, rounds {}",
            median(ratios.iter().copied()),
            ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn min(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(f64::INFINITY, f64::min)
}

fn max(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(0.0, f64::max)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Tool {
    Wrk,
    H2load,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Wrk => "wrk",
            Tool::H2load => "h2load",
        }
    }

    fn installed(self) -> bool {
        Command::new(self.name())
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    }
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    qps: f64,
    p99_us: f64,
    cpu_ns: f64,
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(kind: &str, cpu: usize) -> Server {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--serve", kind, &cpu.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start server");
        let addr = support::read_addr(&mut child, kind);
        Server { child, addr }
    }

    fn measure(&self, tool: Tool, conns: usize, duration: Duration, cpu: usize) -> Sample {
        let pid = self.child.id();
        let url = format!("http://{}/", self.addr);
        let secs = format!("{}", duration.as_secs_f64().ceil() as u64);
        let log = std::env::temp_dir().join(format!("ringshard-h2load-{}.log", std::process::id()));
        let mut command = Command::new("taskset");
        command.args(["-c", &cpu.to_string(), tool.name()]);
        match tool {
            Tool::Wrk => command.args([
                "-t1",
                &format!("-c{conns}"),
                &format!("-d{secs}s"),
                "--latency",
                &url,
            ]),
            Tool::H2load => command.args([
                "-c",
                &conns.to_string(),
                "-m",
                "1",
                "-D",
                &secs,
                "--log-file",
                log.to_str().unwrap(),
                &url,
            ]),
        };
        let before = support::process_cpu(pid).unwrap();
        let output = command.output().expect("run the load generator");
        let after = support::process_cpu(pid).unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "{}: {text}", tool.name());
        let (requests, qps, p99_us) = match tool {
            Tool::Wrk => parse_wrk(&text),
            Tool::H2load => parse_h2load(&text, &std::fs::read_to_string(&log).unwrap_or_default()),
        };
        let _ = std::fs::remove_file(&log);
        assert!(
            requests > 0.0,
            "{}: no request completed: {text}",
            tool.name()
        );
        Sample {
            qps,
            p99_us,
            cpu_ns: (after - before).as_nanos() as f64 / requests,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A wrk duration such as `812.00us`, `1.20ms` or `2.01s`, in µs.
fn wrk_us(text: &str) -> f64 {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => number,
        "ms" => number * 1e3,
        "s" => number * 1e6,
        _ => f64::NAN,
    }
}

/// (requests, requests/s, p99 µs) from wrk's `--latency` report.
fn parse_wrk(text: &str) -> (f64, f64, f64) {
    let mut requests = 0.0;
    let mut qps = 0.0;
    let mut p99 = f64::NAN;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["99%", latency] => p99 = wrk_us(latency),
            [count, "requests", "in", ..] => requests = count.parse().unwrap_or(0.0),
            ["Requests/sec:", rate] => qps = rate.parse().unwrap_or(0.0),
            _ => {}
        }
    }
    (requests, qps, p99)
}

/// (requests, requests/s, p99 µs) from h2load's report and its per-request
/// log (`start<TAB>status<TAB>duration in µs`).
fn parse_h2load(text: &str, log: &str) -> (f64, f64, f64) {
    let mut requests = 0.0;
    let mut qps = 0.0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("finished in ") {
            if let Some(rate) = rest.split(", ").nth(1) {
                qps = rate.trim_end_matches(" req/s").parse().unwrap_or(0.0);
            }
        }
        if let Some(rest) = line.strip_prefix("requests: ") {
            // "N total, N started, N done, N succeeded, ..."
            if let Some(done) = rest.split(", ").find(|part| part.ends_with(" succeeded")) {
                requests = done.trim_end_matches(" succeeded").parse().unwrap_or(0.0);
            }
        }
    }
    let mut times: Vec<f64> = log
        .lines()
        .filter_map(|line| line.split('\t').nth(2)?.trim().parse().ok())
        .collect();
    times.sort_by(f64::total_cmp);
    let p99 = times
        .get((times.len().saturating_sub(1) as f64 * 0.99) as usize)
        .copied()
        .unwrap_or(f64::NAN);
    (requests, qps, p99)
}

type Hello = Response<Full<Bytes>>;

/// The "hello" service both servers run.
fn service() -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = Hello,
    Error = Infallible,
    Future = std::future::Ready<Result<Hello, Infallible>>,
> + Clone {
    service_fn(|_req| {
        std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(
            HELLO.as_bytes(),
        )))))
    })
}

/// hyper on one ringshard shard (this process is already pinned).
fn serve_ringshard() {
    use ringshard::compat::hyper::ShardExecutor;
    let rt = ringshard::Runtime::builder()
        .worker_threads(1)
        .pin_threads(false)
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = ringshard::net::TcpListener::bind("127.0.0.1:0").unwrap();
        support::announce(listener.local_addr().unwrap());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            ringshard::spawn(async move {
                let _ = auto::Builder::new(ShardExecutor)
                    .serve_connection(stream, service())
                    .await;
            });
        }
    });
}

/// hyper on tokio's current-thread runtime, the way hyper-util documents it.
fn serve_tokio() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        support::announce(listener.local_addr().unwrap());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service())
                    .await;
            });
        }
    });
}
