//! The ecosystem bridge: ringshard's sockets under the I/O traits of tokio,
//! futures and hyper (cargo features `tokio-io`, `futures-io`, `hyper`; all
//! off by default).
//!
//! With a feature on, [`TcpStream`](crate::net::TcpStream), its
//! [`OwnedReadHalf`](crate::net::OwnedReadHalf) and
//! [`OwnedWriteHalf`](crate::net::OwnedWriteHalf), and
//! [`UnixStream`](crate::net::UnixStream) implement that crate's traits in
//! *poll mode*: bytes move in non-blocking syscalls made during each call,
//! straight between the socket (or, on io_uring, the chunks its multishot
//! recv received) and the caller's buffer, with no staging copy and no
//! allocation per call. Between calls a socket only waits for readiness.
//!
//! # Cancel safety
//!
//! Every poll method is safe to stop calling at any point (a future built on
//! them may be dropped):
//!
//! - `poll_read` returns bytes only in `Ready`; `Pending` consumed nothing.
//! - `poll_write` and `poll_write_vectored` return `Pending` only when
//!   nothing was written, and never leave a write in flight: the bytes of a
//!   call that returned `Pending` are never sent later, whatever buffer comes
//!   next. Every byte reported written was handed to the socket.
//! - `poll_flush` waits only for the send of a buffered owned-buffer
//!   `write_all` (see
//!   [`Builder::buffered_writes`](crate::Builder::buffered_writes)), and
//!   returns the error that send got; poll-mode writes buffer nothing.
//!   `poll_shutdown` / `poll_close` send FIN after that send, at once
//!   otherwise.
//!
//! Mixing poll mode with the owned-buffer methods on one socket is correct:
//! both read through the same buffered path and the bytes dropped
//! owned-buffer reads left; a poll-mode write first hands the kernel what
//! io_uring has queued. The one caveat is the owned-buffer ops' own: the
//! bytes of a dropped owned write may or may not have been sent.
//!
//! Errors are returned as the socket reports them, never turned into an
//! end of stream. Polled off its shard, a socket returns an error.

#[cfg(feature = "futures-io")]
mod futures;
#[cfg(feature = "hyper")]
pub mod hyper;
#[cfg(feature = "tokio-io")]
mod tokio;

mod bound;
pub use bound::ShardBound;
