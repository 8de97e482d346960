use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use super::{Runtime, Worker};
use crate::context;
use crate::driver::{Driver, DriverKind, DriverOptions, DriverType};
use crate::shard::{Config, Core, RuntimeShared, Shared};
use crate::sys;

/// `Builder::spin_before_park`'s default (see BENCHMARKS.md).
const DEFAULT_SPIN: Duration = Duration::from_micros(20);

/// The most shards one runtime may have.
const MAX_SHARDS: usize = 4096;
/// io_uring's limit on submission queue entries (`IORING_MAX_ENTRIES`).
const MAX_IO_ENTRIES: u32 = 32_768;
/// The longest spin before parking.
const MAX_SPIN: Duration = Duration::from_secs(1);
/// The largest initial run queue: 8 MiB of task pointers per shard. The
/// queue grows past it as needed; this only bounds what `build` allocates.
const MAX_QUEUE_SIZE: usize = 1 << 20;

/// Configures and builds a [`Runtime`].
///
/// ```
/// use std::time::Duration;
/// use ringshard::{DriverType, Runtime};
/// let rt = Runtime::builder()
///     .worker_threads(1)
///     .driver_type(DriverType::Auto)
///     .io_entries(256)
///     .queue_size(256)
///     .thread_name("my-shard")
///     .pin_threads(true)
///     .enable_parking(true)
///     .park_timeout(Duration::from_millis(100))
///     .build()?;
/// assert_eq!(rt.block_on(async { 1 + 1 }), 2);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    worker_threads: Option<usize>,
    driver_type: DriverType,
    io_entries: u32,
    buffered_reads: bool,
    buffered_writes: bool,
    multishot_accept: bool,
    queue_size: usize,
    thread_name: String,
    pin_threads: bool,
    enable_parking: bool,
    park_timeout: Option<Duration>,
    spin_before_park: Duration,
    work_stealing: bool,
    max_blocking_threads: usize,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            worker_threads: None,
            driver_type: DriverType::Auto,
            io_entries: 1024,
            buffered_reads: true,
            buffered_writes: true,
            multishot_accept: true,
            queue_size: 256,
            thread_name: "ringshard-worker".to_owned(),
            pin_threads: true,
            enable_parking: true,
            park_timeout: None,
            spin_before_park: DEFAULT_SPIN,
            work_stealing: false,
            max_blocking_threads: crate::task::blocking::DEFAULT_MAX_THREADS,
        }
    }
}

impl Builder {
    /// A builder with the defaults: one shard per CPU the process may use,
    /// `DriverType::Auto`, 1024 io entries, pinned threads, parking on.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Number of shards (threads), shard 0 being the thread that calls
    /// `block_on`. Default: the CPUs the calling thread may run on. With
    /// `pin_threads(true)` it may not exceed that number.
    pub fn worker_threads(mut self, shards: usize) -> Builder {
        self.worker_threads = Some(shards);
        self
    }

    /// Which I/O driver to use; default `Auto`.
    pub fn driver_type(mut self, driver_type: DriverType) -> Builder {
        self.driver_type = driver_type;
        self
    }

    /// Submission queue depth of each shard's ring (1..=32768; the kernel
    /// rounds it up to a power of two). The completion queue gets twice as many.
    pub fn io_entries(mut self, entries: u32) -> Builder {
        self.io_entries = entries;
        self
    }

    /// Whether stream reads on io_uring are buffered (default `true`).
    ///
    /// Buffered, each socket keeps one multishot recv armed, and the kernel
    /// fills buffers from a ring of 256 × 4 KiB per shard; a read copies
    /// from them into yours. That saves re-arming a recv per read: less CPU
    /// per request for small and medium messages (see BENCHMARKS.md), and a
    /// dropped read never loses received bytes. A socket holding 16 buffers
    /// unread has its recv paused, and when the ring runs dry reads fall
    /// back to the unbuffered path.
    ///
    /// Unbuffered (`false`), every read hands your buffer to the kernel,
    /// which writes straight into it: no copy, which can win for very large
    /// reads. Datagram sockets always read unbuffered; the readiness
    /// driver reads straight into your buffer with a syscall.
    pub fn buffered_reads(mut self, enable: bool) -> Builder {
        self.buffered_reads = enable;
        self
    }

