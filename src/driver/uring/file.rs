//! The file ops: each defined once, like the socket ops of `driver/op.rs`,
//! with its SQE and what its late result means if its future was dropped.
//!
//! They run only on io_uring ([`FileOp`] is their future); `fs` asks
//! [`native`] first and takes the blocking pool on the readiness driver and
//! for an opcode the kernel lacks.
//!
//! # Cancel safety
//!
//! The socket ops' contract: dropping a [`FileOp`] moves the op (buffer,
//! path, statx buffer, file reference) into the driver's slab until its CQE,
//! so the kernel never writes into freed memory and the fd it reads or
//! writes stays open (a queued SQE never lands on a reused fd number). A
//! late open closes the fd it got. Regular-file I/O is not cancellable once
//! the kernel started it: a dropped write may or may not be made.

use std::ffi::CString;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use io_uring::{opcode, squeue, types};

use super::op::UringOp;
use crate::buf::{IoBuf, IoBufMut};
use crate::context;
use crate::driver::fd::SharedFd;
use crate::driver::op::{OpCode, Phase, State};
use crate::driver::Driver;

/// The most one read or write moves (Linux's `MAX_RW_COUNT`); the kernel
/// returns a short count beyond it anyway.
const MAX_RW: usize = 0x7fff_f000;

/// The file opcodes, as `fs` asks for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileOpKind {
    OpenAt,
    Read,
    Write,
    Fsync,
    Statx,
    Close,
    UnlinkAt,
    RenameAt,
    MkDirAt,
    Ftruncate,
}

impl FileOpKind {
    const ALL: [FileOpKind; 10] = [
        FileOpKind::OpenAt,
        FileOpKind::Read,
        FileOpKind::Write,
        FileOpKind::Fsync,
        FileOpKind::Statx,
        FileOpKind::Close,
        FileOpKind::UnlinkAt,
        FileOpKind::RenameAt,
        FileOpKind::MkDirAt,
        FileOpKind::Ftruncate,
    ];

    fn code(self) -> u8 {
        match self {
            FileOpKind::OpenAt => opcode::OpenAt::CODE,
            FileOpKind::Read => opcode::Read::CODE,
            FileOpKind::Write => opcode::Write::CODE,
            FileOpKind::Fsync => opcode::Fsync::CODE,
            FileOpKind::Statx => opcode::Statx::CODE,
            FileOpKind::Close => opcode::Close::CODE,
            FileOpKind::UnlinkAt => opcode::UnlinkAt::CODE,
            FileOpKind::RenameAt => opcode::RenameAt::CODE,
            FileOpKind::MkDirAt => opcode::MkDirAt::CODE,
            FileOpKind::Ftruncate => opcode::Ftruncate::CODE,
        }
    }

    fn bit(self) -> u16 {
        1 << self as u16
    }
}

/// The file opcodes this ring runs natively: those the kernel has (FTRUNCATE
/// came in 6.9, UNLINKAT/RENAMEAT/MKDIRAT in 5.11-5.15), none if the tuning
/// turned them off.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FileOps(u16);

impl FileOps {
    pub(crate) fn probed(probe: &io_uring::Probe, enabled: bool) -> FileOps {
        if !enabled {
            return FileOps(0);
        }
        FileOps(
            FileOpKind::ALL
                .iter()
                .filter(|kind| probe.is_supported(kind.code()))
                .fold(0, |bits, kind| bits | kind.bit()),
        )
    }

    pub(crate) fn has(self, kind: FileOpKind) -> bool {
        self.0 & kind.bit() != 0
    }
}

/// Whether the current shard runs `kind` natively (an io_uring shard whose
/// kernel has the opcode); otherwise the caller uses the blocking pool.
pub(crate) fn native(kind: FileOpKind) -> bool {
    context::with_current_driver(|_, driver| match driver {
        Driver::Uring(uring) => uring.file_ops.has(kind),
        #[allow(unreachable_patterns, reason = "one backend on some targets")]
        _ => false,
    })
    .unwrap_or(false)
}

/// The future of one file op on the current shard's ring: resolves to its
/// result and the op back. `!Send`, like [`Op`](crate::driver::op::Op).
pub(crate) struct FileOp<T: OpCode + UringOp> {
    state: State<T>,
    _shard_bound: PhantomData<*const ()>,
}

