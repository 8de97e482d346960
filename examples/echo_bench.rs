//! The echo benchmark: a per-core ringshard echo server (a child process,
//! pinned to the first CPUs) and a load generator (this process, pinned to
//! the last CPU). Prints a progress line each second, then QPS, latency
//! percentiles, the server's CPU per request and which side saturated:
//! the server, or the load generator (then the QPS is a floor on what the
//! server can do, not its limit).
//!
//! ```sh
//! cargo run --release --example echo_bench
//! cargo run --release --example echo_bench -- --conns 256 --size 4096 --duration 10
//! cargo run --release --example echo_bench -- --driver epoll
//! cargo run --release --example echo_bench -- --vs tokio,monoio --plot latency.svg
//! cargo run --release --example echo_bench -- --vs tokio --rounds 3   # alternate, medians
//! cargo run --release --example echo_bench -- --addr 127.0.0.1:7000   # load another server
//! ```

#[path = "../benches/support/mod.rs"]
mod support;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use support::plot::{self, Curve};
use support::servers::Server;

struct Options {
    conns: usize,
    size: usize,
    duration: Duration,
    shards: usize,
    driver: String,
    addr: Option<SocketAddr>,
    rate: Option<u64>,
    vs: Vec<String>,
    rounds: usize,
    plot: Option<String>,
}

const USAGE: &str = "flags: --conns N (64) --size BYTES (64) --duration SECS (5) \
                     --shards N (1) --driver auto|uring|epoll (auto) --addr HOST:PORT \
                     --rate REQ_PER_SEC (closed loop) --vs tokio,monoio (none) \
                     --rounds N (1) --plot FILE.svg";

/// A side may be the limit when it was busy this share of the window...
const BUSY: f64 = 0.75;
/// ... and it is the limit when it was this much busier than the other.
const MARGIN: f64 = 0.05;

fn parse() -> io::Result<Options> {
    let mut options = Options {
        conns: 64,
        size: 64,
        duration: Duration::from_secs(5),
        shards: 1,
        driver: "auto".into(),
        addr: None,
        rate: None,
        vs: Vec::new(),
        rounds: 1,
        plot: None,
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
                // At least a tenth of a second (CPU time is read in 10 ms
                // ticks), at most a day.
                let secs: f64 = value.parse().map_err(|_| bad(()))?;
                if !(0.1..=86_400.0).contains(&secs) {
                    return Err(bad(()));
                }
                options.duration = Duration::from_secs_f64(secs);
            }
            "--shards" => options.shards = value.parse().map_err(|_| bad(()))?,
            "--addr" => options.addr = Some(value.parse().map_err(|_| bad(()))?),
            "--rate" => options.rate = Some(value.parse().map_err(|_| bad(()))?),
            "--rounds" => options.rounds = value.parse().map_err(|_| bad(()))?,
            "--plot" => options.plot = Some(value),
            "--driver" => match value.as_str() {
                "auto" | "uring" | "epoll" => options.driver = value,
                _ => return Err(bad(())),
            },
            "--vs" => {
                for server in value.split(',') {
                    match server {
                        "tokio" | "monoio" => options.vs.push(server.to_string()),
                        _ => return Err(bad(())),
                    }
                }
            }
            _ => return Err(invalid(format!("unknown flag {flag}"))),
        }
    }
    if options.conns == 0 || options.size == 0 || options.shards == 0 || options.rounds == 0 {
        return Err(invalid(
            "--conns, --size, --shards and --rounds must be at least 1".into(),
        ));
    }
    if options.addr.is_some() && !options.vs.is_empty() {
        return Err(invalid(
            "--addr loads one outside server; --vs needs our own".into(),
        ));
    }
    Ok(options)
}

/// One load run against one server.
struct Run {
    report: support::Report,
    /// Busy share of the window: the server's CPUs, the load generator's one.
    server_busy: Option<f64>,
    load_busy: f64,
}

impl Run {
    fn server_us_per_request(&self) -> Option<f64> {
        let cpu = self.report.server_cpu?;
        Some(cpu.as_secs_f64() * 1e6 / self.report.requests.max(1) as f64)
    }

