//! Unix signals by kind: [`signal`] makes a [`Signal`] listener.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use slab::Slab;

/// A signal number, as tokio's `SignalKind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SignalKind(libc::c_int);

impl SignalKind {
    /// Any signal number (`SignalKind::from_raw(libc::SIGWINCH)`).
    pub const fn from_raw(signum: libc::c_int) -> SignalKind {
        SignalKind(signum)
    }

    /// The signal number.
    pub const fn as_raw_value(&self) -> libc::c_int {
        self.0
    }

    /// SIGINT (Ctrl-C).
    pub const fn interrupt() -> SignalKind {
        SignalKind(libc::SIGINT)
    }

    /// SIGTERM (what `kill` and service managers send).
    pub const fn terminate() -> SignalKind {
        SignalKind(libc::SIGTERM)
    }

    /// SIGHUP.
    pub const fn hangup() -> SignalKind {
        SignalKind(libc::SIGHUP)
    }

    /// SIGQUIT.
    pub const fn quit() -> SignalKind {
        SignalKind(libc::SIGQUIT)
    }

    /// SIGALRM.
    pub const fn alarm() -> SignalKind {
        SignalKind(libc::SIGALRM)
    }

    /// SIGCHLD.
    pub const fn child() -> SignalKind {
        SignalKind(libc::SIGCHLD)
    }

    /// SIGPIPE.
    pub const fn pipe() -> SignalKind {
        SignalKind(libc::SIGPIPE)
    }

    /// SIGUSR1.
    pub const fn user_defined1() -> SignalKind {
        SignalKind(libc::SIGUSR1)
    }

    /// SIGUSR2.
    pub const fn user_defined2() -> SignalKind {
        SignalKind(libc::SIGUSR2)
    }

    /// SIGWINCH.
    pub const fn window_change() -> SignalKind {
        SignalKind(libc::SIGWINCH)
    }
}

/// Signal numbers we keep state for (Linux has 64, the BSDs 32).
const SIGNALS: usize = 65;

/// One signal's state, for the whole process.
struct Slot {
    /// Deliveries counted so far.
    deliveries: AtomicU64,
    /// Set by the handler, taken by the dispatcher.
    pending: AtomicBool,
    /// The handler is installed.
    installed: AtomicBool,
    /// The listeners waiting for the next delivery.
    wakers: Mutex<Slab<Waker>>,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            deliveries: AtomicU64::new(0),
            pending: AtomicBool::new(false),
            installed: AtomicBool::new(false),
            wakers: Mutex::new(Slab::new()),
        }
    }

    fn wakers(&self) -> std::sync::MutexGuard<'_, Slab<Waker>> {
        self.wakers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

static SLOTS: [Slot; SIGNALS] = [const { Slot::new() }; SIGNALS];

/// The self-pipe's write end (-1 until the dispatcher runs).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

/// Serializes installing handlers and starting the dispatcher.
static INSTALL: Mutex<()> = Mutex::new(());

/// The signal handler: async-signal-safe (atomics and `write` only).
extern "C" fn handler(signum: libc::c_int) {
    let Some(slot) = usize::try_from(signum).ok().and_then(|n| SLOTS.get(n)) else {
        return;
    };
    slot.pending.store(true, Ordering::SeqCst);
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // `write` may set errno, which the interrupted code may be reading.
        let saved = io::Error::last_os_error().raw_os_error();
        let byte = 1u8;
        // SAFETY: `write` is async-signal-safe; one byte from a local. A
        // full pipe (EAGAIN: the write end is non-blocking) is fine: a byte
        // already waits there and the flag is set.
        let _ = unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
        if let Some(errno) = saved {
            set_errno(errno);
        }
    }
}

#[cfg(target_os = "linux")]
fn set_errno(errno: libc::c_int) {
    // SAFETY: `__errno_location` returns this thread's errno slot.
    unsafe { *libc::__errno_location() = errno };
}

#[cfg(not(target_os = "linux"))]
fn set_errno(errno: libc::c_int) {
    // SAFETY: `__error` returns this thread's errno slot.
    unsafe { *libc::__error() = errno };
}

/// Starts the dispatcher thread and its pipe, once (under `INSTALL`).
fn start_dispatcher() -> io::Result<()> {
    if WAKE_FD.load(Ordering::SeqCst) >= 0 {
        return Ok(());
    }
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `pipe2` writes two fds into the array.
    #[cfg(target_os = "linux")]
    let made = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    // SAFETY: as above; CLOEXEC is set right after (no pipe2 here).
    #[cfg(not(target_os = "linux"))]
    let made = unsafe { libc::pipe(fds.as_mut_ptr()) };
    if made < 0 {
        return Err(io::Error::last_os_error());
    }
    let [read, write] = fds;
    #[cfg(not(target_os = "linux"))]
    for fd in fds {
        // SAFETY: plain fcntls on the fds just made.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // SAFETY: as above; only the handler's end is non-blocking.
    unsafe { libc::fcntl(write, libc::F_SETFL, libc::O_NONBLOCK) };
    let spawned = std::thread::Builder::new()
        .name("ringshard-signal".into())
        .spawn(move || dispatch(read));
    if let Err(error) = spawned {
        for fd in fds {
            // SAFETY: closes the fds made above, which nothing else holds.
            unsafe { libc::close(fd) };
        }
        return Err(error);
    }
    WAKE_FD.store(write, Ordering::SeqCst);
    Ok(())
}

/// The dispatcher: on every byte, counts each pending signal once and wakes
/// its listeners. Runs for the rest of the process; should its pipe fail
/// (closed under us by a close-every-fd routine, say), it gives every
/// signal it handled back its default action rather than swallow them.
fn dispatch(read: RawFd) {
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: reads into a local buffer of the size passed.
        let n = unsafe { libc::read(read, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            let error = io::Error::last_os_error();
            if n < 0 && error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            restore_defaults();
            eprintln!("ringshard: the signal pipe failed ({error}); signals have their default action again");
            return;
        }
        for slot in &SLOTS {
            if slot.pending.swap(false, Ordering::SeqCst) {
                slot.deliveries.fetch_add(1, Ordering::SeqCst);
                // Woken outside the lock: a waker may poll or drop a
                // `Signal`. One that panics does not end the dispatcher.
                let wakers: Vec<Waker> = slot.wakers().iter().map(|(_, w)| w.clone()).collect();
                for waker in wakers {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| waker.wake()));
                }
            }
        }
    }
}