impl<T: OpCode + UringOp> FileOp<T> {
    pub(crate) fn new(op: T) -> FileOp<T> {
        FileOp {
            state: State::new(op),
            _shard_bound: PhantomData,
        }
    }
}

impl<T: OpCode + UringOp> Future for FileOp<T> {
    type Output = (io::Result<usize>, T);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let state = &mut self.get_mut().state;
        let polled = context::with_current_driver(|uid, driver| match driver {
            Driver::Uring(uring) => super::op::poll(uring, uid, state, cx),
            #[allow(unreachable_patterns, reason = "one backend on some targets")]
            _ => state.off_driver(not_on_a_ring),
        });
        let result = std::task::ready!(polled.unwrap_or_else(|| state.off_driver(not_on_a_ring)));
        let op = state
            .op
            .take()
            .expect("a file op's resources are taken once");
        Poll::Ready((result, op))
    }
}

/// A file op polled where no ring is (it keeps waiting if it is in flight,
/// on another thread's ring).
fn not_on_a_ring() -> io::Error {
    io::Error::other("a native file op must run on an io_uring shard")
}

impl<T: OpCode + UringOp> Drop for FileOp<T> {
    fn drop(&mut self) {
        if let Phase::Uring { uid, key } = self.state.phase {
            let op = self.state.op.take().expect("in flight with its resources");
            super::op::abandon(uid, key, op);
        }
    }
}

/// A path as the kernel takes it; `InvalidInput` for an interior NUL byte,
/// as std reports it.
pub(crate) fn c_path(path: &std::path::Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "file name contained an unexpected NUL byte",
        )
    })
}

fn file_fd(file: &std::fs::File) -> types::Fd {
    types::Fd(file.as_raw_fd())
}

/// `pread(file, buf[filled..capacity], pos)`; the result sets the buffer's
/// length to `filled + n`. `pos` is at most `i64::MAX` (io_uring reads
/// `-1` as "the file's position").
pub(crate) struct ReadAt<B> {
    pub(crate) file: Arc<std::fs::File>,
    pub(crate) buf: B,
    pub(crate) filled: usize,
    pub(crate) pos: u64,
}

impl<B: IoBufMut> ReadAt<B> {
    /// Records `n` more bytes read.
    pub(crate) fn commit(&mut self, n: usize) {
        // SAFETY: the kernel initialized `n` bytes after `filled`, within
        // the length the SQE gave it.
        unsafe { self.buf.set_init(self.filled + n) };
    }
}

impl<B: IoBufMut> OpCode for ReadAt<B> {
    fn socket(&self) -> Option<&SharedFd> {
        None
    }
}

impl<B: IoBufMut> UringOp for ReadAt<B> {
    fn sqe(&mut self) -> squeue::Entry {
        let total = self.buf.bytes_total();
        let filled = self.filled.min(total);
        // SAFETY: `filled <= total`, inside the buffer's writable memory.
        let ptr = unsafe { self.buf.write_ptr().add(filled) };
        let len = (total - filled).min(MAX_RW) as u32;
        debug_assert!(self.pos <= i64::MAX as u64);
        opcode::Read::new(file_fd(&self.file), ptr, len)
            .offset(self.pos)
            .build()
    }
}

/// `pwrite(file, buf[start..len], pos)`, `pos` at most `i64::MAX`.
pub(crate) struct WriteAt<B> {
    pub(crate) file: Arc<std::fs::File>,
    pub(crate) buf: B,
    pub(crate) start: usize,
    pub(crate) pos: u64,
}

impl<B: IoBuf> OpCode for WriteAt<B> {
    fn socket(&self) -> Option<&SharedFd> {
        None
    }
}

impl<B: IoBuf> UringOp for WriteAt<B> {
    fn sqe(&mut self) -> squeue::Entry {
        let init = self.buf.bytes_init();
        let start = self.start.min(init);
        // SAFETY: `start <= init`, inside the buffer's initialized bytes.
        let ptr = unsafe { self.buf.read_ptr().add(start) };
        let len = (init - start).min(MAX_RW) as u32;
        debug_assert!(self.pos <= i64::MAX as u64);
        opcode::Write::new(file_fd(&self.file), ptr, len)
            .offset(self.pos)
            .build()
    }
}

