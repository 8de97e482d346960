//! The soak workload, shared by `examples/soak` and `tests/soak.rs`: on
//! every shard, an echo server and clients that churn connections
//! (verified echoes of 64 B to 64 KiB), timers being reset, and channel
//! traffic between the shards. Every `report_every` it samples the heap's
//! live bytes (a tracking allocator), the open fds and the ops the
//! drivers hold.

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringshard::net::{TcpListener, TcpStream};
use ringshard::{sleep, spawn, spawn_on, DriverType, Runtime, ShardId};

/// How a soak runs.
pub struct Config {
    pub duration: Duration,
    pub report_every: Duration,
    pub shards: usize,
    /// Churning clients per shard.
    pub clients: usize,
    pub driver: DriverType,
}

/// One sample of the process.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub at: Duration,
    pub live_bytes: usize,
    pub fds: usize,
    pub ops_in_flight: u64,
    pub connections: u64,
    pub echoes: u64,
    pub messages: u64,
    pub timer_resets: u64,
}

impl std::fmt::Display for Sample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "t={:>5.1}s live={:>8.1} KiB fds={:>4} ops_in_flight={:>4} connections={:>7} \
             echoes={:>8} messages={:>9} timer_resets={:>8}",
            self.at.as_secs_f64(),
            self.live_bytes as f64 / 1024.0,
            self.fds,
            self.ops_in_flight,
            self.connections,
            self.echoes,
            self.messages,
            self.timer_resets,
        )
    }
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    echoes: AtomicU64,
    messages: AtomicU64,
    timer_resets: AtomicU64,
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count())
}

/// A small xorshift, so runs replay.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Runs the soak, calling `report` with each sample; returns them all.
pub fn run(config: &Config, mut report: impl FnMut(&Sample)) -> io::Result<Vec<Sample>> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rt = Runtime::builder()
        .driver_type(config.driver)
        .worker_threads(config.shards)
        .pin_threads(config.shards <= cpus)
        .build()?;
    // A bound, not listening, SO_REUSEPORT socket holds the port for the
    // shards' listeners.
    let holder = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    holder.set_reuse_port(true)?;
    holder.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    let port = holder.local_addr()?.as_socket().expect("inet").port();
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let start = Instant::now();
    let mut samples = Vec::new();
    rt.block_on(async {
        let shards: Vec<_> = (0..config.shards)
            .map(|index| {
                let (stop, counters, clients) = (stop.clone(), counters.clone(), config.clients);
                let shards = config.shards;
                spawn_on(ShardId::new(index), move || {
                    shard_load(index, shards, port, clients, stop, counters)
                })
            })
            .collect();
        let mut next = config.report_every;
        while start.elapsed() < config.duration {
            sleep(next.saturating_sub(start.elapsed())).await;
            next += config.report_every;
            let stats = rt.stats().total();
            let sample = Sample {
                at: start.elapsed(),
                live_bytes: crate::alloc::live_bytes(),
                fds: fds(),
                ops_in_flight: stats.ops_in_flight,
                connections: counters.connections.load(Ordering::Relaxed),
                echoes: counters.echoes.load(Ordering::Relaxed),
                messages: counters.messages.load(Ordering::Relaxed),
                timer_resets: counters.timer_resets.load(Ordering::Relaxed),
            };
            report(&sample);
            samples.push(sample);
        }
        stop.store(true, Ordering::Relaxed);
        for shard in shards {
            match shard.await {
                Ok(result) => result?,
                Err(error) => {
                    return Err(io::Error::other(format!("a shard's load failed: {error}")))
                }
            }
        }
        Ok::<(), io::Error>(())
    })?;
    drop(holder);
    Ok(samples)
}

/// One shard's part: its listener and echo server, its churning clients,
/// a timer being reset, and the channel traffic with the next shard.
async fn shard_load(
    index: usize,
    shards: usize,
    port: u16,
    clients: usize,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
) -> io::Result<()> {
    let listener = TcpListener::bind_reuseport(("127.0.0.1", port))?;
    let server = spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            spawn(crate::echo::echo(stream, 64 * 1024));
        }
    });
    let failures = Rc::new(Cell::new(0u64));
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (stop, counters, failures) = (stop.clone(), counters.clone(), failures.clone());
        let seed = (index * 1000 + client + 1) as u64;
        tasks.push(spawn(async move {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            while !stop.load(Ordering::Relaxed) {
                if let Err(error) = churn(port, &mut rng, &counters).await {
                    eprintln!("shard {index}: client: {error}");
                    failures.set(failures.get() + 1);
                }
            }
        }));
    }
    tasks.push(spawn(reset_timers(stop.clone(), counters.clone())));
    // Shard i sends to shard i + 1 (wrapping); the receiver's task is
    // built there.
    let (tx, mut rx) = ringshard::bounded::<Vec<u8>>(64);
    let counters_rx = counters.clone();
    let receiver = spawn_on(ShardId::new((index + 1) % shards), move || async move {
        // Ends when the sender goes.
        while let Some(message) = rx.recv().await {
            assert!(message.iter().all(|&b| b == message.len() as u8), "corrupt");
            counters_rx.messages.fetch_add(1, Ordering::Relaxed);
        }
    });
    let mut rng = Rng(index as u64 + 77);
    while !stop.load(Ordering::Relaxed) {
        let size = 1 + rng.below(255) as usize;
        if tx.send(vec![size as u8; size]).await.is_err() {
            break;
        }
        if rng.below(64) == 0 {
            sleep(Duration::from_millis(1)).await;
        }
    }
    drop(tx);
    for task in tasks {
        let _ = task.await;
    }
    let _ = receiver.await;
    server.abort();
    match failures.get() {
        0 => Ok(()),
        n => Err(io::Error::other(format!(
            "shard {index}: {n} client failures"
        ))),
    }
}

/// One connection: a few verified echoes of random sizes, then close.
async fn churn(port: u16, rng: &mut Rng, counters: &Counters) -> io::Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    counters.connections.fetch_add(1, Ordering::Relaxed);
    for _ in 0..1 + rng.below(8) {
        let size = 64 + rng.below(64 * 1024 - 64) as usize;
        let fill = rng.below(256) as u8;
        let (res, _) = stream.write_all(vec![fill; size]).await;
        res?;
        let (res, got) = stream.read_exact(Vec::with_capacity(size)).await;
        res?;
        if got.iter().any(|&b| b != fill) {
            return Err(io::Error::other("echo corrupted"));
        }
        counters.echoes.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// A timeout that keeps being pushed back (the common case for idle
/// timers), and one that fires.
async fn reset_timers(stop: Arc<AtomicBool>, counters: Arc<Counters>) {
    let mut idle = Box::pin(sleep(Duration::from_millis(50)));
    let mut tick = ringshard::time::interval(Duration::from_millis(3));
    while !stop.load(Ordering::Relaxed) {
        // Polled, so it sits in the wheel; then moved.
        ringshard::select! {
            _ = &mut idle => {}
            _ = tick.tick() => {}
        }
        idle.reset(Instant::now() + Duration::from_millis(50));
        counters.timer_resets.fetch_add(1, Ordering::Relaxed);
    }
}
