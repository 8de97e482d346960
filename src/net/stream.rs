//! The byte-stream ops TCP and Unix streams (and their halves) share.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::buf::{BufResult, IoBuf, IoBufMut};
use crate::context;
use crate::driver::fd::SharedFd;
use crate::driver::op::{Op, Recv, Send, SendMsg};

/// Reads into `buf[offset..capacity]` from what the socket's multishot recv
/// received (io_uring; see `driver/uring/recv.rs`), setting `buf`'s length.
/// `Ready(None)` means read with a plain recv instead: another driver, no
/// buffered reads on this kernel, or the shard's buffers ran out.
///
/// The caller's buffer is never lent to the kernel here, so dropping the
/// read at any point loses neither memory safety nor data.
fn poll_buffered<B: IoBufMut>(
    fd: &SharedFd,
    buf: &mut B,
    offset: usize,
    cx: &mut Context<'_>,
) -> Poll<Option<io::Result<usize>>> {
    #[cfg(target_os = "linux")]
    {
        use crate::driver::uring::Buffered;
        use crate::driver::Driver;
        let total = buf.bytes_total();
        let offset = offset.min(total);
        // SAFETY: `offset <= total`, inside the buffer's writable memory.
        let dst = unsafe { buf.write_ptr().add(offset) };
        let polled = context::with_current_driver(|uid, driver| match driver {
            Driver::Uring(uring) => uring.read_buffered(uid, fd, dst, total - offset, cx.waker()),
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
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (fd, buf, offset, cx, context::in_shard);
        Poll::Ready(None)
    }
}

/// Reads into `buf[offset..capacity]` what dropped reads left on the socket
/// (see `SharedFd::late_begin`), waiting while one is still in flight, or
/// the error one of them got; `Ready(None)` when there is nothing, and the
/// read goes on as usual.
fn poll_late<B: IoBufMut>(
    fd: &SharedFd,
    buf: &mut B,
    offset: usize,
    cx: &mut Context<'_>,
) -> Poll<Option<io::Result<usize>>> {
    if !fd.has_late() {
        return Poll::Ready(None);
    }
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
}

/// The future of a stream's `read`: what dropped reads left first, then a
/// buffered read, and a plain recv into `buf` when neither can serve it.
/// Hand-written, so its common path (a buffered read that finds its bytes
/// or keeps the waker) moves nothing but the buffer it hands back.
pub(crate) struct Read<'a, B: IoBufMut> {
    fd: &'a SharedFd,
    step: ReadStep<B>,
}

enum ReadStep<B: IoBufMut> {
    /// Reading what dropped reads left, then buffered.
    Buffered(B),
    /// A plain recv into the buffer.
    Direct(Op<Recv<B>>),
    Done,
}

pub(crate) fn read<B: IoBufMut>(fd: &SharedFd, buf: B) -> Read<'_, B> {
    Read {
        fd,
        step: ReadStep::Buffered(buf),
    }
}

impl<B: IoBufMut> Future for Read<'_, B> {
    type Output = BufResult<usize, B>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let fd = this.fd;
        if let ReadStep::Buffered(buf) = &mut this.step {
            // Nothing to read into: at once, as tokio does (a zero-length
            // recv on io_uring would wait for data it cannot take).
            let polled = if buf.bytes_total() == 0 {
                Poll::Ready(Some(Ok(0)))
            } else {
                match poll_late(fd, buf, 0, cx) {
                    Poll::Ready(None) => poll_buffered(fd, buf, 0, cx),
                    late => late,
                }
            };
            let Poll::Ready(result) = polled else {
                return Poll::Pending;
            };
            let ReadStep::Buffered(buf) = std::mem::replace(&mut this.step, ReadStep::Done) else {
                unreachable!("matched above")
            };
            let Some(result) = result else {
                this.step = ReadStep::Direct(Op::new(Recv {
                    fd: fd.clone(),
                    buf,
                    offset: 0,
                    stream: true,
                }));
                return this.poll_direct(cx);
            };
            return Poll::Ready((result, buf));
        }
        this.poll_direct(cx)
    }
}