/// `fsync(file)`, or `fdatasync` when `data_only`.
pub(crate) struct Fsync {
    pub(crate) file: Arc<std::fs::File>,
    pub(crate) data_only: bool,
}

impl OpCode for Fsync {
    fn socket(&self) -> Option<&SharedFd> {
        None
    }
}

impl UringOp for Fsync {
    fn sqe(&mut self) -> squeue::Entry {
        let flags = if self.data_only {
            types::FsyncFlags::DATASYNC
        } else {
            types::FsyncFlags::empty()
        };
        opcode::Fsync::new(file_fd(&self.file)).flags(flags).build()
    }
}

/// `ftruncate(file, len)`, `len` at most `i64::MAX`.
pub(crate) struct Ftruncate {
    pub(crate) file: Arc<std::fs::File>,
    pub(crate) len: u64,
}

impl OpCode for Ftruncate {
    fn socket(&self) -> Option<&SharedFd> {
        None
    }
}

impl UringOp for Ftruncate {
    fn sqe(&mut self) -> squeue::Entry {
        opcode::Ftruncate::new(file_fd(&self.file), self.len).build()
    }
}

/// `openat(AT_FDCWD, path, flags | O_CLOEXEC, mode)`.
pub(crate) struct OpenAt {
    pub(crate) path: CString,
    pub(crate) flags: libc::c_int,
    pub(crate) mode: libc::mode_t,
}

impl OpenAt {
    /// The file a successful open's result names.
    pub(crate) fn opened(result: usize) -> std::fs::File {
        // SAFETY: a successful open returns a new fd nobody else owns.
        std::fs::File::from(unsafe { OwnedFd::from_raw_fd(result as RawFd) })
    }
}

impl OpCode for OpenAt {
    fn socket(&self) -> Option<&SharedFd> {
        None
    }

    /// The file was opened after nobody wanted it: close it.
    fn complete_orphan(self, result: i32) {
        if result >= 0 {
            let file = OpenAt::opened(result as usize);
            // Deliberately broken build for the fs cancel test: leak it.
            #[cfg(ringshard_broken = "leak_late_open")]
            std::mem::forget(file);
            #[cfg(not(ringshard_broken = "leak_late_open"))]
            drop(file);
        }
    }
}

impl UringOp for OpenAt {
    fn sqe(&mut self) -> squeue::Entry {
        opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), self.path.as_ptr())
            .flags(self.flags | libc::O_CLOEXEC)
            .mode(self.mode)
            .build()
    }
}

/// `statx(file or AT_FDCWD, path, flags, mask)` into a boxed `statx`.
pub(crate) struct Statx {
    /// The file to describe (with an empty path and `AT_EMPTY_PATH`).
    pub(crate) file: Option<Arc<std::fs::File>>,
    pub(crate) path: CString,
    pub(crate) flags: libc::c_int,
    pub(crate) mask: u32,
    pub(crate) buf: Box<MaybeUninit<libc::statx>>,
}

impl Statx {
    /// The size and file type of the open `file`.
    pub(crate) fn of_file(file: Arc<std::fs::File>) -> Statx {
        Statx {
            file: Some(file),
            path: CString::default(),
            flags: libc::AT_EMPTY_PATH,
            mask: libc::STATX_SIZE | libc::STATX_TYPE,
            buf: Box::new(MaybeUninit::zeroed()),
        }
    }

    /// The file type of `path`, following symlinks.
    pub(crate) fn of_path(path: CString) -> Statx {
        Statx {
            file: None,
            path,
            flags: 0,
            mask: libc::STATX_TYPE,
            buf: Box::new(MaybeUninit::zeroed()),
        }
    }

    /// What the kernel wrote, after a successful completion.
    pub(crate) fn result(&self) -> &libc::statx {
        // SAFETY: zeroed at creation (a valid statx), then written by the
        // kernel.
        unsafe { self.buf.assume_init_ref() }
    }
}

