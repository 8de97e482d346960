//! Files and paths (SPEC §7): [`File`] with positional, owned-buffer I/O,
//! [`OpenOptions`], and the path helpers ([`read`], [`write()`],
//! [`metadata`], [`remove_file`], [`rename`], [`create_dir`],
//! [`create_dir_all`], [`remove_dir`]).
//!
//! On an io_uring shard every call is a native file op (OPENAT, READ,
//! WRITE, FSYNC, STATX, CLOSE, UNLINKAT, RENAMEAT, MKDIRAT, FTRUNCATE):
//! the kernel reads and writes the caller's buffer, and a page-cached read
//! completes without leaving the shard's thread. On the readiness driver,
//! and for an opcode the kernel lacks (FTRUNCATE before Linux 6.9, say),
//! the call runs on the runtime's blocking pool, as tokio's `fs` does: the
//! buffer moves to a pool thread and back. `RINGSHARD_URING_TUNE=file_ops=0`
//! sends every call to the pool on io_uring too. The metadata calls always
//! take the pool: they return `std::fs::Metadata`, which only std can make.
//!
//! # Cancel safety
//!
//! Dropping any of these futures never frees memory the kernel may still
//! write and never leaks an fd. Natively, the op (its buffer, its path, a
//! reference to the file) stays with the ring until its completion, and a
//! late open closes the fd it got; on the pool, the thread owns them until
//! the syscall returns, and an op dropped before a thread took it is
//! skipped. Whatever nobody awaits any more is then dropped. A file op
//! the kernel started runs to its end: a dropped write may or may not have
//! been made.
//!
//! On the pool path, if the OS refuses to start even one pool thread,
//! calls that return only an `io::Result` fail with an error; the
//! owned-buffer ones panic (their buffer went with the job).
//!
//! A `File` is `Send`; the futures of its calls are not (like every I/O
//! future of ringshard, they belong to the shard whose ring runs them):
//! await them in the task that makes them, on any shard.
//!
//! Errors have the `io::ErrorKind`s std gives (`NotFound` for a missing
//! file or directory, `InvalidInput` for a path with a NUL byte or an
//! offset beyond `i64::MAX`, ...). On a pipe or another stream, `pos` is
//! ignored natively (as io_uring does) and an `ESPIPE` error on the pool.

mod pool;
#[cfg(target_os = "linux")]
mod uring;

use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::buf::{BufResult, IoBuf, IoBufMut};
#[cfg(target_os = "linux")]
use crate::driver::uring::file::FileOpKind as Kind;

/// An open file. Its methods take `&self` (positional I/O has no cursor),
/// so one `File` serves many tasks; it is `Send` and `Sync`, and any shard
/// may use it (each op runs on the ring of the shard that awaits it).
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

