//! Every fs call as native io_uring file ops (`driver/uring/file.rs`), on
//! the current shard's ring. `fs` comes here only after [`native`] said the
//! ring has the opcodes a call needs.

use std::ffi::CString;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use crate::buf::{BufResult, IoBuf, IoBufMut};
pub(super) use crate::driver::uring::file::native;
use crate::driver::uring::file::{
    c_path, Close, FileOp, FileOpKind as Kind, Fsync, Ftruncate, MkDirAt, OpenAt, ReadAt, RenameAt,
    Statx, UnlinkAt, WriteAt,
};

/// Whether the ring has every opcode of `kinds`.
pub(super) fn native_all(kinds: &[Kind]) -> bool {
    kinds.iter().all(|&kind| native(kind))
}

pub(super) async fn open(path: &Path, flags: libc::c_int, mode: u32) -> io::Result<std::fs::File> {
    let mut op = OpenAt {
        path: c_path(path)?,
        // As std's `open64`: files past 2 GiB on 32-bit targets too.
        flags: flags | libc::O_LARGEFILE,
        mode: mode as libc::mode_t,
    };
    loop {
        let (result, back) = FileOp::new(op).await;
        match result {
            // As std: an open interrupted by a signal is made again.
            Err(error) if error.kind() == io::ErrorKind::Interrupted => op = back,
            result => return result.map(OpenAt::opened),
        }
    }
}

/// Reads into `buf[filled..capacity]` from `pos`; the buffer's length
/// becomes `filled + n`.
pub(super) async fn read_at<B: IoBufMut>(
    file: &Arc<std::fs::File>,
    buf: B,
    filled: usize,
    pos: u64,
) -> BufResult<usize, B> {
    let op = ReadAt {
        file: file.clone(),
        buf,
        filled,
        pos,
    };
    let (result, mut op) = FileOp::new(op).await;
    if let Ok(n) = result {
        op.commit(n);
    }
    (result, op.buf)
}

pub(super) async fn read_exact_at<B: IoBufMut>(
    file: &Arc<std::fs::File>,
    mut buf: B,
    pos: u64,
) -> BufResult<usize, B> {
    let total = buf.bytes_total();
    let mut done = 0;
    // Reads fill from index 0, whatever the buffer held.
    // SAFETY: zero bytes are always initialized.
    unsafe { buf.set_init(0) };
    while done < total {
        let at = match super::offset(pos, done) {
            Ok(at) => at,
            Err(error) => return (Err(error), buf),
        };
        let (result, back) = read_at(file, buf, done, at).await;
        buf = back;
        match result {
            Ok(0) => return (Err(super::unexpected_eof(done, total)), buf),
            Ok(n) => done += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return (Err(error), buf),
        }
    }
    (Ok(total), buf)
}

/// Writes `buf[start..len]` at `pos`.
pub(super) async fn write_at<B: IoBuf>(
    file: &Arc<std::fs::File>,
    buf: B,
    start: usize,
    pos: u64,
) -> BufResult<usize, B> {
    let op = WriteAt {
        file: file.clone(),
        buf,
        start,
        pos,
    };
    let (result, op) = FileOp::new(op).await;
    (result, op.buf)
}

pub(super) async fn write_all_at<B: IoBuf>(
    file: &Arc<std::fs::File>,
    mut buf: B,
    pos: u64,
) -> BufResult<usize, B> {
    let total = buf.bytes_init();
    let mut done = 0;
    while done < total {
        let at = match super::offset(pos, done) {
            Ok(at) => at,
            Err(error) => return (Err(error), buf),
        };
        let (result, back) = write_at(file, buf, done, at).await;
        buf = back;
        match result {
            Ok(0) => {
                let error = io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("the file took {done} of {total} bytes, then none"),
                );
                return (Err(error), buf);
            }
            Ok(n) => done += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return (Err(error), buf),
        }
    }
    (Ok(total), buf)
}

pub(super) async fn sync(file: &Arc<std::fs::File>, data_only: bool) -> io::Result<()> {
    let op = Fsync {
        file: file.clone(),
        data_only,
    };
    FileOp::new(op).await.0.map(drop)
}

