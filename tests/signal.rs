//! Signals (SPEC §7): every listener on every shard sees every delivery;
//! a listener made on a plain thread works too; `ctrl_c` resolves on
//! SIGINT; the default disposition stays until the first listener.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ringshard::signal::unix::{signal, SignalKind};
use ringshard::ShardId;

/// Sends `signum` to this process.
fn raise(signum: libc::c_int) {
    // SAFETY: kill with our own pid has no memory arguments.
    assert_eq!(unsafe { libc::kill(libc::getpid(), signum) }, 0);
}

/// The handler currently installed for `signum`.
fn disposition(signum: libc::c_int) -> libc::sighandler_t {
    // SAFETY: an all-zero sigaction is valid output storage.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: queries only (no new action).
    assert_eq!(
        unsafe { libc::sigaction(signum, std::ptr::null(), &mut old) },
        0
    );
    old.sa_sigaction
}

/// Raises `signum` every 50 ms until `done` (the listeners may not all be
/// waiting yet at the first one; deliveries coalesce).
fn keep_raising(signum: libc::c_int, done: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut sent = 0;
        while !done.load(Ordering::SeqCst) && sent < 200 {
            raise(signum);
            sent += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        sent
    })
}

#[test]
fn sigterm_reaches_a_listener_on_each_of_two_shards() {
    common::each_driver(|builder| {
        let rt = common::runtime(builder, 2);
        let ready = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let raiser = {
            let (ready, done) = (ready.clone(), done.clone());
            std::thread::spawn(move || {
                while ready.load(Ordering::SeqCst) < 2 {
                    std::thread::sleep(Duration::from_millis(1));
                }
                keep_raising(libc::SIGTERM, done).join().unwrap()
            })
        };
        let got = rt.block_on_all(move |shard: ShardId| {
            let ready = ready.clone();
            async move {
                let mut term = signal(SignalKind::terminate()).unwrap();
                ready.fetch_add(1, Ordering::SeqCst);
                ringshard::timeout(Duration::from_secs(10), term.recv())
                    .await
                    .map(|got| (shard.index(), got))
            }
        });
        done.store(true, Ordering::SeqCst);
        let sent = raiser.join().unwrap();
        assert!(sent > 0);
        let got: Vec<_> = got
            .into_iter()
            .map(|r| r.expect("no SIGTERM within 10 s"))
            .collect();
        assert_eq!(got, vec![(0, Some(())), (1, Some(()))]);
    });
}

#[test]
fn ctrl_c_resolves_on_sigint_and_every_waiter_sees_it() {
    let rt = common::runtime(ringshard::Runtime::builder(), 1);
    // The handler is in place before the first SIGINT (until a listener
    // exists, SIGINT keeps its default: the end of this process).
    let _installed = signal(SignalKind::interrupt()).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let raiser = keep_raising(libc::SIGINT, done.clone());
    rt.block_on(async {
        let a = ringshard::spawn(ringshard::signal::ctrl_c());
        let b = ringshard::spawn(ringshard::signal::ctrl_c());
        for waiter in [a, b] {
            ringshard::timeout(Duration::from_secs(10), waiter)
                .await
                .expect("Ctrl-C within 10 s")
                .unwrap()
                .unwrap();
        }
    });
    done.store(true, Ordering::SeqCst);
    raiser.join().unwrap();
}

/// Each delivery is one `recv` (deliveries that come while nobody looks
/// coalesce); a listener on a plain thread, outside any runtime, works.
#[test]
fn deliveries_count_and_a_plain_thread_listens_too() {
    let mut usr1 = signal(SignalKind::user_defined1()).unwrap();
    let rt = common::runtime(ringshard::Runtime::builder(), 1);
    rt.block_on(async {
        for _ in 0..3 {
            raise(libc::SIGUSR1);
            ringshard::timeout(Duration::from_secs(10), usr1.recv())
                .await
                .expect("one delivery per raise")
                .unwrap();
        }
        // Nothing more was sent: nothing more arrives.
        assert!(ringshard::timeout(Duration::from_millis(100), usr1.recv())
            .await
            .is_err());
    });
    // A listener polled by a plain (non-runtime) executor.
    let mut usr1 = signal(SignalKind::user_defined1()).unwrap();
    let waiter = std::thread::spawn(move || {
        let waker = std::task::Waker::from(Arc::new(ThreadWaker(std::thread::current())));
        let mut cx = std::task::Context::from_waker(&waker);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if usr1.poll_recv(&mut cx).is_ready() {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::park_timeout(Duration::from_millis(100));
        }
    });
    std::thread::sleep(Duration::from_millis(50));
    raise(libc::SIGUSR1);
    assert!(waiter.join().unwrap(), "the plain thread saw the delivery");
}

