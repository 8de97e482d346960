//! The echo servers `benches/echo.rs` and `examples/echo_bench.rs` load:
//! ringshard, tokio and monoio, each serving in a child process of the
//! bench (the same executable, run with `--serve`), pinned to the server
//! CPUs, so its CPU time is its own.
//!
//! Every server reads into a buffer of [`BUFFER`] bytes and writes back what
//! it read with `write_all`, one task per connection.

use std::io;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

pub const BUFFER: usize = 16 * 1024;

/// A server child process.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Server {
    /// Starts server `kind` on `shards` threads pinned to `cpus`.
    ///
    /// `kind` is `ringshard`, `ringshard-epoll` (the readiness driver),
    /// `ringshard:SPEC` (`RINGSHARD_URING_TUNE=SPEC`, see `Tuning` in
    /// `src/driver/uring/mod.rs`), `tokio` (`current_thread`, or
    /// `multi_thread` for more than one shard) or `monoio` (one runtime per
    /// shard, all on one `SO_REUSEPORT` port).
    pub fn start(kind: &str, cpus: &[usize], shards: usize) -> io::Result<Server> {
        Server::start_under(&[], kind, cpus, shards)
    }

    /// [`start`](Server::start), run under `wrapper` (a program and its
    /// flags, such as `valgrind --tool=callgrind`), which must keep the
    /// server's pid and stdout.
    pub fn start_under(
        wrapper: &[&str],
        kind: &str,
        cpus: &[usize],
        shards: usize,
    ) -> io::Result<Server> {
        let (base, tune) = kind.split_once(':').unwrap_or((kind, ""));
        let exe = std::env::current_exe()?;
        let mut command = match wrapper.split_first() {
            None => Command::new(&exe),
            Some((program, flags)) => {
                let mut command = Command::new(program);
                command.args(flags).arg(&exe);
                command
            }
        };
        command.env_remove("RINGSHARD_DRIVER");
        let base = match base {
            "ringshard-epoll" => {
                command.env("RINGSHARD_DRIVER", "epoll");
                "ringshard"
            }
            "ringshard-uring" => {
                command.env("RINGSHARD_DRIVER", "uring");
                "ringshard"
            }
            "ringshard" | "tokio" | "monoio" => base,
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "unknown server {other:?}: ringshard[-epoll|-uring][:TUNE], tokio, monoio"
                    ),
                ));
            }
        };
        if base == "ringshard" {
            command.env("RINGSHARD_URING_TUNE", tune);
        }
        let cpu_list: Vec<String> = cpus.iter().map(usize::to_string).collect();
        command.args(["--serve", base, &cpu_list.join(","), &shards.to_string()]);
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        match announced(&mut child, kind) {
            Ok(addr) => Ok(Server { child, addr }),
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(error)
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address the server child announced as its first line of stdout,
/// or why it did not within a minute (it exited, printed something else,
/// or hangs: monoio's server does under valgrind 3.19).
fn announced(child: &mut Child, kind: &str) -> io::Result<SocketAddr> {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(read.map(|_| line));
    });
    let failed = |what: String| io::Error::other(format!("server {kind}: {what}"));
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(Ok(line)) => line
            .trim()
            .parse()
            .map_err(|_| failed(format!("exited or printed {line:?} instead of its address"))),
        Ok(Err(error)) => Err(failed(error.to_string())),
        Err(_) => Err(failed("no address within 60 s".into())),
    }
}

