//! Unix-domain streams: [`UnixListener`] and [`UnixStream`].

use std::io;
use std::mem::ManuallyDrop;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, RawFd};
use std::os::unix::net::SocketAddr;
use std::path::Path;

use socket2::{Domain, SockAddr, Socket, Type};

use super::poll_io::PollIo;
use super::stream::stream_io_methods;
use super::tcp::{fd_traits, poll_stream};
use crate::driver::fd::SharedFd;
use crate::driver::op::{Connect, Op};

/// A Unix-domain socket listening for connections.
///
/// ```
/// use ringshard::net::{UnixListener, UnixStream};
/// use ringshard::prelude::*;
///
/// let path = std::env::temp_dir().join(format!("ringshard-doc-{}.sock", std::process::id()));
/// let _ = std::fs::remove_file(&path);
/// let rt = ringshard::Runtime::builder().worker_threads(1).build().unwrap();
/// rt.block_on(async {
///     let listener = UnixListener::bind(&path).unwrap();
///     let mut client = UnixStream::connect(&path).await.unwrap();
///     let (mut server, _) = listener.accept().await.unwrap();
///     client.write_all(b"hi".to_vec()).await.0.unwrap();
///     let (res, buf) = server.read_exact(Vec::with_capacity(2)).await;
///     res.unwrap();
///     assert_eq!(buf, b"hi");
/// });
/// std::fs::remove_file(&path).unwrap();
/// ```
pub struct UnixListener {
    fd: SharedFd,
}

/// Runs `f` on std's view of the socket, which can represent every Unix
/// address (socket2's cannot build an unnamed one).
fn with_std<R>(fd: &SharedFd, f: impl FnOnce(&std::os::unix::net::UnixStream) -> R) -> R {
    // SAFETY: the fd is open for the duration of the borrow of `fd`, and the
    // ManuallyDrop keeps std from closing it.
    let stream =
        ManuallyDrop::new(unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd.raw()) });
    f(&stream)
}

impl UnixListener {
    /// Binds to the socket file `path` (which must not exist) and listens.
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixListener> {
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        socket.bind(&SockAddr::unix(path)?)?;
        socket.listen(1024)?;
        Ok(UnixListener {
            fd: SharedFd::from(socket),
        })
    }

    /// Waits for a connection.
    ///
    /// # Cancel safety
    ///
    /// As for [`TcpListener::accept`](crate::net::TcpListener::accept): a
    /// connection accepted after the future was dropped is closed.
    pub async fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        // std can represent an unnamed peer; socket2's address cannot.
        let (fd, _) = super::accept(&self.fd).await?;
        let stream = UnixStream {
            fd,
            poll: PollIo::default(),
        };
        let peer = stream.peer_addr()?;
        Ok((stream, peer))
    }

    /// The address this listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        with_std(&self.fd, |s| s.local_addr())
    }
}

/// A Unix-domain stream, with the same owned-buffer I/O as
/// [`TcpStream`](crate::net::TcpStream).
pub struct UnixStream {
    fd: SharedFd,
    /// Poll-mode I/O's readiness waits (`crate::compat`).
    #[cfg_attr(
        not(any(feature = "tokio-io", feature = "futures-io", feature = "hyper")),
        allow(dead_code, reason = "used by the compat features")
    )]
    poll: PollIo,
}

impl UnixStream {
    /// Connects to the socket file `path`.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped, the half-made socket is closed once the
    /// kernel is done with it.
    pub async fn connect<P: AsRef<Path>>(path: P) -> io::Result<UnixStream> {
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        let connect = Connect {
            fd: SharedFd::from(socket),
            addr: Box::new(SockAddr::unix(path)?),
            started: false,
        };
        let (result, connect) = Op::new(connect).await;
        result?;
        Ok(UnixStream {
            fd: connect.fd,
            poll: PollIo::default(),
        })
    }

    /// A connected pair of streams.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = Socket::pair(Domain::UNIX, Type::STREAM, None)?;
        Ok((
            UnixStream {
                fd: SharedFd::from(a),
                poll: PollIo::default(),
            },
            UnixStream {
                fd: SharedFd::from(b),
                poll: PollIo::default(),
            },
        ))
    }

    stream_io_methods!("UnixStream");

    /// Shuts down the read, write or both halves of the connection.
    ///
    /// A write shutdown comes after the bytes of every write that returned:
    /// with a buffered `write_all` still sending (see
    /// [`Builder::buffered_writes`](crate::Builder::buffered_writes)), it is
    /// made once that send is done.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.fd.shutdown(how)
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        with_std(&self.fd, |s| s.peer_addr())
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        with_std(&self.fd, |s| s.local_addr())
    }
}

fd_traits!(UnixListener, UnixStream);
poll_stream!(UnixStream);
