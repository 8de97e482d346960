//! hyper on ringshard (feature `hyper`), on both drivers: HTTP/1 and HTTP/2
//! servers and clients with `!Send` services, bodies from empty to 1 MiB and
//! chunked, 64 concurrent HTTP/2 streams, keep-alive reuse, a header read
//! timeout through `ShardTimer`, an HTTP/1.1 upgrade, `hyper_util`'s auto
//! server, and curl against the example server.

mod common;

use std::cell::Cell;
use std::convert::Infallible;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use ringshard::compat::hyper::{ShardExecutor, ShardTimer};
use ringshard::compat::ShardBound;
use ringshard::net::{TcpListener, TcpStream};

type Body = UnsyncBoxBody<Bytes, hyper::Error>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// A body of `parts` frames (sent chunked: it has no length).
fn chunked(parts: Vec<Bytes>) -> Body {
    let frames = futures_util::stream::iter(
        parts
            .into_iter()
            .map(|part| Ok::<_, hyper::Error>(Frame::data(part))),
    );
    StreamBody::new(frames).boxed_unsync()
}

/// The byte at position `i` of a test body.
fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

fn body_of(len: usize) -> Bytes {
    (0..len).map(pattern).collect::<Vec<u8>>().into()
}

/// The sizes every round trip sends.
const SIZES: [usize; 5] = [0, 1, 1536, 70 * 1024, 1 << 20];

/// The test service: echoes the request body (`/echo`), answers a chunked
/// body (`/chunked`), and counts requests in a `!Send` counter.
async fn handle(req: Request<Incoming>, hits: Rc<Cell<u64>>) -> Result<Response<Body>, Infallible> {
    hits.set(hits.get() + 1);
    let response = match req.uri().path() {
        "/chunked" => Response::new(chunked(
            (0..10)
                .map(|i| Bytes::from(vec![b'a' + i as u8; 1000 + i]))
                .collect(),
        )),
        "/hits" => Response::new(full(hits.get().to_string())),
        _ => match req.into_body().collect().await {
            Ok(body) => Response::new(full(body.to_bytes())),
            Err(error) => Response::builder()
                .status(StatusCode::BAD_REQUEST)
                .body(full(error.to_string()))
                .unwrap(),
        },
    };
    Ok(response)
}

/// Serves HTTP/1 or HTTP/2 connections on `listener`; returns the count of
/// connections accepted.
fn serve(listener: TcpListener, http2: bool) -> Rc<Cell<usize>> {
    let connections = Rc::new(Cell::new(0));
    let accepted = connections.clone();
    ringshard::spawn(async move {
        let hits = Rc::new(Cell::new(0));
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            accepted.set(accepted.get() + 1);
            let hits = hits.clone();
            let service = service_fn(move |req| handle(req, hits.clone()));
            ringshard::spawn(async move {
                let _ = if http2 {
                    hyper::server::conn::http2::Builder::new(ShardExecutor)
                        .timer(ShardTimer)
                        .serve_connection(stream, service)
                        .await
                } else {
                    hyper::server::conn::http1::Builder::new()
                        .timer(ShardTimer)
                        .serve_connection(stream, service)
                        .await
                };
            });
        }
    });
    connections
}

async fn expect_body(response: Response<Incoming>, expected: &[u8]) {
    assert_eq!(response.status(), StatusCode::OK);
    let got = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "the body arrives intact");
}

#[test]
fn http1_server_and_client_bodies_chunked_and_keep_alive() {
    common::each_driver(|builder| {
        let rt = common::runtime(builder, 1);
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let connections = serve(listener, false);
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(stream).await.unwrap();
            ringshard::spawn(conn);
            for size in SIZES {
                let body = body_of(size);
                let req = Request::post("/echo").body(full(body.clone())).unwrap();
                expect_body(sender.send_request(req).await.unwrap(), &body).await;
            }
            // A chunked request body and a chunked response.
            let parts: Vec<Bytes> = (0..50).map(|i| body_of(i * 300 + 1)).collect();
            let whole: Vec<u8> = parts.concat();
            let req = Request::post("/echo").body(chunked(parts)).unwrap();
            expect_body(sender.send_request(req).await.unwrap(), &whole).await;
            let req = Request::get("/chunked").body(full("")).unwrap();
            let response = sender.send_request(req).await.unwrap();
            assert!(response.headers().get("content-length").is_none());
            let expected: Vec<u8> = (0..10)
                .flat_map(|i| vec![b'a' + i as u8; 1000 + i])
                .collect();
            expect_body(response, &expected).await;
            assert_eq!(connections.get(), 1, "every request reused one connection");
        });
    });
}

