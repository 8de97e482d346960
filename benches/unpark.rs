//! How one shard should wake another that is blocked in `io_uring_enter`:
//! a write to the target's eventfd (which has a read armed in the target's
//! ring, re-armed after each wake; what ringshard does), or an
//! `IORING_OP_MSG_RING` that posts a CQE straight into the target's ring.
//!
//! Two threads pinned to CPUs 0 and 1, each blocked in its own ring (set up
//! as ringshard's: SINGLE_ISSUER + DEFER_TASKRUN when the kernel has them),
//! wake each other in turn; the round trip is two wakes.
//!
//! - `eventfd`: the waker calls `write(2)` on the target's eventfd, then
//!   waits in its own ring (re-arming its eventfd read in that enter).
//! - `msg_ring`: the waker submits a MSG_RING (one enter), then waits.
//! - `msg_ring batched`: the MSG_RING goes out in the same enter that
//!   waits, as it could when the waking shard is about to park.
//!
//! Then the same inside the runtime: a ping-pong between two ringshard
//! shards that never spin (`spin_before_park(0)`), so every hop wakes a
//! parked shard, with the message wake on (the default) and off
//! (`RINGSHARD_URING_TUNE=msg_ring=0`), beside tokio's current_thread
//! runtimes on two pinned threads, which park the same way.
//!
//! `taskset -c 0,1 cargo bench --bench unpark [-- --rounds N]`.

#[cfg(target_os = "linux")]
#[path = "common/ping_pong.rs"]
mod ping_pong;

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("unpark: io_uring is Linux only");
}

#[cfg(target_os = "linux")]
mod linux {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::sync::{mpsc, Arc, Barrier};
    use std::time::Instant;

    use io_uring::{opcode, squeue, types, IoUring};