/// Gives every signal with our handler its default action back.
fn restore_defaults() {
    for (signum, slot) in SLOTS.iter().enumerate() {
        if slot.installed.load(Ordering::Acquire) {
            // SAFETY: an all-zero sigaction with SIG_DFL is valid.
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = libc::SIG_DFL;
            // SAFETY: restores the default action, no pointers kept.
            unsafe { libc::sigaction(signum as libc::c_int, &action, std::ptr::null_mut()) };
        }
    }
}

/// Installs the handler for `signum` (once per process).
fn install(signum: libc::c_int) -> io::Result<&'static Slot> {
    const FORBIDDEN: [libc::c_int; 6] = [
        libc::SIGKILL,
        libc::SIGSTOP,
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
    ];
    let slot = usize::try_from(signum)
        .ok()
        .filter(|&n| n > 0)
        .and_then(|n| SLOTS.get(n))
        .filter(|_| !FORBIDDEN.contains(&signum))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("ringshard::signal: signal {signum} cannot be listened for"),
            )
        })?;
    if slot.installed.load(Ordering::Acquire) {
        return Ok(slot);
    }
    let _guard = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    if slot.installed.load(Ordering::Acquire) {
        return Ok(slot);
    }
    start_dispatcher()?;
    // SAFETY: an all-zero sigaction is valid; the fields are set below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler as extern "C" fn(libc::c_int) as libc::sighandler_t;
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: `sa_mask` is a valid sigset inside `action`.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: installs a handler that is async-signal-safe (see `handler`).
    if unsafe { libc::sigaction(signum, &action, std::ptr::null_mut()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    slot.installed.store(true, Ordering::Release);
    Ok(slot)
}

/// Listens for `kind`: installs ringshard's handler for it on first use
/// (the process keeps the default disposition until then). Works on any
/// shard or plain thread. A handler installed before by other code is
/// replaced, not chained to (tokio's, through signal-hook, chains).
///
/// # Errors
///
/// `InvalidInput` for a signal that cannot be handled (SIGKILL, SIGSTOP)
/// or must not be (SIGSEGV, SIGBUS, SIGILL, SIGFPE), or a number out of
/// range; the OS error if the handler or the dispatcher cannot be set up.
///
/// ```no_run
/// use ringshard::signal::unix::{signal, SignalKind};
/// # let rt = ringshard::Runtime::builder().worker_threads(1).build()?;
/// rt.block_on(async {
///     let mut term = signal(SignalKind::terminate())?;
///     term.recv().await;
///     println!("SIGTERM: draining");
///     Ok::<(), std::io::Error>(())
/// })?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn signal(kind: SignalKind) -> io::Result<Signal> {
    let slot = install(kind.0)?;
    Ok(Signal {
        slot,
        seen: slot.deliveries.load(Ordering::SeqCst),
        key: None,
    })
}

/// A listener for one signal, from [`signal`]. `Send` and `Sync`.
#[derive(Debug)]
pub struct Signal {
    slot: &'static Slot,
    /// Deliveries this listener has reported.
    seen: u64,
    /// Its waker's entry in the slot, while it waits.
    key: Option<usize>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("deliveries", &self.deliveries.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Signal {
    /// Waits for the next delivery after the last one this listener saw
    /// (or after its creation). Deliveries in between coalesce into one.
    /// Never returns `None` (the handler stays for the process's life); the
    /// `Option` is tokio's signature.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a delivery is only marked seen when `recv` returns it.
    pub async fn recv(&mut self) -> Option<()> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The poll form of [`recv`](Signal::recv).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<()>> {
        if self.take() {
            return Poll::Ready(Some(()));
        }
        {
            let mut wakers = self.slot.wakers();
            match self.key.and_then(|key| wakers.get_mut(key)) {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                Some(waker) => *waker = cx.waker().clone(),
                None => self.key = Some(wakers.insert(cx.waker().clone())),
            }
        }
        // A delivery counted before the waker was in the slab was not
        // woken for: look again.
        if self.take() {
            return Poll::Ready(Some(()));
        }
        Poll::Pending
    }

    /// Marks the deliveries so far seen; whether there were new ones.
    fn take(&mut self) -> bool {
        let deliveries = self.slot.deliveries.load(Ordering::SeqCst);
        if deliveries == self.seen {
            return false;
        }
        self.seen = deliveries;
        if let Some(key) = self.key.take() {
            self.slot.wakers().try_remove(key);
        }
        true
    }
}

impl Drop for Signal {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.slot.wakers().try_remove(key);
        }
    }
}
