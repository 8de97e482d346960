//! Helpers shared by the integration tests.

#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod canary;
pub mod proxy;

/// The echo server loop of the network tests (shared with the soak).
#[path = "../../examples/soak/echo.rs"]
mod echo_loop;
#[allow(unused_imports, reason = "each test binary uses a different subset")]
pub use echo_loop::echo;

use std::time::Duration;

use ringshard::{Builder, DriverKind, DriverType, Runtime};

/// The drivers every test body runs under.
pub const DRIVERS: [DriverType; 2] = [DriverType::IoUring, DriverType::Epoll];

/// Runs `body` once per driver with a builder preset to it, and once more on
/// io_uring with one-shot ops ([`one_shot`]: the kernel writing into the
/// caller's buffers, the path most of the cancel contract is about).
pub fn each_driver(body: impl Fn(Builder)) {
    // `RINGSHARD_TEST_DRIVERS=epoll` (or `uring`) keeps one: valgrind, say,
    // cannot follow io_uring (scripts/sanitize.sh).
    let only = std::env::var("RINGSHARD_TEST_DRIVERS").unwrap_or_default();
    for driver in DRIVERS {
        let name = if driver == DriverType::IoUring {
            "uring"
        } else {
            "epoll"
        };
        if !only.is_empty() && !only.split(',').any(|keep| keep == name) {
            continue;
        }
        eprintln!("-- driver {driver:?}");
        body(Runtime::builder().driver_type(driver));
        if driver == DriverType::IoUring {
            eprintln!("-- driver {driver:?}, one-shot ops");
            body(one_shot(Runtime::builder().driver_type(driver)));
        }
    }
}

/// `builder` with io_uring's multishot ops off: unbuffered reads, one
/// accept SQE per connection.
pub fn one_shot(builder: Builder) -> Builder {
    builder.buffered_reads(false).multishot_accept(false)
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

/// Serializes the tests of one binary that count open fds (any test that
/// opens sockets would disturb another's count).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Open fds of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// Waits (up to 5 s) for the fd count to fall back to `baseline`, then
/// asserts it did: closes may complete a turn after the last drop.
pub fn assert_fds_return_to(baseline: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while fd_count() > baseline && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if fd_count() != baseline {
        let open: Vec<String> = std::fs::read_dir("/proc/self/fd")
            .expect("/proc/self/fd")
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .map(|target| target.display().to_string())
            .collect();
        panic!(
            "fds leaked: {} open, {baseline} before: {open:?}",
            fd_count()
        );
    }
}

/// Raises the soft open-file limit to the hard limit, and checks at least
/// `needed` fds fit.
pub fn raise_fd_limit(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit to fill.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: `limit` is a valid rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    assert!(
        limit.rlim_cur >= needed,
        "this test needs {needed} fds; the hard limit is {}",
        limit.rlim_cur
    );
}

/// Polls `future` exactly once.
pub async fn poll_once<F: std::future::Future + Unpin>(
    future: &mut F,
) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut *future).poll(cx)))
        .await
}

/// A deterministic pseudo-random generator (xorshift), so failures replay.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// 128 KiB of pseudo-random bytes; messages are slices of it, so checking a
/// message is one memcmp.
pub fn pattern() -> &'static [u8] {
    static PATTERN: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    PATTERN.get_or_init(|| {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        (0..128 * 1024).map(|_| rng.next() as u8).collect()
    })
}

/// The path of example `name`, built (with `features`) if this test run did
/// not build it (`cargo test` builds the examples its features allow).
pub fn example(name: &str, features: &[&str]) -> std::path::PathBuf {
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .to_path_buf();
    let path = dir.join("examples").join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        build.args(["build", "--example", name]);
        if !features.is_empty() {
            build.args(["--features", &features.join(",")]);
        }
        if dir.ends_with("release") {
            build.arg("--release");
        }
        // Into this test's own target directory (scripts/sanitize.sh uses
        // others), and for an explicit target if it was built for one.
        let mut target_dir = dir.parent().unwrap();
        let triple = target_dir.file_name().and_then(|n| n.to_str());
        if let Some(triple) = triple.filter(|t| t.contains("-linux")) {
            build.args(["--target", triple]);
            target_dir = target_dir.parent().unwrap();
        }
        build.arg("--target-dir").arg(target_dir);
        assert!(build.status().unwrap().success(), "building example {name}");
        assert!(path.exists(), "example {name} is not at {}", path.display());
    }
    path
}

/// Waits (up to 10 s) until something accepts connections on `addr`: a
/// child server prints its banner before its shards have bound.
pub fn wait_listening(addr: impl std::net::ToSocketAddrs + Copy) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(std::time::Instant::now() < deadline, "nothing listens");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `body` on a one-shard runtime with `other = 0`, then on two
/// shards with `other = 1`: the shard a scenario's other side runs on
/// (the parity tests).
pub fn one_and_two_shards<F, Fut>(body: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for shards in [1, 2] {
        eprintln!("-- {shards} shard(s)");
        let rt = runtime(Runtime::builder(), shards);
        rt.block_on(body(shards - 1));
    }
}

/// Runs `body` on a one-shard runtime, then on shard 1 of two.
pub fn on_one_then_second_shard<F, Fut>(body: F)
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    for shards in [1, 2] {
        eprintln!("-- {shards} shard(s)");
        let rt = runtime(Runtime::builder(), shards);
        let body = body.clone();
        rt.block_on(async move {
            ringshard::spawn_on(ringshard::ShardId::new(shards - 1), body)
                .await
                .unwrap();
        });
    }
}