struct ThreadWaker(std::thread::Thread);

impl std::task::Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

#[test]
fn the_default_disposition_stays_until_the_first_listener() {
    assert_eq!(disposition(libc::SIGUSR2), libc::SIG_DFL);
    let listener = signal(SignalKind::user_defined2()).unwrap();
    assert_ne!(disposition(libc::SIGUSR2), libc::SIG_DFL);
    drop(listener);
}

#[test]
fn signals_that_cannot_be_handled_are_clear_errors() {
    for signum in [libc::SIGKILL, libc::SIGSTOP, libc::SIGSEGV, 0, -1, 1000] {
        let error = signal(SignalKind::from_raw(signum)).expect_err("refused");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{signum}");
    }
}

/// The `graceful_shutdown` example under SIGTERM: it stops accepting at
/// once, an open connection keeps echoing and finishes, one left open is
/// cut at the grace deadline, and the process exits 0.
#[test]
fn the_graceful_shutdown_example_drains_on_sigterm() {
    use std::io::{BufRead, Read, Write};
    for driver in ["uring", "epoll"] {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = std::process::Command::new(common::example("graceful_shutdown", &[]))
            .args(["--shards", "2", "--port", &port.to_string(), "--grace", "2"])
            .env("RINGSHARD_DRIVER", driver)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(server.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(line.starts_with("echo server on"), "{line:?}");
        let echo = |stream: &mut std::net::TcpStream, text: &[u8]| {
            stream.write_all(text).unwrap();
            let mut back = vec![0; text.len()];
            stream.read_exact(&mut back).unwrap();
            assert_eq!(back, text);
        };
        let addr = ("127.0.0.1", port);
        common::wait_listening(addr);
        // Two connections per shard at least: connect until both shards
        // hold one that echoes (reuseport spreads them).
        let mut open: Vec<std::net::TcpStream> = (0..4)
            .map(|_| {
                let mut stream = std::net::TcpStream::connect(addr).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                echo(&mut stream, b"hello");
                stream
            })
            .collect();
        // SAFETY: kill has no memory arguments.
        assert_eq!(unsafe { libc::kill(server.id() as i32, libc::SIGTERM) }, 0);
        let started = std::time::Instant::now();
        // The listeners close: new connections are refused.
        let mut refused = false;
        while started.elapsed() < Duration::from_secs(2) {
            if std::net::TcpStream::connect(addr).is_err() {
                refused = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(refused, "{driver}: still accepting after SIGTERM");
        // The open ones still echo; two finish, two stay open to the end.
        for stream in &mut open {
            echo(stream, b"still here");
        }
        open.truncate(2);
        let status = server.wait().unwrap();
        assert!(status.success(), "{driver}: exit {status}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(2),
            "the grace was kept: {waited:?}"
        );
        assert!(waited < Duration::from_secs(10), "{waited:?}");
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).unwrap();
        // "a shard closed: N connections finished in the drain, M aborted"
        let count = |what: &str, back: usize| -> usize {
            rest.lines()
                .filter_map(|l| {
                    let words: Vec<&str> = l.split_whitespace().collect();
                    let i = words.iter().position(|w| *w == what)?;
                    words.get(i.checked_sub(back)?)?.parse::<usize>().ok()
                })
                .sum()
        };
        // Probes that connected before the listeners closed finish too.
        assert!(count("finished", 2) >= 2, "{driver}: {rest}");
        assert_eq!(count("aborted", 1), 2, "{driver}: {rest}");
        drop(open);
    }
}
