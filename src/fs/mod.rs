//! Files and paths (SPEC §7): [`File`] with positional, owned-buffer I/O,
//! [`OpenOptions`], and the path helpers ([`read`], [`write()`],
//! [`metadata`], [`remove_file`], [`rename`], [`create_dir`],
//! [`create_dir_all`], [`remove_dir`]).
//!
//! Every call runs today on the runtime's blocking pool (as tokio's `fs`
//! does), on both drivers: the buffer moves to the pool thread and back
//! with the result. Native io_uring ops (OPENAT, READ, WRITE, FSYNC, STATX,
//! ...) are the next step; the API and the cancel contract stay.
//!
//! # Cancel safety
//!
//! Dropping any of these futures never frees memory an op still uses and
//! never leaks an fd: the pool thread owns the buffer (and a reference to
//! the file) until the syscall returns; whatever nobody awaits any more is
//! then dropped, on the pool thread or the shard's (an opened file is
//! closed). An op dropped before a pool thread took it is skipped; one
//! dropped after runs to its end, so a dropped write may or may not have
//! been made.
//!
//! If the OS refuses to start even one pool thread, calls that return only
//! an `io::Result` fail with an error; the owned-buffer ones panic (their
//! buffer went with the job).
//!
//! Errors have the `io::ErrorKind`s std gives (`NotFound` for a missing
//! file or directory, `InvalidInput` for a path with a NUL byte, ...).

use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::buf::{BufResult, IoBuf, IoBufMut};
use crate::task::blocking::run;

/// An open file. Its methods take `&self` (positional I/O has no cursor),
/// so one `File` serves many tasks; it is `Send` and `Sync`.
///
/// ```
/// # let rt = ringshard::Runtime::builder().worker_threads(1).build()?;
/// # let dir = std::env::temp_dir().join(format!("ringshard-fs-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// rt.block_on(async {
///     let path = dir.join("hello.txt");
///     let file = ringshard::fs::OpenOptions::new()
///         .read(true)
///         .write(true)
///         .create(true)
///         .open(&path)
///         .await?;
///     let (res, _) = file.write_all_at(b"hello, file".to_vec(), 0).await;
///     res?;
///     file.sync_all().await?;
///     let (res, buf) = file.read_exact_at(Vec::with_capacity(4), 7).await;
///     res?;
///     assert_eq!(buf, b"file");
///     file.close().await
/// })?;
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct File {
    std: Arc<std::fs::File>,
}

/// How to open a file, as `std::fs::OpenOptions`.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    std: std::fs::OpenOptions,
}

impl Default for OpenOptions {
    fn default() -> OpenOptions {
        OpenOptions::new()
    }
}

impl OpenOptions {
    /// No access at all yet: set `read`, `write` or `append`.
    pub fn new() -> OpenOptions {
        OpenOptions {
            std: std::fs::OpenOptions::new(),
        }
    }

    /// Open for reading.
    pub fn read(&mut self, read: bool) -> &mut OpenOptions {
        self.std.read(read);
        self
    }

    /// Open for writing.
    pub fn write(&mut self, write: bool) -> &mut OpenOptions {
        self.std.write(write);
        self
    }

    /// Open for appending. With it, Linux puts every write at the end of
    /// the file, so `write_at`'s `pos` is ignored (`pwrite(2)`, BUGS).
    pub fn append(&mut self, append: bool) -> &mut OpenOptions {
        self.std.append(append);
        self
    }

    /// Truncate to 0 bytes on opening.
    pub fn truncate(&mut self, truncate: bool) -> &mut OpenOptions {
        self.std.truncate(truncate);
        self
    }

    /// Create the file if it does not exist.
    pub fn create(&mut self, create: bool) -> &mut OpenOptions {
        self.std.create(create);
        self
    }

    /// Create the file, failing with `AlreadyExists` if it exists.
    pub fn create_new(&mut self, create_new: bool) -> &mut OpenOptions {
        self.std.create_new(create_new);
        self
    }

    /// The permission bits of a file this creates (before the umask).
    pub fn mode(&mut self, mode: u32) -> &mut OpenOptions {
        std::os::unix::fs::OpenOptionsExt::mode(&mut self.std, mode);
        self
    }

    /// Opens `path` with these options.
    ///
    /// # Cancel safety
    ///
    /// A dropped open leaks no fd (see the [module](self)).
    pub async fn open(&self, path: impl AsRef<Path>) -> io::Result<File> {
        let (options, path) = (self.std.clone(), owned(path));
        let std = run(move || options.open(path)).await??;
        Ok(File { std: Arc::new(std) })
    }
}

impl File {
    /// Opens `path` for reading.
    ///
    /// # Cancel safety
    ///
    /// A dropped open leaks no fd (see the [module](self)).
    pub async fn open(path: impl AsRef<Path>) -> io::Result<File> {
        OpenOptions::new().read(true).open(path).await
    }

