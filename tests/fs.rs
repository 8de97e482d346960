//! `ringshard::fs` (SPEC §7) in each of its modes (native io_uring ops,
//! the blocking pool on io_uring, the pool on epoll): round trips of every
//! call, random positional reads checked byte for byte, the error kinds std
//! gives, and dropped ops that leak no fd and free no buffer the kernel
//! may write.
//!
//! Tests shown to fail against a deliberately broken build name it:
//! `RUSTFLAGS='--cfg ringshard_broken="<name>"' cargo test --test fs`.

mod common;

use std::io::ErrorKind;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::canary::Quarantine;
use ringshard::fs::{self, File, OpenOptions};
use ringshard::{Builder, DriverType, Runtime};

/// Whether `RINGSHARD_TEST_DRIVERS` keeps io_uring (valgrind runs epoll only).
fn uring_kept() -> bool {
    let only = std::env::var("RINGSHARD_TEST_DRIVERS").unwrap_or_default();
    only.is_empty() || only.split(',').any(|keep| keep == "uring")
}

/// Adds `spec` to `RINGSHARD_URING_TUNE` until dropped, then puts back
/// what was there (the tests that use it hold the serial lock, and a
/// runtime reads it when its shards start).
struct Tune(Option<std::ffi::OsString>);

impl Tune {
    fn set(spec: &str) -> Tune {
        let old = std::env::var_os("RINGSHARD_URING_TUNE");
        let new = match old.as_ref().and_then(|o| o.to_str()) {
            Some(o) if !o.is_empty() => format!("{o},{spec}"),
            _ => spec.to_string(),
        };
        std::env::set_var("RINGSHARD_URING_TUNE", new);
        Tune(old)
    }
}

impl Drop for Tune {
    fn drop(&mut self) {
        match self.0.take() {
            Some(old) => std::env::set_var("RINGSHARD_URING_TUNE", old),
            None => std::env::remove_var("RINGSHARD_URING_TUNE"),
        }
    }
}

/// Whether the kernel has IORING_OP_FTRUNCATE (Linux 6.9).
fn kernel_has_ftruncate() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (6, 9)
}

/// A fresh FIFO at `dir/name`.
fn fifo(dir: &std::path::Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    path
}

/// Runs `body` in every mode: each driver of `common::each_driver` (native
/// file ops on io_uring, the pool on epoll), then io_uring with its file
/// ops on the pool, as for opcodes the kernel lacks.
fn each_mode(body: impl Fn(Builder)) {
    common::each_driver(&body);
    if uring_kept() {
        eprintln!("-- driver IoUring, file ops on the pool");
        let _tune = Tune::set("file_ops=0");
        body(Runtime::builder().driver_type(DriverType::IoUring));
    }
}

/// Threads of the blocking pool alive in this process (`comm` keeps 15
/// bytes of the name `ringshard-blocking`).
fn pool_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end() == "ringshard-block")
        .count()
}

