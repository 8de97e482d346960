//! UDP: [`UdpSocket`].

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use socket2::{Domain, SockRef, Socket, Type};

use super::each_addr;
use super::tcp::{fd_traits, socket_addr};
use crate::buf::{BufResult, IoBuf, IoBufMut};
use crate::driver::fd::SharedFd;
use crate::driver::op::{Op, RecvMsg, SendMsg};

/// A UDP socket, bound to the shard that uses it. Its methods take `&self`,
/// so several tasks of the shard may send and receive at once.
///
/// ```
/// use ringshard::net::UdpSocket;
///
/// let rt = ringshard::Runtime::builder().worker_threads(1).build().unwrap();
/// rt.block_on(async {
///     let a = UdpSocket::bind("127.0.0.1:0").unwrap();
///     let b = UdpSocket::bind("127.0.0.1:0").unwrap();
///     let (res, _) = a.send_to(b"hi".to_vec(), b.local_addr().unwrap()).await;
///     res.unwrap();
///     let (res, buf) = b.recv_from(Vec::with_capacity(16)).await;
///     assert_eq!(res.unwrap().1, a.local_addr().unwrap());
///     assert_eq!(buf, b"hi");
/// });
/// ```
pub struct UdpSocket {
    fd: SharedFd,
}

impl UdpSocket {
    /// Binds a socket to `addr`, trying each resolved address in turn.
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<UdpSocket> {
        each_addr(addr, |addr| {
            let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
            socket.bind(&addr.into())?;
            Ok(UdpSocket {
                fd: SharedFd::from(socket),
            })
        })
    }

    /// Sets the default peer: [`send`](UdpSocket::send) goes there and only
    /// its datagrams are received.
    pub async fn connect<A: ToSocketAddrs>(&self, addr: A) -> io::Result<()> {
        each_addr(addr, |addr| SockRef::from(&self.fd).connect(&addr.into()))
    }

    /// Sends `buf` as one datagram to `target`.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future never frees `buf` while the kernel may still read
    /// it; the datagram may or may not have been sent.
    pub async fn send_to<B: IoBuf>(&self, buf: B, target: SocketAddr) -> BufResult<usize, B> {
        let send = SendMsg::new(self.fd.clone(), vec![buf], Some(target.into()));
        let (result, mut send) = Op::new(send).await;
        (result, send.bufs.pop().expect("one buffer in, one out"))
    }

    /// Receives one datagram into `buf` (from index 0 up to its capacity;
    /// the rest of a longer datagram is discarded) and returns its size and
    /// sender.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future never frees `buf` while the kernel may still write
    /// it (io_uring cancels the receive); a datagram received into it after
    /// the drop is lost with it.
    pub async fn recv_from<B: IoBufMut>(&self, buf: B) -> BufResult<(usize, SocketAddr), B> {
        let (result, mut recv) = Op::new(RecvMsg::new(self.fd.clone(), buf)).await;
        let result = result.and_then(|n| Ok((n, socket_addr(recv.commit(n))?)));
        (result, recv.buf)
    }

    /// Sends `buf` to the connected peer.
    ///
    /// # Cancel safety
    ///
    /// As for [`send_to`](UdpSocket::send_to).
    pub async fn send<B: IoBuf>(&self, buf: B) -> BufResult<usize, B> {
        super::stream::write(&self.fd, buf).await
    }

    /// Receives one datagram from the connected peer.
    ///
    /// # Cancel safety
    ///
    /// As for [`recv_from`](UdpSocket::recv_from).
    pub async fn recv<B: IoBufMut>(&self, buf: B) -> BufResult<usize, B> {
        super::stream::read_direct(&self.fd, buf, false).await
    }

    /// The address this socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        socket_addr(SockRef::from(&self.fd).local_addr()?)
    }

    /// The connected peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        socket_addr(SockRef::from(&self.fd).peer_addr()?)
    }

    /// Adopts a socket made by std (blocking or not: each driver sets the mode it needs).
    pub fn from_std(socket: std::net::UdpSocket) -> io::Result<UdpSocket> {
        Ok(UdpSocket {
            fd: SharedFd::new(socket.into()),
        })
    }
}

fd_traits!(UdpSocket);
