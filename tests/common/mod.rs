//! Helpers shared by the integration tests.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::time::Duration;

use ringshard::{Builder, DriverKind, DriverType, Runtime};

/// The drivers every test body runs under.
pub const DRIVERS: [DriverType; 2] = [DriverType::IoUring, DriverType::Epoll];

/// Runs `body` once per driver with a builder preset to it.
pub fn each_driver(body: impl Fn(Builder)) {
    for driver in DRIVERS {
        eprintln!("-- driver {driver:?}");
        body(Runtime::builder().driver_type(driver));
    }
}

/// A runtime with `shards` shards on `driver`, unpinned when the machine has
/// too few CPUs.
pub fn runtime(builder: Builder, shards: usize) -> Runtime {
    let pin = allowed_cpus().len() >= shards;
    let rt = builder
        .worker_threads(shards)
        .pin_threads(pin)
        .build()
        .expect("runtime");
    assert!(matches!(
        rt.driver_kind(),
        DriverKind::IoUring | DriverKind::Epoll
    ));
    rt
}

/// CPU time the calling thread has used.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The CPUs in the calling thread's affinity mask.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    assert_eq!(rc, 0);
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// The CPU the calling thread runs on now.
pub fn current_cpu() -> usize {
    // SAFETY: sched_getcpu has no arguments.
    unsafe { libc::sched_getcpu() as usize }
}
