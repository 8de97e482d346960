//! The byte-stream ops TCP and Unix streams (and their halves) share.

use std::io;
use std::task::Poll;

use crate::buf::{BufResult, IoBuf, IoBufMut};
use crate::context;
use crate::driver::fd::SharedFd;
use crate::driver::op::{Op, Recv, Send, SendMsg};

/// Reads into `buf[offset..capacity]` from what the socket's multishot recv
/// received (io_uring; see `driver/uring/recv.rs`), setting `buf`'s length.
/// `None` means read with a plain recv instead: another driver, no buffered
/// reads on this kernel, or the shard's buffers ran out.
///
/// The caller's buffer is never lent to the kernel here, so dropping this
/// future at any point loses neither memory safety nor data.
async fn read_buffered<B: IoBufMut>(
    fd: &SharedFd,
    buf: &mut B,
    offset: usize,
) -> Option<io::Result<usize>> {
    #[cfg(target_os = "linux")]
    {
        use crate::driver::uring::Buffered;
        use crate::driver::Driver;
        std::future::poll_fn(|cx| {
            let total = buf.bytes_total();
            let offset = offset.min(total);
            // SAFETY: `offset <= total`, inside the buffer's writable memory.
            let dst = unsafe { buf.write_ptr().add(offset) };
            let polled = context::with_current_driver(|uid, driver| match driver {
                Driver::Uring(uring) => {
                    uring.read_buffered(uid, fd, dst, total - offset, cx.waker())
                }
                Driver::Poll(_) => Buffered::Fallback,
            });
            match polled {
                None | Some(Buffered::Fallback) => Poll::Ready(None),
                Some(Buffered::Pending) => Poll::Pending,
                Some(Buffered::Ready(result)) => {
                    if let Ok(n) = result {
                        // SAFETY: `n` bytes after `offset` were just copied in.
                        unsafe { buf.set_init(offset + n) };
                    }
                    Poll::Ready(Some(result))
                }
            }
        })
        .await
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (fd, buf, offset, context::in_shard);
        None
    }
}

/// Reads into `buf[offset..capacity]` what dropped reads left on the socket
/// (see `SharedFd::late_begin`), waiting while one is still in flight, or
/// the error one of them got; `None` when there is nothing, and the read
/// goes on as usual.
async fn read_late<B: IoBufMut>(
    fd: &SharedFd,
    buf: &mut B,
    offset: usize,
) -> Option<io::Result<usize>> {
    if !fd.has_late() {
        return None;
    }
    std::future::poll_fn(|cx| {
        let total = buf.bytes_total();
        let offset = offset.min(total);
        // SAFETY: `offset <= total`, inside the buffer's writable memory,
        // which has `total - offset` bytes from there.
        let polled = unsafe { fd.poll_late(cx, buf.write_ptr().add(offset), total - offset) };
        if let Poll::Ready(Some(Ok(n))) = polled {
            // SAFETY: `n` bytes after `offset` were just copied in.
            unsafe { buf.set_init(offset + n) };
        }
        polled
    })
    .await
}

pub(crate) async fn read<B: IoBufMut>(fd: &SharedFd, mut buf: B) -> BufResult<usize, B> {
    if buf.bytes_total() == 0 {
        // Nothing to read into: at once, as tokio does (a zero-length recv
        // on io_uring would wait for data it cannot take).
        return (Ok(0), buf);
    }
    if let Some(result) = read_late(fd, &mut buf, 0).await {
        return (result, buf);
    }
    if let Some(result) = read_buffered(fd, &mut buf, 0).await {
        return (result, buf);
    }
    read_direct(fd, buf, true).await
}

/// One recv straight into `buf` (datagram sockets, `stream == false`,
/// always read this way: buffered reads would merge datagrams).
pub(crate) async fn read_direct<B: IoBufMut>(
    fd: &SharedFd,
    buf: B,
    stream: bool,
) -> BufResult<usize, B> {
    let recv = Recv {
        fd: fd.clone(),
        buf,
        offset: 0,
        stream,
    };
    let (result, mut recv) = Op::new(recv).await;
    if let Ok(n) = result {
        recv.commit(n);
    }
    (result, recv.buf)
}

pub(crate) async fn read_exact<B: IoBufMut>(fd: &SharedFd, mut buf: B) -> BufResult<usize, B> {
    let total = buf.bytes_total();
    let mut offset = 0;
    while offset < total {
        match read_late(fd, &mut buf, offset).await {
            Some(Ok(n)) => {
                offset += n;
                continue;
            }
            Some(Err(error)) => return (Err(error), buf),
            None => {}
        }
        if let Some(result) = read_buffered(fd, &mut buf, offset).await {
            match result {
                Ok(0) => {
                    let eof = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the peer closed the stream after {offset} of {total} bytes"),
                    );
                    return (Err(eof), buf);
                }
                Ok(n) => offset += n,
                Err(error) => return (Err(error), buf),
            }
            continue;
        }
        let recv = Recv {
            fd: fd.clone(),
            buf,
            offset,
            stream: true,
        };
        let (result, mut recv) = Op::new(recv).await;
        match result {
            Ok(0) => {
                let eof = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the peer closed the stream after {offset} of {total} bytes"),
                );
                return (Err(eof), recv.buf);
            }
            Ok(n) => {
                recv.commit(n);
                offset += n;
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return (Err(error), recv.buf),
        }
        buf = recv.buf;
    }
    (Ok(total), buf)
}

