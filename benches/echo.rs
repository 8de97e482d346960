//! Echo servers side by side: ringshard, tokio (current_thread) and monoio,
//! each in its own child process pinned to the first CPU, loaded in turn by
//! the same load generator pinned to the last CPU. Alternates servers over
//! rounds and reports medians: QPS, p99 latency, and the server's CPU time
//! per request (utime + stime of the child from /proc/<pid>/stat).
//!
//! ```sh
//! cargo bench --bench echo                      # closed loop, then paced at 50,000 req/s
//! cargo bench --bench echo -- --rounds 5 --duration 3 --mode closed   # or paced
//! # variants of one server, and part of the grid (CONNSxSIZE):
//! cargo bench --bench echo -- --servers ringshard,ringshard:direct_send=0,tokio --grid 1x4096,64x64
//! ```
//!
//! `ringshard-epoll` runs the ringshard server on its epoll driver
//! (`--servers ringshard-epoll,tokio`). `ringshard:SPEC` runs the ringshard server with `RINGSHARD_URING_TUNE=SPEC`
//! (see `Tuning` in `src/driver/uring/mod.rs`), to measure one io_uring
//! feature against its absence. Ratios compare the first server with each
//! of the others.
//!
//! `--count` counts instead of timing, in the load generator's measured
//! window: the server's user-space instructions per request under
//! `valgrind --tool=callgrind` (counters zeroed as the window opens, dumped
//! as it closes), and its syscalls and context switches per request under
//! `perf stat` (the server run plainly). Counts do not swing as timings do:
//!
//! ```sh
//! cargo bench --bench echo -- --count --grid 1x64,1x4096,64x64,64x4096
//! ```
//!
//! (ringshard and tokio by default: monoio's server hangs under valgrind
//! 3.19.)
//!
//! Run without `--bench` (as `cargo test --benches` does) it makes one short
//! pass to prove it works.

#[path = "support/mod.rs"]
mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::servers::Server;