impl<B: IoBufMut> Read<'_, B> {
    fn poll_direct(&mut self, cx: &mut Context<'_>) -> Poll<BufResult<usize, B>> {
        let ReadStep::Direct(op) = &mut self.step else {
            panic!("a read polled after it completed");
        };
        let result = std::task::ready!(op.poll_result(cx));
        let mut recv = op.take();
        self.step = ReadStep::Done;
        if let Ok(n) = result {
            recv.commit(n);
        }
        Poll::Ready((result, recv.buf))
    }
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
        match std::future::poll_fn(|cx| poll_late(fd, &mut buf, offset, cx)).await {
            Some(Ok(n)) => {
                offset += n;
                continue;
            }
            Some(Err(error)) => return (Err(error), buf),
            None => {}
        }
        let buffered = std::future::poll_fn(|cx| poll_buffered(fd, &mut buf, offset, cx)).await;
        if let Some(result) = buffered {
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

/// The future of `write_all`: one send op, restarted in place for the
/// rest after a short send (hand-written, so a whole write moves its
/// buffer only when it hands it back).
pub(crate) struct WriteAll<B: IoBuf> {
    send: Op<Send<B>>,
    total: usize,
}

pub(crate) fn write_all<B: IoBuf>(fd: &SharedFd, buf: B) -> WriteAll<B> {
    WriteAll {
        total: buf.bytes_init(),
        send: Op::new(Send {
            fd: fd.clone(),
            buf,
            offset: 0,
        }),
    }
}

impl<B: IoBuf> Future for WriteAll<B> {
    type Output = BufResult<usize, B>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let total = this.total;
        // Off its shard, the op reports the error (no send of the socket's
        // can complete there).
        if this.send.is_idle() && this.send.resources().offset == 0 && context::in_shard() {
            let send = this.send.resources();
            // After the socket's write-behind send (and its error), this
            // write may be one.
            match send.fd.poll_sent(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => return Poll::Ready((Err(error), this.send.take().buf)),
                Poll::Ready(Ok(())) => {}
            }
            match write_first(&send.fd, &send.buf) {
                Some(Ok(n)) if n >= total => return Poll::Ready((Ok(total), this.send.take().buf)),
                // A short direct send: the rest goes through the ring.
                Some(Ok(n)) => send.offset = n,
                Some(Err(error)) => return Poll::Ready((Err(error), this.send.take().buf)),
                None => {}
            }
        }
        loop {
            let result = std::task::ready!(this.send.poll_result(cx));
            let send = this.send.resources();
            match result {
                Ok(0) if send.offset < total => {
                    let error = io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!(
                            "the socket accepted no more bytes after {} of {total}",
                            send.offset
                        ),
                    );
                    return Poll::Ready((Err(error), this.send.take().buf));
                }
                Ok(n) => send.offset += n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Poll::Ready((Err(error), this.send.take().buf)),
            }
            if send.offset >= total {
                return Poll::Ready((Ok(total), this.send.take().buf));
            }
            this.send.restart();
        }
    }
}

/// The first send of a `write_all` on io_uring: a direct syscall or a
/// write-behind send, each of which completes it in this poll (see
/// `UringDriver::write_first`); `None` when it goes through the ring.
fn write_first<B: IoBuf>(fd: &SharedFd, buf: &B) -> Option<io::Result<usize>> {
    #[cfg(target_os = "linux")]
    {
        use crate::driver::Driver;
        if buf.bytes_init() == 0 {
            return None;
        }
        // SAFETY: an `IoBuf` has `bytes_init` initialized bytes at
        // `read_ptr`, which it does not change while borrowed.
        let bytes = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        context::with_current_driver(|_, driver| match driver {
            Driver::Uring(uring) => uring.write_first(fd, bytes),
            Driver::Poll(_) => None,
        })
        .flatten()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (fd, buf);
        None
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
        pub fn read<B: $crate::buf::IoBufMut>(
            &mut self,
            buf: B,
        ) -> impl std::future::Future<Output = $crate::buf::BufResult<usize, B>> + use<'_, B> {
            $crate::net::stream::read(&self.fd, buf)
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
        /// On io_uring a write of up to 4 KiB may be buffered (see
        /// [`Builder::buffered_writes`](crate::Builder::buffered_writes)):
        /// `Ok` then means the bytes were copied and their send queued, as
        /// a write into a kernel socket buffer means they were accepted.
        /// They go out in order before any later write's bytes (and
        /// before a write shutdown); an error their send gets is returned
        /// by the socket's next write.
        ///
        /// # Cancel safety
        ///
        /// Not cancel safe for data: if the future is dropped, an unknown
        /// prefix of `buf` has been sent. Memory safety holds as for
        #[doc = concat!("[`write`](", $kind, "::write).")]
        pub fn write_all<B: $crate::buf::IoBuf>(
            &mut self,
            buf: B,
        ) -> impl std::future::Future<Output = $crate::buf::BufResult<usize, B>> + use<'_, B> {
            $crate::net::stream::write_all(&self.fd, buf)
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
