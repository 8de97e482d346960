//! `tokio::io::{AsyncRead, AsyncWrite}` for the stream types (feature `tokio-io`).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::ShardBound;
use crate::net::tcp::PollStream;
use crate::net::{OwnedReadHalf, OwnedWriteHalf, TcpStream, UnixStream};

fn poll_read(
    stream: &mut impl PollStream,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    let (fd, poll) = stream.poll_parts();
    // SAFETY: only written through (never de-initialized), and exactly the
    // `n` bytes the read reports are marked initialized below.
    let unfilled = unsafe { buf.unfilled_mut() };
    // SAFETY: `unfilled` is valid for writes of its length during the call.
    let n =
        ready!(unsafe { poll.poll_read(fd, cx, unfilled.as_mut_ptr().cast(), unfilled.len()) })?;
    // SAFETY: the read wrote `n` bytes at the start of `unfilled`.
    unsafe { buf.assume_init(n) };
    buf.advance(n);
    Poll::Ready(Ok(()))
}

macro_rules! tokio_read {
    ($($name:ty),*) => {$(
        /// Poll-mode reads; see [`crate::compat`] for cancel safety.
        impl AsyncRead for $name {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                poll_read(self.get_mut(), cx, buf)
            }
        }
    )*};
}

macro_rules! tokio_write {
    ($($name:ty),*) => {$(
        /// Poll-mode writes; see [`crate::compat`] for cancel safety.
        impl AsyncWrite for $name {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                let (fd, poll) = self.get_mut().poll_parts();
                poll.poll_write(fd, cx, buf)
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                let (fd, poll) = self.get_mut().poll_parts();
                poll.poll_write_vectored(fd, cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                true
            }

            /// Waits for a buffered `write_all`'s send (see
            /// [`Builder::buffered_writes`](crate::Builder::buffered_writes));
            /// poll-mode writes buffer nothing.
            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                let (fd, _) = self.get_mut().poll_parts();
                fd.poll_sent(cx)
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                let (fd, poll) = self.get_mut().poll_parts();
                poll.poll_shutdown(fd, cx)
            }
        }
    )*};
}

tokio_read!(TcpStream, OwnedReadHalf, UnixStream);
tokio_write!(TcpStream, OwnedWriteHalf, UnixStream);

/// Off its shard, a [`ShardBound`] reports an error instead of touching the value.
impl<T: AsyncRead + Unpin + 'static> AsyncRead for ShardBound<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().try_mut()?).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin + 'static> AsyncWrite for ShardBound<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().try_mut()?).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().try_mut()?).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.get().is_some_and(T::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().try_mut()?).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().try_mut()?).poll_shutdown(cx)
    }
}