/// How to open a file, with `std::fs::OpenOptions`'s rules (the same
/// combinations are refused with `InvalidInput`).
#[derive(Debug, Clone)]
pub struct OpenOptions {
    read: bool,
    write: bool,
    append: bool,
    truncate: bool,
    create: bool,
    create_new: bool,
    mode: u32,
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
            read: false,
            write: false,
            append: false,
            truncate: false,
            create: false,
            create_new: false,
            mode: 0o666,
        }
    }

    /// Open for reading.
    pub fn read(&mut self, read: bool) -> &mut OpenOptions {
        self.read = read;
        self
    }

    /// Open for writing.
    pub fn write(&mut self, write: bool) -> &mut OpenOptions {
        self.write = write;
        self
    }

    /// Open for appending. With it, Linux puts every write at the end of
    /// the file, so `write_at`'s `pos` is ignored (`pwrite(2)`, BUGS).
    pub fn append(&mut self, append: bool) -> &mut OpenOptions {
        self.append = append;
        self
    }

    /// Truncate to 0 bytes on opening.
    pub fn truncate(&mut self, truncate: bool) -> &mut OpenOptions {
        self.truncate = truncate;
        self
    }

    /// Create the file if it does not exist.
    pub fn create(&mut self, create: bool) -> &mut OpenOptions {
        self.create = create;
        self
    }

    /// Create the file, failing with `AlreadyExists` if it exists.
    pub fn create_new(&mut self, create_new: bool) -> &mut OpenOptions {
        self.create_new = create_new;
        self
    }

    /// The permission bits of a file this creates (before the umask);
    /// 0o666 unless set.
    pub fn mode(&mut self, mode: u32) -> &mut OpenOptions {
        self.mode = mode;
        self
    }

    /// The `open(2)` flags, refusing what std refuses.
    #[cfg(target_os = "linux")]
    fn flags(&self) -> io::Result<libc::c_int> {
        let refused = |what| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        let access = match (self.read, self.write, self.append) {
            (true, false, false) => libc::O_RDONLY,
            (false, true, false) => libc::O_WRONLY,
            (true, true, false) => libc::O_RDWR,
            (false, _, true) => libc::O_WRONLY | libc::O_APPEND,
            (true, _, true) => libc::O_RDWR | libc::O_APPEND,
            (false, false, false) => {
                return refused("must specify at least one of read, write, or append access")
            }
        };
        let creates = self.create || self.create_new || self.truncate;
        match (self.write, self.append) {
            (false, false) if creates => {
                return refused("creating or truncating a file requires write or append access")
            }
            (_, true) if self.truncate && !self.create_new => {
                return refused("creating or truncating a file requires write or append access")
            }
            _ => {}
        }
        let creation = match (self.create, self.truncate, self.create_new) {
            (_, _, true) => libc::O_CREAT | libc::O_EXCL,
            (true, true, false) => libc::O_CREAT | libc::O_TRUNC,
            (true, false, false) => libc::O_CREAT,
            (false, true, false) => libc::O_TRUNC,
            (false, false, false) => 0,
        };
        Ok(access | creation)
    }

    /// The same options for std (the pool's way).
    fn to_std(&self) -> std::fs::OpenOptions {
        let mut std = std::fs::OpenOptions::new();
        std.read(self.read)
            .write(self.write)
            .append(self.append)
            .truncate(self.truncate)
            .create(self.create)
            .create_new(self.create_new);
        std::os::unix::fs::OpenOptionsExt::mode(&mut std, self.mode);
        std
    }

    /// Opens `path` with these options.
    ///
    /// # Cancel safety
    ///
    /// A dropped open leaks no fd (see the [module](self)); with `create`
    /// or `truncate`, the file may or may not have been created or
    /// truncated.
    pub async fn open(&self, path: impl AsRef<Path>) -> io::Result<File> {
        let path = path.as_ref();
        #[cfg(target_os = "linux")]
        if uring::native(Kind::OpenAt) {
            let std = uring::open(path, self.flags()?, self.mode).await?;
            return Ok(File { std: Arc::new(std) });
        }
        let std = pool::open(self.to_std(), path.to_path_buf()).await?;
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
    /// See the [module](self): the buffer is freed only after the kernel
    /// is done with it; what a dropped read read is lost with it.
    pub async fn read_at<B: IoBufMut + Send>(&self, buf: B, pos: u64) -> BufResult<usize, B> {
        if let Err(error) = offset(pos, 0) {
            return (Err(error), buf);
        }
        #[cfg(target_os = "linux")]
        if uring::native(Kind::Read) {
            return uring::read_at(&self.std, buf, 0, pos).await;
        }
        pool::read_at(self.std.clone(), buf, pos).await
    }

    /// Reads until `buf` is full (its capacity), from offset `pos`; fails
    /// with `UnexpectedEof` if the file ends first (`buf` then holds what
    /// was there).
    ///
    /// # Cancel safety
    ///
    /// As for [`read_at`](File::read_at).
    pub async fn read_exact_at<B: IoBufMut + Send>(&self, buf: B, pos: u64) -> BufResult<usize, B> {
        if let Err(error) = offset(pos, 0) {
            return (Err(error), buf);
        }
        #[cfg(target_os = "linux")]
        if uring::native(Kind::Read) {
            return uring::read_exact_at(&self.std, buf, pos).await;
        }
        pool::read_exact_at(self.std.clone(), buf, pos).await
    }

    /// Writes some of `buf`'s initialized bytes at offset `pos`; returns
    /// how many.
    ///
    /// # Cancel safety
    ///
    /// See the [module](self): a dropped write may or may not be made.
    pub async fn write_at<B: IoBuf + Send>(&self, buf: B, pos: u64) -> BufResult<usize, B> {
        if let Err(error) = offset(pos, 0) {
            return (Err(error), buf);
        }
        #[cfg(target_os = "linux")]
        if uring::native(Kind::Write) {
            return uring::write_at(&self.std, buf, 0, pos).await;
        }
        pool::write_at(self.std.clone(), buf, pos).await
    }

    /// Writes all of `buf`'s initialized bytes at offset `pos`.
    ///
    /// # Cancel safety
    ///
    /// As for [`write_at`](File::write_at): some prefix may be written.
    pub async fn write_all_at<B: IoBuf + Send>(&self, buf: B, pos: u64) -> BufResult<usize, B> {
        if let Err(error) = offset(pos, 0) {
            return (Err(error), buf);
        }
        #[cfg(target_os = "linux")]
        if uring::native(Kind::Write) {
            return uring::write_all_at(&self.std, buf, pos).await;
        }
        pool::write_all_at(self.std.clone(), buf, pos).await
    }

    /// Flushes data and metadata to the device (`fsync`).
    ///
    /// # Cancel safety
    ///
    /// A dropped sync may or may not have run; nothing is lost or leaked.
    pub async fn sync_all(&self) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if uring::native(Kind::Fsync) {
            return uring::sync(&self.std, false).await;
        }
        pool::with_file(self.std.clone(), |f| f.sync_all()).await
    }

    /// Flushes data, and only the metadata needed to read it (`fdatasync`).
    ///
    /// # Cancel safety
    ///
    /// A dropped sync may or may not have run; nothing is lost or leaked.
    pub async fn sync_data(&self) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if uring::native(Kind::Fsync) {
            return uring::sync(&self.std, true).await;
        }
        pool::with_file(self.std.clone(), |f| f.sync_data()).await
    }

    /// The file's metadata (on the blocking pool: see the [module](self)).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn metadata(&self) -> io::Result<std::fs::Metadata> {
        pool::with_file(self.std.clone(), |f| f.metadata()).await
    }

    /// Truncates or extends the file to `size` bytes (`InvalidInput`
    /// beyond `i64::MAX`).
    ///
    /// # Cancel safety
    ///
    /// A dropped call may or may not have changed the length.
    pub async fn set_len(&self, size: u64) -> io::Result<()> {
        offset(size, 0)?;
        #[cfg(target_os = "linux")]
        if uring::native(Kind::Ftruncate) {
            return uring::set_len(&self.std, size).await;
        }
        pool::with_file(self.std.clone(), move |f| f.set_len(size)).await
    }

    /// Closes the file and reports the close's error, if it is the last
    /// handle. Otherwise (clones, ops still running or still queued keep it
    /// open) it returns `Ok(())` at once and the file closes, silently, when
    /// the last of them goes. Dropping a `File` closes it too, silently.
    ///
    /// # Cancel safety
    ///
    /// Dropped, the file still closes (by the kernel, on the pool thread,
    /// or with the last handle); only the close's error is lost.
    pub async fn close(self) -> io::Result<()> {
        let Ok(file) = Arc::try_unwrap(self.std) else {
            return Ok(());
        };
        #[cfg(target_os = "linux")]
        if uring::native(Kind::Close) {
            return uring::close(file).await;
        }
        pool::close(file).await
    }

    /// std's view of the file, for calls this API lacks.
    pub fn as_std(&self) -> &std::fs::File {
        &self.std
    }
}