    /// Whether a small `write_all` on io_uring (up to 4 KiB) copies its
    /// bytes into a buffer of the shard's and returns at once, its send
    /// running behind it (default `true`), as a write into a kernel socket
    /// buffer returns once the bytes are accepted.
    ///
    /// Buffered, the task goes on in the same poll instead of being woken
    /// by the send's completion only to get its buffer back: about half the
    /// task polls per request on a request-response stream, and at one
    /// connection one syscall per request instead of two (see
    /// BENCHMARKS.md). Bytes still go out in the order they were written:
    /// a socket has one such send in flight, and every later write (and a
    /// write shutdown, or the close of a dropped stream) waits for it. An
    /// error it gets (a reset) is returned by the socket's next write.
    ///
    /// Unbuffered (`false`), `write_all` returns when the kernel has sent
    /// from your buffer. Larger writes, `write` and `writev` always lend
    /// your buffer to the kernel; the readiness driver writes with a
    /// syscall, which copies into the kernel's socket buffer.
    pub fn buffered_writes(mut self, enable: bool) -> Builder {
        self.buffered_writes = enable;
        self
    }

    /// Whether listeners on io_uring keep one multishot accept armed
    /// (default `true`) instead of submitting an accept per connection: less
    /// CPU per connection (see BENCHMARKS.md). Connections accepted while
    /// nobody awaits `accept` wait for the next call (at most 64 per
    /// listener; beyond that they stay in the kernel's backlog), and the
    /// peer address comes from `getpeername`.
    pub fn multishot_accept(mut self, enable: bool) -> Builder {
        self.multishot_accept = enable;
        self
    }

    /// Initial capacity of each shard's run queue (it grows as needed):
    /// `0..=1_048_576`, a larger value is an error from `build`.
    pub fn queue_size(mut self, tasks: usize) -> Builder {
        self.queue_size = tasks;
        self
    }

    /// Name prefix of the shard threads; shard `i` is named `"{name}-{i}"`.
    pub fn thread_name(mut self, name: impl Into<String>) -> Builder {
        self.thread_name = name.into();
        self
    }

    /// Pin shard `i` to the `i`-th CPU the process may run on. Default true.
    pub fn pin_threads(mut self, pin: bool) -> Builder {
        self.pin_threads = pin;
        self
    }

    /// Park idle shards in the driver (true, the default) or keep them
    /// polling without blocking (false: lowest latency, one core burnt each).
    pub fn enable_parking(mut self, enable: bool) -> Builder {
        self.enable_parking = enable;
        self
    }

    /// The longest an idle shard stays parked before it turns its loop
    /// again. Default: no limit (it wakes for timers, I/O and remote wakes).
    pub fn park_timeout(mut self, timeout: Duration) -> Builder {
        self.park_timeout = Some(timeout);
        self
    }

    /// Let idle shards steal tasks spawned with [`spawn_stealable`] from
    /// busy ones (default false: every task stays on the shard that spawned
    /// it, as with `spawn`). Each shard keeps its stealable tasks in a
    /// `crossbeam-deque`; a shard with nothing to run steals a batch from
    /// another before it parks, and spawning wakes a parked shard to steal.
    ///
    /// [`spawn_stealable`]: crate::spawn_stealable
    pub fn work_stealing(mut self, enable: bool) -> Builder {
        self.work_stealing = enable;
        self
    }

    /// How long a shard that just received work from another shard spins,
    /// watching its inbox, before it parks in the driver. Traffic between
    /// shards then flows without a syscall or a thread wake-up per message;
    /// a shard with no cross-shard traffic never spins, and one whose spin
    /// found nothing parks at once next time. Default 20 µs; zero turns it
    /// off; at most 1 s (`build` refuses more). I/O completions are collected before the spin and after it.
    pub fn spin_before_park(mut self, spin: Duration) -> Builder {
        self.spin_before_park = spin;
        self
    }

    /// The most threads [`spawn_blocking`](crate::spawn_blocking)'s pool
    /// runs at once (default 512; at least 1). More closures wait in its
    /// queue; idle threads exit after 10 s.
    pub fn max_blocking_threads(mut self, threads: usize) -> Builder {
        self.max_blocking_threads = threads;
        self
    }

    /// Starts the shards. Bad settings and drivers that cannot start give an
    /// `io::Error` saying what is wrong.
    pub fn build(&self) -> io::Result<Runtime> {
        let cpus = sys::allowed_cpus();
        let shards = self.worker_threads.unwrap_or(cpus.len().max(1));
        self.validate(shards, &cpus)?;
        let candidates = self.candidates()?;
        let mut last_error = None;
        for (attempt, &kind) in candidates.iter().enumerate() {
            match self.start(kind, shards, &cpus) {
                Ok(runtime) => {
                    if let Some((failed, error)) = last_error {
                        eprintln!(
                            "ringshard: {failed:?} driver unavailable ({}); using {kind:?}",
                            describe(&error)
                        );
                    }
                    return Ok(runtime);
                }
                Err(error) if attempt + 1 < candidates.len() => last_error = Some((kind, error)),
                Err(error) => {
                    return Err(io::Error::new(
                        error.kind(),
                        format!(
                            "ringshard: cannot start the {kind:?} driver: {}",
                            describe(&error)
                        ),
                    ))
                }
            }
        }
        unreachable!("candidates() is never empty")
    }

