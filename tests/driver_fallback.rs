//! `DriverType::Auto` where io_uring is refused: under a seccomp filter that
//! fails `io_uring_setup` with EPERM or ENOSYS (what Docker's default
//! profile and gVisor do), and as an unprivileged user with
//! `ulimit -l 64`. Each case runs in a child process (this test binary again,
//! with `RINGSHARD_FALLBACK_CHILD` naming the case), since a seccomp filter
//! cannot be removed and privileges cannot be regained.

#![cfg(target_os = "linux")]

use std::io::{Read, Write};
use std::process::{Command, Output};
use std::time::Duration;

use ringshard::net::{TcpListener, TcpStream};
use ringshard::{DriverKind, DriverType, Runtime};

const CHILD: &str = "RINGSHARD_FALLBACK_CHILD";

/// Runs this binary's `child` test in a new process with `case` set.
fn run_child(case: &str, wrap: Option<&[&str]>, exe: &std::path::Path) -> Output {
    let test_args = ["child", "--exact", "--nocapture", "--test-threads=1"];
    let mut command = match wrap {
        Some(wrap) => {
            let mut command = Command::new(wrap[0]);
            command.args(&wrap[1..]).arg(exe).args(test_args);
            command
        }
        None => {
            let mut command = Command::new(exe);
            command.args(test_args);
            command
        }
    };
    let output = command
        .env(CHILD, case)
        .env_remove("RINGSHARD_DRIVER")
        .env_remove("RINGSHARD_URING_TUNE")
        .output()
        .expect("run the child test");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child {case} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("child passed"),
        "child {case} did not run its case:\n{stdout}\n{stderr}"
    );
    output
}

#[test]
fn seccomp_eperm_falls_back_to_epoll_and_names_the_cause() {
    let exe = std::env::current_exe().unwrap();
    let output = run_child("EPERM", None, &exe);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("IoUring driver unavailable")
            && stderr.contains("os error 1")
            && stderr.contains("seccomp"),
        "Auto's log line should name EPERM and seccomp: {stderr}"
    );
}

#[test]
fn seccomp_enosys_falls_back_to_epoll_and_names_the_cause() {
    let exe = std::env::current_exe().unwrap();
    let output = run_child("ENOSYS", None, &exe);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("IoUring driver unavailable") && stderr.contains("os error 38"),
        "Auto's log line should name ENOSYS: {stderr}"
    );
}

/// As `nobody` with `ulimit -l 64`: no panic, a working driver, the echo
/// passes. The binary is copied into a fresh directory nobody can read.
#[test]
fn unprivileged_user_with_64k_memlock_runs_the_echo() {
    // SAFETY: geteuid has no arguments and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let exe = std::env::current_exe().unwrap();
    let limit = ["sh", "-c", "ulimit -l 64 && exec \"$0\" \"$@\""];
    if !root {
        // Already unprivileged: only lower the limit.
        let output = run_child("NOBODY", Some(&limit), &exe);
        eprintln!("{}", String::from_utf8_lossy(&output.stdout));
        return;
    }
    let dir = std::env::temp_dir().join(format!("ringshard-nobody-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("driver_fallback");
    std::fs::copy(&exe, &copy).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let wrap = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        limit[0],
        limit[1],
        limit[2],
    ];
    let output = run_child("NOBODY", Some(&wrap), &copy);
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("{}", String::from_utf8_lossy(&output.stdout));
}

/// The child half: does nothing unless `RINGSHARD_FALLBACK_CHILD` is set.
#[test]
fn child() {
    let Ok(case) = std::env::var(CHILD) else {
        return;
    };
    match case.as_str() {
        "EPERM" | "ENOSYS" => {
            let errno = if case == "EPERM" {
                libc::EPERM
            } else {
                libc::ENOSYS
            };
            deny_io_uring_setup(errno);
            // A forced io_uring is an error naming the cause.
            let forced = Runtime::builder()
                .driver_type(DriverType::IoUring)
                .worker_threads(1)
                .pin_threads(false)
                .build();
            let Err(error) = forced else {
                panic!("io_uring is denied: a forced IoUring must fail");
            };
            let message = error.to_string();
            assert!(
                message.contains(&format!("os error {errno}")),
                "the error should name the cause: {message}"
            );
            if errno == libc::EPERM {
                assert!(message.contains("seccomp"), "and the fix: {message}");
            }
            let rt = echo_runtime();
            assert_eq!(rt.driver_kind(), DriverKind::Epoll);
            echo_1000(&rt);
        }
        "NOBODY" => {
            // SAFETY: geteuid has no arguments and cannot fail.
            let euid = unsafe { libc::geteuid() };
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: `limit` is a valid rlimit to fill.
            assert_eq!(
                unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) },
                0
            );
            assert_eq!(limit.rlim_cur, 64 * 1024, "ulimit -l 64 applies");
            assert_ne!(euid, 0, "runs unprivileged");
            let rt = echo_runtime();
            println!(
                "uid {euid}, RLIMIT_MEMLOCK {} KiB: driver {:?}",
                limit.rlim_cur / 1024,
                rt.driver_kind()
            );
            echo_1000(&rt);
        }
        other => panic!("unknown case {other}"),
    }
    println!("child passed: {case}");
}

fn echo_runtime() -> Runtime {
    Runtime::builder()
        .driver_type(DriverType::Auto)
        .worker_threads(1)
        .pin_threads(false)
        .build()
        .expect("Auto must start a driver")
}

/// A ringshard echo server and a std client: 1,000 messages, each checked.
fn echo_1000(rt: &Runtime) {
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut got = vec![0u8; 512];
            for i in 0..1_000u32 {
                let message: Vec<u8> = (0..512u32).map(|j| (i * 31 + j) as u8).collect();
                stream.write_all(&message).unwrap();
                stream.read_exact(&mut got).unwrap();
                assert_eq!(got, message, "echo {i} corrupted");
            }
        });
        let (mut stream, _): (TcpStream, _) = listener.accept().await.unwrap();
        let mut buf = Vec::with_capacity(4096);
        loop {
            let (res, read) = stream.read(buf).await;
            if res.unwrap() == 0 {
                break;
            }
            let (res, written) = stream.write_all(read).await;
            res.unwrap();
            buf = written;
        }
        client.join().unwrap();
    });
}

/// Installs a seccomp filter on this thread (inherited by the threads it
/// starts) that fails `io_uring_setup` with `errno` and allows the rest.
fn deny_io_uring_setup(errno: i32) {
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xC000_003E;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xC000_00B7;
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    const RET_ERRNO: u32 = 0x0005_0000;
    const RET_ALLOW: u32 = 0x7fff_0000;
    let insn = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let filter = [
        insn(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        insn(JEQ_K, 0, 3, AUDIT_ARCH),
        insn(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        insn(JEQ_K, 0, 1, libc::SYS_io_uring_setup as u32),
        insn(RET_K, 0, 0, RET_ERRNO | errno as u32),
        insn(RET_K, 0, 0, RET_ALLOW),
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: plain prctls; `program` points at `filter`, alive for the call
    // (the kernel copies it).
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &program as *const libc::sock_fprog
            ),
            0,
            "install the seccomp filter: {}",
            std::io::Error::last_os_error()
        );
    }
}