/// `pos + done` as a file offset the kernel takes: at most `i64::MAX`
/// (io_uring reads `-1` as "the file's position"); `InvalidInput` beyond.
fn offset(pos: u64, done: usize) -> io::Result<u64> {
    pos.checked_add(done as u64)
        .filter(|&at| at <= i64::MAX as u64)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "file offset beyond i64::MAX"))
}

fn unexpected_eof(done: usize, total: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("the file ended after {done} of {total} bytes"),
    )
}

/// A failed `close`'s result: on Linux the fd is closed even after `EINTR`.
fn closed(error: io::Error) -> io::Result<()> {
    match error.kind() {
        io::ErrorKind::Interrupted => Ok(()),
        _ => Err(error),
    }
}

/// The whole contents of the file at `path`.
///
/// # Cancel safety
///
/// Cancel safe: it only reads; the file is closed either way.
pub async fn read(path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
    let path = path.as_ref();
    #[cfg(target_os = "linux")]
    if uring::native_all(&[Kind::OpenAt, Kind::Read]) {
        return uring::read(path).await;
    }
    let path = path.to_path_buf();
    pool::path_call(move || std::fs::read(path)).await
}

/// Writes `contents` to the file at `path`, creating or truncating it.
///
/// # Cancel safety
///
/// A dropped write may or may not have created or (partly) written the file.
pub async fn write(path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> io::Result<()> {
    let (path, contents) = (path.as_ref(), contents.as_ref().to_vec());
    #[cfg(target_os = "linux")]
    if uring::native_all(&[Kind::OpenAt, Kind::Write]) {
        return uring::write(path, contents).await;
    }
    let path = path.to_path_buf();
    pool::path_call(move || std::fs::write(path, contents)).await
}

/// The metadata of `path`, following symlinks (on the blocking pool: see
/// the [module](self)).
///
/// # Cancel safety
///
/// Cancel safe: it only reads.
pub async fn metadata(path: impl AsRef<Path>) -> io::Result<std::fs::Metadata> {
    let path = path.as_ref().to_path_buf();
    pool::path_call(move || std::fs::metadata(path)).await
}

/// Removes the file at `path`.
///
/// # Cancel safety
///
/// A dropped call may or may not have removed the file.
pub async fn remove_file(path: impl AsRef<Path>) -> io::Result<()> {
    let path = path.as_ref();
    #[cfg(target_os = "linux")]
    if uring::native(Kind::UnlinkAt) {
        return uring::unlink(path, 0).await;
    }
    let path = path.to_path_buf();
    pool::path_call(move || std::fs::remove_file(path)).await
}

/// Renames `from` to `to`, replacing `to` if it exists.
///
/// # Cancel safety
///
/// A dropped call may or may not have renamed (a rename itself is atomic).
pub async fn rename(from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
    let (from, to) = (from.as_ref(), to.as_ref());
    #[cfg(target_os = "linux")]
    if uring::native(Kind::RenameAt) {
        return uring::rename(from, to).await;
    }
    let (from, to) = (from.to_path_buf(), to.to_path_buf());
    pool::path_call(move || std::fs::rename(from, to)).await
}

/// Creates the directory `path` (its parent must exist).
///
/// # Cancel safety
///
/// A dropped call may or may not have created the directory.
pub async fn create_dir(path: impl AsRef<Path>) -> io::Result<()> {
    let path = path.as_ref();
    #[cfg(target_os = "linux")]
    if uring::native(Kind::MkDirAt) {
        return uring::create_dir(path).await;
    }
    let path = path.to_path_buf();
    pool::path_call(move || std::fs::create_dir(path)).await
}

/// Creates `path` and every missing parent.
///
/// # Cancel safety
///
/// A dropped call may have created some of the directories.
pub async fn create_dir_all(path: impl AsRef<Path>) -> io::Result<()> {
    let path = path.as_ref();
    #[cfg(target_os = "linux")]
    if uring::native_all(&[Kind::MkDirAt, Kind::Statx]) {
        return uring::create_dir_all(path).await;
    }
    let path = path.to_path_buf();
    pool::path_call(move || std::fs::create_dir_all(path)).await
}

/// Removes the empty directory `path`.
///
/// # Cancel safety
///
/// A dropped call may or may not have removed the directory.
pub async fn remove_dir(path: impl AsRef<Path>) -> io::Result<()> {
    let path = path.as_ref();
    #[cfg(target_os = "linux")]
    if uring::native(Kind::UnlinkAt) {
        return uring::unlink(path, libc::AT_REMOVEDIR).await;
    }
    let path = path.to_path_buf();
    pool::path_call(move || std::fs::remove_dir(path)).await
}