const SERVERS: &str = "ringshard,tokio,monoio";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if support::servers::serve_if_child(&args) {
        return;
    }
    let full = args.iter().any(|a| a == "--bench");
    let value = |name: &str| support::flag::<f64>(&args, name);
    let rounds = value("--rounds").map_or(if full { 3 } else { 1 }, |v| v as usize);
    let duration =
        Duration::from_secs_f64(value("--duration").unwrap_or(if full { 2.0 } else { 0.3 }));
    let text = |name: &str| support::flag_text(&args, name);
    let grid: Vec<(usize, usize)> = match text("--grid") {
        Some(grid) => grid
            .split(',')
            .map(|cell| {
                let (conns, size) = cell.split_once('x').expect("--grid CONNSxSIZE,...");
                (conns.parse().expect("conns"), size.parse().expect("size"))
            })
            .collect(),
        None if full => vec![
            (1, 64),
            (1, 4096),
            (64, 64),
            (64, 4096),
            (256, 64),
            (256, 4096),
        ],
        None => vec![(64, 64)],
    };
    let kinds: Vec<&str> = text("--servers").unwrap_or(SERVERS).split(',').collect();
    let cpus = support::allowed_cpus();
    let (server_cpu, load_cpu) = (cpus[0], *cpus.last().unwrap());
    support::pin_to(&[load_cpu]).expect("pin load generator");
    println!(
        "echo: servers on CPU {server_cpu}, load generator on CPU {load_cpu}, {rounds} rounds of {duration:?}, median reported"
    );
    if args.iter().any(|a| a == "--count") {
        // monoio's server hangs under valgrind 3.19 (its ring setup never
        // returns there): counted only when asked for.
        let kinds: Vec<&str> = text("--servers")
            .unwrap_or("ringshard,tokio")
            .split(',')
            .collect();
        return count(&kinds, &grid, duration, server_cpu);
    }
    let servers: Vec<Server> = kinds
        .iter()
        .map(|kind| Server::start(kind, &[server_cpu], 1).expect("start server"))
        .collect();
    let modes: Vec<Option<u64>> = match (full, text("--mode").unwrap_or("both")) {
        (false, _) => vec![None],
        (true, "closed") => vec![None],
        (true, "paced") => vec![Some(50_000)],
        _ => vec![None, Some(50_000)],
    };
    let names: Vec<String> = kinds.iter().map(|kind| short_name(kind)).collect();
    if text("--mode") == Some("churn") {
        return churn(&servers, &names, rounds, duration);
    }
    for rate in modes {
        match rate {
            None => println!("\n## closed loop"),
            Some(rate) => {
                println!("\n## paced at {rate} req/s (same offered load for every server)")
            }
        }
        let mut header = format!("{:>5} {:>5} |", "conns", "size");
        for what in ["qps", "p99", "cpu/rq"] {
            for name in &names {
                header += &format!(" {:>9}", format!("{what} {name}"));
            }
            header += " |";
        }
        for name in &names[1..] {
            header += &format!(" {:>11}", format!("cpu {}/{name}", names[0]));
        }
        println!("{header}");
        for &(conns, size) in &grid {
            let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); servers.len()];
            for round in 0..rounds {
                for k in 0..servers.len() {
                    // Rotate the order each round so no server always goes first.
                    let s = (k + round) % servers.len();
                    samples[s].push(measure(&servers[s], conns, size, duration, rate));
                }
            }
            let med: Vec<Sample> = samples.iter().map(|s| median(s)).collect();
            let mut line = format!("{conns:>5} {size:>5} |");
            let fields: [fn(&Sample) -> f64; 3] = [|s| s.qps, |s| s.p99_us, |s| s.cpu_ns];
            for field in fields {
                for m in &med {
                    line += &format!(" {:>9.0}", field(m));
                }
                line += " |";
            }
            for m in &med[1..] {
                line += &format!(" {:>11.3}", med[0].cpu_ns / m.cpu_ns);
            }
            println!("{line}");
        }
    }
    println!("\nqps: requests/s; p99: round trip, us; cpu/rq: server CPU ns per request; ratios < 1 favour ringshard");
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    qps: f64,
    p99_us: f64,
    cpu_ns: f64,
}

/// Medians taken field by field.
fn median(samples: &[Sample]) -> Sample {
    let pick = |f: fn(&Sample) -> f64| {
        let mut v: Vec<f64> = samples.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Sample {
        qps: pick(|s| s.qps),
        p99_us: pick(|s| s.p99_us),
        cpu_ns: pick(|s| s.cpu_ns),
    }
}

/// Connection churn: client threads (on the load CPU) each loop connect,
/// one 64-byte echo, close. Reports connections/s and server CPU per
/// connection: what accept costs.
fn churn(servers: &[Server], names: &[String], rounds: usize, duration: Duration) {
    const THREADS: usize = 8;
    println!(
        "\n## connection churn: {THREADS} client threads, each connect + 64-byte echo + close"
    );
    let mut samples: Vec<Vec<(f64, f64)>> = vec![Vec::new(); servers.len()];
    for round in 0..rounds {
        for k in 0..servers.len() {
            let s = (k + round) % servers.len();
            let (addr, pid) = (servers[s].addr, servers[s].pid());
            let before = support::process_cpu(pid).unwrap();
            let start = std::time::Instant::now();
            let threads: Vec<_> = (0..THREADS)
                .map(|_| {
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut count = 0u64;
                        let mut buf = [0u8; 64];
                        while start.elapsed() < duration {
                            let mut stream = std::net::TcpStream::connect(addr).unwrap();
                            stream.set_nodelay(true).unwrap();
                            stream.write_all(&[7; 64]).unwrap();
                            stream.read_exact(&mut buf).unwrap();
                            count += 1;
                        }
                        count
                    })
                })
                .collect();
            let count: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
            let elapsed = start.elapsed();
            // Let the server finish the last closes before reading its CPU.
            std::thread::sleep(Duration::from_millis(50));
            let cpu = support::process_cpu(pid).unwrap() - before;
            samples[s].push((
                count as f64 / elapsed.as_secs_f64(),
                cpu.as_nanos() as f64 / count as f64,
            ));
        }
    }
    let med = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| {
        let mut v: Vec<f64> = v.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let first = med(&samples[0], |s| s.1);
    for (name, samples) in names.iter().zip(&samples) {
        let cpu = med(samples, |s| s.1);
        println!(
            "{name:>24}: {:>8.0} conn/s {cpu:>8.0} ns server CPU per connection, {:.3}x {}",
            med(samples, |s| s.0),
            cpu / first,
            names[0],
        );
    }
}