#[test]
fn http2_server_and_client_bodies_and_64_concurrent_streams() {
    common::each_driver(|builder| {
        let rt = common::runtime(builder, 1);
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let connections = serve(listener, true);
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http2::Builder::new(ShardExecutor)
                .timer(ShardTimer)
                .handshake(stream)
                .await
                .unwrap();
            ringshard::spawn(conn);
            for size in SIZES {
                let body = body_of(size);
                let req = Request::post("/echo").body(full(body.clone())).unwrap();
                expect_body(sender.send_request(req).await.unwrap(), &body).await;
            }
            let parts: Vec<Bytes> = (0..50).map(|i| body_of(i * 300 + 1)).collect();
            let whole: Vec<u8> = parts.concat();
            let req = Request::post("/echo").body(chunked(parts)).unwrap();
            expect_body(sender.send_request(req).await.unwrap(), &whole).await;

            // 64 streams at once on the one connection, each its own body.
            let started = Instant::now();
            let tasks: Vec<_> = (0..64)
                .map(|i| {
                    let mut sender = sender.clone();
                    ringshard::spawn(async move {
                        let body = body_of(i * 1000 + 7);
                        let req = Request::post("/echo").body(full(body.clone())).unwrap();
                        let response = sender.send_request(req).await.unwrap();
                        expect_body(response, &body).await;
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            assert!(started.elapsed() < Duration::from_secs(20));
            assert_eq!(connections.get(), 1);
        });
    });
}

/// `header_read_timeout` through `ShardTimer`: a client that connects and
/// sends nothing is disconnected.
#[test]
fn a_header_read_timeout_closes_an_idle_connection() {
    common::each_driver(|builder| {
        let rt = common::runtime(builder, 1);
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = ringshard::spawn(async move {
                let (stream, _) = listener.accept().await.unwrap();
                let service = service_fn(|req| handle(req, Rc::new(Cell::new(0))));
                let started = Instant::now();
                let result = hyper::server::conn::http1::Builder::new()
                    .timer(ShardTimer)
                    .header_read_timeout(Duration::from_millis(200))
                    .serve_connection(stream, service)
                    .await;
                (result, started.elapsed())
            });
            let mut idle = TcpStream::connect(addr).await.unwrap();
            let (result, waited) = ringshard::timeout(Duration::from_secs(10), server)
                .await
                .expect("the timeout fires")
                .unwrap();
            let error = result.expect_err("a timed-out connection is an error");
            assert!(error.is_timeout(), "{error}");
            assert!(
                waited >= Duration::from_millis(200),
                "not early: {waited:?}"
            );
            assert!(waited < Duration::from_secs(5), "{waited:?}");
            // The client sees the connection closed.
            let (n, _) = idle.read(Vec::with_capacity(64)).await;
            assert!(matches!(n, Ok(0) | Err(_)));
        });
    });
}

/// An HTTP/1.1 `Upgrade` round trip: both sides hand hyper a
/// `ShardBound<TcpStream>` (upgrades need a `Send` I/O), then talk a
/// protocol of their own over the upgraded connection.
#[test]
fn an_http1_upgrade_round_trip() {
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    common::each_driver(|builder| {
        let rt = common::runtime(builder, 1);
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = ringshard::spawn(async move {
                let (stream, _) = listener.accept().await.unwrap();
                let service = service_fn(|mut req: Request<Incoming>| async move {
                    assert_eq!(req.headers()["upgrade"], "ping-pong");
                    ringshard::spawn(async move {
                        let upgraded = hyper::upgrade::on(&mut req).await.unwrap();
                        let mut io = TokioIo::new(upgraded);
                        let mut buf = [0u8; 4];
                        io.read_exact(&mut buf).await.unwrap();
                        assert_eq!(&buf, b"ping");
                        io.write_all(b"pong").await.unwrap();
                        io.shutdown().await.unwrap();
                    });
                    let response = Response::builder()
                        .status(StatusCode::SWITCHING_PROTOCOLS)
                        .header("upgrade", "ping-pong")
                        .header("connection", "upgrade")
                        .body(full(""))
                        .unwrap();
                    Ok::<_, Infallible>(response)
                });
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(ShardBound::new(stream), service)
                    .with_upgrades()
                    .await
                    .unwrap();
            });
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(ShardBound::new(stream))
                .await
                .unwrap();
            ringshard::spawn(async move { conn.with_upgrades().await.unwrap() });
            let req = Request::get("/")
                .header("upgrade", "ping-pong")
                .header("connection", "upgrade")
                .body(full(""))
                .unwrap();
            let response = sender.send_request(req).await.unwrap();
            assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
            let upgraded = hyper::upgrade::on(response).await.unwrap();
            // The upgraded I/O is our own stream underneath.
            let parts = upgraded
                .downcast::<ShardBound<TcpStream>>()
                .expect("a ShardBound<TcpStream>");
            let mut stream = parts.io.into_inner().expect("on its shard");
            assert!(parts.read_buf.is_empty());
            stream.write_all(b"ping".to_vec()).await.0.unwrap();
            let (n, buf) = stream.read_exact(Vec::with_capacity(4)).await;
            n.unwrap();
            assert_eq!(buf, b"pong");
            ringshard::timeout(Duration::from_secs(10), server)
                .await
                .expect("the server side finishes")
                .unwrap();
        });
    });
}