    /// Opens `path` for writing (only: reads on it fail with `EBADF`),
    /// creating it or truncating it.
    ///
    /// # Cancel safety
    ///
    /// A dropped create leaks no fd; the file may or may not have been created or truncated.
    pub async fn create(path: impl AsRef<Path>) -> io::Result<File> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .await
    }

    /// Reads into `buf` from index 0 up to its capacity, from offset `pos`,
    /// and sets its length to the bytes read; `Ok(0)` at the end of the
    /// file (or for a buffer without capacity).
    ///
    /// # Cancel safety
    ///
    /// See the [module](self): the buffer is freed only after the read.
    pub async fn read_at<B: IoBufMut + Send>(&self, mut buf: B, pos: u64) -> BufResult<usize, B> {
        let file = self.std.clone();
        run(move || {
            let (ptr, len) = (buf.write_ptr(), buf.bytes_total());
            // SAFETY: `ptr` has `len` writable bytes, kept alive by `buf`
            // (moved here); a raw pointer, as the bytes may be uninitialized.
            let result = unsafe { pread(&file, ptr, len, pos) };
            if let Ok(n) = result {
                // SAFETY: the kernel wrote `n` bytes from index 0.
                unsafe { buf.set_init(n) };
            }
            (result, buf)
        })
        .await
        .unwrap_or_else(|error| panic!("{error}"))
    }

    /// Reads until `buf` is full (its capacity), from offset `pos`; fails
    /// with `UnexpectedEof` if the file ends first (`buf` then holds what
    /// was there).
    ///
    /// # Cancel safety
    ///
    /// As for [`read_at`](File::read_at).
    pub async fn read_exact_at<B: IoBufMut + Send>(
        &self,
        mut buf: B,
        pos: u64,
    ) -> BufResult<usize, B> {
        let file = self.std.clone();
        run(move || {
            let total = buf.bytes_total();
            let ptr = buf.write_ptr();
            let mut done = 0;
            let result = loop {
                if done == total {
                    break Ok(total);
                }
                let Some(at) = pos.checked_add(done as u64) else {
                    break Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "offset overflow",
                    ));
                };
                // SAFETY: as in `read_at`; `done < total`, inside the buffer.
                match unsafe { pread(&file, ptr.add(done), total - done, at) } {
                    Ok(0) => {
                        break Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("the file ended after {done} of {total} bytes"),
                        ))
                    }
                    Ok(n) => done += n,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => break Err(error),
                }
            };
            // SAFETY: the first `done` bytes were written by the reads.
            unsafe { buf.set_init(done) };
            (result, buf)
        })
        .await
        .unwrap_or_else(|error| panic!("{error}"))
    }

    /// Writes some of `buf`'s initialized bytes at offset `pos`; returns
    /// how many.
    ///
    /// # Cancel safety
    ///
    /// See the [module](self): a dropped write may or may not be made.
    pub async fn write_at<B: IoBuf + Send>(&self, buf: B, pos: u64) -> BufResult<usize, B> {
        let file = self.std.clone();
        run(move || {
            // SAFETY: `buf` has `bytes_init` initialized bytes at `read_ptr`.
            let src = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
            let result = file.write_at(src, pos);
            (result, buf)
        })
        .await
        .unwrap_or_else(|error| panic!("{error}"))
    }

    /// Writes all of `buf`'s initialized bytes at offset `pos`.
    ///
    /// # Cancel safety
    ///
    /// As for [`write_at`](File::write_at): some prefix may be written.
    pub async fn write_all_at<B: IoBuf + Send>(&self, buf: B, pos: u64) -> BufResult<usize, B> {
        let file = self.std.clone();
        run(move || {
            // SAFETY: as in `write_at`.
            let src = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
            let result = file.write_all_at(src, pos).map(|()| src.len());
            (result, buf)
        })
        .await
        .unwrap_or_else(|error| panic!("{error}"))
    }

    /// Flushes data and metadata to the device (`fsync`).
    ///
    /// # Cancel safety
    ///
    /// A dropped sync may or may not have run; nothing is lost or leaked.
    pub async fn sync_all(&self) -> io::Result<()> {
        self.on_pool(move |f| f.sync_all()).await
    }

    /// Flushes data, and only the metadata needed to read it (`fdatasync`).
    ///
    /// # Cancel safety
    ///
    /// A dropped sync may or may not have run; nothing is lost or leaked.
    pub async fn sync_data(&self) -> io::Result<()> {
        self.on_pool(move |f| f.sync_data()).await
    }

    /// The file's metadata.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn metadata(&self) -> io::Result<std::fs::Metadata> {
        self.on_pool(move |f| f.metadata()).await
    }

    /// Truncates or extends the file to `size` bytes.
    ///
    /// # Cancel safety
    ///
    /// A dropped call may or may not have changed the length.
    pub async fn set_len(&self, size: u64) -> io::Result<()> {
        self.on_pool(move |f| f.set_len(size)).await
    }

    /// Closes the file and reports the close's error, if it is the last
    /// handle. Otherwise (clones, ops still running or still queued keep it
    /// open) it returns `Ok(())` at once and the file closes, silently, when
    /// the last of them goes. Dropping a `File` closes it too, silently.
    ///
    /// # Cancel safety
    ///
    /// Dropped, the file still closes (on the pool thread, or with the last handle); only the close's error is lost.
    pub async fn close(self) -> io::Result<()> {
        match Arc::try_unwrap(self.std) {
            Ok(file) => {
                run(move || {
                    let fd = std::os::fd::IntoRawFd::into_raw_fd(file);
                    // SAFETY: we own `fd` (taken from the File) and close it once.
                    if unsafe { libc::close(fd) } == 0 {
                        return Ok(());
                    }
                    match io::Error::last_os_error() {
                        // On Linux the fd is closed even then.
                        error if error.kind() == io::ErrorKind::Interrupted => Ok(()),
                        error => Err(error),
                    }
                })
                .await?
            }
            Err(_) => Ok(()),
        }
    }

    /// Runs `f` with the file on the blocking pool.
    async fn on_pool<T, F>(&self, f: F) -> io::Result<T>
    where
        F: FnOnce(&std::fs::File) -> io::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let file = self.std.clone();
        run(move || f(&file)).await?
    }

    /// std's view of the file, for calls this API lacks.
    pub fn as_std(&self) -> &std::fs::File {
        &self.std
    }
}