pub(super) async fn set_len(file: &Arc<std::fs::File>, len: u64) -> io::Result<()> {
    let op = Ftruncate {
        file: file.clone(),
        len,
    };
    FileOp::new(op).await.0.map(drop)
}

pub(super) async fn close(file: std::fs::File) -> io::Result<()> {
    let (result, op) = FileOp::new(Close::new(OwnedFd::from(file))).await;
    let result = match result {
        Ok(_) => 0,
        Err(error) => -error.raw_os_error().unwrap_or(libc::EIO),
    };
    match op.cancelled(result) {
        0 => Ok(()),
        errno => super::closed(io::Error::from_raw_os_error(-errno)),
    }
}

/// The whole file at `path`: OPENAT, STATX for its size, READs, CLOSE.
pub(super) async fn read(path: &Path) -> io::Result<Vec<u8>> {
    let file = Arc::new(open(path, libc::O_RDONLY, 0).await?);
    let mut buf = Vec::new();
    if native(Kind::Statx) {
        let (result, statx) = FileOp::new(Statx::of_file(file.clone())).await;
        // A size the kernel does not know (0 in /proc) only costs regrowth.
        if result.is_ok() {
            let size = usize::try_from(statx.result().stx_size).unwrap_or(usize::MAX);
            // One byte more, so the read that sees the end needs no room.
            buf.try_reserve_exact(size.saturating_add(1))
                .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
        }
    }
    loop {
        if buf.len() == buf.capacity() {
            buf.try_reserve(buf.len().max(8192))
                .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
        }
        let filled = buf.len();
        let (result, back) = read_at(&file, buf, filled, filled as u64).await;
        buf = back;
        match result {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    // As std's `fs::read`: the close's error is not the call's.
    let _ = close_or_drop(file).await;
    Ok(buf)
}

/// `contents` as the whole file at `path`: OPENAT, WRITEs, CLOSE.
pub(super) async fn write(path: &Path, contents: Vec<u8>) -> io::Result<()> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
    let file = Arc::new(open(path, flags, 0o666).await?);
    write_all_at(&file, contents, 0).await.0?;
    // As std's `fs::write`: the close's error is not the call's.
    let _ = close_or_drop(file).await;
    Ok(())
}

/// Closes `file` with CLOSE (reporting its error), or by dropping it where
/// the kernel lacks the opcode.
async fn close_or_drop(file: Arc<std::fs::File>) -> io::Result<()> {
    match Arc::try_unwrap(file) {
        Ok(file) if native(Kind::Close) => close(file).await,
        _ => Ok(()),
    }
}

pub(super) async fn unlink(path: &Path, flags: libc::c_int) -> io::Result<()> {
    let op = UnlinkAt {
        path: c_path(path)?,
        flags,
    };
    FileOp::new(op).await.0.map(drop)
}

pub(super) async fn rename(from: &Path, to: &Path) -> io::Result<()> {
    let op = RenameAt {
        from: c_path(from)?,
        to: c_path(to)?,
    };
    FileOp::new(op).await.0.map(drop)
}

pub(super) async fn create_dir(path: &Path) -> io::Result<()> {
    let op = MkDirAt {
        path: c_path(path)?,
        mode: 0o777,
    };
    FileOp::new(op).await.0.map(drop)
}

/// Whether `path` is a directory (following symlinks); false on any error.
async fn is_dir(path: CString) -> bool {
    let (result, statx) = FileOp::new(Statx::of_path(path)).await;
    result.is_ok() && u32::from(statx.result().stx_mode) & libc::S_IFMT == libc::S_IFDIR
}

/// std's `create_dir_all`: the missing ancestors, outermost first; a
/// directory someone else made meanwhile is no error.
pub(super) async fn create_dir_all(path: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = path;
    while !at.as_os_str().is_empty() {
        match create_dir(at).await {
            Ok(()) => break,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                missing.push(at);
                match at.parent() {
                    Some(parent) => at = parent,
                    None => return Err(io::Error::other("failed to create whole tree")),
                }
            }
            Err(_) if is_dir(c_path(at)?).await => break,
            Err(error) => return Err(error),
        }
    }
    while let Some(dir) = missing.pop() {
        match create_dir(dir).await {
            Ok(()) => {}
            Err(_) if is_dir(c_path(dir)?).await => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