/// A column name: `ringshard:direct_send=0` becomes `rs:direct_send=0`.
fn short_name(kind: &str) -> String {
    let (base, tune) = kind.split_once(':').unwrap_or((kind, ""));
    let base = match base {
        "ringshard" => "rs",
        "ringshard-epoll" => "rs-epoll",
        "tokio" => "tk",
        "monoio" => "mn",
        other => other,
    };
    if tune.is_empty() {
        base.to_string()
    } else {
        format!("{base}:{tune}")
    }
}

/// One load run against `server`: medians are taken over these.
fn measure(
    server: &Server,
    conns: usize,
    size: usize,
    duration: Duration,
    rate: Option<u64>,
) -> Sample {
    let warmup = Duration::from_millis(300);
    let pid = server.pid();
    // CPU is read around the whole run (connect, warm-up, measure) and
    // divided by the requests of the whole run, so both cover the same work.
    let before = support::process_cpu(pid).unwrap();
    let load = support::Load {
        addr: server.addr,
        conns,
        size,
        duration,
        warmup,
        rate,
        progress: false,
        server_pid: None,
        window: None,
    };
    let report = support::run(&load).expect("load");
    let after = support::process_cpu(pid).unwrap();
    let all_requests =
        report.requests as f64 * (warmup + duration).as_secs_f64() / duration.as_secs_f64();
    Sample {
        qps: report.qps(),
        p99_us: report.percentile_us(0.99),
        cpu_ns: (after - before).as_nanos() as f64 / all_requests,
    }
}

/// `--count`: instructions (callgrind), syscalls and context switches
/// (perf stat) per request, per server and cell.
fn count(kinds: &[&str], grid: &[(usize, usize)], duration: Duration, cpu: usize) {
    let have = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !(have("valgrind") && have("callgrind_control") && have("perf")) {
        println!("--count needs valgrind (with callgrind_control) and perf");
        return;
    }
    let names: Vec<String> = kinds.iter().map(|kind| short_name(kind)).collect();
    println!("\n## counts per request in the measured window ({duration:?}), server on CPU {cpu}");
    let mut header = format!("{:>5} {:>5} |", "conns", "size");
    for what in ["instr", "syscall", "cswitch"] {
        for name in &names {
            header += &format!(" {:>11}", format!("{what} {name}"));
        }
        header += " |";
    }
    println!("{header}");
    for &(conns, size) in grid {
        let mut line = format!("{conns:>5} {size:>5} |");
        let mut columns = [Vec::new(), Vec::new(), Vec::new()];
        for kind in kinds {
            let instructions = callgrind_per_request(kind, cpu, conns, size, duration);
            let (syscalls, switches) = perf_per_request(kind, cpu, conns, size, duration);
            columns[0].push(instructions);
            columns[1].push(syscalls);
            columns[2].push(switches);
        }
        for (i, column) in columns.iter().enumerate() {
            for value in column {
                line += &if i == 0 {
                    format!(" {value:>11.0}")
                } else {
                    format!(" {value:>11.3}")
                };
            }
            line += " |";
        }
        println!("{line}");
    }
    println!("instr: user-space instructions (callgrind Ir); syscall: raw_syscalls:sys_enter; cswitch: context switches");
}