/// `hyper_util`'s auto server speaks both versions on one listener.
#[test]
fn the_auto_server_serves_http1_and_http2() {
    common::each_driver(|builder| {
        let rt = common::runtime(builder, 1);
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            ringshard::spawn(async move {
                let hits = Rc::new(Cell::new(0));
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    let hits = hits.clone();
                    let service = service_fn(move |req| handle(req, hits.clone()));
                    ringshard::spawn(async move {
                        let builder = hyper_util::server::conn::auto::Builder::new(ShardExecutor);
                        let _ = builder.serve_connection(stream, service).await;
                    });
                }
            });
            let body = body_of(100_000);
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut h1, conn) = hyper::client::conn::http1::handshake(stream).await.unwrap();
            ringshard::spawn(conn);
            let req = Request::post("/echo").body(full(body.clone())).unwrap();
            expect_body(h1.send_request(req).await.unwrap(), &body).await;

            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut h2, conn) = hyper::client::conn::http2::handshake(ShardExecutor, stream)
                .await
                .unwrap();
            ringshard::spawn(conn);
            let req = Request::post("/echo").body(full(body.clone())).unwrap();
            let response = h2.send_request(req).await.unwrap();
            assert_eq!(response.version(), hyper::Version::HTTP_2);
            expect_body(response, &body).await;
            let req = Request::get("/hits").body(full("")).unwrap();
            expect_body(h2.send_request(req).await.unwrap(), b"3").await;
        });
    });
}

/// A free loopback port (bound and released; the examples bind it with
/// `SO_REUSEPORT` on every shard).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts an example server and waits for its first line.
fn start(name: &str, args: &[&str], driver: &str) -> std::process::Child {
    use std::io::BufRead;
    let mut child = std::process::Command::new(common::example(name, &["hyper"]))
        .args(args)
        .env("RINGSHARD_DRIVER", driver)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains(" on http://"), "{name} started: {line:?}");
    let addr = line
        .trim()
        .rsplit("http://")
        .next()
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    common::wait_listening(addr);
    eprint!("{line}");
    // Keep reading, so the server's later lines never meet a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::stderr()));
    child
}

/// `curl` with `args`; returns its stdout.
fn curl(args: &[&str]) -> String {
    let output = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl is installed");
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// curl, an outside client, over HTTP/1.1 and h2c (prior knowledge) against
/// the example server, which then shuts down gracefully on SIGTERM. (Not
/// `--for`: in a fresh clone another test may be building an example
/// meanwhile, and a short `--for` ran out before curl got its turn.)
#[test]
fn curl_against_the_example_server_http1_and_h2c() {
    for driver in ["uring", "epoll"] {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut server = start(
            "http_server",
            &["--shards", "2", "--addr", &addr, "--for", "120"],
            driver,
        );
        let url = format!("http://{addr}/");
        // Three requests on one keep-alive connection.
        let out = curl(&["--http1.1", "-w", "|%{http_version}\n", &url, &url, &url]);
        assert_eq!(out.matches("hello from shard").count(), 3, "{out}");
        assert_eq!(out.matches("|1.1\n").count(), 3, "{driver}: {out}");
        // One request per connection: this curl (7.88) fails its second
        // request on a reused h2c connection with hyper on tokio too.
        for _ in 0..3 {
            let out = curl(&["--http2-prior-knowledge", "-w", "|%{http_version}", &url]);
            assert!(out.starts_with("hello from shard"), "{out}");
            assert!(out.ends_with("|2"), "{driver}: {out}");
        }
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(
            unsafe { libc::kill(server.id() as libc::pid_t, libc::SIGTERM) },
            0
        );
        let status = server.wait().unwrap();
        assert!(
            status.success(),
            "the server exits cleanly after SIGTERM: {status}"
        );
    }
}

/// An axum `Router` through `TowerToHyperService`, under curl.
#[test]
fn curl_against_the_axum_example() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = start("axum_server", &["--shards", "1", "--addr", &addr], "uring");
    let out = curl(&[&format!("http://{addr}/hello/world")]);
    let root = curl(&["--http2-prior-knowledge", &format!("http://{addr}/")]);
    server.kill().unwrap();
    server.wait().unwrap();
    assert_eq!(out, "hello, world\n");
    assert_eq!(root, "axum on shard 0\n");
}