impl OpCode for Statx {
    fn socket(&self) -> Option<&SharedFd> {
        None
    }
}

impl UringOp for Statx {
    fn sqe(&mut self) -> squeue::Entry {
        let dirfd = self
            .file
            .as_ref()
            .map_or(libc::AT_FDCWD, |file| file.as_raw_fd());
        opcode::Statx::new(
            types::Fd(dirfd),
            self.path.as_ptr(),
            self.buf.as_mut_ptr().cast(),
        )
        .flags(self.flags)
        .mask(self.mask)
        .build()
    }
}

/// `close(fd)`. The fd moves to the kernel when the SQE is built;
/// unsubmitted, the op closes it when dropped. A close the kernel sends
/// to its workers (files with a `flush`: NFS, FUSE) can be cancelled
/// before it runs, by the drop of its future or by shutdown: its result is
/// then `ECANCELED` and the fd is still open, so it is closed here with
/// `close(2)` ([`Close::cancelled`]), never leaked.
pub(crate) struct Close {
    pub(crate) fd: Option<OwnedFd>,
    /// The fd number the SQE carries.
    raw: RawFd,
}

impl Close {
    pub(crate) fn new(fd: OwnedFd) -> Close {
        Close {
            raw: fd.as_raw_fd(),
            fd: Some(fd),
        }
    }

    /// The kernel's result `result` said the close was cancelled before
    /// it ran: close the fd now. Returns the result the caller reports.
    pub(crate) fn cancelled(&self, result: i32) -> i32 {
        if result != -libc::ECANCELED || self.fd.is_some() {
            return result;
        }
        // SAFETY: the cancelled close left `raw` open, and it is ours:
        // the SQE took it from the `OwnedFd`, and nothing else closes it.
        if unsafe { libc::close(self.raw) } == 0 {
            0
        } else {
            -io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO)
        }
    }
}

impl OpCode for Close {
    fn socket(&self) -> Option<&SharedFd> {
        None
    }

    fn complete_orphan(self, result: i32)
    where
        Self: Sized,
    {
        self.cancelled(result);
    }
}

impl UringOp for Close {
    fn sqe(&mut self) -> squeue::Entry {
        let fd = self.fd.take().map_or(-1, IntoRawFd::into_raw_fd);
        debug_assert_eq!(fd, self.raw);
        opcode::Close::new(types::Fd(fd)).build()
    }
}

/// `unlinkat(AT_FDCWD, path, flags)`: `remove_file`, or `remove_dir` with
/// `AT_REMOVEDIR`.
pub(crate) struct UnlinkAt {
    pub(crate) path: CString,
    pub(crate) flags: libc::c_int,
}

impl OpCode for UnlinkAt {
    fn socket(&self) -> Option<&SharedFd> {
        None
    }
}

impl UringOp for UnlinkAt {
    fn sqe(&mut self) -> squeue::Entry {
        opcode::UnlinkAt::new(types::Fd(libc::AT_FDCWD), self.path.as_ptr())
            .flags(self.flags)
            .build()
    }
}

/// `renameat(AT_FDCWD, from, AT_FDCWD, to)`.
pub(crate) struct RenameAt {
    pub(crate) from: CString,
    pub(crate) to: CString,
}

impl OpCode for RenameAt {
    fn socket(&self) -> Option<&SharedFd> {
        None
    }
}

impl UringOp for RenameAt {
    fn sqe(&mut self) -> squeue::Entry {
        opcode::RenameAt::new(
            types::Fd(libc::AT_FDCWD),
            self.from.as_ptr(),
            types::Fd(libc::AT_FDCWD),
            self.to.as_ptr(),
        )
        .build()
    }
}

/// `mkdirat(AT_FDCWD, path, mode)`.
pub(crate) struct MkDirAt {
    pub(crate) path: CString,
    pub(crate) mode: libc::mode_t,
}

impl OpCode for MkDirAt {
    fn socket(&self) -> Option<&SharedFd> {
        None
    }
}

impl UringOp for MkDirAt {
    fn sqe(&mut self) -> squeue::Entry {
        opcode::MkDirAt::new(types::Fd(libc::AT_FDCWD), self.path.as_ptr())
            .mode(self.mode)
            .build()
    }
}