/// A load whose window opens and closes through `hook`.
fn counted_load(
    server: &Server,
    conns: usize,
    size: usize,
    duration: Duration,
    hook: impl Fn(bool) + Send + Sync + 'static,
) -> support::Report {
    support::run(&support::Load {
        addr: server.addr,
        conns,
        size,
        duration,
        warmup: Duration::from_millis(500),
        rate: None,
        progress: false,
        server_pid: None,
        window: Some(support::Window(std::sync::Arc::new(hook))),
    })
    .expect("load")
}

/// The server's user-space instructions per request, under callgrind.
fn callgrind_per_request(
    kind: &str,
    cpu: usize,
    conns: usize,
    size: usize,
    duration: Duration,
) -> f64 {
    let dir = std::env::temp_dir().join(format!("ringshard-echo-count-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("callgrind.out");
    let out_flag = format!("--callgrind-out-file={}", out.display());
    let server = Server::start_under(
        &[
            "valgrind",
            "--quiet",
            "--tool=callgrind",
            "--max-threads=2000",
            &out_flag,
        ],
        kind,
        &[cpu],
        1,
    )
    .expect("server under callgrind");
    let pid = server.pid().to_string();
    let control = move |flag: &str| {
        let status = Command::new("callgrind_control")
            .args([flag, &pid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("callgrind_control");
        assert!(status.success(), "callgrind_control {flag}");
    };
    let report = counted_load(&server, conns, size, duration, move |open| {
        control(if open { "-z" } else { "-d" })
    });
    drop(server);
    // The dump made as the window closed is the file with a part number.
    let dump = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext != "out"))
        .min()
        .expect("a callgrind dump");
    let text = std::fs::read_to_string(&dump).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let total: f64 = text
        .lines()
        .find_map(|line| {
            line.strip_prefix("summary:")
                .or_else(|| line.strip_prefix("totals:"))
        })
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .expect("callgrind totals");
    total / report.requests.max(1) as f64
}

/// The server's syscalls and context switches per request, under perf stat.
fn perf_per_request(
    kind: &str,
    cpu: usize,
    conns: usize,
    size: usize,
    duration: Duration,
) -> (f64, f64) {
    let server = Server::start(kind, &[cpu], 1).expect("server");
    let out = std::env::temp_dir().join(format!("ringshard-echo-perf-{}", std::process::id()));
    let pid = server.pid().to_string();
    let perf = std::sync::Mutex::new(None::<Child>);
    let out_path = out.clone();
    let report = counted_load(&server, conns, size, duration, move |open| {
        let mut perf = perf.lock().unwrap();
        if open {
            let child = Command::new("perf")
                .args([
                    "stat",
                    "-x",
                    ",",
                    "-e",
                    "raw_syscalls:sys_enter,context-switches",
                    "-o",
                ])
                .arg(&out_path)
                .args(["-p", &pid])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("perf stat");
            // Let it attach before the window's requests.
            std::thread::sleep(Duration::from_millis(200));
            *perf = Some(child);
        } else if let Some(mut child) = perf.take() {
            // SAFETY: a plain signal to our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let _ = child.wait();
        }
    });
    drop(server);
    let text = std::fs::read_to_string(&out).expect("perf output");
    let _ = std::fs::remove_file(&out);
    let event = |name: &str| -> f64 {
        text.lines()
            .find(|line| line.contains(name))
            .and_then(|line| line.split(',').next()?.trim().parse().ok())
            .unwrap_or(f64::NAN)
    };
    let requests = report.requests.max(1) as f64;
    (
        event("raw_syscalls:sys_enter") / requests,
        event("context-switches") / requests,
    )
}
