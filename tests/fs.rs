//! `ringshard::fs` (SPEC §7), on both drivers: round trips of every call,
//! random positional reads checked byte for byte, the error kinds std
//! gives, and dropped ops that leak no fd.

mod common;

use std::io::ErrorKind;
use std::path::PathBuf;
use std::time::Duration;

use ringshard::fs::{self, File, OpenOptions};

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
    common::each_driver(|builder| {
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
    common::each_driver(|builder| {
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
    common::each_driver(|builder| {
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
/// at once) leak no fd, and their buffers are not freed under the read.
#[test]
fn dropped_ops_leak_no_fd() {
    let _serial = common::serial();
    common::each_driver(|builder| {
        let dir = scratch("dropped");
        let path = dir.join("data");
        std::fs::write(&path, vec![1u8; 1 << 20]).unwrap();
        let baseline = common::fd_count();
        let rt = common::runtime(builder, 1);
        let with_runtime = common::fd_count();
        rt.block_on(async {
            let file = File::open(&path).await.unwrap();
            for _ in 0..200 {
                let _ = ringshard::timeout(Duration::ZERO, File::open(&path)).await;
                let _ =
                    ringshard::timeout(Duration::ZERO, file.read_at(vec![0u8; 1 << 16], 0)).await;
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