/// `pread(2)` into raw memory.
///
/// # Safety
///
/// `dst` must be valid for writes of `len` bytes.
unsafe fn pread(file: &std::fs::File, dst: *mut u8, len: usize, pos: u64) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let Ok(offset) = libc::off_t::try_from(pos) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "offset beyond off_t",
        ));
    };
    // The kernel takes at most isize::MAX bytes; it returns short reads.
    let len = len.min(isize::MAX as usize);
    // SAFETY: forwarded from this function's contract.
    let n = unsafe { libc::pread(file.as_raw_fd(), dst.cast(), len, offset) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn owned(path: impl AsRef<Path>) -> PathBuf {
    path.as_ref().to_path_buf()
}

/// The whole contents of the file at `path`.
///
/// # Cancel safety
///
/// Cancel safe: it only reads; the file is closed either way.
pub async fn read(path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
    let path = owned(path);
    run(move || std::fs::read(path)).await?
}

/// Writes `contents` to the file at `path`, creating or truncating it.
///
/// # Cancel safety
///
/// A dropped write may or may not have created or (partly) written the file.
pub async fn write(path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> io::Result<()> {
    let (path, contents) = (owned(path), contents.as_ref().to_vec());
    run(move || std::fs::write(path, contents)).await?
}

/// The metadata of `path`, following symlinks.
///
/// # Cancel safety
///
/// Cancel safe: it only reads.
pub async fn metadata(path: impl AsRef<Path>) -> io::Result<std::fs::Metadata> {
    let path = owned(path);
    run(move || std::fs::metadata(path)).await?
}

/// Removes the file at `path`.
///
/// # Cancel safety
///
/// A dropped call may or may not have removed the file.
pub async fn remove_file(path: impl AsRef<Path>) -> io::Result<()> {
    let path = owned(path);
    run(move || std::fs::remove_file(path)).await?
}

/// Renames `from` to `to`, replacing `to` if it exists.
///
/// # Cancel safety
///
/// A dropped call may or may not have renamed (a rename itself is atomic).
pub async fn rename(from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
    let (from, to) = (owned(from), owned(to));
    run(move || std::fs::rename(from, to)).await?
}

/// Creates the directory `path` (its parent must exist).
///
/// # Cancel safety
///
/// A dropped call may or may not have created the directory.
pub async fn create_dir(path: impl AsRef<Path>) -> io::Result<()> {
    let path = owned(path);
    run(move || std::fs::create_dir(path)).await?
}

/// Creates `path` and every missing parent.
///
/// # Cancel safety
///
/// A dropped call may have created some of the directories.
pub async fn create_dir_all(path: impl AsRef<Path>) -> io::Result<()> {
    let path = owned(path);
    run(move || std::fs::create_dir_all(path)).await?
}

/// Removes the empty directory `path`.
///
/// # Cancel safety
///
/// A dropped call may or may not have removed the directory.
pub async fn remove_dir(path: impl AsRef<Path>) -> io::Result<()> {
    let path = owned(path);
    run(move || std::fs::remove_dir(path)).await?
}
