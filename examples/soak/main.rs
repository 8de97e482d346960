//! A soak run: connection churn with verified echoes of 64 B to 64 KiB,
//! timers being reset and cross-shard channel traffic, on every shard;
//! live heap bytes (a tracking allocator), open fds and the ops the
//! drivers hold are printed every 10 s. After the warm-up they should stay
//! flat.
//!
//! `cargo run --release --example soak -- --minutes 60` (an hour; the
//! 20-second form runs in `cargo test` as `tests/soak.rs`).
//! `--seconds N` for a shorter run, `--shards N`, `--clients N` per shard,
//! `--epoll` for the readiness driver.

mod alloc;
mod echo;
mod soak;

use std::io;
use std::time::Duration;

#[global_allocator]
static HEAP: alloc::Tracking = alloc::Tracking;

fn main() -> io::Result<()> {
    let mut config = soak::Config {
        duration: Duration::from_secs(60),
        report_every: Duration::from_secs(10),
        shards: 2,
        clients: 16,
        driver: ringshard::DriverType::Auto,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--epoll" {
            config.driver = ringshard::DriverType::Epoll;
            continue;
        }
        let value: u64 = args
            .next()
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| invalid(format!("{flag} needs a number")))?;
        match flag.as_str() {
            "--minutes" => config.duration = Duration::from_secs(value * 60),
            "--seconds" => config.duration = Duration::from_secs(value),
            "--shards" => config.shards = value as usize,
            "--clients" => config.clients = value as usize,
            _ => return Err(invalid(format!("unknown flag {flag}; use --minutes N, --seconds N, --shards N, --clients N, --epoll"))),
        }
    }
    println!(
        "soak: {:?}, {} shards, {} clients per shard, {:?} driver, a sample every {:?}",
        config.duration, config.shards, config.clients, config.driver, config.report_every
    );
    let samples = soak::run(&config, |sample| println!("{sample}"))?;
    let after_warmup = &samples[samples.len().min(1)..];
    if let (Some(first), Some(last)) = (after_warmup.first(), after_warmup.last()) {
        println!(
            "after warm-up: live bytes {} -> {}, fds {} -> {}",
            first.live_bytes, last.live_bytes, first.fds, last.fds
        );
    }
    Ok(())
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}
