//! Sockets whose I/O takes owned buffers: TCP, UDP and Unix streams.
//!
//! Every socket is bound to the shard that created it (`!Send`): its ops go
//! to that shard's ring. A shard that wants its own listener on a shared
//! port uses [`TcpListener::bind_reuseport`].
//!
//! Each op documents its cancel safety. The rule under all of them: dropping
//! an op's future never frees memory the kernel may still write, never
//! leaks a connection (a late accept or connect is closed), and releases the
//! buffer once the kernel is done with it. A socket's fd is closed only after
//! its last op in flight has completed, so its number is never reused under
//! an op.

pub(crate) mod poll_io;
mod stream;
pub(crate) mod tcp;
mod udp;
mod unix;

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::RawFd;

use socket2::SockAddr;

use crate::driver::fd::SharedFd;
use crate::driver::op::{Accept, AddrBuf, Op};

pub use std::net::Shutdown;
pub use tcp::{OwnedReadHalf, OwnedWriteHalf, TcpListener, TcpStream};
pub use udp::UdpSocket;
pub use unix::{UnixListener, UnixStream};

/// Runs `f` on each address `addr` resolves to until one succeeds.
fn each_addr<A: ToSocketAddrs, T>(
    addr: A,
    mut f: impl FnMut(SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    let mut last = None;
    for addr in addr.to_socket_addrs()? {
        match f(addr) {
            Ok(value) => return Ok(value),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        )
    }))
}

/// One accept on `listener`: the new socket and the peer address the kernel
/// reported.
async fn accept(listener: &SharedFd) -> io::Result<(SharedFd, SockAddr)> {
    while let Some(accepted) = accept_multishot(listener).await {
        // SAFETY: a successful accept returns a new fd nobody else owns.
        let fd = unsafe { SharedFd::from_raw(accepted?) };
        // A peer that reset right after the handshake has no address any
        // more (ENOTCONN): that connection is gone, take the next one.
        if let Ok(peer) = socket2::SockRef::from(&fd).peer_addr() {
            return Ok((fd, peer));
        }
    }
    let accept = Accept {
        fd: listener.clone(),
        addr: AddrBuf::new(),
    };
    let (result, accept) = Op::new(accept).await;
    let fd = result? as RawFd;
    // SAFETY: a successful accept returns a new fd nobody else owns.
    let fd = unsafe { SharedFd::from_raw(fd) };
    Ok((fd, accept.addr.to_sockaddr()))
}

/// An accept through the listener's multishot accept (io_uring); `None`
/// means use a single accept instead. Dropping it loses no connection: one
/// accepted meanwhile waits for the next accept.
async fn accept_multishot(listener: &SharedFd) -> Option<io::Result<RawFd>> {
    #[cfg(target_os = "linux")]
    {
        use crate::driver::uring::Accepted;
        use crate::driver::Driver;
        std::future::poll_fn(|cx| {
            let polled = crate::context::with_current_driver(|uid, driver| match driver {
                Driver::Uring(uring) => uring.accept_multishot(uid, listener, cx.waker()),
                Driver::Poll(_) => Accepted::Fallback,
            });
            match polled {
                None | Some(Accepted::Fallback) => std::task::Poll::Ready(None),
                Some(Accepted::Pending) => std::task::Poll::Pending,
                Some(Accepted::Ready(result)) => std::task::Poll::Ready(Some(result)),
            }
        })
        .await
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = listener;
        None
    }
}