/// Waits (bounded) until earlier runtimes' pool threads have exited.
fn no_pool_threads() -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while pool_threads() > 0 {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// A fresh directory for one test run.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringshard-fs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

#[test]
fn every_call_round_trips() {
    let _serial = common::serial();
    each_mode(|builder| {
        let dir = scratch("round-trip");
        let rt = common::runtime(builder, 1);
        rt.block_on(async {
            let path = dir.join("data");
            let file = File::create(&path).await.unwrap();
            let data: Vec<u8> = (0..100_000).map(pattern).collect();
            let (res, back) = file.write_all_at(data.clone(), 0).await;
            assert_eq!(res.unwrap(), data.len());
            assert_eq!(back, data, "the buffer comes back");
            let (res, _) = file.write_at(b"xyz".to_vec(), 10).await;
            assert_eq!(res.unwrap(), 3);
            file.sync_all().await.unwrap();
            file.sync_data().await.unwrap();
            assert_eq!(file.metadata().await.unwrap().len(), 100_000);
            file.close().await.unwrap();

            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .await
                .unwrap();
            let (res, buf) = file.read_exact_at(Vec::with_capacity(20), 0).await;
            res.unwrap();
            let mut expected: Vec<u8> = (0..20).map(pattern).collect();
            expected[10..13].copy_from_slice(b"xyz");
            assert_eq!(buf, expected);
            // set_len, then a read at the end gives 0.
            file.set_len(1000).await.unwrap();
            assert_eq!(file.metadata().await.unwrap().len(), 1000);
            let (res, buf) = file.read_at(Vec::with_capacity(64), 1000).await;
            assert_eq!(res.unwrap(), 0);
            assert!(buf.is_empty());
            let (res, buf) = file.read_at(Vec::with_capacity(64), 990).await;
            assert_eq!(res.unwrap(), 10);
            assert_eq!(buf.len(), 10);
            // No capacity: nothing to read. A buffer with bytes in it: its
            // length becomes the bytes read (reads fill from index 0).
            let (res, _) = file.read_at(Vec::new(), 0).await;
            assert_eq!(res.unwrap(), 0);
            let mut full = Vec::with_capacity(8);
            full.extend_from_slice(&[9; 8]);
            let (res, buf) = file.read_at(full, 995).await;
            assert_eq!(res.unwrap(), 5);
            assert_eq!(buf.len(), 5);
            // An offset past what the kernel takes is an error, not a panic.
            let (res, _) = file.read_exact_at(Vec::with_capacity(8), u64::MAX).await;
            assert_eq!(res.unwrap_err().kind(), ErrorKind::InvalidInput);
            // read_exact_at past the end: UnexpectedEof, with what was there.
            let (res, buf) = file.read_exact_at(Vec::with_capacity(64), 980).await;
            assert_eq!(res.unwrap_err().kind(), ErrorKind::UnexpectedEof);
            assert_eq!(buf.len(), 20);
            drop(file);

            // The path helpers.
            fs::write(dir.join("small"), b"small file").await.unwrap();
            assert_eq!(fs::read(dir.join("small")).await.unwrap(), b"small file");
            assert_eq!(fs::metadata(dir.join("small")).await.unwrap().len(), 10);
            fs::rename(dir.join("small"), dir.join("moved"))
                .await
                .unwrap();
            assert_eq!(fs::read(dir.join("moved")).await.unwrap(), b"small file");
            fs::remove_file(dir.join("moved")).await.unwrap();
            assert!(!dir.join("moved").exists());
            fs::create_dir_all(dir.join("a/b/c")).await.unwrap();
            fs::create_dir(dir.join("a/b/c/d")).await.unwrap();
            assert!(fs::metadata(dir.join("a/b/c/d")).await.unwrap().is_dir());
            fs::remove_dir(dir.join("a/b/c/d")).await.unwrap();
            assert!(!dir.join("a/b/c/d").exists());
        });
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

/// 200 random `read_exact_at`s of a 1 MiB file, many at once from one
/// shared `File`, each checked byte for byte.
#[test]
fn random_positional_reads_are_exact() {
    let _serial = common::serial();
    each_mode(|builder| {
        let dir = scratch("random");
        let path = dir.join("data");
        let data: Vec<u8> = (0..1 << 20).map(pattern).collect();
        std::fs::write(&path, &data).unwrap();
        let rt = common::runtime(builder, 1);
        rt.block_on(async {
            let file = std::rc::Rc::new(File::open(&path).await.unwrap());
            let mut seed = 0x9e37_79b9_7f4a_7c15u64;
            let mut tasks = Vec::new();
            for _ in 0..200 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let len = (seed % 8192) as usize + 1;
                let pos = (seed >> 20) as usize % (data.len() - len);
                let file = file.clone();
                tasks.push(ringshard::spawn(async move {
                    let (res, buf) = file
                        .read_exact_at(Vec::with_capacity(len), pos as u64)
                        .await;
                    res.unwrap();
                    (pos, buf)
                }));
            }
            for task in tasks {
                let (pos, buf) = task.await.unwrap();
                assert!(buf == data[pos..pos + buf.len()], "read at {pos}");
            }
        });
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

#[test]
fn errors_have_the_kinds_std_gives() {
    let _serial = common::serial();
    each_mode(|builder| {
        let dir = scratch("errors");
        let rt = common::runtime(builder, 1);
        rt.block_on(async {
            let missing = File::open(dir.join("missing")).await.unwrap_err();
            assert_eq!(missing.kind(), ErrorKind::NotFound);
            let no_dir = File::create(dir.join("no/such/dir/file"))
                .await
                .unwrap_err();
            assert_eq!(no_dir.kind(), ErrorKind::NotFound);
            let nul = File::open("bad\0path").await.unwrap_err();
            assert_eq!(nul.kind(), ErrorKind::InvalidInput);
            assert_eq!(
                fs::read(dir.join("missing")).await.unwrap_err().kind(),
                ErrorKind::NotFound
            );
            assert_eq!(
                fs::create_dir(&dir).await.unwrap_err().kind(),
                ErrorKind::AlreadyExists
            );
            assert_eq!(
                fs::remove_dir(dir.join("missing"))
                    .await
                    .unwrap_err()
                    .kind(),
                ErrorKind::NotFound
            );
            // A read on a write-only file: the error std gives for it.
            let path = dir.join("write-only");
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .open(&path)
                .await
                .unwrap();
            let (res, _) = file.read_at(Vec::with_capacity(8), 0).await;
            let ours = res.unwrap_err();
            let std_file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            let theirs =
                std::os::unix::fs::FileExt::read_at(&std_file, &mut [0; 8], 0).unwrap_err();
            assert_eq!(ours.kind(), theirs.kind());
            assert_eq!(ours.raw_os_error(), Some(libc::EBADF));
            let new = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .await;
            assert_eq!(new.unwrap_err().kind(), ErrorKind::AlreadyExists);
        });
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

/// Opens and reads dropped mid-flight (raced against a timer that fires
/// at once) leak no fd. Broken build that fails it: `leak_late_open`.
#[test]
fn dropped_ops_leak_no_fd() {
    let _serial = common::serial();
    each_mode(|builder| {
        let dir = scratch("dropped");
        let path = dir.join("data");
        std::fs::write(&path, vec![1u8; 1 << 20]).unwrap();
        let baseline = common::fd_count();
        let rt = common::runtime(builder, 1);
        let with_runtime = common::fd_count();
        rt.block_on(async {
            let file = File::open(&path).await.unwrap();
            for _ in 0..100 {
                let _ = ringshard::timeout(Duration::ZERO, File::open(&path)).await;
                let _ =
                    ringshard::timeout(Duration::ZERO, file.read_at(vec![0u8; 1 << 16], 0)).await;
                // Started (submitted, or taken by the pool), then dropped
                // before its completion was reaped.
                let mut open = Box::pin(File::open(&path));
                let _ = common::poll_once(&mut open).await;
                drop(open);
                let mut read = Box::pin(file.read_at(vec![0u8; 1 << 16], 0));
                let _ = common::poll_once(&mut read).await;
                drop(read);
                // Started, completed (the shard reaped the result), never
                // polled again, then dropped.
                let mut open = Box::pin(File::open(&path));
                let _ = common::poll_once(&mut open).await;
                ringshard::sleep(Duration::from_millis(1)).await;
                drop(open);
                // A close dropped in flight still closes.
                let extra = File::open(&path).await.unwrap();
                let mut close = Box::pin(extra.close());
                let _ = common::poll_once(&mut close).await;
                drop(close);
            }
            drop(file);
            // Let the pool finish what it took.
            ringshard::sleep(Duration::from_millis(100)).await;
        });
        common::assert_fds_return_to(with_runtime);
        drop(rt);
        common::assert_fds_return_to(baseline);
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

/// The `file_io` example copies a file and verifies the copy, on both drivers.
#[test]
fn the_file_io_example_copies_and_verifies() {
    let _serial = common::serial();
    let dir = scratch("example");
    let source = dir.join("source");
    // Not a multiple of the example's 1 MiB chunk.
    let data: Vec<u8> = (0..(3 << 20) + 12345).map(pattern).collect();
    std::fs::write(&source, &data).unwrap();
    for driver in ["uring", "epoll"] {
        let dest = dir.join(format!("copy-{driver}"));
        let output = std::process::Command::new(common::example("file_io", &[]))
            .arg(&source)
            .arg(&dest)
            .env("RINGSHARD_DRIVER", driver)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{driver}: {stdout}");
        assert!(
            stdout.contains("verified: 3158073 bytes identical"),
            "{driver}: {stdout}"
        );
        assert!(std::fs::read(&dest).unwrap() == data);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every call but the metadata ones is a native op on io_uring: no pool
/// thread ever starts. With the file ops turned off, the same calls do
/// start one (so the count can see the pool).
#[test]
fn on_io_uring_the_calls_are_native_ops() {
    let _serial = common::serial();
    if !uring_kept() {
        return;
    }
    let dir = scratch("native");
    let calls = |rt: &Runtime| {
        rt.block_on(async {
            let path = dir.join("data");
            let file = File::create(&path).await.unwrap();
            file.write_all_at(vec![7u8; 10_000], 0).await.0.unwrap();
            file.write_at(vec![8u8; 10], 10_000).await.0.unwrap();
            file.sync_all().await.unwrap();
            file.sync_data().await.unwrap();
            if kernel_has_ftruncate() {
                file.set_len(5_000).await.unwrap();
            } else {
                file.write_all_at(vec![8u8; 0], 0).await.0.unwrap();
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(5_000)
                    .unwrap();
            }
            file.close().await.unwrap();
            let file = File::open(&path).await.unwrap();
            let (res, buf) = file.read_exact_at(Vec::with_capacity(5_000), 0).await;
            res.unwrap();
            assert!(buf.iter().all(|&b| b == 7));
            assert_eq!(
                file.read_at(Vec::with_capacity(8), 5_000).await.0.unwrap(),
                0
            );
            file.close().await.unwrap();
            fs::write(dir.join("small"), b"small").await.unwrap();
            assert_eq!(fs::read(dir.join("small")).await.unwrap(), b"small");
            fs::rename(dir.join("small"), dir.join("moved"))
                .await
                .unwrap();
            fs::remove_file(dir.join("moved")).await.unwrap();
            fs::create_dir_all(dir.join("x/y/z")).await.unwrap();
            fs::create_dir(dir.join("x/y/z/w")).await.unwrap();
            fs::remove_dir(dir.join("x/y/z/w")).await.unwrap();
        });
        pool_threads()
    };
    assert!(no_pool_threads(), "earlier pool threads stay");
    let rt = common::runtime(Runtime::builder().driver_type(DriverType::IoUring), 1);
    assert_eq!(calls(&rt), 0, "a call went to the blocking pool");
    drop(rt);
    assert!(std::path::Path::new(&dir.join("x/y/z")).is_dir());
    std::fs::remove_dir_all(dir.join("x")).unwrap();
    let _tune = Tune::set("file_ops=0");
    let rt = common::runtime(Runtime::builder().driver_type(DriverType::IoUring), 1);
    assert!(calls(&rt) > 0, "with file_ops=0 the calls take the pool");
    drop(rt);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Native reads from a FIFO (which wait for data) dropped in flight: the
/// kernel never writes into a buffer after its release, and each buffer is
/// released once. Broken build that fails it: `release_on_drop`.
#[test]
fn dropped_native_reads_never_write_released_buffers() {
    let _serial = common::serial();
    if !uring_kept() {
        return;
    }
    let dir = scratch("fifo");
    let fifo = dir.join("fifo");
    let c_fifo = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0);
    let quarantine = Arc::new(Quarantine::default());
    for builder in [
        Runtime::builder().driver_type(DriverType::IoUring),
        common::one_shot(Runtime::builder().driver_type(DriverType::IoUring)),
    ] {
        let rt = common::runtime(builder, 1);
        let q = quarantine.clone();
        let fifo = fifo.clone();
        rt.block_on(async move {
            // Read and write: opening a FIFO so never blocks.
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&fifo)
                .await
                .unwrap();
            let writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            for _ in 0..20 {
                let mut read = Box::pin(file.read_at(q.buffer(4096), 0));
                assert!(common::poll_once(&mut read).await.is_pending());
                drop(read);
            }
            // Data for any read the kernel still has: it lands in the
            // buffer only while the ring still holds it.
            std::io::Write::write_all(&mut &writer, &[0x55; 4096]).unwrap();
            ringshard::sleep(Duration::from_millis(50)).await;
        });
        drop(rt);
    }
    let (released_once, corrupted) = quarantine.check();
    assert!(corrupted.is_empty(), "written after release: {corrupted:?}");
    assert_eq!(released_once, 40, "every buffer released exactly once");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `OpenOptions` takes and refuses what std's does: every combination of
/// its six switches, on a file that exists and one that does not, gives
/// the same outcome (and error kind) as `std::fs::OpenOptions`.
#[test]
fn open_options_refuse_what_std_refuses() {
    let _serial = common::serial();
    each_mode(|builder| {
        let dir = scratch("options");
        let rt = common::runtime(builder, 1);
        rt.block_on(async {
            for bits in 0u32..64 {
                for exists in [false, true] {
                    let set = |n: u32| bits & (1 << n) != 0;
                    let (ours, theirs) = (
                        dir.join(format!("ours-{bits}")),
                        dir.join(format!("std-{bits}")),
                    );
                    for path in [&ours, &theirs] {
                        let _ = std::fs::remove_file(path);
                        if exists {
                            std::fs::write(path, b"x").unwrap();
                        }
                    }
                    let ours_result = OpenOptions::new()
                        .read(set(0))
                        .write(set(1))
                        .append(set(2))
                        .truncate(set(3))
                        .create(set(4))
                        .create_new(set(5))
                        .open(&ours)
                        .await;
                    let theirs_result = std::fs::OpenOptions::new()
                        .read(set(0))
                        .write(set(1))
                        .append(set(2))
                        .truncate(set(3))
                        .create(set(4))
                        .create_new(set(5))
                        .open(&theirs);
                    let what = format!("switches {bits:06b}, exists {exists}");
                    match (&ours_result, &theirs_result) {
                        (Ok(a), Ok(b)) => {
                            assert_eq!(
                                std::fs::read(&ours).unwrap(),
                                std::fs::read(&theirs).unwrap(),
                                "{what}"
                            );
                            use std::os::fd::AsRawFd;
                            let mode = |fd: std::os::fd::RawFd| {
                                // SAFETY: F_GETFL on an open fd.
                                let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
                                flags & (libc::O_ACCMODE | libc::O_APPEND)
                            };
                            assert_eq!(
                                mode(a.as_std().as_raw_fd()),
                                mode(b.as_raw_fd()),
                                "{what}: access mode and append"
                            );
                        }
                        (Err(a), Err(b)) => assert_eq!(a.kind(), b.kind(), "{what}: {a} / {b}"),
                        _ => panic!("{what}: ours {ours_result:?}, std {theirs_result:?}"),
                    }
                }
            }
        });
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

/// One `File` (it is `Send`) read and written by tasks on two shards,
/// each op on the ring of the shard that awaits it.
#[test]
fn a_file_serves_two_shards() {
    let _serial = common::serial();
    each_mode(|builder| {
        let dir = scratch("two-shards");
        let path = dir.join("data");
        let rt = common::runtime(builder, 2);
        rt.block_on(async {
            let file = File::create(&path).await.unwrap();
            let mut set = ringshard::task::JoinSet::new();
            for shard in 0..2usize {
                let file = file.clone();
                set.spawn_on(ringshard::ShardId::new(shard), move || async move {
                    for i in 0..50u64 {
                        let at = (i * 2 + shard as u64) * 4096;
                        let (res, _) = file.write_all_at(vec![shard as u8 + 1; 4096], at).await;
                        res.unwrap();
                    }
                    ringshard::current_shard()
                });
            }
            let mut shards = Vec::new();
            while let Some(done) = set.join_next().await {
                shards.push(done.unwrap().index());
            }
            shards.sort();
            assert_eq!(shards, [0, 1]);
            file.sync_all().await.unwrap();
        });
        drop(rt);
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len(), 100 * 4096);
        for (i, block) in data.chunks(4096).enumerate() {
            assert!(block.iter().all(|&b| b == (i % 2) as u8 + 1), "block {i}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

/// Reads and writes that the kernel splits (a FIFO gives what it has)
/// continue where they stopped: `read_exact_at` fills the buffer in order
/// across short reads, `write_all_at` sends every byte in order.
#[test]
fn continued_reads_and_writes_pick_up_where_they_stopped() {
    let _serial = common::serial();
    if !uring_kept() {
        return;
    }
    let dir = scratch("continued");
    let path = fifo(&dir, "fifo");
    let rt = common::runtime(Runtime::builder().driver_type(DriverType::IoUring), 1);
    rt.block_on(async {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .await
            .unwrap();
        let writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let feeder = std::thread::spawn(move || {
            for half in 0..2u8 {
                std::thread::sleep(Duration::from_millis(20));
                let bytes: Vec<u8> = (0..100).map(|i| half * 100 + i).collect();
                std::io::Write::write_all(&mut &writer, &bytes).unwrap();
            }
        });
        let (res, buf) = file.read_exact_at(Vec::with_capacity(200), 0).await;
        assert_eq!(res.unwrap(), 200);
        assert_eq!(buf, (0..200).map(|i| i as u8).collect::<Vec<_>>());
        feeder.join().unwrap();

        // 1 MiB through a 64 KiB pipe, drained by a reader thread.
        let reader = std::fs::OpenOptions::new().read(true).open(&path).unwrap();
        let drain = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut chunk = vec![0u8; 10_000];
            while got.len() < 1 << 20 {
                let n = std::io::Read::read(&mut &reader, &mut chunk).unwrap();
                got.extend_from_slice(&chunk[..n]);
            }
            got
        });
        let data: Vec<u8> = (0..1 << 20).map(pattern).collect();
        let (res, _) = file.write_all_at(data.clone(), 0).await;
        assert_eq!(res.unwrap(), data.len());
        assert!(drain.join().unwrap() == data, "every byte, in order");
    });
    drop(rt);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Offsets beyond `i64::MAX` are `InvalidInput` for every positional
/// call (io_uring would read `u64::MAX` as "the file position").
#[test]
fn offsets_beyond_i64_max_are_invalid_input() {
    let _serial = common::serial();
    each_mode(|builder| {
        let dir = scratch("offsets");
        let rt = common::runtime(builder, 1);
        rt.block_on(async {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .open(dir.join("data"))
                .await
                .unwrap();
            let beyond = i64::MAX as u64 + 1;
            for pos in [beyond, u64::MAX] {
                let kind = |r: std::io::Result<usize>| r.unwrap_err().kind();
                assert_eq!(
                    kind(file.read_at(Vec::with_capacity(8), pos).await.0),
                    ErrorKind::InvalidInput
                );
                assert_eq!(
                    kind(file.read_exact_at(Vec::with_capacity(8), pos).await.0),
                    ErrorKind::InvalidInput
                );
                assert_eq!(
                    kind(file.write_at(b"x".to_vec(), pos).await.0),
                    ErrorKind::InvalidInput
                );
                assert_eq!(
                    kind(file.write_all_at(b"x".to_vec(), pos).await.0),
                    ErrorKind::InvalidInput
                );
                assert_eq!(
                    file.set_len(pos).await.unwrap_err().kind(),
                    ErrorKind::InvalidInput
                );
            }
            // At the edge: the kernel's own error, not a panic.
            assert!(file
                .write_all_at(b"xy".to_vec(), i64::MAX as u64)
                .await
                .0
                .is_err());
            assert_eq!(
                file.metadata().await.unwrap().len(),
                0,
                "nothing was written"
            );
        });
        std::fs::remove_dir_all(&dir).unwrap();
    });
}
