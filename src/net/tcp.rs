//! TCP: [`TcpListener`], [`TcpStream`] and its owned halves.

use std::io;
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use socket2::{Domain, SockAddr, SockRef, Socket, Type};

use super::poll_io::PollIo;
use super::{each_addr, stream::stream_io_methods};
use crate::driver::fd::SharedFd;
use crate::driver::op::{Connect, Op};

/// A TCP socket listening for connections, bound to the shard that uses it.
///
/// ```
/// use ringshard::net::{TcpListener, TcpStream};
/// use ringshard::prelude::*;
///
/// let rt = ringshard::Runtime::builder().worker_threads(1).build().unwrap();
/// rt.block_on(async {
///     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
///     let addr = listener.local_addr().unwrap();
///     let client = ringshard::spawn(async move {
///         let mut stream = TcpStream::connect(addr).await.unwrap();
///         let (res, _) = stream.write_all(b"ping".to_vec()).await;
///         res.unwrap();
///     });
///     let (mut stream, _peer) = listener.accept().await.unwrap();
///     let (res, buf) = stream.read_exact(Vec::with_capacity(4)).await;
///     res.unwrap();
///     assert_eq!(buf, b"ping");
///     client.await.unwrap();
/// });
/// ```
///
/// I/O objects stay on the shard that created them:
///
/// ```compile_fail
/// fn is_send<T: Send>() {}
/// is_send::<ringshard::net::TcpListener>();
/// ```
pub struct TcpListener {
    fd: SharedFd,
}

fn listen(addr: SocketAddr, reuseport: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if reuseport {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(TcpListener {
        fd: SharedFd::from(socket),
    })
}

impl TcpListener {
    /// Binds to `addr` with `SO_REUSEADDR` and starts listening (backlog
    /// 1024). Tries each resolved address in turn.
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        each_addr(addr, |addr| listen(addr, false))
    }

    /// As [`bind`](TcpListener::bind), plus `SO_REUSEPORT`: each shard binds
    /// its own listener to the same port and the kernel spreads the
    /// connections among them.
    pub fn bind_reuseport<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        each_addr(addr, |addr| listen(addr, true))
    }

    /// Waits for a connection.
    ///
    /// An error such as `EMFILE` or `ENFILE` (out of file descriptors,
    /// `raw_os_error() == Some(libc::EMFILE)`) is returned, not fatal: the
    /// connection stays in the kernel's backlog, and the listener keeps
    /// working once descriptors free up. Accepting again at once would
    /// fail again at once, so a server should back off: sleep a few
    /// milliseconds (the examples use 10 ms, and log once per back-off),
    /// then accept again. `tests/net_emfile.rs` holds 40 clients over the
    /// limit for 2 s this way at under 1% of a core.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before a connection is handed
    /// out, no connection is lost to a leak. With multishot accept (the
    /// io_uring default, see
    /// [`Builder::multishot_accept`](crate::Builder::multishot_accept)) and
    /// on epoll, a connection that arrives after the drop waits for the next
    /// `accept`. With one-shot accepts on io_uring, a connection the kernel
    /// accepts after the drop is closed at once (its peer sees EOF). A
    /// dropped listener closes the connections nobody took.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (fd, addr) = super::accept(&self.fd).await?;
        let stream = TcpStream {
            fd,
            poll: PollIo::default(),
        };
        let peer = addr.as_socket().map_or_else(|| stream.peer_addr(), Ok)?;
        Ok((stream, peer))
    }

    /// The address this listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        socket_addr(SockRef::from(&self.fd).local_addr()?)
    }

    /// Adopts a listener made by std (blocking or not: each driver sets the mode it needs).
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        Ok(TcpListener {
            fd: SharedFd::new(listener.into()),
        })
    }
}

pub(crate) fn socket_addr(addr: SockAddr) -> io::Result<SocketAddr> {
    addr.as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP socket address"))
}

/// A TCP connection, bound to the shard that uses it. I/O methods take owned
/// buffers and give them back with the result (see [`crate::buf`]).
///
/// ```compile_fail
/// fn is_send<T: Send>() {}
/// is_send::<ringshard::net::TcpStream>();
/// ```
pub struct TcpStream {
    fd: SharedFd,
    /// Poll-mode I/O's readiness waits (`crate::compat`).
    #[cfg_attr(
        not(any(feature = "tokio-io", feature = "futures-io", feature = "hyper")),
        allow(dead_code, reason = "used by the compat features")
    )]
    poll: PollIo,
}

impl TcpStream {
    /// Opens a connection to `addr`, trying each resolved address in turn.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped, the half-made socket is closed once the
    /// kernel is done with the connect; nothing leaks.
    pub async fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        let mut last = None;
        for addr in addr.to_socket_addrs()? {
            match TcpStream::connect_addr(addr).await {
                Ok(stream) => return Ok(stream),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to")
        }))
    }

    async fn connect_addr(addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        let connect = Connect {
            fd: SharedFd::from(socket),
            addr: Box::new(addr.into()),
            started: false,
        };
        let (result, connect) = Op::new(connect).await;
        result?;
        Ok(TcpStream {
            fd: connect.fd,
            poll: PollIo::default(),
        })
    }

    stream_io_methods!("TcpStream");

    /// Shuts down the read, write or both halves of the connection.
    ///
    /// A write shutdown comes after the bytes of every write that returned:
    /// with a buffered `write_all` still sending (see
    /// [`Builder::buffered_writes`](crate::Builder::buffered_writes)), it is
    /// made once that send is done.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.fd.shutdown(how)
    }

    /// Sets `TCP_NODELAY` (disables Nagle's algorithm when `true`).
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        SockRef::from(&self.fd).set_tcp_nodelay(nodelay)
    }

    /// Whether `TCP_NODELAY` is set.
    pub fn nodelay(&self) -> io::Result<bool> {
        SockRef::from(&self.fd).tcp_nodelay()
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        socket_addr(SockRef::from(&self.fd).peer_addr()?)
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        socket_addr(SockRef::from(&self.fd).local_addr()?)
    }

    /// Splits into a read half and a write half that two tasks of this
    /// shard can use at once. The socket closes when both halves (and every
    /// op still in flight) are gone.
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        (
            OwnedReadHalf {
                fd: self.fd.clone(),
                poll: PollIo::default(),
            },
            OwnedWriteHalf {
                fd: self.fd,
                poll: PollIo::default(),
            },
        )
    }

    /// Adopts a connected stream made by std (blocking or not: each driver sets the mode it needs).
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<TcpStream> {
        Ok(TcpStream {
            fd: SharedFd::new(stream.into()),
            poll: PollIo::default(),
        })
    }
}