    const WAKES: u64 = 50_000;
    const TOKEN_EVENTFD: u64 = 1;
    const TOKEN_MSG: u64 = 2;

    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        EventFd,
        MsgRing,
        MsgRingBatched,
    }

    fn ring() -> IoUring {
        IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_submit_all()
            .build(64)
            .or_else(|_| IoUring::new(64))
            .expect("io_uring")
    }

    fn eventfd() -> OwnedFd {
        // SAFETY: eventfd returns a new fd or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
        // SAFETY: a fresh fd we own.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    /// One side: makes its ring (SINGLE_ISSUER binds it to this thread),
    /// trades ring fds with the peer, then waits for a wake and wakes the
    /// peer, `WAKES` times (the first side wakes first). Returns the time
    /// taken.
    #[allow(clippy::too_many_arguments, reason = "a bench's one worker")]
    fn side(
        mode: Mode,
        cpu: usize,
        first: bool,
        own_eventfd: OwnedFd,
        peer_eventfd: RawFd,
        own_ring_fd: mpsc::Sender<RawFd>,
        peer_ring_fd: mpsc::Receiver<RawFd>,
        start: Arc<Barrier>,
    ) -> std::time::Duration {
        let mut ring = ring();
        own_ring_fd.send(ring.as_raw_fd()).expect("peer gone");
        let peer_ring = peer_ring_fd.recv().expect("peer gone");
        core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
        let mut buf = Box::new(0u64);
        let arm_read = |ring: &mut IoUring, buf: &mut u64| {
            let sqe = opcode::Read::new(
                types::Fd(own_eventfd.as_raw_fd()),
                buf as *mut u64 as *mut u8,
                8,
            )
            .build()
            .user_data(TOKEN_EVENTFD);
            // SAFETY: `buf` outlives the read (it completes before `side` returns).
            unsafe { ring.submission().push(&sqe).expect("sq full") };
        };
        let msg = opcode::MsgRingData::new(types::Fd(peer_ring), 0, TOKEN_MSG, None)
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(0);
        let wake_peer = |ring: &mut IoUring| match mode {
            Mode::EventFd => {
                let one = 1u64;
                // SAFETY: writes 8 bytes from a live u64.
                let n = unsafe { libc::write(peer_eventfd, (&one as *const u64).cast(), 8) };
                assert_eq!(n, 8);
            }
            Mode::MsgRing | Mode::MsgRingBatched => {
                // SAFETY: the SQE holds no pointer.
                unsafe { ring.submission().push(&msg).expect("sq full") };
                if mode == Mode::MsgRing {
                    ring.submit().expect("submit");
                }
            }
        };
        if mode == Mode::EventFd {
            arm_read(&mut ring, &mut buf);
            ring.submit().expect("submit");
        }
        start.wait();
        let began = Instant::now();
        if first {
            wake_peer(&mut ring);
        }
        let mut woken = 0;
        while woken < WAKES {
            ring.submit_and_wait(1).expect("enter");
            let tokens: Vec<u64> = ring
                .completion()
                .map(|cqe| {
                    assert!(cqe.result() >= 0, "cqe error {}", cqe.result());
                    cqe.user_data()
                })
                .collect();
            for token in tokens {
                woken += 1;
                if token == TOKEN_EVENTFD {
                    arm_read(&mut ring, &mut buf);
                }
                if !first || woken < WAKES {
                    wake_peer(&mut ring);
                }
            }
        }
        let elapsed = began.elapsed();
        // Flush a batched last wake; cancel the armed read.
        ring.submit().expect("submit");
        if mode == Mode::EventFd {
            let one = 1u64;
            // SAFETY: writes 8 bytes from a live u64.
            unsafe { libc::write(own_eventfd.as_raw_fd(), (&one as *const u64).cast(), 8) };
            ring.submit_and_wait(1).expect("enter");
        }
        elapsed
    }

    /// ns per round trip (two wakes).
    fn run(mode: Mode) -> f64 {
        let (event_a, event_b) = (eventfd(), eventfd());
        let (raw_a, raw_b) = (event_a.as_raw_fd(), event_b.as_raw_fd());
        let (to_b, from_a) = mpsc::channel();
        let (to_a, from_b) = mpsc::channel();
        let start = Arc::new(Barrier::new(2));
        let b = {
            let start = start.clone();
            std::thread::spawn(move || side(mode, 1, false, event_b, raw_a, to_a, from_a, start))
        };
        let a =
            std::thread::spawn(move || side(mode, 0, true, event_a, raw_b, to_b, from_b, start));
        let elapsed = a.join().expect("side a");
        b.join().expect("side b");
        elapsed.as_nanos() as f64 / WAKES as f64
    }

    pub fn main() {
        let mut rounds = 5;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            if arg == "--rounds" {
                rounds = args.next().and_then(|v| v.parse().ok()).unwrap_or(rounds);
            }
        }
        let modes = [
            ("eventfd write", Mode::EventFd),
            ("msg_ring", Mode::MsgRing),
            ("msg_ring batched", Mode::MsgRingBatched),
        ];
        let mut results: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
        for _ in 0..rounds {
            for (index, (_, mode)) in modes.iter().enumerate() {
                results[index].push(run(*mode));
            }
        }
        println!("unpark round trip between two pinned threads blocked in io_uring_enter, {rounds} rounds, median");
        let base = median(results[0].clone());
        for ((name, _), values) in modes.iter().zip(results) {
            let value = median(values);
            println!("{name:<18} {value:>9.1} ns   /eventfd {:.3}", value / base);
        }
        runtime::main(rounds);
    }

    fn median(mut values: Vec<f64>) -> f64 {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    }

    /// The parked ping-pong inside the runtimes.
    mod runtime {
        use std::time::Duration;

        const PINGS: u64 = 20_000;

        /// A two-shard runtime that parks as soon as it is idle; `tune` is
        /// `RINGSHARD_URING_TUNE` while its rings are made.
        fn ringshard_rt(tune: &str) -> ringshard::Runtime {
            std::env::set_var("RINGSHARD_URING_TUNE", tune);
            let rt = ringshard::Runtime::builder()
                .worker_threads(2)
                .pin_threads(true)
                .spin_before_park(Duration::ZERO)
                .build()
                .expect("ringshard runtime");
            std::env::remove_var("RINGSHARD_URING_TUNE");
            rt
        }

        pub fn main(rounds: usize) {
            let with_msg = ringshard_rt("");
            let without = ringshard_rt("msg_ring=0");
            let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..rounds {
                a.push(super::super::ping_pong::ringshard(&with_msg, PINGS));
                b.push(super::super::ping_pong::ringshard(&without, PINGS));
                c.push(super::super::ping_pong::tokio_per_thread(PINGS));
            }
            let (a, b, c) = (super::median(a), super::median(b), super::median(c));
            println!(
                "parked ping-pong between two shards ({:?}, no spin), {rounds} rounds, median",
                with_msg.driver_kind()
            );
            println!(
                "msg_ring wake      {a:>9.1} ns   /eventfd {:.3}   /tokio {:.3}",
                a / b,
                a / c
            );
            println!("eventfd wake       {b:>9.1} ns   /tokio {:.3}", b / c);
            println!("tokio per thread   {c:>9.1} ns");
            for (name, rt) in [("msg_ring", &with_msg), ("eventfd", &without)] {
                for (index, stats) in rt.stats().shards().iter().enumerate() {
                    println!(
                        "  {name} shard {index}: remote wakes {}, parks {}, driver waits {}",
                        stats.remote_wakes, stats.parks, stats.driver_waits
                    );
                }
            }
        }
    }
}
