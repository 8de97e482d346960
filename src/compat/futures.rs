//! `futures_io::{AsyncRead, AsyncWrite}` for the stream types (feature `futures-io`).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_io::{AsyncRead, AsyncWrite};

use super::ShardBound;
use crate::net::tcp::PollStream;
use crate::net::{OwnedReadHalf, OwnedWriteHalf, TcpStream, UnixStream};

macro_rules! futures_read {
    ($($name:ty),*) => {$(
        /// Poll-mode reads; see [`crate::compat`] for cancel safety.
        impl AsyncRead for $name {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<io::Result<usize>> {
                let (fd, poll) = self.get_mut().poll_parts();
                // SAFETY: `buf` is valid for writes of its length.
                unsafe { poll.poll_read(fd, cx, buf.as_mut_ptr(), buf.len()) }
            }
        }
    )*};
}

macro_rules! futures_write {
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

            /// Waits for a buffered `write_all`'s send (see
            /// [`Builder::buffered_writes`](crate::Builder::buffered_writes));
            /// poll-mode writes buffer nothing.
            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                let (fd, _) = self.get_mut().poll_parts();
                fd.poll_sent(cx)
            }

            fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                let (fd, poll) = self.get_mut().poll_parts();
                poll.poll_shutdown(fd, cx)
            }
        }
    )*};
}

futures_read!(TcpStream, OwnedReadHalf, UnixStream);
futures_write!(TcpStream, OwnedWriteHalf, UnixStream);

/// Off its shard, a [`ShardBound`] reports an error instead of touching the value.
impl<T: AsyncRead + Unpin + 'static> AsyncRead for ShardBound<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
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

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().try_mut()?).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().try_mut()?).poll_close(cx)
    }
}