    fn validate(&self, shards: usize, cpus: &[usize]) -> io::Result<()> {
        let invalid = |message: String| Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        if shards == 0 {
            return invalid("ringshard: worker_threads must be at least 1".into());
        }
        if shards > MAX_SHARDS {
            return invalid(format!(
                "ringshard: worker_threads({shards}) exceeds the limit of {MAX_SHARDS}"
            ));
        }
        if self.pin_threads && shards > cpus.len() {
            return invalid(format!(
                "ringshard: worker_threads({shards}) exceeds the {} CPUs this process may run on; \
                 use at most {} shards or set pin_threads(false)",
                cpus.len(),
                cpus.len()
            ));
        }
        if self.max_blocking_threads == 0 {
            return invalid("ringshard: max_blocking_threads must be at least 1".into());
        }
        if self.io_entries == 0 || self.io_entries > MAX_IO_ENTRIES {
            return invalid(format!(
                "ringshard: io_entries({}) must be between 1 and {MAX_IO_ENTRIES}",
                self.io_entries
            ));
        }
        if self.spin_before_park > MAX_SPIN {
            return invalid(format!(
                "ringshard: spin_before_park({:?}) exceeds {MAX_SPIN:?}; a spin is meant to be \
                 short (to never park, use enable_parking(false))",
                self.spin_before_park
            ));
        }
        if self.queue_size > MAX_QUEUE_SIZE {
            return invalid(format!(
                "ringshard: queue_size({}) exceeds the limit of {MAX_QUEUE_SIZE} (it is only the \
                 run queue's initial capacity: the queue grows as needed)",
                self.queue_size
            ));
        }
        if self.thread_name.contains('\0') {
            return invalid("ringshard: thread_name must not contain a NUL byte".into());
        }
        Ok(())
    }

    /// The drivers to try, in order.
    fn candidates(&self) -> io::Result<Vec<DriverKind>> {
        let readiness = if cfg!(target_os = "linux") {
            DriverKind::Epoll
        } else {
            DriverKind::Kqueue
        };
        let unsupported = |what: &str| {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("ringshard: the {what} driver is not available on this platform"),
            ))
        };
        match self.driver_type {
            DriverType::Auto => match std::env::var("RINGSHARD_DRIVER").as_deref() {
                Ok("uring" | "io_uring" | "iouring") => Ok(vec![DriverKind::IoUring]),
                Ok("epoll" | "kqueue" | "poll") => Ok(vec![readiness]),
                Ok(other) if !other.is_empty() => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("ringshard: RINGSHARD_DRIVER={other:?} is not one of uring, epoll"),
                )),
                _ if cfg!(target_os = "linux") => Ok(vec![DriverKind::IoUring, readiness]),
                _ => Ok(vec![readiness]),
            },
            DriverType::IoUring if cfg!(target_os = "linux") => Ok(vec![DriverKind::IoUring]),
            DriverType::IoUring => unsupported("io_uring"),
            DriverType::Epoll if readiness == DriverKind::Epoll => Ok(vec![readiness]),
            DriverType::Epoll => unsupported("epoll"),
            DriverType::Kqueue if readiness == DriverKind::Kqueue => Ok(vec![readiness]),
            DriverType::Kqueue => unsupported("kqueue"),
        }
    }

    fn driver_options(&self) -> DriverOptions {
        DriverOptions {
            entries: self.io_entries,
            buffered_reads: self.buffered_reads,
            buffered_writes: self.buffered_writes,
            multishot_accept: self.multishot_accept,
        }
    }

    fn config(&self) -> Config {
        Config {
            queue_size: self.queue_size,
            enable_parking: self.enable_parking,
            park_timeout: self.park_timeout,
            spin: self.spin_before_park,
            work_stealing: self.work_stealing,
        }
    }

    /// Creates shard 0's driver here and starts shards 1.. on their threads,
    /// each creating its own driver (a SINGLE_ISSUER ring belongs to the
    /// thread that made it).
    fn start(&self, kind: DriverKind, shards: usize, cpus: &[usize]) -> io::Result<Runtime> {
        let (driver, unparker) = Driver::new(kind, self.driver_options())?;
        let features_off = driver.features_off();
        let mut all = vec![Arc::new(Shared::new(0, unparker))];
        let (done_tx, done) = mpsc::channel();
        let mut workers = Vec::with_capacity(shards - 1);
        let mut failure = None;
        for index in 1..shards {
            let (ready_tx, ready_rx) = mpsc::channel();
            let (start_tx, start_rx) = mpsc::channel();
            let spawned = thread::Builder::new()
                .name(format!("{}-{index}", self.thread_name))
                .spawn({
                    let cpu = cpus.get(index).copied().filter(|_| self.pin_threads);
                    let (options, config, done_tx) =
                        (self.driver_options(), self.config(), done_tx.clone());
                    move || {
                        worker_main(
                            index, kind, options, cpu, config, ready_tx, start_rx, done_tx,
                        )
                    }
                });
            let thread = match spawned {
                Ok(thread) => thread,
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            };
            match ready_rx.recv() {
                Ok(Ok(shared)) => {
                    all.push(shared);
                    workers.push(Worker {
                        thread: Some(thread),
                        start: Some(start_tx),
                    });
                }
                Ok(Err(error)) => {
                    failure = Some(error);
                    let _ = thread.join();
                    break;
                }
                Err(_) => {
                    failure = Some(io::Error::other(format!(
                        "ringshard: shard {index} died while starting"
                    )));
                    let _ = thread.join();
                    break;
                }
            }
        }
        if let Some(error) = failure {
            // Dropping the start senders tells the started workers to exit.
            for worker in workers {
                drop(worker.start);
                if let Some(thread) = worker.thread {
                    let _ = thread.join();
                }
            }
            return Err(error);
        }
        let shared = Arc::new(RuntimeShared::new(
            all,
            self.max_blocking_threads,
            cpus.to_vec(),
        ));
        for worker in &mut workers {
            if let Some(start) = worker.start.take() {
                let _ = start.send(shared.clone());
            }
        }
        let core = Core::new(
            shared.shards[0].clone(),
            shared.clone(),
            driver,
            self.config(),
        );
        if !features_off.is_empty() {
            eprintln!(
                "ringshard: this kernel lacks {}; io_uring runs without (see Runtime's Debug)",
                features_off.join(", ")
            );
        }
        let mut runtime = Runtime::from_parts(
            shared,
            core,
            workers,
            done,
            kind,
            self.pin_threads.then(|| cpus[0]),
        );
        runtime.features_off = features_off;
        Ok(runtime)
    }
}