    /// Which side ran out of CPU first, in words: the busier one, when it
    /// is busy enough to be the limit and clearly busier than the other.
    fn verdict(&self) -> String {
        let load = self.load_busy;
        let Some(server) = self.server_busy else {
            return format!(
                "load generator {} (the server is not watched)",
                if load >= BUSY {
                    "saturated"
                } else {
                    "not saturated"
                }
            );
        };
        if server.max(load) < BUSY {
            return "neither side saturated: round trips, not CPU, set the pace (add --conns)"
                .into();
        }
        if (server - load).abs() <= MARGIN {
            return format!(
                "both sides saturated (server {:.0}%, load generator {:.0}%): the load generator costs about what the server does per request, so it is as much the limit",
                100.0 * server,
                100.0 * load
            );
        }
        if server > load {
            "server saturated: this is the server's limit".into()
        } else {
            format!(
                "load generator saturated: the server was idle {:.0}% of the time, so this is a floor on its limit (about {:.0} req/s if it scaled)",
                100.0 * (1.0 - server).max(0.0),
                self.report.qps() / server.max(0.01),
            )
        }
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if support::servers::serve_if_child(&args) {
        return Ok(());
    }
    let options = parse()?;
    let cpus = support::allowed_cpus();
    let load_cpu = *cpus.last().expect("at least one CPU");
    // The server's shards get the first CPUs (all but the load generator's,
    // when there are enough).
    let server_cpus: Vec<usize> = if cpus.len() > options.shards {
        cpus[..options.shards].to_vec()
    } else {
        cpus.clone()
    };
    let ringshard = match options.driver.as_str() {
        "auto" => "ringshard".to_string(),
        driver => format!("ringshard-{driver}"),
    };
    let mut names = vec![ringshard];
    names.extend(options.vs.iter().cloned());
    let servers: Vec<Option<Server>> = match options.addr {
        Some(_) => vec![None],
        None => names
            .iter()
            .map(|kind| Server::start(kind, &server_cpus, options.shards).map(Some))
            .collect::<io::Result<_>>()?,
    };
    if let Some(addr) = options.addr {
        names = vec![addr.to_string()];
    }
    support::pin_to(&[load_cpu])?;
    println!(
        "load: {} connections x {} bytes for {:?}{}, load generator on CPU {load_cpu}",
        options.conns,
        options.size,
        options.duration,
        options
            .rate
            .map_or(String::new(), |r| format!(" at {r} req/s"))
    );
    if options.addr.is_none() {
        println!(
            "servers: {} on {} shard(s), CPUs {server_cpus:?}",
            names.join(", "),
            options.shards
        );
    }
    let single = servers.len() == 1 && options.rounds == 1;
    let mut runs: Vec<Vec<Run>> = (0..servers.len()).map(|_| Vec::new()).collect();
    for round in 0..options.rounds {
        for k in 0..servers.len() {
            // Rotate the order each round so no server always goes first.
            let s = (k + round) % servers.len();
            let server = servers[s].as_ref();
            let addr = server.map_or_else(|| options.addr.unwrap(), |server| server.addr);
            let report = support::run(&support::Load {
                addr,
                conns: options.conns,
                size: options.size,
                duration: options.duration,
                warmup: Duration::from_millis(500),
                rate: options.rate,
                progress: single,
                server_pid: server.map(Server::pid),
                window: None,
            })?;
            let window = options.duration.as_secs_f64();
            let run = Run {
                server_busy: report
                    .server_cpu
                    .map(|cpu| cpu.as_secs_f64() / window / server_cpus.len() as f64),
                load_busy: report.load_cpu.as_secs_f64() / window,
                report,
            };
            print_run(&names[s], &run, server_cpus.len());
            runs[s].push(run);
        }
    }
    if servers.len() > 1 {
        summary(&names, &runs);
    }
    if let Some(path) = &options.plot {
        let merged: Vec<_> = runs.iter().map(|runs| merge(runs)).collect();
        let curves: Vec<Curve> = names
            .iter()
            .zip(&merged)
            .map(|(name, latency)| Curve {
                name: name.clone(),
                latency,
            })
            .collect();
        let title = format!(
            "echo, {} connections x {} bytes, {} shard(s){}",
            options.conns,
            options.size,
            options.shards,
            options
                .rate
                .map_or(String::new(), |r| format!(", {r} req/s"))
        );
        plot::write_svg(path, &title, &curves)?;
        println!("plot: latency percentiles of every server in {path}");
    }
    Ok(())
}

fn print_run(name: &str, run: &Run, server_cpus: usize) {
    let report = &run.report;
    println!(
        "{name}: {:.0} req/s   latency us: p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
        report.qps(),
        report.percentile_us(0.5),
        report.percentile_us(0.99),
        report.percentile_us(0.999),
        report.latency.max() as f64 / 1000.0,
    );
    let server = match (run.server_us_per_request(), run.server_busy) {
        // Less than one 10 ms tick of CPU over the window.
        (Some(0.0), Some(_)) => "server CPU too little to read".into(),
        (Some(us), Some(busy)) => format!(
            "server CPU {us:.2} us/request (at that cost {server_cpus} CPU(s) serve at most {:.0} req/s), busy {:.0}% of {server_cpus} CPU(s)",
            server_cpus as f64 * 1e6 / us,
            100.0 * busy
        ),
        _ => "server CPU not watched".into(),
    };
    println!(
        "  {server}; load generator busy {:.0}% of 1 CPU\n  {}",
        100.0 * run.load_busy,
        run.verdict()
    );
}

/// Medians over the rounds, one line per server, ratios to the first.
fn summary(names: &[String], runs: &[Vec<Run>]) {
    let median = |runs: &[Run], f: &dyn Fn(&Run) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    println!(
        "\nmedians of {} round(s); ratios are {} / server:",
        runs[0].len(),
        names[0]
    );
    println!(
        "{:>12} {:>10} {:>8} {:>8} {:>10} {:>8} {:>11}",
        "server", "req/s", "p50 us", "p99 us", "cpu us/rq", "qps x", "cpu/rq x"
    );
    let qps = |r: &Run| r.report.qps();
    let cpu = |r: &Run| r.server_us_per_request().unwrap_or(f64::NAN);
    let (qps0, cpu0) = (median(&runs[0], &qps), median(&runs[0], &cpu));
    for (name, runs) in names.iter().zip(runs) {
        println!(
            "{name:>12} {:>10.0} {:>8.1} {:>8.1} {:>10.2} {:>8.2} {:>11.2}",
            median(runs, &qps),
            median(runs, &|r| r.report.percentile_us(0.5)),
            median(runs, &|r| r.report.percentile_us(0.99)),
            median(runs, &cpu),
            qps0 / median(runs, &qps),
            cpu0 / median(runs, &cpu),
        );
    }
    println!(
        "qps x > 1: the first server served more; cpu/rq x < 1: it spent less CPU per request"
    );
}

/// All rounds' latencies of one server.
fn merge(runs: &[Run]) -> hdrhistogram::Histogram<u64> {
    let mut all = runs[0].report.latency.clone();
    for run in &runs[1..] {
        all.add(&run.report.latency).expect("same bounds");
    }
    all
}
