//! Slow and greedy clients against the real `xinference-local`: request bodies that trickle
//! in are cut (408, connection closed), one address cannot hold more than its share of
//! unauthenticated connections (429), idle keep-alive connections close, and normal clients
//! (logins, authenticated calls, big bodies at network speed) are not affected.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

use crate::support::{config, login, run_to_exit, write_json, Local, SUPERVISOR_BIN, WORKER_BIN};

const API_KEY: &str = "sk-AdminKey00001";

fn start(args: &[&str]) -> (TempDir, Local) {
    let dir = TempDir::new().unwrap();
    let auth = dir.path().join("auth.json");
    write_json(
        &auth,
        &config(json!([
            { "username": "admin", "password": "admin-pass-123", "permissions": ["admin"], "api_keys": [API_KEY] },
        ])),
    );
    let home = dir.path().join("home");
    let mut all = vec!["--auth-config", auth.to_str().unwrap()];
    all.extend_from_slice(args);
    let server = Local::start(&home, &all);
    (dir, server)
}

fn address(server: &Local) -> SocketAddr {
    server
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("the server prints host:port")
}

/// A TCP connection to the server from `from` (any 127.0.0.0/8 address works on loopback).
async fn connect_from(server: SocketAddr, from: IpAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(server).await.unwrap()
}