pub(crate) async fn write<B: IoBuf>(fd: &SharedFd, buf: B) -> BufResult<usize, B> {
    let send = Send {
        fd: fd.clone(),
        buf,
        offset: 0,
    };
    let (result, send) = Op::new(send).await;
    (result, send.buf)
}

pub(crate) async fn write_all<B: IoBuf>(fd: &SharedFd, mut buf: B) -> BufResult<usize, B> {
    let total = buf.bytes_init();
    let mut offset = 0;
    loop {
        let send = Send {
            fd: fd.clone(),
            buf,
            offset,
        };
        let (result, send) = Op::new(send).await;
        buf = send.buf;
        match result {
            Ok(0) if offset < total => {
                let error = io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("the socket accepted no more bytes after {offset} of {total}"),
                );
                return (Err(error), buf);
            }
            Ok(n) => offset += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return (Err(error), buf),
        }
        if offset >= total {
            return (Ok(total), buf);
        }
    }
}

pub(crate) async fn writev<B: IoBuf>(fd: &SharedFd, bufs: Vec<B>) -> BufResult<usize, Vec<B>> {
    let (result, send) = Op::new(SendMsg::new(fd.clone(), bufs, None)).await;
    (result, send.bufs)
}

/// Generates the owned-buffer I/O methods and their docs for a stream type
/// whose socket is in `self.fd`.
macro_rules! stream_io_methods {
    ($kind:literal) => {
        /// Reads into `buf` from index 0 up to its capacity, and sets its
        /// length to the bytes read. `Ok(0)` means the peer closed its side
        /// (or `buf` has no capacity).
        ///
        /// # Cancel safety
        ///
        /// Cancel safe: dropping the future before it completes loses no
        /// data, in every mode, and no memory safety.
        ///
        /// - With buffered reads (io_uring's default, see
        ///   [`Builder::buffered_reads`](crate::Builder::buffered_reads))
        ///   and on epoll, `buf` is not lent to the kernel: bytes are
        ///   copied in only when the read completes, and stay in the
        ///   socket (or the shard's buffers) otherwise.
        /// - Unbuffered on io_uring (and when the shard's buffers have run
        ///   out), the kernel writes into `buf`: the runtime keeps `buf`
        ///   until the kernel is done with it (cancelling the read), and
        ///   bytes it received by then are kept and returned, first and in
        ///   order, by the next read of this socket; `buf` is then freed.
        ///
        /// An error such a dropped read got (a reset) is returned by the
        /// next read after its bytes, never turned into an end of stream.
        ///
        /// The one exception: a read future dropped where it cannot reach
        /// its driver (off its shard, after `block_on` returned, say; or
        /// while the driver is in use) has its `buf` leaked rather than
        /// freed under the kernel, with whatever the kernel put there.
        pub async fn read<B: $crate::buf::IoBufMut>(
            &mut self,
            buf: B,
        ) -> $crate::buf::BufResult<usize, B> {
            $crate::net::stream::read(&self.fd, buf).await
        }

        /// Reads until `buf` is full, or fails with `UnexpectedEof` if the
        /// peer closes first (`buf` then holds what arrived).
        ///
        /// Full means its whole *capacity*, as with every read here:
        /// `Vec::with_capacity(n)` reads exactly `n` bytes, but a reused
        /// `Vec` keeps the capacity it grew to.
        ///
        /// # Cancel safety
        ///
        /// Not cancel safe for data: bytes read before the future is dropped
        /// are lost with `buf`. Memory safety holds as for
        #[doc = concat!("[`read`](", $kind, "::read).")]
        pub async fn read_exact<B: $crate::buf::IoBufMut>(
            &mut self,
            buf: B,
        ) -> $crate::buf::BufResult<usize, B> {
            $crate::net::stream::read_exact(&self.fd, buf).await
        }

        /// Writes some of `buf`'s initialized bytes; returns how many.
        ///
        /// # Cancel safety
        ///
        /// Dropping the future never frees `buf` while the kernel may still
        /// read it (io_uring cancels the send); some bytes may or may not
        /// have been sent.
        pub async fn write<B: $crate::buf::IoBuf>(
            &mut self,
            buf: B,
        ) -> $crate::buf::BufResult<usize, B> {
            $crate::net::stream::write(&self.fd, buf).await
        }

        /// Writes all of `buf`'s initialized bytes.
        ///
        /// # Cancel safety
        ///
        /// Not cancel safe for data: if the future is dropped, an unknown
        /// prefix of `buf` has been sent. Memory safety holds as for
        #[doc = concat!("[`write`](", $kind, "::write).")]
        pub async fn write_all<B: $crate::buf::IoBuf>(
            &mut self,
            buf: B,
        ) -> $crate::buf::BufResult<usize, B> {
            $crate::net::stream::write_all(&self.fd, buf).await
        }

        /// Writes from several buffers in one `sendmsg`, in order; returns
        /// how many bytes were written in total (possibly fewer than all).
        ///
        /// # Cancel safety
        ///
        #[doc = concat!("As for [`write`](", $kind, "::write).")]
        pub async fn writev<B: $crate::buf::IoBuf>(
            &mut self,
            bufs: Vec<B>,
        ) -> $crate::buf::BufResult<usize, Vec<B>> {
            $crate::net::stream::writev(&self.fd, bufs).await
        }
    };
}

pub(crate) use stream_io_methods;
