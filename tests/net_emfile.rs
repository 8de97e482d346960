//! Out of file descriptors: `accept` fails with `EMFILE`, the server backs
//! off as the docs of `TcpListener::accept` say, uses almost no CPU while
//! the limit holds, and serves again once fds free up. Alone in its binary:
//! it lowers the process's `RLIMIT_NOFILE`.

mod common;

use std::cell::Cell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::{each_driver, runtime, thread_cpu_time};
use ringshard::net::TcpListener;
use ringshard::{sleep, spawn};

const CLIENTS: usize = 40;
const BACKOFF: Duration = Duration::from_millis(10);
const HOLD: Duration = Duration::from_secs(2);

fn nofile() -> libc::rlimit {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit to fill.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    limit
}

fn set_nofile(limit: libc::rlimit) {
    // SAFETY: `limit` is a valid rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
}

/// The `RLIMIT_NOFILE` under which exactly `free` more fds can be opened
/// (new fds take the lowest free numbers below the limit).
fn limit_leaving(free: usize) -> u64 {
    let open: std::collections::BTreeSet<u64> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let mut left = free;
    let mut fd = 0;
    loop {
        if !open.contains(&fd) {
            if left == 0 {
                return fd;
            }
            left -= 1;
        }
        fd += 1;
    }
}

#[test]
fn accept_out_of_fds_backs_off_without_spinning_and_recovers() {
    each_driver(|builder| {
        let rt = runtime(builder, 1);
        let original = nofile();
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            // Every client connects (through the backlog) and sends before
            // the limit drops, so the limit binds only the server's accepts.
            let mut clients: Vec<std::net::TcpStream> = (0..CLIENTS)
                .map(|_| {
                    let mut client = std::net::TcpStream::connect(addr).unwrap();
                    client.write_all(b"hi").unwrap();
                    client
                })
                .collect();
            set_nofile(libc::rlimit {
                rlim_cur: limit_leaving(4),
                ..original
            });
            let errors = Rc::new(Cell::new(0u32));
            let served = Rc::new(Cell::new(0u32));
            let (e, s) = (errors.clone(), served.clone());
            let server = spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((mut stream, _)) => {
                            let s = s.clone();
                            spawn(async move {
                                let mut buf = Vec::with_capacity(64);
                                loop {
                                    let (res, back) = stream.read(buf).await;
                                    match res {
                                        Ok(n) if n > 0 => {}
                                        _ => return,
                                    }
                                    s.set(s.get() + 1);
                                    let (res, back) = stream.write_all(back).await;
                                    if res.is_err() {
                                        return;
                                    }
                                    buf = back;
                                    buf.clear();
                                }
                            });
                        }
                        Err(error) => {
                            assert_eq!(error.raw_os_error(), Some(libc::EMFILE), "{error}");
                            // One line per back-off at most.
                            if e.get() == 0 {
                                eprintln!("accept: {error}; backing off {BACKOFF:?}");
                            }
                            e.set(e.get() + 1);
                            sleep(BACKOFF).await;
                        }
                    }
                }
            });
            let cpu_before = thread_cpu_time();
            let began = Instant::now();
            sleep(HOLD).await;
            let cpu = thread_cpu_time() - cpu_before;
            let held = began.elapsed();
            let failed = errors.get();
            eprintln!(
                "{failed} EMFILE in {held:?}, {cpu:?} of CPU, {} served",
                served.get()
            );
            assert!(failed > 0, "the limit must bite");
            assert!(
                u128::from(failed) <= held.as_millis() / BACKOFF.as_millis() + 5,
                "{failed} errors: more than one per back-off"
            );
            assert!(
                cpu < held / 10,
                "the server spun: {cpu:?} of CPU in {held:?}"
            );
            assert!(
                served.get() < CLIENTS as u32,
                "not every client fits under the limit"
            );
            // Free the fds: the clients go, the server closes its side.
            clients.clear();
            sleep(Duration::from_millis(200)).await;
            set_nofile(original);
            // Serving again.
            let mut late = std::net::TcpStream::connect(addr).unwrap();
            late.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let echo = std::thread::spawn(move || {
                late.write_all(b"back").unwrap();
                let mut got = [0u8; 4];
                late.read_exact(&mut got).map(|_| got)
            });
            while !echo.is_finished() {
                sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(&echo.join().unwrap().expect("served again"), b"back");
            server.abort();
        });
        set_nofile(original);
    });
}
