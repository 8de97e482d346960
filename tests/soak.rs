//! The soak's 20-second form (`examples/soak`): connection churn, mixed
//! sizes, timers being reset, cross-shard channel traffic; after the
//! warm-up, live heap bytes and open fds stay flat, and no echo fails.

#[path = "../examples/soak/alloc.rs"]
mod alloc;
#[path = "../examples/soak/echo.rs"]
mod echo;
#[path = "../examples/soak/soak.rs"]
mod soak;

use std::time::Duration;

#[global_allocator]
static HEAP: alloc::Tracking = alloc::Tracking;

/// One test, both drivers in turn: the tracking allocator counts the
/// whole process.
#[test]
fn twenty_seconds_of_churn_keep_memory_and_fds_flat() {
    for driver in [ringshard::DriverType::IoUring, ringshard::DriverType::Epoll] {
        eprintln!("-- driver {driver:?}");
        soak_flat(driver);
    }
}

fn soak_flat(driver: ringshard::DriverType) {
    let config = soak::Config {
        duration: Duration::from_secs(20),
        report_every: Duration::from_secs(2),
        shards: 2,
        clients: 8,
        driver,
    };
    let samples = soak::run(&config, |sample| eprintln!("{sample}")).expect("soak");
    assert_eq!(samples.len(), 10);
    // Warm-up: the first 4 s (buffers, slabs and queues reach their size).
    let (early, late) = samples[2..].split_at(4);
    let peak =
        |part: &[soak::Sample], f: fn(&soak::Sample) -> usize| part.iter().map(f).max().unwrap();
    let (early_bytes, late_bytes) = (peak(early, |s| s.live_bytes), peak(late, |s| s.live_bytes));
    let (early_fds, late_fds) = (peak(early, |s| s.fds), peak(late, |s| s.fds));
    eprintln!(
        "peak live bytes {early_bytes} then {late_bytes}; peak fds {early_fds} then {late_fds}"
    );
    assert!(
        late_bytes <= early_bytes + early_bytes / 4 + (1 << 20),
        "live bytes grew: {early_bytes} -> {late_bytes}"
    );
    assert!(
        late_fds <= early_fds + 16,
        "fds grew: {early_fds} -> {late_fds}"
    );
    let last = samples.last().unwrap();
    assert!(
        last.connections > 100 && last.echoes > 100 && last.messages > 1000,
        "{last}"
    );
    assert!(last.timer_resets > 1000, "{last}");
}
