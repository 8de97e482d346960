//! A fault-injecting TCP proxy on plain threads, for tests that need a
//! misbehaving network: this machine's kernel has no `netem`.
//!
//! The proxy listens on loopback, connects each client it accepts to the
//! upstream address, and pumps bytes both ways through [`Fault`]. Every
//! blocking call has a timeout, so a pump never outlives its test by more
//! than a few seconds.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a pump waits on one read or write before it gives up.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// What the proxy does to the bytes it carries.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Carries everything as it comes.
    None,
    /// Forwards one byte per segment (`TCP_NODELAY`, one write per byte),
    /// both ways.
    Split,
    /// Sleeps this long before forwarding each chunk, both ways.
    Delay(Duration),
    /// After this many bytes from the client, resets both connections
    /// (`SO_LINGER` 0, then close).
    Reset(usize),
    /// After this many bytes from the client, shuts down the write side
    /// towards the server (it sees EOF) and keeps carrying its replies.
    HalfClose(usize),
    /// Stops reading the server's replies for this long after the first
    /// one, so the server's writes back up; then carries on.
    Stall(Duration),
}

/// A running proxy; dropping it stops accepting (pumps end with their
/// connections).
pub struct Proxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy in front of `upstream`.
    pub fn start(upstream: SocketAddr, fault: Fault) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let acceptor = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(upstream) else {
                            continue;
                        };
                        connect_pumps(client, server, fault);
                    }
                    Err(error) if error.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => return,
                }
            }
        });
        Proxy {
            addr,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn connect_pumps(client: TcpStream, server: TcpStream, fault: Fault) {
    for stream in [&client, &server] {
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    }
    let (client2, server2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    std::thread::spawn(move || upstream_pump(client, server, fault));
    std::thread::spawn(move || downstream_pump(server2, client2, fault));
}

/// Client to server.
fn upstream_pump(mut from: TcpStream, mut to: TcpStream, fault: Fault) {
    let mut carried = 0usize;
    let mut buf = [0u8; 8192];
    while let Some(n) = read_or_pass_end(&mut from, &to, &mut buf) {
        let mut chunk = &buf[..n];
        match fault {
            Fault::Reset(after) | Fault::HalfClose(after) if carried + n >= after => {
                chunk = &chunk[..after - carried];
                if forward(&mut to, chunk, fault).is_err() {
                    return;
                }
                if let Fault::Reset(_) = fault {
                    for stream in [&from, &to] {
                        let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
                        let _ = stream.shutdown(Shutdown::Both);
                    }
                    return;
                }
                let _ = to.shutdown(Shutdown::Write);
                // Swallow the rest of what the client sends.
                while matches!(from.read(&mut buf), Ok(n) if n > 0) {}
                return;
            }
            _ => {}
        }
        if forward(&mut to, chunk, fault).is_err() {
            return;
        }
        carried += n;
    }
}

/// Server to client.
fn downstream_pump(mut from: TcpStream, mut to: TcpStream, fault: Fault) {
    let mut buf = [0u8; 8192];
    let mut stalled = false;
    while let Some(n) = read_or_pass_end(&mut from, &to, &mut buf) {
        if forward(&mut to, &buf[..n], fault).is_err() {
            return;
        }
        if let Fault::Stall(pause) = fault {
            if !stalled {
                stalled = true;
                std::thread::sleep(pause);
            }
        }
    }
}

/// Reads what `from` has; at its end (or an error) passes the end on to
/// `to` and says `None`.
fn read_or_pass_end(from: &mut TcpStream, to: &TcpStream, buf: &mut [u8]) -> Option<usize> {
    match from.read(buf) {
        Ok(0) | Err(_) => {
            let _ = to.shutdown(Shutdown::Write);
            None
        }
        Ok(n) => Some(n),
    }
}

fn forward(to: &mut TcpStream, chunk: &[u8], fault: Fault) -> std::io::Result<()> {
    match fault {
        Fault::Split => chunk
            .iter()
            .try_for_each(|byte| to.write_all(std::slice::from_ref(byte))),
        Fault::Delay(delay) => {
            std::thread::sleep(delay);
            to.write_all(chunk)
        }
        _ => to.write_all(chunk),
    }
}
