//! The echo server loop the soak and the network tests share.

use ringshard::net::TcpStream;

/// Echoes `stream` until its peer closes or fails, reading into a buffer of
/// `capacity`.
pub async fn echo(mut stream: TcpStream, capacity: usize) {
    let mut buf = Vec::with_capacity(capacity);
    loop {
        let (res, back) = stream.read(buf).await;
        match res {
            Ok(n) if n > 0 => {}
            _ => return,
        }
        let (res, back) = stream.write_all(back).await;
        if res.is_err() {
            return;
        }
        buf = back;
        buf.clear();
    }
}
