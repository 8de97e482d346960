//! Every fd the runtime opens is close-on-exec, so a forked and exec'd
//! child never inherits a ring, an eventfd, an epoll instance or a socket.
//! Alone in its binary: it looks at every fd of the process.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{each_driver, runtime};
use ringshard::net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};
use ringshard::{spawn_on, ShardId};

fn open_fds() -> BTreeSet<u32> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Whether fd `fd` has `O_CLOEXEC`, from its fdinfo; `None` if it closed
/// meanwhile (the fd of the `read_dir` above, say).
fn cloexec(fd: u32) -> Option<bool> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    let flags = info.lines().find_map(|line| line.strip_prefix("flags:"))?;
    let flags = u32::from_str_radix(flags.trim(), 8).ok()?;
    Some(flags & libc::O_CLOEXEC as u32 != 0)
}

#[test]
fn every_fd_the_runtime_opens_is_close_on_exec() {
    each_driver(|builder| {
        let before = open_fds();
        let rt = runtime(builder, 2);
        let dir = std::env::temp_dir().join(format!("ringshard-cloexec-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let path = dir.clone();
        let (during, _kept) = rt.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let mut client = TcpStream::connect(addr).await.unwrap();
            let (mut served, _) = listener.accept().await.unwrap();
            client.write_all(b"ping".to_vec()).await.0.unwrap();
            let (res, _) = served.read(Vec::with_capacity(8)).await;
            res.unwrap();
            let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
            let unix = UnixListener::bind(&path).unwrap();
            let unix_client = UnixStream::connect(&path).await.unwrap();
            let (unix_served, _) = unix.accept().await.unwrap();
            // A cross-shard wake (MSG_RING dups the target ring's fd).
            spawn_on(ShardId::new(1), || async {
                ringshard::sleep(Duration::from_millis(5)).await;
            })
            .await
            .unwrap();
            let during = open_fds();
            let kept = (
                listener,
                client,
                served,
                udp,
                unix,
                unix_client,
                unix_served,
            );
            (during, kept)
        });
        let _ = std::fs::remove_file(&dir);
        let new: Vec<u32> = during.difference(&before).copied().collect();
        assert!(
            new.len() >= 9,
            "the runtime and the sockets opened fds: {new:?}"
        );
        let leaky: Vec<u32> = new
            .into_iter()
            .filter(|&fd| cloexec(fd) == Some(false))
            .collect();
        assert!(leaky.is_empty(), "fds without O_CLOEXEC: {leaky:?}");
        drop(rt);
    });
}
