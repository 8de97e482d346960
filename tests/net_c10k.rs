//! c10k: 10,000 concurrent connections from a separate client process (this
//! test binary re-run as `c10k_client_process`, a tokio client), ten
//! verified 1 KiB echoes on each, no error, on both drivers. Prints the
//! server's heap per idle connection (counted by a tracking allocator;
//! the RSS of a process that reuses freed memory says little) and the
//! time the echoes took.

#[path = "../examples/soak/alloc.rs"]
mod alloc;
mod common;

#[global_allocator]
static HEAP: alloc::Tracking = alloc::Tracking;

use std::cell::Cell;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::{each_driver, raise_fd_limit, runtime};
use ringshard::net::TcpListener;
use ringshard::{sleep, spawn};

const CONNECTIONS: usize = 10_000;
const ECHOES: usize = 10;
const MESSAGE: usize = 1024;
const CLIENT_ENV: &str = "RINGSHARD_C10K_SERVER";

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// The message `round` of connection `conn`: distinct per both.
fn message(conn: usize, round: usize) -> Vec<u8> {
    (0..MESSAGE)
        .map(|i| (i.wrapping_mul(31) ^ conn.wrapping_mul(7) ^ round.wrapping_mul(131)) as u8)
        .collect()
}

#[test]
fn ten_thousand_connections_echo_without_error() {
    raise_fd_limit(CONNECTIONS as u64 + 1000);
    each_driver(|builder| {
        let rt = runtime(builder, 1);
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let accepted = Rc::new(Cell::new(0usize));
            let count = accepted.clone();
            let server = spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    count.set(count.get() + 1);
                    spawn(common::echo(stream, MESSAGE));
                }
            });
            let (rss_before, heap_before) = (rss(), alloc::live_bytes());
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "c10k_client_process",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CLIENT_ENV, addr.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("client process");
            let mut stdin = child.stdin.take().unwrap();
            let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
            let stdout = BufReader::new(child.stdout.take().unwrap());
            std::thread::spawn(move || {
                for line in stdout.lines().map_while(Result::ok) {
                    let _ = lines_tx.send(line);
                }
            });
            // Lines from the client, while the shard keeps serving.
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut next_line = async || loop {
                match lines.try_recv() {
                    Ok(line) => return line,
                    Err(std::sync::mpsc::TryRecvError::Empty) => {
                        assert!(Instant::now() < deadline, "the client process hung");
                        sleep(Duration::from_millis(5)).await;
                    }
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        panic!("the client process died: {:?}", child.try_wait())
                    }
                }
            };
            let connected = loop {
                let line = next_line().await;
                // The harness may have printed on the same line first.
                if let Some((_, rest)) = line.split_once("CONNECTED ") {
                    break rest.parse::<usize>().unwrap();
                }
            };
            assert_eq!(connected, CONNECTIONS);
            while accepted.get() < CONNECTIONS {
                assert!(Instant::now() < deadline, "accepted {}", accepted.get());
                sleep(Duration::from_millis(5)).await;
            }
            sleep(Duration::from_millis(100)).await;
            let heap = (alloc::live_bytes().saturating_sub(heap_before)) / CONNECTIONS;
            let resident = (rss().saturating_sub(rss_before)) / CONNECTIONS as u64;
            writeln!(stdin, "go").unwrap();
            let began = Instant::now();
            let done = loop {
                let line = next_line().await;
                if let Some((_, rest)) = line.split_once("DONE ") {
                    break rest.to_string();
                }
            };
            let took = began.elapsed();
            eprintln!(
                "c10k: {CONNECTIONS} connections, server heap {heap} B (RSS {resident} B) per \
                 idle connection, {} verified echoes in {took:?}; client says {done}",
                CONNECTIONS * ECHOES
            );
            assert_eq!(done, format!("errors=0 echoes={}", CONNECTIONS * ECHOES));
            server.abort();
            drop(stdin);
            let status = child.wait().unwrap();
            assert!(status.success(), "client: {status}");
        });
    });
}

/// The client side, run in its own process by the test above; does
/// nothing in a normal test run.
#[test]
fn c10k_client_process() {
    let Ok(addr) = std::env::var(CLIENT_ENV) else {
        return;
    };
    raise_fd_limit(CONNECTIONS as u64 + 1000);
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut streams = Vec::with_capacity(CONNECTIONS);
        while streams.len() < CONNECTIONS {
            // Batches within the listener's backlog.
            let batch: Vec<_> = (0..(CONNECTIONS - streams.len()).min(500))
                .map(|_| tokio::spawn(tokio::net::TcpStream::connect(addr)))
                .collect();
            for connect in batch {
                streams.push(connect.await.unwrap().expect("connect"));
            }
        }
        println!("CONNECTED {}", streams.len());
        std::io::stdout().flush().unwrap();
        let mut go = String::new();
        std::io::stdin().read_line(&mut go).unwrap();
        let tasks: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(conn, mut stream)| {
                tokio::spawn(async move {
                    let mut ok = 0;
                    for round in 0..ECHOES {
                        let sent = message(conn, round);
                        let mut got = vec![0u8; MESSAGE];
                        let echo = async {
                            stream.write_all(&sent).await?;
                            stream.read_exact(&mut got).await
                        };
                        match tokio::time::timeout(Duration::from_secs(60), echo).await {
                            Ok(Ok(_)) if got == sent => ok += 1,
                            _ => return ok,
                        }
                    }
                    ok
                })
            })
            .collect();
        let mut echoes = 0;
        for task in tasks {
            echoes += task.await.unwrap_or(0);
        }
        let errors = CONNECTIONS * ECHOES - echoes;
        println!("DONE errors={errors} echoes={echoes}");
        std::io::stdout().flush().unwrap();
    });
}
