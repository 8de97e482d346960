//! Random 4 KiB positional reads from a page-cached 64 MiB file, 32 in
//! flight, one thread: ringshard's `fs::File::read_at` (one shard), tokio's
//! way to read at an offset (std's `read_at` in `spawn_blocking`, on a
//! `current_thread` runtime) and monoio's `File::read_at` (io_uring),
//! alternating rounds. Reports reads per second, medians and spreads.
//!
//! ```sh
//! taskset -c 0,1 cargo bench --bench fs -- --rounds 7 --reads 200000
//! ```
//!
//! Run without `--bench` it makes one short pass.

#[path = "support/mod.rs"]
mod support;

use std::rc::Rc;
use std::time::{Duration, Instant};

const FILE_SIZE: u64 = 64 << 20;
const READ: usize = 4096;
const IN_FLIGHT: usize = 32;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let value = |name: &str| support::flag::<usize>(&args, name);
    let rounds = value("--rounds").unwrap_or(if full { 5 } else { 1 });
    let reads = value("--reads").unwrap_or(if full { 200_000 } else { 5_000 });
    let path = std::env::temp_dir().join(format!("ringshard-fs-bench-{}", std::process::id()));
    let data: Vec<u8> = (0..FILE_SIZE).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &data).expect("write the file");
    drop(data);
    // Page it in.
    let _ = std::fs::read(&path).expect("read the file");
    println!(
        "random {READ}-byte reads of a cached {} MiB file, {IN_FLIGHT} in flight, {reads} per round, {rounds} rounds",
        FILE_SIZE >> 20
    );
    let kinds = ["ringshard", "tokio", "monoio"];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    for round in 0..rounds {
        for k in 0..kinds.len() {
            let k = (k + round) % kinds.len();
            let took = match kinds[k] {
                "ringshard" => ringshard_reads(&path, reads),
                "tokio" => tokio_reads(&path, reads),
                _ => monoio_reads(&path, reads),
            };
            results[k].push(reads as f64 / took.as_secs_f64());
        }
    }
    for (k, kind) in kinds.iter().enumerate() {
        let mut r = results[k].clone();
        r.sort_by(f64::total_cmp);
        println!(
            "  {kind:>9}: {:>9.0} reads/s (rounds {:.0}..{:.0})",
            r[r.len() / 2],
            r[0],
            r[r.len() - 1]
        );
    }
    let ratio = |a: usize, b: usize| {
        let mut r: Vec<f64> = results[a]
            .iter()
            .zip(&results[b])
            .map(|(x, y)| x / y)
            .collect();
        r.sort_by(f64::total_cmp);
        r
    };
    for (b, name) in [(1, "tokio"), (2, "monoio")] {
        let r = ratio(0, b);
        println!(
            "  ringshard/{name}: median {:.2} (rounds {})",
            r[r.len() / 2],
            r.iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    let _ = std::fs::remove_file(&path);
}

/// The offsets every runtime reads, the same sequence for all.
fn offsets(reads: usize) -> Vec<u64> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    (0..reads)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % (FILE_SIZE / READ as u64)) * READ as u64
        })
        .collect()
}

fn check(buf: &[u8], pos: u64) {
    assert_eq!(buf.len(), READ);
    assert_eq!(buf[0], (pos % 251) as u8, "read at {pos}");
}

fn ringshard_reads(path: &std::path::Path, reads: usize) -> Duration {
    let rt = ringshard::Runtime::builder()
        .worker_threads(1)
        .pin_threads(false)
        .build()
        .expect("runtime");
    rt.block_on(async {
        let file = Rc::new(ringshard::fs::File::open(path).await.unwrap());
        let offsets = Rc::new(offsets(reads));
        let next = Rc::new(std::cell::Cell::new(0));
        let started = Instant::now();
        let workers: Vec<_> = (0..IN_FLIGHT)
            .map(|_| {
                let (file, offsets, next) = (file.clone(), offsets.clone(), next.clone());
                ringshard::spawn(async move {
                    let mut buf = Vec::with_capacity(READ);
                    loop {
                        let i = next.get();
                        if i >= offsets.len() {
                            return;
                        }
                        next.set(i + 1);
                        let (res, back) = file.read_exact_at(buf, offsets[i]).await;
                        res.unwrap();
                        check(&back, offsets[i]);
                        buf = back;
                        buf.clear();
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await.unwrap();
        }
        started.elapsed()
    })
}

fn tokio_reads(path: &std::path::Path, reads: usize) -> Duration {
    use std::os::unix::fs::FileExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let file = std::sync::Arc::new(std::fs::File::open(path).unwrap());
        let offsets = std::sync::Arc::new(offsets(reads));
        let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = Instant::now();
        let workers: Vec<_> = (0..IN_FLIGHT)
            .map(|_| {
                let (file, offsets, next) = (file.clone(), offsets.clone(), next.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; READ];
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= offsets.len() {
                            return;
                        }
                        let pos = offsets[i];
                        let file = file.clone();
                        buf = tokio::task::spawn_blocking(move || {
                            file.read_exact_at(&mut buf, pos).unwrap();
                            buf
                        })
                        .await
                        .unwrap();
                        check(&buf, pos);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await.unwrap();
        }
        started.elapsed()
    })
}

fn monoio_reads(path: &std::path::Path, reads: usize) -> Duration {
    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .build()
        .expect("monoio runtime");
    rt.block_on(async {
        let file = Rc::new(monoio::fs::File::open(path).await.unwrap());
        let offsets = Rc::new(offsets(reads));
        let next = Rc::new(std::cell::Cell::new(0));
        let started = Instant::now();
        let workers: Vec<_> = (0..IN_FLIGHT)
            .map(|_| {
                let (file, offsets, next) = (file.clone(), offsets.clone(), next.clone());
                monoio::spawn(async move {
                    let mut buf = vec![0u8; READ];
                    loop {
                        let i = next.get();
                        if i >= offsets.len() {
                            return;
                        }
                        next.set(i + 1);
                        let (res, back) = file.read_exact_at(buf, offsets[i]).await;
                        res.unwrap();
                        check(&back, offsets[i]);
                        buf = back;
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await;
        }
        started.elapsed()
    })
}
