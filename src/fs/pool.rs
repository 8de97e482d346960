//! Every fs call on the runtime's blocking pool: the readiness driver's
//! way, and io_uring's for an opcode its kernel lacks. The buffer (and a
//! reference to the file) moves to the pool thread and back with the result.

use std::io;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::buf::{BufResult, IoBuf, IoBufMut};
use crate::task::blocking::run;

/// Runs `f` on the pool and resolves to what it returns; an error if no
/// pool thread could start.
async fn call<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    run(f).await?
}

/// Runs `f`, which owns a buffer, on the pool. If no pool thread can
/// start, the buffer went with the job: that is a panic (documented on
/// the module).
async fn with_buffer<T: Send + 'static, B: Send + 'static>(
    f: impl FnOnce() -> BufResult<T, B> + Send + 'static,
) -> BufResult<T, B> {
    run(f).await.unwrap_or_else(|error| panic!("{error}"))
}

pub(super) async fn open(
    options: std::fs::OpenOptions,
    path: PathBuf,
) -> io::Result<std::fs::File> {
    call(move || options.open(path)).await
}

pub(super) async fn read_at<B: IoBufMut + Send>(
    file: Arc<std::fs::File>,
    mut buf: B,
    pos: u64,
) -> BufResult<usize, B> {
    with_buffer(move || {
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
}

pub(super) async fn read_exact_at<B: IoBufMut + Send>(
    file: Arc<std::fs::File>,
    mut buf: B,
    pos: u64,
) -> BufResult<usize, B> {
    with_buffer(move || {
        let total = buf.bytes_total();
        let ptr = buf.write_ptr();
        let mut done = 0;
        let result = loop {
            if done == total {
                break Ok(total);
            }
            let at = match super::offset(pos, done) {
                Ok(at) => at,
                Err(error) => break Err(error),
            };
            // SAFETY: as in `read_at`; `done < total`, inside the buffer.
            match unsafe { pread(&file, ptr.add(done), total - done, at) } {
                Ok(0) => break Err(super::unexpected_eof(done, total)),
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
}

pub(super) async fn write_at<B: IoBuf + Send>(
    file: Arc<std::fs::File>,
    buf: B,
    pos: u64,
) -> BufResult<usize, B> {
    with_buffer(move || {
        // SAFETY: `buf` has `bytes_init` initialized bytes at `read_ptr`.
        let src = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        let result = file.write_at(src, pos);
        (result, buf)
    })
    .await
}

pub(super) async fn write_all_at<B: IoBuf + Send>(
    file: Arc<std::fs::File>,
    buf: B,
    pos: u64,
) -> BufResult<usize, B> {
    with_buffer(move || {
        // SAFETY: as in `write_at`.
        let src = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        let result = file.write_all_at(src, pos).map(|()| src.len());
        (result, buf)
    })
    .await
}

/// Runs `f` with the file on the pool.
pub(super) async fn with_file<T, F>(file: Arc<std::fs::File>, f: F) -> io::Result<T>
where
    F: FnOnce(&std::fs::File) -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    call(move || f(&file)).await
}

pub(super) async fn close(file: std::fs::File) -> io::Result<()> {
    call(move || {
        let fd = file.into_raw_fd();
        // SAFETY: we own `fd` (taken from the File) and close it once.
        if unsafe { libc::close(fd) } == 0 {
            return Ok(());
        }
        super::closed(io::Error::last_os_error())
    })
    .await
}

/// Runs a std path call on the pool.
pub(super) async fn path_call<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    call(f).await
}

/// `pread(2)` into raw memory.
///
/// # Safety
///
/// `dst` must be valid for writes of `len` bytes.
unsafe fn pread(file: &std::fs::File, dst: *mut u8, len: usize, pos: u64) -> io::Result<usize> {
    let offset = super::offset(pos, 0)? as libc::off_t;
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
