//! Core runtime throughput, ringshard beside tokio's current_thread runtime in
//! the same process: spawn+join and timer register+cancel; and how late a
//! `sleep` on an idle runtime wakes (p50, p99, max, and how many early).
//!
//! `taskset -c 0 cargo bench --bench core` (one core: both runtimes run on
//! the calling thread). Rounds alternate between the runtimes; the median
//! round is reported, with the ratio tokio / ringshard (> 1: ringshard faster).

use std::future::{poll_fn, Future};
use std::hint::black_box;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

const ROUNDS: usize = 7;
const TASKS: u64 = 200_000;
const TIMERS: u64 = 500_000;

fn ringshard_rt() -> ringshard::Runtime {
    ringshard::Runtime::builder()
        .worker_threads(1)
        .build()
        .expect("ringshard runtime")
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Spawns `TASKS` tasks, then joins them all: ns per task.
fn spawn_join_ringshard(rt: &ringshard::Runtime) -> f64 {
    rt.block_on(async {
        let start = Instant::now();
        let handles: Vec<_> = (0..TASKS)
            .map(|i| ringshard::spawn(async move { black_box(i) }))
            .collect();
        let mut sum = 0;
        for handle in handles {
            sum += handle.await.unwrap();
        }
        assert_eq!(sum, TASKS * (TASKS - 1) / 2);
        start.elapsed().as_nanos() as f64 / TASKS as f64
    })
}

fn spawn_join_tokio(rt: &tokio::runtime::Runtime) -> f64 {
    rt.block_on(async {
        let start = Instant::now();
        let handles: Vec<_> = (0..TASKS)
            .map(|i| tokio::spawn(async move { black_box(i) }))
            .collect();
        let mut sum = 0;
        for handle in handles {
            sum += handle.await.unwrap();
        }
        assert_eq!(sum, TASKS * (TASKS - 1) / 2);
        start.elapsed().as_nanos() as f64 / TASKS as f64
    })
}

/// Polls `future` once (registering it), then drops it.
async fn poll_once<F: Future>(future: F) {
    let mut future = pin!(future);
    poll_fn(|cx| {
        assert!(future.as_mut().poll(cx).is_pending());
        Poll::Ready(())
    })
    .await;
}

/// Registers a 1 s timer and cancels it, `TIMERS` times: ns per timer.
fn timers_ringshard(rt: &ringshard::Runtime) -> f64 {
    rt.block_on(async {
        let start = Instant::now();
        for i in 0..TIMERS {
            poll_once(ringshard::sleep(Duration::from_millis(1000 + i % 1000))).await;
        }
        start.elapsed().as_nanos() as f64 / TIMERS as f64
    })
}

fn timers_tokio(rt: &tokio::runtime::Runtime) -> f64 {
    rt.block_on(async {
        let start = Instant::now();
        for i in 0..TIMERS {
            poll_once(tokio::time::sleep(Duration::from_millis(1000 + i % 1000))).await;
        }
        start.elapsed().as_nanos() as f64 / TIMERS as f64
    })
}

/// Same, with deadlines computed up front: register+cancel without the clock
/// read that `sleep(duration)` makes.
fn timers_until_ringshard(rt: &ringshard::Runtime) -> f64 {
    rt.block_on(async {
        let base = Instant::now() + Duration::from_secs(1);
        let start = Instant::now();
        for i in 0..TIMERS {
            poll_once(ringshard::time::sleep_until(
                base + Duration::from_millis(i % 1000),
            ))
            .await;
        }
        start.elapsed().as_nanos() as f64 / TIMERS as f64
    })
}

fn timers_until_tokio(rt: &tokio::runtime::Runtime) -> f64 {
    rt.block_on(async {
        let base = tokio::time::Instant::now() + Duration::from_secs(1);
        let start = Instant::now();
        for i in 0..TIMERS {
            poll_once(tokio::time::sleep_until(
                base + Duration::from_millis(i % 1000),
            ))
            .await;
        }
        start.elapsed().as_nanos() as f64 / TIMERS as f64
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

fn compare(name: &str, ours: impl Fn() -> f64, theirs: impl Fn() -> f64) {
    // Warm-up round for both, not counted.
    ours();
    theirs();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        a.push(ours());
        b.push(theirs());
    }
    let (a, b) = (median(a), median(b));
    println!(
        "{name:<24} ringshard {a:>8.1} ns/op   tokio {b:>8.1} ns/op   tokio/ringshard {:>5.2}x",
        b / a
    );
}

/// Sleeps of 0.1–5 ms one after another on an idle runtime: how late each
/// wakes after its deadline (µs), and how many woke early.
fn lateness(sleep: impl Fn(Duration) -> Duration, count: usize) -> (Vec<f64>, usize) {
    let mut seed = 0x9e37_79b9u64;
    let mut late = Vec::with_capacity(count);
    let mut early = 0;
    for _ in 0..count {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let wanted = Duration::from_micros(100 + seed % 4900);
        let slept = sleep(wanted);
        match slept.checked_sub(wanted) {
            Some(extra) => late.push(extra.as_secs_f64() * 1e6),
            None => early += 1,
        }
    }
    late.sort_by(f64::total_cmp);
    (late, early)
}

fn report_lateness(name: &str, (late, early): (Vec<f64>, usize)) {
    let at = |q: f64| late[((late.len() - 1) as f64 * q) as usize];
    println!(
        "{name:<10} sleep lateness  p50 {:>7.1} µs   p99 {:>7.1} µs   max {:>7.1} µs   early {early}",
        at(0.5),
        at(0.99),
        at(1.0)
    );
}

/// Pending tasks spawned for the memory measure.
const PENDING_TASKS: usize = 100_000;

/// Resident memory of this process, bytes (/proc/self/statm).
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no memory arguments.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

/// In a fresh child process: RSS growth per task over `PENDING_TASKS`
/// detached tasks that wait forever, each polled once (so registered with
/// its shard for shutdown), on a one-thread runtime of `kind`.
fn task_memory_child(kind: &str) {
    let grown = match kind {
        "ringshard" => ringshard_rt().block_on(async {
            for _ in 0..3 {
                ringshard::yield_now().await;
            }
            let before = rss();
            for _ in 0..PENDING_TASKS {
                drop(ringshard::spawn(std::future::pending::<()>()));
            }
            // The run queue is FIFO: this one finishes after every task
            // above has run (and registered) once.
            ringshard::spawn(async {}).await.unwrap();
            rss().saturating_sub(before)
        }),
        "tokio" => tokio_rt().block_on(async {
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            let before = rss();
            for _ in 0..PENDING_TASKS {
                drop(tokio::spawn(std::future::pending::<()>()));
            }
            // As above: queued behind every task spawned before it.
            tokio::spawn(async {}).await.unwrap();
            rss().saturating_sub(before)
        }),
        _ => panic!("unknown runtime {kind}"),
    };
    println!("{}", grown as f64 / PENDING_TASKS as f64);
    // Exit without tearing the tasks down: the measure is taken.
    std::process::exit(0);
}

/// Bytes per pending task, ringshard and tokio, each in its own process,
/// alternating `rounds` times.
fn task_memory(rounds: usize) {
    let run = |kind: &str| -> f64 {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--task-memory", kind])
            .output()
            .expect("task memory child");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("bytes per task")
    };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        ours.push(run("ringshard"));
        theirs.push(run("tokio"));
    }
    let show = |v: &[f64]| {
        v.iter()
            .map(|b| format!("{b:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "memory per pending task ({PENDING_TASKS} tasks, RSS growth): ringshard {} B   tokio {} B",
        show(&ours),
        show(&theirs)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(kind) = args
        .iter()
        .position(|a| a == "--task-memory")
        .and_then(|i| args.get(i + 1))
    {
        return task_memory_child(kind);
    }
    // `cargo test --benches` runs bench binaries with no arguments other
    // than `--bench` absent; keep that run short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let ours = ringshard_rt();
    let theirs = tokio_rt();
    if quick {
        spawn_join_ringshard(&ours);
        timers_ringshard(&ours);
        timers_until_ringshard(&ours);
        task_memory(1);
        println!("benches/core: smoke run only (use `cargo bench --bench core`)");
        return;
    }
    println!(
        "driver: {:?}, {} rounds, median",
        ours.driver_kind(),
        ROUNDS
    );
    task_memory(3);
    compare(
        "spawn+join",
        || spawn_join_ringshard(&ours),
        || spawn_join_tokio(&theirs),
    );
    compare(
        "sleep(d) poll+drop",
        || timers_ringshard(&ours),
        || timers_tokio(&theirs),
    );
    compare(
        "sleep_until poll+drop",
        || timers_until_ringshard(&ours),
        || timers_until_tokio(&theirs),
    );
    const SLEEPS: usize = 1000;
    report_lateness(
        "ringshard",
        lateness(
            |d| {
                ours.block_on(async {
                    let start = Instant::now();
                    ringshard::sleep(d).await;
                    start.elapsed()
                })
            },
            SLEEPS,
        ),
    );
    // The machine's floor: a plain thread's sleep (nanosleep).
    report_lateness(
        "thread",
        lateness(
            |d| {
                let start = Instant::now();
                std::thread::sleep(d);
                start.elapsed()
            },
            SLEEPS,
        ),
    );
    report_lateness(
        "tokio",
        lateness(
            |d| {
                theirs.block_on(async {
                    let start = Instant::now();
                    tokio::time::sleep(d).await;
                    start.elapsed()
                })
            },
            SLEEPS,
        ),
    );
}
