//! Shared by `examples/echo_bench.rs` and the benches: the echo load
//! generator (ringshard, one shard), the echo servers, the latency plot,
//! thread pinning, CPU accounting, flags.

#![allow(dead_code, reason = "the example and the bench use different parts")]

pub mod plot;
pub mod servers;

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringshard::net::TcpStream;

/// Called at the start (`true`) and the end (`false`) of the measured
/// window, on the load generator's thread (which it stalls meanwhile).
#[derive(Clone)]
pub struct Window(pub std::sync::Arc<dyn Fn(bool) + Send + Sync>);

impl std::fmt::Debug for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Window")
    }
}

/// What load to offer.
#[derive(Clone, Debug)]
pub struct Load {
    pub addr: SocketAddr,
    pub conns: usize,
    pub size: usize,
    /// Measured time, after `warmup`.
    pub duration: Duration,
    pub warmup: Duration,
    /// Requests per second over all connections; `None` = closed loop.
    pub rate: Option<u64>,
    /// Print a progress line every second.
    pub progress: bool,
    /// The server's process, whose CPU time is read over the measured window.
    pub server_pid: Option<u32>,
    /// Told when the measured window opens and closes (to start counters).
    pub window: Option<Window>,
}

/// What the load measured (after warm-up).
pub struct Report {
    pub requests: u64,
    pub elapsed: Duration,
    /// Round-trip latency, nanoseconds.
    pub latency: Histogram<u64>,
    /// CPU time the load generator's process used in the measured window.
    pub load_cpu: Duration,
    /// CPU time the server's process used in the measured window, when
    /// `Load::server_pid` named it.
    pub server_cpu: Option<Duration>,
}

impl Report {
    pub fn qps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile_us(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Runs `load` on a one-shard ringshard runtime on the calling thread (the
/// caller pins it): every connection sends `size` bytes, waits for the echo
/// and checks it, in a loop. With a rate, each connection keeps to its share
/// of it (checked every millisecond).
pub fn run(load: &Load) -> io::Result<Report> {
    let rt = ringshard::Runtime::builder()
        .worker_threads(1)
        .pin_threads(false)
        .build()?;
    rt.block_on(async {
        let start = Instant::now() + Duration::from_millis(50);
        let measure_from = start + load.warmup;
        let end = measure_from + load.duration;
        let done = Rc::new(Cell::new(0u64));
        let mut conns = Vec::with_capacity(load.conns);
        for i in 0..load.conns {
            let mut stream = TcpStream::connect(load.addr).await?;
            stream.set_nodelay(true)?;
            let load = load.clone();
            let done = done.clone();
            let per_conn = load.rate.map(|rate| rate as f64 / load.conns as f64);
            conns.push(ringshard::spawn(async move {
                let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
                let message: Vec<u8> = (0..load.size).map(|b| (b + i) as u8).collect();
                let mut out = message.clone();
                let mut back = Vec::with_capacity(load.size);
                let mut sent = 0u64;
                ringshard::time::sleep_until(start).await;
                loop {
                    let now = Instant::now();
                    if now >= end {
                        break;
                    }
                    if let Some(per_conn) = per_conn {
                        let due = ((now - start).as_secs_f64() * per_conn) as u64;
                        if sent >= due {
                            ringshard::sleep(Duration::from_millis(1)).await;
                            continue;
                        }
                    }
                    let (res, buf) = stream.write_all(out).await;
                    res?;
                    out = buf;
                    back.clear();
                    let (res, buf) = stream.read_exact(back).await;
                    res?;
                    back = buf;
                    if back != message {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "echo corrupted"));
                    }
                    sent += 1;
                    let finished = Instant::now();
                    if now >= measure_from {
                        latency.saturating_record((finished - now).as_nanos() as u64);
                        done.set(done.get() + 1);
                    }
                }
                Ok::<_, io::Error>(latency)
            }));
        }
        // CPU over the measured window, both sides: which one ran out first.
        let window = ringshard::spawn({
            let server_pid = load.server_pid;
            let read = move || (own_cpu(), server_pid.map(|pid| process_cpu(pid).ok()));
            let hook = load.window.clone();
            async move {
                ringshard::time::sleep_until(measure_from).await;
                if let Some(hook) = &hook {
                    (hook.0)(true);
                }
                let before = read();
                ringshard::time::sleep_until(end).await;
                let after = read();
                if let Some(hook) = &hook {
                    (hook.0)(false);
                }
                let server = match (before.1, after.1) {
                    (Some(Some(before)), Some(Some(after))) => Some(after.saturating_sub(before)),
                    _ => None,
                };
                (after.0.saturating_sub(before.0), server)
            }
        });
        if load.progress {
            let done = done.clone();
            ringshard::spawn(async move {
                ringshard::time::sleep_until(measure_from).await;
                let mut last = 0;
                let mut second = 0;
                while Instant::now() + Duration::from_millis(500) < end {
                    ringshard::sleep(Duration::from_secs(1)).await;
                    second += 1;
                    let now = done.get();
                    println!("  {second:>3}s  {:>10} req/s", now - last);
                    last = now;
                }
            });
        }
        let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for conn in conns {
            let conn_latency = conn
                .await
                .map_err(|e| io::Error::other(format!("load task failed: {e}")))??;
            latency.add(conn_latency).unwrap();
        }
        let (load_cpu, server_cpu) = window
            .await
            .map_err(|e| io::Error::other(format!("CPU window task failed: {e}")))?;
        Ok(Report {
            requests: done.get(),
            elapsed: load.duration,
            latency,
            load_cpu,
            server_cpu,
        })
    })
}

/// Sets the calling thread's affinity to `cpus`.
pub fn pin_to(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: `set` is a valid cpu_set_t; CPU_SET bounds-checks `cpu`.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The CPUs the calling thread may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// CPU time (user + system) process `pid` has used, all threads, from
/// /proc/<pid>/stat.
pub fn process_cpu(pid: u32) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesized command name; utime and stime are the
    // 14th and 15th fields of the line.
    let rest = &stat[stat
        .rfind(')')
        .ok_or_else(|| io::Error::other("bad stat"))?
        + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().map_err(io::Error::other)?
        + fields[12].parse::<u64>().map_err(io::Error::other)?;
    // SAFETY: sysconf has no memory arguments.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// CPU time (user + system) the calling process has used, all threads.
pub fn own_cpu() -> Duration {
    // SAFETY: an all-zero rusage is a valid value to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Prints the address a server child process listens on, its first line of
/// stdout: the parent reads it with [`read_addr`].
pub fn announce(addr: std::net::SocketAddr) {
    println!("{addr}");
}

/// The address the server child `kind` announced (see [`announce`]).
pub fn read_addr(child: &mut std::process::Child, kind: &str) -> std::net::SocketAddr {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().expect("piped stdout"))
        .read_line(&mut line)
        .expect("server address");
    line.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{kind}: {line:?}"))
}

/// The text after `--name` on the command line.
pub fn flag_text<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// The value after `--name` on the command line, parsed.
pub fn flag<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    flag_text(args, name).and_then(|v| v.parse().ok())
}
