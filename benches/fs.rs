//! Files on one thread, ringshard (one shard) beside tokio (`current_thread`)
//! and monoio (io_uring), alternating rounds; medians, spreads and ratios.
//!
//! * `reads`: random 4 KiB positional reads from a page-cached 64 MiB file,
//!   32 in flight: ringshard's `fs::File::read_exact_at`, tokio's way to
//!   read at an offset (std's `read_exact_at` in `spawn_blocking`) and
//!   monoio's `File::read_exact_at`. Reads per second.
//! * `writes`: a new 256 MiB file written as sequential 1 MiB writes, one at
//!   a time, then `sync_all`: ringshard's and monoio's `write_all_at`,
//!   tokio's `fs::File::write_all`. MiB per second, the sync included.
//!
//! ```sh
//! taskset -c 0,1 cargo bench --bench fs -- --rounds 7 --reads 200000 [--workload reads|writes|both]
//! ```
//!
//! `--only ringshard|tokio|monoio` runs one runtime (the others print `NaN`),
//! so `valgrind --tool=callgrind` or `perf stat` counts just its work: the
//! difference of two runs with different `--reads`, divided by the
//! difference in reads, is its cost per read.
//!
//! Run without `--bench` it makes one short pass.

#[path = "support/mod.rs"]
mod support;

use std::rc::Rc;
use std::time::{Duration, Instant};

const FILE_SIZE: u64 = 64 << 20;
const READ: usize = 4096;
const IN_FLIGHT: usize = 32;

/// Sequential writes: 256 MiB as 1 MiB writes, one at a time, then `sync_all`.
const WRITE_TOTAL: usize = 256 << 20;
const WRITE: usize = 1 << 20;

const KINDS: [&str; 3] = ["ringshard", "tokio", "monoio"];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let value = |name: &str| support::flag::<usize>(&args, name);
    let rounds = value("--rounds").unwrap_or(if full { 5 } else { 1 });
    let reads = value("--reads").unwrap_or(if full { 200_000 } else { 5_000 });
    let workload = support::flag_text(&args, "--workload").unwrap_or("both");
    // One runtime only (for callgrind and perf stat, which count a process).
    let only = support::flag_text(&args, "--only");
    let dir = std::env::temp_dir();
    if workload != "writes" {
        let path = dir.join(format!("ringshard-fs-bench-{}", std::process::id()));
        let data: Vec<u8> = (0..FILE_SIZE).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).expect("write the file");
        drop(data);
        // Page it in.
        let _ = std::fs::read(&path).expect("read the file");
        println!(
            "random {READ}-byte reads of a cached {} MiB file, {IN_FLIGHT} in flight, {reads} per round, {rounds} rounds",
            FILE_SIZE >> 20
        );
        compare(rounds, only, "reads/s", |kind| {
            let took = match kind {
                "ringshard" => ringshard_reads(&path, reads),
                "tokio" => tokio_reads(&path, reads),
                _ => monoio_reads(&path, reads),
            };
            reads as f64 / took.as_secs_f64()
        });
        let _ = std::fs::remove_file(&path);
    }
    if workload != "reads" {
        // Sequential writes are short in a quick pass.
        let total = if full { WRITE_TOTAL } else { 16 << 20 };
        println!(
            "sequential {} MiB writes of a new {} MiB file, then sync_all, {rounds} rounds",
            WRITE >> 20,
            total >> 20
        );
        let path = dir.join(format!("ringshard-fs-bench-w-{}", std::process::id()));
        compare(rounds, only, "MiB/s", |kind| {
            let _ = std::fs::remove_file(&path);
            let took = match kind {
                "ringshard" => ringshard_writes(&path, total),
                "tokio" => tokio_writes(&path, total),
                _ => monoio_writes(&path, total),
            };
            let written = std::fs::read(&path).expect("read back");
            assert!(
                written.len() == total
                    && written
                        .chunks(WRITE)
                        .enumerate()
                        .all(|(i, c)| c[0] == i as u8)
            );
            (total >> 20) as f64 / took.as_secs_f64()
        });
        let _ = std::fs::remove_file(&path);
    }
}

/// Runs `measure` for every runtime in each round (the order rotating),
/// then prints medians, spreads and ringshard's ratios to the others.
fn compare(rounds: usize, only: Option<&str>, unit: &str, mut measure: impl FnMut(&str) -> f64) {
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); KINDS.len()];
    for round in 0..rounds {
        for k in 0..KINDS.len() {
            let k = (k + round) % KINDS.len();
            results[k].push(match only {
                Some(kind) if kind != KINDS[k] => f64::NAN,
                _ => measure(KINDS[k]),
            });
        }
    }
    for (k, kind) in KINDS.iter().enumerate() {
        let mut r = results[k].clone();
        r.sort_by(f64::total_cmp);
        println!(
            "  {kind:>9}: {:>9.0} {unit} (rounds {:.0}..{:.0})",
            r[r.len() / 2],
            r[0],
            r[r.len() - 1]
        );
    }
    for (b, name) in [(1, "tokio"), (2, "monoio")] {
        let mut r: Vec<f64> = results[0]
            .iter()
            .zip(&results[b])
            .map(|(x, y)| x / y)
            .collect();
        r.sort_by(f64::total_cmp);
        println!(
            "  ringshard/{name}: median {:.2} (rounds {})",
            r[r.len() / 2],
            r.iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
}

/// The `i`th 1 MiB chunk: every byte `i` (the check reads its first).
fn chunk(i: usize) -> Vec<u8> {
    vec![i as u8; WRITE]
}

fn ringshard_writes(path: &std::path::Path, total: usize) -> Duration {
    let rt = ringshard::Runtime::builder()
        .worker_threads(1)
        .pin_threads(false)
        .build()
        .expect("runtime");
    rt.block_on(async {
        let chunks: Vec<Vec<u8>> = (0..total / WRITE).map(chunk).collect();
        let started = Instant::now();
        let file = ringshard::fs::File::create(path).await.unwrap();
        for (i, buf) in chunks.into_iter().enumerate() {
            let (res, _) = file.write_all_at(buf, (i * WRITE) as u64).await;
            res.unwrap();
        }
        file.sync_all().await.unwrap();
        file.close().await.unwrap();
        started.elapsed()
    })
}

fn tokio_writes(path: &std::path::Path, total: usize) -> Duration {
    use tokio::io::AsyncWriteExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let chunks: Vec<Vec<u8>> = (0..total / WRITE).map(chunk).collect();
        let started = Instant::now();
        let mut file = tokio::fs::File::create(path).await.unwrap();
        for buf in chunks {
            file.write_all(&buf).await.unwrap();
        }
        file.sync_all().await.unwrap();
        drop(file);
        started.elapsed()
    })
}

fn monoio_writes(path: &std::path::Path, total: usize) -> Duration {
    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .build()
        .expect("monoio runtime");
    rt.block_on(async {
        let chunks: Vec<Vec<u8>> = (0..total / WRITE).map(chunk).collect();
        let started = Instant::now();
        let file = monoio::fs::File::create(path).await.unwrap();
        for (i, buf) in chunks.into_iter().enumerate() {
            let (res, _) = file.write_all_at(buf, (i * WRITE) as u64).await;
            res.unwrap();
        }
        file.sync_all().await.unwrap();
        file.close().await.unwrap();
        started.elapsed()
    })
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