/// Sends a `POST /token` head announcing a 100 kB body, then one byte per `every` from a
/// background task (until the server closes). Returns the reading half.
async fn slow_token_request(
    server: SocketAddr,
    chunked: bool,
    every: Duration,
) -> (tokio::net::tcp::OwnedReadHalf, JoinHandle<()>) {
    let stream = connect_from(server, "127.0.0.1".parse().unwrap()).await;
    let (read, mut write) = stream.into_split();
    let framing = if chunked {
        "Transfer-Encoding: chunked"
    } else {
        "Content-Length: 100000"
    };
    let head = format!(
        "POST /token HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
    );
    write.write_all(head.as_bytes()).await.unwrap();
    let trickle = tokio::spawn(async move {
        let piece: &[u8] = if chunked { b"1\r\n{\r\n" } else { b"{" };
        loop {
            if write.write_all(piece).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
    (read, trickle)
}

/// Everything the server sends until it closes the connection or `limit` passes; `closed`
/// tells which.
async fn read_until_closed(
    read: &mut (impl AsyncReadExt + Unpin),
    limit: Duration,
) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, read.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&got).into(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// The response head, as soon as it is complete (or whatever came before `limit`).
async fn read_head(read: &mut (impl AsyncReadExt + Unpin), limit: Duration) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, read.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into()
}

fn assert_cut(name: &str, reply: &str, closed: bool) {
    assert!(closed, "{name}: the connection stays open; got {reply:?}");
    if !reply.is_empty() {
        assert!(
            reply.starts_with("HTTP/1.1 408"),
            "{name}: expected 408, got {reply:?}"
        );
        let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
        let body: Value = serde_json::from_str(body).expect("a JSON body");
        assert!(body["detail"].as_str().is_some(), "{name}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_bodies_are_cut_at_the_deadline_while_normal_clients_are_served() {
    let (_dir, server) = start(&["--body-timeout", "2", "--body-min-rate", "0"]);
    let addr = address(&server);
    let client = Client::new();

    // Both framings: a sized body (actix closes after an unread one) and a chunked one
    // (which actix would otherwise drain without a deadline).
    for chunked in [false, true] {
        let name = if chunked { "chunked" } else { "sized" };
        let started = Instant::now();
        let (mut read, trickle) = slow_token_request(addr, chunked, Duration::from_secs(1)).await;
        // Meanwhile a normal login works.
        let res = login(&client, &server.url, "admin", "admin-pass-123").await;
        assert_eq!(res.status(), 200, "{name}: login during a slow body");
        let (reply, closed) = read_until_closed(&mut read, Duration::from_secs(8)).await;
        let took = started.elapsed();
        trickle.abort();
        assert_cut(name, &reply, closed);
        assert!(
            took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
            "{name}: cut after {took:?}, the limit is 2 s"
        );
    }

    // A big body at network speed is read in full: the handler answers, not the deadline.
    let big = "x".repeat(4 * 1024 * 1024);
    let res = client
        .post(server.url("/v1/embeddings"))
        .bearer_auth(API_KEY)
        .json(&json!({ "model": "no-such-model", "input": big }))
        .send()
        .await
        .unwrap();
    assert_ne!(res.status(), 408, "a fast 4 MiB body");
    assert!(res.status().is_client_error(), "{}", res.status());
    let res = login(&client, &server.url, "admin", "admin-pass-123").await;
    assert_eq!(res.status(), 200, "login after the slow bodies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_below_the_minimum_rate_are_cut_after_the_grace_period() {
    let (_dir, server) = start(&[
        "--body-timeout",
        "30",
        "--body-min-rate",
        "1000",
        "--body-min-rate-grace",
        "1",
    ]);
    let started = Instant::now();
    let (mut read, trickle) =
        slow_token_request(address(&server), false, Duration::from_millis(200)).await;
    let (reply, closed) = read_until_closed(&mut read, Duration::from_secs(8)).await;
    let took = started.elapsed();
    trickle.abort();
    assert_cut("5 bytes/s", &reply, closed);
    assert!(took < Duration::from_secs(5), "cut after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_more_unauthenticated_connections_than_its_limit() {
    let (_dir, server) = start(&["--max-connections-per-address", "4", "--body-timeout", "25"]);
    let addr = address(&server);
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();

    // Four slow logins fill the address's share; they are still being read, not refused.
    let mut slow = Vec::new();
    for _ in 0..4 {
        slow.push(slow_token_request(addr, false, Duration::from_secs(1)).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // More from the same address are refused at once, and their connections closed.
    for i in 0..3 {
        let started = Instant::now();
        let mut stream = connect_from(addr, loopback).await;
        stream
            .write_all(b"POST /token HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\n{")
            .await
            .unwrap();
        let (reply, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
        assert!(
            reply.starts_with("HTTP/1.1 429"),
            "extra connection {i}: {reply:?}"
        );
        assert!(reply.contains("\"detail\""), "{reply:?}");
        assert!(
            closed && started.elapsed() < Duration::from_secs(3),
            "extra connection {i}: closed={closed} after {:?}",
            started.elapsed()
        );
    }

    // An authenticated call from the same address is served.
    let from_loopback = Client::builder().local_address(loopback).build().unwrap();
    let res = from_loopback
        .get(server.url("/v1/models"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        200,
        "an authenticated call from the crowded address"
    );
    // An unauthenticated login from it (on a new connection: one that has authenticated no
    // longer counts) is refused; from another address it works.
    let unauthenticated = Client::builder().local_address(loopback).build().unwrap();
    let res = login(&unauthenticated, &server.url, "admin", "admin-pass-123").await;
    assert_eq!(res.status(), 429, "a login from the crowded address");
    let other = Client::builder()
        .local_address("127.0.0.2".parse::<IpAddr>().unwrap())
        .build()
        .unwrap();
    let res = login(&other, &server.url, "admin", "admin-pass-123").await;
    assert_eq!(res.status(), 200, "a login from another address");

    // Once the slow clients go away, the address may log in again.
    for (read, trickle) in slow {
        trickle.abort();
        drop(read);
    }
    let fresh = Client::builder().local_address(loopback).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let res = login(&fresh, &server.url, "admin", "admin-pass-123").await;
        if res.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "login still refused: {}",
            res.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `POST path` with a chunked body and no credentials, then a chunk per 500 ms: the
/// refusal (401) must come at once and the connection must close, not keep reading.
async fn refused_chunked_call_closes(server: SocketAddr, path: &str) {
    let mut stream = connect_from(server, "127.0.0.1".parse().unwrap()).await;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let trickle = tokio::spawn(async move {
        while write.write_all(b"1\r\n{\r\n").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let started = Instant::now();
    let (reply, closed) = read_until_closed(&mut read, Duration::from_secs(6)).await;
    trickle.abort();
    assert!(reply.starts_with("HTTP/1.1 401"), "{path}: {reply:?}");
    assert!(
        closed && started.elapsed() < Duration::from_secs(4),
        "{path}: closed={closed} after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_calls_do_not_keep_reading_a_trickled_body_on_the_api_or_the_worker() {
    let (_dir, server) = start(&[]);
    refused_chunked_call_closes(address(&server), "/v1/models").await;

    let dir = TempDir::new().unwrap();
    let sup_home = dir.path().join("sup");
    let supervisor = Local::spawn(
        SUPERVISOR_BIN,
        "xinference-supervisor",
        &sup_home,
        &[
            "-H",
            "127.0.0.1",
            "-p",
            "0",
            "--home",
            sup_home.to_str().unwrap(),
        ],
        &[],
    );
    let worker_home = dir.path().join("worker");
    let secret = sup_home.join("cluster_secret");
    let worker = Local::spawn(
        WORKER_BIN,
        "xinference-worker",
        &worker_home,
        &[
            "-e",
            &supervisor.url,
            "-H",
            "127.0.0.1",
            "--home",
            worker_home.to_str().unwrap(),
            "--cluster-secret-file",
            secret.to_str().unwrap(),
        ],
        &[],
    );
    refused_chunked_call_closes(address(&worker), "/internal/v1/replicas").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed() {
    let (_dir, server) = start(&["--keep-alive", "1"]);
    let mut stream = TcpStream::connect(address(&server)).await.unwrap();
    stream
        .write_all(b"GET /status HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut stream, Duration::from_secs(5)).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head:?}");
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(6)).await;
    assert!(closed, "an idle connection stays open");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed after {:?}, keep-alive is 1 s",
        started.elapsed()
    );
}

#[test]
fn bad_limit_values_stop_startup_naming_the_flag() {
    let dir = TempDir::new().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--body-timeout=-1"], "--body-timeout"),
        (&["--body-timeout", "NaN"], "--body-timeout"),
        (&["--body-min-rate-grace", "1e9"], "--body-min-rate-grace"),
        (&["--keep-alive", "inf"], "--keep-alive"),
        (&["--max-connections", "0"], "--max-connections"),
        (
            &["--max-connections-per-address", "many"],
            "--max-connections-per-address",
        ),
    ];
    for (args, flag) in cases {
        let (status, stdout, stderr) = run_to_exit(&dir.path().join("home"), args);
        assert!(!status.success(), "{args:?} was accepted");
        assert!(stderr.contains(flag), "{args:?}: stderr {stderr:?}");
        assert!(!stdout.contains("listening"), "{args:?}: {stdout}");
    }
}