/// The body of shard `index`'s thread.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site, all plain settings"
)]
fn worker_main(
    index: usize,
    kind: DriverKind,
    options: DriverOptions,
    cpu: Option<usize>,
    config: Config,
    ready: mpsc::Sender<io::Result<Arc<Shared>>>,
    start: mpsc::Receiver<Arc<RuntimeShared>>,
    done: mpsc::Sender<usize>,
) {
    if let Some(cpu) = cpu {
        if let Err(error) = sys::pin_current_thread(cpu) {
            let _ = ready.send(Err(error));
            return;
        }
    }
    let (driver, unparker) = match Driver::new(kind, options) {
        Ok(created) => created,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    let shared = Arc::new(Shared::new(index, unparker));
    if ready.send(Ok(shared.clone())).is_err() {
        return;
    }
    let Ok(runtime) = start.recv() else {
        return;
    };
    let core = Core::new(shared, runtime.clone(), driver, config);
    {
        let _enter = context::enter(&core);
        // Task panics are caught per task; one that escapes the loop (a
        // user's waker panicking as a timer fires it, say) ends the loop,
        // and the shard shuts down as if asked: its tasks are dropped
        // (their handles say cancelled) and it is marked closed, so work
        // sent to it fails instead of waiting in an inbox nobody drains.
        let ran = panic::catch_unwind(AssertUnwindSafe(|| core.run_worker()));
        if let Err(panic) = &ran {
            eprintln!(
                "ringshard: shard {index} stopped: its loop panicked ({}); its tasks are cancelled",
                panic_message(panic)
            );
        }
        let deadline = runtime
            .deadline
            .get()
            .copied()
            .unwrap_or_else(|| std::time::Instant::now() + Duration::from_secs(1));
        let shutdown = panic::catch_unwind(AssertUnwindSafe(|| core.shutdown(deadline)));
        if shutdown.is_err() {
            // Whatever is left is leaked; the shard must still read closed.
            core.shared.close();
        }
    }
    let _ = done.send(index);
}

/// The text of a panic's payload, when it has one.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    match panic.downcast_ref::<&str>() {
        Some(message) => message,
        None => panic
            .downcast_ref::<String>()
            .map_or("no message", String::as_str),
    }
}

/// Names the usual causes of a driver that cannot start, and their fixes.
fn describe(error: &io::Error) -> String {
    let hint = match error.raw_os_error() {
        Some(libc::EPERM) => {
            " (io_uring_setup is forbidden, usually by a container's seccomp profile or \
             kernel.io_uring_disabled; allow it or use DriverType::Epoll)"
        }
        Some(libc::ENOSYS) => " (this kernel has no io_uring; use DriverType::Epoll)",
        Some(libc::ENOMEM) => {
            " (RLIMIT_MEMLOCK too low for the ring; raise `ulimit -l` or lower io_entries)"
        }
        Some(libc::EINVAL) => " (this kernel rejects the ring setup; it may be too old)",
        _ => "",
    };
    format!("{error}{hint}")
}
