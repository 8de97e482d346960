//! hyper on a shard (feature `hyper`): the stream types implement
//! `hyper::rt::{Read, Write}`, [`ShardExecutor`] spawns hyper's background
//! tasks (HTTP/2 streams, connection drivers) on the current shard, and
//! [`ShardTimer`] gives hyper the shard's timer wheel.
//!
//! A per-core hyper server in a dozen lines (`!Send` state is fine):
//!
//! ```no_run
//! use std::{cell::Cell, convert::Infallible, rc::Rc};
//! use hyper::{server::conn::http1, service::service_fn, Response};
//! use ringshard::compat::hyper::ShardTimer;
//!
//! let rt = ringshard::Runtime::new()?;
//! rt.block_on_all(|_shard| async {
//!     let listener = ringshard::net::TcpListener::bind_reuseport("127.0.0.1:8080")?;
//!     let hits = Rc::new(Cell::new(0u64));
//!     loop {
//!         let (stream, _) = listener.accept().await?;
//!         let hits = hits.clone();
//!         let service = service_fn(move |_req| {
//!             hits.set(hits.get() + 1);
//!             let body = format!("request {} on this shard\n", hits.get());
//!             async move { Ok::<_, Infallible>(Response::new(body)) }
//!         });
//!         let conn = http1::Builder::new().timer(ShardTimer).serve_connection(stream, service);
//!         ringshard::spawn(async move { conn.await.ok() });
//!     }
//!     #[allow(unreachable_code)]
//!     Ok::<(), std::io::Error>(())
//! });
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! See the crate's `examples/http_server.rs` for a per-core server (HTTP/1
//! and HTTP/2 through `hyper_util::server::conn::auto`, a `!Send` service).

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Read, ReadBufCursor, Write};

use super::ShardBound;
use crate::net::tcp::PollStream;
use crate::net::{OwnedReadHalf, OwnedWriteHalf, TcpStream, UnixStream};

fn poll_read(
    stream: &mut impl PollStream,
    cx: &mut Context<'_>,
    mut buf: ReadBufCursor<'_>,
) -> Poll<io::Result<()>> {
    let (fd, poll) = stream.poll_parts();
    // SAFETY: only written through, and exactly the `n` bytes the read
    // reports are marked filled below.
    let n = unsafe {
        let dst = buf.as_mut();
        ready!(poll.poll_read(fd, cx, dst.as_mut_ptr().cast(), dst.len()))?
    };
    // SAFETY: the read initialized the first `n` bytes of the cursor.
    unsafe { buf.advance(n) };
    Poll::Ready(Ok(()))
}

macro_rules! hyper_read {
    ($($name:ty),*) => {$(
        /// Poll-mode reads; see [`crate::compat`] for cancel safety.
        impl Read for $name {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: ReadBufCursor<'_>,
            ) -> Poll<io::Result<()>> {
                poll_read(self.get_mut(), cx, buf)
            }
        }
    )*};
}

macro_rules! hyper_write {
    ($($name:ty),*) => {$(
        /// Poll-mode writes; see [`crate::compat`] for cancel safety.
        impl Write for $name {
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

hyper_read!(TcpStream, OwnedReadHalf, UnixStream);
hyper_write!(TcpStream, OwnedWriteHalf, UnixStream);

/// Off its shard, a [`ShardBound`] reports this instead of touching the value.
impl<T: Read + Unpin + 'static> Read for ShardBound<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().try_mut()?).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin + 'static> Write for ShardBound<T> {
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

/// A `hyper::rt::Executor` that spawns on the current shard: hyper's
/// background futures (HTTP/2 streams and connections, HTTP/1 client
/// connections) may be `!Send`, so a service may hold `Rc`s.
///
/// # Cancel safety
///
/// A spawned future is a detached task of the shard: it runs until it
/// finishes or the runtime shuts down (which drops it, cancelling its I/O
/// under the usual contract).
///
/// # Panics
///
/// `execute` panics when called off a ringshard shard, as
/// [`spawn`](crate::spawn) does; hyper calls it from the connection future,
/// which runs on the shard.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShardExecutor;

impl<F> hyper::rt::Executor<F> for ShardExecutor
where
    F: Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, future: F) {
        // Detached: hyper tracks these futures itself.
        drop(crate::spawn(future));
    }
}

/// A `hyper::rt::Timer` on the timer wheel of the shard that polls each
/// sleep (header read timeouts, HTTP/2 keep-alive pings, pool idle timers).
///
/// Its sleeps are honestly `Send + Sync`: a sleep holds only its deadline
/// and which shard's wheel it is registered on, and one moved to another
/// shard registers there when polled.
///
/// # Cancel safety
///
/// Dropping a sleep removes its timer from the wheel (from another shard,
/// the stale entry only causes one spurious wake); `reset` moves a sleep of
/// this timer in place and replaces any other.
///
/// # Panics
///
/// A sleep polled on a thread that runs no ringshard shard panics with a
/// message saying so (as [`ringshard::time::Sleep`](crate::time::Sleep)
/// does): there is no wheel to wait on there.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShardTimer;

/// One sleep of [`ShardTimer`].
struct ShardSleep(crate::time::Sleep);

impl Future for ShardSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl hyper::rt::Sleep for ShardSleep {}

impl hyper::rt::Timer for ShardTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(ShardSleep(crate::time::sleep(duration)))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(ShardSleep(crate::time::sleep_until(deadline)))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<ShardSleep>() {
            Some(mut ours) => ours.0.reset(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}