/// In a server child (`--serve KIND CPUS SHARDS` on the command line),
/// serves until killed, or until the parent goes (its end of our stdin
/// closes), and returns true; elsewhere returns false.
pub fn serve_if_child(args: &[String]) -> bool {
    let Some(i) = args.iter().position(|a| a == "--serve") else {
        return false;
    };
    let parsed = (|| {
        let kind = args.get(i + 1)?.as_str();
        let cpus: Vec<usize> = args
            .get(i + 2)?
            .split(',')
            .map(|cpu| cpu.parse().ok())
            .collect::<Option<_>>()?;
        let shards: usize = args.get(i + 3)?.parse().ok()?;
        Some((kind, cpus, shards))
    })();
    let Some((kind, cpus, shards)) = parsed else {
        eprintln!("usage: --serve ringshard|tokio|monoio CPU[,CPU...] SHARDS");
        std::process::exit(2);
    };
    std::thread::spawn(|| {
        use std::io::Read;
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    super::pin_to(&cpus).expect("pin server");
    match kind {
        "ringshard" => ringshard_server(shards, cpus.len() >= shards),
        "tokio" => tokio_server(shards),
        "monoio" => monoio_server(shards),
        _ => panic!("unknown server {kind}"),
    }
    true
}

fn ringshard_server(shards: usize, pin: bool) {
    use ringshard::net::TcpListener;
    use ringshard::ShardId;
    let rt = ringshard::Runtime::builder()
        .worker_threads(shards)
        .pin_threads(pin)
        .build()
        .unwrap();
    async fn serve(listener: TcpListener) {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                // Out of descriptors, say: wait rather than spin.
                ringshard::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            stream.set_nodelay(true).unwrap();
            ringshard::spawn(async move {
                let mut buf = Vec::with_capacity(BUFFER);
                loop {
                    let (res, read) = stream.read(buf).await;
                    if !matches!(res, Ok(n) if n > 0) {
                        return;
                    }
                    let (res, written) = stream.write_all(read).await;
                    if res.is_err() {
                        return;
                    }
                    buf = written;
                }
            });
        }
    }
    rt.block_on(async move {
        // Shard 0 picks a free port; the others join it with SO_REUSEPORT.
        let first = TcpListener::bind_reuseport("127.0.0.1:0").unwrap();
        let addr = first.local_addr().unwrap();
        for index in 1..shards {
            ringshard::spawn_on(ShardId::new(index), move || async move {
                serve(TcpListener::bind_reuseport(addr).unwrap()).await
            });
        }
        super::announce(addr);
        serve(first).await
    });
}

fn tokio_server(shards: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = if shards == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(shards);
        builder
    }
    .enable_all()
    .build()
    .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        super::announce(listener.local_addr().unwrap());
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; BUFFER];
                loop {
                    let n = match stream.read(&mut buf).await {
                        Ok(n) if n > 0 => n,
                        _ => return,
                    };
                    if stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

fn monoio_server(shards: usize) {
    use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
    use monoio::net::TcpListener;
    fn serve(listener: std::net::TcpListener) {
        let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async move {
            // Registered with the runtime, so made inside it.
            let listener = TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    monoio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                stream.set_nodelay(true).unwrap();
                monoio::spawn(async move {
                    let mut buf = Vec::with_capacity(BUFFER);
                    loop {
                        let (res, read) = stream.read(buf).await;
                        if !matches!(res, Ok(n) if n > 0) {
                            return;
                        }
                        let (res, written) = stream.write_all(read).await;
                        if res.is_err() {
                            return;
                        }
                        buf = written;
                    }
                });
            }
        });
    }
    // Bound here so the port is known before any runtime starts; each
    // thread's runtime takes its own SO_REUSEPORT listener on that port.
    // A server thread that dies takes the process with it (no half server).
    let first = bind_reuseport("127.0.0.1:0".parse().unwrap());
    let addr = first.local_addr().unwrap();
    let mut listeners = vec![first];
    listeners.extend((1..shards).map(|_| bind_reuseport(addr)));
    let threads: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            std::thread::spawn(move || {
                let served =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| serve(listener)));
                if served.is_err() {
                    std::process::exit(101);
                }
            })
        })
        .collect();
    super::announce(addr);
    for thread in threads {
        let _ = thread.join();
    }
}

/// A std listener on `addr` with SO_REUSEPORT (for monoio's shards).
fn bind_reuseport(addr: SocketAddr) -> std::net::TcpListener {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_reuse_port(true).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket.bind(&addr.into()).unwrap();
    socket.listen(1024).unwrap();
    socket.set_nonblocking(true).unwrap();
    socket.into()
}