/// The read half of a [`TcpStream`], from [`TcpStream::into_split`].
pub struct OwnedReadHalf {
    fd: SharedFd,
    /// Poll-mode I/O's readiness waits (`crate::compat`).
    #[cfg_attr(
        not(any(feature = "tokio-io", feature = "futures-io", feature = "hyper")),
        allow(dead_code, reason = "used by the compat features")
    )]
    poll: PollIo,
}

impl OwnedReadHalf {
    /// Reads into `buf` from index 0 up to its capacity, see [`TcpStream::read`].
    ///
    /// # Cancel safety
    ///
    /// As for [`TcpStream::read`].
    pub fn read<B: crate::buf::IoBufMut>(
        &mut self,
        buf: B,
    ) -> impl std::future::Future<Output = crate::buf::BufResult<usize, B>> + use<'_, B> {
        super::stream::read(&self.fd, buf)
    }

    /// Fills `buf` to its capacity, see [`TcpStream::read_exact`].
    ///
    /// # Cancel safety
    ///
    /// As for [`TcpStream::read_exact`].
    pub async fn read_exact<B: crate::buf::IoBufMut>(
        &mut self,
        buf: B,
    ) -> crate::buf::BufResult<usize, B> {
        super::stream::read_exact(&self.fd, buf).await
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        socket_addr(SockRef::from(&self.fd).peer_addr()?)
    }
}

/// The write half of a [`TcpStream`], from [`TcpStream::into_split`].
/// Dropping it shuts down the write direction (the peer sees EOF), as
/// tokio's does.
pub struct OwnedWriteHalf {
    fd: SharedFd,
    /// Poll-mode I/O's readiness waits (`crate::compat`).
    #[cfg_attr(
        not(any(feature = "tokio-io", feature = "futures-io", feature = "hyper")),
        allow(dead_code, reason = "used by the compat features")
    )]
    poll: PollIo,
}

impl OwnedWriteHalf {
    /// Writes some of `buf`, see [`TcpStream::write`].
    ///
    /// # Cancel safety
    ///
    /// As for [`TcpStream::write`].
    pub async fn write<B: crate::buf::IoBuf>(&mut self, buf: B) -> crate::buf::BufResult<usize, B> {
        super::stream::write(&self.fd, buf).await
    }

    /// Writes all of `buf`, see [`TcpStream::write_all`].
    ///
    /// # Cancel safety
    ///
    /// As for [`TcpStream::write_all`].
    pub fn write_all<B: crate::buf::IoBuf>(
        &mut self,
        buf: B,
    ) -> impl std::future::Future<Output = crate::buf::BufResult<usize, B>> + use<'_, B> {
        super::stream::write_all(&self.fd, buf)
    }

    /// Writes from several buffers, see [`TcpStream::writev`].
    ///
    /// # Cancel safety
    ///
    /// As for [`TcpStream::write`].
    pub async fn writev<B: crate::buf::IoBuf>(
        &mut self,
        bufs: Vec<B>,
    ) -> crate::buf::BufResult<usize, Vec<B>> {
        super::stream::writev(&self.fd, bufs).await
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        socket_addr(SockRef::from(&self.fd).peer_addr()?)
    }
}

impl Drop for OwnedWriteHalf {
    fn drop(&mut self) {
        // The peer may already be gone; nothing to report.
        let _ = self.fd.shutdown(Shutdown::Write);
    }
}

macro_rules! fd_traits {
    ($($name:ident),*) => {$(
        impl AsRawFd for $name {
            fn as_raw_fd(&self) -> RawFd {
                self.fd.raw()
            }
        }

        impl AsFd for $name {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.fd.as_fd()
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name)).field("fd", &self.fd.raw()).finish()
            }
        }
    )*};
}

pub(crate) use fd_traits;

/// A stream (or half) poll-mode I/O works on: its socket and its waits.
#[cfg_attr(
    not(any(feature = "tokio-io", feature = "futures-io", feature = "hyper")),
    allow(dead_code, reason = "used by the compat features")
)]
pub(crate) trait PollStream {
    fn poll_parts(&mut self) -> (&SharedFd, &mut PollIo);
}

macro_rules! poll_stream {
    ($($name:ident),*) => {$(
        impl $crate::net::tcp::PollStream for $name {
            fn poll_parts(&mut self) -> (&SharedFd, &mut $crate::net::poll_io::PollIo) {
                (&self.fd, &mut self.poll)
            }
        }
    )*};
}

pub(crate) use poll_stream;

poll_stream!(TcpStream, OwnedReadHalf, OwnedWriteHalf);

fd_traits!(TcpListener, TcpStream, OwnedReadHalf, OwnedWriteHalf);
